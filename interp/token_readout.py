"""Reading a transplant or ablation out: one position's decoded distribution, and the checks
of what the caller asks to read (layer, hook, target ids, k).

``decode`` reduces logits at one position per prompt to top-k, entropy and the targets' rank
and probability; ``decode_each_layer`` runs one variant of the prompts per layer as one batch
(``interp.transplant.transplant_each_layer``, ``interp.ablation.ablate_each_layer``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError, UnknownHook
from interp.hook_names import block_hook
from interp.lens import LayerReadout, reduce_logits
from interp.positions import columns


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


# -- checks ---------------------------------------------------------------------------------
def check_layer(lm, layer: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise UnknownHook(f"layer must be an int in 0..{lm.n_layers - 1}, got {layer!r}")
    if not 0 <= layer < lm.n_layers:
        raise UnknownHook(
            f"layer {layer} is out of range: the model has {lm.n_layers} layers, valid layers are 0..{lm.n_layers - 1}"
        )
    return layer


def check_hook(lm, hook: str, allowed: tuple[str, ...]) -> str:
    if hook not in allowed:
        raise UnknownHook(f"hook must be a per-block short name, one of {', '.join(allowed)}; got {hook!r}")
    lm.resolve(hook)  # raises for resid_mid on parallel families, naming the valid points
    return hook


def n_prompts(lm, prompts) -> int:
    return int(lm.to_tokens(prompts)[2].shape[0])


def check_targets(lm, targets_ids, n: int) -> Int[Tensor, "batch n_target"] | None:
    if targets_ids is None:
        return None
    targets = torch.as_tensor(targets_ids)
    if targets.dtype not in (torch.int64, torch.int32) or targets.ndim not in (1, 2):
        raise InterpError(
            "targets_ids must be integer token ids [batch, n_target] (or [n_target], shared by all "
            f"prompts), got {targets.dtype} {tuple(targets.shape)}"
        )
    if targets.ndim == 1:
        targets = targets.unsqueeze(0).expand(n, -1)
    if targets.shape[0] != n or targets.shape[1] == 0:
        raise InterpError(
            f"targets_ids must be [batch={n}, n_target>=1] (one row per prompt), got {tuple(targets.shape)}"
        )
    if int(targets.min()) < 0 or int(targets.max()) >= lm.d_vocab:
        raise InterpError(f"targets_ids must lie in 0..{lm.d_vocab - 1}, got {int(targets.min())}..{int(targets.max())}")
    return targets.long()


def check_k(lm, k: int) -> int:
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


def map_fields(res: TokenReadout | LayerReadout, fn: Callable[[Tensor], Tensor]) -> TokenReadout:
    """A ``TokenReadout`` of ``fn`` applied to every reduction of ``res`` (no ``logits``)."""
    f = lambda x: None if x is None else fn(x)  # noqa: E731
    return TokenReadout(f(res.top_ids), f(res.top_probs), f(res.entropy), f(res.target_rank), f(res.target_prob))


def decode_each_layer(lm, prompts, hook: str, position: int, read: int, first_group: int,
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
    return map_fields(res, lambda x: x.reshape(groups, n, *x.shape[1:]))
