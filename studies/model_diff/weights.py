"""The weights part: ``weights.csv``, one row per stored tensor (:func:`interp.diff.weight_diff`),
and the heatmap of relative change by layer x module."""

from __future__ import annotations

import time
from pathlib import Path

from studies.model_diff.parts import Part

NAME = "weights"
COLUMNS = ("module", "param", "layer", "name", "shape", "dtype", "n_params", "base_norm", "abs_change", "rel_change",
           "n_changed", "frac_changed", "n_differ_fp32", "n_differ_bf16", "frac_differ_bf16")


def add_options(p) -> None:
    p.add_argument("--tol", type=float, default=0.0,
                   help="weights: an entry counts as changed when |chat - base| > TOL (default 0: any change, exact)")
    p.add_argument("--sv-k", type=int, default=4, help="weights: top singular values of each matrix's change (default 4)")
    p.add_argument("--spectrum-max-dim", type=int, default=4096,
                   help="weights: SVD only matrices whose smaller side is at most this (default 4096)")


def run(ctx) -> None:
    from interp.diff import tensor_files, weight_diff
    from studies._common import StudyError, progress

    args = ctx.args
    if args.tol < 0 or args.sv_k < 0:
        raise StudyError(f"--tol and --sv-k must be >= 0, got {args.tol} and {args.sv_k}")
    base, chat = (ctx.pair.spec.source(m) for m in ("base", "chat"))
    names = sorted(tensor_files(base))
    todo = [n for n in names if not ctx.log.done((NAME, n))]
    t0 = time.perf_counter()
    diffs = weight_diff(base, chat, tol=args.tol, top_k=args.sv_k, spectrum_max_dim=args.spectrum_max_dim, names=todo)
    for d in progress(diffs, desc="model_diff weights", total=len(todo)):
        ctx.log.write([{"part": NAME, "key": d.name, **d.row(args.sv_k)}])
    ctx.timings["weights_s"] = round(time.perf_counter() - t0, 2)


def _table(rows: list[dict]):
    import pandas as pd

    table = pd.DataFrame(rows).drop(columns=["part", "key"])
    extra = [c for c in table.columns if c not in COLUMNS]
    table["_layer"] = table["layer"].fillna(-1)
    table = table.sort_values(["_layer", "module", "param"]).drop(columns="_layer")
    table["layer"] = table["layer"].astype("Int64")
    return table[[*COLUMNS, *extra]]


def tables(rows: list[dict], out: Path) -> list[Path]:
    _table(rows).to_csv(out / "weights.csv", index=False, float_format="%.6g")
    return [out / "weights.csv"]


def summary(rows: list[dict]) -> list[dict]:
    """Per module (over layers): mean relative change and the fraction of its entries changed
    (exactly, and after bf16 rounding); ``group="all"``: the whole model."""
    table = _table(rows)
    out = []
    for module, g in [("all", table), *table.groupby("module", sort=True)]:
        n = int(g["n_params"].sum())
        changed, bf16 = int(g["n_changed"].sum()), int(g["n_differ_bf16"].sum())
        for metric, value in (("rel_change_mean", float(g["rel_change"].mean())), ("n_params", n),
                              ("n_changed", changed), ("frac_changed", changed / n), ("n_differ_bf16", bf16),
                              ("frac_differ_bf16", bf16 / n), ("n_tensors_unchanged", int((g["n_changed"] == 0).sum()))):
            out.append({"part": NAME, "group": module, "layer": None, "metric": metric, "value": value})
    return out


def figures(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import numpy as np

    from figures._save import save

    table = _table(rows)
    blocks = table[table["layer"].notna()].copy()
    if blocks.empty:
        return []
    blocks["column"] = [m if p == "weight" else f"{m}.{p}" for m, p in zip(blocks["module"], blocks["param"])]
    grid = blocks.pivot_table(index="layer", columns="column", values="rel_change", aggfunc="first")
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * grid.shape[1], 0.8 + 0.45 * grid.shape[0]))
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis")
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white" if v < np.nanmax(grid) * 0.6 else "black")
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), [str(int(l)) for l in grid.index])
    ax.set_ylabel("block")
    outside = table[table["layer"].isna()]
    ax.set_title("weight change ||W_chat - W_base|| / ||W_base||\n"
                 + ", ".join(f"{m} {v:.3f}" for m, v in zip(outside["module"], outside["rel_change"])), fontsize=9)
    fig.colorbar(image, ax=ax, label="relative change")
    return save(fig, out / "weight_change_heatmap")


PART = Part(NAME, add_options, ("tol", "sv_k", "spectrum_max_dim"), run, tables, summary, figures,
            outputs=("weights.csv",))
