"""Packed branches (``interp.packed``): every branch token's numbers are those of running its
context and branch alone; multiple-choice scores through it equal a loop of single runs."""

import pytest
import torch

from interp.errors import PromptError
from interp.packed import run_packed
from probes.logprobs import naive_pair_logprobs
from probes.shared_context import shared_context_logprobs

# Contexts of unequal length (left padding between rows), branches of 0 to 4 tokens.
ROWS = [([5, 9, 14, 3, 8, 21, 7], [[11, 4, 6], [], [30, 2], [17]]),
        ([12, 40], [[3, 3, 3, 3], [8]]),
        ([2, 19, 25, 6], [[]])]


def test_branch_tokens_equal_each_context_and_branch_run_alone(lm):
    packed = run_packed(lm, ROWS, capture=["blocks.1.hook_resid_post"])
    seq = packed.logits.shape[1]
    for b, (ctx, branches) in enumerate(ROWS):
        n_branch = sum(len(x) for x in branches)
        col = seq - n_branch  # the row's first branch column (left padding)
        ctx_alone = lm.run([ctx], capture=["blocks.1.hook_resid_post"])
        torch.testing.assert_close(packed.logits[b, col - len(ctx):col], ctx_alone.logits[0], atol=1e-5, rtol=0)
        for branch in branches:
            if not branch:
                continue
            alone = lm.run([ctx + branch], capture=["blocks.1.hook_resid_post"])
            cols = slice(col, col + len(branch))
            torch.testing.assert_close(packed.logits[b, cols], alone.logits[0, len(ctx):], atol=1e-5, rtol=0)
            torch.testing.assert_close(packed.captures["blocks.1.hook_resid_post"][b, cols],
                                       alone.cache["blocks.1.hook_resid_post"][0, len(ctx):], atol=1e-5, rtol=0)
            col += len(branch)


def test_shared_context_scores_equal_single_runs(lm):
    # Options of 1 to 5 tokens (1-token options have nothing to feed); 3 contexts in one batch.
    g = torch.Generator().manual_seed(1)
    groups = []
    for n_ctx, lengths in ((9, [1, 3, 5, 2]), (4, [1, 1]), (13, [4, 1, 2])):
        ctx = torch.randint(0, lm.d_vocab, (n_ctx,), generator=g).tolist()
        groups.append((ctx, [torch.randint(0, lm.d_vocab, (n,), generator=g).tolist() for n in lengths]))
    layers = [None, 0, lm.n_layers - 1]
    kv = shared_context_logprobs(lm, groups, layers, batch_size=3)
    for (ctx, opts), scored in zip(groups, kv):
        for opt, (lp, greedy) in zip(opts, scored):
            [(want_lp, want_greedy)] = naive_pair_logprobs(lm, [(ctx, opt)], layers, batch_size=1)
            assert lp.shape == (len(layers), len(opt))
            torch.testing.assert_close(lp, want_lp.cpu(), atol=1e-5, rtol=0)
            assert torch.equal(greedy, want_greedy.cpu())


def test_a_branch_past_the_models_positions_is_refused(lm):
    with pytest.raises(PromptError, match="positions"):
        run_packed(lm, [([1] * (lm.max_positions - 1), [[2, 3]])])
