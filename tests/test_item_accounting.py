"""Every item accounted for: ``--truncate left|skip`` in the benchmark and calibration CLIs on
the toy pair, the counts per task and condition in ``summary.csv``, the console notes, a task
with nothing scored, and the fitted temperature at its search bound."""

import json

import numpy as np
import pandas as pd
import pytest

from studies import benchmarks, calibration
from studies._common import StudyError
from tests.study_cli import REPO, rows_of, run_study_cli

pytestmark = pytest.mark.skipif(not (REPO / "models/toy/base").exists(),
                                reason="models/toy not built (python -m toy_pair.train)")
FAST = ["--layers", "none", "--no-figures", "--generate", "0"]
LONG = "The Danube runs about 2,850 km to the Black Sea; the Rhine runs about 1,230 km to the North Sea. " * 3
SHORT = "Penguins are flightless seabirds."
SKIP_REASON = "longer than the model's 128 positions (--truncate skip)"


def boolq_file(path, passages):
    path.write_text("".join(json.dumps({"question": f"Is item {i} true", "passage": p, "idx": i, "label": i % 2}) + "\n"
                            for i, p in enumerate(passages)))
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """BoolQ with two items longer than the toy pair's 128 positions and two that fit."""
    return boolq_file(tmp_path_factory.mktemp("data") / "boolq.jsonl", [LONG, SHORT, LONG, SHORT])


def by_task(folder):
    summary = pd.read_csv(folder / "summary.csv", keep_default_na=False, na_values=[""])
    return summary[summary.layer == "final"].set_index(["model", "task"])


def test_skip_counts_per_task_and_condition(tmp_path, mixed):
    proc = run_study_cli("studies.benchmarks", "--tasks", "boolq,copa", "--data", f"boolq={mixed}", "--limit", "4",
                         "--truncate", "skip", *FAST, "--out", str(tmp_path))
    final = by_task(tmp_path)
    for model in ("base", "chat"):
        boolq, copa = final.loc[(model, "boolq")], final.loc[(model, "copa")]
        assert (boolq.n_items, boolq.n_scored, boolq.n_skipped, boolq.n_truncated) == (4, 2, 2, 0)
        assert boolq.skip_reason == SKIP_REASON
        assert (copa.n_items, copa.n_scored, copa.n_skipped) == (4, 4, 0) and pd.isna(copa.skip_reason)
    assert f"boolq 0-shot raw (base, chat): 2 of 4 items skipped: {SKIP_REASON}" in proc.stdout
    assert "copa 0-shot raw (base" not in proc.stdout
    skipped = [r["item"] for r in rows_of(tmp_path) if r["skipped"]]
    assert sorted(skipped) == ["boolq-0", "boolq-0", "boolq-2", "boolq-2"]


def test_left_truncation_is_the_default_and_recorded(tmp_path, mixed):
    proc = run_study_cli("studies.benchmarks", "--tasks", "boolq", "--data", f"boolq={mixed}", *FAST,
                         "--out", str(tmp_path))
    final = by_task(tmp_path)
    for model in ("base", "chat"):
        row = final.loc[(model, "boolq")]
        assert (row.n_items, row.n_scored, row.n_skipped, row.n_truncated) == (4, 4, 0, 2)
    rows = {(r["model"], r["item"]): r for r in rows_of(tmp_path)}
    assert rows[("base", "boolq-0")]["truncated"] > 0 and rows[("base", "boolq-1")]["truncated"] == 0
    assert "boolq 0-shot raw (base, chat): 2 of 4 items left-truncated" in proc.stdout
    assert "--truncate" in run_study_cli("studies.benchmarks", "--help").stdout


