"""Checking what a patching call is given: the prompt pair, the hook, the metric's value."""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError, PromptError, UnknownHook
from interp.hook_names import BLOCK_POINTS


def prompt_pair(lm, corrupted, clean) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"]]:
    """Token ids of ``corrupted`` and ``clean``, ``[batch, seq]`` each, without padding.

    Patching swaps the activation at one position between the two runs, so every prompt of
    both must have the same token length (as TransformerLens's ``[batch, pos]`` tensors do).
    """
    corr_ids, _, corr_len = lm.to_tokens(corrupted)
    clean_ids, _, clean_len = lm.to_tokens(clean)
    lengths = set(corr_len.tolist()) | set(clean_len.tolist())
    if len(lengths) > 1:
        raise PromptError(
            "corrupted and clean prompts must all have the same number of tokens; got corrupted "
            f"lengths {corr_len.tolist()} and clean lengths {clean_len.tolist()}"
        )
    if corr_ids.shape[0] != clean_ids.shape[0]:
        raise PromptError(
            f"corrupted has {corr_ids.shape[0]} prompts and clean has {clean_ids.shape[0]}; "
            "pass one clean prompt per corrupted prompt"
        )
    return corr_ids, clean_ids


def sweep_point(lm, hook: str) -> str:
    """Validate a short per-block hook name (``resid_pre`` ...) for this model and return it."""
    if hook not in BLOCK_POINTS:
        raise UnknownHook(
            f"patching sweeps take a short per-block hook name, one of {', '.join(BLOCK_POINTS)}; "
            f"got {hook!r}"
        )
    lm.resolve(hook)  # raises for resid_mid on parallel families, naming the valid points
    return hook


def scalar(value, what: str = "metric") -> Tensor:
    """The metric's value as a 0-d tensor, or a clear error."""
    if not isinstance(value, Tensor):
        if isinstance(value, (int, float)):
            return torch.tensor(float(value))
        raise InterpError(f"{what} must return a scalar tensor, got {type(value).__name__}")
    if value.ndim != 0:
        raise InterpError(
            f"{what} must return a scalar (0-d) tensor, got shape {tuple(value.shape)}; "
            "reduce over the batch inside the metric, e.g. with .mean()"
        )
    return value
