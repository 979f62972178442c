"""End-to-end runs of ``python -m studies.calibration`` on the toy pair, and its tables."""

import json

import numpy as np
import pandas as pd
import pytest

from probes.calibration import ece
from studies import calibration

pytestmark = pytest.mark.skipif(not (calibration.Path(__file__).parents[1] / "models/toy/base").exists(),
                                reason="models/toy not built (python -m toy_pair.train)")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibration")
    argv = ["--tasks", "toy_capitals,triviaqa_mc,triviaqa_ptrue", "--limit", "6", "--bins", "5", "--out", str(out)]
    assert calibration.main(argv) == 0
    return out


def test_tables_and_figures(run):
    summary = pd.read_csv(run / "summary.csv")
    assert set(summary.task) == {"toy_capitals", "triviaqa_mc", "triviaqa_ptrue"}
    assert set(summary.layer) == {"final", *map(str, range(6))}
    assert (summary.ece_low <= summary.ece_high).all() and summary.ece.between(0, 1).all()
    assert set(summary[summary.task == "triviaqa_ptrue"].kind) == {"p_true"}
    temps = pd.read_csv(run / "temperature.csv")
    assert set(temps.task) == {"toy_capitals", "triviaqa_mc"} and temps.temperature.nunique() > 5
    bins = pd.read_csv(run / "reliability.csv")
    assert set(bins.model) == {"base", "chat"} and len(bins) == 3 * 2 * 5
    for stem in ("reliability_triviaqa_ptrue", "ece_by_layer", "ece_by_temperature"):
        assert (run / f"{stem}.png").exists() and (run / f"{stem}.pdf").exists()


def test_ece_and_p_true_recomputed_from_rows(run):
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    summary = pd.read_csv(run / "summary.csv").set_index(["model", "task", "layer"])
    chat = [r for r in rows if r["model"] == "chat" and r["task"] == "triviaqa_ptrue"]
    logits = np.array([r["logprobs"][0] for r in chat])
    p_true = 1 / (1 + np.exp(logits[:, 1] - logits[:, 0]))
    np.testing.assert_allclose(p_true, [r["p_true"] for r in chat], atol=1e-5)
    correct = np.array([r["label"] == 0 for r in chat])
    assert summary.loc[("chat", "triviaqa_ptrue", "final"), "ece"] == pytest.approx(ece(p_true, correct, 5), abs=1e-4)
