"""Model-diff part ``adl``: the activation difference lens (Minder et al. 2025,
:mod:`interp.diff.adl`): the mean ``resid_post`` difference chat - base over the first
``--adl-k`` tokens of neutral text, per layer, decoded to top tokens and used to steer.

A part of the study (``PART``, :class:`studies.model_diff.parts.Part`; ``--parts adl``).
Models load one at a time: base (its mean), chat (its mean; the vectors are then known:
decode them through chat's lens, steer chat), base again (decode through base's lens, steer
base). Each member's mean is saved in ``out/adl/mean_<member>.pt`` with its settings, so an
interrupted run skips those forwards (``--overwrite`` deletes the folder). All rows go to the
study's ``results.jsonl`` in one batch (``part="adl"``, field ``table`` = ``tokens``,
``targets``, ``steering`` or ``texts``), so a finished part is skipped on resume. From the rows
alone it writes:

* ``adl_tokens.csv``: ``lens_model`` (whose final norm / unembedding or tuned lens decoded),
  ``lens``, ``layer``, ``rank``, ``token_id``, ``token``, ``logit``, ``prob``, ``norm``
  (the vector's L2 norm) and ``resid_norm`` (the mean base residual's norm at that layer);
* ``adl_targets.csv``: the rank (1 = top) of each token of ``--adl-targets`` (default for the
  toy pair: its refusal sentence) in each layer's decoded vector;
* ``adl_steering.csv``: greedy answers ``before`` / ``after`` adding ``scale x vector`` at
  block ``layer``'s ``resid_post`` of ``model``, for a few plain and harmful prompts (the
  token-shift prompt set's first ``--adl-steer-prompts`` per kind), and whether each contains
  the target text;
* ``adl_tokens.md``: the top tokens per layer as a table; ``adl_target_rank.png/.pdf``: the
  targets' median rank by layer.

``summary.csv`` rows: ``target_median_rank`` (group ``<member>'s lens``, per layer) and
``steered_target_rate`` / ``target_rate_before`` (group ``<model> x<scale> <kind>``, at the
steered layer).
Neutral text: ``--adl-texts FILE`` (one text a line) or, by default, documents of the toy
world's pretraining mixture without its chat and cue kinds (facts, lists, Q/A shots, copies;
no request and no refusal), ``--adl-n-texts`` of them from a fixed seed.
"""

from __future__ import annotations

import json
from pathlib import Path

from studies._common import StudyError
from studies.model_diff.parts import Part

NAME = "adl"
TABLES = ("tokens", "targets", "steering", "texts")
NEUTRAL_KINDS_DROPPED = ("chat", "chat_cue", "cue")
NEUTRAL_SEED = 14  # the neutral documents are not the pretraining stream (seed 0)
# the lens is the study's (it enters the fingerprint by its files' hashes); the steered prompts are the
# token-shift part's prompt set, so its options enter through work()
ROW_OPTIONS = ("adl_texts", "adl_n_texts", "adl_k", "adl_skip", "adl_targets", "adl_steer_layers", "adl_scales",
               "adl_steer_prompts", "adl_max_new_tokens")
OUTPUTS = ("adl_tokens.csv", "adl_targets.csv", "adl_steering.csv", "adl_tokens.md")


def add_arguments(parser) -> None:
    group = parser.add_argument_group("activation difference lens")
    group.add_argument("--adl-texts", help="neutral texts, one a line (default: toy-world documents without requests)")
    group.add_argument("--adl-n-texts", type=int, default=200, help="neutral texts used at most (default 200)")
    group.add_argument("--adl-k", type=int, default=5, help="first k kept tokens of each text (default 5)")
    group.add_argument("--adl-skip", type=int, default=1, help="leading tokens left out (default 1: BOS)")
    group.add_argument("--adl-targets", help="text whose tokens' ranks are tracked (default for the toy pair: "
                                             "its refusal sentence)")
    group.add_argument("--adl-steer-layers", help="comma-separated layers to steer at (default: the middle layer)")
    group.add_argument("--adl-scales", default="1,4", help="multiples of the vector added (default 1,4)")
    group.add_argument("--adl-steer-prompts", type=int, default=4, help="steered prompts per kind (default 4)")
    group.add_argument("--adl-max-new-tokens", type=int, default=12, help="steered answer length (default 12)")


def neutral_texts(args) -> list[str]:
    n = int(getattr(args, "adl_n_texts", 200))
    if n < 1:
        raise StudyError(f"--adl-n-texts must be >= 1, got {n}")
    if getattr(args, "adl_texts", None):
        path = Path(args.adl_texts).expanduser()
        if not path.is_file():
            raise StudyError(f"--adl-texts: no file at {str(path)!r}")
        texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise StudyError(f"--adl-texts {path}: the file holds no texts")
        return texts[:n]
    from tasks.toy_world import MIXTURE, Corpus

    corpus = Corpus(seed=NEUTRAL_SEED, mixture={k: v for k, v in MIXTURE.items() if k not in NEUTRAL_KINDS_DROPPED})
    return [corpus.document() for _ in range(n)]


