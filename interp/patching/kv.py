"""Patched runs that compute only the positions a patch can change.

A patch at position ``p`` cannot change any activation at positions before ``p`` (causal
attention), so a patched run can take those positions' keys and values from the corrupted
run's HF key/value cache (a ``DynamicCache``) and compute positions ``p..`` only, with
``position_ids`` ``p..`` and a full-length attention mask. And since the sweep's metric reads
the last position only, the final block needs its keys and values at the other positions but
not its FFN there: a *head* run computes positions ``p..seq-2`` and stops as the final block's
FFN is about to run; a *tail* run then computes the last position alone, on the caches the
head runs filled, for many patched runs at once (``concat_caches``).

Families whose cache is not a ``DynamicCache`` holding every position get ``None`` from
``prefix_kv`` and take the full-length path in ``interp.patching.sweep``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import DynamicCache, DynamicLayer
from transformers.cache_utils import DynamicSlidingWindowLayer

from interp.forward import forward
from interp.interventions import as_callable

KV = list[tuple[Tensor, Tensor]]  # per layer: keys, values [batch, kv_heads, seq, d_head]
# a window of computed positions -> (context that starts the forward at the run's first block
# and installs head writes, the other patches as interventions {hook name: function})
WindowSetup = Callable[[slice], tuple[AbstractContextManager, dict[str, Callable]]]


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
        for i in range(lm.n_layers):
            _append(cache, i, kv[i], 0, prefix, copies, lm.device)
    return cache


def concat_caches(lm, caches: list[DynamicCache]) -> DynamicCache:
    """One cache whose batch is the caches' batches one after the other (all of one length;
    empty caches, for one-token prompts, give an empty cache)."""
    if len(caches) == 1:
        return caches[0]
    out = DynamicCache(config=lm.model.config)
    for i in range(lm.n_layers):
        if getattr(caches[0].layers[i], "keys", None) is None:
            continue
        out.update(torch.cat([c.layers[i].keys for c in caches]), torch.cat([c.layers[i].values for c in caches]), i)
    return out


def head_run(lm, ids: Tensor, prefix: int, kv: KV, first: int, setup: WindowSetup) -> DynamicCache | None:
    """Run positions ``prefix..seq-2`` of ``ids`` (``copies`` of the corrupted prompt) on the
    corrupted run's first ``prefix`` keys and values, up to the final block's FFN; return the
    cache, holding positions ``..seq-2`` at every layer, for a ``tail_run``. Blocks below
    ``first`` are skipped (``setup`` starts the forward there), so their entries are the
    corrupted run's. ``None`` if the cache did not come out holding every position (a family
    that runs its FFN before its attention would): the caller then computes the run whole."""
    seq = ids.shape[1]
    copies = ids.shape[0] // kv[0][0].shape[0]
    cache = prefix_cache(lm, kv, prefix, copies)
    context, interventions = setup(slice(0, seq - 1 - prefix))
    with context:
        window_run(lm, ids, prefix, seq - 1, cache, interventions, last=False)
    if any(cached_length(cache, i) != seq - 1 for i in range(first, lm.n_layers)):
        return None
    for i in range(first):
        _append(cache, i, kv[i], prefix, seq - 1, copies, lm.device)
    return cache


def window_run(
    lm, ids: Tensor, start: int, end: int, cache: DynamicCache, interventions: dict[str, Callable], last: bool
) -> Float[Tensor, "batch d_model"] | None:
    """Compute positions ``start..end-1`` of the unpadded ``ids`` on top of ``cache`` (which
    holds positions ``..start-1`` and receives these). ``interventions`` (hook name ->
    function of the activation) see the activations of these positions only. With ``last``
    the forward stops before the unembedding and returns its input at position ``end - 1``;
    otherwise it stops as the final block's FFN is about to run, once that block's attention
    has cached its keys and values, and returns ``None``."""
    writes = {p: as_callable(fn, name, p) for name, fn in interventions.items() for p in lm.resolve(name)}
    out = forward(lm, ids[:, start:end], past=cache, writes=writes, unembed_last=True,
                  end="unembed" if last else "last_mlp")
    return out.hidden[:, 0] if last else None


def cached_length(cache: DynamicCache, layer: int) -> int:
    """Positions the cache holds at ``layer`` (-1 if it holds none or is not a plain layer)."""
    keys = getattr(cache.layers[layer], "keys", None) if layer < len(cache.layers) else None
    return keys.shape[-2] if isinstance(keys, Tensor) and keys.ndim == 4 else -1


def _append(cache: DynamicCache, layer: int, kv: tuple[Tensor, Tensor], start: int, end: int, copies: int, device) -> None:
    keys, values = kv
    cache.update(keys[:, :, start:end].to(device).repeat(copies, 1, 1, 1),
                 values[:, :, start:end].to(device).repeat(copies, 1, 1, 1), layer)
