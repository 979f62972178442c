"""Do the two models' residual streams differ, layer by layer, on the same tokens?

The models run one at a time. :func:`collect` runs one model on a list of texts and keeps, for
every real token (padding dropped, texts in order, at most ``max_tokens`` tokens), the
``resid_post`` of every block and its early-decoded next-token log-probabilities (the logit
lens, or any :class:`interp.lens.Lens`, e.g. a tuned lens). That is exact and simple, at a
memory cost of ``n_layers x tokens x (d_model + vocab) x 4`` bytes per model (the toy pair on
2,000 tokens: 6 x 2000 x (128 + 1089) x 4 = 58 MB); ``max_tokens`` caps it.
:func:`compare` then reduces two collections of the same tokens, per layer and per position
bucket (:data:`POSITION_BUCKETS`, token positions within their text, plus ``"all"``: every
token pooled):

- ``rel_diff``: mean over tokens of ``||h_chat - h_base|| / ||h_base||``;
- ``cosine``: mean over tokens of ``cos(h_chat, h_base)``;
- ``cka``: linear CKA over the bucket's tokens (:func:`linear_cka`, centred);
- ``kl_base_chat`` / ``kl_chat_base``: mean over tokens of ``KL(p_base || p_chat)`` and
  ``KL(p_chat || p_base)`` (nats) between the two models' decoded distributions at that layer,
  each model decoded through its own lens.

Bad pairs raise :class:`PairMismatch`: tokenizers with different vocabularies (or that
tokenise the texts differently), or different ``n_layers`` / ``d_model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.loading import vocab_difference

# Position buckets (start, end) of a token's position within its text, end exclusive. Position
# 0 on its own: the first token's residual is an outlier in most LMs (an attention sink).
POSITION_BUCKETS: dict[str, tuple[int, int | None]] = {"0": (0, 1), "1-3": (1, 4), "4-15": (4, 16), "16+": (16, None)}
ALL = "all"


class PairMismatch(InterpError):
    """Two models whose activations cannot be compared token by token."""


@dataclass
class Collected:
    """One model's per-token readouts of a list of texts (see :func:`collect`).

    Attributes:
        ids: token ids, every kept token ``[token]``; ``text_index`` and ``position`` say
            which text and which position in it.
        resid: ``resid_post`` of each block ``[layer, token, d_model]`` (float32).
        logprobs: early-decoded next-token log-probs of each block ``[layer, token, vocab]``.
        vocab: the tokenizer's vocabulary (token -> id), to check a pair shares it.
        n_dropped: tokens past ``max_tokens`` that were not kept.
    """

    ids: Int[Tensor, " token"]
    text_index: Int[Tensor, " token"]
    position: Int[Tensor, " token"]
    resid: Float[Tensor, "layer token d_model"]
    logprobs: Float[Tensor, "layer token vocab"]
    vocab: dict | None
    n_dropped: int = 0

    @property
    def n_layers(self) -> int:
        return self.resid.shape[0]


def collect(lm, texts: Sequence[str], lens=None, max_tokens: int | None = None, batch_size: int = 16) -> Collected:
    """Run ``lm`` on ``texts`` and keep every block's residual and decoded log-probs at each
    real token, texts in order, up to ``max_tokens`` tokens (the rest counted in ``n_dropped``)."""
    from interp.lens import resolve_lens

    if not texts:
        raise InterpError("collect needs at least one text")
    if max_tokens is not None and max_tokens < 1:
        raise InterpError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    decoder = resolve_lens(lm, lens)
    ids, where, pos, resid, logprobs = [], [], [], [], []
    kept, total = 0, 0
    for start in range(0, len(texts), batch_size):
        if max_tokens is not None and kept >= max_tokens:
            total += sum(len(lm.to_tokens([t])[0][0]) for t in texts[start:])
            break
        with torch.no_grad():
            run = lm.run(list(texts[start:start + batch_size]), capture=["resid_post"], logits=False)
            stack = run.cache.stack("resid_post")  # [layer, batch, seq, d_model], left-padded
            for row in range(stack.shape[1]):
                n = int(run.lengths[row])
                total += n
                take = n if max_tokens is None else max(0, min(n, max_tokens - kept))
                if take == 0:
                    continue
                cols = slice(stack.shape[2] - n, stack.shape[2] - n + take)
                h = stack[:, row, cols].float()  # [layer, take, d_model]
                ids.append(run.tokens[row, cols].cpu())
                where.append(torch.full((take,), start + row))
                pos.append(torch.arange(take))
                resid.append(h.cpu())
                logprobs.append(torch.stack([decoder.decode(h[layer], layer).float().log_softmax(-1)
                                             for layer in range(h.shape[0])]).cpu())
                kept += take
    vocab = lm.tokenizer.get_vocab() if lm.tokenizer is not None else None
    return Collected(torch.cat(ids), torch.cat(where), torch.cat(pos), torch.cat(resid, 1), torch.cat(logprobs, 1),
                     vocab, total - kept)


def check_pair(base: Collected, chat: Collected) -> None:
    """Raise PairMismatch unless the two collections are of one vocabulary, one shape and the
    same tokens."""
    if base.vocab is not None and chat.vocab is not None and base.vocab != chat.vocab:
        raise PairMismatch(f"base and chat tokenizers differ ({vocab_difference(base.vocab, chat.vocab)}); "
                           "per-token comparisons need one")
    if base.resid.shape[0] != chat.resid.shape[0] or base.resid.shape[2] != chat.resid.shape[2]:
        raise PairMismatch(f"base has {base.resid.shape[0]} layers of d_model {base.resid.shape[2]}, chat "
                           f"{chat.resid.shape[0]} of {chat.resid.shape[2]}; layer-by-layer comparison needs the same")
    if base.logprobs.shape[2] != chat.logprobs.shape[2]:
        raise PairMismatch(f"base decodes to {base.logprobs.shape[2]} tokens, chat to {chat.logprobs.shape[2]}")
    if base.ids.shape != chat.ids.shape or not torch.equal(base.ids, chat.ids):
        raise PairMismatch("base and chat tokenised the texts differently (same vocabulary, other rules); "
                           "compare them on token ids instead")


def linear_cka(x: Float[Tensor, "n d1"], y: Float[Tensor, "n d2"]) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same ``n`` samples:
    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``, in
    float64. 1 for ``x`` vs itself, invariant to orthogonal maps and isotropic scaling of
    either side; ``NaN`` when a side is constant (no variance to compare)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise InterpError(f"linear_cka needs [n, d1] and [n, d2] of the same n, got {tuple(x.shape)}, {tuple(y.shape)}")
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if float(denom) == 0.0:
        return float("nan")
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2 / denom)


def kl(logp: Float[Tensor, "... vocab"], logq: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """``KL(p || q)`` in nats from log-probabilities (0 log 0 = 0)."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def compare(base: Collected, chat: Collected, buckets: dict[str, tuple[int, int | None]] = POSITION_BUCKETS) -> list[dict]:
    """One row per layer x position bucket (``"all"`` first): ``layer``, ``positions``,
    ``n_tokens``, ``rel_diff``, ``cosine``, ``cka``, ``kl_base_chat``, ``kl_chat_base``. Empty
    buckets are left out."""
    check_pair(base, chat)
    selections = {ALL: torch.ones_like(base.position, dtype=torch.bool)}
    for label, (lo, hi) in buckets.items():
        selections[label] = (base.position >= lo) & (base.position < (hi if hi is not None else 1 << 62))
    rows = []
    for layer in range(base.n_layers):
        hb, hc = base.resid[layer].double(), chat.resid[layer].double()
        rel = (hc - hb).norm(dim=-1) / hb.norm(dim=-1)
        cos = torch.nn.functional.cosine_similarity(hc, hb, dim=-1)
        kl_bc = kl(base.logprobs[layer].double(), chat.logprobs[layer].double())
        kl_cb = kl(chat.logprobs[layer].double(), base.logprobs[layer].double())
        for label, sel in selections.items():
            n = int(sel.sum())
            if n == 0:
                continue
            rows.append({"layer": layer, "positions": label, "n_tokens": n, "rel_diff": float(rel[sel].mean()),
                         "cosine": float(cos[sel].mean()), "cka": linear_cka(hb[sel], hc[sel]) if n > 1 else float("nan"),
                         "kl_base_chat": float(kl_bc[sel].mean()), "kl_chat_base": float(kl_cb[sel].mean())})
    return rows
