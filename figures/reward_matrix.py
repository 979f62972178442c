"""Reward-model distance matrices: one annotated heatmap per measure (STARC, Spearman, Kendall...).

Input: a tidy table with one row per unordered pair of reward models (columns ``reward_a``,
``reward_b`` and one column per measure). The matrix is symmetric; its diagonal is the value
of a reward model with itself (``diagonal``: 0 for a distance, 1 for a correlation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from figures._save import require_columns, save


def matrix(df: pd.DataFrame, measure: str, names: Sequence[str], diagonal: float) -> np.ndarray:
    """``[len(names), len(names)]`` symmetric matrix of ``measure`` (NaN where a pair is missing)."""
    index = {n: i for i, n in enumerate(names)}
    out = np.full((len(names), len(names)), np.nan)
    np.fill_diagonal(out, diagonal)
    for row in df.itertuples():
        i, j = index[row.reward_a], index[row.reward_b]
        out[i, j] = out[j, i] = getattr(row, measure)
    return out


def plot_reward_matrix(df: pd.DataFrame, stem: str | os.PathLike[str], measures: Mapping[str, tuple[str, float]],
                       names: Sequence[str], title: str | None = None) -> list[Path]:
    """``measures``: column -> (panel title, diagonal value). Writes ``stem.png`` / ``.pdf``."""
    import matplotlib.pyplot as plt

    require_columns(df, ("reward_a", "reward_b", *measures), "reward matrix")
    size = 0.7 * len(names) + 1.8
    fig, axes = plt.subplots(1, len(measures), figsize=(size * len(measures), size), squeeze=False)
    for ax, (measure, (label, diagonal)) in zip(axes[0], measures.items()):
        grid = matrix(df, measure, names, diagonal)
        distance = diagonal == 0
        image = ax.imshow(grid, cmap="viridis" if distance else "RdBu_r", vmin=0 if distance else -1, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(label, fontsize=10)
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                dark = value < 0.5 if distance else abs(value) > 0.6
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save(fig, stem)
