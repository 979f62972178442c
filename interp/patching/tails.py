"""Tail batching on the key/value path: the last position of many chunks in one forward.

A chunk's head run (``interp.patching.kv.head_run``) stops at the final block's FFN with its
cache holding every position but the last; the metric reads the last position only, so the
chunks wait in ``Tails`` and one tail run computes that position for all of them, on their
caches concatenated along the batch.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from transformers import DynamicCache

from interp.patching.chunks import Cell
from interp.patching.kv import KV, concat_caches, head_run, prefix_cache, window_run
from interp.patching.patches import Patches


class Tails:
    """Chunks whose head runs are done, waiting for one tail run: their last position,
    computed together on their caches concatenated (cells of several layers share it, see
    ``Patches.setup``); flushed when ``size`` cells are waiting."""

    def __init__(self, lm, patches: Patches, ids: Tensor, size: int, done: Callable[[list[Cell], Tensor], None]):
        self.lm, self.patches, self.ids, self.size, self.done = lm, patches, ids, size, done
        self.cells: list[Cell] = []
        self.caches: list[DynamicCache] = []

    def add(self, chunk: list[Cell], cache: DynamicCache) -> None:
        if self.cells and len(self.cells) + len(chunk) > self.size:
            self.flush()
        self.cells.extend(chunk)
        self.caches.append(cache)

    def flush(self) -> None:
        if not self.cells:
            return
        cells, caches = self.cells, self.caches
        self.cells, self.caches = [], []
        seq = self.ids.shape[1]
        context, interventions = self.patches.setup(cells, seq - 1)(slice(0, 1))
        with context:
            hidden = window_run(self.lm, self.ids.repeat(len(cells), 1), seq - 1, seq, concat_caches(self.lm, caches),
                                interventions, last=True)
        self.done(cells, hidden)


def kv_chunk(lm, patches: Patches, ids: Tensor, chunk: list[Cell], kv: KV, tails: Tails,
             done: Callable[[list[Cell], Tensor], None]) -> None:
    """Compute one chunk on the key/value path: its head run now, its last position later."""
    seq = ids.shape[1]
    n = len(chunk)
    # Positions before ``prefix`` are unchanged by every patch of the chunk.
    prefix = 0 if any(c[1] is None for c in chunk) else min(c[1] for c in chunk)
    if prefix == seq - 1:
        tails.add(chunk, prefix_cache(lm, kv, seq - 1, n))
        return
    cache = head_run(lm, ids.repeat(n, 1), prefix, kv, patches.start(chunk), patches.setup(chunk, prefix))
    if cache is not None:
        tails.add(chunk, cache)
        return
    context, interventions = patches.setup(chunk, prefix)(slice(None))  # computed whole
    with context:
        done(chunk, window_run(lm, ids.repeat(n, 1), prefix, seq, prefix_cache(lm, kv, prefix, n), interventions, last=True))

