"""Per-task accuracy bars, models side by side, with CI error bars.

Input: one row per task x model with columns ``task``, ``model``, ``accuracy`` and
optionally ``ci_low``/``ci_high`` (absolute bounds) and ``chance`` (drawn as a tick).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures._save import model_color, require_columns, save


def plot_task_bars(
    df: pd.DataFrame,
    stem: str | os.PathLike[str],
    value_col: str = "accuracy",
    task_col: str = "task",
    model_col: str = "model",
    low_col: str = "ci_low",
    high_col: str = "ci_high",
    chance_col: str = "chance",
    ylabel: str | None = None,
    title: str | None = None,
) -> list[Path]:
    """Grouped bars of ``value_col`` per task, one bar per model; writes PNG and PDF."""
    require_columns(df, (task_col, model_col, value_col), "task bars")
    tasks = list(dict.fromkeys(df[task_col]))
    models = list(dict.fromkeys(df[model_col]))
    if df.duplicated([task_col, model_col]).any():
        raise ValueError(f"task bars: more than one row per ({task_col}, {model_col})")
    width = 0.8 / len(models)
    x = np.arange(len(tasks))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(tasks) + 1.5), 3.4))
    for j, model in enumerate(models):
        d = df[df[model_col] == model].set_index(task_col).reindex(tasks)
        values = d[value_col].to_numpy(dtype=float)
        yerr = None
        if low_col in d and high_col in d:
            yerr = np.vstack([values - d[low_col].to_numpy(dtype=float), d[high_col].to_numpy(dtype=float) - values])
            yerr = np.where(np.isnan(yerr), 0.0, yerr)
        ax.bar(x + (j - (len(models) - 1) / 2) * width, values, width, yerr=yerr, capsize=2,
               label=str(model), color=model_color(model, j), edgecolor="white")
    if chance_col in df:
        chance = df.groupby(task_col, sort=False)[chance_col].first().reindex(tasks).to_numpy(dtype=float)
        for xi, c in zip(x, chance):
            if np.isfinite(c):
                ax.hlines(c, xi - 0.45, xi + 0.45, colors="black", linestyles=":", lw=1)
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel(ylabel or value_col)
    if value_col == "accuracy":
        ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save(fig, stem)
