"""Continuation log-probs: lm-evaluation-harness tokenisation, hand computation, readouts."""

import pytest
import torch

from probes.logprobs import continuation_logprobs, encode_pair, split_whitespace
from probes.readouts import resolve_layers


class CharTokenizer:
    """One token per character (so whitespace placement changes the tokens)."""

    bos_token_id = None
    eos_token_id = 0

    def __call__(self, text):
        return {"input_ids": [ord(c) for c in text]}


def test_trailing_space_moves_to_the_continuation():
    assert split_whitespace("Answer: ", "yes") == ("Answer:", " yes")
    ctx, cont = encode_pair(CharTokenizer(), "ab ", "c")
    assert ctx == [ord("a"), ord("b")]
    assert cont == [ord(" "), ord("c")]


def test_empty_context_starts_from_the_prefix_token():
    ctx, cont = encode_pair(CharTokenizer(), "", "hi")
    assert ctx == [0] and cont == [ord("h"), ord("i")]


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_logprobs_equal_hand_computation(lm_of, family):
    lm = lm_of(family)
    contexts = ["the capital of france is", "q : what is the capital of poland ? a :"]
    conts = [" paris", " warsaw and berlin"]
    scored = continuation_logprobs(lm, contexts, conts)
    for ctx, cont, s in zip(contexts, conts, scored):
        c_ids = lm.tokenizer(ctx)["input_ids"]
        full = lm.tokenizer(ctx + cont)["input_ids"]
        targets = full[len(c_ids):]
        assert s.tokens == targets and len(targets) == len(cont.split())
        with torch.no_grad():
            logits = lm.model(torch.tensor([full])).logits[0]
        logp = logits.log_softmax(-1)
        hand = torch.stack([logp[len(c_ids) + j - 1, t] for j, t in enumerate(targets)])
        torch.testing.assert_close(s.token_logprobs[0], hand, atol=1e-5, rtol=0)
        assert s.sum() == pytest.approx(float(hand.sum()), abs=1e-4)
        assert s.mean() == pytest.approx(float(hand.mean()), abs=1e-5)
        greedy = [int(logits[len(c_ids) + j - 1].argmax()) == t for j, t in enumerate(targets)]
        assert s.is_greedy() == all(greedy)


def test_last_layer_lens_equals_final_readout(lm_of):
    lm = lm_of("llama")
    s = continuation_logprobs(lm, ["the capital of spain is"], [" madrid or rome"], layers="all")[0]
    assert s.layers == [None, 0, 1, 2]
    torch.testing.assert_close(s.token_logprobs[s.layers.index(2)], s.token_logprobs[0], atol=1e-5, rtol=0)
    assert not torch.allclose(s.token_logprobs[1], s.token_logprobs[0], atol=1e-3)  # early layers differ


def test_layer_specs_are_validated(lm_of):
    lm = lm_of("gpt2")
    assert resolve_layers(lm, None) == [None]
    assert resolve_layers(lm, -1) == [2]
    with pytest.raises(ValueError, match="out of range"):
        resolve_layers(lm, 3)
    with pytest.raises(ValueError, match="unknown layer spec"):
        resolve_layers(lm, "some")
