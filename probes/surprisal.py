"""Surprisal of a text, token by token and summed over character regions, at any readout.

Surprisal is ``-log2 p(token | tokens before it)`` in **bits** (SyntaxGym's and lm-zoo's unit:
the ``=`` tolerance and the constants of its formulas are in bits), read from one forward
pass of the whole text: at the output or, through a lens, at any block
(:mod:`probes.readouts`), so a region-surprisal probe works at every layer like any other.

The first token. A token is scored from the tokens before it, so the first token of a text
has no surprisal of its own. When the tokenizer starts every encoding with its BOS token
(Llama, the toy tokenizer) the BOS is that first token and every word of the text is scored.
When it adds none (GPT-2), the BOS token is put in front (else the EOS token, GPT-2's
``<|endoftext|>``, as lm-evaluation-harness and lm-zoo's GPT-2 do), so again every word is
scored; only a tokenizer with neither leaves the text's first token unscored (``nan``; the
region that holds it sums the tokens after it, and :attr:`TextSurprisal.first_scored` is
False).

Alignment (:func:`token_regions`): tokens are mapped to regions, character spans of the text,
through the tokenizer's offsets mapping (a fast tokenizer is required: a slow one has no
offsets, and is refused). A token belongs to the region holding the **last** non-space
character of its span, so

- the leading space of a BPE (``Ġcat``) or SentencePiece (``▁cat``) token belongs to the
  region after it, whether or not the tokenizer's offsets include that space;
- a word split into several tokens (WordPiece ``Pol ##and``, BPE ``Ġun believ able``) sums
  them all in its region;
- a punctuation region (``.``, ``,``) gets its own token whether it is spelt with a leading
  space (SyntaxGym's joining) or attached to the word before it (no space);
- a whitespace-only token (a lone ``▁`` or ``Ġ``) belongs to the region of the character after it;
- a token whose characters straddle two regions (a merge across a boundary without a space,
  which no tokenizer's pre-tokenisation makes at a word / punctuation boundary but a
  SentencePiece model may) goes to the later region, the one whose content it reveals; such
  tokens are counted (:attr:`RegionSurprisal.n_straddling`) so a table can show them.

Special tokens (BOS, EOS: by id, not by their zero-width offsets, since a byte-level BPE
gives a lone ``Ġ`` a zero-width span too) belong to no region.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import PromptError
from interp.lens import Lens
from probes.logprobs import Skipped, fit_context, naive_pair_logprobs
from probes.readouts import Layer, LayerSpec, resolve_layers

LN2 = math.log(2.0)
# SyntaxGym's region metrics (syntaxgym.utils.METRICS), over a region's token surprisals.
METRICS = {
    "sum": lambda x: float(sum(x)),
    "mean": lambda x: float(sum(x) / len(x)) if x else math.nan,
    "median": lambda x: float(statistics.median(x)) if x else math.nan,  # as numpy's: the middle two's mean
    "range": lambda x: float(max(x) - min(x)) if x else math.nan,
    "max": lambda x: float(max(x)) if x else math.nan,
    "min": lambda x: float(min(x)) if x else math.nan,
    "first": lambda x: float(x[0]) if x else math.nan,
    "last": lambda x: float(x[-1]) if x else math.nan,
}
NO_REGION = -1


@dataclass
class TextSurprisal:
    """Per-token surprisal of one text under each readout.

    Attributes:
        text: the text.
        layers: the readouts (``None`` = final logits, ``l`` = block ``l`` through the lens).
        tokens: the token ids fed, the BOS/EOS prefix included when one was added.
        offsets: ``(start, end)`` character span of each token in ``text`` (``None`` for
            special tokens), from the tokenizer's offsets mapping.
        surprisal: ``[readout, n_tokens]`` bits; ``nan`` for the first token (never predicted).
        prefixed: whether a BOS/EOS token was put in front (the tokenizer adds none).
        first_scored: whether the text's first real token has a surprisal (False only for a
            tokenizer with no BOS, no EOS and none added by itself).
    """

    text: str
    layers: list[Layer]
    tokens: list[int]
    offsets: list[tuple[int, int] | None]
    surprisal: Float[Tensor, "readout n_tokens"]
    prefixed: bool
    first_scored: bool


@dataclass
class RegionSurprisal:
    """Region values of one text: ``values[readout, region]`` (SyntaxGym's ``metric`` over each
    region's tokens), ``tokens[region]`` the token indices (into :attr:`TextSurprisal.tokens`)
    each region holds, ``n_straddling`` tokens that cross a region boundary."""

    values: Float[Tensor, "readout region"]
    tokens: list[list[int]]
    n_straddling: int


def encode_text(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int] | None], bool]:
    """``(token ids, offsets, prefixed)``: the tokenizer's own encoding of ``text`` (its
    special tokens kept, their offsets ``None``), with a BOS (else EOS) token put in front
    when it does not start with a special token itself."""
    if not getattr(tokenizer, "is_fast", False):
        raise PromptError(f"region surprisal needs a fast tokenizer (offsets mapping); {type(tokenizer).__name__} "
                          "is a slow one: load it with use_fast=True")
    if not text.strip():
        raise PromptError("empty text: nothing to score")
    enc = tokenizer(text, return_offsets_mapping=True)
    specials = set(tokenizer.all_special_ids)
    ids = [int(t) for t in enc["input_ids"]]
    offsets = [None if t in specials else (int(a), int(b)) for t, (a, b) in zip(ids, enc["offset_mapping"])]
    if ids and ids[0] in specials:
        return ids, offsets, False
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if prefix is None:
        return ids, offsets, False
    return [int(prefix), *ids], [None, *offsets], True


def text_surprisals(
    lm, texts: Sequence[str], layers: LayerSpec = None, batch_size: int = 8, lens: Lens | None = None,
) -> list[TextSurprisal | Skipped]:
    """Per-token surprisal (bits) of each text under the readouts ``layers``
    (:func:`probes.readouts.resolve_layers`), block readouts decoded by ``lens`` (default the
    logit lens). A text longer than the model's positions is a :class:`Skipped` (a sentence is
    never cut: its regions would lose their left context)."""
    if lm.tokenizer is None:
        raise PromptError("text_surprisals needs the model's tokenizer (LM.from_hf(model, tokenizer))")
    readouts = resolve_layers(lm, layers)
    encoded = [encode_text(lm.tokenizer, t) for t in texts]
    out: list[TextSurprisal | Skipped | None] = [None] * len(texts)
    todo = []
    for i, (ids, _, _) in enumerate(encoded):
        if len(ids) < 2:  # one token (a BOS-less tokenizer's one-token text): nothing is predicted
            continue
        fit = fit_context(ids[:1], len(ids) - 1, lm.max_positions, "skip")
        if isinstance(fit, Skipped):
            out[i] = Skipped(f"{len(ids)} tokens, {fit.reason}")
        else:
            todo.append(i)
    scored = naive_pair_logprobs(lm, [(encoded[i][0][:1], encoded[i][0][1:]) for i in todo], readouts, batch_size, lens)
    for i, (lp, _) in zip(todo, scored):
        ids, offsets, prefixed = encoded[i]
        bits = torch.cat([torch.full((len(readouts), 1), math.nan), -lp.float().cpu() / LN2], dim=1)
        out[i] = TextSurprisal(texts[i], readouts, ids, offsets, bits, prefixed, first_scored=_first_scored(lm, ids))
    for i, (ids, offsets, prefixed) in enumerate(encoded):
        if out[i] is None:
            out[i] = TextSurprisal(texts[i], readouts, ids, offsets, torch.full((len(readouts), len(ids)), math.nan),
                                   prefixed, first_scored=False)
    return out  # type: ignore[return-value]


def _first_scored(lm, ids: list[int]) -> bool:
    """The first token fed is a special token (BOS / EOS prefix): every real token is scored."""
    return ids[0] in set(lm.tokenizer.all_special_ids)


def token_regions(text: str, offsets: Sequence[tuple[int, int] | None], spans: Sequence[tuple[int, int]]
                  ) -> tuple[list[int], int]:
    """``(region index of each token or NO_REGION, number of straddling tokens)`` for regions
    given as character ``spans`` ``(start, end)`` of ``text`` in order (module doc: a token
    goes to the region of its last non-space character)."""
    def region_at(pos: int) -> int:
        for r, (a, b) in enumerate(spans):
            if a <= pos < b:
                return r
        return NO_REGION

    out, straddling = [], 0
    for span in offsets:
        if span is None:  # special tokens
            out.append(NO_REGION)
            continue
        start, end = span
        chars = [p for p in range(start, end) if not text[p].isspace()]
        if not chars:  # a whitespace-only token (zero-width for byte-level BPE): the region of the next character
            nxt = next((p for p in range(start, len(text)) if not text[p].isspace()), None)
            out.append(NO_REGION if nxt is None else region_at(nxt))
            continue
        first, last = region_at(chars[0]), region_at(chars[-1])
        straddling += first != last
        out.append(last)
    return out, straddling


def region_surprisals(scored: TextSurprisal, spans: Sequence[tuple[int, int]], metric: str = "sum") -> RegionSurprisal:
    """SyntaxGym's ``metric`` (``sum`` by default; :data:`METRICS`) of each region's token
    surprisals, under every readout. An empty region (no tokens) sums to 0. A region holding
    the unscored first token of a BOS-less text aggregates the tokens after it."""
    if metric not in METRICS:
        raise PromptError(f"unknown region metric {metric!r}; SyntaxGym's metrics are {', '.join(METRICS)}")
    owner, straddling = token_regions(scored.text, scored.offsets, spans)
    members = [[t for t, r in enumerate(owner) if r == k] for k in range(len(spans))]
    values = torch.tensor([[METRICS[metric]([float(row[t]) for t in toks if not math.isnan(row[t])])
                            for toks in members] for row in scored.surprisal], dtype=torch.float64)
    return RegionSurprisal(values.reshape(len(scored.layers), len(spans)), members, straddling)
