"""Our captures against two independent implementations on the same weights.

TransformerLens 4 (``TransformerBridge``, booted offline without weight processing) and
nnsight 0.8 (a trace over the HF model) must agree with ``lm.run`` captures of
``resid_pre``, ``mlp_out`` and ``resid_post`` (nnsight also ``attn_out`` and the final norm)
at every layer, to 1e-4, for GPT-2 and Llama; TransformerLens also the attention-head hooks
(q, k, v, pattern, z) on GPT-2, the grouped-query Llama and GPT-NeoX (its fused, per-head
interleaved q/k/v). Neither oracle reads our adapter table.
"""

import copy

import pytest
import torch

import interp
from tests.conftest import FAMILIES, PROMPTS, random_model

ORACLE_FAMILIES = ["gpt2", "llama"]
POINTS = ["resid_pre", "mlp_out", "resid_post"]
ATOL = 1e-4


@pytest.fixture(scope="module", params=ORACLE_FAMILIES)
def setup(request, tokenizer, tmp_path_factory):
    family = request.param
    model = random_model(family)
    folder = tmp_path_factory.mktemp(family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    lm = interp.LM.from_hf(model, tokenizer)
    tokens = lm.to_tokens(PROMPTS[1])[0]
    ours = lm.run(tokens, capture=POINTS).cache
    return family, folder, tokens, ours, lm.n_layers


def test_transformer_lens_bridge_agrees(setup, tokenizer):
    from transformer_lens.model_bridge import TransformerBridge

    family, folder, tokens, ours, n_layers = setup
    # The bridge switches its model to eager attention: give it its own copy of the weights.
    hf_copy = copy.deepcopy(random_model(family))
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf_copy, tokenizer=tokenizer)
    names = [f"blocks.{layer}.hook_{p}" for layer in range(n_layers) for p in POINTS]
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name in names)
    for name in names:
        torch.testing.assert_close(cache[name], ours[name], atol=ATOL, rtol=0, msg=f"{family} {name}")


HEAD_POINTS = ["q", "k", "v", "pattern", "z"]


@pytest.mark.parametrize("family", FAMILIES)
def test_transformer_lens_bridge_head_hooks_agree(family, tokenizer, tmp_path):
    """``blocks.{l}.attn.hook_{q,k,v,pattern,z}``: same names, layouts ([batch, pos, head,
    d_head], a pattern [batch, head, query, key]) and values; q and k before rotary, and k, v
    with the grouped-query Llama's 2 key/value heads (of 4)."""
    from transformer_lens.model_bridge import TransformerBridge

    model = random_model(family)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lm = interp.LM.from_hf(model, tokenizer)
    tokens = lm.to_tokens(PROMPTS[1])[0]
    names = [f"blocks.{layer}.attn.hook_{p}" for layer in range(lm.n_layers) for p in HEAD_POINTS]
    ours = lm.run(tokens, capture=names).cache
    bridge = TransformerBridge.boot_transformers(str(tmp_path), hf_model=copy.deepcopy(random_model(family)),
                                                 tokenizer=tokenizer)
    _, cache = bridge.run_with_cache(tokens, names_filter=lambda name: name in names)
    if family == "llama":
        assert ours["blocks.0.attn.hook_k"].shape[2] == 2 < ours["blocks.0.attn.hook_q"].shape[2] == 4
    for name in names:
        torch.testing.assert_close(cache[name], ours[name], atol=ATOL, rtol=0, msg=f"{family} {name}")


def _gpt2_points(wrapped, layer):
    """GPT-2's HF module names: ``transformer.h[l]`` with ``attn`` and ``mlp`` inside."""
    block = wrapped.transformer.h[layer]
    return {"resid_pre": block.input, "attn_out": block.attn.output[0],
            "mlp_out": block.mlp.output, "resid_post": block.output}


def _llama_points(wrapped, layer):
    """Llama's HF module names: ``model.layers[l]`` with ``self_attn`` and ``mlp`` inside."""
    block = wrapped.model.layers[layer]
    return {"resid_pre": block.input, "attn_out": block.self_attn.output[0],
            "mlp_out": block.mlp.output, "resid_post": block.output}


# Written out from HF's own module names, independently of interp.adapters: a wrong adapter
# row changes our captures but not these.
NNSIGHT_POINTS = {"gpt2": _gpt2_points, "llama": _llama_points}
NNSIGHT_FINAL_NORM = {"gpt2": lambda w: w.transformer.ln_f, "llama": lambda w: w.model.norm}


@pytest.mark.filterwarnings("ignore:LanguageModel is deprecated")
def test_nnsight_agrees(setup, tokenizer):
    from nnsight import LanguageModel

    family, folder, tokens, _, n_layers = setup
    model = random_model(family)
    names = [f"blocks.{layer}.hook_{p}" for layer in range(n_layers)
             for p in ("resid_pre", "attn_out", "mlp_out", "resid_post")] + ["ln_final.hook_normalized"]
    ours = interp.LM.from_hf(model, tokenizer).run(tokens, capture=names).cache
    wrapped = LanguageModel(model, tokenizer=tokenizer)
    saved = {}
    with wrapped.trace(tokens):
        for layer in range(n_layers):  # nnsight wants execution order: input, attn, mlp, output
            for point, proxy in NNSIGHT_POINTS[family](wrapped, layer).items():
                saved[f"blocks.{layer}.hook_{point}"] = proxy.save()
        saved["ln_final.hook_normalized"] = NNSIGHT_FINAL_NORM[family](wrapped).output.save()
    assert sorted(saved) == sorted(names)
    for name, value in saved.items():
        torch.testing.assert_close(value, ours[name], atol=ATOL, rtol=0, msg=f"{family} {name}")
