"""Options that share a context, scored without re-running the context.

For a batch of groups (one context, several continuations each):

1. the contexts run once, left-padded: ``lm.run(..., positions=-1, use_cache=True)``; the
   unembedding (and any ``resid_post`` capture, for by-layer readouts) is restricted to the
   last context position, whose logits predict every option's first token;
2. the KV cache is expanded to one row per option (``Cache.reorder_cache`` with the owning
   context's index);
3. all options but their last token run in one forward continuing from that cache
   (``lm.run_continuation``; lm-evaluation-harness feeds ``context + option[:-1]``: the last token is predicted, never
   read, so it needs no position): right-padded, attention mask = the context's mask then
   the option mask, position ids continuing from each context's length. Position ``t`` of
   an option predicts its token ``t + 1``. When every option is one token long, step 1
   alone predicts them and this forward is not run.

The numbers equal those of running each ``context + option`` on its own
(:func:`probes.logprobs.naive_pair_logprobs`) up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.lens import Lens
from probes.readouts import Layer, block_layers, layer_logprobs

Group = tuple[list[int], list[list[int]]]  # (context tokens, each option's tokens)


def _score_batch(lm, groups: Sequence[Group], layers: Sequence[Layer], lens=None):
    device = lm.device
    blocks = block_layers(layers)
    names = [f"blocks.{l}.hook_resid_post" for l in blocks]
    ctx = lm.run([c for c, _ in groups], capture=names, positions=-1, use_cache=True)  # left-padded
    ctx_mask, ctx_len = ctx.attention_mask, ctx.lengths.to(device)
    first_logits = ctx.logits[:, -1]  # [group, vocab]
    first_resid = {l: ctx.cache[name][:, -1] for l, name in zip(blocks, names)}

    options = [opt for _, opts in groups for opt in opts]
    owner = torch.tensor([g for g, (_, opts) in enumerate(groups) for _ in opts], device=device)
    longest = max(len(o) for o in options)
    targets = torch.full((len(options), longest), lm.pad_id, dtype=torch.long, device=device)
    for i, opt in enumerate(options):
        targets[i, :len(opt)] = torch.tensor(opt, device=device)
    if longest == 1:  # the context's last position predicts every option: nothing to feed
        return _read(lm, layers, first_logits[owner, None], {l: r[owner, None] for l, r in first_resid.items()},
                     targets, options, lens)
    # Fed: each option without its last token (right-padded, masked).
    opt_ids = targets[:, :-1]
    opt_mask = torch.zeros_like(opt_ids)
    for i, opt in enumerate(options):
        opt_mask[i, :len(opt) - 1] = 1
    cache = ctx.past
    cache.reorder_cache(owner)
    cont = lm.run_continuation(cache, ctx_mask[owner], opt_ids, opt_mask, capture=names)
    # Predictors of option tokens: the context's last position, then the option's own positions.
    logits = torch.cat([first_logits[owner, None], cont.logits], 1)
    resids = {l: torch.cat([first_resid[l][owner, None], cont.cache[name]], 1) for l, name in zip(blocks, names)}
    return _read(lm, layers, logits, resids, targets, options, lens)


def _read(lm, layers, logits, resids, targets, options, lens):
    """Per option ``(token log-probs, greedy)`` from the predictors of its tokens."""
    values, greedy = layer_logprobs(lm, layers, logits, resids, targets, lens)
    return [(values[:, i, :len(o)].cpu(), greedy[:, i, :len(o)].cpu()) for i, o in enumerate(options)]


def shared_context_logprobs(
    lm, groups: Sequence[Group], layers: Sequence[Layer], batch_size: int = 4, lens: Lens | None = None
) -> list[list[tuple[Float[Tensor, "readout n_tokens"], Bool[Tensor, "readout n_tokens"]]]]:
    """Per group, per option: ``(token log-probs, greedy)`` under each readout. ``batch_size``
    contexts (with all their options) share one pair of forwards; ``lens`` decodes the block
    readouts (default: the logit lens)."""
    out = []
    for start in range(0, len(groups), batch_size):
        batch = groups[start:start + batch_size]
        with torch.no_grad():
            flat = _score_batch(lm, batch, layers, lens)
        it = iter(flat)
        out += [[next(it) for _ in opts] for _, opts in batch]
    return out
