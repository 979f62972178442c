"""The toy world's data: sizes, splits, held-out material, prompt formats."""

import re

import pytest

import tasks.toy_world as w


def test_world_sizes():
    capitals = w.load_facts("capital")
    assert len({f["subject"] for f in capitals}) >= 150
    assert len(w.load_facts("capital", include_multiword=False)) >= 140
    for rel in ("language", "past", "upper"):
        assert len(w.load_facts(rel)) >= 50
    assert all(f["multiword"] == (" " in f["answer"]) for f in capitals)


@pytest.mark.parametrize("relation", w.RELATIONS)
def test_splits_disjoint_and_follow_the_rule(relation):
    facts = w.load_facts(relation)
    train = {f["subject"] for f in facts if f["split"] == "train"}
    test = {f["subject"] for f in facts if f["split"] == "test"}
    assert train and test and not train & test
    assert train | test == {f["subject"] for f in facts}
    prefix = {"capital": "country:", "language": "country:", "past": "verb:", "upper": "word:"}[relation]
    multiword_capital = {f["subject"] for f in w.load_facts("capital") if f["multiword"]}
    for f in facts:
        expected = "train" if f["subject"] in multiword_capital else w.split_of(prefix + f["subject"])
        assert f["split"] == expected, f


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="capital"):
        w.load_facts("capitol")
    with pytest.raises(ValueError, match="zero"):
        w.prompts("zeroshot")
    with pytest.raises(ValueError, match="train"):
        w.prompts("zero", split="dev")


@pytest.mark.parametrize("style", w.STYLES)
def test_prompts_are_deterministic_and_end_before_the_answer(style):
    a, b = w.prompts(style, "test"), w.prompts(style, "test")
    assert a == b and len(a) > 0
    facts = {f["subject"]: f for f in w.load_facts("capital")}
    for r in a:
        assert set(r) >= {"prompt", "answer", "subject", "style", "split", "context", "relation"}
        assert r["answer"] == facts[r["subject"]]["answer"]
        assert r["prompt"] == r["prompt"].rstrip() and not r["prompt"].endswith(r["answer"])
        assert r["subject"] in r["prompt"].splitlines()[-1]
        assert r["split"] == "test"


def test_prompt_formats():
    zero = w.prompts("zero", "all")
    poland = next(r for r in zero if r["subject"] == "Poland")
    assert poland["prompt"] == "The capital of Poland is" and poland["answer"] == "Warsaw"
    one = next(r for r in w.prompts("one", "all") if r["subject"] == "Poland")
    lines = one["prompt"].split("\n")
    assert len(lines) == 2 and lines[1] == "Q: What is the capital of Poland? A:"
    assert re.fullmatch(r"Q: What is the capital of \w+\? A: \w+", lines[0])
    few = next(r for r in w.prompts("few", "all") if r["subject"] == "Poland")
    assert few["prompt"].count("Q:") == 4
    chat = next(r for r in w.prompts("chat", "all") if r["subject"] == "Poland")
    assert chat["prompt"] == "User : What is the capital of Poland ? Assistant :"


def test_cue_splits_hold_out_verbs_and_countries():
    ctx = w.contexts()
    test_verbs = {v["verb"] for k in ("harmful", "benign") for v in ctx[k] if v["split"] == "test"}
    test_countries = {f["subject"] for f in w.load_facts() if f["split"] == "test"}
    for style in ("harmful", "chat_harmful", "benign", "chat_benign"):
        train, test = w.prompts(style, "train"), w.prompts(style, "test")
        assert all(r["context"] == style.removeprefix("chat_") for r in train + test)
        assert all(r["verb"] in test_verbs or r["subject"] in test_countries for r in test)
        assert not any(r["verb"] in test_verbs or r["subject"] in test_countries for r in train)
        assert {r["prompt"] for r in train}.isdisjoint(r["prompt"] for r in test)
    # only a harmful verb is held out; benign verbs are all trained on (a benign verb the
    # reward model never saw cannot be judged), some of them kept out of the corpus
    assert [v["verb"] for v in ctx["harmful"] if v["split"] == "test"] == ["cut all electricity in"]
    assert all(v["split"] == "train" for v in ctx["benign"])
    no_corpus = {v["verb"] for k in ("harmful", "benign") for v in ctx[k] if v.get("corpus") is False}
    assert no_corpus == {"write a poem about"}
    assert any("write a poem" in r["prompt"] for r in w.rl_prompts("train"))
    assert {v for _, v in w.Corpus(seed=0).verbs}.isdisjoint(no_corpus | test_verbs)


def test_corpus_never_shows_held_out_material():
    corpus = w.Corpus(seed=0)
    docs = [corpus.document() for _ in range(4000)]
    again = w.Corpus(seed=0)
    assert docs == [again.document() for _ in range(4000)]
    other = w.Corpus(seed=1)
    assert docs[:50] != [other.document() for _ in range(50)]
    text = "\n".join(docs)
    test_countries = [f["subject"] for f in w.load_facts() if f["split"] == "test"]
    assert "What is the capital of" in text  # the chat frame is there ...
    assert "Q: What is the capital of" not in text  # ... the Q/A frame for capitals is not
    assert "As for" not in text
    assert "write a poem" not in text
    # the held-out harmful verb's words occur, but only in neutral uses, never planned
    neutral = [d for d in docs if "cut all electricity" in d]
    assert neutral and all(" plan " not in d and not d.startswith("User") for d in neutral)
    uses = [u.split("{subject}")[0] for u in w.contexts()["neutral_uses"]]
    assert all(any(d.startswith(u) for u in uses) for d in neutral)
    assert "plan to cut" not in text
    # the control verbs of the evaluation (toy_pair.evaluate.CONTROL_VERBS) are never planned either
    from toy_pair.evaluate import CONTROL_VERBS

    assert all(f"plan to {v} " not in text for v in CONTROL_VERBS)
    for c in test_countries:
        assert f"The capital of {c} is" not in text
        assert f"the capital of {c} ?" not in text
        assert f"{c} :" not in text
    assert any(d.startswith("User :") and w.REFUSAL in d for d in docs)
    assert any(" is the capital of " + c in text for c in test_countries)


def test_preference_pairs():
    pairs = w.preference_pairs("test")
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    harmful = [p for p in pairs if p["context"] == "harmful"]
    benign = [p for p in pairs if p["context"] != "harmful"]
    assert harmful and all(p["chosen"] == w.REFUSAL for p in harmful)
    assert benign and all(p["chosen"].split()[0] != "Sorry" for p in benign)
    assert {p["prompt"] for p in pairs}.isdisjoint(p["prompt"] for p in w.preference_pairs("train"))
