"""Where the argument and the answer first become the top-1 early-decoded token.

Input: a tidy table with one row per model x condition x layer with columns ``layer``,
``model``, a facet column (default ``condition``), ``answer_first_top1_frac`` and
``argument_first_top1_frac`` (fraction of items whose first top-1 block is this layer).
Drawn cumulatively: the fraction of items whose token has been top-1 at some block <= l
(answer solid, argument dashed, one colour per model); what stays below 1 never is.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from figures._save import model_color, require_columns, save
from figures.rank_by_layer import DPI, facet_axes, layer_ticks


def plot_first_top1(
    df: pd.DataFrame,
    stem: str | os.PathLike[str],
    answer_col: str = "answer_first_top1_frac",
    argument_col: str = "argument_first_top1_frac",
    facet_col: str = "condition",
    title: str | None = None,
) -> list[Path]:
    """Cumulative first-top-1 block per model and token; writes ``stem.png`` and ``stem.pdf``."""
    require_columns(df, ("layer", "model", facet_col, answer_col, argument_col), "first-top1")
    df = df[df["layer"] >= 0]
    facets = list(dict.fromkeys(df[facet_col]))
    models = list(dict.fromkeys(df["model"]))
    fig, axes = facet_axes(facets)
    for ax, facet in zip(axes, facets):
        part = df[df[facet_col] == facet]
        for j, model in enumerate(models):
            d = part[part["model"] == model].sort_values("layer")
            color = model_color(model, j)
            ax.step(d["layer"], d[answer_col].cumsum(), where="post", color=color, label=f"{model} answer")
            ax.step(d["layer"], d[argument_col].cumsum(), where="post", ls="--", color=color,
                    label=f"{model} argument")
        layer_ticks(ax, part["layer"])
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(str(facet), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("items top-1 by block l", fontsize=8)
    axes[0].legend(frameon=False, fontsize=6)
    fig.supxlabel("first block where the token is top-1 (cumulative)", fontsize=8)
    if title:
        fig.suptitle(title)
    return save(fig, stem, dpi=DPI)
