"""The crosscoder part: train a BatchTopK crosscoder on base + chat at ``--xc-layers``, class
its latents by decoder norms, test the chat-only ones with Latent Scaling, show their contexts,
and run Minder et al.'s causal check.

Rows (key fields ``part``, ``key``): ``("crosscoder", "latent:<j>")`` per latent (the
``latents.csv`` columns; the shown latents carry their top contexts), then
``("crosscoder", "train")`` (metrics, history; written last, so a run cut during the writes
retrains), and ``("causal", "<prompt kind>:<latent set>")``. The trained crosscoder is kept in
``crosscoder/`` of the run folder (config + safetensors) for the causal check and for users.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from studies.dictionaries.data import PROMPT_STYLES, causal_prompts, token_kinds

PART = "crosscoder"
CAUSAL = "causal"
# Latent sets of the causal check: S in  h_base + sum_{j in S} f_j (d_chat - d_base).
# chat_leaning: Delta >= CHAT_LEANING (chat-only and the chat side of "other"); random: as many
# latents as chat_leaning, drawn from the rest (seeded).
SETS = ("base", "chat_only", "robust_chat_only", "chat_leaning", "random", "all")
CHAT_LEANING = 0.6
STAT_KINDS = ("corpus", "plain", "benign", "harmful", "refusal")


def add_options(p) -> None:
    p.add_argument("--xc-layers", default="4", help="crosscoder: comma-separated blocks (resid_post) it reads "
                                                    "(default 4 of the toy pair's 0..5, where base and chat part)")
    p.add_argument("--xc-dict-size", type=int, default=512, help="crosscoder latents (default 512)")
    p.add_argument("--xc-k", type=int, default=16, help="crosscoder BatchTopK: mean active latents per token (default 16)")
    p.add_argument("--xc-steps", type=int, default=3000, help="crosscoder training steps (default 3000)")
    p.add_argument("--xc-batch-size", type=int, default=512, help="crosscoder tokens per step (default 512)")
    p.add_argument("--xc-lr", type=float, default=1e-3, help="crosscoder Adam learning rate (default 1e-3)")
    p.add_argument("--nu-epsilon-max", type=float, default=None,
                   help="Latent Scaling: a robust chat-only latent has nu_epsilon below this (default "
                        "interp.dictionaries.latent_scaling.NU_EPSILON_MAX)")
    p.add_argument("--nu-r-max", type=float, default=None, help="Latent Scaling: ... and nu_r below this "
                                                                "(default NU_R_MAX)")
    p.add_argument("--causal-limit", type=int, default=32, help="causal check: prompts per kind (default 32; 0 skips it)")
    p.add_argument("--contexts", type=int, default=8, help="dashboard: top contexts per latent (default 8)")


ROW_OPTIONS = ("xc_layers", "xc_dict_size", "xc_k", "xc_steps", "xc_batch_size", "xc_lr", "nu_epsilon_max", "nu_r_max",
               "causal_limit", "contexts")


def layers_of(args, n_layers: int) -> tuple[int, ...]:
    from studies._common import StudyError

    try:
        layers = tuple(int(v) for v in str(args.xc_layers).split(",") if v.strip())
    except ValueError:
        raise StudyError(f"--xc-layers {args.xc_layers!r}: give comma-separated block numbers 0..{n_layers - 1}") from None
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad or not layers:
        raise StudyError(f"--xc-layers {args.xc_layers!r}: layer {bad[0] if bad else '(none)'} out of range; "
                         f"valid: 0..{n_layers - 1}")
    return layers


def thresholds(args) -> tuple[float, float]:
    from interp.dictionaries.latent_scaling import NU_EPSILON_MAX, NU_R_MAX

    return (NU_EPSILON_MAX if args.nu_epsilon_max is None else args.nu_epsilon_max,
            NU_R_MAX if args.nu_r_max is None else args.nu_r_max)


def _stats(f: torch.Tensor, kinds: list[str], is_last: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per latent: firing fraction on each kind's tokens, and at the prompts' last tokens."""
    fired = (f > 0).float()
    kinds_t = list(kinds)
    out = {}
    for kind in STAT_KINDS:
        mask = torch.tensor([k == kind for k in kinds_t])
        out[f"fires_{kind}"] = fired[mask].mean(0) if mask.any() else torch.full((f.shape[1],), float("nan"))
    for kind in PROMPT_STYLES:
        mask = torch.tensor([k == kind for k in kinds_t]) & is_last
        out[f"fires_{kind}_last"] = fired[mask].mean(0) if mask.any() else torch.full((f.shape[1],), float("nan"))
    return out


