"""Reward distributions: overlaid histograms with a KDE, one panel per facet (e.g. response format).

Input: tidy rows with a value column (``reward``), a group column whose groups are overlaid
(``which``: ``correct`` / ``incorrect``, or ``base`` / ``chat`` samples) and optionally a facet
column (``format``). Each panel shares its bins across groups so the overlap is visible.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures._save import model_color, require_columns, save

GROUP_COLORS = {"correct": "#55A868", "chosen": "#55A868", "incorrect": "#C44E52", "rejected": "#C44E52"}


def _color(group: str, index: int) -> str:
    return GROUP_COLORS.get(str(group), model_color(group, index + 2))


def plot_reward_histograms(
    df: pd.DataFrame,
    stem: str | os.PathLike[str],
    value_col: str = "reward",
    group_col: str = "which",
    facet_col: str | None = "format",
    bins: int = 20,
    xlabel: str = "reward",
    title: str | None = None,
    max_cols: int = 5,
) -> list[Path]:
    """Overlaid density histograms (and a Gaussian KDE where a group has two distinct values)
    of ``value_col`` per group, one panel per facet; writes PNG and PDF."""
    from scipy.stats import gaussian_kde

    require_columns(df, (value_col, group_col) + ((facet_col,) if facet_col else ()), "reward histograms")
    facets = list(dict.fromkeys(df[facet_col])) if facet_col else [None]
    ncols = min(max_cols, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
    groups = list(dict.fromkeys(df[group_col]))
    for k, facet in enumerate(facets):
        ax = axes[k // ncols, k % ncols]
        part = df if facet is None else df[df[facet_col] == facet]
        values = part[value_col].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if values.size == 0:
            ax.set_visible(False)
            continue
        lo, hi = float(values.min()), float(values.max())
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
        for j, group in enumerate(groups):
            v = part.loc[part[group_col] == group, value_col].to_numpy(dtype=float)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            color = _color(group, j)
            ax.hist(v, bins=edges, density=True, alpha=0.45, color=color, label=f"{group} (n={v.size})")
            if np.unique(v).size > 1:
                grid = np.linspace(edges[0], edges[-1], 200)
                ax.plot(grid, gaussian_kde(v)(grid), color=color, lw=1.2)
        ax.set_xlabel(xlabel)
        if facet is not None:
            ax.set_title(str(facet))
        ax.legend(frameon=False, fontsize=7)
        ax.grid(alpha=0.3)
    for k in range(len(facets), nrows * ncols):
        axes[k // ncols, k % ncols].set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)
