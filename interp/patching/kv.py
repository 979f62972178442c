"""Patched runs that compute only the positions a patch can change.

A patch at position ``p`` cannot change any activation at positions before ``p`` (causal
attention), so a patched run can take those positions' keys and values from the corrupted
run's HF key/value cache (a ``DynamicCache``) and compute positions ``p..`` only, with
``position_ids`` ``p..`` and a full-length attention mask. Since the sweep's metric reads the
last position only, the final block's FFN runs there alone (``ffn_at``): its attention
still runs at every computed position (it fills the cache), but nothing after it reads the
other positions.

A ``resid_pre`` patch at the final layer, position ``p``, changes that layer's keys and values
at ``p`` only, to the clean run's: such a cell needs no computed position but the last, on the
corrupted cache with the clean keys and values written at ``p`` (``final_layer_cache``).

Families whose cache is not a ``DynamicCache`` holding every position get ``None`` from
``prefix_kv`` and take the full-length path in ``interp.patching.sweep``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import DynamicCache, DynamicLayer
from transformers.cache_utils import DynamicSlidingWindowLayer

from interp.forward import forward
from interp.interventions import as_callable
from interp.patching.chunks import Cell

if TYPE_CHECKING:
    from interp.patching.patches import Patches

KV = list[tuple[Tensor, Tensor]]  # per layer: keys, values [batch, kv_heads, seq, d_head]


def prefix_kv(lm, cache, seq: int) -> KV | None:
    """The corrupted run's per-layer ``(keys, values)``, or ``None`` where the family's cache is
    not a ``DynamicCache`` of plain (or not yet sliding) layers holding every position, so the
    shortcut would not be exact."""
    if not isinstance(cache, DynamicCache) or len(cache.layers) != lm.n_layers:
        return None
    out = []
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
            return None
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, Tensor) or not isinstance(values, Tensor) or keys.ndim != 4:
            return None
        if keys.shape[-2] != seq or values.shape[-2] != seq:  # e.g. a sliding window dropped some
            return None
        out.append((keys, values))
    return out


def prefix_cache(lm, kv: KV, prefix: int, copies: int) -> DynamicCache:
    """A fresh cache holding the first ``prefix`` positions of ``kv``, repeated ``copies``
    times along the batch (copy-major, as ``ids.repeat(copies, 1)``)."""
    cache = DynamicCache(config=lm.model.config)
    if prefix > 0:
        for i, (keys, values) in enumerate(kv):
            # expanded, not repeated: the cache's update copies them (or the forward's next one)
            # kept on their layer's device (which a device_map may make differ from lm.device)
            cache.update(_copies(keys[:, :, :prefix], copies), _copies(values[:, :, :prefix], copies), i)
    return cache


def _copies(x: Tensor, copies: int) -> Tensor:
    """``x.repeat(copies, 1, 1, 1)``, a view where ``x`` has one row."""
    return x.unsqueeze(0).expand(copies, *x.shape).flatten(0, 1)


def final_layer_cache(lm, kv: KV, clean_kv: KV, cells: list[Cell], batch: int, seq: int) -> DynamicCache:
    """The cache of ``resid_pre`` cells at the final layer, for a run of the last position
    alone: the corrupted run's first ``seq - 1`` positions, with copy ``i``'s final-layer keys
    and values at ``cells[i]``'s position the clean run's (a patch at the last position is
    the run's own write)."""
    cache = prefix_cache(lm, kv, seq - 1, len(cells))
    if seq == 1:
        return cache
    layer = cache.layers[lm.n_layers - 1]
    copies = [i for i, c in enumerate(cells) if c[1] < seq - 1]
    if copies:
        device = layer.keys.device  # the final layer's (with a device_map, maybe not lm.device)
        rows = (torch.tensor(copies).unsqueeze(1) * batch + torch.arange(batch)).flatten().to(device)
        pos = torch.tensor([cells[i][1] for i in copies]).repeat_interleave(batch).to(device)
        src = torch.arange(batch).repeat(len(copies)).to(device)
        clean_keys, clean_values = clean_kv[lm.n_layers - 1]
        # Own copies (a cache may keep what ``update`` was given: here views of ``kv``).
        layer.keys, layer.values = layer.keys.clone(), layer.values.clone()
        layer.keys[rows, :, pos] = clean_keys.to(device)[src, :, pos].to(layer.keys.dtype)
        layer.values[rows, :, pos] = clean_values.to(device)[src, :, pos].to(layer.values.dtype)
    return cache


@contextmanager
def ffn_at(lm, columns: Tensor | None) -> Iterator[None]:
    """Within the ``with`` (unless ``columns`` is ``None``), the final block's FFN runs at
    ``columns`` only; its update is zero at the other columns, which nothing reads."""
    if columns is None:
        yield
        return
    shape: dict[str, torch.Size] = {}

    def pre(module, args):
        shape["in"] = args[0].shape
        return (args[0][:, columns.to(args[0].device)],) + tuple(args[1:])

    def post(module, args, output):
        first = output[0] if isinstance(output, tuple) else output
        full = first.new_zeros(*shape["in"][:2], first.shape[-1])
        full[:, columns.to(first.device)] = first
        return (full,) + tuple(output[1:]) if isinstance(output, tuple) else full

    ffn = lm.model.get_submodule(lm.arch.blocks)[lm.n_layers - 1].get_submodule(lm.arch.mlp)
    handles = [ffn.register_forward_pre_hook(pre), ffn.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def window_run(lm, ids: Tensor, start: int, cache: DynamicCache, interventions: dict[str, Callable],
               last_ffn: bool) -> Float[Tensor, "batch d_model"]:
    """Compute positions ``start..`` of the unpadded ``ids`` on top of ``cache`` (which holds
    positions ``..start-1``) and return the unembedding's input at the last position.
    ``interventions`` (hook name -> function of the activation) see the activations of these
    positions only; with ``last_ffn`` the final block's FFN runs at the last position only."""
    writes = {p: as_callable(fn, name, p) for name, fn in interventions.items() for p in lm.resolve(name)}
    last = torch.tensor([ids.shape[1] - start - 1], device=lm.device) if last_ffn else None
    with ffn_at(lm, last):
        out = forward(lm, ids[:, start:], past=cache, writes=writes, unembed_last=True, end="unembed")
    return out.hidden[:, 0]


def kv_chunk(lm, patches: Patches, ids: Tensor, chunk: list[Cell], kv: KV, last_ffn: bool,
             done: Callable[[list[Cell], Tensor], None]) -> None:
    """Compute one chunk on the key/value path and hand its last hidden states to ``done``."""
    seq, n = ids.shape[1], len(chunk)
    if patches.final_kv(chunk):
        prefix = seq - 1
        cache = final_layer_cache(lm, kv, patches.clean_kv, chunk, patches.batch, seq)
    else:
        # Positions before ``prefix`` are unchanged by every patch of the chunk.
        prefix = 0 if any(c[1] is None for c in chunk) else min(c[1] for c in chunk)
        cache = prefix_cache(lm, kv, prefix, n)
    context, interventions = patches.setup(chunk, prefix)
    with context:
        done(chunk, window_run(lm, ids.repeat(n, 1), prefix, cache, interventions, last_ffn and patches.ffn_unread(chunk)))