def run(ctx, acts, texts) -> None:
    """Train and describe the crosscoder unless its rows are there."""
    from interp.dictionaries.contexts import top_contexts
    from interp.dictionaries.crosscoder import (CrosscoderConfig, evaluate, norm_classes, relative_norm_difference,
                                                stack_sources, train_crosscoder)
    from interp.dictionaries.latent_scaling import latent_scaling
    from studies._common import progress

    a = ctx.args
    if ctx.log.done((PART, "train")):
        return
    layers = ctx.xc_layers
    idx = [acts.layers.index(layer) for layer in layers]
    x = stack_sources(acts.members["base"].stack()[:, idx].float(), acts.members["chat"].stack()[:, idx].float())
    config = CrosscoderConfig(d_model=x.shape[-1], dict_size=a.xc_dict_size, k=a.xc_k, layers=layers, steps=a.xc_steps,
                              batch_size=a.xc_batch_size, lr=a.xc_lr, seed=a.seed)
    t0 = time.perf_counter()
    model, history = train_crosscoder(x, config, progress=lambda it: progress(it, desc="crosscoder train",
                                                                             total=config.steps))
    ctx.timings["crosscoder_train_s"] = round(time.perf_counter() - t0, 2)
    model.save(ctx.out / "crosscoder")
    metrics = evaluate(model, x)
    scaling = latent_scaling(model, x)
    norms = model.decoder_norms()  # in the crosscoder's normalised units, where the classes are read
    delta = relative_norm_difference(norms)
    classes = norm_classes(delta)
    eps_max, r_max = thresholds(a)
    robust = scaling.robust(eps_max, r_max)
    with torch.no_grad():
        f = torch.cat([model.encode(x[i:i + 4096]) for i in range(0, x.shape[0], 4096)])
    kinds, is_last = token_kinds(ctx.tokenizer, texts, acts.tokens)
    stats = _stats(f, kinds, is_last)
    # 24 tokens before: a chat prompt's cue ("I plan to bomb ...") is still in view at its "Assistant :"
    found = top_contexts(f, acts.tokens, acts.where, shown_latents(classes, delta, metrics["freq"], stats),
                         k=a.contexts, before=24, after=6)
    decode = ctx.tokenizer.convert_ids_to_tokens
    columns = scaling.columns()
    rows = []
    for j in range(config.dict_size):
        row = {"part": PART, "key": f"latent:{j:05d}", "latent": j, "class": classes[j],
               "robust": bool(robust[j]) if classes[j] == "chat_only" else None, "scaling_ok": bool(robust[j]),
               "norm_ratio": float(delta[j]), "norm_base": float(norms[j, 0]), "norm_chat": float(norms[j, 1]),
               **{k: v[j] for k, v in columns.items()}, "n_active": int(scaling.n_active[j]),
               "freq": float(metrics["freq"][j]), **{k: float(v[j]) for k, v in stats.items()},
               "layers": list(layers)}
        if len(layers) > 1:  # where along the chosen layers each member's decoder writes
            per = (model.W_dec.detach()[j].norm(dim=-1) ** 2).view(2, -1)
            w = per / per.sum(-1, keepdim=True).clamp_min(1e-12)
            lt = torch.tensor(layers, dtype=torch.float)
            row.update(layer_mean_base=float((w[0] * lt).sum()), layer_mean_chat=float((w[1] * lt).sum()))
        if j in found:
            row["contexts"] = [{"activation": c.activation, "tokens": decode(c.token_ids), "target": c.target,
                                "acts": c.acts, "kind": kinds[c.index]} for c in found[j]]
        rows.append(row)
    train = {"part": PART, "key": "train", "layers": list(layers), "n_tokens": int(x.shape[0]),
             **{k: v for k, v in metrics.items() if k != "freq"}, "threshold": float(model.threshold),
             "steps_per_second": history.steps_per_second, "train_s": history.seconds, "history": history.rows,
             "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()},
             "nu_epsilon_max": eps_max, "nu_r_max": r_max}
    ctx.log.write(rows + [train])


