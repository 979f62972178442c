"""Figures write non-empty PNG and PDF files and reject malformed tables."""

import numpy as np
import pandas as pd
import pytest

from figures.by_layer import plot_by_layer
from figures.patching_heatmap import heatmap_grids, plot_patching_heatmap
from figures.reliability import plot_reliability
from figures.task_bars import plot_task_bars
from probes.calibration import bootstrap_ci, ece, reliability_diagram


def _written(paths, stem):
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000


def test_reliability_figure(tmp_path):
    rng = np.random.default_rng(0)
    rows, summary = [], []
    for model, shift in [("base", 0.0), ("chat", 0.2)]:
        conf = rng.uniform(0.3, 1.0, 300)
        correct = rng.uniform(size=300) < conf - shift
        rows += reliability_diagram(conf, correct, n_bins=10).to_records(model=model)
        ci = bootstrap_ci(ece, conf, correct, n_boot=100)
        summary.append({"model": model, "ece": ci.estimate, "ece_low": ci.low, "ece_high": ci.high})
    stem = tmp_path / "sub" / "reliability"
    _written(plot_reliability(pd.DataFrame(rows), stem, summary=pd.DataFrame(summary)), stem)


def test_task_bars_figure(tmp_path):
    df = pd.DataFrame({
        "task": ["boolq", "boolq", "cb", "cb"], "model": ["base", "chat"] * 2,
        "accuracy": [0.7, 0.75, 0.5, 0.45], "ci_low": [0.65, 0.7, 0.4, 0.35],
        "ci_high": [0.75, 0.8, 0.6, 0.55], "chance": [0.5, 0.5, 1 / 3, 1 / 3],
    })
    stem = tmp_path / "bars"
    _written(plot_task_bars(df, stem), stem)
    with pytest.raises(ValueError, match="more than one row"):
        plot_task_bars(pd.concat([df, df]), tmp_path / "dup")


def test_by_layer_figure_with_facets(tmp_path):
    layers = np.arange(8)
    df = pd.DataFrame([
        {"task": t, "model": m, "layer": l, "value": l / 10 + (0.05 if m == "chat" else 0)}
        for t in ["boolq", "cb", "rte"] for m in ["base", "chat"] for l in layers
    ])
    stem = tmp_path / "by_layer"
    _written(plot_by_layer(df, stem, facet_col="task", ylabel="accuracy"), stem)
    with pytest.raises(KeyError, match="missing column"):
        plot_by_layer(df.drop(columns="layer"), tmp_path / "x")


def test_patching_heatmap(tmp_path):
    rows = [{"model": m, "layer": layer, "role": role, "restored_mean": v, "position_mean": pos}
            for m, scale in [("base", 1.0), ("chat", 0.5)]
            for layer in (0, 1)
            for role, pos, v in [("is@+1", 4.0, 0.8), ("subject_first", 2.0, 0.3), ("The@-2", 0.0, 0.0)]
            for v in [scale * v + layer]]
    df = pd.DataFrame(rows[:-1])  # chat misses (layer 1, The@-2)
    layers, roles, grids = heatmap_grids(df)
    assert layers == [0, 1] and roles == ["The@-2", "subject_first", "is@+1"]  # ordered by position
    assert list(grids) == ["base", "chat", "chat - base"]
    np.testing.assert_allclose(grids["base"], [[0.0, 0.3, 0.8], [1.0, 1.3, 1.8]])
    np.testing.assert_allclose(grids["chat - base"][0], [0.0, -0.15, -0.4])
    assert np.isnan(grids["chat"][1, 0]) and np.isnan(grids["chat - base"][1, 0])
    stem = tmp_path / "heat"
    _written(plot_patching_heatmap(df, stem, title="t"), stem)
    with pytest.raises(KeyError, match="position_mean"):
        heatmap_grids(df.drop(columns=["position_mean"]))
