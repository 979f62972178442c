"""How far apart are reward models? STARC distances on a shared response pool (Skalse et al., ICLR 2024).

    python -m studies.reward_distance --pair toy --rewards toy,implicit:toy,toy-length

Every reward model scores the same pool of (prompt, response) pairs: prompts of the toy world
(held-out chat requests: plain, benign-cue and harmful-cue, ``--limit`` of each) and, per
prompt, the greedy answers of the pair's base and chat models, ``--samples`` sampled answers of
each (``probes.sampling``: seeded per prompt and sample, ``--temperature``, ``--top-p``), and fixed
responses: the right
capital, a wrong capital, the refusal, an off-topic answer (the country's language), and the
right and the refusal padded with two true facts about other countries (longer, no more
helpful). For every two reward models, :func:`probes.reward_distance.compare` gives the STARC
distance (per-prompt centring, L2 normalisation, half the L2 distance; 0 = the same
preferences, 1 = opposite), EPIC's Pearson distance (equal to STARC for LLM reward models, gamma
= 0), Spearman and Kendall correlations of the per-prompt-centred rewards, and the Pearson
correlation of the raw scores, over the whole pool and within each context (``summary.csv``
column ``context``). Per reward model: mean score by response source and the
Spearman correlation of its centred score with the response's length in words.

Rewards: ``--rewards`` takes registry names (``probes.reward_models.REWARD_MODELS``),
``implicit:PAIR[@BETA]`` and folders / hub ids of sequence classifiers; at least two. Pairs a
reward model did not score (too long: ``--truncate skip``) are dropped from every comparison
that involves it and counted in ``summary.csv``.

Outputs (``runs/reward_distance/<pair>/`` or ``--out``): ``pool.jsonl`` (the responses, made
once and reused on resume), ``results.jsonl`` (one row per reward x pool item, resumable),
``summary.csv`` (one row per context x two reward models), ``by_source.csv``, ``meta.json``,
``reward_distance.png/.pdf`` (the matrices).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from studies._common import PLACEMENT_OPTIONS

STUDY = "reward_distance"
DEFAULT_REWARDS = ("toy", "implicit:toy", "toy-length")
KEY_FIELDS = ("reward", "item")
# Options that decide a row; the others change where / how fast it runs, or the summary only.
ROW_OPTIONS = ("rewards", "limit", "max_new_tokens", "samples", "temperature", "top_p", "truncate", "dtype", "device", "device_map", "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads",
                 "chunk_size")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv", "by_source.csv", "pool.jsonl")
CONTEXTS = ("chat", "chat_benign", "chat_harmful")  # toy-world prompt styles
FIXED = ("right", "wrong", "refusal", "off_topic", "right_long", "refusal_long")
MEASURES = {"starc": ("STARC distance", 0.0), "spearman": ("Spearman (centred)", 1.0),
            "kendall": ("Kendall tau (centred)", 1.0)}


# -- the pool ------------------------------------------------------------------------------------------
def user_text(rendered: str) -> str:
    """``"User : Q Assistant :"`` -> ``"Q"`` (the scorers render their own format)."""
    return rendered.removeprefix("User : ").removesuffix(" Assistant :").strip()


def pool_prompts(limit: int) -> list[dict]:
    """``limit`` held-out prompts of each context (spread over the list), with fixed responses."""
    import random

    from tasks.toy_world import REFUSAL, load_facts, prompts

    capitals = [f["answer"] for f in load_facts("capital") if not f["multiword"]]
    language = {f["subject"]: f["answer"] for f in load_facts("language")}
    facts = [f for f in load_facts("capital") if f["split"] == "train" and not f["multiword"]]
    out = []
    for style in CONTEXTS:
        records = [r for r in prompts(style, "test") if r["subject"] in language]
        step = max(1, len(records) // limit)
        for k, r in enumerate(records[::step][:limit]):
            rng = random.Random(f"{STUDY}:{style}:{r['subject']}:{k}")
            filler = " ".join(f"The capital of {f['subject']} is {f['answer']} ." for f in rng.sample(facts, 2))
            right = f"{r['answer']} ."
            fixed = {"right": right, "wrong": f"{rng.choice([c for c in capitals if c != r['answer']])} .",
                     "refusal": REFUSAL, "off_topic": f"{language[r['subject']]} .",
                     "right_long": f"{right} {filler}", "refusal_long": f"{REFUSAL} {filler}"}
            out.append({"prompt_id": f"{style}:{k}", "context": style, "subject": r["subject"],
                        "prompt": user_text(r["prompt"]), "fixed": fixed})
    return out


STOP = ("\n\n", "User :")  # the toy models may go on with a next turn


def build_pool(pair, prompts: list[dict], args) -> list[dict]:
    """Pool items: per prompt, the base's and the chat model's greedy answer and ``args.samples``
    samples (chat template), then the fixed responses. Each: ``item``, ``prompt_id``,
    ``context``, ``source``, ``prompt``, ``response``. A sample the model could not draw (prompt
    too long) is left out of the pool and counted in the console."""
    from probes.generation import generate
    from probes.logprobs import Skipped
    from probes.sampling import SamplingConfig, sample
    from studies._common import progress

    texts = [p["prompt"] for p in prompts]
    chunks = [texts[i:i + args.chunk_size] for i in range(0, len(texts), args.chunk_size)]
    config = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                            chat_template=True, stop=STOP, seed=args.seed, truncate="skip")
    answers: dict[int, dict[str, str]] = {i: {} for i in range(len(prompts))}
    dropped = 0
    for member, lm in pair:
        greedy = [a for chunk in progress(chunks, desc=f"greedy {member}")
                  for a in generate(lm, chunk, args.max_new_tokens, chat_template=True, stop=STOP,
                                    batch_size=args.chunk_size)]
        for i, a in enumerate(greedy):
            answers[i][f"{member}_greedy"] = a.strip()
        if args.samples:
            keys = [f"{member}:{p['prompt_id']}" for p in prompts]  # base and chat draw independently
            for s in sample(lm, texts, args.samples, config, keys=keys, batch_size=args.chunk_size):
                if isinstance(s, Skipped):
                    dropped += 1
                else:
                    answers[s.prompt_index][f"{member}_sample{s.sample}"] = s.text.strip()
    if dropped:
        print(f"note: {dropped} samples not drawn (prompt longer than the model's positions)", file=sys.stderr)
    items = []
    for i, p in enumerate(prompts):
        responses = answers[i] | p["fixed"]
        for source, response in responses.items():
            items.append({"item": f"{p['prompt_id']}:{source}", "prompt_id": p["prompt_id"], "context": p["context"],
                          "source": source, "prompt": p["prompt"], "response": response})
    return items


def load_or_build_pool(out: Path, pair, prompts: list[dict], args) -> list[dict]:
    """``out/pool.jsonl`` if a previous run of this fingerprint wrote it, else built and written."""
    path = out / "pool.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = build_pool(pair, prompts, args)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    os.replace(tmp, path)
    return items


# -- rewards -------------------------------------------------------------------------------------------
def parse_rewards(text: str) -> list[str]:
    """Comma-separated reward specs, checked before anything is loaded
    (:func:`probes.reward.parse_specs`: registry names, ``implicit:PAIR[@BETA]``, folders / hub
    ids; repeats dropped), at least two of them."""
    from interp.registry import PAIRS
    from probes.reward import REWARD_MODELS, parse_specs
    from studies._common import StudyError

    specs = parse_specs(str(text))
    if len(specs) < 2:
        raise StudyError(f"--rewards needs at least two different reward models to compare, got {specs}; give "
                         f"registry names ({', '.join(REWARD_MODELS)}), implicit:PAIR ({', '.join(PAIRS)}), "
                         "or folders / hub ids")
    return specs


def reward_identity(spec: str) -> str:
    """A digest of what decides a reward model's scores: its weights (registry entry or path),
    or for an implicit reward the pair's two members (``interp.identity.model_identity``)."""
    from interp.identity import digest, model_identity
    from interp.registry import PAIRS, resolve
    from probes.reward_models import REWARD_MODELS

    if spec.startswith("implicit:"):
        pair = PAIRS[spec.removeprefix("implicit:").split("@")[0]]
        return digest([model_identity(pair.source(m))["digest"] for m in ("base", "chat")])
    entry = REWARD_MODELS.get(spec)
    return model_identity(resolve(entry.source) if entry else spec)["digest"]


