"""A per-layer metric of early decoding, base vs chat, one panel per condition.

Input: a tidy table with one row per model x condition x layer (e.g. the ``summary.csv`` of
``studies.ffn_capitals``): columns ``layer`` (``-1`` = embedding, drawn as "emb"),
``model``, a facet column (default ``condition``) and the metric(s).

- :func:`plot_rank_by_layer`: one metric (answer rank, probability, ...), one line per model.
- :func:`plot_contribution_by_layer`: direct contribution of the attention (solid) and FFN
  (dashed) update of each block to the answer logit, one colour per model.

:func:`facet_axes` is the shared panel layout of the study's figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from figures._save import model_color, require_columns, save


def facet_axes(facets: Sequence, max_cols: int = 3, panel: tuple[float, float] = (3.2, 2.5), sharey: bool = True):
    """``(fig, [ax per facet])`` on a grid of at most ``max_cols`` columns; spare axes hidden."""
    ncols = max(1, min(max_cols, len(facets)))
    nrows = max(1, math.ceil(len(facets) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows + 0.6), squeeze=False,
                             sharey=sharey, sharex=True)
    # fixed margins: a layout engine redraws the figure and costs seconds with many panels
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / (panel[1] * nrows + 0.6) + 0.02,
                        top=1 - 0.35 / (panel[1] * nrows + 0.6), hspace=0.35, wspace=0.08)
    flat = [axes[i // ncols, i % ncols] for i in range(nrows * ncols)]
    for ax in flat[len(facets):]:
        ax.set_visible(False)
    return fig, flat[:len(facets)]


DPI = 120  # PNG resolution: readable, and quick to render for grids of many panels


def layer_ticks(ax, layers: Sequence[int]) -> None:
    """Integer layer ticks, ``-1`` labelled "emb"."""
    layers = sorted(set(int(x) for x in layers))
    ax.set_xticks(layers)
    ax.set_xticklabels(["emb" if x < 0 else str(x) for x in layers], fontsize=7)


def _facets(df: pd.DataFrame, facet_col: str) -> list:
    return list(dict.fromkeys(df[facet_col]))


def plot_rank_by_layer(
    df: pd.DataFrame,
    stem: str | os.PathLike[str],
    value_col: str = "answer_rank_mean",
    ylabel: str | None = None,
    log: bool = False,
    facet_col: str = "condition",
    title: str | None = None,
) -> list[Path]:
    """Line plot of ``value_col`` by layer per model, one panel per ``facet_col`` value.

    With ``log=True`` the axis is logarithmic and ``value + 1`` is drawn (rank 0 = top-1).
    Writes ``stem.png`` and ``stem.pdf``.
    """
    require_columns(df, ("layer", "model", facet_col, value_col), "rank-by-layer")
    facets = _facets(df, facet_col)
    fig, axes = facet_axes(facets)
    models = list(dict.fromkeys(df["model"]))
    for ax, facet in zip(axes, facets):
        part = df[df[facet_col] == facet]
        for j, model in enumerate(models):
            d = part[part["model"] == model].sort_values("layer")
            y = d[value_col] + 1 if log else d[value_col]
            ax.plot(d["layer"], y, marker="o", ms=3, color=model_color(model, j), label=str(model))
        if log:
            ax.set_yscale("log")
        layer_ticks(ax, part["layer"])
        ax.set_title(str(facet), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel or value_col, fontsize=8)
    axes[0].legend(frameon=False, fontsize=7)
    fig.supxlabel("layer (logit lens of resid_post; emb = embedding)", fontsize=8)
    if title:
        fig.suptitle(title)

    return save(fig, stem, dpi=DPI)


def plot_contribution_by_layer(
    df: pd.DataFrame,
    stem: str | os.PathLike[str],
    attn_col: str = "dla_attn_mean",
    ffn_col: str = "dla_ffn_mean",
    facet_col: str = "condition",
    title: str | None = None,
) -> list[Path]:
    """Mean direct contribution of each block's attention (solid) and FFN (dashed) update to
    the answer logit, per model and panel. Writes ``stem.png`` and ``stem.pdf``."""
    require_columns(df, ("layer", "model", facet_col, attn_col, ffn_col), "contribution-by-layer")
    df = df[df["layer"] >= 0]
    facets = _facets(df, facet_col)
    fig, axes = facet_axes(facets)
    models = list(dict.fromkeys(df["model"]))
    for ax, facet in zip(axes, facets):
        part = df[df[facet_col] == facet]
        for j, model in enumerate(models):
            d = part[part["model"] == model].sort_values("layer")
            color = model_color(model, j)
            ax.plot(d["layer"], d[attn_col], marker="o", ms=3, color=color, label=f"{model} attention")
            ax.plot(d["layer"], d[ffn_col], marker="s", ms=3, ls="--", color=color, label=f"{model} FFN")
        ax.axhline(0, color="grey", lw=0.6)
        layer_ticks(ax, part["layer"])
        ax.set_title(str(facet), fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("direct contribution to answer logit", fontsize=8)
    axes[0].legend(frameon=False, fontsize=6)
    fig.supxlabel("block", fontsize=8)
    if title:
        fig.suptitle(title)

    return save(fig, stem, dpi=DPI)
