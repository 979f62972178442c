"""Reliability diagrams, one panel per model, side by side.

Input is tidy per-bin data, one row per model x bin, as produced by
``probes.calibration.ReliabilityDiagram.to_records(model=...)``: columns ``model``,
``bin_lower``, ``bin_upper``, ``mean_confidence``, ``accuracy``, ``count``.  An optional
summary table (``model``, ``ece``, and optionally ``ece_low``, ``ece_high``) puts the ECE
with its CI in each panel title.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures._save import model_color, require_columns, save

BIN_COLUMNS = ("model", "bin_lower", "bin_upper", "mean_confidence", "accuracy", "count")


def _title(model: str, summary: pd.DataFrame | None) -> str:
    if summary is None or model not in set(summary["model"]):
        return str(model)
    row = summary.loc[summary["model"] == model].iloc[0]
    text = f"{model}: ECE = {row['ece']:.3f}"
    if "ece_low" in row and "ece_high" in row and pd.notna(row["ece_low"]):
        text += f" [{row['ece_low']:.3f}, {row['ece_high']:.3f}]"
    return text


def plot_reliability(
    bins: pd.DataFrame,
    stem: str | os.PathLike[str],
    summary: pd.DataFrame | None = None,
    models: list[str] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Reliability diagrams (accuracy per confidence bin, diagonal = perfect calibration)
    with a count histogram under each panel; writes ``stem.png`` and ``stem.pdf``."""
    require_columns(bins, BIN_COLUMNS, "reliability bins")
    if summary is not None:
        require_columns(summary, ("model", "ece"), "reliability summary")
    models = models or list(dict.fromkeys(bins["model"]))
    if not models:
        raise ValueError("no models to plot")
    fig, axes = plt.subplots(
        2, len(models), figsize=(3.6 * len(models), 4.6), squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]}, sharex=True,
    )
    for j, model in enumerate(models):
        d = bins[bins["model"] == model].sort_values("bin_lower")
        if d.empty:
            raise KeyError(f"no bins for model {model!r}; models are {sorted(set(bins['model']))}")
        ax, ax_n = axes[0, j], axes[1, j]
        widths = (d["bin_upper"] - d["bin_lower"]).to_numpy()
        left = d["bin_lower"].to_numpy()
        filled = d["count"].to_numpy() > 0
        color = model_color(model, j)
        ax.bar(left[filled], d["accuracy"].to_numpy()[filled], width=widths[filled], align="edge",
               color=color, edgecolor="white", alpha=0.85, label="accuracy")
        ax.plot(d["mean_confidence"].to_numpy()[filled], d["accuracy"].to_numpy()[filled], "o",
                color="black", ms=3, label="(mean confidence, accuracy)")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), title=_title(model, summary))
        if j == 0:
            ax.set_ylabel("accuracy")
            ax.legend(loc="upper left", fontsize=7, frameon=False)
        ax_n.bar(left, d["count"].to_numpy(), width=widths, align="edge", color=color, edgecolor="white")
        ax_n.set_xlabel("confidence")
        if j == 0:
            ax_n.set_ylabel("count")
        for x, w, n in zip(left, widths, d["count"].to_numpy()):
            if n > 0:
                ax_n.annotate(str(int(n)), (x + w / 2, n), ha="center", va="bottom", fontsize=6)
        ax_n.set_ylim(0, max(1, np.max(d["count"].to_numpy())) * 1.25)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)