def _numbers(text: str | None, option: str, n_layers: int | None = None) -> list:
    """Comma-separated floats, or with ``n_layers`` layer indices checked against the model."""
    try:
        values = [float(v) if n_layers is None else int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise StudyError(f"{option} {text!r}: expected comma-separated numbers") from None
    if n_layers is not None:
        bad = [v for v in values if not 0 <= v < n_layers]
        if bad:
            raise StudyError(f"{option}: layers {bad} out of range; valid: 0..{n_layers - 1}")
    if not values:
        raise StudyError(f"{option} is empty")
    return values


def _targets(args, pair) -> str | None:
    if getattr(args, "adl_targets", None):
        return args.adl_targets
    if getattr(pair, "name", None) == "toy":
        from tasks.toy_world import REFUSAL

        return REFUSAL
    return None


def _mean(lm, member: str, texts: list[str], args, folder: Path):
    import torch

    from interp.diff.adl import mean_resid

    settings = {"k": int(args.adl_k), "skip": int(args.adl_skip), "texts": texts, "model": lm.name}
    path = folder / f"mean_{member}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        if saved.get("settings") == settings:
            return saved["mean"]
    mean = mean_resid(lm, texts, k=settings["k"], skip=settings["skip"], batch_size=int(getattr(args, "batch_size", None) or 16))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"settings": settings, "mean": mean}, path)
    return mean


def _steer_prompts(args) -> list[dict]:
    from studies.model_diff.token_shift import prompt_set

    n = int(getattr(args, "adl_steer_prompts", 4))
    records = prompt_set(args)  # the token-shift part's options are always parsed
    out, seen = [], {}
    for r in records:
        if r["kind"] != "benign" and seen.get(r["kind"], 0) < n:  # plain and harmful (and a file's kinds)
            seen[r["kind"]] = seen.get(r["kind"], 0) + 1
            out.append(r)
    return out


