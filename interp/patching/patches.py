"""Patch building: the writes that turn copies of the corrupted prompt into patched runs.

A chunk of cells is one forward over ``len(cells)`` copies of the corrupted batch; copy ``i``
is patched as ``cells[i]``. Per hook, one write covers every copy of a layer: it replaces the
clean activation's values at the copies' patched entries (``entries``: row, position, and a
head as one of ``groups`` slices of the last axis), so a chunk costs one write per layer, not
one per cell.
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


def entries(cells: list[Cell], batch: int, seq: int, groups: int, prefix: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where the copies of ``cells`` are patched, one entry per (copy row, position, group):
    ``(row, position - prefix, prompt, group)``, positions ``prefix..`` (copy ``i``'s rows are
    ``i * batch + prompt``; a head is one of ``groups`` slices of the last axis)."""
    out = []
    for i, (_, pos, head) in enumerate(cells):
        positions = range(prefix, seq) if pos is None else [pos] if pos >= prefix else []
        heads = range(groups) if head is None else [head]
        out += [(i * batch + b, p - prefix, b, h) for b in range(batch) for p in positions for h in heads]
    return torch.tensor(out, dtype=torch.long).reshape(-1, 4).unbind(1)


def writer(values: Tensor, rows: Tensor, pos: Tensor, groups: Tensor, n_groups: int) -> Callable[[Tensor], Tensor]:
    """Write ``values`` (``[k, d // n_groups]``) at the ``k`` entries ``(rows, pos, groups)`` of
    an activation viewed ``[copies, pos, n_groups, d // n_groups]`` (one with more axes, as
    hook_z's heads, is flattened to ``d`` and back). Only the entries are touched: a copy of
    the activation, then one indexed write."""

    def write(act: Tensor) -> Tensor:
        shape = act.shape
        out = act.flatten(2).clone()
        n, seq, d = out.shape
        # to the activation's device: with a device_map, the block's (not lm.device)
        index = (rows.to(out.device), pos.to(out.device), groups.to(out.device))
        out.view(n, seq, n_groups, d // n_groups)[index] = values.to(out.device, out.dtype)
        return out.reshape(shape)

    return write


def _values(src: Tensor, prompts: Tensor, pos: Tensor, groups: Tensor, n_groups: int, prefix: int) -> Tensor:
    """``src`` (``[batch, seq, d]``) at the entries: ``[k, d // n_groups]``."""
    batch, seq, d = src.shape
    return src.reshape(batch, seq, n_groups, d // n_groups)[prompts, pos + prefix, groups]


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
                 corrupted: Captured, resume: bool, clean_kv: list[tuple[Tensor, Tensor]] | None = None):
        """``clean_kv``: the clean run's keys and values per layer, for ``final_kv`` cells (on
        the key/value path of a ``resid_pre`` sweep), else ``None``."""
        self.lm, self.point, self.groups, (self.batch, self.seq) = lm, point, groups, ids.shape
        self.clean_acts, self.corr_resid, self.arity = clean_acts, corrupted.resid, corrupted.arity
        self.resume, self.clean_kv = resume, clean_kv

    def start(self, cells: list[Cell]) -> int:
        """The first block a chunk computes."""
        return min(c[0] for c in cells) if self.resume else 0

    def final_kv(self, cells: list[Cell]) -> bool:
        """Whether ``cells`` are all ``resid_pre`` patches at the final layer's positions, which
        the key/value path runs at the last position alone (``interp.patching.kv``)."""
        last = self.lm.n_layers - 1
        return self.clean_kv is not None and all(c[0] == last and c[1] is not None for c in cells)

    def packs(self, cells: list[Cell]) -> bool:
        """Whether ``cells`` can run packed (``interp.patching.packed``): with resuming, all of
        one layer, each at a position, and not ``final_kv`` cells."""
        return (self.resume and len({c[0] for c in cells}) == 1 and all(c[1] is not None for c in cells)
                and not self.final_kv(cells))

    def ffn_unread(self, cells: list[Cell]) -> bool:
        """Whether no patch of ``cells`` writes the final block's FFN output, so that the FFN
        may run at the last position only."""
        return self.point != "mlp_out" or all(c[0] != self.lm.n_layers - 1 for c in cells)

    def setup(self, cells: list[Cell], prefix: int) -> tuple[ExitStack, dict[str, Callable[[Tensor], Tensor]]]:
        """The patches of ``cells`` (copy ``i`` of the corrupted prompt patched as
        ``cells[i]``) over positions ``prefix..``: a context that starts the forward at the
        cells' first block, and the other patches as interventions (hook name -> function).

        A copy whose cell lies in a later block ``l`` has its ``resid_pre[l]`` reset to the
        corrupted run's before its patch, so it gets what starting at ``l`` would give: cells
        of several layers share a forward."""
        lm, batch, device = self.lm, self.batch, self.lm.device
        start = self.start(cells)
        stack = ExitStack()
        if start > 0:
            resid = self.corr_resid[start][:, prefix:].to(device).repeat(len(cells), 1, 1)
            stack.enter_context(start_at(lm, start, resid, self.arity))
        interventions: dict[str, Callable[[Tensor], Tensor]] = {}
        for layer in sorted({c[0] for c in cells}):
            mine = [c if c[0] == layer else None for c in cells]
            rows, pos, prompts, groups = entries([c for c in mine if c], batch, self.seq, self.groups, prefix)
            # entries() numbers this layer's copies 0..; map them back to the chunk's copies
            copies = torch.tensor([i for i, c in enumerate(mine) if c], dtype=torch.long)
            rows = copies[rows // batch] * batch + rows % batch
            src = self.clean_acts[layer].to(device)
            write = writer(_values(src, prompts, pos, groups, self.groups, prefix).to(device),
                           rows.to(device), pos.to(device), groups.to(device), self.groups)
            if self.resume and layer > start:
                cells_all = [(layer, None, None) for c in mine if c]
                r_rows, r_pos, r_prompts, r_groups = entries(cells_all, batch, self.seq, 1, prefix)
                r_rows = copies[r_rows // batch] * batch + r_rows % batch
                reset = self.corr_resid[layer].to(device)
                interventions[block_hook(layer, "resid_pre")] = writer(
                    _values(reset, r_prompts, r_pos, r_groups, 1, prefix).to(device),
                    r_rows.to(device), r_pos.to(device), r_groups.to(device), 1)
            name = block_hook(layer, self.point)
            interventions[name] = then(interventions[name], write) if name in interventions else write
        return stack, interventions


    def packed_setup(self, cells: list[Cell], layout) -> tuple[ExitStack, dict[str, Callable[[Tensor], Tensor]]]:
        """The patches of one layer's ``cells`` packed as ``layout`` says
        (``interp.patching.packed.Layout``: run ``i`` is ``cells[i]``, its patched position at
        packed column ``offsets[i]``): the forward starts at their block, on the corrupted
        run's ``resid_pre`` at the packed positions."""
        lm, batch, device = self.lm, self.batch, self.lm.device
        start, layer = self.start(cells), cells[0][0]
        stack = ExitStack()
        if start > 0:
            resid = self.corr_resid[start].to(device)[:, layout.positions.to(device)]
            stack.enter_context(start_at(lm, start, resid, self.arity))
        found = [(b, int(layout.offsets[i]), b, h, pos) for i, (_, pos, head) in enumerate(cells)
                 for b in range(batch) for h in (range(self.groups) if head is None else [head])]
        rows, cols, prompts, groups, positions = torch.tensor(found, dtype=torch.long).reshape(-1, 5).unbind(1)
        src = self.clean_acts[layer].to(device)
        values = _values(src, prompts, positions, groups, self.groups, 0)
        write = writer(values.to(device), rows.to(device), cols.to(device), groups.to(device), self.groups)
        return stack, {block_hook(layer, self.point): write}


def then(first: Callable[[Tensor], Tensor], second: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda act: second(first(act))
