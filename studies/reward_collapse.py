"""Reward collapse (seed section 4.3; Song et al. 2023): are a reward model's rewards bimodal on
closed-ended tasks and continuous on open-ended ones, and do they rank the right answer first?

    python -m studies.reward_collapse                              # toy pair, toy reward model, offline
    python -m studies.reward_collapse --pair llama2-7b --reward oasst-deberta-v3-large-v2 \\
        --tasks boolq,hh_pairwise --data boolq=boolq_val.jsonl --data hh_pairwise=hh_test.jsonl \\
        --samples 4 --temperature 1 --top-p 0.9

Work steps (each resumable, rows in ``results.jsonl``):

1. *pairs*: every task x response format x item, the reward (``--reward``, :mod:`probes.reward`)
   of the correct / chosen and of the incorrect / rejected response, at the output and, with
   ``--layers all``, through the reward lens of every block. Closed-ended tasks
   (``toy_closed``, ``boolq``) come in the formats ``0/1``, ``yes/no``, ``true/false``,
   ``sentence`` (and the toy world's ``short``; ``--formats`` selects); open-ended ones
   (``toy_open``, ``hh_pairwise``) in ``text``. See :mod:`tasks.reward_pairs`.
2. *samples*: ``--samples N`` answers per item from each member of the pair (``--sample-from``,
   default base and chat: "the reward distribution on which the base model is fine-tuned"),
   seeded per (item, sample) (:mod:`probes.sampling`; ``--temperature``, ``--top-p``,
   ``--max-new-tokens``, ``--chat-template``), then scored by the same reward model.

Summary (``summary.csv``, per task x format x source x readout; source ``pairs`` pools both
responses, ``base`` / ``chat`` are the samples): ``n``, ``mean``, ``sd``, the chosen and rejected
means, pairwise accuracy (reward(correct) > reward(incorrect); ties count half, ``n_ties``),
AUROC, Hartigan's dip and its p-value, Sarle's bimodality coefficient, the BIC of a 1- and a
2-component Gaussian mixture and which wins (:mod:`probes.distribution_stats`), and the item
accounting (skipped, truncated). ``comparison.csv``: base vs chat samples per task, paired by
item (per-item mean reward): Wilcoxon signed-rank and paired t.

Manual check: ``annotations.csv`` lists every sample with its reward, the closed task's
reference answer and empty ``judgement`` / ``note`` columns (an existing file with judgements is
never overwritten). Fill ``judgement`` with good/bad (1/0, yes/no, correct/incorrect) and rerun
with ``--annotations PATH``: ``agreement.csv`` reports, per task, how often the reward model
agrees with the judgements (accuracy and Cohen's kappa; a sample counts as good for the reward
model when its reward is above the task's threshold, the midpoint of the mean chosen and mean
rejected pair rewards, all formats pooled) and the AUROC of the reward against the judgements.

Figures: reward histograms with a KDE per task and format, correct vs incorrect overlaid
(``rewards_<task>``), sample rewards base vs chat (``samples_<task>``), pairwise accuracy by
format (``accuracy_by_format``), mean reward of correct vs incorrect by layer (``reward_by_layer``).

The stages depend on each other (samples are scored after sampling), so ``--shard`` is not
supported; a run resumes chunk by chunk instead (a partly written chunk is recomputed whole, so
resumed rows equal an uninterrupted run's).

Outputs (``runs/reward_collapse/<pair>/`` or ``--out``): ``results.jsonl``, ``summary.csv``,
``comparison.csv``, ``annotations.csv``, ``agreement.csv`` (with ``--annotations``), ``meta.json``,
figures (PNG + PDF).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from studies._common import PLACEMENT_OPTIONS, StudyError, add_model_options, add_run_options, comma_list, load_kwargs

STUDY = "reward_collapse"
KEY_FIELDS = ("stage", "source", "task", "format", "item", "sample")
DEFAULT_TASKS = ("toy_closed", "toy_open", "toy_closed_heldout", "toy_open_heldout", "boolq", "hh_pairwise")
MEMBERS = ("base", "chat")
# Options that decide a row; the reward model enters by identity (reward_identity). The others
# choose where and how fast a run goes, or shape the summary (--annotations).
ROW_OPTIONS = ("tasks", "data", "formats", "limit", "reward", "layers", "samples", "sample_from", "temperature",
               "top_p", "max_new_tokens", "chat_template", "truncate", "batch_size", "dtype", "device", "device_map",
               "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads",
                 "annotations")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv", "comparison.csv", "agreement.csv")  # annotations.csv is kept: it may hold judgements
JUDGEMENTS = {"good": 1, "bad": 0, "1": 1, "0": 0, "yes": 1, "no": 0, "correct": 1, "incorrect": 0, "true": 1,
              "false": 0, "y": 1, "n": 0}


@dataclass(frozen=True)
class SampleUnit:
    """One item of a task to sample answers to (its question), under one pair member."""

    task: str
    kind: str
    item: str
    question: str
    reference: str | None


# -- work lists -----------------------------------------------------------------------------------
def load_items(tasks: Sequence[str], data: dict[str, str], formats: Sequence[str] | None, limit: int | None) -> list:
    """Every task's :class:`tasks.reward_pairs.PairItem` s, task by task."""
    from tasks.errors import TaskError
    from tasks.reward_pairs import TASKS, load_pairs

    unknown = [t for t in tasks if t not in TASKS] + [t for t in data if t not in tasks]
    if unknown:
        raise StudyError(f"unknown task(s) {unknown} (or --data for a task not in --tasks); valid tasks: "
                         f"{', '.join(TASKS)}")
    fixtures = [t for t in tasks if TASKS[t].needs_data and t not in data]
    if fixtures:
        print(f"note: no --data for {', '.join(fixtures)}: using the shipped fixtures (tasks/fixtures, ~12 "
              "hand-written items per task): a smoke test, not the benchmark. Pass --data task=PATH.", file=sys.stderr)
    items = []
    for task in tasks:
        spec = TASKS[task]
        wanted = None if spec.kind == "open" or formats is None else formats
        try:
            loaded = load_pairs(task, data=data.get(task, "fixture") if spec.needs_data else None, limit=limit,
                                formats=wanted)
        except TaskError as err:
            raise StudyError(str(err)) from None
        if not loaded:
            raise StudyError(f"task {task!r}: no items loaded")
        items += loaded
    return items


