"""Continuation log-probabilities of ``continuation`` given ``context``, at any readout.

Tokenisation follows lm-evaluation-harness (``HFLM._encode_pair``): trailing whitespace of
the context moves to the front of the continuation; ``context + continuation`` is encoded
whole, and the continuation's tokens are those after the first ``len(encode(context))``
tokens. The model then reads ``context tokens + continuation tokens``. The tokenizer's
default special tokens are kept (Llama's BOS), as everywhere in the toolkit; an empty
context becomes the BOS (or EOS) token, as lm-evaluation-harness's prefix token.

This module scores each (context, continuation) as its own sequence through ``lm.run``
(the naive way); :mod:`probes.shared_context` scores options that share a context without
re-running it, with equal numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import PromptError, UnknownHook
from probes.readouts import Layer, LayerSpec, block_layers, layer_logprobs, resolve_layers

Pair = tuple[list[int], list[int]]  # (context tokens, continuation tokens)


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
        layers: the readouts (``None`` = final logits, ``l`` = logit lens of block ``l``).
        context_tokens: the context's token ids.
        tokens: the continuation's token ids.
        token_logprobs: ``[readout, n_tokens]`` log-prob of each continuation token.
        greedy: ``[readout, n_tokens]`` whether each token is the readout's argmax.
    """

    layers: list[Layer]
    context_tokens: list[int]
    tokens: list[int]
    token_logprobs: Float[Tensor, "readout n_tokens"]
    greedy: Bool[Tensor, "readout n_tokens"]

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
    lm, pairs: Sequence[Pair], layers: Sequence[Layer], batch_size: int = 8
) -> list[tuple[Float[Tensor, "readout n_tokens"], Bool[Tensor, "readout n_tokens"]]]:
    """Per pair, ``(token log-probs, greedy)`` under each readout, each pair run as its own
    ``context + continuation`` sequence (batched ``batch_size`` at a time). The unembedding
    and captures are restricted to the positions that predict continuation tokens."""
    blocks = block_layers(layers)
    capture = [f"blocks.{l}.hook_resid_post" for l in blocks]
    out = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        seqs = [ctx + cont for ctx, cont in batch]
        widest = max(len(cont) for _, cont in batch)
        shortest = min(len(s) for s in seqs)
        positions = list(range(-(widest + 1), -1)) if widest + 1 <= shortest else None
        with torch.no_grad():
            run = lm.run(seqs, capture=capture, positions=positions)
        for i, (_, cont) in enumerate(batch):
            n = len(cont)
            if positions is None:  # every column kept: the last n + 1 (minus one) predict cont
                cols = slice(run.logits.shape[1] - n - 1, run.logits.shape[1] - 1)
            else:
                cols = slice(widest - n, widest)
            resids = {l: run.cache[f"blocks.{l}.hook_resid_post"][i, cols] for l in blocks}
            targets = torch.tensor(cont, device=run.logits.device)
            out.append(layer_logprobs(lm, layers, run.logits[i, cols], resids, targets))
    return out


def continuation_logprobs(
    lm,
    contexts: Sequence[str],
    continuations: Sequence[str],
    layers: LayerSpec = None,
    batch_size: int = 8,
) -> list[ContinuationLogprobs]:
    """Log-probs of each ``continuations[i]`` after ``contexts[i]`` (lm-evaluation-harness
    tokenisation), under the readouts ``layers`` (see :func:`probes.readouts.resolve_layers`)."""
    if len(contexts) != len(continuations):
        raise PromptError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if lm.tokenizer is None:
        raise PromptError("continuation_logprobs needs the model's tokenizer (LM.from_hf(model, tokenizer))")
    readouts = resolve_layers(lm, layers)
    pairs = [encode_pair(lm.tokenizer, c, x) for c, x in zip(contexts, continuations)]
    scored = naive_pair_logprobs(lm, pairs, readouts, batch_size)
    return [ContinuationLogprobs(readouts, ctx, cont, lp.cpu(), g.cpu()) for (ctx, cont), (lp, g) in zip(pairs, scored)]
