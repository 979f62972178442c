"""Options that share a context, scored in one forward that reads the context once.

For a batch of groups (one context, several continuations each), each group is one row:
the context, then every option but its last token, packed one after another without
padding (lm-evaluation-harness feeds ``context + option[:-1]``: the last token is predicted,
never read, so it needs no position). Rows are left-padded. A custom attention mask
(:mod:`interp.packed`) lets each context token see the context before it and each option
token see the whole context and its own option's earlier tokens, never another option; its
position ids continue from the context's length, as if the option ran alone.
The unembedding (and any ``resid_post`` capture, for by-layer readouts) runs at the
predictors only: the context's last token, whose logits predict every option's first
token, and the options' fed tokens (token ``t`` of an option predicts its token ``t + 1``).

An option may also read tokens it does not score, its *lead* (``leads``): partial scoring
(:mod:`probes.multiple_choice`) runs one context per option whose common token prefix is the
shared context and whose option-specific rest is the lead, and scores the shared
continuation after it. A branch is then ``lead + option[:-1]``; the option's first token is
predicted by the lead's last token (by the context's last token when the lead is empty).

So the context's keys and values are computed once and never copied per option (a cache
expanded to one row per option costs a copy of it per option and layer, and a second
forward), and options are not padded to the longest. The numbers equal those of running
each ``context + option`` on its own (:func:`probes.logprobs.naive_pair_logprobs`) up to
float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.lens import Lens
from interp.packed import run_packed
from probes.answer_mass import TOP_K, AnswerMass, answer_mass
from probes.readouts import Layer, block_layers, layer_logprobs

Group = tuple[list[int], list[list[int]]]  # (context tokens, each option's tokens)
Leads = Sequence[Sequence[list[int]]]  # per group, per option: tokens read before the option, not scored


def _score_batch(lm, groups: Sequence[Group], layers: Sequence[Layer], lens=None, leads: Leads | None = None,
                 top_k: int = TOP_K):
    device = lm.device
    blocks = block_layers(layers)
    names = [f"blocks.{l}.hook_resid_post" for l in blocks]
    leads = leads if leads is not None else [[[] for _ in opts] for _, opts in groups]
    # The last token is predicted, not fed.
    rows = [(ctx, [list(lead) + o[:-1] for lead, o in zip(ls, opts)]) for (ctx, opts), ls in zip(groups, leads)]
    # Kept columns: each row's last ``1 + fed`` (the context's last token, then the fed tokens);
    # all columns when a row is shorter than the widest such span (positions are prompt-relative).
    n_fed = [sum(len(b) for b in branches) for _, branches in rows]
    widest, shortest = 1 + max(n_fed), min(len(ctx) + fed for (ctx, _), fed in zip(groups, n_fed))
    out = run_packed(lm, rows, capture=names, positions=list(range(-widest, 0)) if widest <= shortest else None)
    n_cols = out.logits.shape[1]
    # Per option token, the (row, column) of its predictor.
    pred_row, pred_col, targets, options, masses = [], [], [], [], []
    for g, ((_, opts), ls, fed) in enumerate(zip(groups, leads, n_fed)):
        last_ctx = n_cols - 1 - fed
        # The answer position predicts every option's first token only when no option has a lead.
        masses.append(None if any(ls) else answer_mass(out.logits[g, last_ctx], [o[0] for o in opts], top_k))
        start = last_ctx + 1  # the branch's first column
        for lead, opt in zip(ls, opts):
            # Token t of the option sits at branch index len(lead) + t; its predictor one before
            # (index -1: the context's last token).
            pred_row += [g] * len(opt)
            pred_col += [last_ctx if i < 0 else start + i for i in range(len(lead) - 1, len(lead) + len(opt) - 1)]
            start += len(lead) + len(opt) - 1
            targets += opt
            options.append(opt)
    pred_row = torch.tensor(pred_row, device=device)
    pred_col = torch.tensor(pred_col, device=device)
    logits = out.logits[pred_row, pred_col]  # [token, vocab]
    resids = {l: out.captures[name][pred_row, pred_col] for l, name in zip(blocks, names)}
    values, greedy = layer_logprobs(lm, layers, logits, resids, torch.tensor(targets, device=device), lens)
    values, greedy = values.cpu(), greedy.cpu()
    per_option, start = [], 0
    for opt in options:
        per_option.append((values[:, start:start + len(opt)], greedy[:, start:start + len(opt)]))
        start += len(opt)
    return per_option, masses


OptionScores = list[tuple[Float[Tensor, "readout n_tokens"], Bool[Tensor, "readout n_tokens"]]]


def shared_context_scores(
    lm, groups: Sequence[Group], layers: Sequence[Layer], batch_size: int = 4, lens: Lens | None = None,
    leads: Leads | None = None, top_k: int = TOP_K,
) -> tuple[list[OptionScores], list[AnswerMass | None]]:
    """Per group: each option's ``(token log-probs, greedy)`` under each readout, and the
    final readout's :class:`probes.answer_mass.AnswerMass` at the context's last token (the
    ``top_k`` most probable tokens that start no option; ``None`` for a group with leads,
    whose options are not all predicted there). ``batch_size`` contexts (with all their
    options) share one forward; ``lens`` decodes the block readouts (default: the logit
    lens). ``leads[g][j]``: tokens option ``j`` of group ``g`` reads after the context before
    its scored tokens (module doc; default none)."""
    scores, masses = [], []
    for start in range(0, len(groups), batch_size):
        batch = groups[start:start + batch_size]
        with torch.no_grad():
            flat, batch_masses = _score_batch(lm, batch, layers, lens,
                                              None if leads is None else leads[start:start + batch_size], top_k)
        it = iter(flat)
        scores += [[next(it) for _ in opts] for _, opts in batch]
        masses += batch_masses
    return scores, masses


def shared_context_logprobs(
    lm, groups: Sequence[Group], layers: Sequence[Layer], batch_size: int = 4, lens: Lens | None = None,
    leads: Leads | None = None,
) -> list[OptionScores]:
    """Per group, per option: ``(token log-probs, greedy)`` under each readout (see
    :func:`shared_context_scores`)."""
    return shared_context_scores(lm, groups, layers, batch_size, lens, leads)[0]
