"""Start a forward pass at block ``l`` from a cached residual stream.

A patch at layer ``l`` leaves blocks ``0..l-1`` as they were in the corrupted run, so their
output can be taken from the corrupted run's cache instead of being recomputed. ``start_at``
swaps those blocks of the HF ``ModuleList`` for relays for the duration of a ``with``: block
``l-1``'s relay returns the cached ``resid_pre[l]``, the earlier ones pass their input on. The
model's own embedding, rotary and mask code still runs, so this works for every family whose
blocks are called in a loop over the ``ModuleList`` (all rows of ``interp.adapters``). The
original blocks are restored in a ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn


class Relay(nn.Module):
    """Stands in for a skipped block: returns ``resid`` (or its input if ``None``) in the same
    structure as the block's own output (a tensor, or a tuple of ``arity`` items)."""

    def __init__(self, resid: Tensor | None, arity: int | None, like: nn.Module):
        super().__init__()
        self.resid = resid
        self.arity = arity
        for attr in ("attention_type", "layer_type", "layer_idx"):  # read by some model loops
            if hasattr(like, attr):
                setattr(self, attr, getattr(like, attr))

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        out = hidden_states if self.resid is None else self.resid
        if self.arity is None:
            return out
        return (out,) + (None,) * (self.arity - 1)


def output_arity(output) -> int | None:
    """``None`` for a block returning a tensor, else the length of its output tuple."""
    return len(output) if isinstance(output, tuple) else None


@contextmanager
def start_at(lm, layer: int, resid: Tensor, arity: int | None) -> Iterator[None]:
    """Within the ``with``, forward passes skip blocks ``0..layer-1``; ``resid`` (the batch's
    ``resid_pre[layer]``, ``[batch, seq, d_model]``) enters block ``layer``."""
    if layer == 0:
        yield
        return
    blocks = lm.model.get_submodule(lm.arch.blocks)
    originals = [blocks[i] for i in range(layer)]
    try:
        for i in range(layer):
            blocks[i] = Relay(resid if i == layer - 1 else None, arity, originals[i])
        yield
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
