"""Ablation of per-layer updates (Merullo, Eickhoff & Pavlick 2023): what the residual stream
decodes to without layer l's FFN (or attention) output.

    abl = ablate(lm, ["The capital of Poland is"], layer=9)      # abl.top_ids [1, k]
    each = ablate_each_layer(lm, ["The capital of Poland is"])   # each.top_ids [layer, 1, k]

Each is one forward pass. Positions are prompt-relative (``-1``: each prompt's last token).
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

from interp.hook_names import block_hook
from interp.interventions import replace
from interp.lens import Lens, readout, resolve_lens
from interp.token_readout import (
    TokenReadout, check_hook, check_k, check_layer, check_targets, decode, decode_each_layer, map_fields, n_prompts,
)

UPDATE_POINTS: tuple[str, ...] = ("attn_out", "mlp_out")


def ablate(
    lm,
    prompts,
    layer: int,
    hook: str = "mlp_out",
    position: int = -1,
    targets_ids: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    propagate: bool = False,
    lens: Lens | None = None,
) -> TokenReadout:
    """What the residual decodes to without layer ``layer``'s update at ``position``.

    With ``propagate=False`` (Merullo et al.'s view) this is the logit lens of
    ``resid_post[layer] - update[layer]`` at ``position``; the forward stops after block
    ``layer``. For sequential families that equals the lens of ``resid_mid`` when
    ``hook="mlp_out"`` (up to float rounding). With ``propagate=True`` the update is zeroed at
    ``position`` and the model runs to its output, read at the same ``position``; at the last
    layer both views agree. ``lens`` decodes the residual when ``propagate=False`` (default:
    the logit lens; a tuned lens reads it with block ``layer``'s translator).

    Returns:
        ``TokenReadout`` with fields ``[batch, ...]`` and ``logits`` ``[batch, vocab]``.
    """
    check_hook(lm, hook, UPDATE_POINTS)
    check_layer(lm, layer)
    check_k(lm, k)
    targets_ids = check_targets(lm, targets_ids, n_prompts(lm, prompts))
    name = block_hook(layer, hook)
    if propagate:
        zero = replace(torch.zeros(lm.d_model, dtype=lm.dtype), positions=position)
        run = lm.run(prompts, positions=position, interventions={name: zero})
        return decode(run.logits[:, 0], targets_ids, k)
    post = block_hook(layer, "resid_post")
    run = lm.run(prompts, capture=[post, name], positions=position, logits=False)
    resid = run.cache[post][:, 0] - run.cache[name][:, 0]
    return decode(resolve_lens(lm, lens).decode(resid, layer), targets_ids, k)


def ablate_each_layer(
    lm,
    prompts,
    hook: str = "mlp_out",
    targets_ids: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    position: int = -1,
    propagate: bool = False,
    lens: Lens | None = None,
) -> TokenReadout:
    """``ablate(..., propagate=propagate)`` at every layer from one forward pass.

    With ``propagate=False`` it captures ``resid_post`` and ``hook`` at every layer at
    ``position`` only, then decodes ``resid_post[l] - update[l]`` in groups of layers whose
    logits fit ``interp.lens.DECODE_BUDGET`` (never the whole ``[layer, batch, vocab]`` for a
    big batch). With ``propagate=True`` it runs ``layer`` copies of the prompts as one batch
    of ``layer x batch`` rows, copy l with layer l's update zeroed at ``position``, and reads
    the output at ``position`` (the logits of all rows exist at once). ``lens`` as in ``ablate``.

    Returns:
        ``TokenReadout`` with fields ``[layer, batch, ...]`` and ``logits=None``.
    """
    check_hook(lm, hook, UPDATE_POINTS)
    check_k(lm, k)
    targets_ids = check_targets(lm, targets_ids, n_prompts(lm, prompts))
    if propagate:
        return decode_each_layer(lm, prompts, hook, position, position, 0,
                                  lambda layer, act: torch.zeros_like(act), targets_ids, k)
    run = lm.run(prompts, capture=["resid_post", hook], positions=position, logits=False)
    resids = run.cache.stack("resid_post")[:, :, 0] - run.cache.stack(hook)[:, :, 0]  # [layer, batch, d_model]
    layers = readout(lm, resids.unsqueeze(2), targets=targets_ids, k=k, lens=lens)  # [layer, batch, 1, ...]
    return map_fields(layers, lambda x: x[:, :, 0])
