"""A metric by layer, one line per model, optionally one facet per task.

Input: tidy rows with columns ``layer``, ``model``, the metric (``value_col``), and
optionally ``ci_low``/``ci_high`` (drawn as a band) and a facet column (e.g. ``task``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures._save import model_color, require_columns, save


def plot_by_layer(
    df: pd.DataFrame,
    stem: str | os.PathLike[str],
    value_col: str = "value",
    layer_col: str = "layer",
    model_col: str = "model",
    facet_col: str | None = None,
    low_col: str = "ci_low",
    high_col: str = "ci_high",
    ylabel: str | None = None,
    title: str | None = None,
    max_cols: int = 4,
) -> list[Path]:
    """Line plot of ``value_col`` against ``layer_col`` per model; writes PNG and PDF."""
    require_columns(df, (layer_col, model_col, value_col) + ((facet_col,) if facet_col else ()), "by-layer")
    facets = list(dict.fromkeys(df[facet_col])) if facet_col else [None]
    ncols = min(max_cols, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), squeeze=False, sharey=True)
    models = list(dict.fromkeys(df[model_col]))
    for k, facet in enumerate(facets):
        ax = axes[k // ncols, k % ncols]
        part = df if facet is None else df[df[facet_col] == facet]
        for j, model in enumerate(models):
            d = part[part[model_col] == model].sort_values(layer_col)
            if d.empty:
                continue
            color = model_color(model, j)
            # earlier models drawn wider underneath: where two models coincide (chat = base
            # at some layers), both stay visible instead of the last one hiding the first
            wider = len(models) - 1 - j
            ax.plot(d[layer_col], d[value_col], marker="o", ms=3 + 2 * wider, lw=1.5 + 2 * wider,
                    color=color, label=str(model))
            if low_col in d and high_col in d:
                ax.fill_between(d[layer_col], d[low_col], d[high_col], color=color, alpha=0.2, lw=0)
        ax.set_xlabel(layer_col)
        if k % ncols == 0:
            ax.set_ylabel(ylabel or value_col)
        if facet is not None:
            ax.set_title(str(facet))
        ax.grid(alpha=0.3)
    for k in range(len(facets), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    axes[0, 0].legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)
