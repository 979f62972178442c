"""Per context, a distribution over options from several sources, as grouped bars.

Input: tidy rows with columns ``panel`` (one panel each, e.g. a context "4 seen, 2 red"),
``option`` (an expression, a number of red balls), ``source`` (``human``, ``base``, ``chat``)
and ``prob``. Human bars are grey, models in their colours (:mod:`figures._save`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from figures._save import model_color, require_columns, save
from figures.rank_by_layer import DPI, facet_axes

HUMAN_COLOR = "#7F7F7F"


def plot_distribution_bars(df: pd.DataFrame, stem: str | os.PathLike[str], panel_col: str = "panel",
                           option_col: str = "option", source_col: str = "source", value_col: str = "prob",
                           title: str | None = None, max_cols: int = 5, horizontal: bool = True) -> list[Path]:
    """One panel per ``panel_col`` value, bars of ``value_col`` per option and source."""
    require_columns(df, (panel_col, option_col, source_col, value_col), "distribution bars")
    panels = list(dict.fromkeys(df[panel_col]))
    options = list(dict.fromkeys(df[option_col]))
    sources = list(dict.fromkeys(df[source_col]))
    size = (3.0, 0.22 * len(options) + 0.8) if horizontal else (0.25 * len(options) + 1.2, 2.2)
    fig, axes = facet_axes(panels, max_cols=max_cols, panel=size)
    width = 0.8 / len(sources)
    pos = np.arange(len(options))
    for ax, panel in zip(axes, panels):
        part = df[df[panel_col] == panel]
        for j, source in enumerate(sources):
            values = (part[part[source_col] == source].set_index(option_col)[value_col]
                      .reindex(options).to_numpy(dtype=float))
            color = HUMAN_COLOR if source == "human" else model_color(source, j)
            offset = pos + (j - (len(sources) - 1) / 2) * width
            (ax.barh if horizontal else ax.bar)(offset, np.nan_to_num(values), width, color=color, label=str(source))
        ax.set_title(str(panel), fontsize=8)
        if horizontal:
            ax.set_yticks(pos, options, fontsize=6)
            ax.invert_yaxis()
        else:
            ax.set_xticks(pos, options, fontsize=6)
        ax.tick_params(labelsize=6)
    axes[0].legend(frameon=False, fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9, y=1.0 + 0.3 / fig.get_figheight())
    return save(fig, stem, dpi=DPI)
