"""Writing to hook points: replace or add a tensor, or apply any function.

``lm.run(prompts, interventions={hook_name: x})`` accepts for ``x``:

* a ``Tensor``: replaces the activation (shorthand for ``replace(x)``);
* ``replace(value, positions=None, heads=None)`` / ``add(value, positions=None, heads=None)``;
* any callable ``fn(activation) -> activation`` of the full ``[batch, pos, d_model]``
  activation (left-padded columns; see ``interp.positions``; a head hook's activation has its
  own layout, e.g. ``[batch, pos, head, d_head]`` for ``hook_z``).

``value`` broadcasts against ``[batch, n_pos, d_model]`` (``n_pos`` = number of chosen
positions, or the sequence length when ``positions`` is ``None``): a ``[d_model]`` vector,
``[n_pos, d_model]``, or ``[batch, n_pos, d_model]``. Positions are prompt-relative, as
everywhere in the toolkit. At head hooks (``blocks.{l}.attn.hook_z`` ...) ``heads=[3]`` writes
head 3 only and ``value`` broadcasts against the slice in the hook's layout
(``[batch, n_pos, n_heads, d_head]``; a pattern's positions are its query axis). Interventions never modify the model's tensors in place: they
return a new tensor, so autograd sees them (attribution patching relies on this).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.hook_names import HookPoint
from interp.positions import Positions, as_position_list, columns


@dataclass(frozen=True)
class Write:
    """Replace (``mode="replace"``) or add to (``mode="add"``) an activation at positions
    (and, at head hooks, at ``heads``)."""

    value: Tensor
    mode: str
    positions: Positions = None
    heads: Sequence[int] | None = None

    def apply(
        self, act: Float[Tensor, "batch seq ..."], lengths: Int[Tensor, " batch"], pos_axis: int = 1,
        head_axis: int | None = None, hook_name: str = "this hook",
    ) -> Float[Tensor, "batch seq ..."]:
        value = self.value.to(device=act.device, dtype=act.dtype)
        heads = self._heads(act, head_axis, hook_name)
        cols = columns(self.positions, lengths, act.shape[pos_axis])
        target_shape = list(act.shape)
        if cols is not None:
            target_shape[pos_axis] = cols.shape[1]
        if heads is not None:
            target_shape[head_axis] = len(heads)
        try:
            value = torch.broadcast_to(value, target_shape)
        except RuntimeError:
            raise InterpError(
                f"intervention value of shape {tuple(self.value.shape)} does not broadcast to the "
                f"activation slice {_layout(act.ndim, pos_axis, head_axis)} = {target_shape}"
            ) from None
        if cols is None and heads is None:
            return value.clone() if self.mode == "replace" else act + value
        # Index [rows, positions(, heads)] with the position axis moved to 1 and heads to 2.
        moved = (pos_axis,) if head_axis is None else (pos_axis, head_axis)
        out = act.clone().movedim(moved, tuple(range(1, 1 + len(moved))))
        value = value.movedim(moved, tuple(range(1, 1 + len(moved))))
        batch, seq = out.shape[0], out.shape[1]
        rows = torch.arange(batch, device=act.device).view(batch, 1)
        if cols is None:
            cols = torch.arange(seq, device=act.device).expand(batch, seq)
        index = (rows, cols.to(act.device))
        if head_axis is not None:
            if heads is None:
                heads = range(out.shape[2])
            h = torch.tensor(list(heads), dtype=torch.long, device=act.device).view(1, 1, -1)
            index = (rows.unsqueeze(-1), index[1].unsqueeze(-1), h)
        out[index] = value if self.mode == "replace" else out[index] + value
        return out.movedim(tuple(range(1, 1 + len(moved))), moved)

    def _heads(self, act: Tensor, head_axis: int | None, hook_name: str) -> list[int] | None:
        if self.heads is None:
            return None
        if head_axis is None:
            raise InterpError(
                f"heads= applies to attention-head hooks (blocks.{{l}}.attn.hook_{{q,k,v,pattern,z}}), "
                f"not to {hook_name!r}; drop heads= or write a head hook"
            )
        heads = as_position_list(self.heads)
        n = act.shape[head_axis]
        bad = [h for h in heads if not 0 <= h < n]
        if bad or not heads:
            what = f"heads {bad} out of range" if bad else "heads= is empty"
            raise InterpError(f"{what} at {hook_name!r}, which has {n} heads; valid heads: 0..{n - 1}")
        return heads


def _layout(ndim: int, pos_axis: int, head_axis: int | None) -> str:
    names = ["batch"] + ["?"] * (ndim - 1)
    names[pos_axis] = "n_pos"
    if head_axis is not None:
        names[head_axis] = "n_heads"
        names[-1] = "key_pos" if pos_axis == 2 else "d_head"
    else:
        names[-1] = "d_model"
    return "[" + ", ".join(names) + "]"


def replace(value: Tensor, positions: Positions = None, heads: Sequence[int] | int | None = None) -> Write:
    """Replace the activation by ``value`` (at ``positions``, prompt-relative, or all; at a
    head hook also only at ``heads``)."""
    return Write(torch.as_tensor(value), "replace", positions, _as_heads(heads))


def add(value: Tensor, positions: Positions = None, heads: Sequence[int] | int | None = None) -> Write:
    """Add ``value`` to the activation (at ``positions``, prompt-relative, or all; at a head
    hook also only at ``heads``)."""
    return Write(torch.as_tensor(value), "add", positions, _as_heads(heads))


def _as_heads(heads) -> tuple[int, ...] | None:
    return None if heads is None else tuple(as_position_list(heads))


Intervention = Tensor | Write | Callable[[Tensor], Tensor]


def as_callable(x: object, hook_name: str, point: HookPoint | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """Normalise an intervention to ``f(activation, lengths) -> activation`` (``point`` says
    where the activation's position and head axes are; default ``[batch, pos, d_model]``)."""
    if isinstance(x, Tensor):
        x = replace(x)
    if isinstance(x, Write):
        pos_axis = point.pos_axis if point is not None else 1
        head_axis = point.head_axis if point is not None else None
        name = point.name if point is not None else hook_name
        return partial(x.apply, pos_axis=pos_axis, head_axis=head_axis, hook_name=name)
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
