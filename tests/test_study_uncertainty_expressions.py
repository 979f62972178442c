"""``python -W error -m studies.uncertainty_expressions`` end to end on the toy pair: its rows
against lm-evaluation-harness's loglikelihood from the plain HF models, its comparison tables
against hand computations from the (synthetic) human fixture, resumption and bad input."""

import math
from functools import partial

import numpy as np
import pandas as pd
import pytest
import transformers
from study_cli import rows_of, run_study_cli

import interp
from tasks.uncertainty import interpretation_items, production_items
from tasks.uncertainty.human import FIXTURES
from tests.conftest import assert_figure_files, harness_loglik

cli = partial(run_study_cli, "studies.uncertainty_expressions")
ARGS = ["--sets", "complex", "--wordings", "1", "--shots", "0,1", "--chat-template", "off,on", "--n-boot", "200"]
PAIRS = {(a, o) for a in (2, 4, 8, 10) for o in range(a + 1)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("uncertainty")
    proc = cli(*ARGS, "--no-figures", "--out", str(out))
    return out, proc


@pytest.fixture(scope="module")
def base_model():
    source = interp.PAIRS["toy"].source("base")
    return (transformers.AutoModelForCausalLM.from_pretrained(source).eval(),
            transformers.AutoTokenizer.from_pretrained(source))


def _softmax(x):
    z = np.exp(np.asarray(x) - np.max(x))
    return z / z.sum()


def test_rows_cover_every_condition_and_context(run):
    out, proc = run
    rows = rows_of(out)
    assert len(rows) == 2 * 2 * 2 * (28 + 12)  # models x shots x templates x (contexts + expressions)
    prod = [r for r in rows if r["kind"] == "production" and r["model"] == "base" and r["shots"] == 0
            and not r["chat_template"]]
    assert {tuple(map(int, r["context"].split(","))) for r in prod} == PAIRS
    assert not any(r.get("skipped") for r in rows)
    assert "SYNTHETIC" in proc.stderr and "SYNTHETIC" in proc.stdout


@pytest.mark.parametrize("template", [False, True])
def test_option_logprobs_equal_the_harness_oracle(run, base_model, template):
    out, _ = run
    model, tok = base_model
    item = next(it for it in production_items("complex", 1) if it.id == "production-complex-a4o2-w0")
    context = f"User : {item.context} Assistant :" if template else item.context  # the toy chat template
    row = next(r for r in rows_of(out) if r["model"] == "base" and r["item"] == item.id and r["shots"] == 0
               and r["chat_template"] == template)
    hand = [harness_loglik(model, tok, model.model.norm, context, o) for o in item.options]
    np.testing.assert_allclose(row["logprobs"], [h["by_layer"][-1] for h in hand], atol=1e-4)
    assert row["n_tokens"] == [h["n_tokens"] for h in hand]


def test_comparison_with_humans_equals_hand_computation(run, base_model):
    out, _ = run
    model, tok = base_model
    # the fixture's choices in context (4, 2), counted straight from its CSV
    human = pd.read_csv(FIXTURES[0], comment="#")
    chosen = human[(human["access"] == 4) & (human["observation"] == 2)]["answer.full"]
    item = next(it for it in production_items("complex", 1) if it.id == "production-complex-a4o2-w0")
    counts = np.array([(chosen == c).sum() for c in item.meta["codes"]], dtype=float)
    lp = np.array([harness_loglik(model, tok, model.model.norm, item.context, o)["by_layer"][-1] for o in item.options])
    q, p = _softmax(lp), counts / counts.sum()
    m = (p + q) / 2
    kl = lambda a, b: sum(x * math.log2(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
    ctx = pd.read_csv(out / "contexts.csv")
    got = ctx[(ctx.model == "base") & (ctx.kind == "production") & (ctx.shots == 0) & (~ctx.chat_template)
              & (ctx.norm == "sum") & (ctx.context == "4,2")].iloc[0]
    assert got.js == pytest.approx((kl(p, m) + kl(q, m)) / 2, abs=1e-5)
    assert got.r == pytest.approx(np.corrcoef(p, q)[0, 1], abs=1e-5)
    # the csv keeps 6 significant digits (0.001 at -252.426): half a unit of the 6th is 5e-6 relative
    assert got.loglik == pytest.approx(float(np.sum(counts * np.log(q))), rel=5e-6, abs=1e-4)
    assert got.n_human == counts.sum()
    dist = pd.read_csv(out / "distributions.csv")
    d = dist[(dist.model == "base") & (dist.kind == "production") & (dist.shots == 0) & (~dist.chat_template)
             & (dist.norm == "token") & (dist.context == "4,2")]
    n_tok = [harness_loglik(model, tok, model.model.norm, item.context, o)["n_tokens"] for o in item.options]
    np.testing.assert_allclose(d["prob"], _softmax(lp / np.array(n_tok)), atol=1e-5)
    np.testing.assert_allclose(d["human_prob"], p, atol=1e-6)


def test_summary_and_comparison_tables(run):
    out, _ = run
    summary = pd.read_csv(out / "summary.csv")
    assert {"n_items", "n_scored", "n_skipped", "skip_reason", "n_truncated"} <= set(summary.columns)
    assert set(summary.norm) == {"sum", "token", "char"}
    zero = summary[(summary.shots == 0) & (summary.kind == "production")]
    assert (zero.n_items == 28).all() and (zero.n_scored == 28).all() and (zero.n_compared == 15).all()
    ctx = pd.read_csv(out / "contexts.csv")
    comp = pd.read_csv(out / "comparison.csv")
    assert set(comp.metric) == {"js", "loglik_per_choice"}
    assert set(comp.closer) <= {"base", "chat", "neither (95% CI includes 0)"}
    one = comp[(comp.kind == "interpretation") & (comp.shots == 1) & comp.chat_template & (comp.norm == "char")
               & (comp.metric == "js")].iloc[0]
    part = ctx[(ctx.kind == "interpretation") & (ctx.shots == 1) & ctx.chat_template & (ctx.norm == "char")]
    means = part.groupby("model").js.mean()
    assert one.n_contexts == 12
    assert one.diff_chat_minus_base == pytest.approx(means["chat"] - means["base"], abs=1e-5)
    assert one.ci_low <= one.diff_chat_minus_base <= one.ci_high
    by_access = pd.read_csv(out / "js_by_access.csv")
    assert set(by_access.access) == {2, 4, 8, 10}
    interp_ctx = ctx[ctx.kind == "interpretation"]
    assert interp_ctx.expected_state.between(0, 10).all()


def test_resume_adds_nothing_and_figures(run, tmp_path):
    out, _ = run
    before = (out / "results.jsonl").read_bytes()
    cli(*ARGS, "--no-figures", "--out", str(out))
    assert (out / "results.jsonl").read_bytes() == before
    small = ["--parts", "production", "--sets", "simple", "--wordings", "1", "--shots", "0", "--chat-template", "off",
             "--n-boot", "50", "--out", str(tmp_path)]
    cli(*small)
    assert_figure_files(tmp_path / "bars_production_simple_0shot_raw", colors=("#4C72B0", "#DD8452", "#7F7F7F"))
    assert_figure_files(tmp_path / "js_by_access_simple")
    proc = cli(*small[:-2], "--shots", "1", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "different settings" in proc.stderr and "shots" in proc.stderr


def test_bad_human_data_exits_2_naming_the_expected_columns(tmp_path, capsys):
    from studies.uncertainty_expressions import main

    bad = tmp_path / "bad.csv"
    bad.write_text('"","access","observation","answer1"\n"1",4,2,"is"\n')
    cases = [(["--human-data", str(bad)], "answer.full or answer"),
             (["--human-data", str(tmp_path / "missing.csv")], "not found"),
             (["--human-data", str(FIXTURES[0]), "--human-data", str(FIXTURES[0])], "one file per kind and set")]
    for args, match in cases:  # the human data are read before any model is loaded
        assert main([*args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and match in err and "Traceback" not in err


def test_which_model_is_closer():
    from studies.uncertainty_expressions import compare

    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        js = rng.uniform(0.3, 0.6)
        for model, shift in (("base", 0.0), ("chat", -0.1)):  # chat nearer the humans in every context
            rows.append({"model": model, "kind": "production", "set": "simple", "shots": 0, "chat_template": False,
                         "norm": "sum", "context": f"{i}", "js": js + shift, "loglik_per_choice": -1.0 - js - shift})
        rows.append({**rows[-1], "norm": "token", "model": "base", "js": js, "loglik_per_choice": -1.0})
        rows.append({**rows[-1], "model": "chat", "js": js + rng.normal(0, 0.05), "loglik_per_choice": -1.0 + rng.normal(0, 0.05)})
    comp = compare(pd.DataFrame(rows), n_boot=500, seed=0).set_index(["norm", "metric"])
    assert comp.loc[("sum", "js"), "closer"] == "chat" and comp.loc[("sum", "loglik_per_choice"), "closer"] == "chat"
    assert comp.loc[("sum", "js"), "diff_chat_minus_base"] == pytest.approx(-0.1)
    assert comp.loc[("token", "js"), "closer"].startswith("neither")
    flipped = pd.DataFrame(rows).assign(model=lambda d: d["model"].map({"base": "chat", "chat": "base"}))
    assert compare(flipped, n_boot=500, seed=0).set_index(["norm", "metric"]).loc[("sum", "js"), "closer"] == "base"
