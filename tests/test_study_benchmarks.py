"""End-to-end runs of ``python -m studies.benchmarks`` on the toy pair."""

import json

import pandas as pd
import pytest

from studies import benchmarks

pytestmark = pytest.mark.skipif(not (benchmarks.Path(__file__).parents[1] / "models/toy/base").exists(),
                                reason="models/toy not built (python -m toy_pair.train)")
ARGS = ["--tasks", "toy_capitals,copa", "--limit", "4", "--shots", "0,1", "--generate", "1",
        "--max-new-tokens", "4", "--no-figures"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmarks")
    assert benchmarks.main([*ARGS, "--out", str(out)]) == 0
    return out


def test_writes_rows_summary_and_comparison(run):
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2 * 4  # models x tasks x shots x items
    toy = [r for r in rows if r["task"] == "toy_capitals" and not r["skipped"]]
    assert toy and all(len(r["logprobs"]) == 1 + 6 and len(r["logprobs"][0]) == 4 for r in toy)
    summary = pd.read_csv(run / "summary.csv")
    final = summary[(summary.layer == "final") & (summary.task == "toy_capitals") & (summary.shots == 0)]
    assert set(final.model) == {"base", "chat"} and (final.acc >= 0.75).all()  # the toy pair knows its capitals
    assert set(summary.layer) == {"final", *map(str, range(6))}
    comparison = pd.read_csv(run / "comparison.csv")
    assert {"mcnemar_p", "diff_low", "diff_high"} <= set(comparison.columns) and len(comparison) == 2 * 2 * 2
    gens = pd.read_csv(run / "generations.csv")
    assert len(gens) >= 2 and gens.generation.notna().all()
    meta = json.loads((run / "meta.json").read_text())
    assert meta["study"] == "benchmarks" and meta["options"]["shots"] == [0, 1]


def test_rerun_resumes_and_summary_is_from_rows_alone(run):
    before = (run / "results.jsonl").read_text()
    summary = (run / "summary.csv").read_text()
    assert benchmarks.main([*ARGS, "--out", str(run)]) == 0
    assert (run / "results.jsonl").read_text() == before  # nothing recomputed
    assert benchmarks.main([*ARGS, "--out", str(run), "--summary-only"]) == 0
    assert (run / "summary.csv").read_text() == summary


def test_figures_are_written(tmp_path):
    assert benchmarks.main(["--tasks", "toy_capitals", "--limit", "3", "--generate", "0", "--out", str(tmp_path)]) == 0
    for stem in ("accuracy_0shot_raw", "accuracy_by_layer_0shot_raw"):
        assert (tmp_path / f"{stem}.png").stat().st_size > 0 and (tmp_path / f"{stem}.pdf").exists()


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert benchmarks.main(["--tasks", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown task" in err and "boolq" in err and "Traceback" not in err
    assert benchmarks.main(["--tasks", "copa", "--data", f"copa={tmp_path}/missing.jsonl", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--data PATH" in err
