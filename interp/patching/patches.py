"""Patch building: the writes that turn copies of the corrupted prompt into patched runs.

A chunk of cells is one forward over ``len(cells)`` copies of the corrupted batch; copy ``i``
is patched as ``cells[i]``. Per hook, one write covers every copy of a layer: it replaces the
copies' rows by the clean activation where ``cell_mask`` holds (a head is a ``d_model //
groups`` slice of the last axis), so a chunk costs one write per layer, not one per cell.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from interp.hook_names import block_hook
from interp.patching.chunks import Cell
from interp.patching.kv import WindowSetup
from interp.patching.resume import start_at

HEADS = "z"  # the heads' outputs, blocks.{l}.attn.hook_z (the attention output projection's input)


class Captured(NamedTuple):
    """One capture run of a sweep (``interp.patching.sweep._capture``).

    Attributes:
        acts: the swept point at every layer, ``layer -> [batch, seq, d]`` (all positions).
        resid: ``resid_pre`` per layer (with ``resume``), else empty.
        logits: last-position logits ``[batch, vocab]`` (``None`` when not asked or deferred).
        arity: the blocks' output arity (``interp.patching.resume.output_arity``).
        cache: the run's HF key/value cache (on the key/value path), else ``None``.
        hidden: the unembedding's input at the last position ``[batch, d_model]``, or ``None``.
    """

    acts: dict[int, Tensor]
    resid: dict[int, Tensor]
    logits: Float[Tensor, "batch vocab"] | None
    arity: int | None
    cache: object
    hidden: Float[Tensor, "batch d_model"] | None


def cell_mask(cells: list[Cell], batch: int, seq: int, groups: int, device) -> Tensor:
    """``[len(cells) * batch, seq, groups]``: True where a copy's activation is patched."""
    mask = torch.zeros(len(cells), seq, groups, dtype=torch.bool, device=device)
    for i, (_, pos, head) in enumerate(cells):
        mask[i, slice(None) if pos is None else pos, slice(None) if head is None else head] = True
    return mask.repeat_interleave(batch, 0)


def writer(src: Tensor, rows: Tensor, mask: Tensor, groups: int) -> Callable[[Tensor], Tensor]:
    """Write ``src`` (``[len(rows), seq, d]``) into the copies ``rows`` where ``mask`` holds
    (an activation with more axes, as hook_z's heads, is flattened to ``d`` and back)."""

    def write(act: Tensor) -> Tensor:
        shape = act.shape
        act = act.flatten(2)
        n, seq, d = act.shape
        old = act[rows].reshape(len(rows), seq, groups, d // groups)
        new = src.to(act.dtype).reshape(len(rows), seq, groups, d // groups)
        out = act.clone()
        out[rows] = torch.where(mask.unsqueeze(-1), new, old).reshape(len(rows), seq, d)
        return out.reshape(shape)

    return write


def unchanged(cell: Cell, clean: dict[int, Tensor], corr: dict[int, Tensor], groups: int) -> bool:
    layer, pos, head = cell
    a, b = clean[layer], corr[layer]
    if pos is not None:
        a, b = a[:, pos], b[:, pos]
    if head is not None:
        a = a.reshape(*a.shape[:-1], groups, -1)[..., head, :]
        b = b.reshape(*b.shape[:-1], groups, -1)[..., head, :]
    return torch.equal(a, b)



class Patches:
    """What every chunk of one sweep shares; ``setup`` builds a chunk's patches."""

    def __init__(self, lm, point: str, groups: int, ids: Tensor, clean_acts: dict[int, Tensor],
                 corrupted: Captured, resume: bool):
        self.lm, self.point, self.groups, (self.batch, self.seq) = lm, point, groups, ids.shape
        self.clean_acts, self.corr_resid, self.arity = clean_acts, corrupted.resid, corrupted.arity
        self.resume = resume

    def start(self, cells: list[Cell]) -> int:
        """The first block a chunk computes."""
        return min(c[0] for c in cells) if self.resume else 0

    def setup(self, cells: list[Cell], prefix: int) -> WindowSetup:
        """The patches of ``cells`` (copy ``i`` of the corrupted prompt patched as
        ``cells[i]``) over positions ``prefix..``, for any window of those positions.

        The forward starts at the cells' first block. A copy whose cell lies in a later block
        ``l`` has its ``resid_pre[l]`` reset to the corrupted run's before its patch, so it
        gets what starting at ``l`` would give: cells of several layers share a forward."""
        lm, batch, device = self.lm, self.batch, self.lm.device
        start = self.start(cells)
        mask = cell_mask(cells, batch, self.seq, self.groups, device)[:, prefix:]
        patches = []  # (layer, copy rows, clean source, mask, reset source or None), positions prefix..
        for layer in sorted({c[0] for c in cells}):
            mine = torch.tensor([i for i, c in enumerate(cells) if c[0] == layer], device=device)
            rows = (mine.unsqueeze(1) * batch + torch.arange(batch, device=device)).flatten()
            src = self.clean_acts[layer][:, prefix:].to(device).repeat(len(mine), 1, 1)
            reset = None
            if self.resume and layer > start:
                reset = self.corr_resid[layer][:, prefix:].to(device).repeat(len(mine), 1, 1)
            patches.append((layer, rows, src, mask[rows], reset))

        def setup(window: slice):
            stack = ExitStack()
            if start > 0:
                resid = self.corr_resid[start][:, prefix:][:, window].to(device).repeat(len(cells), 1, 1)
                stack.enter_context(start_at(lm, start, resid, self.arity))
            writes, resets = {}, {}
            for layer, rows, src, m, reset in patches:
                writes[layer] = writer(src[:, window], rows, m[:, window], self.groups)
                if reset is not None:
                    resets[layer] = writer(reset[:, window], rows, torch.ones_like(m[:, window, :1]), 1)
            interventions = {block_hook(layer, "resid_pre"): fn for layer, fn in resets.items()}
            for layer, fn in writes.items():
                name = block_hook(layer, self.point)
                interventions[name] = then(interventions[name], fn) if name in interventions else fn
            return stack, interventions

        return setup


def then(first: Callable[[Tensor], Tensor], second: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda act: second(first(act))
