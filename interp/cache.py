"""What a run returns: the logits and a cache of captured activations.

Axis names used throughout (one glossary): ``batch`` prompts, ``seq`` columns of the
left-padded batch, ``pos`` kept positions (``seq``, or the ``positions=`` chosen), ``layer``
blocks, ``d_model`` residual width, ``vocab`` vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError, UnknownHook
from interp.hook_names import BLOCK_POINTS, HEAD_POINTS, block_hook


MAX_SHOWN = 6  # hook names a cache's repr lists before "... N more"


def describe(t: Tensor | None) -> str:
    """``[3, 7, 64] float32`` (or ``None``): a tensor's shape and dtype, for reprs."""
    if t is None:
        return "None"
    return f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}"


class ActivationCache(Mapping[str, Tensor]):
    """Captured activations by full hook name, each ``[batch, pos, d_model]`` (head hooks:
    ``[batch, pos, head, d_head]``, a pattern ``[batch, head, query_pos, key_pos]``)."""

    def __init__(self, tensors: dict[str, Tensor], n_layers: int):
        self._tensors = tensors
        self.n_layers = n_layers

    def __getitem__(self, name: str) -> Float[Tensor, "batch ..."]:
        try:
            return self._tensors[name]
        except KeyError:
            have = ", ".join(self._tensors) or "nothing (pass capture=[...] to lm.run)"
            raise UnknownHook(f"{name!r} was not captured in this run; captured: {have}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __repr__(self) -> str:
        # Shapes only: printing a cache must not dump every activation tensor.
        shown = [f"{name}: {describe(t)}" for name, t in list(self._tensors.items())[:MAX_SHOWN]]
        if len(self._tensors) > MAX_SHOWN:
            shown.append(f"... {len(self._tensors) - MAX_SHOWN} more")
        return f"ActivationCache({len(self._tensors)} hooks{': ' if shown else ''}{', '.join(shown)})"

    def __len__(self) -> int:
        return len(self._tensors)

    def stack(self, point: str) -> Float[Tensor, "layer batch ..."]:
        """The point at every layer, stacked: ``stack("resid_post")[l] == cache[f"blocks.{l}.hook_resid_post"]``."""
        if point not in BLOCK_POINTS + HEAD_POINTS:
            raise UnknownHook(f"stack() takes a per-block short name ({', '.join(BLOCK_POINTS + HEAD_POINTS)}), got {point!r}")
        names = [block_hook(layer, point) for layer in range(self.n_layers)]
        missing = [n for n in names if n not in self._tensors]
        if missing:
            raise UnknownHook(
                f"stack({point!r}) needs every layer, but {len(missing)} were not captured "
                f"(e.g. {missing[0]!r}); capture the short name {point!r}"
            )
        return torch.stack([self._tensors[n] for n in names])


@dataclass
class Run:
    """The result of ``lm.run``.

    Attributes:
        tokens: input ids, left-padded ``[batch, seq]``.
        attention_mask: 1 on real tokens ``[batch, seq]``.
        lengths: real tokens per prompt ``[batch]``.
        logits: ``[batch, pos, vocab]`` (``None`` when ``logits=False`` stopped early).
        cache: captured activations.
        columns: the padded columns kept per prompt ``[batch, pos]``, or ``None`` if all.
        past: the HF key/value cache of every position (``use_cache=True``), else ``None``.
    """

    tokens: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    lengths: Int[Tensor, " batch"]
    logits: Float[Tensor, "batch pos vocab"] | None
    cache: ActivationCache
    columns: Int[Tensor, "batch pos"] | None = field(default=None)
    past: Any = field(default=None, repr=False)

    @property
    def scores(self) -> Tensor:
        """Only a reward model's run has scores (``interp.reward.RewardRun``)."""
        raise InterpError("run.scores is a reward model's output, and this run is a causal LM's (read run.logits); "
                          "load a reward model with interp.load_reward(...) or interp.load(..., head='classifier')")

    def __repr__(self) -> str:
        # Shapes and dtypes, not values: ``print(run)`` must not dump whole logit tensors.
        fields = ("tokens", "attention_mask", "lengths", "logits")
        parts = [f"{name}={describe(getattr(self, name))}" for name in fields]
        return f"Run({', '.join(parts)}, cache={self.cache!r}, columns={describe(self.columns)})"