def test_a_task_with_nothing_scorable(tmp_path):
    too_long = boolq_file(tmp_path / "long.jsonl", [LONG] * 3)
    proc = run_study_cli("studies.benchmarks", "--tasks", "boolq", "--data", f"boolq={too_long}", "--truncate", "skip",
                         *FAST, "--out", str(tmp_path / "alone"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "KeyError" not in proc.stderr
    assert f"error: no item was scored: boolq 0-shot raw (base, chat): 3 of 3 items skipped, nothing scored: " \
           f"{SKIP_REASON}; --truncate left scores long items" in proc.stderr
    # beside a task that scores, it keeps its rows (empty metrics) and is named
    proc = run_study_cli("studies.benchmarks", "--tasks", "boolq,copa", "--data", f"boolq={too_long}", "--limit", "3",
                         "--truncate", "skip", *FAST, "--out", str(tmp_path / "mixed"))
    final = by_task(tmp_path / "mixed")
    boolq = final.loc[("base", "boolq")]
    assert (boolq.n_items, boolq.n_scored, boolq.n_skipped) == (3, 0, 3) and np.isnan(boolq.acc)
    assert final.loc[("chat", "copa")].n_scored == 3
    assert "boolq 0-shot raw (base, chat): 3 of 3 items skipped, nothing scored" in proc.stdout


def test_calibration_accounts_for_items_and_flags_the_temperature_bound(tmp_path, mixed):
    # cola on the toy pair: no better than chance, so the NLL-optimal temperature is beyond 100
    proc = run_study_cli("studies.calibration", "--tasks", "boolq,cola", "--data", f"boolq={mixed}",
                         "--truncate", "skip", "--limit", "6", "--no-figures", "--layers", "none", "--out", str(tmp_path))
    final = by_task(tmp_path)
    for model in ("base", "chat"):
        boolq, cola = final.loc[(model, "boolq")], final.loc[(model, "cola")]
        assert (boolq.n_items, boolq.n_scored, boolq.n_skipped, boolq.skip_reason) == (4, 2, 2, SKIP_REASON)
        assert (cola.n_items, cola.n_scored, cola.n_skipped) == (6, 6, 0)
        assert cola.temperature == pytest.approx(calibration.TEMPERATURE_BOUNDS[1], rel=1e-3)
        assert cola.temperature_at_bound in (True, "True")
    assert f"boolq (base, chat): 2 of 4 items skipped: {SKIP_REASON}" in proc.stdout
    assert "warning: cola base: the fitted temperature 100.00 is at a bound of the search" in proc.stdout
    assert "n=   2/4: ECE" in proc.stdout


# -- the tables alone (no model) ---------------------------------------------------------------
def mc_row(item, logits, label, model="base", task="t", skipped=None):
    return {"model": model, "task": task, "shots": 0, "chat_template": False, "item": item, "label": label,
            "n_options": len(logits), "skipped": skipped, "truncated": 0, "layers": ["final"],
            "logprobs": [list(logits)], "n_chars": [1] * len(logits)}


def test_benchmark_summary_of_all_skipped_rows_is_an_error_not_a_key_error():
    rows = [{**mc_row(f"i{i}", [0, 0], 0), "skipped": "longer than the model's 8 positions (--truncate skip)"}
            for i in range(3)]
    with pytest.raises(StudyError, match="no item was scored: t 0-shot raw \\(base\\): 3 of 3 items skipped"):
        benchmarks.summarize(rows, n_boot=10)


def test_calibration_counts_items_of_another_option_count_as_skipped():
    rows = [mc_row(f"i{i}", [2.0, 0.0], i % 2) for i in range(4)] + [mc_row("odd", [1.0, 0.0, 0.0], 0)]
    summary, _, _ = calibration.summarize(rows, n_bins=2, n_boot=10)
    row = summary.iloc[0]
    assert (row.n_items, row.n_scored, row.n_skipped) == (5, 4, 1)
    assert row.skip_reason == "3 options, not the task's 2"
    assert summary.attrs["notes"] == ["t (base): 1 of 5 items skipped: 3 options, not the task's 2"]


@pytest.mark.parametrize("n_right, at_bound, why", [
    (3, False, None),           # 3 of 4 right at confidence 0.95: T* = 3 / log(3), inside the bounds
    (0, True, "as T grows"),    # always confidently wrong: T* -> infinity, stopped at 100
    (4, True, "as T shrinks"),  # always right: T* -> 0, stopped at 0.01
])
def test_temperature_at_bound_is_flagged(n_right, at_bound, why):
    rows = [mc_row(f"i{i}", [3.0, 0.0], 0 if i < n_right else 1) for i in range(4)]
    summary, _, _ = calibration.summarize(rows, n_bins=2, n_boot=10)
    final = summary.iloc[0]
    assert bool(final.temperature_at_bound) is at_bound
    if not at_bound:
        assert final.temperature == pytest.approx(3 / np.log(3), rel=1e-4)
    text = calibration.report(summary)
    assert ("(no optimum inside the search bounds)" in text) is at_bound
    assert ("warning: t base: the fitted temperature" in text) is at_bound
    assert why is None or why in text


# -- the shipped fixtures fit the toy pair ------------------------------------------------------
def _as_tuple(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@pytest.mark.parametrize("study", [benchmarks, calibration], ids=["benchmarks", "calibration"])
def test_every_fixture_item_fits_the_toy_pair_at_the_default_options(study):
    import interp
    from probes.multiple_choice import fit_item, fit_partial_item
    from tasks.benchmarks import TASKS

    args = study.parse_args([])
    assert args.truncate == "left"  # the default; nothing may need it on the fixtures
    shots = _as_tuple(args.shots)
    templates = tuple(t in (True, "on") for t in _as_tuple(args.chat_template))
    tasks = [t for t in TASKS if t not in benchmarks.NOT_MC and not (study is calibration and benchmarks.is_generative(t))]
    tasks += ["toy_capitals"]
    assert {"boolq", "cb", "mmlu", "triviaqa_ptrue"} <= set(tasks)
    items = benchmarks.load_items(tasks, {}, None)
    pair = interp.load_pair("toy")
    work = benchmarks.make_work(items, shots, templates, benchmarks.template_tokenizer(pair) if any(templates) else None,
                                args.seed)
    for member, lm in pair:
        assert lm.max_positions == 128
        too_long = []
        for w in work:
            try:
                if benchmarks.is_generative(w.task):  # its prompt and the new tokens fit
                    benchmarks._generation_prompt(lm, w.item, args.max_new_tokens, "error")
                elif w.item.partial:
                    fit_partial_item(lm, w.item, truncate="error")
                else:
                    fit_item(lm, w.item, truncate="error")
            except interp.InterpError:
                too_long.append(w.item.id)
        assert not too_long, f"{member}: fixture items longer than the toy pair's context: {too_long}"


def test_calibration_with_nothing_scored_is_an_error():
    rows = [mc_row(f"i{i}", [0.0, 0.0], 0, skipped="longer than the model's 8 positions (--truncate skip)")
            for i in range(2)]
    with pytest.raises(StudyError, match=r"no item was scored: t \(base\): 2 of 2 items skipped, nothing scored: "
                                         r"longer .* --truncate left scores long items"):
        calibration.summarize(rows, n_boot=10)