def shown_latents(classes: list[str], delta: torch.Tensor, freq: torch.Tensor, stats: dict) -> list[int]:
    """The dashboard's latents: every chat-only and base-only one, the 8 live latents of highest
    and of lowest Delta, the 4 most specific to harmful prompts' last tokens and to refusal
    tokens, and the 4 most frequent shared ones (for contrast)."""
    live = freq > 0
    rank = lambda v: [j for j in torch.argsort(v, descending=True).tolist() if live[j]]  # noqa: E731
    benign = torch.maximum(stats["fires_benign_last"].nan_to_num(0), stats["fires_plain_last"].nan_to_num(0))
    contrast = torch.maximum(benign, stats["fires_corpus"].nan_to_num(0))
    picked = [j for j, c in enumerate(classes) if c in ("chat_only", "base_only")]
    picked += rank(delta)[:8] + rank(-delta)[:8]
    picked += rank(stats["fires_harmful_last"].nan_to_num(0) - contrast)[:4]
    picked += rank(stats["fires_refusal"].nan_to_num(0) - contrast)[:4]
    picked += [j for j in rank(freq) if classes[j] == "shared"][:4]
    return list(dict.fromkeys(picked))


def latent_sets(rows: list[dict], dict_size: int, seed: int) -> dict[str, torch.Tensor | None]:
    """The causal check's latent sets (:data:`SETS`) from the latent rows."""
    by = {r["latent"]: r for r in rows}
    mask = lambda keep: torch.tensor([bool(keep(by[j])) for j in range(dict_size)])  # noqa: E731
    leaning = mask(lambda r: r["norm_ratio"] >= CHAT_LEANING and r["n_active"] > 0)
    others = (~leaning & mask(lambda r: r["n_active"] > 0)).nonzero().flatten()
    g = torch.Generator().manual_seed(seed)
    pick = others[torch.randperm(others.numel(), generator=g)[:int(leaning.sum())]]
    random_set = torch.zeros(dict_size, dtype=torch.bool)
    random_set[pick] = True
    return {"base": None, "chat_only": mask(lambda r: r["class"] == "chat_only"),
            "robust_chat_only": mask(lambda r: r.get("robust")), "chat_leaning": leaning,
            "random": random_set, "all": torch.ones(dict_size, dtype=torch.bool)}


def run_causal(ctx, latent_rows: list[dict]) -> None:
    """KL(chat || patched) on chat prompts per latent set (:mod:`interp.dictionaries.causal`)."""
    from interp.dictionaries.causal import capture_residuals, patched_kl
    from interp.dictionaries.crosscoder import Crosscoder

    a = ctx.args
    prompts = causal_prompts(a.prompt_limit, a.causal_limit, a.seed)
    todo = [k for k in prompts if prompts[k] and not ctx.log.done((CAUSAL, f"{k}:{SETS[0]}"))]
    if not todo or a.causal_limit == 0:
        return
    model = Crosscoder.load(ctx.out / "crosscoder")
    sets = latent_sets(latent_rows, model.config.dict_size, a.seed)
    t0 = time.perf_counter()
    base = ctx.pair.load("base")
    base_resid = {k: capture_residuals(base, prompts[k], model.config.layers, batch_size=a.batch_size) for k in todo}
    del base
    chat = ctx.pair.load("chat")
    rows = []
    for kind in todo:
        got = patched_kl(chat, prompts[kind], base_resid[kind], model, sets, batch_size=a.batch_size,
                         bias={"all": True})
        for name in SETS:
            r = got[name]
            rows.append({"part": CAUSAL, "key": f"{kind}:{name}", "kind": kind, "set": name,
                         "n_latents": 0 if sets[name] is None else int(sets[name].sum()), "n_prompts": len(prompts[kind]),
                         "n_tokens": r["n_tokens"], "kl_mean": r["kl_mean"], "kl_last_mean": r["kl_last_mean"]})
    # the set "base" is the resume key: write it last per kind
    rows.sort(key=lambda r: (r["kind"], r["set"] == SETS[0]))
    ctx.log.write(rows)
    ctx.timings["causal_s"] = round(time.perf_counter() - t0, 2)


# -- tables, summary, figures ----------------------------------------------------------------------
LATENT_COLUMNS = ("latent", "class", "robust", "norm_ratio", "norm_base", "norm_chat", "beta_error_base",
                  "beta_error_chat", "beta_recon_base", "beta_recon_chat", "nu_epsilon", "nu_r", "n_active", "freq")


def latents_table(rows: list[dict]):
    import pandas as pd

    lat = [r for r in rows if r["part"] == PART and r["key"].startswith("latent:")]
    table = pd.DataFrame([{k: v for k, v in r.items() if k not in ("part", "key", "contexts", "layers")} for r in lat])
    table.insert(0, "dictionary", "crosscoder")
    table.insert(1, "layers", [",".join(str(v) for v in r["layers"]) for r in lat])
    first = ["dictionary", "layers", *LATENT_COLUMNS]
    return table[first + [c for c in table.columns if c not in first]]


