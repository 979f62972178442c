"""Activation patching heatmaps: restored fraction by layer x position role, one panel per
model and one for their difference.

Input: a tidy table with one row per model x layer x role and columns ``model``, ``layer``,
``role``, ``restored_mean`` and ``position_mean`` (orders the roles left to right). With both
``base`` and ``chat`` rows a third panel shows ``chat - base``. Cells are annotated with their
value when the grid is small enough to read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from figures._save import require_columns, save

ANNOTATE_MAX_CELLS = 200


def heatmap_grids(df: pd.DataFrame) -> tuple[list[int], list[str], dict[str, np.ndarray]]:
    """``(layers, roles, {panel: grid [layer, role]})``: one panel per model (in order of
    appearance), plus ``chat - base`` when both are there; roles ordered by mean position;
    missing cells are NaN."""
    require_columns(df, ("model", "layer", "role", "restored_mean", "position_mean"), "patching heatmap")
    roles = df.groupby("role")["position_mean"].mean().sort_values().index.tolist()
    layers = sorted(int(layer) for layer in df["layer"].unique())
    grids = {}
    for model, part in df.groupby("model", sort=False):
        table = part.pivot_table(index="layer", columns="role", values="restored_mean", aggfunc="mean")
        grids[str(model)] = table.reindex(index=layers, columns=roles).to_numpy(dtype=float)
    if "base" in grids and "chat" in grids:
        grids["chat - base"] = grids["chat"] - grids["base"]
    return layers, roles, grids


def plot_patching_heatmap(df: pd.DataFrame, stem: str | os.PathLike[str], title: str | None = None) -> list[Path]:
    """Writes ``stem.png`` and ``stem.pdf``; returns their paths."""
    import matplotlib.pyplot as plt

    layers, order, grids = heatmap_grids(df)
    panels = list(grids.items())
    width = max(3.0, 0.55 * len(order) + 1.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 0.45 * len(layers) + 2.2), squeeze=False)
    for ax, (name, grid) in zip(axes[0], panels):
        limit = max(1.0, float(np.nanmax(np.abs(grid)))) if np.isfinite(grid).any() else 1.0
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers], fontsize=8)
        ax.set_xlabel("position (role)")
        ax.set_ylabel("block")
        ax.set_title(name)
        if grid.size <= ANNOTATE_MAX_CELLS:
            for (i, j), value in np.ndenumerate(grid):
                if np.isfinite(value):
                    shown = 0.0 if abs(value) < 0.005 else value  # no "-0.00" for float noise
                    ax.text(j, i, f"{shown:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if abs(value) > 0.6 * limit else "black")
        fig.colorbar(image, ax=ax, shrink=0.8, label="restored fraction" if name != "chat - base" else "difference")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save(fig, stem)
