"""Packed patched runs: the windows of many patched runs in one sequence, no padding.

On the key/value path a patched run at position ``p`` computes positions ``p..`` only
(``interp.patching.kv``). Batched along the batch axis, runs of different ``p`` pad to the
longest window; packed, the windows stand one after the other along the sequence axis of the
prompt's own batch row, each with its own position ids, and a 4-D attention mask lets a token
see the corrupted run's cached keys and values before its run's ``p`` and its own run's tokens
up to itself, nothing else: each token computes what it would in its run alone. The final
block's FFN runs at each run's last token only, and the unembedding's input is read there.

Packing needs an attention that takes a prepared 4-D mask (HF's ``sdpa`` and ``eager``) and no
sliding window shorter than the prompt; ``packable`` says whether a model qualifies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.forward import forward
from interp.interventions import as_callable
from interp.patching.chunks import Cell
from interp.patching.kv import KV, ffn_at, prefix_cache

if TYPE_CHECKING:
    from interp.patching.patches import Patches

MASKS = ("sdpa", "eager")  # attention implementations that take a prepared 4-D mask


def packable(lm, seq: int) -> bool:
    """Whether ``lm``'s attention takes a prepared 4-D mask and no sliding window is shorter
    than ``seq`` (the mask would drop it)."""
    config = lm.model.config
    window = getattr(config, "sliding_window", None)
    return getattr(config, "_attn_implementation", None) in MASKS and (window is None or window >= seq)


class Layout:
    """Where each run of a pack sits: run ``i`` (patched at ``starts[i]``) computes positions
    ``starts[i]..seq-1`` at packed columns ``offsets[i]..``; the pack sees the corrupted
    cache's first ``prefix = max(starts)`` positions."""

    def __init__(self, starts: list[int], seq: int):
        self.starts, self.seq = starts, seq
        lengths = torch.tensor([seq - p for p in starts])
        self.offsets: Int[Tensor, " runs"] = torch.cumsum(lengths, 0) - lengths
        self.last: Int[Tensor, " runs"] = self.offsets + lengths - 1
        self.positions: Int[Tensor, " tokens"] = torch.cat([torch.arange(p, seq) for p in starts])
        self.run_of: Int[Tensor, " tokens"] = torch.repeat_interleave(torch.arange(len(starts)), lengths)
        self.prefix = max(starts)

    def allowed(self) -> Bool[Tensor, "tokens keys"]:
        """Which keys (the cached prefix, then the packed tokens) each packed token sees."""
        start = torch.tensor(self.starts)[self.run_of]
        past = torch.arange(self.prefix).unsqueeze(0) < start.unsqueeze(1)
        own = (self.run_of.unsqueeze(0) == self.run_of.unsqueeze(1)) & (
            self.positions.unsqueeze(0) <= self.positions.unsqueeze(1))
        return torch.cat([past, own], 1)


def attention_mask(lm, layout: Layout, batch: int) -> Tensor:
    """``[batch, 1, tokens, keys]`` in the form the model's attention takes (boolean for
    ``sdpa``, additive for ``eager``)."""
    allowed = layout.allowed().to(lm.device)
    if lm.model.config._attn_implementation == "eager":
        dtype = lm.model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=lm.device).masked_fill(~allowed, torch.finfo(dtype).min)
    else:
        mask = allowed
    return mask[None, None].expand(batch, 1, *allowed.shape)


def packed_chunk(lm, patches: Patches, ids: Tensor, chunk: list[Cell], kv: KV, last_ffn: bool,
                 done: Callable[[list[Cell], Tensor], None]) -> None:
    """Compute a chunk of one layer's cells (each at a position) as one pack and hand their
    last hidden states (copy-major, as ``ids.repeat``) to ``done``."""
    batch, seq = ids.shape
    layout = Layout([c[1] for c in chunk], seq)
    cache = prefix_cache(lm, kv, layout.prefix, 1)
    mask = attention_mask(lm, layout, batch)
    tokens = ids.to(lm.device)[:, layout.positions.to(lm.device)]
    position_ids = layout.positions.to(lm.device).unsqueeze(0).expand(batch, -1)
    context, interventions = patches.packed_setup(chunk, layout)
    writes = {p: as_callable(fn, name, p) for name, fn in interventions.items() for p in lm.resolve(name)}
    last = layout.last.to(lm.device)
    # Prompt-relative positions of the runs' last tokens: the cached prefix comes first.
    ends = [layout.prefix + int(col) for col in layout.last]
    with context, ffn_at(lm, last if last_ffn and patches.ffn_unread(chunk) else None):
        out = forward(lm, tokens, past=cache, writes=writes, positions=ends, end="unembed", attention=mask,
                      position_ids=position_ids)
    hidden: Float[Tensor, "batch runs d"] = out.hidden
    done(chunk, hidden.transpose(0, 1).reshape(-1, hidden.shape[-1]))
