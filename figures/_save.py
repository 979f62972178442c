"""Shared helpers for figure modules: the Agg backend, the model palette, and ``save``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

FORMATS = ("png", "pdf")
MODEL_COLORS = {"base": "#4C72B0", "chat": "#DD8452"}
_FALLBACK = plt.rcParams["axes.prop_cycle"].by_key()["color"]


def model_color(model: str, index: int = 0) -> str:
    """A stable colour for a model name (``base``/``chat`` fixed, others from the cycle)."""
    return MODEL_COLORS.get(str(model), _FALLBACK[index % len(_FALLBACK)])


def save(fig: Figure, stem: str | os.PathLike[str], formats: Sequence[str] = FORMATS, dpi: int = 200) -> list[Path]:
    """Write ``fig`` to ``stem.<fmt>`` for each format (parents created), close it, and
    return the paths written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def require_columns(df, columns: Sequence[str], what: str) -> None:
    """Raise a KeyError naming missing columns of a tidy table."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: missing column(s) {missing}; table has {list(df.columns)}")
