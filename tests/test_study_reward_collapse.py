"""``python -W error -m studies.reward_collapse`` end to end on the toy pair: the files it writes,
its rewards against the plain HF reward model scoring each text alone, its samples against
``probes.sampling`` run directly, its statistics against scipy / diptest on the rows, resuming
after an interruption, annotations read back, and bad input."""

from __future__ import annotations

import csv
import json
import shutil
from functools import partial

import diptest
import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from scipy import stats
from study_cli import rows_of, run_study_cli

import interp
from probes.sampling import SamplingConfig, sample
from studies._results import read_results
from studies.reward_collapse import KEY_FIELDS
from tests.conftest import assert_figure_files

ARGS = ["--tasks", "toy_closed,toy_open_heldout,boolq,hh_pairwise", "--limit", "3", "--samples", "2",
        "--max-new-tokens", "6", "--batch-size", "4", "--temperature", "1.5"]
cli = partial(run_study_cli, "studies.reward_collapse")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reward_collapse")
    cli(*ARGS, "--out", str(out))
    return out


@pytest.fixture(scope="module")
def hf_reward():
    source = interp.registry.resolve("toy/reward")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source).eval()
    tok = transformers.AutoTokenizer.from_pretrained(source)

    def score(prompt: str, response: str) -> float:
        # the toy reward model's training input: "<s>User : {prompt} Assistant : {response}", alone
        with torch.no_grad():
            return float(model(**tok(f"User : {prompt} Assistant : {response}", return_tensors="pt")).logits[0, 0])

    return score


def _rows(out, stage):
    return [r for r in rows_of(out) if r["stage"] == stage]


def test_files_and_rows(run):
    for name in ("results.jsonl", "summary.csv", "comparison.csv", "annotations.csv", "meta.json", "fingerprint.json",
                 "rewards_toy_closed.png", "samples_hh_pairwise.pdf", "accuracy_by_format.png", "reward_by_layer.png"):
        assert (run / name).is_file(), name
    pairs = _rows(run, "pair")
    assert len(pairs) == 3 * 5 + 3 + 3 * 4 + 3  # toy_closed 5 formats, toy_open 1, boolq 4, hh 1
    assert len(_rows(run, "sample")) == len(_rows(run, "score")) == 2 * 2 * 12  # members x samples x items
    assert all(list(r["by_layer"]) == ["final", "0", "1", "2", "3", "4"] for r in pairs if not r["skipped"])
    meta = json.loads((run / "meta.json").read_text())
    assert meta["reward"] == "toy" and meta["study"] == "reward_collapse"


def test_pair_rewards_equal_the_hf_reward_model_alone(run, hf_reward):
    from tasks.reward_pairs import load_pairs

    items = {(it.task, it.format, it.id): it for t in ("toy_closed", "toy_open_heldout", "boolq", "hh_pairwise")
             for it in load_pairs(t, data="fixture" if t in ("boolq", "hh_pairwise") else None, limit=3)}
    checked = 0
    for r in _rows(run, "pair"):
        if r["skipped"] or r["truncated"]:
            continue
        it = items[(r["task"], r["format"], r["item"])]
        assert r["reward_chosen"] == pytest.approx(hf_reward(it.prompt, it.chosen), abs=2e-5)
        assert r["reward_rejected"] == pytest.approx(hf_reward(it.prompt, it.rejected), abs=2e-5)
        assert r["by_layer"]["final"] == [r["reward_chosen"], r["reward_rejected"]]
        checked += 1
    assert checked >= 30


def test_samples_equal_probes_sampling_and_are_scored(run, hf_reward):
    from tasks.reward_pairs import load_pairs

    pair = interp.load_pair("toy")
    questions = {it.id: it.question for t in ("toy_closed", "hh_pairwise")
                 for it in load_pairs(t, data=None if t == "toy_closed" else "fixture", limit=3)}
    cfg = SamplingConfig(temperature=1.5, max_new_tokens=6, chat_template=True, seed=0)
    scores = {(r["source"], r["item"], r["sample"]): r for r in _rows(run, "score")}
    for member in ("base", "chat"):
        lm = pair.load(member)
        mine = [r for r in _rows(run, "sample") if r["source"] == member and r["item"] in questions]
        for r in mine:
            (direct,) = sample(lm, [questions[r["item"]]], config=cfg, keys=[f"{r['task']}/{r['item']}"],
                               samples=[r["sample"]], batch_size=1)
            assert (direct.text, direct.seed) == (r["text"], r["seed"])
            scored = scores[(member, r["item"], r["sample"])]
            assert scored["reward"] == pytest.approx(hf_reward(questions[r["item"]], r["text"]), abs=2e-5)
    assert len({r["text"] for r in _rows(run, "sample")}) > 10  # samples differ


