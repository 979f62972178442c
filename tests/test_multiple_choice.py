"""Multiple-choice scoring: KV reuse equals the naive way for every family, metrics, generation."""

import numpy as np
import pytest
import torch

from probes.generation import generate, map_to_option
from probes.multiple_choice import MCScore, option_length, score_items
from tasks.items import MCItem

ITEMS = [
    MCItem("a", "t", "the capital of france is", [" paris", " warsaw madrid", " rome italy red"], 0),
    MCItem("b", "t", "q : what is the capital of poland ? a : ", ["warsaw", "berlin"], 0),  # trailing space
    MCItem("c", "t", "i plan to visit the city of", [" one two three four", " red", " blue green"], 2),
]


def test_kv_reuse_equals_naive_final_and_by_layer(lm):
    kv = score_items(lm, ITEMS, layers="all", method="kv", batch_size=2)  # contexts of unequal length batched
    naive = score_items(lm, ITEMS, layers="all", method="naive", batch_size=1)
    for a, b in zip(kv, naive):
        assert a.layers == [None, 0, 1, 2]
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4, rtol=0)
        for ta, tb in zip(a.token_logprobs, b.token_logprobs):
            np.testing.assert_allclose(ta, tb, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(a.greedy, b.greedy)
        # the last block's lens is the final readout; an early block is not
        np.testing.assert_allclose(a.loglik(2), a.loglik(None), atol=1e-4, rtol=0)
        assert not np.allclose(a.loglik(0), a.loglik(None), atol=1e-3)
    assert [len(t[0]) for t in kv[0].token_logprobs] == [1, 2, 3]


def test_item_scores_equal_continuation_scores(lm_of):
    from probes.logprobs import continuation_logprobs

    lm = lm_of("mistral")
    score = score_items(lm, ITEMS[1:2], layers=None)[0]
    direct = continuation_logprobs(lm, [ITEMS[1].context] * 2, ITEMS[1].options)
    np.testing.assert_allclose(score.loglik(), [d.sum() for d in direct], atol=1e-4, rtol=0)
    np.testing.assert_array_equal(score.n_tokens, [d.n_tokens for d in direct])


def test_acc_norm_divides_by_characters():
    assert option_length(" yes") == 3 and option_length("yes") == 3 and option_length("  a") == 2
    score = MCScore("x", 1, [None], np.array([[-4.0, -6.0]]), [], np.zeros((1, 2), bool),
                    n_tokens=np.array([1, 1]), n_chars=np.array([2, 6]))
    assert score.pred() == 0 and not score.acc()          # -4 > -6
    assert score.pred_norm() == 1 and score.acc_norm()    # -4/2 = -2 < -6/6 = -1
    np.testing.assert_allclose(score.probs(), [1 / (1 + np.exp(-2)), 1 / (1 + np.exp(2))])
    assert score.p_true() == pytest.approx(1 / (1 + np.exp(-2)))


def test_scored_items_record_character_lengths(lm_of):
    score = score_items(lm_of("gpt2"), ITEMS[:1])[0]
    np.testing.assert_array_equal(score.n_chars, [5, 13, 14])
    assert score.probs().sum() == pytest.approx(1.0)
    expected = np.argmax(score.loglik() / np.array([5, 13, 14]))
    assert score.pred_norm() == expected


def test_map_to_option_first_mention():
    assert map_to_option("I think it is Paris, not Rome.", [" Rome", " Paris"]) == 1
    assert map_to_option("new york city", ["new", "new york"]) == 1   # same start: longer form
    assert map_to_option("Answer: (B) Paris", [[" A", "Rome"], [" B", "Paris"]]) == 1
    assert map_to_option("no idea", [" yes", " maybe"]) is None
    assert map_to_option("yesterday", [" yes"]) is None             # whole words only


def test_generate_is_greedy_and_batch_invariant(lm_of):
    lm = lm_of("llama")
    prompts = ["the capital of france is", "q : what is the capital of poland ? a :"]
    texts = generate(lm, prompts, max_new_tokens=3, stop=())
    for prompt, text in zip(prompts, texts):
        ids = lm.tokenizer(prompt)["input_ids"]
        for _ in range(3):  # greedy by hand, one prompt at a time
            with torch.no_grad():
                ids.append(int(lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
        expected = lm.tokenizer.decode(ids[-3:], skip_special_tokens=True)
        assert text == expected
