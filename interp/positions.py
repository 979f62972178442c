"""Prompt-relative positions -> columns of the left-padded batch.

Batches are left-padded so that column ``-1`` is every prompt's last real token. A
position ``p >= 0`` means the p-th token of each prompt (column ``pad_b + p``); ``p < 0``
counts back from each prompt's last token (column ``seq + p``). Both are the same token
whether the prompt runs alone or in a padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import PromptError

Positions = int | Sequence[int] | None


def as_position_list(positions: Positions) -> list[int] | None:
    if positions is None:
        return None
    if isinstance(positions, int):
        return [positions]
    if isinstance(positions, Tensor):
        return [int(p) for p in positions.flatten().tolist()]
    return [int(p) for p in positions]


def columns(
    positions: Positions, lengths: Int[Tensor, " batch"], seq_len: int
) -> Int[Tensor, "batch n_pos"] | None:
    """Columns of the padded batch holding each prompt's requested positions.

    Raises PromptError if a position falls outside some prompt (naming that prompt's length).
    """
    plist = as_position_list(positions)
    if plist is None:
        return None
    if not plist:
        raise PromptError("positions is empty; pass None for every position, or e.g. -1 for the last token")
    pos = torch.tensor(plist, dtype=torch.long, device=lengths.device)
    shortest = int(lengths.min())
    bad = [p for p in plist if not -shortest <= p < shortest]
    if bad:
        raise PromptError(
            f"positions {bad} fall outside the shortest prompt ({shortest} tokens); "
            f"valid positions are -{shortest}..{shortest - 1} (prompt-relative)"
        )
    pad = (seq_len - lengths).unsqueeze(1)  # [batch, 1]
    return torch.where(pos >= 0, pad + pos, seq_len + pos)  # broadcasts to [batch, n_pos]