def test_summary_statistics_equal_scipy_on_the_rows(run):
    # the tables hold 6 significant digits
    summary = pd.read_csv(run / "summary.csv", dtype={"layer": str})
    pairs = [r for r in _rows(run, "pair") if not r["skipped"]]
    for (task, fmt), g in pd.DataFrame(pairs).groupby(["task", "format"]):
        row = summary[(summary.task == task) & (summary.format == fmt) & (summary.layer == "final")].iloc[0]
        a, b = g["reward_chosen"].to_numpy(), g["reward_rejected"].to_numpy()
        pooled = np.concatenate([a, b])
        assert row["n"] == len(pooled) and row["mean"] == pytest.approx(pooled.mean(), rel=1e-5, abs=1e-6)
        assert row["sd"] == pytest.approx(pooled.std(ddof=1), rel=1e-5, abs=1e-6)
        assert row["pairwise_accuracy"] == pytest.approx(((a > b).sum() + 0.5 * (a == b).sum()) / len(a))
        assert row["auroc"] == pytest.approx(stats.mannwhitneyu(a, b).statistic / len(a) ** 2, rel=1e-5, abs=1e-6)
        dip, p = diptest.diptest(pooled)
        assert (row["dip"], row["dip_p"]) == (pytest.approx(dip, rel=1e-5, abs=1e-6), pytest.approx(p, rel=1e-5, abs=1e-6))
        assert row["gmm_components"] == (2 if row["bic_2"] < row["bic_1"] else 1)
    scored = pd.DataFrame([r for r in _rows(run, "score") if not r["skipped"]])
    comparison = pd.read_csv(run / "comparison.csv")
    for task, g in scored.groupby("task"):
        means = g.groupby(["source", "item"])["reward"].mean().unstack(0)
        got = comparison[comparison.task == task].iloc[0]
        assert got["mean_diff"] == pytest.approx((means["chat"] - means["base"]).mean(), rel=1e-5, abs=1e-6)
        assert got["t_p"] == pytest.approx(stats.ttest_rel(means["chat"], means["base"]).pvalue, rel=1e-5, abs=1e-6)
        srow = summary[(summary.task == task) & (summary.source == "chat") & (summary.layer == "final")].iloc[0]
        assert srow["mean"] == pytest.approx(g[g.source == "chat"]["reward"].mean(), rel=1e-5, abs=1e-6)


def test_interrupted_run_resumes_with_identical_results(run, tmp_path):
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    for cut in (len(lines) // 5, len(lines) * 3 // 4):  # inside the sampling, inside the scoring
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        shutil.copy(run / "fingerprint.json", folder)
        (folder / "results.jsonl").write_text("".join(lines[:cut]) + lines[cut][:30])  # a crash mid-line
        cli(*ARGS, "--out", str(folder), "--no-figures")
        # a partly written chunk is recomputed whole: its rows appear twice in the file, the last wins
        assert read_results(folder, KEY_FIELDS) == read_results(run, KEY_FIELDS)
        assert (folder / "summary.csv").read_text() == (run / "summary.csv").read_text()
        assert (folder / "comparison.csv").read_text() == (run / "comparison.csv").read_text()


def test_annotations_are_read_back_as_agreement(run, tmp_path):
    sheet = list(csv.DictReader(open(run / "annotations.csv", newline="")))
    assert sheet and all(r["judgement"] == "" for r in sheet)
    for i, r in enumerate(sheet):  # a reproducible "annotator": says good every other row, some left blank
        r["judgement"] = "" if i % 7 == 6 else ("good" if i % 2 else "bad")
    path = tmp_path / "judged.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sheet[0]))
        writer.writeheader()
        writer.writerows(sheet)
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    cli(*ARGS, "--out", str(folder), "--no-figures", "--annotations", str(path))
    agree = pd.read_csv(folder / "agreement.csv")
    summary = pd.read_csv(folder / "summary.csv", dtype={"layer": str})
    for task, g in pd.DataFrame([r for r in sheet if r["judgement"]]).groupby("task"):
        pairs = summary[(summary.task == task) & (summary.source == "pairs") & (summary.layer == "final")]
        threshold = (np.average(pairs.mean_chosen, weights=pairs.n) + np.average(pairs.mean_rejected, weights=pairs.n)) / 2
        rm = (g["reward"].astype(float) > threshold).astype(int).to_numpy()
        human = (g["judgement"] == "good").astype(int).to_numpy()
        p_o = (rm == human).mean()
        p_e = rm.mean() * human.mean() + (1 - rm.mean()) * (1 - human.mean())
        got = agree[agree.task == task].iloc[0]
        assert got["n_annotated"] == len(g) and got["accuracy"] == pytest.approx(p_o, rel=1e-5)
        assert p_e < 1 and got["kappa"] == pytest.approx((p_o - p_e) / (1 - p_e), rel=1e-5)  # 6 digits in the csv
    # the sheet with judgements in the run folder is never overwritten
    shutil.copy(path, folder / "annotations.csv")
    cli(*ARGS, "--out", str(folder), "--no-figures")
    assert (folder / "annotations.csv").read_text() == path.read_text()


def test_figures_show_both_groups(run):
    assert_figure_files(run / "rewards_toy_closed", colors=("#55A868", "#C44E52"))
    assert_figure_files(run / "samples_toy_closed", colors=("#4C72B0", "#DD8452"))
    assert_figure_files(run / "accuracy_by_format")


@pytest.mark.parametrize("args, message", [
    (["--tasks", "nope"], "valid tasks: toy_closed"),
    (["--tasks", "boolq", "--formats", "short"], "task 'boolq' has no response format 'short'; its formats: 0/1"),
    (["--reward", "nope"], "unknown reward model 'nope'; known: toy"),
    (["--reward", "models/toy/base"], "implicit:PAIR"),
    (["--sample-from", "sft"], "valid: base, chat"),
    (["--annotations", "missing.csv"], "no such file"),
])
def test_bad_input_exits_2_with_a_message(tmp_path, args, message):
    proc = cli("--tasks", "toy_open", "--limit", "2", "--samples", "0", *args, "--out", str(tmp_path), "--no-figures",
               check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr


def test_bad_judgement_names_the_valid_values(run, tmp_path):
    sheet = (run / "annotations.csv").read_text().splitlines()
    header, first = sheet[0], next(csv.DictReader([sheet[0], sheet[1]]))
    first["judgement"] = "maybe"
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header.split(","))
        writer.writeheader()
        writer.writerow(first)
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    proc = cli(*ARGS, "--out", str(folder), "--no-figures", "--annotations", str(path), check=False)
    assert proc.returncode == 2 and "judgement 'maybe' is not one of good, bad" in proc.stderr
