"""Writing to hook points: replace or add a tensor, or apply any function.

``lm.run(prompts, interventions={hook_name: x})`` accepts for ``x``:

* a ``Tensor``: replaces the activation (shorthand for ``replace(x)``);
* ``replace(value, positions=None)`` / ``add(value, positions=None)``;
* any callable ``fn(activation) -> activation`` of the full ``[batch, pos, d_model]``
  activation (left-padded columns; see ``interp.positions``).

``value`` broadcasts against ``[batch, n_pos, d_model]`` (``n_pos`` = number of chosen
positions, or the sequence length when ``positions`` is ``None``): a ``[d_model]`` vector,
``[n_pos, d_model]``, or ``[batch, n_pos, d_model]``. Positions are prompt-relative, as
everywhere in the toolkit. Interventions never modify the model's tensors in place: they
return a new tensor, so autograd sees them (attribution patching relies on this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.positions import Positions, columns


@dataclass(frozen=True)
class Write:
    """Replace (``mode="replace"``) or add to (``mode="add"``) an activation at positions."""

    value: Tensor
    mode: str
    positions: Positions = None

    def apply(
        self, act: Float[Tensor, "batch seq d"], lengths: Int[Tensor, " batch"]
    ) -> Float[Tensor, "batch seq d"]:
        value = self.value.to(device=act.device, dtype=act.dtype)
        cols = columns(self.positions, lengths, act.shape[1])
        if cols is None:
            target_shape = act.shape
        else:
            target_shape = (act.shape[0], cols.shape[1], act.shape[2])
        try:
            value = torch.broadcast_to(value, target_shape)
        except RuntimeError:
            raise InterpError(
                f"intervention value of shape {tuple(self.value.shape)} does not broadcast to the "
                f"activation slice [batch, n_pos, d_model] = {list(target_shape)}"
            ) from None
        if cols is None:
            return value.clone() if self.mode == "replace" else act + value
        out = act.clone()
        rows = torch.arange(act.shape[0], device=act.device).unsqueeze(1)
        if self.mode == "replace":
            out[rows, cols] = value
        else:
            out[rows, cols] = act[rows, cols] + value
        return out


def replace(value: Tensor, positions: Positions = None) -> Write:
    """Replace the activation by ``value`` (at ``positions``, prompt-relative, or all)."""
    return Write(torch.as_tensor(value), "replace", positions)


def add(value: Tensor, positions: Positions = None) -> Write:
    """Add ``value`` to the activation (at ``positions``, prompt-relative, or all)."""
    return Write(torch.as_tensor(value), "add", positions)


Intervention = Tensor | Write | Callable[[Tensor], Tensor]


def as_callable(x: object, hook_name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Normalise an intervention to ``f(activation, lengths) -> activation``."""
    if isinstance(x, Tensor):
        x = replace(x)
    if isinstance(x, Write):
        return x.apply
    if callable(x):
        def call(act: Tensor, lengths: Tensor) -> Tensor:
            out = x(act)
            if not isinstance(out, Tensor) or out.shape != act.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise InterpError(
                    f"intervention function at {hook_name!r} must return a tensor of the "
                    f"activation's shape {tuple(act.shape)}, got {got}"
                )
            return out
        return call
    raise InterpError(
        f"intervention at {hook_name!r} must be a Tensor, interp.replace(...), interp.add(...) "
        f"or a function of the activation, got {type(x).__name__}"
    )
