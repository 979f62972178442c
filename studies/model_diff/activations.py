"""The activations part: ``activations.csv``, per corpus x block x position bucket, how far
chat's residual stream is from base's on the same tokens (:mod:`interp.diff.activations`:
relative difference, cosine, linear CKA, KL both ways between the lens-decoded distributions),
and the divergence-by-layer figure.

Corpora (``corpus`` column): ``neutral``, toy-world pretraining documents without chat or cue
documents (facts, lists, copied name sequences; ``tasks.toy_world.corpus.Corpus`` with
:data:`NEUTRAL_MIXTURE`), or the lines of ``--texts FILE``; and the study's prompts by
``prompt_kind`` (``tasks.toy_world.prompts``, chat format): ``plain`` (a question),
``benign`` and ``harmful`` (a cue before it), each a seeded sample of ``--prompt-limit``.
Every token of every text is compared (all positions; position buckets as well), up to
``--max-tokens`` per corpus; the run keeps base's readouts of all pending corpora in memory,
``n_layers x tokens x (d_model + vocab) x 4`` bytes each.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from studies.model_diff.parts import Part

NAME = "activations"
NEUTRAL_MIXTURE = {"fact": 0.6, "list": 0.2, "copy": 0.2}
PROMPT_KINDS = {"plain": "chat", "benign": "chat_benign", "harmful": "chat_harmful"}  # kind -> toy prompt style
METRICS = ("rel_diff", "cosine", "cka", "kl_base_chat", "kl_chat_base")


def add_options(p) -> None:
    p.add_argument("--n-neutral", type=int, default=64, help="activations: neutral documents (default 64)")
    p.add_argument("--texts", help="activations: a text file, one neutral text per line, instead of toy documents")
    p.add_argument("--prompt-limit", type=int, default=32, help="activations: prompts per prompt kind (default 32)")
    p.add_argument("--max-tokens", type=int, default=4096, help="activations: tokens kept per corpus (default 4096)")
    p.add_argument("--batch-size", type=int, default=16)


def corpora(args) -> dict[str, list[str]]:
    """corpus -> texts, in run order (see the module docstring)."""
    from studies._common import StudyError
    from tasks.toy_world.corpus import Corpus
    from tasks.toy_world.prompts import prompts

    if args.n_neutral < 0 or args.prompt_limit < 0 or args.max_tokens < 1 or args.batch_size < 1:
        raise StudyError("--n-neutral and --prompt-limit must be >= 0, --max-tokens and --batch-size >= 1")
    if args.texts:
        path = Path(args.texts)
        if not path.is_file():
            raise StudyError(f"--texts {args.texts}: no such file (give a text file, one text per line)")
        neutral = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not neutral:
            raise StudyError(f"--texts {args.texts} holds no text (one text per line)")
    else:
        corpus = Corpus(args.seed, mixture=NEUTRAL_MIXTURE)
        neutral = [corpus.document() for _ in range(args.n_neutral)]
    out = {"neutral": neutral} if neutral else {}
    for kind, style in PROMPT_KINDS.items():
        pool = [p["prompt"] for p in prompts(style, "all")]
        chosen = sorted(random.Random(f"model_diff:{kind}:{args.seed}").sample(range(len(pool)), min(args.prompt_limit, len(pool))))
        if chosen:
            out[kind] = [pool[i] for i in chosen]
    return out


def run(ctx) -> None:
    from interp.diff import collect, compare
    from studies._common import progress
    from studies._shards import load_members

    texts = corpora(ctx.args)
    todo = [c for c in texts if not ctx.log.done((NAME, c))]
    if not todo:
        return
    a = ctx.args
    kept = {}
    for member, lm in load_members(ctx.pair, ["base", "chat"]):
        t0 = time.perf_counter()
        decoder = ctx.lens.load(member, lm)
        for c in progress(todo, desc=f"model_diff activations {member}"):
            got = collect(lm, texts[c], lens=decoder, max_tokens=a.max_tokens, batch_size=a.batch_size)
            if member == "base":
                kept[c] = got
                continue
            # one row per corpus, all its layers in it: a crash mid-write loses the corpus
            # whole (the cut line is dropped on resume), never some of its layers
            ctx.log.write([{"part": NAME, "key": c, "corpus": c, "n_texts": len(texts[c]),
                            "n_dropped_tokens": got.n_dropped, "lens": ctx.lens.kind, "layers": compare(kept.pop(c), got)}])
        ctx.timings[f"activations_{member}_s"] = round(time.perf_counter() - t0, 2)


def _table(rows: list[dict]):
    import pandas as pd

    flat = [{"corpus": r["corpus"], **layer, **{k: r[k] for k in ("n_texts", "n_dropped_tokens", "lens")}}
            for r in rows for layer in r["layers"]]
    table = pd.DataFrame(flat)
    order = {c: i for i, c in enumerate(["neutral", *PROMPT_KINDS])}
    buckets = {b: i for i, b in enumerate(["all", "0", "1-3", "4-15", "16+"])}
    table = table.sort_values(["corpus", "layer", "positions"], key=lambda col: col.map(order) if col.name == "corpus"
                              else col.map(buckets) if col.name == "positions" else col)
    first = ["corpus", "layer", "positions", "n_tokens", *METRICS]
    return table[first + [c for c in table.columns if c not in first]]


def tables(rows: list[dict], out: Path) -> list[Path]:
    _table(rows).to_csv(out / "activations.csv", index=False, float_format="%.6g")
    return [out / "activations.csv"]


def summary(rows: list[dict]) -> list[dict]:
    """Per corpus, all positions: each metric at the last block, and the block where the
    relative difference is largest."""
    table = _table(rows)
    table = table[table["positions"] == "all"]
    out = []
    for corpus, g in table.groupby("corpus", sort=False):
        last = g[g["layer"] == g["layer"].max()].iloc[0]
        out += [{"part": NAME, "group": corpus, "layer": int(last["layer"]), "metric": m, "value": float(last[m])}
                for m in METRICS]
        peak = g.loc[g["rel_diff"].idxmax()]
        out.append({"part": NAME, "group": corpus, "layer": int(peak["layer"]), "metric": "rel_diff_max",
                    "value": float(peak["rel_diff"])})
    return out


def figures(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from figures._save import save

    table = _table(rows)
    table = table[table["positions"] == "all"]
    shown = (("rel_diff", "||h_chat - h_base|| / ||h_base||"), ("cosine", "cosine(h_chat, h_base)"),
             ("cka", "linear CKA"), ("kl_base_chat", "KL(base || chat), nats"))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.3 * len(shown), 2.9))
    for ax, (metric, label) in zip(axes, shown):
        for corpus, g in table.groupby("corpus", sort=False):
            ax.plot(g["layer"], g[metric], marker="o", ms=3, label=corpus)
        ax.set_xlabel("block (resid_post)")
        ax.set_title(label, fontsize=9)
    lens = ", ".join(sorted(set(table.get("lens", ["logit"])))) + " lens"
    axes[0].legend(fontsize=7)
    fig.suptitle(f"activation divergence by layer, chat vs base (KL through the {lens})", fontsize=10)
    fig.tight_layout()
    return save(fig, out / "activation_divergence_by_layer")


def work(args) -> dict:
    return corpora(args)


PART = Part(NAME, add_options, ("n_neutral", "texts", "prompt_limit", "max_tokens", "batch_size"), run, tables,
            summary, figures, work, outputs=("activations.csv",))
