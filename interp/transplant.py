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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError, UnknownHook
from interp.hook_names import BLOCK_POINTS, block_hook
from interp.interventions import add, replace
from interp.lens import LayerReadout, logit_lens, readout, reduce_logits
from interp.positions import columns

UPDATE_POINTS: tuple[str, ...] = ("attn_out", "mlp_out")
MODES: tuple[str, ...] = ("add", "replace")


@dataclass
class TokenReadout:
    """The decoded distribution at one position per prompt.

    Leading axes ``...`` are ``[batch]`` from ``transplant`` / ``ablate`` and
    ``[layer, batch]`` from ``ablate_each_layer`` / ``transplant_each_layer``.

    Attributes:
        top_ids: top-k token ids ``[..., k]``, most probable first.
        top_probs: their probabilities ``[..., k]``.
        entropy: entropy of the distribution in nats ``[...]``.
        target_rank: rank of each target id (0 = top-1) ``[..., n_target]``, or ``None``
            when no ``targets_ids`` were given.
        target_prob: probability of each target id ``[..., n_target]`` or ``None``.
        logits: the full logits ``[batch, vocab]``; ``None`` from the ``*_each_layer``
            functions, which keep only the reductions.
    """

    top_ids: Int[Tensor, "... k"]
    top_probs: Float[Tensor, "... k"]
    entropy: Float[Tensor, "..."]
    target_rank: Int[Tensor, "... n_target"] | None
    target_prob: Float[Tensor, "... n_target"] | None
    logits: Float[Tensor, "batch vocab"] | None = None


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


