"""``python -W error -m studies.benchmarks`` end to end on the toy pair: the files it writes,
and its numbers against the plain HF models scored by hand (lm-evaluation-harness's
loglikelihood, one whole sequence at a time)."""

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from study_cli import rows_of, run_study_cli

import interp
from figures._save import MODEL_COLORS
from studies import benchmarks
from tasks import toy_world
from tasks.benchmarks import TASKS, toy_capitals
from tests.conftest import assert_figure_files, harness_chars, harness_loglik

ARGS = ["--tasks", "toy_capitals,copa,wic,cola", "--limit", "4", "--shots", "0,1", "--generate", "1",
        "--max-new-tokens", "4", "--no-figures"]
TASK_NAMES = ("toy_capitals", "copa", "wic", "cola")  # on wic and cola base and chat, acc and acc_norm differ
N_LAYERS = 6

cli = partial(run_study_cli, "studies.benchmarks")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmarks")
    proc = cli(*ARGS, "--out", str(out))
    return out, proc


@pytest.fixture(scope="module")
def hf_pair():
    sources = {m: interp.PAIRS["toy"].source(m) for m in ("base", "chat")}
    return {m: (transformers.AutoModelForCausalLM.from_pretrained(s).eval(), transformers.AutoTokenizer.from_pretrained(s))
            for m, s in sources.items()}


@pytest.fixture(scope="module")
def zero_shot_items():
    """The 0-shot items the study scored: the loaders' first four items, contexts unchanged."""
    items = {t: toy_capitals.load(data="fixture", limit=4) if t == "toy_capitals" else TASKS[t](data="fixture", limit=4)
             for t in TASK_NAMES}
    return {(task, it.id): it for task, its in items.items() for it in its}


def _oracle_rows(rows, items, hf_pair):
    """For each scored 0-shot row: the hand scores of its item's options under its model."""
    out = []
    for r in rows:
        if r["shots"] != 0 or r.get("skipped"):
            continue
        model, tok = hf_pair[r["model"]]
        item = items[(r["task"], r["item"])]
        scored = [harness_loglik(model, tok, model.model.norm, item.context, o) for o in item.options]
        final = np.array([s["by_layer"][-1] for s in scored])
        chars = np.array([harness_chars(o) for o in item.options])
        out.append((r, item, scored, final, chars))
    return out


def test_writes_rows_summary_and_comparison(run):
    out, proc = run
    rows = rows_of(out)
    keys = {(r["model"], r["task"], r["shots"], r["item"]) for r in rows}
    assert len(keys) == len(rows) == 2 * len(TASK_NAMES) * 2 * 4  # models x tasks x shots x items
    assert {r["task"] for r in rows} == set(TASK_NAMES) and {r["shots"] for r in rows} == {0, 1}
    scored = [r for r in rows if not r.get("skipped")]
    assert scored and all(r["layers"] == ["final", *range(N_LAYERS)] for r in scored)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary.layer) == {"final", *map(str, range(N_LAYERS))}
    comparison = pd.read_csv(out / "comparison.csv")
    assert {"mcnemar_p", "diff_low", "diff_high"} <= set(comparison.columns)
    assert {(t, 0, m) for t in TASK_NAMES for m in ("acc", "acc_norm")} <= set(zip(comparison.task, comparison.shots, comparison.metric))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["study"] == "benchmarks" and meta["options"]["shots"] == [0, 1]
    assert "accuracy (final readout" in proc.stdout


def test_rows_equal_the_hf_models_scored_by_hand(run, hf_pair, zero_shot_items):
    out, _ = run
    rows = rows_of(out)
    checked = _oracle_rows(rows, zero_shot_items, hf_pair)
    assert {(r["model"], r["task"]) for r, *_ in checked} == {(m, t) for m in ("base", "chat") for t in TASK_NAMES}
    for r, item, scored, final, chars in checked:
        logprobs = np.array(r["logprobs"])  # [readout, option], readouts final, 0, ..., 5
        np.testing.assert_allclose(logprobs[0], final, atol=1e-4, rtol=0, err_msg=r["item"])
        for layer in range(N_LAYERS - 1):
            np.testing.assert_allclose(logprobs[1 + layer], [s["by_layer"][layer] for s in scored], atol=1e-4, rtol=0)
        assert r["label"] == item.label and r["n_tokens"] == [s["n_tokens"] for s in scored]
        assert r["n_chars"] == chars.tolist()
        assert r["pred"] == int(np.argmax(final)) and r["acc"] == (np.argmax(final) == item.label)
        assert r["pred_norm"] == int(np.argmax(final / chars)) and r["acc_norm"] == (np.argmax(final / chars) == item.label)
        assert r["prob_label"] == pytest.approx(float(np.exp(final[item.label]) / np.exp(final).sum()), abs=1e-5)
    # the toy task's gold option is the toy world's capital of the country
    capital = {f["subject"]: f["answer"] for f in toy_world.load_facts(relation="capital")}
    for r, item, *_ in checked:
        if r["task"] == "toy_capitals":
            assert item.options[r["label"]] == " " + capital[item.meta["subject"]]