def run(ctx) -> None:
    """The vectors, their decoding and the steering (see the module docstring), unless done."""
    import time

    import torch

    from interp.diff.adl import adl_vectors, decode_vectors, steer
    from interp.lens import resolve_lens, target_rank
    from studies.model_diff.token_shift import _free

    if ctx.log.done((NAME, "texts")):  # written last, with all the others
        return
    pair, args, out, lens = ctx.pair, ctx.args, ctx.out, ctx.lens
    t0 = time.perf_counter()
    for name in ("adl_k", "adl_steer_prompts", "adl_max_new_tokens"):
        if int(getattr(args, name)) < 1:
            raise StudyError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    scales = _numbers(args.adl_scales, "--adl-scales")
    texts = neutral_texts(args)
    targets_text = _targets(args, pair)
    prompts = _steer_prompts(args)
    folder = Path(out) / NAME
    means, vectors = {}, None
    token_rows, target_rows, steer_rows = [], [], []
    for member in ("base", "chat", "base"):
        lm = pair.load(member)
        if member not in means:
            means[member] = _mean(lm, member, texts, args, folder)
        if len(means) < 2:
            _free(lm)
            continue
        if vectors is None:
            vectors = adl_vectors(means["base"], means["chat"])
            resid_norm = means["base"].mean.norm(dim=-1).mean(-1).tolist()
            layers = (_numbers(args.adl_steer_layers, "--adl-steer-layers", lm.n_layers) if args.adl_steer_layers
                      else [lm.n_layers // 2])
        decoder = lens.load(member, lm)
        fields = {"lens_model": member, **lens.row_fields(member)}
        token_rows += [{**fields, **r, "resid_norm": resid_norm[r["layer"]]}
                       for r in decode_vectors(lm, vectors, lens=decoder, top=10)]
        if targets_text:
            ids = lm.tokenizer(targets_text, add_special_tokens=False)["input_ids"]
            for layer in range(lm.n_layers):
                with torch.no_grad():
                    logits = resolve_lens(lm, decoder).decode(vectors[layer], layer).float().cpu()
                ranks = (target_rank(logits, torch.tensor(ids)) + 1).tolist()  # 1 = top, ties in the token's favour
                target_rows += [{**fields, "layer": layer, "token_id": t, "token": lm.tokenizer.convert_ids_to_tokens(t),
                                 "rank": rk} for t, rk in zip(ids, ranks)]
        for layer in layers:
            for scale in scales:
                before, after = steer(lm, [p["prompt"] for p in prompts], vectors[layer], layer, scale=scale,
                                      max_new_tokens=int(args.adl_max_new_tokens))
                for p, b, a in zip(prompts, before, after):
                    b_text = lm.tokenizer.decode(b, skip_special_tokens=True)
                    a_text = lm.tokenizer.decode(a, skip_special_tokens=True)
                    steer_rows.append({"model": member, "layer": layer, "scale": scale, "prompt_id": p["id"],
                                       "prompt_kind": p["kind"], "before": b_text, "after": a_text,
                                       "changed": b != a,
                                       "target_before": _contains(lm, b_text, targets_text),
                                       "target_after": _contains(lm, a_text, targets_text)})
        _free(lm)
    m = means["base"]
    texts_row = {"table": "texts", "n_texts": m.n_texts, "n_dropped": m.n_dropped, "skip": m.skip,
                 "n_positions": int(m.mean.shape[1])}
    keyed = [{"part": NAME, "key": "texts", **texts_row}]
    for table, rows in (("tokens", token_rows), ("targets", target_rows), ("steering", steer_rows)):
        keyed += [{"part": NAME, "key": json.dumps([table, i]), "table": table, **r} for i, r in enumerate(rows)]
    ctx.log.write(keyed)
    ctx.timings[f"{NAME}_s"] = round(time.perf_counter() - t0, 2)


def work(args) -> dict:
    """The neutral texts (a hash) and the steered prompts, for the run's fingerprint."""
    import hashlib

    texts = neutral_texts(args)
    return {"n_texts": len(texts), "sha256": hashlib.sha256("\n\0".join(texts).encode("utf-8")).hexdigest(),
            "steer_prompts": [p["id"] for p in _steer_prompts(args)]}




def _contains(lm, text: str, target: str | None) -> bool | None:
    """Whether ``text`` holds ``target`` (compared through the tokenizer's own decoding, which
    may join punctuation differently from the raw string)."""
    if not target:
        return None
    norm = lm.tokenizer.decode(lm.tokenizer(target, add_special_tokens=False)["input_ids"], skip_special_tokens=True)
    return norm.strip() in text


def _split(rows: list[dict]) -> dict[str, list[dict]]:
    """The part's rows by ``table``, without the log's fields."""
    out = {t: [] for t in TABLES}
    for r in rows:
        out[r["table"]].append({k: v for k, v in r.items() if k not in ("part", "key", "table")})
    return out


def tables(rows: list[dict], out: Path) -> list[Path]:
    import pandas as pd

    split, out = _split(rows), Path(out)
    texts = split["texts"][0]
    tokens = pd.DataFrame(split["tokens"])
    tokens.to_csv(out / "adl_tokens.csv", index=False, float_format="%.6g")
    targets = pd.DataFrame(split["targets"], columns=["lens_model", "lens", "layer", "token_id", "token", "rank"])
    targets.to_csv(out / "adl_targets.csv", index=False)
    pd.DataFrame(split["steering"]).to_csv(out / "adl_steering.csv", index=False)
    lines = ["# Activation difference lens: top tokens of the mean chat - base residual difference", "",
             f"{texts['n_texts']} neutral texts ({texts['n_dropped']} too short, dropped), positions "
             f"{texts['skip']}..{texts['skip'] + texts['n_positions'] - 1}.", "",
             "| layer | norm | " + " | ".join(f"top-5 ({m}'s lens)" for m in tokens["lens_model"].unique()) + " |",
             "|---|---|" + "---|" * tokens["lens_model"].nunique()]
    for layer, g in tokens.groupby("layer"):
        cells = [" ".join(f"`{t}`" for t in g[g["lens_model"] == m].sort_values("rank")["token"].head(5))
                 for m in tokens["lens_model"].unique()]
        lines.append(f"| {layer} | {g['norm'].iloc[0]:.3g} | " + " | ".join(cells) + " |")
    (out / "adl_tokens.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [out / name for name in OUTPUTS]


def _median_ranks(rows: list[dict]):
    import pandas as pd

    targets = pd.DataFrame(_split(rows)["targets"], columns=["lens_model", "lens", "layer", "token_id", "token", "rank"])
    return targets.groupby(["lens_model", "layer"], as_index=False)["rank"].median()


def figures(rows: list[dict], out: Path) -> list[Path]:
    med = _median_ranks(rows)
    if med.empty:
        return []
    from figures.by_layer import plot_by_layer

    return list(plot_by_layer(med, Path(out) / "adl_target_rank", value_col="rank", model_col="lens_model",
                              ylabel="median rank of target tokens", title="ADL: target tokens' rank by layer"))


def summary(rows: list[dict]) -> list[dict]:
    import pandas as pd

    out = [{"part": NAME, "group": f"{r.lens_model}'s lens", "layer": int(r.layer), "metric": "target_median_rank",
            "value": float(r["rank"])} for _, r in _median_ranks(rows).iterrows()]
    steering = pd.DataFrame(_split(rows)["steering"])
    if not steering.empty and steering["target_after"].notna().any():
        for (model, layer, scale, kind), g in steering.groupby(["model", "layer", "scale", "prompt_kind"]):
            for metric, column in (("steered_target_rate", "target_after"), ("target_rate_before", "target_before")):
                out.append({"part": NAME, "group": f"{model} x{scale:g} {kind}", "layer": int(layer), "metric": metric,
                            "value": float(g[column].mean())})
    return out


PART = Part(NAME, add_arguments, ROW_OPTIONS, run, tables, summary, figures, work, outputs=OUTPUTS, folders=(NAME,))
