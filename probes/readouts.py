"""Readouts: which logits a zero-layer probe reads.

A readout is logits ``[batch, pos, vocab]`` from one forward pass: the model's final logits
(``layer=None``) or the early-decoded logits of block ``l``'s ``resid_post``
through a lens (``interp.lens``; default the logit lens, the model's own final norm and
unembedding; or a ``TunedLens``). A probe that only consumes readouts (accuracy, calibration)
therefore works at the output and at every layer, under any lens; the final readout is the
model's logits whatever the lens.

Layer specs accepted by the scorers (:func:`resolve_layers`):

- ``None`` or ``"final"``: the final logits only;
- an int ``l`` (negative counts from the end): block ``l`` only;
- ``"all"``: the final logits, then blocks ``0 .. n_layers - 1``;
- a list mixing ints and ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.errors import UnknownHook
from interp.lens import Lens, resolve_lens

Layer = int | None
LayerSpec = Layer | str | Sequence[Layer]


def resolve_layers(lm, layers: LayerSpec) -> list[Layer]:
    """A layer spec -> the list of readouts (``None`` = final logits), validated."""
    if layers is None or layers == "final":
        return [None]
    if layers == "all":
        return [None, *range(lm.n_layers)]
    if isinstance(layers, str):
        raise UnknownHook(f"unknown layer spec {layers!r}; use None/'final', 'all', an int or a list")
    out: list[Layer] = []
    for layer in [layers] if isinstance(layers, int) else list(layers):
        if layer is None:
            out.append(None)
            continue
        if not -lm.n_layers <= int(layer) < lm.n_layers:
            raise UnknownHook(f"layer {layer} out of range; the model has layers 0..{lm.n_layers - 1}")
        out.append(int(layer) % lm.n_layers)
    if not out:
        raise UnknownHook("empty layer list; pass None for the final logits")
    return list(dict.fromkeys(out))


def block_layers(layers: Sequence[Layer]) -> list[int]:
    """The blocks whose ``resid_post`` a list of readouts needs."""
    return [layer for layer in layers if layer is not None]


def label(layer: Layer) -> str:
    """``"final"`` or the block index as text (for tables)."""
    return "final" if layer is None else str(layer)


def readout_logits(
    lm, layer: Layer, final_logits: Float[Tensor, "*batch vocab"], resids: dict[int, Float[Tensor, "*batch d_model"]],
    lens: Lens | None = None,
) -> Float[Tensor, "*batch vocab"]:
    """The readout ``layer`` from a run's final logits and its captured ``resid_post`` by block,
    decoded by ``lens`` (default: the logit lens)."""
    return final_logits if layer is None else resolve_lens(lm, lens).decode(resids[layer], layer)


def gather_logprobs(
    logits: Float[Tensor, "*batch pos vocab"], targets: Int[Tensor, "*batch pos"]
) -> tuple[Float[Tensor, "*batch pos"], Bool[Tensor, "*batch pos"]]:
    """``log_softmax(logits)`` at ``targets`` (in float32), and whether each target is the argmax."""
    logp = logits.float().log_softmax(-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), logits.argmax(-1) == targets


def layer_logprobs(
    lm,
    layers: Sequence[Layer],
    final_logits: Float[Tensor, "batch pos vocab"],
    resids: dict[int, Float[Tensor, "batch pos d_model"]],
    targets: Int[Tensor, "batch pos"],
    lens: Lens | None = None,
) -> tuple[Float[Tensor, "readout batch pos"], Bool[Tensor, "readout batch pos"]]:
    """Target log-probs and greedy flags under each readout, one readout at a time (the
    ``[readout, batch, pos, vocab]`` tensor is never built)."""
    values, greedy = [], []
    for layer in layers:
        lp, g = gather_logprobs(readout_logits(lm, layer, final_logits, resids, lens), targets)
        values.append(lp)
        greedy.append(g)
    return torch.stack(values), torch.stack(greedy)
