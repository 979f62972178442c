"""Patching metrics that say which vocabulary columns they read.

Any function of the last position's logits ``[batch, vocab]`` is a valid sweep metric. A
``TokenMetric`` is such a function that also names the few tokens it reads; a sweep given one
computes only those columns of the unembedding for each patched run instead of all of them
(the same numbers up to float rounding). On a small model with a large vocabulary the
unembedding is a large share of a sweep (a 4-layer, d_model 256 model with GPT-2's 50,257
tokens spends about as much on it as on its blocks); on a 7B model it is a few percent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError

# one token for every prompt, or one per prompt of the batch
Tokens = int | Sequence[int] | Int[Tensor, "*prompts"]


@dataclass(frozen=True)
class TokenMetric:
    """A metric reading the logits of ``tokens`` only.

    Attributes:
        tokens: vocabulary ids whose logits the metric reads.
        of_columns: the metric as a function of ``logits[:, tokens]`` (``[batch, len(tokens)]``)
            returning a scalar tensor.
        description: what it computes, for reprs and error messages.
    """

    tokens: tuple[int, ...]
    of_columns: Callable[[Float[Tensor, "batch k"]], Tensor]
    description: str

    def __call__(self, logits: Tensor) -> Tensor:
        """The metric on last-position logits ``[batch, vocab]`` (checked here, with a clear
        error for TransformerLens-style ``[batch, pos, vocab]``)."""
        if logits.ndim != 2:
            raise InterpError(f"{self.description} takes last-position logits [batch, vocab], got {tuple(logits.shape)}")
        if self.tokens[-1] >= logits.shape[1]:
            raise InterpError(f"{self.description} reads token {self.tokens[-1]}, outside the vocabulary of {logits.shape[1]}")
        return self.of_columns(logits[:, list(self.tokens)])

    def __repr__(self) -> str:
        return f"TokenMetric({self.description})"


def logit_diff(answer: Tokens, other: Tokens) -> TokenMetric:
    """Mean over the batch of ``logit[answer] - logit[other]``: the usual patching metric.

    ``answer`` and ``other`` are token ids, one for all prompts or one per prompt.
    """
    columns = _Columns([answer, other])

    def of_columns(x: Tensor) -> Tensor:
        return (columns.pick(x, 0) - columns.pick(x, 1)).mean()

    return TokenMetric(columns.tokens, of_columns, f"logit_diff({answer}, {other})")


def logit(token: Tokens) -> TokenMetric:
    """Mean over the batch of ``logit[token]``."""
    columns = _Columns([token])
    return TokenMetric(columns.tokens, lambda x: columns.pick(x, 0).mean(), f"logit({token})")


class _Columns:
    """Maps each argument's token(s) to columns of ``logits[:, tokens]``."""

    def __init__(self, args: list[Tokens]):
        args = [a.tolist() if isinstance(a, Tensor) else a for a in args]
        ids = [[_token_id(a)] if not isinstance(a, Sequence) else [_token_id(t) for t in a] for a in args]
        self.tokens = tuple(sorted({t for group in ids for t in group}))
        where = {t: i for i, t in enumerate(self.tokens)}
        self.columns = [torch.tensor([where[t] for t in group]) for group in ids]

    def pick(self, x: Tensor, arg: int) -> Float[Tensor, " batch"]:
        cols = self.columns[arg]
        if len(cols) == 1:
            return x[:, int(cols[0])]
        if len(cols) != x.shape[0]:
            raise InterpError(f"the metric has one token per prompt for {len(cols)} prompts, but the batch has {x.shape[0]}")
        return x.gather(1, cols.to(x.device).unsqueeze(1))[:, 0]


def _token_id(token) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise InterpError(f"token ids must be non-negative integers, got {token!r}")
    return int(token)