# -- checks ---------------------------------------------------------------------------------
def _check_layer(lm, layer: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise UnknownHook(f"layer must be an int in 0..{lm.n_layers - 1}, got {layer!r}")
    if not 0 <= layer < lm.n_layers:
        raise UnknownHook(
            f"layer {layer} is out of range: the model has {lm.n_layers} layers, valid layers are 0..{lm.n_layers - 1}"
        )
    return layer


def _check_hook(lm, hook: str, allowed: tuple[str, ...]) -> str:
    if hook not in allowed:
        raise UnknownHook(f"hook must be a per-block short name, one of {', '.join(allowed)}; got {hook!r}")
    lm.resolve(hook)  # raises for resid_mid on parallel families, naming the valid points
    return hook


def _n_prompts(lm, prompts) -> int:
    return int(lm.to_tokens(prompts)[2].shape[0])


def _check_targets(lm, targets_ids, n_prompts: int) -> Int[Tensor, "batch n_target"] | None:
    if targets_ids is None:
        return None
    targets = torch.as_tensor(targets_ids)
    if targets.dtype not in (torch.int64, torch.int32) or targets.ndim not in (1, 2):
        raise InterpError(
            "targets_ids must be integer token ids [batch, n_target] (or [n_target], shared by all "
            f"prompts), got {targets.dtype} {tuple(targets.shape)}"
        )
    if targets.ndim == 1:
        targets = targets.unsqueeze(0).expand(n_prompts, -1)
    if targets.shape[0] != n_prompts or targets.shape[1] == 0:
        raise InterpError(
            f"targets_ids must be [batch={n_prompts}, n_target>=1] (one row per prompt), got {tuple(targets.shape)}"
        )
    if int(targets.min()) < 0 or int(targets.max()) >= lm.d_vocab:
        raise InterpError(f"targets_ids must lie in 0..{lm.d_vocab - 1}, got {int(targets.min())}..{int(targets.max())}")
    return targets.long()


def _check_k(lm, k: int) -> int:
    if not 1 <= k <= lm.d_vocab:
        raise InterpError(f"k must be in 1..{lm.d_vocab} (the vocabulary size), got {k}")
    return k


# -- decoding ---------------------------------------------------------------------------------
def decode(
    logits: Float[Tensor, "batch vocab"],
    targets: Int[Tensor, "batch n_target"] | None,
    k: int,
    keep_logits: bool = True,
) -> TokenReadout:
    """Reduce logits at one position per prompt to top-k, entropy and target rank/prob."""
    logits = logits.float()
    top_ids, top_probs, entropy, rank, prob = reduce_logits(logits, targets, k)
    return TokenReadout(top_ids, top_probs, entropy, rank, prob, logits if keep_logits else None)


def _map_fields(res: TokenReadout | LayerReadout, fn: Callable[[Tensor], Tensor]) -> TokenReadout:
    """A ``TokenReadout`` of ``fn`` applied to every reduction of ``res`` (no ``logits``)."""
    f = lambda x: None if x is None else fn(x)  # noqa: E731
    return TokenReadout(f(res.top_ids), f(res.top_probs), f(res.entropy), f(res.target_rank), f(res.target_prob))


def _decode_each_layer(lm, prompts, hook: str, position: int, read: int, first_group: int,
                       edit: Callable[[int, Tensor], Tensor],
                       targets_ids: Int[Tensor, "batch n_target"] | None, k: int) -> TokenReadout:
    """Run ``first_group + n_layers`` copies of ``prompts`` as one batch; in copy
    ``first_group + l`` the activation ``blocks.{l}.hook_{hook}`` at ``position`` becomes
    ``edit(l, activation [batch, 1, d_model])``, every other copy is left alone. Returns the
    output readout at position ``read``, fields ``[first_group + layer, batch, ...]``."""
    ids, _, lengths = lm.to_tokens(prompts)
    n, seq = ids.shape
    seqs = [ids[i, seq - int(lengths[i]):] for i in range(n)]  # the prompts' tokens, unpadded
    cols = columns(position, lengths, seq)  # [batch, 1]: every copy pads the same way

    def write(layer: int):
        def fn(act):
            rows = torch.arange(n, device=act.device)[:, None] + (first_group + layer) * n
            c = cols.to(act.device)
            out = act.clone()
            out[rows, c] = edit(layer, act[rows, c])
            return out
        return fn

    writes = {block_hook(layer, hook): write(layer) for layer in range(lm.n_layers)}
    groups = first_group + lm.n_layers
    run = lm.run(seqs * groups, positions=read, interventions=writes)
    rows_targets = None if targets_ids is None else targets_ids.repeat(groups, 1)
    res = decode(run.logits[:, 0], rows_targets, k, keep_logits=False)  # rows are group-major
    return _map_fields(res, lambda x: x.reshape(groups, n, *x.shape[1:]))


# -- the API ----------------------------------------------------------------------------------
def updates(lm, prompts, hook: str = "mlp_out", position: int = -1) -> Float[Tensor, "layer batch d_model"]:
    """Every layer's ``hook`` activation (the FFN update by default) at one position, one forward.

    The forward stops after the last block (no unembedding).
    """
    _check_hook(lm, hook, BLOCK_POINTS)
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

    Returns:
        ``TransplantResult``: the final readout at the last position and the logit lens of
        ``resid_post`` at every layer at the last position, from one forward pass.
    """
    _check_hook(lm, hook, BLOCK_POINTS)
    _check_layer(lm, layer)
    _check_k(lm, k)
    if mode not in MODES:
        raise InterpError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    n = _n_prompts(lm, targets)
    vector = torch.as_tensor(vector)
    if not vector.is_floating_point() or vector.ndim not in (1, 2) or vector.shape[-1] != lm.d_model \
            or (vector.ndim == 2 and vector.shape[0] != n):
        raise InterpError(
            f"vector must be a float tensor [d_model={lm.d_model}] or [batch={n}, d_model={lm.d_model}], "
            f"got {vector.dtype} {tuple(vector.shape)}"
        )
    targets_ids = _check_targets(lm, targets_ids, n)
    value = vector.unsqueeze(-2)  # [1, d_model] or [batch, 1, d_model]: one position
    write = add(value, positions=position) if mode == "add" else replace(value, positions=position)
    run = lm.run(targets, capture=["resid_post"], positions=-1, interventions={block_hook(layer, hook): write})
    return TransplantResult(
        final=decode(run.logits[:, -1], targets_ids, k),
        layers=readout(lm, run.cache.stack("resid_post"), targets=targets_ids, k=k),
    )


def ablate(
    lm,
    prompts,
    layer: int,
    hook: str = "mlp_out",
    position: int = -1,
    targets_ids: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    propagate: bool = False,
) -> TokenReadout:
    """What the residual decodes to without layer ``layer``'s update at ``position``.

    With ``propagate=False`` (Merullo et al.'s view) this is the logit lens of
    ``resid_post[layer] - update[layer]`` at ``position``; the forward stops after block
    ``layer``. For sequential families that equals the lens of ``resid_mid`` when
    ``hook="mlp_out"`` (up to float rounding). With ``propagate=True`` the update is zeroed at
    ``position`` and the model runs to its output, read at the same ``position``; at the last
    layer both views agree.

    Returns:
        ``TokenReadout`` with fields ``[batch, ...]`` and ``logits`` ``[batch, vocab]``.
    """
    _check_hook(lm, hook, UPDATE_POINTS)
    _check_layer(lm, layer)
    _check_k(lm, k)
    targets_ids = _check_targets(lm, targets_ids, _n_prompts(lm, prompts))
    name = block_hook(layer, hook)
    if propagate:
        zero = replace(torch.zeros(lm.d_model, dtype=lm.dtype), positions=position)
        run = lm.run(prompts, positions=position, interventions={name: zero})
        return decode(run.logits[:, 0], targets_ids, k)
    post = block_hook(layer, "resid_post")
    run = lm.run(prompts, capture=[post, name], positions=position, logits=False)
    resid = run.cache[post][:, 0] - run.cache[name][:, 0]
    return decode(logit_lens(lm, resid), targets_ids, k)


def ablate_each_layer(
    lm,
    prompts,
    hook: str = "mlp_out",
    targets_ids: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    position: int = -1,
    propagate: bool = False,
) -> TokenReadout:
    """``ablate(..., propagate=propagate)`` at every layer from one forward pass.

    With ``propagate=False`` it captures ``resid_post`` and ``hook`` at every layer at
    ``position`` only, then decodes ``resid_post[l] - update[l]`` in groups of layers whose
    logits fit ``interp.lens.DECODE_BUDGET`` (never the whole ``[layer, batch, vocab]`` for a
    big batch). With ``propagate=True`` it runs ``layer`` copies of the prompts as one batch
    of ``layer x batch`` rows, copy l with layer l's update zeroed at ``position``, and reads
    the output at ``position`` (the logits of all rows exist at once).

    Returns:
        ``TokenReadout`` with fields ``[layer, batch, ...]`` and ``logits=None``.
    """
    _check_hook(lm, hook, UPDATE_POINTS)
    _check_k(lm, k)
    targets_ids = _check_targets(lm, targets_ids, _n_prompts(lm, prompts))
    if propagate:
        return _decode_each_layer(lm, prompts, hook, position, position, 0,
                                  lambda layer, act: torch.zeros_like(act), targets_ids, k)
    run = lm.run(prompts, capture=["resid_post", hook], positions=position, logits=False)
    resids = run.cache.stack("resid_post")[:, :, 0] - run.cache.stack(hook)[:, :, 0]  # [layer, batch, d_model]
    layers = readout(lm, resids.unsqueeze(2), targets=targets_ids, k=k)  # [layer, batch, 1, ...]
    return _map_fields(layers, lambda x: x[:, :, 0])


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
    _check_hook(lm, hook, BLOCK_POINTS)
    _check_k(lm, k)
    n = _n_prompts(lm, targets)
    vectors = torch.as_tensor(vectors)
    if not vectors.is_floating_point() or vectors.ndim not in (2, 3) or vectors.shape[0] != lm.n_layers \
            or vectors.shape[-1] != lm.d_model or (vectors.ndim == 3 and vectors.shape[1] != n):
        raise InterpError(
            f"vectors must be a float tensor [layer={lm.n_layers}, d_model={lm.d_model}] or "
            f"[layer={lm.n_layers}, batch={n}, d_model={lm.d_model}], got {vectors.dtype} {tuple(vectors.shape)}"
        )
    targets_ids = _check_targets(lm, targets_ids, n)

    def add_vector(layer: int, act: Tensor) -> Tensor:  # act [batch, 1, d_model]
        return act + vectors[layer].to(device=act.device, dtype=act.dtype).reshape(-1, 1, lm.d_model)

    res = _decode_each_layer(lm, targets, hook, position, -1, 1, add_vector, targets_ids, k)
    return EachLayerTransplant(baseline=_map_fields(res, lambda x: x[0]), layers=_map_fields(res, lambda x: x[1:]))
