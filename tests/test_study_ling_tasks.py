"""``python -W error -m studies.benchmarks --tasks wsc,winogrande,coqa,grice`` offline on the toy pair:
partial scoring and CoQA's generations in the rows equal the plain HF models run by hand, and the
summary / comparison hold what the rows say."""

from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from study_cli import rows_of, run_study_cli

import interp
from studies import benchmarks
from tasks.benchmarks import TASKS, coqa
from tests.test_partial_scoring import hand_partial

TASK_NAMES = ("wsc", "winogrande", "coqa", "grice")
NEW_TOKENS = 6
ARGS = ["--tasks", ",".join(TASK_NAMES), "--limit", "4", "--chat-template", "off,on", "--generate", "0",
        "--max-new-tokens", str(NEW_TOKENS), "--no-figures"]

cli = partial(run_study_cli, "studies.benchmarks")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ling")
    cli(*ARGS, "--out", str(out))
    return out, rows_of(out)


@pytest.fixture(scope="module")
def hf_pair():
    sources = {m: interp.PAIRS["toy"].source(m) for m in ("base", "chat")}
    return {m: (transformers.AutoModelForCausalLM.from_pretrained(s).eval(), transformers.AutoTokenizer.from_pretrained(s))
            for m, s in sources.items()}


def test_every_task_model_and_template_has_its_rows(run):
    _, rows = run
    keys = {(r["model"], r["task"], r["chat_template"], r["item"]) for r in rows}
    assert len(keys) == len(rows) == 2 * len(TASK_NAMES) * 2 * 4
    assert not any(r.get("skipped") for r in rows) and not any(r.get("truncated") for r in rows)  # fixtures fit


def test_partial_rows_equal_a_hand_sum_of_continuation_logprobs(run, hf_pair):
    _, rows = run
    items = {it.id: it for t in ("wsc", "winogrande") for it in TASKS[t](data="fixture", limit=4)}
    checked = 0
    for r in rows:
        if r["task"] not in ("wsc", "winogrande") or r["chat_template"]:
            continue
        model, tok = hf_pair[r["model"]]
        hand = hand_partial(model, tok, model.model.norm, items[r["item"]])  # [option] -> [readout, token]
        logprobs = np.array(r["logprobs"])  # [readout (final, 0..5), option]
        np.testing.assert_allclose(logprobs[0], [h[-1].sum() for h in hand], atol=1e-4, rtol=0)
        np.testing.assert_allclose(logprobs[1], [h[0].sum() for h in hand], atol=1e-4, rtol=0)
        assert r["n_tokens"] == [h.shape[1] for h in hand]
        assert r["acc"] == (int(np.argmax(logprobs[0])) == r["label"]) == r["acc_norm"]
        checked += 1
    assert checked == 2 * 2 * 4


def test_coqa_rows_are_greedy_answers_scored_by_the_official_rules(run, hf_pair):
    _, rows = run
    items = {it.id: it for it in coqa.load(data="fixture", limit=4)}
    coqa_rows = [r for r in rows if r["task"] == "coqa"]
    assert len(coqa_rows) == 2 * 2 * 4
    for r in coqa_rows:
        item = items[r["item"]]
        assert r["golds"] == item.answers
        assert r["answer"] == coqa.answer_of(r["generation"])
        assert (r["em"], r["f1"]) == pytest.approx(coqa.turn_scores(item.answers, r["answer"]))
        if r["chat_template"]:
            continue
        model, tok = hf_pair[r["model"]]
        ids, new = tok(item.context)["input_ids"], []
        with torch.no_grad():
            for _ in range(NEW_TOKENS):
                nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                new.append(nxt)
                if nxt == tok.eos_token_id:
                    break
        text = tok.decode(new, skip_special_tokens=True)
        for stop in coqa.STOP:
            text = text.split(stop, 1)[0]
        assert r["generation"] == text


def test_chat_template_renders_the_dialogue_history_as_turns():
    pair = interp.load_pair("toy")
    items = {"coqa": coqa.load(data="fixture", limit=2)}
    work = benchmarks.make_work(items, [0], [True], benchmarks.template_tokenizer(pair), seed=0)
    story = items["coqa"][0].context.split("\n\n")[0]
    assert work[1].item.context == (f"User : {story}\n\nWhere did the king live? Assistant : in a house by the lake "
                                    "User : What did he have? Assistant :")


