"""Continuation log-probabilities of ``continuation`` given ``context``, at any readout.

Tokenisation follows lm-evaluation-harness (``HFLM._encode_pair``): trailing whitespace of
the context moves to the front of the continuation; ``context + continuation`` is encoded
whole, and the continuation's tokens are those after the first ``len(encode(context))``
tokens. The model then reads ``context tokens + continuation tokens`` minus the last
continuation token, as lm-evaluation-harness does: that token is only predicted (by the
position before it), never read, so it needs no position of its own. The tokenizer's
default special tokens are kept (Llama's BOS), as everywhere in the toolkit; an empty
context becomes the BOS (or EOS) token, as lm-evaluation-harness's prefix token.

Long inputs (:func:`fit_context`): a pair fits when ``len(context) + len(continuation) - 1
<= lm.max_positions``. Otherwise ``truncate`` decides: ``"left"`` drops the context's first
tokens until it fits (lm-evaluation-harness's behaviour; the BOS goes too), ``"skip"``
returns a :class:`Skipped` in that pair's place, ``"error"`` (the default of the library
functions) raises ``PromptError``.

This module scores each (context, continuation) as its own sequence through ``lm.run``
(the naive way); :mod:`probes.shared_context` scores options that share a context without
re-running it, with equal numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import PromptError, UnknownHook
from interp.lens import Lens
from probes.readouts import Layer, LayerSpec, block_layers, layer_logprobs, resolve_layers

Pair = tuple[list[int], list[int]]  # (context tokens, continuation tokens)
Truncate = Literal["left", "skip", "error"]
TRUNCATE = ("left", "skip", "error")


@dataclass(frozen=True)
class Skipped:
    """An input that was not scored, and why (e.g. longer than the model's positions)."""

    reason: str
    item_id: str | None = None


def fit_context(
    context: list[int], longest: int, max_positions: int | None, truncate: Truncate = "error", what: str = "input"
) -> tuple[list[int], int] | Skipped:
    """``(context tokens to feed, tokens cut from its left)`` so that the context and a
    continuation of ``longest`` tokens fit ``max_positions`` under lm-evaluation-harness's rule
    (the continuation's last token is not fed: ``len(context) + longest - 1 <= max_positions``),
    or a :class:`Skipped` (``truncate="skip"``, or ``"left"`` when not even one context token
    fits beside the continuation). ``truncate="error"`` raises ``PromptError`` instead."""
    if truncate not in TRUNCATE:
        raise PromptError(f"unknown truncate {truncate!r}; valid: {', '.join(TRUNCATE)}")
    over = 0 if max_positions is None else len(context) + longest - 1 - max_positions
    if over <= 0:
        return list(context), 0
    if truncate == "left" and over < len(context):
        return list(context[over:]), over
    if truncate == "error":
        raise PromptError(f"{what} needs {len(context) + longest - 1} positions ({len(context)} context + {longest} "
                          f"continuation tokens, the last not fed), more than the model's {max_positions}; "
                          "pass truncate='left' or 'skip'")
    if truncate == "left":
        return Skipped(f"a continuation of {longest} tokens leaves no room for the context in the model's "
                       f"{max_positions} positions")
    return Skipped(f"longer than the model's {max_positions} positions")


def split_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """Move the context's trailing whitespace to the front of the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


def encode_pair(tokenizer, context: str, continuation: str) -> Pair:
    """``(context tokens, continuation tokens)`` as lm-evaluation-harness computes them."""
    context, continuation = split_whitespace(context, continuation)
    if not continuation:
        raise PromptError("empty continuation: nothing to score")
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise PromptError("empty context and the tokenizer has neither a BOS nor an EOS token to start from")
        cont = [t for t in tokenizer(continuation)["input_ids"] if t != prefix]
        return [int(prefix)], cont
    ctx = tokenizer(context)["input_ids"]
    cont = tokenizer(context + continuation)["input_ids"][len(ctx):]
    if not cont:
        raise PromptError(f"continuation {continuation!r} adds no tokens after context {context[-40:]!r}")
    return list(ctx), list(cont)


@dataclass
class ContinuationLogprobs:
    """Log-probs of one continuation's tokens under each readout.

    Attributes:
        layers: the readouts (``None`` = final logits, ``l`` = block ``l`` through the lens, by default the logit lens).
        context_tokens: the context's token ids.
        tokens: the continuation's token ids.
        token_logprobs: ``[readout, n_tokens]`` log-prob of each continuation token.
        greedy: ``[readout, n_tokens]`` whether each token is the readout's argmax.
        n_truncated: context tokens cut from the left to fit the model (``context_tokens``
            are those fed).
    """

    layers: list[Layer]
    context_tokens: list[int]
    tokens: list[int]
    token_logprobs: Float[Tensor, "readout n_tokens"]
    greedy: Bool[Tensor, "readout n_tokens"]
    n_truncated: int = 0

    def _row(self, layer: Layer) -> int:
        try:
            return self.layers.index(layer)
        except ValueError:
            raise UnknownHook(f"readout {layer!r} was not scored; scored: {self.layers}") from None

    def sum(self, layer: Layer = None) -> float:
        """Total log-probability (lm-evaluation-harness's ``loglikelihood``)."""
        return float(self.token_logprobs[self._row(layer)].sum())

    def mean(self, layer: Layer = None) -> float:
        """Mean log-probability per token."""
        return float(self.token_logprobs[self._row(layer)].mean())

    def is_greedy(self, layer: Layer = None) -> bool:
        """Every token is the argmax (lm-evaluation-harness's ``is_greedy``)."""
        return bool(self.greedy[self._row(layer)].all())

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def naive_pair_logprobs(
    lm, pairs: Sequence[Pair], layers: Sequence[Layer], batch_size: int = 8, lens: Lens | None = None
) -> list[tuple[Float[Tensor, "readout n_tokens"], Bool[Tensor, "readout n_tokens"]]]:
    """Per pair, ``(token log-probs, greedy)`` under each readout, each pair run as its own
    ``context + continuation[:-1]`` sequence (batched ``batch_size`` at a time). The
    unembedding and captures are restricted to the positions that predict continuation tokens."""
    blocks = block_layers(layers)
    capture = [f"blocks.{l}.hook_resid_post" for l in blocks]
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        seqs = [ctx + cont[:-1] for ctx, cont in batch]  # the last token is predicted, not read
        widest = max(len(cont) for _, cont in batch)
        shortest = min(len(s) for s in seqs)
        positions = list(range(-widest, 0)) if widest <= shortest else None
        with torch.no_grad():
            run = lm.run(seqs, capture=capture, positions=positions)
        for i, (_, cont) in enumerate(batch):
            n = len(cont)
            if positions is None:  # every column kept: the last n predict cont
                cols = slice(run.logits.shape[1] - n, run.logits.shape[1])
            else:
                cols = slice(widest - n, widest)
            resids = {l: run.cache[f"blocks.{l}.hook_resid_post"][i, cols] for l in blocks}
            targets = torch.tensor(cont, device=run.logits.device)
            out.append(layer_logprobs(lm, layers, run.logits[i, cols], resids, targets, lens))
    return out


def continuation_logprobs(
    lm,
    contexts: Sequence[str],
    continuations: Sequence[str],
    layers: LayerSpec = None,
    batch_size: int = 8,
    truncate: Truncate = "error",
    lens: Lens | None = None,
) -> list[ContinuationLogprobs | Skipped]:
    """Log-probs of each ``continuations[i]`` after ``contexts[i]`` (lm-evaluation-harness
    tokenisation), under the readouts ``layers`` (see :func:`probes.readouts.resolve_layers`).
    Pairs longer than the model: ``truncate`` (:func:`fit_context`); a skipped pair is a
    :class:`Skipped` in the output. ``lens`` decodes the block readouts (default: the logit lens)."""
    if len(contexts) != len(continuations):
        raise PromptError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if lm.tokenizer is None:
        raise PromptError("continuation_logprobs needs the model's tokenizer (LM.from_hf(model, tokenizer))")
    readouts = resolve_layers(lm, layers)
    pairs = [encode_pair(lm.tokenizer, c, x) for c, x in zip(contexts, continuations)]
    fits = [fit_context(ctx, len(cont), lm.max_positions, truncate, f"pair {i}") for i, (ctx, cont) in enumerate(pairs)]
    todo = [i for i, f in enumerate(fits) if not isinstance(f, Skipped)]
    scored = dict(zip(todo, naive_pair_logprobs(lm, [(fits[i][0], pairs[i][1]) for i in todo], readouts, batch_size, lens)))
    out: list[ContinuationLogprobs | Skipped] = []
    for i, fit in enumerate(fits):
        if isinstance(fit, Skipped):
            out.append(fit)
            continue
        (ctx, n_cut), (lp, g) = fit, scored[i]
        out.append(ContinuationLogprobs(readouts, ctx, pairs[i][1], lp.cpu(), g.cpu(), n_cut))
    return out
