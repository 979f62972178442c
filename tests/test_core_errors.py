"""Bad input gets a clear error naming the valid choices, never a deep torch traceback."""

import pytest
import torch
import transformers

import interp
from interp.errors import InterpError, PromptError, UnknownHook, UnsupportedArchitecture
from tests.conftest import PROMPTS


def test_unknown_hook_name_lists_valid_names(lm):
    with pytest.raises(UnknownHook, match=r"unknown hook name 'blocks.0.hook_mlp'.*valid names.*hook_embed.*mlp_out"):
        lm.run(PROMPTS, capture=["blocks.0.hook_mlp"])
    with pytest.raises(UnknownHook, match="valid names"):
        lm.run(PROMPTS, capture=["resid"])


def test_layer_out_of_range_names_the_range(lm):
    name = f"blocks.{lm.n_layers}.hook_resid_post"
    with pytest.raises(UnknownHook, match=rf"layer {lm.n_layers} is out of range.*{lm.n_layers} layers \(0-{lm.n_layers - 1}\)"):
        lm.run(PROMPTS, capture=[name])
    with pytest.raises(UnknownHook, match="out of range"):
        lm.run(PROMPTS, interventions={"blocks.-1.hook_mlp_out": torch.zeros(lm.d_model)})


def test_resid_mid_raises_for_parallel_families(lm_of):
    for family in ("gptj", "gpt_neox"):
        lm = lm_of(family)
        assert lm.parallel
        with pytest.raises(UnknownHook, match="in parallel.*no resid_mid"):
            lm.run(PROMPTS, capture=["resid_mid"])
        with pytest.raises(UnknownHook, match="no resid_mid"):
            lm.run(PROMPTS, interventions={"blocks.0.hook_resid_mid": torch.zeros(lm.d_model)})
    assert not lm_of("gpt_neox_sequential").parallel


def test_empty_prompt_list_and_empty_prompt(lm):
    with pytest.raises(PromptError, match="prompt list is empty"):
        lm.run([])
    with pytest.raises(PromptError, match=r"prompts \[1\] are empty"):
        lm.run(["the capital", ""])


def test_prompt_longer_than_context_names_the_limit(lm):
    long_prompt = " ".join(["the"] * (lm.max_positions + 1))
    with pytest.raises(PromptError, match=rf"longer than the model's context of {lm.max_positions}"):
        lm.run([PROMPTS[0], long_prompt])


def test_token_ids_outside_vocabulary(lm):
    with pytest.raises(PromptError, match=rf"token ids must lie in 0..{lm.d_vocab - 1}"):
        lm.run(torch.tensor([[1, 2, lm.d_vocab]]))


def test_unknown_architecture_names_supported_ones():
    config = transformers.BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=50)
    model = transformers.BertLMHeadModel(config)
    with pytest.raises(UnsupportedArchitecture, match=r"'bert' is not supported.*gpt2.*gptj.*llama"):
        interp.LM.from_hf(model)


def test_positions_outside_a_prompt(lm):
    with pytest.raises(PromptError, match=r"outside the shortest prompt"):
        lm.run(PROMPTS, capture=["resid_post"], positions=[-50])


def test_intervention_value_that_does_not_broadcast(lm):
    with pytest.raises(InterpError, match="does not broadcast"):
        lm.run(PROMPTS, interventions={"blocks.0.hook_mlp_out": torch.zeros(lm.d_model + 1)})


def test_intervention_function_returning_wrong_shape(lm):
    with pytest.raises(InterpError, match="must return a tensor of the activation's shape"):
        lm.run(PROMPTS, interventions={"blocks.0.hook_mlp_out": lambda act: act[:, -1]})


def test_intervention_of_the_wrong_kind(lm):
    with pytest.raises(InterpError, match="must be a Tensor, interp.replace"):
        lm.run(PROMPTS, interventions={"blocks.0.hook_mlp_out": 3.0})


def test_reading_an_uncaptured_hook(lm):
    run = lm.run(PROMPTS, capture=["blocks.0.hook_mlp_out"])
    with pytest.raises(UnknownHook, match=r"was not captured in this run; captured: blocks.0.hook_mlp_out"):
        run.cache["blocks.1.hook_mlp_out"]
    with pytest.raises(UnknownHook, match="needs every layer"):
        run.cache.stack("mlp_out")


def test_logits_false_with_nothing_to_do(lm):
    with pytest.raises(InterpError, match="nothing to capture"):
        lm.run(PROMPTS, logits=False)