def summary(rows: list[dict]) -> list[dict]:
    out = []
    train = next((r for r in rows if r["part"] == PART and r["key"] == "train"), None)
    if train is None:
        return out
    for m in ("fvu_base", "fvu_chat", "l0", "dead_fraction", "threshold", "n_tokens", "steps_per_second"):
        out.append({"part": PART, "group": "train", "metric": m, "value": train[m]})
    table = latents_table(rows)
    live = table[table["n_active"] > 0]  # a dead latent keeps its initial decoders: its class means nothing
    out.append({"part": PART, "group": "classes", "metric": "n_dead", "value": int((table["n_active"] == 0).sum())})
    for c in ("shared", "base_only", "chat_only", "other"):
        out.append({"part": PART, "group": "classes", "metric": f"n_{c}", "value": int((live["class"] == c).sum())})
    out.append({"part": PART, "group": "classes", "metric": "n_robust_chat_only", "value": int(table["robust"].eq(True).sum())})
    for r in rows:
        if r["part"] == CAUSAL:
            for m in ("kl_mean", "kl_last_mean", "n_latents", "n_tokens"):
                out.append({"part": CAUSAL, "group": f"{r['kind']}:{r['set']}", "metric": m, "value": r[m]})
    return out


def dashboards(rows: list[dict], out: Path) -> list[Path]:
    from figures.dashboard import write_dashboard
    from interp.dictionaries.contexts import Context

    lat = sorted((r for r in rows if r["part"] == PART and "contexts" in r), key=lambda r: -r["norm_ratio"])

    # the rows hold token strings, so the dashboard's "ids" are strings and decode is the identity
    contexts = {r["latent"]: [Context(-1, c["activation"], c["tokens"], c["target"], c["acts"]) for c in r["contexts"]]
                for r in lat}
    info = {r["latent"]: {"class": r["class"] + (" (robust)" if r.get("robust") else ""), "Delta": r["norm_ratio"],
                          "nu_eps": r["nu_epsilon"] if r["nu_epsilon"] is not None else float("nan"),
                          "nu_r": r["nu_r"] if r["nu_r"] is not None else float("nan"),
                          "harmful_last": r["fires_harmful_last"], "benign_last": r["fires_benign_last"],
                          "refusal": r["fires_refusal"], "freq": r["freq"]} for r in lat}
    return write_dashboard(contexts, lambda t: t, out / "crosscoder_dashboard", info,
                           title="Crosscoder latents: top-activating contexts (by Delta, chat-most first)")