def sample_units(items: Sequence) -> list[SampleUnit]:
    """One unit per (task, item): the question its samples answer (formats share it)."""
    seen: dict[tuple[str, str], SampleUnit] = {}
    for it in items:
        seen.setdefault((it.task, it.id), SampleUnit(it.task, it.kind, it.id, it.question, it.reference))
    return list(seen.values())


def reward_identity(spec: str) -> dict:
    """What decides the reward model's numbers: its weights' identity (each member's for an implicit reward)."""
    from interp.identity import model_identity
    from interp.registry import PAIRS
    from probes.reward_models import REWARD_MODELS

    if spec.startswith("implicit:"):
        from probes.implicit_reward import parse_implicit

        pair, beta = parse_implicit(spec)
        return {"implicit": pair, "beta": beta, **{m: model_identity(PAIRS[pair].source(m)) for m in MEMBERS}}
    entry = REWARD_MODELS.get(spec)
    return model_identity(entry.source if entry else spec)


# -- scoring ----------------------------------------------------------------------------------------
def _truncated(scorer, prompts: Sequence[str], responses: Sequence[str], truncate: str) -> list[int | None]:
    """Prompt words cut per pair to fit the reward model (``None`` where the scorer does not say)."""
    from probes.reward_inputs import fit

    rm = getattr(scorer, "rm", None)
    if rm is None:
        return [None] * len(prompts)
    out = []
    for p, r in zip(prompts, responses):
        fitted = fit(rm.tokenizer, scorer.format, p, r, rm.max_positions, truncate)
        out.append(0 if fitted is None else fitted.words_cut)
    return out


def _score(scorer, prompts, responses, layers, truncate: str):
    """``(scores [n], by_layer {label: [n]}, truncated [n])`` of one chunk."""
    import numpy as np

    from interp.errors import PromptError

    try:
        out = scorer.score(list(prompts), list(responses), layers=layers, batch_size=len(prompts), truncate=truncate)
    except PromptError as err:
        raise StudyError(f"reward model {scorer.name!r}: {err}") from None
    by_layer = {k: np.round(v, 6) for k, v in out.by_layer.items()} or {"final": np.round(out.scores, 6)}
    return np.round(out.scores, 6), by_layer, _truncated(scorer, prompts, responses, truncate)