def test_summary_and_comparison_hold_em_f1_and_accuracy(run):
    out, rows = run
    summary = pd.read_csv(out / "summary.csv")
    final = summary[summary.layer == "final"].set_index(["model", "task", "chat_template"])
    for model in ("base", "chat"):
        for tmpl in (False, True):
            got = [r for r in rows if r["model"] == model and r["task"] == "coqa" and r["chat_template"] == tmpl]
            assert final.loc[(model, "coqa", tmpl), "em"] == pytest.approx(np.mean([r["em"] for r in got]))
            assert final.loc[(model, "coqa", tmpl), "f1"] == pytest.approx(np.mean([r["f1"] for r in got]))
            assert np.isnan(final.loc[(model, "coqa", tmpl), "acc"])
            for task in ("wsc", "winogrande", "grice"):
                got = [r["acc"] for r in rows if r["model"] == model and r["task"] == task and r["chat_template"] == tmpl]
                assert final.loc[(model, task, tmpl), "acc"] == pytest.approx(np.mean(got))
    assert set(summary[summary.task == "coqa"].layer) == {"final"}  # no by-layer readout of a generation
    assert {"0", "5"} <= set(summary[summary.task == "wsc"].layer)
    comparison = pd.read_csv(out / "comparison.csv")
    assert {("coqa", "em"), ("coqa", "f1"), ("wsc", "acc"), ("grice", "acc")} <= set(zip(comparison.task, comparison.metric))


def test_calibration_refuses_generation_tasks(tmp_path):
    proc = run_study_cli("studies.calibration", "--tasks", "coqa", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "free generation" in proc.stderr


def test_generation_rows_score_the_answer_read_from_the_text(monkeypatch):
    """With generations fixed by hand (the toy pair's answers all score 0), the rows' em / f1 are
    the official scores of each generation's first line, and the summary and comparison average them."""
    import probes.generation

    items = coqa.load(data="fixture")[:3]  # golds: 4 each
    texts = {"base": ["by the lake\nQ: more", "a horse", "Queen!"], "chat": ["in a house by the lake", "book", "nobody"]}
    pair = interp.load_pair("toy")
    rows = []
    for member, lm in pair:
        monkeypatch.setattr(probes.generation, "generate", lambda lm, prompts, n, stop: texts[member][:len(prompts)])
        work = [benchmarks.Work("coqa", 0, False, it, i) for i, it in enumerate(items)]
        rows += benchmarks.score_chunk(lm, member, work, layers=None, max_new_tokens=4)
    # by hand (test_ling_tasks): the golds of item 1 all normalise to "horse and book" and those of
    # item 2 to "queen"; item 0's are "in house by lake" (twice), "by lake", "house by lake", so
    # "by the lake" scores EM 3/4, F1 (1 + 0.8 + 1 + 1) / 4, and the duplicated gold scores 1, 1.
    hand = {"base": [(0.75, 0.95), (0.0, 0.5), (1.0, 1.0)], "chat": [(1.0, 1.0), (0.0, 0.5), (0.0, 0.0)]}
    for r in rows:
        i = [it.id for it in items].index(r["item"])
        assert r["answer"] == texts[r["model"]][i].split("\n")[0]
        assert (r["em"], r["f1"]) == pytest.approx(hand[r["model"]][i])
    summary = benchmarks.summarize(rows, n_boot=50).set_index("model")
    for member in ("base", "chat"):
        assert summary.loc[member, "em"] == pytest.approx(np.mean([r["em"] for r in rows if r["model"] == member]))
        assert summary.loc[member, "f1"] == pytest.approx(np.mean([r["f1"] for r in rows if r["model"] == member]))
    f1 = benchmarks.compare(rows).set_index("metric").loc["f1"]
    assert f1["diff"] == pytest.approx(summary.loc["chat", "f1"] - summary.loc["base", "f1"]) and f1["n"] == 3
