"""How a sweep's patched runs are grouped into forwards.

A *cell* is one patched run: ``(layer, position or None = all, head or None = all)``. A chunk
is a list of cells computed in one batched forward. On the key/value path
(``interp.patching.kv``) a chunk computes positions ``min(pos)..`` only, so small chunks save
tokens and large ones save per-forward overhead; ``kv_chunks`` picks the grouping a cost model
says is cheapest.
"""

from __future__ import annotations

from collections.abc import Callable

Cell = tuple[int, int | None, int | None]  # (layer, position or None = all, head or None = all)

# Cost model of one patched run (``interp.patching.kv.kv_chunk``), in multiply-adds. A block
# costs ~12 d_model^2 per token and row, plus reading the block's weights, which costs about as
# much as WEIGHT_ROWS more token-rows (small batches are bandwidth-bound on CPU), plus Python
# overhead per forward and per block (what a core multiply-adds in ~1 ms / ~0.1 ms). The final
# block runs its FFN (~2/3 of a block) at the last position only.
WEIGHT_ROWS = 8
FORWARD_MACS = 15_000_000
BLOCK_MACS = 1_500_000


def chunks(cells: list[Cell], size: int, key: Callable[[Cell], object] | None) -> list[list[Cell]]:
    """Consecutive runs of ``cells`` of at most ``size``, a new one wherever ``key`` changes."""
    out: list[list[Cell]] = []
    for cell in cells:
        if not out or len(out[-1]) >= size or (key is not None and key(out[-1][0]) != key(cell)):
            out.append([])
        out[-1].append(cell)
    return out


def kv_chunks(lm, cells: list[Cell], size: int, batch: int, seq: int, resume: bool,
              final_alone: bool = False, pack: int | None = None) -> list[list[Cell]]:
    """Chunks for the key/value path: cells of one layer (with ``resume``), positions grouped
    into consecutive runs of at most ``size`` cells, the grouping minimising the cost model
    (dynamic programming over each layer's sorted positions). Cells patching all positions
    (``pos is None``) are chunked in order; with ``final_alone`` so are the final layer's
    (each runs the last position alone, see ``interp.patching.kv.final_layer_cache``). With
    ``pack`` (and ``resume``) each layer's cells are packed instead (``packs``)."""
    whole = [c for c in cells if c[1] is None]
    if whole:
        return chunks(whole, size, (lambda c: c[0]) if resume else None) + kv_chunks(
            lm, [c for c in cells if c[1] is not None], size, batch, seq, resume, final_alone, pack)
    if final_alone:
        final = [c for c in cells if c[0] == lm.n_layers - 1]
        rest = kv_chunks(lm, [c for c in cells if c[0] != lm.n_layers - 1], size, batch, seq, resume, pack=pack)
        return rest + chunks(final, size, None)
    by_layer: dict[int, list[Cell]] = {}
    for cell in cells:
        by_layer.setdefault(cell[0] if resume else 0, []).append(cell)
    if pack is not None and resume:
        return [part for _, group in sorted(by_layer.items()) for part in packs(group, size, seq, pack)]
    per_token = 12 * lm.d_model ** 2
    out: list[list[Cell]] = []
    for start, group in sorted(by_layer.items()):
        group.sort(key=lambda c: (c[1], c))
        blocks = lm.n_layers - start
        best = [0.0] + [float("inf")] * len(group)
        cut = [0] * (len(group) + 1)
        for j in range(1, len(group) + 1):
            for i in range(max(0, j - size), j):
                rows = (j - i) * batch
                tokens = rows * (seq - group[i][1])
                run = FORWARD_MACS + blocks * BLOCK_MACS + per_token * (
                    (blocks - 2 / 3) * (tokens + WEIGHT_ROWS) + 2 / 3 * (rows + WEIGHT_ROWS))
                if best[i] + run < best[j]:
                    best[j], cut[j] = best[i] + run, i
        j, parts = len(group), []
        while j > 0:
            parts.append(group[cut[j]:j])
            j = cut[j]
        out.extend(reversed(parts))
    return out


def packs(cells: list[Cell], size: int, seq: int, width: int) -> list[list[Cell]]:
    """One layer's cells (each at a position) in packs (``interp.patching.packed``) of at most
    ``size`` runs whose tokens, with the cached prefix they see, number at most ``width``
    (at least one run each). Cells are taken by position, so a pack's prefix stays short."""
    out: list[list[Cell]] = []
    tokens = 0
    for cell in sorted(cells, key=lambda c: (c[1], c)):
        need = seq - cell[1]
        if not out or len(out[-1]) >= size or tokens + need + cell[1] > width:
            out.append([])
            tokens = 0
        out[-1].append(cell)
        tokens += need
    return out
