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

# Cost model of one head run (``interp.patching.kv.head_run``), in multiply-adds. A block costs
# ~12 d_model^2 per token and row, plus reading the block's weights, which costs about as much
# as WEIGHT_ROWS more token-rows (small batches are bandwidth-bound on CPU), plus Python
# overhead per forward and per block (what a core multiply-adds in ~1 ms / ~0.1 ms). The final
# block runs its attention only (~1/3 of a block) there; the last position is computed by tail
# runs shared by many chunks, so it does not enter the choice.
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


def kv_chunks(lm, cells: list[Cell], size: int, batch: int, seq: int, resume: bool) -> list[list[Cell]]:
    """Chunks for the key/value path: cells of one layer (with ``resume``), positions grouped
    into consecutive runs of at most ``size`` cells, the grouping minimising the cost model
    (dynamic programming over each layer's sorted positions). Cells patching all positions
    (``pos is None``) are chunked in order."""
    whole = [c for c in cells if c[1] is None]
    if whole:
        return chunks(whole, size, (lambda c: c[0]) if resume else None) + kv_chunks(
            lm, [c for c in cells if c[1] is not None], size, batch, seq, resume)
    by_layer: dict[int, list[Cell]] = {}
    for cell in cells:
        by_layer.setdefault(cell[0] if resume else 0, []).append(cell)
    per_token = 12 * lm.d_model ** 2
    out: list[list[Cell]] = []
    for start, group in sorted(by_layer.items()):
        group.sort(key=lambda c: (c[1], c))
        blocks = lm.n_layers - start
        best = [0.0] + [float("inf")] * len(group)
        cut = [0] * (len(group) + 1)
        for j in range(1, len(group) + 1):
            for i in range(max(0, j - size), j):
                tokens = (j - i) * batch * (seq - 1 - group[i][1])
                run = 0.0 if tokens == 0 else (
                    FORWARD_MACS + blocks * BLOCK_MACS + (blocks - 2 / 3) * (tokens + WEIGHT_ROWS) * per_token)
                if best[i] + run < best[j]:
                    best[j], cut[j] = best[i] + run, i
        j, parts = len(group), []
        while j > 0:
            parts.append(group[cut[j]:j])
            j = cut[j]
        out.extend(reversed(parts))
    return out
