"""Early decoding: a lens (by default the logit lens, the model's own final norm and unembedding) on any residual.

``logit_lens(lm, resid)`` returns logits for a ``[..., d_model]`` tensor; applied to the last
block's ``resid_post`` it gives the model's logits exactly. ``decode_layers`` reads out every
layer without materialising ``[layer, batch, pos, vocab]``: it decodes groups of layers under
a memory budget and keeps top-k tokens, entropy, and the rank/probability of target tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.lens.objects import Lens, LogitLens, logit_lens, resolve_lens
from interp.lens.tuned import TunedLens, TunedLensConfig, train_tuned_lens


def reward_lens(lm, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_labels"]:
    """A reward model's head on any residual ``[..., d_model]``: final norm then score head for
    a decoder (``interp.reward``), pooler then classifier for an encoder (``interp.encoder``,
    which scores its first token's residual). On the last layer at the scored token it equals
    ``run.scores``."""
    method = getattr(lm, "reward_lens", None)
    if method is None:
        raise InterpError(f"reward_lens needs a reward model, and {lm!r} is a causal LM (use logit_lens); "
                          "load one with interp.load_reward(...) or interp.load(..., head='classifier')")
    return method(resid)


def target_rank(logits: Float[Tensor, "... vocab"], targets: Int[Tensor, "... n_target"]) -> Int[Tensor, "... n_target"]:
    """Rank of each target token: how many tokens have a strictly larger logit (0 = top-1)."""
    target_logits = logits.gather(-1, targets)
    return (logits.unsqueeze(-2) > target_logits.unsqueeze(-1)).sum(-1)


@dataclass
class LayerReadout:
    """Per-layer early decoding of chosen positions.

    Attributes:
        top_ids: top-k token ids ``[layer, batch, pos, k]``.
        top_probs: their probabilities ``[layer, batch, pos, k]``.
        entropy: entropy of the decoded distribution in nats ``[layer, batch, pos]``.
        target_rank: rank of each target (0 = top-1) ``[layer, batch, pos, n_target]``, or
            ``None`` when no targets were given.
        target_prob: probability of each target ``[layer, batch, pos, n_target]`` or ``None``.
    """

    top_ids: Int[Tensor, "layer batch pos k"]
    top_probs: Float[Tensor, "layer batch pos k"]
    entropy: Float[Tensor, "layer batch pos"]
    target_rank: Int[Tensor, "layer batch pos n_target"] | None
    target_prob: Float[Tensor, "layer batch pos n_target"] | None

    def first_top1_layer(self, target: int = 0) -> Int[Tensor, "batch pos"]:
        """First layer where target ``target`` is top-1, or -1 where it never is."""
        if self.target_rank is None:
            raise InterpError("no targets were decoded; pass targets= to decode_layers")
        is_top = self.target_rank[..., target] == 0  # [layer, batch, pos]
        any_top = is_top.any(0)
        first = is_top.float().argmax(0)
        return torch.where(any_top, first, torch.full_like(first, -1))


# Logit elements decoded per unembedding call. Decoding layer by layer re-reads the whole
# unembedding matrix for each layer (2.7x slower than one call at one position, measured in
# bench/lens.py); one call for everything materialises [layer, batch, pos, vocab]. Groups of
# layers under this budget get the speed of the first without the memory of the second.
DECODE_BUDGET = 2**24


def reduce_logits(
    logits: Float[Tensor, "*lead vocab"], targets: Int[Tensor, "*lead n_target"] | None, k: int
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(top_ids, top_probs, entropy, target_rank, target_prob)`` of a block of logits."""
    logits = logits.float()
    logp = logits.log_softmax(-1)
    p_top, i_top = logp.topk(k, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    if targets is None:
        return i_top, p_top.exp(), entropy, None, None
    targets = targets.to(logits.device)
    return i_top, p_top.exp(), entropy, target_rank(logits, targets), logp.gather(-1, targets).exp()


def readout(
    lm,
    resids: Sequence[Float[Tensor, "batch pos d_model"]] | Float[Tensor, "layer batch pos d_model"],
    targets: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    lens: Lens | None = None,
    layers: Sequence[int] | None = None,
) -> LayerReadout:
    """Decode each residual in ``resids`` (one per layer), in groups of layers whose logits
    fit ``DECODE_BUDGET`` elements.

    ``targets`` gives, per prompt, token ids whose rank and probability to track (e.g. the
    answer's and the argument's first tokens); they are shared by all positions. ``lens``
    decodes (default: the logit lens); ``layers`` names the block of each residual for a lens
    that depends on it (default ``0, 1, ...``: ``resids`` is every block's ``resid_post``).
    """
    if not isinstance(resids, Tensor):
        resids = torch.stack(list(resids))
    n_layers, batch, pos, _ = resids.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    if len(layers) != n_layers:
        raise InterpError(f"readout got {n_layers} residuals but {len(layers)} layers; pass one layer per residual")
    per_group = max(1, DECODE_BUDGET // (batch * pos * lm.d_vocab))
    parts = []
    for start in range(0, n_layers, per_group):
        group = resids[start:start + per_group]
        group_targets = None
        if targets is not None:
            group_targets = targets.to(group.device)[None, :, None, :].expand(group.shape[0], -1, pos, -1)
        if lens is None or isinstance(lens, LogitLens):  # one unembedding call for the whole group
            logits = logit_lens(lm, group)
        else:
            logits = torch.stack([lens.decode(r, layer) for r, layer in zip(group, layers[start:start + per_group])])
        parts.append(reduce_logits(logits, group_targets, k))
    fields = [torch.cat(list(f)) if f[0] is not None else None for f in zip(*parts)]
    return LayerReadout(*fields)


def decode_layers(
    lm,
    prompts,
    hook: str = "resid_post",
    positions=-1,
    targets: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    lens: Lens | None = None,
) -> LayerReadout:
    """Run ``prompts`` once and early-decode ``hook`` at every layer at ``positions``."""
    run = lm.run(prompts, capture=[hook], positions=positions, logits=False)
    return readout(lm, run.cache.stack(hook), targets=targets, k=k, lens=lens)


__all__ = ["DECODE_BUDGET", "LayerReadout", "Lens", "LogitLens", "TunedLens", "TunedLensConfig", "decode_layers",
           "logit_lens", "readout", "reduce_logits", "resolve_lens", "reward_lens", "target_rank", "train_tuned_lens"]
