"""Top-activating contexts of dictionary latents: for each latent, the tokens where it fires
most, each with the tokens around it in its window and the latent's activation on every one of
them (for highlighting; :func:`figures.dashboard.write_dashboard` renders them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.dictionaries.errors import DictionaryError


@dataclass(frozen=True)
class Context:
    """One top activation: ``index`` (the token's row in the stream), ``activation``,
    ``token_ids`` of its context window (or their strings, once decoded), ``target`` (the
    token's place in it) and ``acts`` (the latent's activation at each context token)."""

    index: int
    activation: float
    token_ids: list[int] | list[str]
    target: int
    acts: list[float]


def top_contexts(f: Float[Tensor, "n latent"], tokens: Int[Tensor, " n"], where: Int[Tensor, "n 2"],
                 latents: Sequence[int], *, k: int = 8, before: int = 12, after: int = 4,
                 one_per_window: bool = True) -> dict[int, list[Context]]:
    """``{latent: [Context, ...]}`` (highest first, at most ``k``, only where it fires).

    ``f``: the latents' activations at every token of the stream (rows in stream order, as a
    harvest's ``tokens`` and ``where``: each row's ``(window, position)``). A context spans up to
    ``before`` tokens before and ``after`` after the token, within its window. With
    ``one_per_window``, a window contributes its strongest token only, so one long document does
    not fill a latent's page.
    """
    n = f.shape[0]
    if tokens.shape[0] != n or where.shape[0] != n:
        raise DictionaryError(f"activations ({n} rows), tokens ({tokens.shape[0]}) and where ({where.shape[0]}) "
                              "must cover the same tokens")
    bad = [j for j in latents if not 0 <= j < f.shape[1]]
    if bad:
        raise DictionaryError(f"latents {bad} out of range; valid: 0..{f.shape[1] - 1}")
    window = where[:, 0]
    out = {}
    for j in latents:
        col = f[:, j]
        order = torch.argsort(col, descending=True).tolist()
        chosen, seen = [], set()
        for i in order:
            if col[i] <= 0 or len(chosen) >= k:
                break
            w = int(window[i])
            if one_per_window and w in seen:
                continue
            seen.add(w)
            lo, hi = i, i
            while lo > 0 and i - lo < before and int(window[lo - 1]) == w:
                lo -= 1
            while hi < n - 1 and hi - i < after and int(window[hi + 1]) == w:
                hi += 1
            chosen.append(Context(i, float(col[i]), tokens[lo:hi + 1].tolist(), i - lo, col[lo:hi + 1].tolist()))
        out[j] = chosen
    return out
