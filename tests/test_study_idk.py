"""``python -W error -m studies.idk`` end to end on the toy pair (a few items per category):
files, the tables against hand computations from the rows, resume, dropped items counted,
paired statistics, and bad input as one-line errors."""

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest
from study_cli import rows_of, run_study_cli

import interp
from figures._save import MODEL_COLORS
from studies import idk as study
from tasks.idk import load
from tests.conftest import assert_figure_files

LIMIT = 4
cli = partial(run_study_cli, "studies.idk")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("idk") / "run"
    proc = cli("--limit", str(LIMIT), "--n-boot", "200", "--out", str(out))
    return out, proc


def test_files_and_rows(run):
    out, proc = run
    for name in ("results.jsonl", "summary.csv", "selective.csv", "abstention_curve.csv", "comparison.csv",
                 "meta.json", "fingerprint.json"):
        assert (out / name).is_file(), name
    rows = rows_of(out)
    assert len(rows) == 2 * 2 * 2 * LIMIT  # models x templates x (known, fictional) x limit
    assert {(r["model"], r["chat_template"]) for r in rows} == {(m, t) for m in ("base", "chat") for t in (False, True)}
    assert all("generation" in r and r["generated"] in ("answer", "abstain", "empty") for r in rows)
    # each model whose bars have height shows its colour (on the toy pair the chat model may
    # abstain on none of the first items: its bars are then all zero-height)
    from figures.abstention import MEASURES

    summary = pd.read_csv(out / "summary.csv")
    drawn = [c for m, c in MODEL_COLORS.items()
             if (summary.loc[summary.model == m, [k for k, _ in MEASURES if k in summary]] > 0).any(axis=None)]
    assert drawn
    assert_figure_files(out / "abstention_by_category", colors=tuple(drawn))
    assert_figure_files(out / "abstention_curve", min_ink=0.005)  # thin lines
    assert "AURC" in proc.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert "abstention_curve.png" in meta["outputs"] and meta["n_items"] == {"known": LIMIT, "fictional": LIMIT}


def test_summary_from_the_rows(run):
    out, _ = run
    rows = pd.DataFrame(rows_of(out))
    summary = pd.read_csv(out / "summary.csv")
    # one unanswerable category: no pool; the invented names' kinds
    assert set(summary["category"]) == {"known", "fictional", "fictional:recombined", "fictional:spelled", "all"}
    for s in summary.itertuples():
        g = rows[(rows.model == s.model) & (rows.chat_template == s.chat_template)]
        if ":" in s.category:
            g = g[(g.why + ":" + g.kind.fillna("")) == s.category]
        elif s.category != "all":
            g = g[g.why == s.category]
        assert s.n_items == s.n_scored == len(g) and s.n_skipped == 0
        assert s.abstain_rate == pytest.approx((g.margin > 0).mean(), abs=1e-5)  # (csv: 6 digits)
        assert s.gen_abstain_rate == pytest.approx((g.generated == "abstain").mean(), abs=1e-5)
        known = g[g.answerable]
        if len(known):
            assert s.accuracy == pytest.approx((known.choice == 0).mean(), abs=1e-5)
        else:
            assert np.isnan(s.accuracy)


def test_selective_and_curves_from_the_rows(run):
    out, _ = run
    rows = pd.DataFrame(rows_of(out))
    sel = pd.read_csv(out / "selective.csv")
    curves = pd.read_csv(out / "abstention_curve.csv")
    for (model, tmpl), g in rows.groupby(["model", "chat_template"]):
        right = (g.answerable & (g.choice == 0)).to_numpy()
        s = sel[(sel.model == model) & (sel.chat_template == tmpl)].set_index("rule")
        for score, values in (("confidence", g.confidence.to_numpy()), ("preference", -g.margin.to_numpy())):
            # no ties among these scores: the AURC is the mean risk of answering the top k, k = 1..n
            order = np.argsort(-values, kind="stable")
            risk = np.cumsum(~right[order]) / np.arange(1, len(order) + 1)
            assert s.loc[f"curve:{score}", "aurc"] == pytest.approx(risk.mean(), abs=1e-5)
            c = curves[(curves.model == model) & (curves.chat_template == tmpl) & (curves.score == score)]
            np.testing.assert_allclose(c.risk.to_numpy(), risk, atol=1e-5)
        own = s.loc["own:logprob"]
        answered = (g.margin <= 0).to_numpy()
        assert own.coverage == pytest.approx(answered.mean(), abs=1e-5)
        if answered.any():
            assert own.risk == pytest.approx(1 - right[answered].mean(), abs=1e-5)


