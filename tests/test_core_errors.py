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


# -- prompts of the wrong kind -------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    """The toy model: its tokenizer adds a BOS token, so an empty string still gives one token."""
    return interp.load("toy/base")


@pytest.mark.parametrize("bad, message", [
    (5, "got int 5"),
    (None, "got NoneType None"),
    (3.5, "got float 3.5"),
    (b"the capital", "got bytes b'the capital'"),
    ({"the": 1}, "got dict"),
    ([b"the"], "prompt 0 is bytes b'the'"),
    (["the capital", 3], "prompt 1 is int 3"),
    ([None], "prompt 0 is NoneType None"),
    ([[1.5, 2.0]], r"prompt 0 is list \[1.5, 2.0\]"),
])
def test_prompts_of_a_type_run_does_not_take(lm_of, bad, message):
    with pytest.raises(PromptError, match=message) as info:  # the check precedes any family code
        lm_of("gpt2").run(bad)
    assert "a str, a list of str, or token ids" in str(info.value)


def test_empty_string_prompt_raises_even_when_the_tokenizer_adds_bos(toy):
    assert toy.to_tokens("the")[2].item() >= 2  # BOS + the word: "" would still be one token
    with pytest.raises(PromptError, match=r"prompts \[0\] are empty strings"):
        toy.run("")
    with pytest.raises(PromptError, match=r"prompts \[1\] are empty strings"):
        toy.run(["The capital of Poland is", ""])


def test_patch_sweep_of_empty_prompts_raises(toy):
    metric = interp.patching.logit(5)
    with pytest.raises(PromptError, match="empty strings"):
        interp.patching.patch_sweep(toy, "", "", metric)


def test_flat_list_of_ints_is_one_prompt_like_a_1d_tensor(lm_of):
    import numpy as np

    lm = lm_of("gpt2")
    ids = [5, 6, 7]
    run = lm.run(ids)
    assert run.tokens.tolist() == [ids]
    torch.testing.assert_close(run.logits, lm.run(torch.tensor(ids)).logits)
    for same in (np.array(ids), np.array([ids]), [np.array(ids)]):  # numpy ids, as before
        assert lm.run(same).tokens.tolist() == [ids]
    with pytest.raises(PromptError, match=r"prompt 0 is ndarray array\(\[\[1, 2\], \[3, 4\]\]\); prompts must be"):
        lm.run([np.array([[1, 2], [3, 4]])])  # and the message stays on one line


# -- devices and model folders -----------------------------------------------------------------
def test_unavailable_device_names_the_devices_here():
    from interp.loading import available_devices

    valid = ", ".join(available_devices())
    for device in (f"cuda:{torch.cuda.device_count()}", "gpu"):
        with pytest.raises(interp.LoadError, match=rf"device '{device}' is not available on this machine; valid here: {valid}$"):
            interp.load("toy/base", device=device)
    with pytest.raises(interp.LoadError, match=rf"'meta' holds no weights.*valid here: {valid}$"):
        interp.load("toy/base", device="meta")
    with pytest.raises(interp.LoadError, match="device_map 'meta'"):
        interp.load("toy/base", device_map="meta")


def test_folder_without_a_model_says_what_it_holds(tmp_path):
    from tests.conftest import build_tokenizer

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(interp.LoadError, match=r"no model in '.*empty': expected config.json and \*.safetensors/\*.bin \(found: nothing"):
        interp.load(str(empty))
    tok_only = tmp_path / "tok_only"
    build_tokenizer(tok_only)
    with pytest.raises(interp.LoadError, match=r"no model in '.*tok_only'.*\(found: .*tokenizer.json"):
        interp.load(str(tok_only))
    pair = interp.load_pair(base="toy/base", chat=str(tok_only))
    with pytest.raises(interp.LoadError, match="no model in"):
        next(iter(pair))  # before the base member's work, not after it


# -- quiet API -----------------------------------------------------------------------------------
def test_load_and_patch_sweep_print_no_progress_bar(toy, capsys):
    capsys.readouterr()
    interp.load("toy/base")
    metric = interp.patching.logit(5)
    prompt = "The capital of Poland is"
    interp.patching.patch_sweep(toy, prompt, prompt, metric, chunk_size=1, skip_unchanged=False)
    out, err = capsys.readouterr()
    assert out == "" and not any(bar in err for bar in ("Loading weights", "patching resid_pre", "it/s", "%|"))
    interp.patching.patch_sweep(toy, prompt, prompt, metric, chunk_size=1, skip_unchanged=False, progress=True)
    assert "patching resid_pre" in capsys.readouterr().err  # asked for: shown (so the check above can see one)


def test_run_repr_shows_shapes_not_tensors(lm_of):
    lm = lm_of("llama")
    run = lm.run(PROMPTS, capture=["resid_post"])
    text = repr(run)
    batch, seq = run.tokens.shape
    assert f"logits=[{batch}, {seq}, {lm.d_vocab}] float32" in text
    assert f"tokens=[{batch}, {seq}] int64" in text
    assert f"blocks.0.hook_resid_post: [{batch}, {seq}, {lm.d_model}] float32" in text
    assert f"{lm.n_layers} hooks" in text and "tensor(" not in text and len(text) < 1000
    assert "tensor(" not in repr(run.cache) and str(run) == text


def test_a_long_text_gives_no_tokenizer_indexing_warning():
    """Tokenising a text longer than the model's positions is how probes find items to truncate
    or skip; transformers' "will result in indexing errors" warning would only mislead there."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    lm = interp.load("toy/base")
    collect, logger = Collect(), logging.getLogger("transformers")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()  # conftest silences transformers; a user does not
    logger.addHandler(collect)
    try:
        ids = lm.tokenizer(" ".join(["the capital of france is paris ."] * 40))["input_ids"]
    finally:
        logger.removeHandler(collect)
        transformers.logging.set_verbosity(verbosity)
    assert len(ids) > lm.max_positions
    assert not [m for m in collect.messages if "indexing errors" in m], collect.messages
