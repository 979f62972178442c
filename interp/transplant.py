"""Vector transplant and ablation of per-layer updates (Merullo, Eickhoff & Pavlick 2023).

The FFN output ("o-vector") of layer l at a source prompt, added to a target prompt at
layer l, promotes the relation's answer for the target's argument; subtracting layer l's FFN
output from the residual stream flips the decoded token back towards the argument.

    ups = updates(lm, ["The capital of Poland is"])               # [layer, 1, d_model]
    res = transplant(lm, ["Spain"], ups[9, 0], layer=9)           # res.final.top_ids [1, k]
    abl = ablate_each_layer(lm, ["The capital of Poland is"])     # abl.top_ids [layer, 1, k]
    each = transplant_each_layer(lm, ["Spain:"], ups[:, 0])      # each.layers.top_ids [layer, 1, k]

Every function is one forward pass (the ``*_each_layer`` ones batch every layer's variant
of the prompts into it). Positions are prompt-relative (``-1`` is each prompt's
last real token, padding or not). ``hook`` is a per-block short name: ``"mlp_out"`` (FFN
update, the default) or ``"attn_out"``; ``transplant`` also writes to the residual points.

The ablations live in ``interp.ablation`` and the readouts in ``interp.token_readout``; both
are importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.ablation import UPDATE_POINTS, ablate, ablate_each_layer
from interp.errors import InterpError
from interp.hook_names import BLOCK_POINTS, block_hook
from interp.interventions import add, replace
from interp.lens import LayerReadout, Lens, readout
from interp.token_readout import (
    TokenReadout, check_hook, check_k, check_layer, check_targets, decode, decode_each_layer, map_fields, n_prompts,
)

__all__ = [
    "MODES", "UPDATE_POINTS", "EachLayerTransplant", "TokenReadout", "TransplantResult", "ablate", "ablate_each_layer",
    "decode", "transplant", "transplant_each_layer", "updates",
]

MODES: tuple[str, ...] = ("add", "replace")


@dataclass
class TransplantResult:
    """What ``transplant`` returns: the target prompts' readouts with the vector written in.

    Attributes:
        final: the model's output distribution at each target's last position
            (``top_ids`` ``[batch, k]``, ``logits`` ``[batch, vocab]``, ...).
        layers: early decoding (logit lens) of ``resid_post`` at every layer at the last
            position; fields are ``[layer, batch, 1, ...]`` (see ``interp.lens.LayerReadout``).
    """

    final: TokenReadout
    layers: LayerReadout


@dataclass
class EachLayerTransplant:
    """What ``transplant_each_layer`` returns, from one batched forward pass.

    Attributes:
        baseline: the targets' output readout without any vector, fields ``[batch, ...]``.
        layers: the output readout with layer l's vector written in, fields ``[layer, batch, ...]``.
    """

    baseline: TokenReadout
    layers: TokenReadout


def updates(lm, prompts, hook: str = "mlp_out", position: int = -1) -> Float[Tensor, "layer batch d_model"]:
    """Every layer's ``hook`` activation (the FFN update by default) at one position, one forward.

    The forward stops after the last block (no unembedding).
    """
    check_hook(lm, hook, BLOCK_POINTS)
    run = lm.run(prompts, capture=[hook], positions=position, logits=False)
    return run.cache.stack(hook)[:, :, 0]


def transplant(
    lm,
    targets,
    vector: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"],
    layer: int,
    hook: str = "mlp_out",
    mode: str = "add",
    position: int = -1,
    targets_ids: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    lens: Lens | None = None,
) -> TransplantResult:
    """Run ``targets`` with ``vector`` added to (or replacing) ``blocks.{layer}.hook_{hook}``.

    Args:
        lm: an ``interp.LM``.
        targets: the target prompts (any form ``lm.run`` takes).
        vector: ``[d_model]`` for every target, or ``[batch, d_model]``, one per target.
        layer: block index, ``0..n_layers-1``.
        hook: per-block short name written to (``"mlp_out"``, ``"attn_out"``, ``"resid_pre"``,
            ``"resid_mid"``, ``"resid_post"``).
        mode: ``"add"`` (the o-vector transplant) or ``"replace"``.
        position: prompt-relative position written to (``-1``: last token).
        targets_ids: token ids whose rank and probability to track, ``[batch, n_target]``
            (or ``[n_target]`` shared by all targets).
        k: how many top tokens to keep.
        lens: decodes ``resid_post`` at each layer (default: the logit lens).

    Returns:
        ``TransplantResult``: the final readout at the last position and the logit lens of
        ``resid_post`` at every layer at the last position, from one forward pass.
    """
    check_hook(lm, hook, BLOCK_POINTS)
    check_layer(lm, layer)
    check_k(lm, k)
    if mode not in MODES:
        raise InterpError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    n = n_prompts(lm, targets)
    vector = torch.as_tensor(vector)
    if not vector.is_floating_point() or vector.ndim not in (1, 2) or vector.shape[-1] != lm.d_model \
            or (vector.ndim == 2 and vector.shape[0] != n):
        raise InterpError(
            f"vector must be a float tensor [d_model={lm.d_model}] or [batch={n}, d_model={lm.d_model}], "
            f"got {vector.dtype} {tuple(vector.shape)}"
        )
    targets_ids = check_targets(lm, targets_ids, n)
    value = vector.unsqueeze(-2)  # [1, d_model] or [batch, 1, d_model]: one position
    write = add(value, positions=position) if mode == "add" else replace(value, positions=position)
    run = lm.run(targets, capture=["resid_post"], positions=-1, interventions={block_hook(layer, hook): write})
    return TransplantResult(
        final=decode(run.logits[:, -1], targets_ids, k),
        layers=readout(lm, run.cache.stack("resid_post"), targets=targets_ids, k=k, lens=lens),
    )


def transplant_each_layer(
    lm,
    targets,
    vectors: Float[Tensor, "layer d_model"] | Float[Tensor, "layer batch d_model"],
    hook: str = "mlp_out",
    position: int = -1,
    targets_ids: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
) -> EachLayerTransplant:
    """``transplant(lm, targets, vectors[l], l, hook, "add", position, ...).final`` for every
    layer l, and the targets without a vector, from one forward pass.

    The batch holds ``1 + layer`` copies of the targets: copy 0 unchanged, copy ``1 + l``
    with ``vectors[l]`` added to ``blocks.{l}.hook_{hook}`` at ``position``. Its memory is
    that of a forward pass over ``(1 + layer) x batch`` prompts.

    Args:
        vectors: one vector per layer ``[layer, d_model]`` (e.g. mean o-vectors of source
            prompts), or one per layer and target ``[layer, batch, d_model]``.
        Other arguments as in ``transplant``.

    Returns:
        ``EachLayerTransplant``: ``baseline`` ``[batch, ...]`` and ``layers`` ``[layer, batch, ...]``
        readouts at the last position.
    """
    check_hook(lm, hook, BLOCK_POINTS)
    check_k(lm, k)
    n = n_prompts(lm, targets)
    vectors = torch.as_tensor(vectors)
    if not vectors.is_floating_point() or vectors.ndim not in (2, 3) or vectors.shape[0] != lm.n_layers \
            or vectors.shape[-1] != lm.d_model or (vectors.ndim == 3 and vectors.shape[1] != n):
        raise InterpError(
            f"vectors must be a float tensor [layer={lm.n_layers}, d_model={lm.d_model}] or "
            f"[layer={lm.n_layers}, batch={n}, d_model={lm.d_model}], got {vectors.dtype} {tuple(vectors.shape)}"
        )
    targets_ids = check_targets(lm, targets_ids, n)

    def add_vector(layer: int, act: Tensor) -> Tensor:  # act [batch, 1, d_model]
        return act + vectors[layer].to(device=act.device, dtype=act.dtype).reshape(-1, 1, lm.d_model)

    res = decode_each_layer(lm, targets, hook, position, -1, 1, add_vector, targets_ids, k)
    return EachLayerTransplant(baseline=map_fields(res, lambda x: x[0]), layers=map_fields(res, lambda x: x[1:]))