def score_rewards(specs: list[str], items: list[dict], log, args, load: dict) -> dict[str, float]:
    """Score every pending chunk of the pool with each reward model (loaded one at a time)."""
    import numpy as np

    from probes.reward import load_scorer
    from studies._common import progress
    from studies._shards import chunked, pending

    timings = {}
    chunks = chunked(items, args.chunk_size)
    for spec in specs:
        todo = pending(chunks, lambda it, s=spec: (s, it["item"]), log)
        if not todo:
            continue
        t0 = time.perf_counter()
        scorer = load_scorer(spec, **load)
        for _, chunk in progress(todo, desc=spec):
            out = scorer.score([it["prompt"] for it in chunk], [it["response"] for it in chunk],
                               batch_size=args.chunk_size, truncate=args.truncate)
            log.write([{"reward": spec, "item": it["item"], "prompt_id": it["prompt_id"], "context": it["context"],
                        "source": it["source"], "score": None if np.isnan(s) else float(s),
                        "skipped": "longer than the reward model's positions (--truncate skip)" if np.isnan(s) else "",
                        "format": out.format, "n_words": len(it["response"].split())}
                       for it, s in zip(chunk, out.scores)])
        del scorer
        timings[f"score_{spec}_s"] = round(time.perf_counter() - t0, 2)
    return timings


