"""Several continuations of one context in one row, each seeing the context and itself only.

A row is ``(context tokens, branches)``; it runs as ``context + branch 0 + branch 1 + ...``
(no padding between branches) under a custom attention mask: a context token sees the
context before it, a branch token the whole context and its own branch's earlier tokens,
never another branch; position ids continue from the context's length in every branch. Every
token's numbers are those of running ``context + its branch`` alone (up to float rounding),
while the context's keys and values are computed once, in the same forward, and never copied
per branch (a key/value cache expanded to one row per branch copies it per branch and layer,
and needs a second forward). Rows are left-padded, as ``LM.run`` pads prompts, so prompt-
relative ``positions`` count back from each row's last branch token.

Only the positions count against ``lm.max_positions`` (a row may hold more tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from interp.errors import PromptError
from interp.forward import Forward, forward
from interp.positions import Positions

Row = tuple[list[int], list[list[int]]]  # (context tokens, each branch's tokens)


def pack(rows: Sequence[Row], pad_id: int) -> tuple[
    Int[Tensor, "batch seq"], Int[Tensor, "batch seq"], Bool[Tensor, "batch 1 seq seq"], Int[Tensor, "batch seq"]
]:
    """``(ids, mask, allowed, position_ids)`` of the packed, left-padded rows: token ``j`` of a
    branch has position id ``len(context) + j``; ``allowed[b, 0, q, k]`` says whether query
    ``q`` may attend to key ``k`` (a padding query sees itself only, so that no row of the
    attention is empty)."""
    seqs, segments, positions = [], [], []
    for ctx, fed in rows:
        seqs.append(list(ctx) + [t for f in fed for t in f])
        segments.append([0] * len(ctx) + [i + 1 for i, f in enumerate(fed) for _ in f])
        positions.append(list(range(len(ctx))) + [len(ctx) + j for f in fed for j in range(len(f))])
    seq = max(len(r) for r in seqs)
    ids = torch.full((len(seqs), seq), pad_id, dtype=torch.long)
    seg = torch.full((len(seqs), seq), -1, dtype=torch.long)  # -1: padding, 0: context, i + 1: branch i
    pos = torch.zeros((len(seqs), seq), dtype=torch.long)
    for b, (r, s, p) in enumerate(zip(seqs, segments, positions)):
        ids[b, seq - len(r):] = torch.tensor(r, dtype=torch.long)
        seg[b, seq - len(r):] = torch.tensor(s, dtype=torch.long)
        pos[b, seq - len(r):] = torch.tensor(p, dtype=torch.long)
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    allowed = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    allowed |= torch.eye(seq, dtype=torch.bool)  # padding queries: themselves (never read by a real token)
    return ids, (seg >= 0).long(), allowed[:, None], pos


def run_packed(lm, rows: Sequence[Row], capture: Sequence[str] = (), positions: Positions = None) -> Forward:
    """One forward over the packed ``rows``: logits and captures (full or short hook names) at
    the prompt-relative ``positions`` of each packed, left-padded row (``None``: all)."""
    longest = max(len(ctx) + max((len(b) for b in branches), default=0) for ctx, branches in rows)
    if any(not ctx for ctx, _ in rows):
        raise PromptError("a packed row needs a context of at least one token")
    if lm.max_positions is not None and longest > lm.max_positions:
        raise PromptError(f"a context and branch of {longest} tokens exceed the model's {lm.max_positions} positions")
    ids, mask, allowed, position_ids = pack(rows, lm.pad_id)
    bias = torch.zeros(allowed.shape, dtype=lm.dtype).masked_fill_(~allowed, torch.finfo(lm.dtype).min)
    points = [p for name in capture for p in lm.resolve(name)]
    # captures of a model spread over devices gathered where its inputs are, with the logits
    return forward(lm, ids, mask, capture=points, positions=positions, attention=bias, position_ids=position_ids,
                   capture_device=lm.device)
