"""Shared helpers: seeding, thread control, padding prompts into batches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_determinism(seed: int, threads: int = 1) -> None:
    """Seed every RNG and fix the thread count (results depend on it through float sums)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, with ``<s>`` (as in training)."""
    return tokenizer(texts, add_special_tokens=True)["input_ids"]


def pad(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)``, both ``[batch, max_len]``; padding on the right unless ``left``."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(n - len(s), n) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(s, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 at the first real token (needed with left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)