def test_summary_and_comparison_equal_the_hand_scores(run, hf_pair, zero_shot_items):
    out, _ = run
    checked = _oracle_rows(rows_of(out), zero_shot_items, hf_pair)
    summary = pd.read_csv(out / "summary.csv")
    final = summary[(summary.layer == "final") & (summary.shots == 0)].set_index(["model", "task"])
    hand = {}
    for r, item, _, scores, chars in checked:
        hand.setdefault((r["model"], r["task"]), []).append(
            (r["item"], np.argmax(scores) == item.label, np.argmax(scores / chars) == item.label))
    for (model, task), accs in hand.items():
        assert final.loc[(model, task), "acc"] == pytest.approx(np.mean([a for _, a, _ in accs]), abs=1e-6)
        assert final.loc[(model, task), "acc_norm"] == pytest.approx(np.mean([a for _, _, a in accs]), abs=1e-6)
        counts = final.loc[(model, task), ["n_items", "n_scored", "n_skipped", "n_truncated"]].tolist()
        assert counts == [len(accs), len(accs), 0, 0] and len(accs) == 4
    assert final.loc[("base", "toy_capitals"), "acc"] >= 0.75  # the toy pair knows its capitals
    # these items tell acc from acc_norm and base from chat (else the checks below could not fail)
    assert any(a != b for accs in hand.values() for _, a, b in accs)
    assert any(dict((i, a) for i, a, _ in hand[("base", t)]) != dict((i, a) for i, a, _ in hand[("chat", t)])
               for t in TASK_NAMES)
    comparison = pd.read_csv(out / "comparison.csv")
    comparison = comparison[(comparison.shots == 0) & (comparison.metric == "acc")].set_index("task")
    for task in TASK_NAMES:
        base = dict((i, a) for i, a, _ in hand[("base", task)])
        chat = dict((i, a) for i, a, _ in hand[("chat", task)])
        assert comparison.loc[task, "base"] == pytest.approx(np.mean(list(base.values())))
        assert comparison.loc[task, "chat"] == pytest.approx(np.mean(list(chat.values())))
        assert comparison.loc[task, "mcnemar_b"] == sum(base[i] and not chat[i] for i in base)
        assert comparison.loc[task, "mcnemar_c"] == sum(chat[i] and not base[i] for i in base)


def test_generations_are_greedy_continuations(run, hf_pair, zero_shot_items):
    out, _ = run
    gens = pd.read_csv(out / "generations.csv", keep_default_na=False)
    assert set(zip(gens.model, gens.task, gens.shots)) >= {(m, t, 0) for m in ("base", "chat") for t in TASK_NAMES}
    assert len(gens) == len(set(zip(gens.model, gens.task, gens.shots)))  # the first item of each condition
    for g in gens[gens.shots == 0].itertuples():
        model, tok = hf_pair[g.model]
        ids = tok(zero_shot_items[(g.task, g.item)].context)["input_ids"]
        new = []
        with torch.no_grad():
            for _ in range(4):
                nxt = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                new.append(nxt)
                if nxt == tok.eos_token_id:
                    break
        assert g.generation == tok.decode(new, skip_special_tokens=True).split("\n\n")[0]


def test_interrupted_run_resumes_and_summary_is_from_rows_alone(run, tmp_path):
    out, _ = run
    cli(*ARGS, "--out", str(tmp_path))
    lines = (tmp_path / "results.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "results.jsonl").write_text("".join(lines[:len(lines) // 2]) + lines[-1][:40])  # a crash
    cli(*ARGS, "--out", str(tmp_path))
    assert (tmp_path / "summary.csv").read_text() == (out / "summary.csv").read_text()
    before = (tmp_path / "results.jsonl").read_text()
    cli(*ARGS, "--out", str(tmp_path))
    assert (tmp_path / "results.jsonl").read_text() == before  # nothing recomputed
    (tmp_path / "summary.csv").unlink()
    cli(*ARGS, "--out", str(tmp_path), "--summary-only")
    assert (tmp_path / "summary.csv").read_text() == (out / "summary.csv").read_text()


def test_bad_input_exits_2_with_a_message(tmp_path):
    proc = cli("--tasks", "nope", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown task" in proc.stderr and "boolq" in proc.stderr
    proc = cli("--tasks", "copa", "--data", f"copa={tmp_path}/missing.jsonl", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr and "--data PATH" in proc.stderr
    assert not (tmp_path / "results.jsonl").exists()


def test_figures_draw_the_summary(tmp_path, monkeypatch):
    import figures.task_bars

    cli("--tasks", "toy_capitals,cola", "--limit", "3", "--generate", "0", "--out", str(tmp_path))
    for stem in ("accuracy_0shot_raw", "accuracy_by_layer_0shot_raw"):
        assert_figure_files(tmp_path / stem, colors=(MODEL_COLORS["base"], MODEL_COLORS["chat"]))
    drawn, original = [], figures.task_bars.save

    def capture(fig, stem, **kwargs):  # keep the Figure the bar chart saves
        drawn.append(fig)
        return original(fig, stem, **kwargs)

    monkeypatch.setattr(figures.task_bars, "save", capture)
    summary = pd.read_csv(tmp_path / "summary.csv", dtype={"layer": str})
    benchmarks.make_figures(summary, tmp_path / "again")
    (ax,) = drawn[0].axes
    final = summary[summary.layer == "final"].set_index(["model", "task"])
    tasks = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(tasks) == ["cola", "toy_capitals"]
    expected = [final.loc[(m, t), "acc"] for m in ("base", "chat") for t in tasks]
    np.testing.assert_allclose([b.get_height() for b in ax.patches], expected, atol=1e-6)
