"""Abstention figures: the abstention rate by category, models side by side, and the abstention
curve (accuracy on the answered items against the share abstained).

Inputs are ``studies.idk``'s tables: the summary (one row per model x chat template x category
with ``abstain_rate``, ``gen_abstain_rate``, ``n_generated``) and the curves (one row per model
x chat template x score x threshold with ``abstain_rate`` and ``accuracy``).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from figures._save import model_color, require_columns, save

MEASURES = (("abstain_rate", "log-prob: abstention preferred"), ("gen_abstain_rate", "free answer: abstains"))
SCORE_STYLES = {"confidence": "-", "preference": "--", "oracle": ":"}


def _template(value) -> str:
    return "chat template" if bool(value) else "raw prompt"


def plot_abstention_by_category(df: pd.DataFrame, stem: str | os.PathLike[str], title: str | None = None) -> list[Path]:
    """Bars of the abstention rate per category, one bar per model; a panel per measure
    (log-prob preference, free generation) and chat-template setting."""
    require_columns(df, ("model", "chat_template", "category", "abstain_rate"), "abstention by category")
    templates = list(dict.fromkeys(df["chat_template"]))
    measures = [m for m in MEASURES if m[0] in df and df[m[0]].notna().any()]
    categories = list(dict.fromkeys(df["category"]))
    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(len(templates), len(measures), squeeze=False, sharey=True,
                             figsize=(max(4.0, 0.8 * len(categories) + 1.5) * len(measures), 2.9 * len(templates)))
    width = 0.8 / len(models)
    x = np.arange(len(categories))
    for row, tmpl in enumerate(templates):
        for col, (measure, label) in enumerate(measures):
            ax = axes[row, col]
            d = df[df["chat_template"] == tmpl]
            for j, model in enumerate(models):
                values = d[d["model"] == model].set_index("category").reindex(categories)[measure].to_numpy(float)
                ax.bar(x + (j - (len(models) - 1) / 2) * width, values, width, label=str(model),
                       color=model_color(model, j), edgecolor="white")
            ax.set_xticks(x, categories, rotation=25, ha="right")
            ax.set_ylim(0, 1)
            ax.set_title(f"{label} ({_template(tmpl)})", fontsize=9)
            if col == 0:
                ax.set_ylabel("abstention rate")
    axes[0, 0].legend(frameon=False, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def plot_abstention_curve(curves: pd.DataFrame, stem: str | os.PathLike[str], title: str | None = None) -> list[Path]:
    """Accuracy on the answered items against the abstention rate, abstaining on the items of
    lowest score first; a line per model x score (confidence solid, abstention preference
    dashed, oracle dotted), a panel per chat-template setting."""
    require_columns(curves, ("model", "chat_template", "score", "abstain_rate", "accuracy"), "abstention curve")
    templates = list(dict.fromkeys(curves["chat_template"]))
    fig, axes = plt.subplots(1, len(templates), squeeze=False, sharey=True, figsize=(4.2 * len(templates), 3.4))
    for col, tmpl in enumerate(templates):
        ax = axes[0, col]
        d = curves[curves["chat_template"] == tmpl]
        for j, model in enumerate(dict.fromkeys(d["model"])):
            for score, g in d[d["model"] == model].groupby("score", sort=False):
                g = g.sort_values("abstain_rate")
                # points are thresholds; between two, a tie is answered in random order (a line)
                ax.plot(g["abstain_rate"], g["accuracy"], ls=SCORE_STYLES.get(score, "-"),
                        color=model_color(model, j), lw=1.3, label=f"{model}: {score}")
        ax.set_xlim(0, 1)
        ax.set_ylim(max(0.0, float(curves["accuracy"].min()) - 0.05), 1.01)
        ax.set_xlabel("abstention rate")
        ax.set_title(_template(tmpl), fontsize=9)
        if col == 0:
            ax.set_ylabel("accuracy on the answered items")
    axes[0, -1].legend(frameon=False, fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, stem)
