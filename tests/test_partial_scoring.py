"""Partial scoring (WinoGrande / WSC): each option substituted into the text, only the shared
continuation after it scored; checked against a hand sum of the continuation's token
log-probs from the plain HF forward of each whole ``context + option + continuation``."""

import dataclasses

import numpy as np
import pytest
import torch

from probes.multiple_choice import fit_partial_item, score_items
from tasks.items import MCItem, build_fewshot
from tests.test_multiple_choice import FINAL_NORM

# Options of different token lengths; a continuation of several tokens; an item whose option
# starts the text (empty context: with this tokenizer, without BOS, the contexts share no token).
PARTIAL = [
    MCItem("w0", "t", "the capital of", [" france", " poland and spain"], 0, continuation=" is paris ."),
    MCItem("w1", "t", "i plan to visit", [" rome", " the city of berlin"], 1, continuation=" with you and they"),
    MCItem("w2", "t", "", ["paris", "warsaw madrid"], 0, continuation=" is the capital of france"),
]


def hand_partial(model, tok, norm, item: MCItem) -> list[np.ndarray]:
    """Per option, the log-prob of each continuation token: ``context + option`` then the
    continuation encoded whole, one forward of the whole sequence, log-softmax by hand at the
    positions before each continuation token; per block through the logit lens, then the output."""
    out = []
    for option in item.options:
        prefix = item.context + option
        ctx_ids = tok(prefix)["input_ids"]
        whole = tok(prefix + item.continuation)["input_ids"]
        cont = whole[len(ctx_ids):]
        assert ctx_ids == whole[:len(ctx_ids)] and cont
        with torch.no_grad():
            run = model(input_ids=torch.tensor([whole]), output_hidden_states=True)
            readouts = [model.get_output_embeddings()(norm(h[0])) for h in run.hidden_states[1:-1]] + [run.logits[0]]
        rows = torch.arange(len(ctx_ids) - 1, len(whole) - 1)
        out.append(np.array([[float(torch.log_softmax(x[r], -1)[t]) for r, t in zip(rows, cont)] for x in readouts]))
    return out


@pytest.mark.parametrize("method", ["kv", "naive"])
def test_partial_scores_equal_a_hand_sum_of_continuation_logprobs(lm, family, method):
    model, tok = lm.model, lm.tokenizer
    norm = model.get_submodule(FINAL_NORM[family])
    scores = score_items(lm, PARTIAL, layers="all", method=method, batch_size=2)
    for score, item in zip(scores, PARTIAL):
        hand = hand_partial(model, tok, norm, item)  # [option] -> [readout (blocks..., output), token]
        np.testing.assert_allclose(score.loglik(), [h[-1].sum() for h in hand], atol=1e-4, rtol=0)
        for layer in range(lm.n_layers - 1):
            np.testing.assert_allclose(score.loglik(layer), [h[layer].sum() for h in hand], atol=1e-4, rtol=0)
        for got, h in zip(score.token_logprobs, hand):
            np.testing.assert_allclose(got[score.row(None)], h[-1], atol=1e-4, rtol=0)
        # every option scores the same continuation tokens; acc_norm divides by one length
        assert len(set(score.n_tokens)) == 1 and len(set(score.n_chars)) == 1
        assert score.acc_norm() == score.acc()


def test_one_row_shares_the_common_prefix_and_leads_hold_the_rest(lm_of):
    lm = lm_of("llama")
    rows, cut = fit_partial_item(lm, PARTIAL[1])
    (ctx, scored, leads), = rows
    assert cut == 0 and ctx == lm.tokenizer("i plan to visit")["input_ids"]
    assert [len(lead) for lead in leads] == [1, 4] and scored[0] == scored[1]
    rows, _ = fit_partial_item(lm, PARTIAL[2])
    assert [len(scored) for _, scored, _ in rows] == [1, 1]  # no shared token: one row per option


def test_partial_is_not_option_scoring(lm_of):
    """The same text scored on its options (no continuation) gives other numbers."""
    lm = lm_of("llama")
    partial = score_items(lm, PARTIAL[:1])[0]
    plain = score_items(lm, [dataclasses.replace(PARTIAL[0], continuation=None)])[0]
    assert not np.allclose(partial.loglik(), plain.loglik(), atol=1e-3)


def test_partial_item_checks_and_fewshot_demonstration():
    with pytest.raises(Exception, match="continuation must be non-empty"):
        MCItem("x", "t", "a", [" b", " c"], 0, continuation="  ")
    with pytest.raises(Exception, match="empty context"):
        MCItem("x", "t", "", [" b", " c"], 0)
    assert PARTIAL[0].solved() == "the capital of france is paris ."
    shot = build_fewshot(PARTIAL, PARTIAL[1], 1, seed=0)
    demo = {"w0": PARTIAL[0].solved(), "w2": PARTIAL[2].solved()}[shot.meta["fewshot_ids"][0]]
    assert shot.context == demo + "\n\n" + PARTIAL[1].context and shot.continuation == PARTIAL[1].continuation
