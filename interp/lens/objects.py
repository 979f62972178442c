"""The ``Lens`` protocol and the logit lens.

A lens turns a residual of block ``layer`` (its ``resid_post``, the convention of every
readout here) into logits: ``decode(resid [..., d_model], layer) -> logits [..., vocab]``.
Readouts and probes take any lens; the logit lens is the default so their numbers stay those
of the model's own final norm and unembedding.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from interp.devices import execution_device
from interp.errors import InterpError


def logit_lens(lm, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... vocab"]:
    """Final norm then unembedding (bias included where the model has one)."""
    if resid.shape[-1] != lm.d_model:
        raise InterpError(f"logit_lens expects [..., d_model={lm.d_model}], got {tuple(resid.shape)}")
    with torch.no_grad() if not resid.requires_grad else torch.enable_grad():
        # on the norm's device, back on the residual's (they differ with a capture_device)
        return lm.unembed(lm.final_norm(resid.to(execution_device(lm.final_norm), lm.dtype))).to(resid.device)


@runtime_checkable
class Lens(Protocol):
    """Anything that decodes block ``layer``'s ``resid_post`` into logits."""

    def decode(self, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... vocab"]: ...


class LogitLens:
    """The logit lens as a :class:`Lens`: the same for every layer (``layer`` is ignored)."""

    def __init__(self, lm):
        self.lm = lm

    def decode(self, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... vocab"]:
        return logit_lens(self.lm, resid)

    def __repr__(self) -> str:
        return f"LogitLens({self.lm!r})"


def resolve_lens(lm, lens) -> Lens:
    """``None`` -> the logit lens of ``lm``; a :class:`Lens` as is; anything else is an error."""
    if lens is None:
        return LogitLens(lm)
    if not isinstance(lens, Lens):
        raise InterpError(f"lens must be None (the logit lens), a LogitLens or a TunedLens "
                          f"(anything with decode(resid, layer)), got {type(lens).__name__}")
    return lens