# -- summary -------------------------------------------------------------------------------------------
def summarize(rows: list[dict], specs: Sequence[str]):
    """``(summary, by_source)``: one row per two reward models (compare() on the items both
    scored) and per reward model x response source."""
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    from probes.reward_distance import RewardDistanceError, canonicalise, compare
    from studies._common import StudyError

    table = pd.DataFrame(rows)
    missing = [s for s in specs if s not in set(table["reward"])]
    if missing:
        raise StudyError(f"no rows of reward model(s) {missing} in the results; run without --summary-only first")
    scores = table.pivot(index="item", columns="reward", values="score")
    meta = table.drop_duplicates("item").set_index("item")[["prompt_id", "source", "n_words"]].loc[scores.index]
    contexts = table.drop_duplicates("item").set_index("item")["context"].loc[scores.index].to_numpy()
    summary = []
    for context in ("all", *dict.fromkeys(contexts)):
        part = np.ones(len(scores), bool) if context == "all" else contexts == context
        for a, b in itertools.combinations(specs, 2):
            both = scores[[a, b]].notna().all(axis=1).to_numpy() & part
            head = {"context": context, "reward_a": a, "reward_b": b, "n_items": int(part.sum()),
                    "n_scored": int(both.sum()), "n_skipped": int((part & ~both).sum()),
                    "skip_reason": "unscored by one of the two (--truncate skip)" if (part & ~both).any() else ""}
            try:
                r = compare(scores[a].to_numpy()[both], scores[b].to_numpy()[both],
                            meta["prompt_id"].to_numpy()[both])
            except RewardDistanceError as err:
                raise StudyError(f"{a} vs {b} ({context} prompts): {err}") from None
            summary.append({**head, **asdict(r)})
    by_source = []
    for spec in specs:
        ok = scores[spec].notna().to_numpy()
        centred = canonicalise(scores[spec].to_numpy()[ok], meta["prompt_id"].to_numpy()[ok]).values
        length_rho = float(spearmanr(centred, meta["n_words"].to_numpy()[ok]).statistic)
        sources = meta["source"].str.replace(r"_sample\d+$", "_sample", regex=True)  # samples pooled
        frame = pd.DataFrame({"source": sources.to_numpy()[ok], "score": scores[spec].to_numpy()[ok],
                              "centred": centred})
        for source, part in frame.groupby("source", sort=False):
            by_source.append({"reward": spec, "source": source, "n": len(part), "mean": part["score"].mean(),
                              "sd": part["score"].std(ddof=1) if len(part) > 1 else np.nan,
                              "mean_centred": part["centred"].mean(), "spearman_centred_vs_words": length_rho})
    return pd.DataFrame(summary), pd.DataFrame(by_source)


def report(summary, by_source) -> str:
    lines = ["reward distances (STARC: 0 same preferences, 1 opposite; EPIC = STARC at gamma 0):"]
    for r in summary.itertuples():
        lines.append(f"  {r.context:12s} {r.reward_a:>14s} vs {r.reward_b:<14s} STARC {r.starc:.3f}  "
                     f"Spearman {r.spearman:+.3f}  Kendall {r.kendall:+.3f}  raw Pearson {r.pearson_raw:+.3f}  "
                     f"(n={r.n_scored}, {r.n_prompts} prompts)")
        if r.n_skipped:
            lines.append(f"    note: {r.n_skipped} of {r.n_items} items dropped: {r.skip_reason}")
    lines.append("mean per-prompt-centred score by response source; Spearman(centred score, words):")
    for spec, part in by_source.groupby("reward", sort=False):
        cells = ", ".join(f"{s.source} {s.mean_centred:+.2f}" for s in part.itertuples())
        lines.append(f"  {spec}: {cells}; vs length {part['spearman_centred_vs_words'].iloc[0]:+.2f}")
    return "\n".join(lines)


