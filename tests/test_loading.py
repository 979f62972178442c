"""Loading: local folders, the pair registry, dtype, quantization and failures."""

import pytest
import torch

import interp
from interp.errors import LoadError
from interp.loading import Pair, load_pair, parse_dtype, quantization_config
from interp.registry import PAIRS, get_pair, resolve
from tests.conftest import PROMPTS, random_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    folders = {}
    for member, seed in (("base", 0), ("chat", 1)):
        folder = tmp_path_factory.mktemp(member)
        random_model("llama", seed=seed).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[member] = str(folder)
    return folders


def test_load_folder_equals_the_saved_model(saved):
    lm = interp.load(saved["base"])
    reference = random_model("llama", seed=0)
    ids = lm.to_tokens(PROMPTS[0])[0]
    torch.testing.assert_close(lm.run(PROMPTS[0]).logits, reference(ids).logits, atol=1e-6, rtol=0)
    assert lm.n_layers == 3 and lm.d_model == 64 and lm.tokenizer is not None


def test_dtype_option(saved):
    lm = interp.load(saved["base"], dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert lm.run(PROMPTS[0]).logits.dtype == torch.bfloat16
    with pytest.raises(LoadError, match="unknown dtype 'fp8'; valid: float32"):
        parse_dtype("fp8")


def test_custom_pair_loads_one_member_at_a_time(saved):
    pair = load_pair(base=saved["base"], chat=saved["chat"])
    seen = []
    for member, lm in pair:
        seen.append((member, lm.run(PROMPTS[0]).logits[0, -1, :3].clone()))
    assert [m for m, _ in seen] == ["base", "chat"]
    assert not torch.allclose(seen[0][1], seen[1][1])  # two different models really were loaded


def test_pair_with_mismatched_tokenizers_raises(saved, tmp_path):
    other = tmp_path / "other"
    random_model("llama", seed=2).save_pretrained(other)
    from tests.conftest import build_tokenizer
    tok = build_tokenizer(tmp_path / "tok")
    tok.add_tokens(["extra_token"])
    tok.save_pretrained(other)
    with pytest.raises(LoadError, match="tokenizers differ"):
        for _ in Pair.custom(saved["base"], str(other)):
            pass


def test_registry_resolution_and_unknown_pair():
    assert resolve("llama2-7b/chat") == "meta-llama/Llama-2-7b-chat-hf"
    assert resolve("toy/base").endswith("models/toy/base")
    assert resolve("some/hub-id") == "some/hub-id"
    assert {"toy", "llama2-7b", "llama2-13b", "llama2-70b"} <= set(PAIRS)
    with pytest.raises(LoadError, match=r"unknown pair 'llama9'; known pairs: toy, llama2-7b"):
        get_pair("llama9")
    with pytest.raises(LoadError, match="no member 'sft'"):
        PAIRS["llama2-7b"].source("sft")
    with pytest.raises(LoadError, match="needs both --base and --chat"):
        load_pair(base="x")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(LoadError, match="no model folder"):
        interp.load(str(tmp_path / "nope"))


def test_unreachable_hub_model_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    # The environment variable is read at import; the constant is what the hub client checks.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LoadError, match=r"could not load 'meta-llama/Llama-2-7b-hf'.*gated.*local folder"):
        interp.load("llama2-7b/base")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_quantization_without_cuda_says_so(saved):
    with pytest.raises(LoadError, match="4bit quantization through bitsandbytes needs a CUDA GPU"):
        interp.load(saved["base"], quantization="4bit")
    with pytest.raises(LoadError, match="unknown quantization '3bit'; valid: 4bit, 8bit"):
        quantization_config("3bit")
