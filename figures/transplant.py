"""o-vector transplant accuracy by layer (Merullo et al. 2023).

Input: a tidy table with one row per model x condition x layer with columns ``layer``,
``model``, a facet column (default ``condition``) and, per target context ``t``,
``transplant_acc_<t>`` (answer top-1 at the output with block l's source FFN update added)
and optionally ``transplant_baseline_<t>`` (without it; dotted line). Colour = model, line
style = target context.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from figures._save import model_color, require_columns, save
from figures.rank_by_layer import DPI, facet_axes, layer_ticks

LINESTYLES = ("-", "--", "-.", ":")


def plot_transplant(
    df: pd.DataFrame,
    stem: str | os.PathLike[str],
    targets: Sequence[str] = ("bare",),
    facet_col: str = "condition",
    title: str | None = None,
) -> list[Path]:
    """Transplant accuracy by block per model and target; writes ``stem.png`` and ``stem.pdf``."""
    require_columns(df, ("layer", "model", facet_col) + tuple(f"transplant_acc_{t}" for t in targets), "transplant")
    df = df[df["layer"] >= 0]
    facets = list(dict.fromkeys(df[facet_col]))
    models = list(dict.fromkeys(df["model"]))
    fig, axes = facet_axes(facets)
    for ax, facet in zip(axes, facets):
        part = df[df[facet_col] == facet]
        for j, model in enumerate(models):
            d = part[part["model"] == model].sort_values("layer")
            color = model_color(model, j)
            for i, target in enumerate(targets):
                ls = LINESTYLES[i % len(LINESTYLES)]
                ax.plot(d["layer"], d[f"transplant_acc_{target}"], ls=ls, marker="o", ms=3, color=color,
                        label=f"{model} {target}")
                base_col = f"transplant_baseline_{target}"
                if base_col in d and len(d):
                    ax.axhline(float(d[base_col].iloc[0]), ls=":", lw=0.8, color=color, alpha=0.7)
        layer_ticks(ax, part["layer"])
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(str(facet), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("capital top-1 at the output", fontsize=8)
    axes[0].legend(frameon=False, fontsize=6)
    fig.supxlabel("block whose FFN update (o-vector) is added (dotted: no vector)", fontsize=8)
    if title:
        fig.suptitle(title)

    return save(fig, stem, dpi=DPI)
