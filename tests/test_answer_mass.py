"""Where the probability goes at an MC item's answer position: a hand computation with HF's forward."""

import numpy as np
import pytest
import torch

from probes.answer_mass import answer_mass
from probes.multiple_choice import score_items
from tasks.items import MCItem

ITEMS = [
    # options " paris" and " paris france" share their first token: its probability counts once
    MCItem("a", "t", "the capital of france is", [" paris", " warsaw madrid", " paris france"], 0),
    MCItem("b", "t", "i plan to visit the city of", [" one two", " red", " blue green"], 2),
]


def _hand(lm, item, k=5):
    """softmax of HF's own last-position logits of the context; option first tokens by hand."""
    tok = lm.tokenizer
    ids = tok(item.context, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        p = lm.model(input_ids=ids).logits[0, -1].double().softmax(-1)
    firsts = {tok(item.context + o)["input_ids"][ids.shape[1]] for o in item.options}
    mass = float(sum(p[i] for i in firsts))
    rest = p.clone()
    rest[list(firsts)] = -1
    top = rest.topk(k)
    return mass, firsts, [(int(i), float(v)) for v, i in zip(top.values, top.indices)]


@pytest.mark.parametrize("family_name", ["gpt2", "llama"])
def test_answer_mass_equals_hand_softmax(lm_of, family_name):
    lm = lm_of(family_name)
    scores = score_items(lm, ITEMS, layers="all", batch_size=2)  # unequal contexts in one forward
    for item, s in zip(ITEMS, scores):
        mass, firsts, top = _hand(lm, item)
        assert s.answer.option_mass == pytest.approx(mass, abs=1e-5)
        assert s.answer.other_mass == pytest.approx(1 - mass, abs=1e-5)
        assert [t for t, _ in s.answer.top_other] == [t for t, _ in top]
        np.testing.assert_allclose([p for _, p in s.answer.top_other], [p for _, p in top], atol=1e-6)
        assert not firsts & {t for t, _ in s.answer.top_other}
    # a shared first token is counted once: the mass is at most the sum of the option first-token probs
    first_lp = [float(np.exp(t[0][0])) for t in scores[0].token_logprobs]
    assert scores[0].answer.option_mass == pytest.approx(first_lp[0] + first_lp[1], abs=1e-5)
    assert scores[0].answer.option_mass < sum(first_lp) - 1e-6


def test_answer_mass_of_a_known_distribution():
    logits = torch.log(torch.tensor([0.5, 0.2, 0.2, 0.1]))
    m = answer_mass(logits, [1, 1, 3], top_k=2)
    assert m.option_mass == pytest.approx(0.3)
    assert m.top_other == [(0, pytest.approx(0.5)), (2, pytest.approx(0.2))]


def test_naive_method_has_no_answer_mass(lm_of):
    s = score_items(lm_of("gpt2"), ITEMS[:1], method="naive")[0]
    assert s.answer is None
