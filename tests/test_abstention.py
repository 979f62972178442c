"""probes.abstention and the scoring of studies.idk: the answer-vs-abstain readout against a
hand computation with the plain HF model, free answers mapped on hand examples, and the
risk-coverage curve and its area against hand values and a brute force over tie orders."""

import itertools
import math

import numpy as np
import pytest
import torch
import transformers

import interp
from interp.errors import InterpError
from probes.abstention import aurc, classify_generation, preference, risk_coverage
from probes.chat import chat_prompt
from studies import idk as study
from tasks.idk import load


# -- scoring against the model's own forward ---------------------------------------------------------
def _hand_logprob(model, tok, context: str, response: str) -> tuple[float, int]:
    """log p(response | context) summed over the response's tokens: the whole sequence run
    once through the HF model, each response token read at the position before it."""
    ctx = tok(context)["input_ids"]
    whole = tok(context + response)["input_ids"]
    assert whole[:len(ctx)] == ctx
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([whole])).logits[0].double()
    lp = logits.log_softmax(-1)
    return sum(float(lp[p - 1, whole[p]]) for p in range(len(ctx), len(whole))), len(whole) - len(ctx)


@pytest.fixture(scope="module")
def toy_chat():
    source = interp.PAIRS["toy"].source("chat")
    return (interp.load("toy/chat"), transformers.AutoModelForCausalLM.from_pretrained(source).eval(),
            transformers.AutoTokenizer.from_pretrained(source))


def test_scoring_equals_the_models_forward(toy_chat):
    lm, model, tok = toy_chat
    items = [it for it in load("toy") if it.id in ("idk-toy-Poland", "idk-toy-Albania", "idk-toy-Polania",
                                                    "idk-toy-Zorvania")]
    assert len(items) == 4
    work = study.make_work(items, (False, True), tok)
    rows = study.score_chunk(lm, "chat", work, generate_n=0, max_new_tokens=4, truncate="left")
    for w, row in zip(work, rows):
        assert w.context == (chat_prompt(tok, w.item.question) if w.chat_template else w.item.prompt)
        hand = [_hand_logprob(model, tok, w.context, r) for r in w.item.responses()]
        lp = np.array([h[0] for h in hand])
        nt = np.array([h[1] for h in hand])
        np.testing.assert_allclose(row["logprobs"], lp, atol=2e-4)
        assert list(row["n_tokens"]) == list(nt)
        k = w.item.n_candidates
        assert row["margin"] == pytest.approx(lp[k:].max() - lp[:k].max(), abs=2e-4)
        assert row["margin_per_token"] == pytest.approx((lp / nt)[k:].max() - (lp / nt)[:k].max(), abs=2e-4)
        p = np.exp(lp[:k] - lp[:k].max())
        assert row["confidence"] == pytest.approx(p.max() / p.sum(), abs=2e-4)
        assert row["choice"] == int(np.argmax(lp[:k]))
        assert row["abstains"] == (row["margin"] > 0)
        assert row["correct"] == (w.item.answerable and row["choice"] == 0)
        assert "generation" not in row  # generate_n=0


def test_preference_by_hand():
    lp = np.array([-2.0, -1.0, -5.0, -3.0, -0.5])  # three answers, two abstentions
    nt = np.array([1, 2, 1, 4, 1])
    p = preference(lp, nt, 3)
    assert p.answer_logprob == -1.0 and p.abstain_logprob == -0.5 and p.margin == 0.5 and p.abstains
    assert p.margin_per_token == pytest.approx(-0.5 - (-0.5))  # answers per token: -2, -0.5, -5
    assert p.choice == 1
    assert p.confidence == pytest.approx(math.exp(-1) / (math.exp(-2) + math.exp(-1) + math.exp(-5)))
    q = preference(np.array([-1.0, -1.0, -3.0]), np.array([1, 1, 1]), 2)
    assert q.choice == 0 and q.confidence == pytest.approx(0.5) and not q.abstains
    for bad in (0, 5):
        with pytest.raises(InterpError, match="n_candidates"):
            preference(lp, nt, bad)
    with pytest.raises(InterpError, match="equal length"):
        preference(lp, nt[:3], 2)


# -- free answers -----------------------------------------------------------------------------------------
CANDIDATES = ["Paris", "Lyon", "New York"]


@pytest.mark.parametrize("text, kind, candidate", [
    ("I don't know.", "abstain", None),
    (" Sorry , I cannot help with that .", "abstain", None),
    ("Paris.", "answer", 0),
    ("Lyon, not Paris.", "answer", 1),
    ("new york city", "answer", 2),
    ("Berlin.", "answer", None),
    ("Paris? Well, I am not sure.", "answer", 0),
    ("I'm not sure, maybe Lyon.", "abstain", None),
    ("There is no such country.", "abstain", None),
    ("", "empty", None),
    (" . ", "empty", None),
])
def test_generation_mapping(text, kind, candidate):
    out = classify_generation(text, CANDIDATES, [" I don't know."])
    assert (out.kind, out.candidate) == (kind, candidate)


def test_generation_mapping_longer_form_wins():
    assert classify_generation("No one knows.", ["yes", "no"]).kind == "abstain"
    assert classify_generation("No.", ["yes", "no"]).candidate == 1
    # an item's own abstention string counts even when no default phrase matches it
    assert classify_generation("Ask me later .", ["x"], [" Ask me later ."]).kind == "abstain"
    assert classify_generation("Ask me later .", ["x"], phrases=()).kind == "answer"


# -- risk-coverage ----------------------------------------------------------------------------------------
def test_risk_coverage_by_hand():
    curve = risk_coverage(np.array([0.3, 0.8, 0.9, 0.8]), np.array([False, True, True, False]))
    np.testing.assert_allclose(curve.threshold, [0.9, 0.8, 0.3])
    assert list(curve.n_answered) == [1, 3, 4]
    np.testing.assert_allclose(curve.coverage, [0.25, 0.75, 1.0])
    np.testing.assert_allclose(curve.risk, [0.0, 1 / 3, 0.5])
    rec = curve.to_records(model="m")[1]
    assert rec["abstain_rate"] == 0.25 and rec["accuracy"] == pytest.approx(2 / 3) and rec["model"] == "m"
    # k=1: 0; the tie (one error in two) at k=2: 0.5/2, k=3: 1/3; k=4: 2/4
    assert aurc(np.array([0.3, 0.8, 0.9, 0.8]), np.array([0, 1, 1, 0])) == pytest.approx((0 + 0.25 + 1 / 3 + 0.5) / 4)


def _aurc_no_ties(order_correct) -> float:
    wrong = np.cumsum(1 - np.asarray(order_correct, dtype=float))
    return float(np.mean(wrong / np.arange(1, len(wrong) + 1)))


def test_aurc_is_the_mean_over_tie_orders():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 7))
        score = rng.integers(0, 3, n).astype(float)
        correct = rng.random(n) < 0.5
        values = []
        for perm in itertools.permutations(range(n)):  # every order that answers higher scores first
            order = list(perm)
            if all(score[order[i]] >= score[order[i + 1]] for i in range(n - 1)):
                values.append(_aurc_no_ties(correct[order]))
        assert aurc(score, correct) == pytest.approx(np.mean(values))


def test_risk_coverage_errors():
    with pytest.raises(InterpError, match="equal length"):
        risk_coverage(np.array([0.1, 0.2]), np.array([True]))
    with pytest.raises(InterpError, match="finite"):
        risk_coverage(np.array([np.nan]), np.array([True]))
    with pytest.raises(InterpError, match="0/1"):
        risk_coverage(np.array([0.1]), np.array([2]))