def _finite(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def pair_rows(scorer, chunk: Sequence, layers, truncate: str) -> list[dict]:
    """Rows of one chunk of pair items: both responses' rewards at every readout."""
    n = len(chunk)
    prompts = [it.prompt for it in chunk] * 2
    scores, by_layer, cut = _score(scorer, prompts, [it.chosen for it in chunk] + [it.rejected for it in chunk],
                                   layers, truncate)
    rows = []
    for i, it in enumerate(chunk):
        row = {"stage": "pair", "source": "pairs", "task": it.task, "format": it.format, "item": it.id, "sample": 0,
               "kind": it.kind, "chosen": it.chosen, "rejected": it.rejected}
        a, b = _finite(scores[i]), _finite(scores[n + i])
        if a is None or b is None:
            rows.append({**row, "skipped": f"longer than the reward model's positions (--truncate {truncate})",
                         "truncated": 0})
            continue
        truncated = max(c or 0 for c in (cut[i], cut[n + i]))
        rows.append({**row, "skipped": None, "truncated": truncated, "reward_chosen": a, "reward_rejected": b,
                     "by_layer": {k: [float(v[i]), float(v[n + i])] for k, v in by_layer.items()}})
    return rows


def sample_rows(lm, member: str, chunk: Sequence[SampleUnit], args) -> list[dict]:
    """Sample rows (text, no reward yet) of one chunk of units: every sample number of each."""
    from probes.logprobs import Skipped
    from probes.sampling import SamplingConfig, sample

    cfg = SamplingConfig(temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens,
                         chat_template=args.chat_template == "on", seed=args.seed, truncate=args.truncate)
    drawn = sample(lm, [u.question for u in chunk], n_samples=args.samples, config=cfg,
                   keys=[f"{u.task}/{u.item}" for u in chunk], batch_size=len(chunk) * args.samples)
    rows = []
    for k, s in enumerate(drawn):
        u, number = chunk[k // args.samples], k % args.samples
        row = {"stage": "sample", "source": member, "task": u.task, "format": "sample", "item": u.item,
               "sample": number, "kind": u.kind}
        if isinstance(s, Skipped):
            rows.append({**row, "skipped": f"{s.reason} (--truncate {args.truncate})", "truncated": 0})
        else:
            rows.append({**row, "skipped": None, "truncated": s.truncated, "text": s.text, "seed": s.seed,
                         "n_tokens": s.n_tokens, "finished": s.finished})
    return rows


def score_sample_rows(scorer, chunk: Sequence[tuple[str, SampleUnit, int]], sampled: dict, layers, truncate: str
                      ) -> list[dict]:
    """Score rows of one chunk of (member, unit, sample number), from the sample rows."""
    rows, todo = [], []
    for member, u, number in chunk:
        s = sampled[("sample", member, u.task, "sample", u.item, number)]
        row = {"stage": "score", "source": member, "task": u.task, "format": "sample", "item": u.item,
               "sample": number, "kind": u.kind}
        if s.get("skipped"):
            rows.append({**row, "skipped": s["skipped"], "truncated": 0})
        else:
            rows.append(row)
            todo.append((len(rows) - 1, u, s["text"]))
    if todo:
        scores, by_layer, cut = _score(scorer, [u.question for _, u, _ in todo], [t for _, _, t in todo], layers,
                                       truncate)
        for j, (index, _, _) in enumerate(todo):
            value = _finite(scores[j])
            if value is None:
                rows[index].update(skipped=f"longer than the reward model's positions (--truncate {truncate})",
                                   truncated=0)
            else:
                rows[index].update(skipped=None, truncated=cut[j] or 0, reward=value,
                                   by_layer={k: float(v[j]) for k, v in by_layer.items()})
    return rows


# -- the run ------------------------------------------------------------------------------------------
def run_work(pair, items, units, log, args) -> dict[str, float]:
    """Sample with each member (one in memory at a time), then load the reward model and score
    the pairs and the samples; every stage skips chunks already in ``log``."""
    import torch

    from studies._common import progress
    from studies._results import read_results
    from studies._shards import chunked, load_members, pending

    timings = {}
    members = [m for m in MEMBERS if m in args.sample_from] if args.samples else []
    unit_chunks = chunked(units, max(1, args.batch_size // max(1, args.samples)))

    def sample_key(member):
        return lambda u: ("sample", member, u.task, "sample", u.item, args.samples - 1)

    todo = {m: pending(unit_chunks, sample_key(m), log) for m in members}
    # a chunk is complete when each unit's last sample is written: rows of a chunk are written together
    for member, lm in load_members(pair, [m for m in members if todo[m]]):
        t0 = time.perf_counter()
        for _, chunk in progress(todo[member], desc=f"sample {member}", total=len(todo[member])):
            with torch.no_grad():
                log.write(sample_rows(lm, member, chunk, args))
        timings[f"sample_{member}_s"] = round(time.perf_counter() - t0, 2)
    pair_chunks = chunked(items, args.batch_size)
    pairs_todo = pending(pair_chunks, lambda it: ("pair", "pairs", it.task, it.format, it.id, 0), log)
    score_work = [(m, u, s) for m in members for u in units for s in range(args.samples)]
    score_chunks = chunked(score_work, args.batch_size) if score_work else []
    scores_todo = pending(score_chunks, lambda w: ("score", w[0], w[1].task, "sample", w[1].item, w[2]), log)
    if not pairs_todo and not scores_todo:
        return timings
    from interp.errors import InterpError
    from probes.reward import load_scorer

    t0 = time.perf_counter()
    try:
        scorer = load_scorer(args.reward, **load_kwargs(args))
    except InterpError as err:
        raise StudyError(f"--reward {args.reward}: {err}") from None
    layers = "all" if args.layers == "all" else None
    for _, chunk in progress(pairs_todo, desc="reward pairs", total=len(pairs_todo)):
        log.write(pair_rows(scorer, chunk, layers, args.truncate))
    if scores_todo:
        sampled = {tuple(r[k] for k in KEY_FIELDS): r for r in read_results(log.path.parent, KEY_FIELDS)
                   if r["stage"] == "sample"}
        for _, chunk in progress(scores_todo, desc="reward samples", total=len(scores_todo)):
            log.write(score_sample_rows(scorer, chunk, sampled, layers, args.truncate))
    timings["reward_s"] = round(time.perf_counter() - t0, 2)
    return timings


# -- tables -------------------------------------------------------------------------------------------
SUMMARY_COLUMNS = ("task", "kind", "format", "source", "layer", "n_items", "n_scored", "n_skipped", "skip_reason",
                   "n_truncated", "n", "mean", "sd", "mean_chosen", "sd_chosen", "mean_rejected", "sd_rejected",
                   "pairwise_accuracy", "n_ties", "auroc", "dip", "dip_p", "bimodality_coefficient", "bic_1", "bic_2",
                   "gmm_components")


def _layers_of(rows: list[dict]) -> list[str]:
    for r in rows:
        if not r.get("skipped"):
            return list(r["by_layer"])
    return ["final"]


def summarize(rows: list[dict]):
    """The summary table (module docstring), from the rows alone."""
    import numpy as np
    import pandas as pd

    from probes import distribution_stats as ds
    from studies import _accounting

    out = []
    pairs = [r for r in rows if r["stage"] == "pair"]
    scored = [r for r in rows if r["stage"] == "score"]
    for key, group in _groups(pairs, ("task", "format")).items():
        head = {"task": key[0], "kind": group[0]["kind"], "format": key[1], "source": "pairs",
                **_accounting.count(group)}
        ok = [r for r in group if not r.get("skipped")]
        if not ok:
            out.append({**head, "layer": "final"})
            continue
        for layer in _layers_of(ok):
            a = np.array([r["by_layer"][layer][0] for r in ok])
            b = np.array([r["by_layer"][layer][1] for r in ok])
            acc = ds.pairwise_accuracy(a, b)
            out.append({**head, "layer": layer, **ds.describe(np.concatenate([a, b])),
                        "mean_chosen": float(a.mean()), "sd_chosen": _sd(a), "mean_rejected": float(b.mean()),
                        "sd_rejected": _sd(b), "pairwise_accuracy": acc.accuracy, "n_ties": acc.n_ties,
                        "auroc": ds.auroc(a, b)})
    for key, group in _groups(scored, ("task", "source")).items():
        head = {"task": key[0], "kind": group[0]["kind"], "format": "sample", "source": key[1],
                **_accounting.count(group)}
        ok = [r for r in group if not r.get("skipped")]
        if not ok:
            out.append({**head, "layer": "final"})
            continue
        for layer in _layers_of(ok):
            out.append({**head, "layer": layer, **ds.describe(np.array([r["by_layer"][layer] for r in ok]))})
    if not any(r.get("n_scored") for r in out):
        raise StudyError("no pair or sample was scored: " + "; ".join(
            _accounting.notes(_accounting.by_group(pairs + scored, ["source", "task", "format"]), _label)))
    table = pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))
    table.attrs["notes"] = _accounting.notes(_accounting.by_group(pairs + scored, ["source", "task", "format"]), _label)
    return table


def _label(key: tuple) -> str:
    return " ".join(str(k) for k in key)


def _sd(x) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else math.nan


def _groups(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def compare(rows: list[dict]):
    """Base vs chat samples per task (final readout), paired by item: per-item mean rewards."""
    import numpy as np
    import pandas as pd

    from probes.distribution_stats import paired_tests

    out = []
    scored = [r for r in rows if r["stage"] == "score" and not r.get("skipped")]
    for task, group in _groups(scored, ("task",)).items():
        means = {}
        for (member, item), g in _groups(group, ("source", "item")).items():
            means.setdefault(member, {})[item] = float(np.mean([r["reward"] for r in g]))
        if not set(MEMBERS) <= set(means):
            continue
        shared = sorted(set(means["base"]) & set(means["chat"]))
        if not shared:
            continue
        a, b = np.array([means["base"][i] for i in shared]), np.array([means["chat"][i] for i in shared])
        t = paired_tests(a, b)
        out.append({"task": task[0], "n_items": t.n, "mean_base": float(a.mean()), "mean_chat": float(b.mean()),
                    "mean_diff": t.mean_diff, "wilcoxon_statistic": t.wilcoxon_statistic, "wilcoxon_p": t.wilcoxon_p,
                    "t_statistic": t.t_statistic, "t_p": t.t_p})
    return pd.DataFrame(out, columns=["task", "n_items", "mean_base", "mean_chat", "mean_diff", "wilcoxon_statistic",
                                      "wilcoxon_p", "t_statistic", "t_p"])


# -- annotations ----------------------------------------------------------------------------------------
ANNOTATION_COLUMNS = ("source", "task", "kind", "item", "sample", "prompt", "response", "reward", "reference",
                      "mentions_reference", "judgement", "note")


def annotation_rows(rows: list[dict], items: Sequence) -> list[dict]:
    """One row per scored sample, judgement columns empty."""
    from probes.generation import map_to_option

    questions = {(it.task, it.id): (it.question, it.reference) for it in items}
    texts = {(r["source"], r["task"], r["item"], r["sample"]): r.get("text") for r in rows if r["stage"] == "sample"}
    out = []
    for r in rows:
        if r["stage"] != "score" or r.get("skipped"):
            continue
        question, reference = questions.get((r["task"], r["item"]), ("", None))
        text = texts.get((r["source"], r["task"], r["item"], r["sample"]), "")
        mentions = None if reference is None else map_to_option(text, [reference]) == 0
        out.append({"source": r["source"], "task": r["task"], "kind": r["kind"], "item": r["item"],
                    "sample": r["sample"], "prompt": question, "response": text, "reward": r["reward"],
                    "reference": reference, "mentions_reference": mentions, "judgement": "", "note": ""})
    return out


def write_annotations(path: Path, rows: list[dict]) -> bool:
    """Write the annotation sheet unless ``path`` already holds judgements; returns whether it wrote."""
    if path.exists() and any((r.get("judgement") or "").strip() for r in _read_csv(path)):
        return False
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(ANNOTATION_COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in ANNOTATION_COLUMNS})
    return True


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_judgements(path: str) -> dict[tuple, int]:
    """``(source, task, item, sample) -> 1 (good) / 0 (bad)`` of the filled rows of an annotation sheet."""
    p = Path(path)
    if not p.is_file():
        raise StudyError(f"--annotations {path}: no such file (fill the judgement column of a run's annotations.csv)")
    rows = _read_csv(p)
    missing = [c for c in ("source", "task", "item", "sample", "judgement") if rows and c not in rows[0]]
    if missing or not rows:
        raise StudyError(f"--annotations {path}: needs the columns of annotations.csv; "
                         f"missing {missing or 'every row'}")
    out = {}
    for line, r in enumerate(rows, 2):
        value = (r["judgement"] or "").strip().lower()
        if not value:
            continue
        if value not in JUDGEMENTS:
            raise StudyError(f"--annotations {path} line {line}: judgement {r['judgement']!r} is not one of "
                             f"{', '.join(JUDGEMENTS)} (or empty: not annotated)")
        try:
            out[(r["source"], r["task"], r["item"], int(r["sample"]))] = JUDGEMENTS[value]
        except ValueError:
            raise StudyError(f"--annotations {path} line {line}: sample {r['sample']!r} is not an integer") from None
    return out


def agreement(rows: list[dict], judgements: dict[tuple, int], summary):
    """Per task: the reward model's agreement with the judgements (module docstring)."""
    import numpy as np
    import pandas as pd

    from probes import distribution_stats as ds

    final = summary[(summary["source"] == "pairs") & (summary["layer"] == "final") & (summary["n_scored"] > 0)]
    out = []
    scored = {(r["source"], r["task"], r["item"], r["sample"]): r for r in rows
              if r["stage"] == "score" and not r.get("skipped")}
    unknown = [k for k in judgements if k not in scored]
    for task in dict.fromkeys(k[1] for k in judgements if k in scored):
        keys = [k for k in judgements if k in scored and k[1] == task]
        pairs = final[final["task"] == task]
        if pairs.empty:
            continue
        weights = pairs["n"].to_numpy(float) / 2
        threshold = float((np.average(pairs["mean_chosen"], weights=weights)
                           + np.average(pairs["mean_rejected"], weights=weights)) / 2)
        reward = np.array([scored[k]["reward"] for k in keys])
        human = np.array([judgements[k] for k in keys])
        rm = (reward > threshold).astype(int)
        both = 0 < human.sum() < human.size
        out.append({"task": task, "n_annotated": len(keys), "n_good": int(human.sum()), "threshold": threshold,
                    "rm_good": int(rm.sum()), "accuracy": float((rm == human).mean()),
                    "kappa": ds.cohens_kappa(list(rm), list(human)),
                    "auroc": ds.auroc(reward[human == 1], reward[human == 0]) if both else math.nan})
    table = pd.DataFrame(out, columns=["task", "n_annotated", "n_good", "threshold", "rm_good", "accuracy", "kappa",
                                       "auroc"])
    table.attrs["unknown"] = len(unknown)
    return table


# -- figures ------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in str(name))


def make_figures(rows: list[dict], summary, out: Path) -> list[Path]:
    import pandas as pd

    from figures.by_layer import plot_by_layer
    from figures.reward_hist import plot_reward_histograms
    from figures.task_bars import plot_task_bars

    paths = []
    pairs = [r for r in rows if r["stage"] == "pair" and not r.get("skipped")]
    long = pd.DataFrame([{"task": r["task"], "format": r["format"], "which": which, "reward": r[f"reward_{side}"]}
                         for r in pairs for side, which in (("chosen", "correct"), ("rejected", "incorrect"))])
    for task, g in (long.groupby("task", sort=False) if not long.empty else []):
        kind = pairs[[r["task"] for r in pairs].index(task)]["kind"]
        labels = {"correct": "correct", "incorrect": "incorrect"} if kind == "closed" else \
            {"correct": "chosen", "incorrect": "rejected"}
        paths += plot_reward_histograms(g.assign(which=g["which"].map(labels)), out / f"rewards_{_safe(task)}",
                                        title=f"{task} ({kind}-ended): reward by response format")
    samples = pd.DataFrame([{"task": r["task"], "which": r["source"], "reward": r["reward"]} for r in rows
                            if r["stage"] == "score" and not r.get("skipped")])
    for task, g in (samples.groupby("task", sort=False) if not samples.empty else []):
        paths += plot_reward_histograms(g, out / f"samples_{_safe(task)}", facet_col=None,
                                        title=f"{task}: rewards of sampled answers")
    final = summary[(summary["source"] == "pairs") & (summary["layer"] == "final") & (summary["n_scored"] > 0)]
    if not final.empty:
        paths += plot_task_bars(final.rename(columns={"pairwise_accuracy": "accuracy"}).assign(chance=0.5),
                                out / "accuracy_by_format", task_col="format", model_col="task",
                                ylabel="pairwise accuracy", title="reward(correct) > reward(incorrect), by format")
    layered = summary[(summary["source"] == "pairs") & (summary["layer"] != "final") & (summary["n_scored"] > 0)]
    if not layered.empty:
        tidy = pd.concat([layered.assign(which=w, reward=layered[f"mean_{c}"]) for c, w in
                          (("chosen", "correct / chosen"), ("rejected", "incorrect / rejected"))])
        tidy = tidy.assign(layer=tidy["layer"].astype(int), facet=tidy["task"] + " " + tidy["format"])
        paths += plot_by_layer(tidy, out / "reward_by_layer", value_col="reward", model_col="which",
                               facet_col="facet", ylabel="mean reward (reward lens)")
    return paths


# -- report -------------------------------------------------------------------------------------------
def report(summary, comparison, agree=None) -> str:
    final = summary[summary["layer"] == "final"]
    lines = ["rewards (final readout): pairwise acc [ties], AUROC; mean (sd); dip p; bimodality coef.; GMM best k"]
    for r in final.itertuples():
        if not r.n_scored:
            lines.append(f"  {r.task:18s} {r.format:10s} {r.source:5s}: nothing scored")
            continue
        rank = (f"acc {r.pairwise_accuracy:.2f} [{int(r.n_ties)}], AUROC {r.auroc:.2f}; " if r.source == "pairs"
                else "")
        modal = (f"dip p {r.dip_p:.3f}, BC {r.bimodality_coefficient:.2f}, k={int(r.gmm_components)}"
                 if r.n >= 4 and r.gmm_components == r.gmm_components else "too few for modality")
        lines.append(f"  {r.task:18s} {r.format:10s} {r.source:5s} n={int(r.n):4d}: {rank}mean {r.mean:+.2f} "
                     f"({r.sd:.2f}); {modal}")
    if len(comparison):
        lines.append("chat - base sample rewards (paired by item): mean diff; Wilcoxon p; paired t p")
        for r in comparison.itertuples():
            lines.append(f"  {r.task:18s} n={r.n_items}: {r.mean_diff:+.3f}; p = {r.wilcoxon_p:.3g}; p = {r.t_p:.3g}")
    if agree is not None and len(agree):
        lines.append("agreement with the annotations: accuracy, Cohen's kappa, AUROC")
        for r in agree.itertuples():
            lines.append(f"  {r.task:18s} n={r.n_annotated}: acc {r.accuracy:.2f}, kappa {r.kappa:.2f}, "
                         f"AUROC {r.auroc:.2f}")
    lines += [f"note: {line}" for line in summary.attrs.get("notes", [])]
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------------------------------
def _data(spec: str) -> tuple[str, str]:
    task, sep, path = spec.partition("=")
    if not sep or not task.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"takes TASK=PATH (e.g. boolq=boolq_val.jsonl), got {spec!r}")
    return task.strip(), path.strip()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.reward_collapse", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="toy", help="registry pair whose members are sampled (default toy)")
    p.add_argument("--base", help="path or hub id of a base model (with --chat: a custom pair)")
    p.add_argument("--chat", help="path or hub id of its RL-tuned counterpart")
    p.add_argument("--reward", default="toy", help="reward model: a registry name (probes.reward_models), "
                                                   "implicit:PAIR[@BETA], or a folder / hub id (default toy)")
    p.add_argument("--tasks", type=comma_list, default=DEFAULT_TASKS, help=f"default {','.join(DEFAULT_TASKS)}")
    p.add_argument("--data", type=_data, action="append", metavar="TASK=PATH",
                   help="a task's data file (repeatable); default: the fixtures")
    p.add_argument("--formats", type=comma_list,
                   help="response formats of the closed-ended tasks (default: each task's all)")
    p.add_argument("--limit", type=int, help="at most N items per task")
    p.add_argument("--samples", type=int, default=4, help="samples per item and member (0: no sampling)")
    p.add_argument("--sample-from", type=comma_list, default=MEMBERS,
                   help="members to sample: base,chat (default both)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--chat-template", choices=("on", "off"), default="on",
                   help="sample on the prompt as the user turn of the chat template (default on)")
    p.add_argument("--layers", choices=("all", "none"), default="all", help="the reward lens at every block too")
    p.add_argument("--truncate", choices=("left", "skip"), default="left",
                   help="inputs longer than a model: cut the prompt's start (default) or skip; counted either way")
    p.add_argument("--batch-size", type=int, default=16, help="pairs or samples per chunk written to results.jsonl")
    p.add_argument("--annotations", help="a filled annotations.csv: report agreement of the reward model with it")
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the samples")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    args.data = dict(args.data or [])
    bad = [m for m in args.sample_from if m not in MEMBERS]
    if bad:
        p.error(f"--sample-from: unknown member {bad[0]!r}; valid: {', '.join(MEMBERS)}")
    if args.limit is not None and args.limit < 1 or args.batch_size < 1 or args.samples < 0:
        p.error("--limit and --batch-size must be >= 1, --samples >= 0")
    if not args.temperature >= 0 or not 0 < args.top_p <= 1 or args.max_new_tokens < 1:
        p.error("--temperature must be >= 0, --top-p in (0, 1], --max-new-tokens >= 1")
    return args


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import run_dir, seed_everything
    from studies._identity import finish_run, open_run, row_options, run_fingerprint, write_study_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import parse_shard

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    if parse_shard(args.shard).count != 1:
        raise StudyError("--shard is not supported by reward_collapse (its stages depend on each other); run it whole")
    from probes.reward import check_spec

    check_spec(args.reward)  # an unknown or causal-LM reward model fails before any sampling
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    out = run_dir(STUDY, pair, args.out)
    judgements = read_judgements(args.annotations) if args.annotations else None
    items = load_items(args.tasks, args.data, args.formats, args.limit)
    units = sample_units(items)
    options = {**row_options(args, ROW_OPTIONS), "reward_identity": reward_identity(args.reward)}
    fingerprint = run_fingerprint(STUDY, pair, options, args.seed, [items, units])
    open_run(out, STUDY, fingerprint, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    timings: dict[str, float] = {}
    if not args.summary_only:
        log = ResultsLog(out / "results.jsonl", KEY_FIELDS)
        timings.update(run_work(pair, items, units, log, args))
        finish_run(out, parse_shard(None), timings=timings, n_written=log.n_written)
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results.jsonl)")
    summary = summarize(rows)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    comparison = compare(rows)
    comparison.to_csv(out / "comparison.csv", index=False, float_format="%.6g")
    sheet = annotation_rows(rows, items)
    if sheet and not write_annotations(out / "annotations.csv", sheet):
        print(f"note: {out / 'annotations.csv'} holds judgements; left as it is", file=sys.stderr)
    agree = None
    if judgements is not None:
        agree = agreement(rows, judgements, summary)
        agree.to_csv(out / "agreement.csv", index=False, float_format="%.6g")
        if agree.attrs["unknown"]:
            print(f"note: {agree.attrs['unknown']} judged row(s) of --annotations match no scored sample of this run",
                  file=sys.stderr)
    figures = []
    if not args.no_figures:
        t0 = time.perf_counter()
        figures = make_figures(rows, summary, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    write_study_meta(out, args, pair, study=STUDY, timings=timings, reward=args.reward, n_rows=len(rows),
                     key_fields=list(KEY_FIELDS), fingerprint=fingerprint,
                     outputs=[*TABLES, *(Path(f).name for f in figures)])
    print(report(summary, comparison, agree))
    print(f"\nwrote {out}/ (results.jsonl, summary.csv, comparison.csv, annotations.csv"
          f"{', agreement.csv' if agree is not None else ''}, meta.json{'' if args.no_figures else ', figures'}) "
          f"in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing data or weights)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    sys.exit(main())
