"""Our captures against two independent implementations on the same weights.

TransformerLens 4 (``TransformerBridge``, booted offline without weight processing) and
nnsight 0.8 (a trace over the HF model) must agree with ``lm.run`` captures of
``resid_pre``, ``mlp_out`` and ``resid_post`` at every layer, to 1e-4, for GPT-2 and Llama.
"""

import copy

import pytest
import torch

import interp
from tests.conftest import PROMPTS, random_model

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


@pytest.mark.filterwarnings("ignore:LanguageModel is deprecated")
def test_nnsight_agrees(setup, tokenizer):
    from nnsight import LanguageModel

    family, folder, tokens, ours, n_layers = setup
    model = random_model(family)
    lm = interp.LM.from_hf(model, tokenizer)  # reuse our adapter table for module paths only
    blocks = model.get_submodule(lm.arch.blocks)
    wrapped = LanguageModel(model, tokenizer=tokenizer)
    saved = {}
    with wrapped.trace(tokens):
        nn_blocks = _walk(wrapped, lm.arch.blocks)
        for layer in range(len(blocks)):  # execution order: input, mlp output, block output
            block = nn_blocks[layer]
            saved[f"blocks.{layer}.hook_resid_pre"] = block.input.save()
            saved[f"blocks.{layer}.hook_mlp_out"] = _walk(block, lm.arch.mlp).output.save()
            out = block.output
            saved[f"blocks.{layer}.hook_resid_post"] = (out[0] if family == "gptj" else out).save()
    for name, value in saved.items():
        torch.testing.assert_close(value, ours[name], atol=ATOL, rtol=0, msg=f"{family} {name}")


def _walk(module, path):
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module
