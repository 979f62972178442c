"""Attribution patching: exact on a model that is linear in the patched activation, close to
the exact sweep for a small perturbation, and ``compare`` on hand-computed cases."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import interp
from interp.errors import InterpError, UnsupportedArchitecture
from interp.patching import (
    attribution_heads, attribution_sweep, baseline_metric, compare, patch_heads, patch_sweep,
)

CORRUPTED = ["the capital of france is paris", "i plan to visit the city"]
CLEAN = ["the city of poland is warsaw", "i plan to visit a country"]


def logit_diff(tokenizer):
    a, b = tokenizer.convert_tokens_to_ids(["paris", "warsaw"])
    return lambda logits: logits[:, b].mean() - logits[:, a].mean()


def linear_gpt2(lm_of, tokenizer):
    """GPT-2 made affine in its residual stream: every LayerNorm is the identity, queries and
    keys are zero (so attention is a fixed causal average of the values) and the MLP's output
    projection is zero (values and attention output are scaled up so that mixing is visible).
    Every path from a block's activation to the logits is then linear, so
    the first-order estimate of a patch is exact; attention still mixes positions."""
    model = copy.deepcopy(lm_of("gpt2").model)
    d = model.config.n_embd
    with torch.no_grad():
        model.transformer.ln_f = nn.Identity()
        for block in model.transformer.h:
            block.ln_1, block.ln_2 = nn.Identity(), nn.Identity()
            block.attn.c_attn.weight[:, : 2 * d] = 0
            block.attn.c_attn.bias[: 2 * d] = 0
            block.attn.c_attn.weight[:, 2 * d:] *= 10  # values and output large enough that
            block.attn.c_proj.weight *= 10  # earlier positions visibly move the last one
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
    return interp.LM.from_hf(model, tokenizer)


@pytest.mark.parametrize("hook", ["resid_pre", "attn_out", "resid_mid", "resid_post"])
def test_exact_on_a_model_linear_in_the_activation(lm_of, tokenizer, hook):
    lm = linear_gpt2(lm_of, tokenizer)
    metric = logit_diff(tokenizer)
    effect = patch_sweep(lm, CORRUPTED, CLEAN, metric, hook=hook) - baseline_metric(lm, CORRUPTED, metric)
    approx = attribution_sweep(lm, CORRUPTED, CLEAN, metric, hook=hook)
    assert approx.shape == (lm.n_layers, 6)
    assert (effect.abs() > 1e-4).sum() >= 6, "too few non-zero effects for the test to see a wrong cell"
    torch.testing.assert_close(approx, effect, atol=1e-5, rtol=1e-4)


NEAR_CORRUPTED = ["the capital of france is a city of france"]
NEAR_CLEAN = ["the capital of poland is a city of france"]


def near_lm(lm_of, tokenizer, family):
    """A copy of the family's model in which "poland" is embedded close to "france", so that
    patching ``NEAR_CLEAN`` into ``NEAR_CORRUPTED`` is a small perturbation of the latter."""
    model = copy.deepcopy(lm_of(family).model)
    old, new = tokenizer.convert_tokens_to_ids(["france", "poland"])
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb[new] = emb[old] + 0.05 * emb[old].norm() / emb.shape[1] ** 0.5 * torch.randn(emb.shape[1])
    return interp.LM.from_hf(model, tokenizer)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_close_to_exact_for_a_small_perturbation(lm_of, tokenizer, family):
    lm = near_lm(lm_of, tokenizer, family)
    corrupted, clean = NEAR_CORRUPTED, NEAR_CLEAN
    metric = logit_diff(tokenizer)
    effect = patch_sweep(lm, corrupted, clean, metric) - baseline_metric(lm, corrupted, metric)
    approx = attribution_sweep(lm, corrupted, clean, metric)
    assert effect[:, 3:].abs().max() > 0  # the perturbation reaches later positions
    torch.testing.assert_close(effect[:, :3], torch.zeros_like(effect[:, :3]))  # causal: none before it
    c = compare(approx, effect, k=5)
    assert c.pearson > 0.99 and c.spearman > 0.9 and c.top_k_overlap >= 0.6, c


def test_heads_exact_on_a_model_linear_in_the_activation(lm_of, tokenizer):
    lm = linear_gpt2(lm_of, tokenizer)
    metric = logit_diff(tokenizer)
    effect = patch_heads(lm, CORRUPTED, CLEAN, metric) - baseline_metric(lm, CORRUPTED, metric)
    approx = attribution_heads(lm, CORRUPTED, CLEAN, metric)
    assert approx.shape == (lm.n_layers, lm.model.config.n_head)
    assert (effect.abs() > 1e-4).sum() >= 6, "too few non-zero effects for the test to see a wrong cell"
    torch.testing.assert_close(approx, effect, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_heads_close_to_exact_for_a_small_perturbation(lm_of, tokenizer, family):
    lm = near_lm(lm_of, tokenizer, family)
    corrupted, clean = NEAR_CORRUPTED, NEAR_CLEAN
    metric = logit_diff(tokenizer)
    effect = patch_heads(lm, corrupted, clean, metric) - baseline_metric(lm, corrupted, metric)
    approx = attribution_heads(lm, corrupted, clean, metric)
    assert effect.abs().max() > 0
    c = compare(approx, effect, k=3)
    assert c.pearson > 0.99 and c.spearman > 0.8 and c.top_k_overlap >= 2 / 3, c


def test_heads_of_a_family_without_an_output_projection_row_raise(lm_of, tokenizer, monkeypatch):
    lm = lm_of("gpt2")
    monkeypatch.setattr(lm, "arch", dataclasses.replace(lm.arch, attn_o=None))
    with pytest.raises(UnsupportedArchitecture, match="attn_o"):
        attribution_heads(lm, CORRUPTED, CLEAN, logit_diff(tokenizer))


def test_compare_hand_computed():
    x = torch.tensor([[3.0, -1.0, 0.5], [2.0, 0.0, -4.0]])
    same = compare(x, x, k=2)
    assert same.pearson == pytest.approx(1) and same.spearman == pytest.approx(1) and same.top_k_overlap == 1
    assert compare(-x, x).pearson == pytest.approx(-1)
    monotone = compare(x ** 3, x, k=3)  # same order, not linear
    assert monotone.spearman == pytest.approx(1) and monotone.pearson < 0.99
    # |x| top-2 cells: -4.0 and 3.0; y's: 3.0 and 2.0 -> one in common.
    y = torch.tensor([[3.0, -1.0, 0.5], [2.0, 0.0, 1.0]])
    assert compare(y, x, k=2).top_k_overlap == 0.5
    ties = compare(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 5.0]), k=1)
    assert ties.spearman == pytest.approx(1)  # average ranks for ties


def test_bad_input_raises(lm_of, tokenizer):
    lm = lm_of("gpt2")
    with pytest.raises(InterpError, match="scalar"):
        attribution_sweep(lm, CORRUPTED, CLEAN, lambda logits: logits[:, 0])
    with pytest.raises(InterpError, match="scalar"):
        attribution_heads(lm, CORRUPTED, CLEAN, lambda logits: logits[:, 0])
    with pytest.raises(InterpError, match="no gradient"):
        attribution_heads(lm, CORRUPTED, CLEAN, lambda logits: torch.tensor(1.0))
    with pytest.raises(InterpError, match="same number of tokens"):
        attribution_sweep(lm, CORRUPTED, ["the capital", "i plan"], logit_diff(tokenizer))
    with pytest.raises(InterpError, match="one shape"):
        compare(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(InterpError, match="k must"):
        compare(torch.zeros(2, 3), torch.zeros(2, 3), k=7)
