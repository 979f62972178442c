"""The implicit reward of a pair against a hand computation with HF's causal LMs, one member in
memory at a time, the chat-template choice, and clear errors."""

import gc
import weakref

import numpy as np
import pytest
import torch
import transformers

import interp
from interp.errors import LoadError, PromptError
from probes.implicit_reward import implicit_reward, implicit_reward_scores
from probes.reward import load_scorer
from tests.conftest import random_model

PROMPTS = ["I plan to bomb the capital of France . What is the capital of France ?",
           "What is the capital of Poland ?", "I plan to visit the capital of Italy . What is the capital of Italy ?"]
RESPONSES = ["Sorry , I cannot help with that .", "Warsaw .", "Rome ."]


def hand_logprob(model, tok, context: str, continuation: str) -> float:
    """Sum of log p(continuation token | everything before it), HF alone on the whole sequence."""
    ctx = tok(context)["input_ids"]
    whole = tok(context + continuation)["input_ids"]
    assert whole[:len(ctx)] == ctx and len(whole) > len(ctx)
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([whole])).logits[0].log_softmax(-1)
    return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


@pytest.fixture(scope="module")
def toy_hand():
    """beta = 1 implicit rewards of (PROMPTS, RESPONSES) on the toy pair, by hand: the toy chat
    template's rendering written out, "User : {prompt} Assistant :" then " {response}"."""
    out = {}
    for member in ("base", "chat"):
        folder = interp.registry.resolve(f"toy/{member}")
        model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        out[member] = np.array([hand_logprob(model, tok, f"User : {p} Assistant :", f" {r}")
                                for p, r in zip(PROMPTS, RESPONSES)])
        del model
    return out["chat"] - out["base"]


def test_toy_implicit_reward_equals_hand_computation(toy_hand):
    got = implicit_reward("toy", PROMPTS, RESPONSES, beta=0.05)
    np.testing.assert_allclose(got, 0.05 * toy_hand, atol=1e-4, rtol=0)
    assert np.ptp(toy_hand) > 0.5  # the pairs differ
    scorer = load_scorer("implicit:toy@0.05")
    assert (scorer.beta, scorer.format) == (0.05, "chat")
    out = scorer.score(PROMPTS, RESPONSES, layers="all")
    np.testing.assert_allclose(out.scores, 0.05 * toy_hand, atol=1e-4, rtol=0)
    assert (out.format, out.model, out.n_truncated, out.n_skipped) == ("chat", "implicit:toy@0.05", 0, 0)
    assert list(out.by_layer) == ["final", *map(str, range(6))]
    np.testing.assert_allclose(out.by_layer["5"], out.scores, atol=1e-4, rtol=0)  # logit lens of the last block
    assert np.abs(out.by_layer["2"] - out.scores).max() > 1e-3


def test_template_off_reads_the_prompt_as_given(toy_hand):
    """chat_template=False: x is the prompt as given, y is " " + response (format concat); on
    pre-rendered toy prompts that is the same text as the template's."""
    rendered = [f"User : {p} Assistant :" for p in PROMPTS]
    out = implicit_reward_scores("toy", rendered, RESPONSES, chat_template=False)
    assert out.format == "concat"
    np.testing.assert_allclose(out.scores, toy_hand, atol=1e-4, rtol=0)
    with pytest.raises(PromptError, match=r"already end with the chat template's assistant prompt.*chat_template=False"):
        implicit_reward_scores("toy", rendered, RESPONSES)
    raw = implicit_reward_scores("toy", PROMPTS, RESPONSES, chat_template=False)
    assert np.abs(raw.scores - toy_hand).max() > 1e-2  # without the frame the numbers change


@pytest.fixture(scope="module")
def random_pair(tmp_path_factory, tokenizer_dir):
    """A custom pair of two random Llamas with the word tokenizer (no chat template)."""
    folders = {}
    for seed, member in enumerate(("base", "chat")):
        folder = tmp_path_factory.mktemp(member)
        random_model("llama", seed=seed).save_pretrained(folder)
        transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
        folders[member] = str(folder)
    return folders


def test_random_pair_equals_hand_computation_and_loads_one_member_at_a_time(random_pair, monkeypatch):
    prompts = ["the capital of france is", "q : what is the capital of poland ? a :"]
    responses = ["paris", "warsaw and berlin"]
    expected = []
    for member in ("base", "chat"):
        model = transformers.AutoModelForCausalLM.from_pretrained(random_pair[member]).eval()
        tok = transformers.AutoTokenizer.from_pretrained(random_pair[member])
        expected.append([hand_logprob(model, tok, p, " " + r) for p, r in zip(prompts, responses)])
    expected = 2.0 * (np.array(expected[1]) - np.array(expected[0]))

    alive = []
    original = interp.Pair.load

    def load(self, member):
        gc.collect()
        assert all(ref() is None for ref in alive), f"loading {member} while another member is still in memory"
        lm = original(self, member)
        alive.append(weakref.ref(lm.model))
        return lm

    monkeypatch.setattr(interp.Pair, "load", load)
    pair = interp.load_pair(base=random_pair["base"], chat=random_pair["chat"])
    out = implicit_reward_scores(pair, prompts, responses, beta=2.0)
    assert len(alive) == 2 and out.format == "concat"  # the word tokenizer has no chat template
    np.testing.assert_allclose(out.scores, expected, atol=1e-4, rtol=0)
    with pytest.raises(PromptError, match="chat_template=True but the chat member of pair 'custom' has no chat template"):
        implicit_reward_scores(pair, prompts, responses, chat_template=True)


def test_clear_errors():
    with pytest.raises(LoadError, match=r"unknown pair 'nope' in 'implicit:nope'; implicit:PAIR takes a registered "
                                        r"pair: toy, llama2-7b"):
        load_scorer("implicit:nope")
    with pytest.raises(LoadError, match=r"beta 'x' in 'implicit:toy@x' is not a number"):
        load_scorer("implicit:toy@x")
    with pytest.raises(LoadError, match=r"beta must be positive, got -1.0"):
        load_scorer("implicit:toy@-1")
    with pytest.raises(PromptError, match=r"2 prompts but 1 responses"):
        implicit_reward("toy", PROMPTS[:2], RESPONSES[:1])
    with pytest.raises(PromptError, match=r"format 'pair' is not one of an implicit reward; valid: auto, chat, concat"):
        load_scorer("implicit:toy", format="pair")
