"""The MLSAE part: one TopK SAE over every block's residual (Lawson et al.; :mod:`interp.dictionaries.mlsae`),
trained on both members' streams together, so base and chat tokens share one latent space; its
metrics per member and layer (FVU, L0, the next-token loss change when a layer's reconstruction
is spliced back), and per latent where it fires: mean layer, the variance of its layer over
tokens and within one token, per member, and whether its mean layer moved between base and chat.

Rows: ``("mlsae", "layer:<member>:<layer>")``, ``("mlsae", "summary:<member>")``,
``("mlsae", "latent:<j>")``, then ``("mlsae", "train")`` (written last). The model is kept in
``mlsae/`` of the run folder.
"""

from __future__ import annotations

import time
from pathlib import Path

PART = "mlsae"


def add_options(p) -> None:
    p.add_argument("--mlsae-latents", type=int, default=1024, help="MLSAE latents (default 1024)")
    p.add_argument("--mlsae-k", type=int, default=16, help="MLSAE TopK per (token, layer) (default 16)")
    p.add_argument("--mlsae-steps", type=int, default=1500, help="MLSAE training steps (default 1500)")
    p.add_argument("--mlsae-batch-size", type=int, default=256,
                   help="MLSAE tokens per step, each at every layer (default 256)")
    p.add_argument("--splice-windows", type=int, default=8,
                   help="MLSAE: harvest windows whose next-token loss is measured with each layer spliced (default 8)")


ROW_OPTIONS = ("mlsae_latents", "mlsae_k", "mlsae_steps", "mlsae_batch_size", "splice_windows")


def run(ctx, acts, texts) -> None:
    from interp.dictionaries.metrics import mlsae_report, splice_delta
    from interp.dictionaries.mlsae import train_mlsae
    from interp.dictionaries.sae import SAEConfig

    a = ctx.args
    if ctx.log.done((PART, "train")):
        return
    config = SAEConfig(n_latents=a.mlsae_latents, k=a.mlsae_k, steps=a.mlsae_steps, batch_size=a.mlsae_batch_size,
                       seed=a.seed)
    t0 = time.perf_counter()
    model, history = train_mlsae(acts, config, member="both", progress=ctx.show_progress)
    ctx.timings["mlsae_train_s"] = round(time.perf_counter() - t0, 2)
    model.save(ctx.out / "mlsae")
    splice = {}
    if a.splice_windows:
        t0 = time.perf_counter()
        for member in ("base", "chat"):
            lm = ctx.pair.load(member)
            splice[member] = splice_delta(lm, texts.texts, model, model.layers, seq_len=a.seq_len,
                                          batch_size=a.harvest_batch_size, max_windows=a.splice_windows)
            del lm
        ctx.timings["mlsae_splice_s"] = round(time.perf_counter() - t0, 2)
    rows = []
    for r in mlsae_report(model, acts, splice=splice):
        kind = r.pop("kind")
        key = {"layer": lambda: f"layer:{r['member']}:{r['layer']}", "summary": lambda: f"summary:{r['member']}",
               "latent": lambda: f"latent:{r['latent']:05d}"}[kind]()
        rows.append({"part": PART, "key": key, "kind": kind, **r})
    rows.append({"part": PART, "key": "train", "layers": list(model.layers), "history": history,
                 "config": {k: v for k, v in vars(config).items()}})
    ctx.log.write(rows)


def _of(rows: list[dict], kind: str) -> list[dict]:
    return [r for r in rows if r["part"] == PART and r.get("kind") == kind]


def latents_table(rows: list[dict]):
    import pandas as pd

    lat = _of(rows, "latent")
    if not lat:
        return pd.DataFrame()
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("part", "key", "kind")} for r in lat])
    train = next(r for r in rows if r["part"] == PART and r["key"] == "train")
    table.insert(0, "dictionary", "mlsae")
    table.insert(1, "layers", ",".join(str(v) for v in train["layers"]))
    return table


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for r in _of(rows, "layer"):
        for m in ("fvu", "l0", "loss_delta"):
            if m in r:
                out.append({"part": PART, "group": f"{r['member']}:layer {r['layer']}", "metric": m, "value": r[m]})
    for r in _of(rows, "summary"):
        for m, v in r.items():
            if m not in ("part", "key", "kind", "member"):
                out.append({"part": PART, "group": r["member"], "metric": m, "value": v})
    lat = _of(rows, "latent")
    if lat:
        out.append({"part": PART, "group": "latents", "metric": "n_moved", "value": sum(bool(r.get("moved")) for r in lat)})
    return out


def figures(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import numpy as np

    from figures._save import model_color, save

    table = latents_table(rows)
    if table.empty:
        return []
    layers = [int(v) for v in str(table["layers"].iloc[0]).split(",")]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    bins = np.arange(min(layers) - 0.5, max(layers) + 1.5, 0.25)
    for m in ("base", "chat"):
        vals = table[f"mean_layer_{m}"].dropna()
        axes[0].hist(vals, bins=bins, histtype="step", lw=1.5, color=model_color(m), label=f"{m} ({len(vals)} live)")
    axes[0].set_xlabel("latent's mean layer (block)")
    axes[0].set_ylabel("latents")
    axes[0].legend(fontsize=7)
    axes[0].set_title("MLSAE latent layer distribution", fontsize=9)
    both = table.dropna(subset=["mean_layer_base", "mean_layer_chat"])
    moved = both["moved"].astype(bool)
    axes[1].scatter(both["mean_layer_base"][~moved], both["mean_layer_chat"][~moved], s=5, c="#999", label="same layer")
    axes[1].scatter(both["mean_layer_base"][moved], both["mean_layer_chat"][moved], s=9, c=model_color("chat"),
                    label=f"moved ({int(moved.sum())})")
    axes[1].plot([min(layers), max(layers)], [min(layers), max(layers)], "k:", lw=0.8)
    axes[1].set_xlabel("mean layer on base tokens")
    axes[1].set_ylabel("mean layer on chat tokens")
    axes[1].legend(fontsize=7)
    axes[1].set_title("where each latent fires, base vs chat", fontsize=9)
    fig.tight_layout()
    return save(fig, out / "mlsae_latent_layers")


def report(rows: list[dict]) -> list[str]:
    summaries = {r["member"]: r for r in _of(rows, "summary")}
    if not summaries:
        return []
    lines = []
    for m, s in summaries.items():
        deltas = [r["loss_delta"] for r in _of(rows, "layer") if r["member"] == m and "loss_delta" in r]
        splice = f", spliced loss change {min(deltas):+.3f}..{max(deltas):+.3f} nats" if deltas else ""
        lines.append(f"mlsae on {m}: FVU {s['fvu']:.3f}, L0 {s['l0']:.1f}, dead {s['dead_fraction']:.1%}, layer variance "
                     f"within a token {s['var_layer_within_token']:.3f} vs over tokens {s['var_layer_over_tokens']:.3f}"
                     f"{splice}")
    lat = _of(rows, "latent")
    lines.append(f"  latents whose mean layer moves >= 0.5 blocks from base to chat: {sum(bool(r.get('moved')) for r in lat)}")
    return lines
