"""Multiple-choice scoring: KV reuse equals the naive way for every family, metrics, generation."""

import numpy as np
import pytest
import torch

from probes.generation import generate, map_to_option
from probes.multiple_choice import MCScore, option_length, score_items
from tasks.items import MCItem
from tests.conftest import harness_loglik

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


# HF's own name of each family's final norm, for a hand logit lens independent of our adapter rows.
FINAL_NORM = {"gpt2": "transformer.ln_f", "gptj": "transformer.ln_f", "llama": "model.norm",
              "mistral": "model.norm", "gpt_neox": "gpt_neox.final_layer_norm",
              "gpt_neox_sequential": "gpt_neox.final_layer_norm"}
# (context, choices) as lm-evaluation-harness sees them, and the delimiter joining them; the
# item's options are delimiter + choice, and acc_norm divides by len(choice).
HARNESS = [("the capital of france is", " ", ["paris", "warsaw madrid", "rome italy red"]),
           ("q : what is the capital of poland ? a : ", "", ["warsaw", "berlin"]),
           ("i plan to visit the city of", " ", ["one two three four", "red", "blue green"])]


@pytest.mark.parametrize("method", ["kv", "naive"])
def test_scores_equal_the_hf_model_on_each_whole_sequence(lm, family, method):
    model, tok = lm.model, lm.tokenizer
    norm = model.get_submodule(FINAL_NORM[family])
    items = [MCItem(str(i), "t", ctx, [delim + c for c in choices], label=len(choices) - 1)
             for i, (ctx, delim, choices) in enumerate(HARNESS)]
    scores = score_items(lm, items, layers="all", method=method, batch_size=2)
    assert [s.item_id for s in scores] == ["0", "1", "2"]
    for score, item, (_, _, choices) in zip(scores, items, HARNESS):
        oracle = [harness_loglik(model, tok, norm, item.context, option) for option in item.options]
        final = np.array([o["by_layer"][-1] for o in oracle])
        chars = np.array([len(c) for c in choices])
        np.testing.assert_allclose(score.loglik(), final, atol=1e-4, rtol=0)
        for layer in range(lm.n_layers):
            np.testing.assert_allclose(score.loglik(layer), [o["by_layer"][layer] for o in oracle], atol=1e-4, rtol=0)
        np.testing.assert_array_equal(score.n_tokens, [o["n_tokens"] for o in oracle])
        np.testing.assert_array_equal(score.n_chars, chars)  # the harness's len(choice), delimiter excluded
        np.testing.assert_array_equal(score.greedy[score.row(None)], [o["greedy"] for o in oracle])
        np.testing.assert_allclose(score.probs(), np.exp(final) / np.exp(final).sum(), atol=1e-6, rtol=0)
        assert score.pred() == int(np.argmax(final)) and score.acc() == (np.argmax(final) == item.label)
        assert score.pred_norm() == int(np.argmax(final / chars))
        assert score.acc_norm() == (np.argmax(final / chars) == item.label)
    assert [len(s.n_tokens) for s in scores] == [3, 2, 3]


def test_acc_norm_by_characters_is_not_by_tokens_or_unnormalised(lm_of):
    """On these items and models, dividing by characters picks other options than not
    dividing or dividing by tokens, so the oracle test above tells the three apart."""
    differs_raw = differs_tokens = 0
    for family in FINAL_NORM:
        lm = lm_of(family)
        items = [MCItem(str(i), "t", ctx, [delim + c for c in choices], 0) for i, (ctx, delim, choices) in enumerate(HARNESS)]
        for score, (_, _, choices) in zip(score_items(lm, items), HARNESS):
            by_chars = np.argmax(score.loglik() / np.array([len(c) for c in choices]))
            differs_raw += by_chars != np.argmax(score.loglik())
            differs_tokens += by_chars != np.argmax(score.loglik() / score.n_tokens)
            assert score.pred_norm() == by_chars
    assert differs_raw > 0 and differs_tokens > 0


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