def figures(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt
    import numpy as np

    from figures._save import model_color, save
    from interp.dictionaries.crosscoder import BASE_ONLY, CHAT_ONLY, SHARED

    table = latents_table(rows)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 3))
    live = table[table["n_active"] > 0]
    ax.hist(live["norm_ratio"], bins=np.linspace(0, 1, 41), color="#777")
    for lo, hi, colour in ((0, BASE_ONLY, model_color("base")), (CHAT_ONLY, 1, model_color("chat")), (*SHARED, "#55A868")):
        ax.axvspan(lo, hi, color=colour, alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("relative decoder norm  |d_chat| vs |d_base|  (0 base-only, 1 chat-only)")
    ax.set_ylabel("latents")
    ax.set_title(f"crosscoder decoder-norm ratio ({len(live)} live latents)", fontsize=9)
    paths += save(fig, out / "crosscoder_norm_ratio")
    chat_only = table[(table["class"] == "chat_only") & table["nu_epsilon"].notna()]
    if not chat_only.empty:
        fig, ax = plt.subplots(figsize=(4, 3.5))
        ok = chat_only["robust"].eq(True)
        ax.scatter(chat_only["nu_epsilon"][~ok], chat_only["nu_r"][~ok], s=12, c="#999", label="chat-only")
        ax.scatter(chat_only["nu_epsilon"][ok], chat_only["nu_r"][ok], s=14, c=model_color("chat"), label="robust")
        train = next(r for r in rows if r["part"] == PART and r["key"] == "train")
        ax.axvline(train["nu_epsilon_max"], ls=":", c="k")
        ax.axhline(train["nu_r_max"], ls=":", c="k")
        ax.set_xlabel("nu_epsilon (base error / chat error)")
        ax.set_ylabel("nu_r (base recon / chat recon)")
        ax.legend(fontsize=7)
        ax.set_title("Latent Scaling of chat-only latents", fontsize=9)
        paths += save(fig, out / "crosscoder_latent_scaling")
    causal = [r for r in rows if r["part"] == CAUSAL]
    if causal:
        kinds = list(dict.fromkeys(r["kind"] for r in causal))
        fig, axes = plt.subplots(1, 2, figsize=(8, 3))
        for ax, metric, label in ((axes[0], "kl_mean", "all tokens"), (axes[1], "kl_last_mean", "last token")):
            width = 0.8 / len(SETS)
            for i, name in enumerate(SETS):
                vals = [next((r[metric] for r in causal if r["kind"] == k and r["set"] == name), np.nan) for k in kinds]
                ax.bar(np.arange(len(kinds)) + i * width, vals, width, label=name)
            ax.set_xticks(np.arange(len(kinds)) + 0.4 - width / 2, kinds)
            ax.set_ylabel("KL(chat || patched), nats")
            ax.set_title(f"causal check, {label}", fontsize=9)
        axes[0].legend(fontsize=7)
        paths += save(fig, out / "crosscoder_causal_kl")
    return paths


def report(rows: list[dict]) -> list[str]:
    """Console lines: training, classes, the harmful/refusal finding, the causal check."""
    train = next((r for r in rows if r["part"] == PART and r["key"] == "train"), None)
    if train is None:
        return []
    table = latents_table(rows)
    lines = [f"crosscoder (blocks {train['layers']}, {train['n_tokens']} tokens): FVU base {train['fvu_base']:.3f}, "
             f"chat {train['fvu_chat']:.3f}, L0 {train['l0']:.1f}, dead {train['dead_fraction']:.1%}",
             f"  classes of the {int((table['n_active'] > 0).sum())} live latents: "
             + ", ".join(f"{c} {int(((table['class'] == c) & (table['n_active'] > 0)).sum())}" for c in
                         ("shared", "base_only", "chat_only", "other"))
             + f"; robust chat-only (Latent Scaling) {int(table['robust'].eq(True).sum())}"]
    for label, col in (("harmful requests", "fires_harmful_last"), ("refusal tokens", "fires_refusal")):
        best = finding(table, col, robust_only=True)
        if best is not None:
            lines.append(f"  robust chat-only latent {best['latent']} fires on {best[col]:.0%} of {label} "
                         f"(benign last {best['fires_benign_last']:.0%}, plain last {best['fires_plain_last']:.0%}, "
                         f"corpus {best['fires_corpus']:.1%}; nu_eps {best['nu_epsilon']:.2f}, nu_r {best['nu_r']:.2f})")
            continue
        best = finding(table, col, robust_only=False)
        lines.append(f"  no robust chat-only latent fires on {label}" + ("" if best is None else
                     f"; the latent most specific to them is {best['latent']} ({best['class']}, Delta "
                     f"{best['norm_ratio']:.2f}, nu_eps {best['nu_epsilon']:.2f}, nu_r {best['nu_r']:.2f}): "
                     f"{best[col]:.0%} of {label}, benign last {best['fires_benign_last']:.0%}, plain last "
                     f"{best['fires_plain_last']:.0%}, corpus {best['fires_corpus']:.1%}"))
    causal = [r for r in rows if r["part"] == CAUSAL]
    for kind in dict.fromkeys(r["kind"] for r in causal):
        got = {r["set"]: r for r in causal if r["kind"] == kind}
        lines.append(f"  causal check on {kind} prompts, KL(chat || patched) last token / all: "
                     + ", ".join(f"{s} {got[s]['kl_last_mean']:.3f}/{got[s]['kl_mean']:.3f}" for s in SETS if s in got))
    return lines


def finding(table, column: str, robust_only: bool = True):
    """The latent most specific to ``column`` (harmful prompts' last tokens, or refusal tokens):
    largest firing fraction there minus its largest on benign / plain last tokens and on the
    corpus, among robust chat-only latents (``robust_only``) or all; ``None`` when the best
    fires there on less than half."""
    pool = table[table["robust"].eq(True)] if robust_only else table[table["n_active"] > 0]
    if pool.empty:
        return None
    contrast = pool[["fires_benign_last", "fires_plain_last", "fires_corpus"]].max(axis=1)
    best = pool.assign(specific=pool[column] - contrast).sort_values("specific", ascending=False).iloc[0]
    return best if best[column] >= 0.5 else None