def test_comparison_is_paired(run):
    out, _ = run
    rows = pd.DataFrame(rows_of(out))
    comp = pd.read_csv(out / "comparison.csv")
    for c in comp.itertuples():
        g = rows[rows.chat_template == c.chat_template]
        if ":" in c.category:
            g = g[(g.why + ":" + g.kind.fillna("")) == c.category]
        elif c.category != "all":
            g = g[g.why == c.category]
        base = g[g.model == "base"].set_index("item").sort_index()
        chat = g[g.model == "chat"].set_index("item").sort_index()
        assert c.n == len(base) == len(chat)
        b_only = int(((base.margin > 0) & ~(chat.margin > 0)).sum())
        c_only = int((~(base.margin > 0) & (chat.margin > 0)).sum())
        assert (c.abstain_mcnemar_b, c.abstain_mcnemar_c) == (b_only, c_only)
        want = 1.0 if b_only + c_only == 0 else binomtest(min(b_only, c_only), b_only + c_only, 0.5).pvalue
        assert c.abstain_mcnemar_p == pytest.approx(want)
        # the csv keeps 6 significant digits: half a unit of the 6th is 5e-6 relative
        assert c.margin_diff == pytest.approx((chat.margin - base.margin).mean(), rel=5e-6, abs=1e-6)


def test_resume_and_changed_options(run, tmp_path):
    out, _ = run
    before = (out / "results.jsonl").read_bytes()
    summary = (out / "summary.csv").read_bytes()
    again = cli("--limit", str(LIMIT), "--n-boot", "200", "--out", str(out), "--no-figures")
    assert (out / "results.jsonl").read_bytes() == before and (out / "summary.csv").read_bytes() == summary
    changed = cli("--limit", "2", "--out", str(out), check=False)
    assert changed.returncode == 2 and "limit 4 -> 2" in changed.stderr and "Traceback" not in changed.stderr
    assert "AURC" in again.stdout


def test_dropped_items_are_counted():
    """An item too long for the model is skipped (--truncate skip) and counted, not lost."""
    lm = interp.load("toy/base")
    items = load("toy", limit=2)
    long = study.Work(False, items[0], "Q : " + "what is this ? " * 80 + items[0].prompt, 0)
    work = [long, *study.make_work(items[1:], (False,), None)]
    rows = study.score_chunk(lm, "base", work, generate_n=10, max_new_tokens=4, truncate="skip")
    assert rows[0]["skipped"].startswith("longer than the model's") and "logprobs" not in rows[0]
    summary = study.summarize(rows)
    known = summary[summary.category == "known"].iloc[0]
    assert (known.n_items, known.n_scored, known.n_skipped) == (2, 1, 1)
    assert "1 of 2 items skipped" in " ".join(summary.attrs["notes"])


@pytest.mark.parametrize("args, message", [
    (["--dataset", "audio"], "invalid choice: 'audio'"),
    (["--categories", "knwn"], "error: unknown idk categories ['knwn']"),
    (["--triviaqa", "tqa.jsonl"], "error: --triviaqa feeds the text dataset"),
    (["--dataset", "text", "--triviaqa", "missing.jsonl"], "error: task 'triviaqa_mc': data file 'missing.jsonl' does not exist"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--chat-template", "maybe"], "invalid choice 'maybe'; choose from on, off"),
    (["--pair", "nope"], "error: unknown pair 'nope'"),
])
def test_bad_input(args, message, tmp_path, capsys):
    """In-process (the CLI's subprocess path is checked by test_resume_and_changed_options)."""
    try:
        status = study.main([*args, "--out", str(tmp_path / "x")])
    except SystemExit as exit_:  # argparse
        status = exit_.code
    assert status == 2 and message in capsys.readouterr().err


def test_text_dataset_runs_on_the_toy_pair(tmp_path):
    out = tmp_path / "text"
    cli("--dataset", "text", "--limit", "2", "--chat-template", "off", "--generate", "3", "--no-figures",
        "--out", str(out))
    rows = rows_of(out)
    assert len(rows) == 2 * 2 * 5 and sum("generation" in r for r in rows) == 2 * 3
    summary = pd.read_csv(out / "summary.csv")
    assert "unanswerable" in set(summary.category)  # several unanswerable categories: pooled too
    assert (summary[summary.category == "unanswerable"].n_items == 8).all()
