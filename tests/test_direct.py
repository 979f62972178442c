"""Direct logit attribution (interp.direct) against the model's own logits and by hand."""

from __future__ import annotations

import types

import pytest
import torch

import interp
from interp.direct import direct_logit_attribution, linearise_norm
from tests.conftest import PROMPTS

NORMS = {"gpt2": "LayerNorm", "llama": "RMSNorm", "gpt_neox": "LayerNorm", "gpt_neox_sequential": "LayerNorm",
         "gptj": "LayerNorm", "mistral": "RMSNorm"}


def parts(lm):
    """``(final resid [batch, d], components [1 + 2 layer, batch, d], logits [batch, vocab])``
    at the last position: the embedding, every attention update, every FFN update."""
    run = lm.run(PROMPTS, capture=["blocks.0.hook_resid_pre", "attn_out", "mlp_out", "resid_post"], positions=-1)
    comps = torch.cat([run.cache["blocks.0.hook_resid_pre"][:, 0][None],
                       run.cache.stack("attn_out")[:, :, 0], run.cache.stack("mlp_out")[:, :, 0]])
    return run.cache.stack("resid_post")[-1, :, 0], comps, run.logits[:, 0]


def targets_of(lm) -> torch.Tensor:
    return torch.tensor([lm.tokenizer.convert_tokens_to_ids(w) for w in ("paris", "warsaw", "city")])


def test_the_family_norm_is_linearised(lm, family):
    assert type(lm.final_norm).__name__.endswith(NORMS[family])
    lin = linearise_norm(lm.final_norm, lm.arch.norm)
    assert lin.centre == (NORMS[family] == "LayerNorm")
    assert (lin.bias is not None) == (NORMS[family] == "LayerNorm")


def test_contributions_sum_to_the_target_logit_minus_the_mean(lm):
    final, comps, logits = parts(lm)
    torch.testing.assert_close(comps.sum(0), final, rtol=0, atol=1e-4)  # the residual is their sum
    targets = targets_of(lm)
    dla = direct_logit_attribution(lm, final, comps, targets)
    assert dla.contributions.shape == (1 + 2 * lm.n_layers, len(PROMPTS)) and dla.bias.shape == (len(PROMPTS),)
    expected = logits.gather(-1, targets[:, None])[:, 0] - logits.mean(-1)
    torch.testing.assert_close(dla.contributions.sum(0) + dla.bias, expected, rtol=0, atol=1e-4)
    assert dla.contributions.abs().max() > 1e-2  # not all zero


def test_one_component_by_hand(lm):
    """A component's contribution is norm-with-frozen-scale(c) . (W_U[t] - mean W_U)."""
    final, comps, _ = parts(lm)
    targets = targets_of(lm)
    dla = direct_logit_attribution(lm, final, comps, targets)
    norm, w_u = lm.final_norm, lm.unembed.weight
    c = comps[1]  # the first attention update
    if isinstance(norm, torch.nn.LayerNorm):
        scale = (final.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        normed = norm.weight * (c - c.mean(-1, keepdim=True)) / scale
        bias = (w_u[targets] - w_u.mean(0)) @ norm.bias
    else:
        scale = (final.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
        normed = norm.weight * c / scale
        bias = torch.zeros(len(PROMPTS))
    if getattr(lm.unembed, "bias", None) is not None:  # GPT-J's lm_head
        bias = bias + lm.unembed.bias[targets] - lm.unembed.bias.mean()
    direction = w_u[targets] - w_u.mean(0)
    torch.testing.assert_close(dla.contributions[1], (normed * direction).sum(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dla.bias, bias.detach(), rtol=1e-5, atol=1e-5)
    # The final residual as the only component gives the logit difference minus the bias.
    whole = direct_logit_attribution(lm, final, final[None], targets)
    torch.testing.assert_close(whole.contributions[0], dla.contributions.sum(0), rtol=0, atol=1e-4)


def test_unknown_norm_is_a_clear_error(lm_of):
    lm = lm_of("gpt2")
    fake = types.SimpleNamespace(final_norm=torch.nn.Identity(), unembed=lm.unembed, arch=lm.arch)
    with pytest.raises(interp.UnsupportedArchitecture, match="no attribute 'eps'.*LAYERNORM: eps, weight, bias"):
        direct_logit_attribution(fake, torch.zeros(1, 64), torch.zeros(2, 1, 64), torch.tensor([0]))
