"""Figures draw their input: the matplotlib Figure each function builds (captured before it
is saved) holds the panels, bars, lines and labels of the table it was given; the PNG read
back is not blank and shows each model's colour; the PDF has one page. Malformed tables are
rejected."""

import numpy as np
import pandas as pd
import pytest

import figures.by_layer
import figures.patching_heatmap
import figures.reliability
import figures.task_bars
from figures._save import MODEL_COLORS
from figures.by_layer import plot_by_layer
from figures.patching_heatmap import heatmap_grids, plot_patching_heatmap
from figures.reliability import plot_reliability
from figures.task_bars import plot_task_bars
from probes.calibration import bootstrap_ci, ece, reliability_diagram
from tests.conftest import assert_figure_files

COLORS = (MODEL_COLORS["base"], MODEL_COLORS["chat"])


@pytest.fixture
def drawn(monkeypatch):
    """``drawn[module]``: the Figure that module's plot function saved last."""
    figs = {}
    for module in (figures.by_layer, figures.patching_heatmap, figures.reliability, figures.task_bars):
        original = module.save

        def capture(fig, stem, *args, _module=module, _original=original, **kwargs):
            figs[_module.__name__.split(".")[-1]] = fig
            return _original(fig, stem, *args, **kwargs)

        monkeypatch.setattr(module, "save", capture)
    return figs


def _written(paths, stem, colors=COLORS):
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    assert_figure_files(stem, colors)


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _bar_heights(ax):
    return [p.get_height() for p in ax.patches]


def test_reliability_figure(tmp_path, drawn):
    rng = np.random.default_rng(0)
    rows, summary, diagrams = [], [], {}
    for model, shift in [("base", 0.0), ("chat", 0.2)]:
        conf = rng.uniform(0.3, 1.0, 300)
        correct = rng.uniform(size=300) < conf - shift
        diagrams[model] = reliability_diagram(conf, correct, n_bins=10)
        rows += diagrams[model].to_records(model=model)
        ci = bootstrap_ci(ece, conf, correct, n_boot=100)
        summary.append({"model": model, "ece": ci.estimate, "ece_low": ci.low, "ece_high": ci.high})
    stem = tmp_path / "sub" / "reliability"
    _written(plot_reliability(pd.DataFrame(rows), stem, summary=pd.DataFrame(summary)), stem)
    axes = drawn["reliability"].axes
    assert len(axes) == 4  # per model an accuracy panel over a count panel (row-major order)
    for j, (model, s) in enumerate(zip(("base", "chat"), summary)):
        top, bottom, d = axes[j], axes[2 + j], diagrams[model]
        filled = d.counts > 0
        np.testing.assert_allclose(_bar_heights(top), d.accuracy[filled])
        np.testing.assert_allclose(_bar_heights(bottom), d.counts)
        dots = top.lines[0]  # (mean confidence, accuracy) of each non-empty bin
        np.testing.assert_allclose(dots.get_xdata(), d.mean_confidence[filled])
        np.testing.assert_allclose(dots.get_ydata(), d.accuracy[filled])
        assert top.get_title() == f"{model}: ECE = {s['ece']:.3f} [{s['ece_low']:.3f}, {s['ece_high']:.3f}]"
        assert [t.get_text() for t in bottom.texts] == [str(n) for n in d.counts[filled]]
    assert abs(summary[1]["ece"] - summary[0]["ece"]) > 0.1  # the titles tell the models apart


def test_task_bars_figure(tmp_path, drawn):
    df = pd.DataFrame({
        "task": ["boolq", "boolq", "cb", "cb"], "model": ["base", "chat"] * 2,
        "accuracy": [0.7, 0.75, 0.5, 0.45], "ci_low": [0.65, 0.7, 0.4, 0.35],
        "ci_high": [0.75, 0.8, 0.6, 0.55], "chance": [0.5, 0.5, 1 / 3, 1 / 3],
    })
    stem = tmp_path / "bars"
    _written(plot_task_bars(df, stem, title="0-shot"), stem)
    (ax,) = drawn["task_bars"].axes
    bars = ax.patches  # base's bars, then chat's, tasks in order
    np.testing.assert_allclose([b.get_height() for b in bars], [0.7, 0.5, 0.75, 0.45])
    assert [b.get_facecolor()[:3] for b in bars] == [pytest.approx(_rgb(MODEL_COLORS[m])) for m in ("base",) * 2 + ("chat",) * 2]
    centres = [b.get_x() + b.get_width() / 2 for b in bars]
    assert centres[0] < centres[2] < centres[1] < centres[3]  # base left of chat within each task
    assert [t.get_text() for t in ax.get_xticklabels()] == ["boolq", "cb"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["base", "chat"]
    assert ax.get_title() == "0-shot" and ax.get_ylabel() == "accuracy" and ax.get_ylim() == (0, 1)
    chance = [seg[0][1] for c in ax.collections if hasattr(c, "get_segments") for seg in c.get_segments()
              if len(c.get_segments()) == 1]
    np.testing.assert_allclose(sorted(chance), [1 / 3, 0.5])
    # error bars span each bar's interval
    spans = sorted(tuple(np.round(seg[:, 1], 6)) for c in ax.collections if hasattr(c, "get_segments")
                   for seg in c.get_segments() if seg[0][0] == seg[1][0])
    assert spans == sorted([(0.65, 0.75), (0.4, 0.6), (0.7, 0.8), (0.35, 0.55)])
    with pytest.raises(ValueError, match="more than one row"):
        plot_task_bars(pd.concat([df, df]), tmp_path / "dup")


def _rgb(hex_color):
    return tuple(int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))


def test_by_layer_figure_with_facets(tmp_path, drawn):
    layers = np.arange(8)
    df = pd.DataFrame([
        {"task": t, "model": m, "layer": l, "value": l / 10 + k + (0.05 if m == "chat" else 0)}
        for k, t in enumerate(["boolq", "cb", "rte"]) for m in ["base", "chat"] for l in layers
    ])
    stem = tmp_path / "by_layer"
    _written(plot_by_layer(df, stem, facet_col="task", ylabel="accuracy"), stem)
    axes = _visible_axes(drawn["by_layer"])
    assert [ax.get_title() for ax in axes] == ["boolq", "cb", "rte"]
    assert axes[0].get_ylabel() == "accuracy" and all(ax.get_xlabel() == "layer" for ax in axes)
    for k, ax in enumerate(axes):
        assert [line.get_label() for line in ax.lines] == ["base", "chat"]
        for line, extra in zip(ax.lines, (0.0, 0.05)):
            np.testing.assert_allclose(line.get_xdata(), layers)
            np.testing.assert_allclose(line.get_ydata(), layers / 10 + k + extra)
    with pytest.raises(KeyError, match="missing column"):
        plot_by_layer(df.drop(columns="layer"), tmp_path / "x")


def test_patching_heatmap(tmp_path, drawn):
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
    _written(plot_patching_heatmap(df, stem, title="t"), stem, colors=())
    fig = drawn["patching_heatmap"]
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["base", "chat", "chat - base"]
    assert fig._suptitle.get_text() == "t"
    for ax, (name, grid) in zip(panels, grids.items()):
        np.testing.assert_allclose(np.ma.filled(ax.images[0].get_array(), np.nan), grid)
        assert [t.get_text() for t in ax.get_xticklabels()] == roles
        assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1"]
        assert [t.get_text() for t in ax.texts] == [f"{0.0 if abs(v) < 0.005 else v:.2f}" for v in grid.flat if np.isfinite(v)]
    with pytest.raises(KeyError, match="position_mean"):
        heatmap_grids(df.drop(columns=["position_mean"]))
