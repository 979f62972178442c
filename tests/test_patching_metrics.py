"""``TokenMetric``s (``logit_diff``, ``logit``): the same numbers as the plain function of the
logits, and a sweep given one computes only the columns it reads."""

from __future__ import annotations

import pytest
import torch

from interp.errors import InterpError
from interp.patching import TokenMetric, logit, logit_diff, patch_heads, patch_layers, patch_sweep

CORRUPTED = ["the capital of france is paris", "i plan to visit the city"]
CLEAN = ["the city of poland is warsaw", "i plan to visit a country"]


def test_logit_diff_and_logit_are_the_hand_computation():
    logits = torch.randn(3, 50)
    torch.testing.assert_close(logit_diff(7, 2)(logits), (logits[:, 7] - logits[:, 2]).mean())
    torch.testing.assert_close(logit(7)(logits), logits[:, 7].mean())
    # One token per prompt (e.g. each prompt's own answer), given as lists or tensors.
    per_prompt = logit_diff([1, 4, 9], torch.tensor([2, 2, 0]))
    hand = torch.stack([logits[0, 1] - logits[0, 2], logits[1, 4] - logits[1, 2], logits[2, 9] - logits[2, 0]]).mean()
    torch.testing.assert_close(per_prompt(logits), hand)
    assert per_prompt.tokens == (0, 1, 2, 4, 9)
    assert isinstance(per_prompt, TokenMetric) and "logit_diff" in repr(per_prompt)


def test_token_metric_errors_are_clear():
    with pytest.raises(InterpError, match="non-negative integers"):
        logit_diff(-1, 2)
    with pytest.raises(InterpError, match="non-negative integers"):
        logit(True)
    with pytest.raises(InterpError, match="one token per prompt for 2 prompts, but the batch has 3"):
        logit_diff([1, 2], 3)(torch.randn(3, 10))
    with pytest.raises(InterpError, match="outside the vocabulary of 10"):
        logit(10)(torch.randn(3, 10))
    with pytest.raises(InterpError, match=r"\[batch, vocab\]"):
        logit(1)(torch.randn(2, 3, 10))


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "gptj"])
def test_sweeps_with_token_metrics_equal_plain_metrics(lm_of, tokenizer, family):
    lm = lm_of(family)
    a, b = tokenizer.convert_tokens_to_ids(["paris", "warsaw"])

    def plain(logits):
        return logits[:, b].mean() - logits[:, a].mean()

    fast = patch_sweep(lm, CORRUPTED, CLEAN, logit_diff(b, a), hook="mlp_out")
    assert fast.std() > 1e-3
    torch.testing.assert_close(fast, patch_sweep(lm, CORRUPTED, CLEAN, plain, hook="mlp_out"), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(patch_layers(lm, CORRUPTED, CLEAN, logit(b)),
                               patch_layers(lm, CORRUPTED, CLEAN, lambda x: x[:, b].mean()), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(patch_heads(lm, CORRUPTED, CLEAN, logit_diff(b, a)),
                               patch_heads(lm, CORRUPTED, CLEAN, plain), atol=1e-5, rtol=1e-4)
    # One answer per prompt (the second prompt's answer and distractor swapped).
    per_prompt = patch_sweep(lm, CORRUPTED, CLEAN, logit_diff([b, a], [a, b]), hook="resid_pre")
    torch.testing.assert_close(per_prompt, patch_sweep(
        lm, CORRUPTED, CLEAN, lambda x: ((x[0, b] - x[0, a]) + (x[1, a] - x[1, b])) / 2, hook="resid_pre"),
        atol=1e-5, rtol=1e-4)
    # Without the key/value path the metric is called on full logits: the same numbers again.
    torch.testing.assert_close(patch_sweep(lm, CORRUPTED, CLEAN, logit_diff(b, a), hook="mlp_out", kv_prefix=False),
                               fast, atol=1e-5, rtol=1e-4)


def test_a_token_metric_sweep_never_runs_the_full_unembedding(lm_of, tokenizer):
    lm = lm_of("gpt2")
    a, b = tokenizer.convert_tokens_to_ids(["paris", "warsaw"])
    patch_sweep(lm, CORRUPTED, CLEAN, logit_diff(a, b))  # the model's first sweep checks its unembedding once
    rows = []
    handle = lm.unembed.register_forward_hook(lambda module, args, output: rows.append(output.shape[0]))
    try:
        patch_sweep(lm, CORRUPTED, CLEAN, logit_diff(a, b))
        assert rows == []
        patch_sweep(lm, CORRUPTED, CLEAN, lambda x: x[:, a].mean() - x[:, b].mean())
        assert sum(rows) > 0
    finally:
        handle.remove()


def test_a_token_outside_the_vocabulary_is_refused_before_any_patched_run(lm_of):
    lm = lm_of("gpt2")
    vocab = lm.unembed.weight.shape[0]
    with pytest.raises(InterpError, match=f"outside the vocabulary of {vocab}"):
        patch_sweep(lm, CORRUPTED, CLEAN, logit_diff(vocab + 5, 1))