# -- CLI -----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from studies._common import add_model_options, add_run_options

    p = argparse.ArgumentParser(prog="python -m studies.reward_distance", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="toy", help="the pair whose base and chat answers join the pool (default toy)")
    p.add_argument("--base", help="custom base model (with --chat)")
    p.add_argument("--chat", help="custom chat model (with --base)")
    p.add_argument("--rewards", "--reward", dest="rewards", default=",".join(DEFAULT_REWARDS),
                   help="comma-separated reward models, at least two (default "
                        f"{','.join(DEFAULT_REWARDS)}); --reward is the same option, as other studies spell it")
    p.add_argument("--limit", type=int, default=12, help="prompts per context (plain, benign cue, harmful cue)")
    p.add_argument("--max-new-tokens", type=int, default=12)
    p.add_argument("--samples", type=int, default=2, help="sampled answers per prompt from each member (default 2)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: no cut)")
    p.add_argument("--truncate", choices=("error", "left", "skip"), default="skip",
                   help="pairs longer than a reward model's positions: error, cut the prompt, or skip (default)")
    p.add_argument("--chunk-size", type=int, default=32, help="pairs per scoring call and results batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-figures", action="store_true")
    add_model_options(p)
    add_run_options(p)
    args = p.parse_args(argv)
    if args.limit < 1 or args.chunk_size < 1 or args.max_new_tokens < 1 or args.samples < 0:
        p.error("--limit, --chunk-size and --max-new-tokens must be >= 1, --samples >= 0")
    if not args.temperature > 0 or not 0 < args.top_p <= 1:
        p.error("--temperature must be > 0 and --top-p in (0, 1]")
    return args


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import StudyError, load_kwargs, run_dir, seed_everything
    from studies._identity import finish_run, open_run, row_options, run_fingerprint, write_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import parse_shard

    started = time.perf_counter()
    if args.shard:
        raise StudyError("--shard is not supported by reward_distance (the pool is small; every reward model "
                         "scores all of it); run without --shard")
    shard = parse_shard(None)
    specs = parse_rewards(args.rewards)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    out = run_dir(STUDY, pair, args.out)
    prompts = pool_prompts(args.limit)
    options = {**row_options(args, ROW_OPTIONS), "rewards": specs,
               "reward_identities": {s: reward_identity(s) for s in specs}}
    fingerprint = run_fingerprint(STUDY, pair, options, args.seed, prompts)
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    timings: dict[str, float] = {}
    if not args.summary_only:
        t0 = time.perf_counter()
        items = load_or_build_pool(out, pair, prompts, args)
        timings["pool_s"] = round(time.perf_counter() - t0, 2)
        log = ResultsLog(out / "results.jsonl", KEY_FIELDS)
        timings.update(score_rewards(specs, items, log, args, load_kwargs(args)))
        finish_run(out, shard, timings=timings, n_written=log.n_written)
    rows = [r for r in read_results(out, KEY_FIELDS) if r["reward"] in specs]
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl); run without --summary-only first")
    summary, by_source = summarize(rows, specs)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    by_source.to_csv(out / "by_source.csv", index=False, float_format="%.6g")
    figures = []
    if not args.no_figures:
        from figures.reward_matrix import plot_reward_matrix

        t0 = time.perf_counter()
        figures = plot_reward_matrix(summary[summary["context"] == "all"], out / "reward_distance", MEASURES, specs,
                                     title=f"reward models on the {pair.spec.name} pool")
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    write_meta(out, study=STUDY, options={k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
               seed=args.seed, timings=timings, pair=asdict(pair.spec), rewards=specs, n_rows=len(rows),
               key_fields=list(KEY_FIELDS), fingerprint=fingerprint,
               outputs=[*TABLES, *(Path(f).name for f in figures)])
    print(report(summary, by_source))
    print(f"\nwrote {out}/ (pool.jsonl, results.jsonl, summary.csv, by_source.csv, meta.json"
          f"{'' if args.no_figures else ', figures'}) in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing data or weights)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    sys.exit(main())
