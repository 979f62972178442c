"""Linguistic benchmarks, base vs RL-tuned (proposal 4.1): accuracy at the output and by layer.

    python -m studies.benchmarks                                  # toy pair, shipped data
    python -m studies.benchmarks --pair llama2-7b --tasks boolq,copa --shots 0,5 \\
        --data boolq=boolq_val.jsonl --data copa=copa_val.jsonl --dtype bfloat16

For every model of the pair (one in memory at a time), task, number of shots (``--shots``,
demonstrations drawn from the same loaded set by ``tasks.items.build_fewshot``; or, with
``--demos-from TASK[:CATEGORY]=COUNT``, repeatable, drawn from other tasks or categories, the
composition fixed and the order shuffled per item, seeded; rows record ``demos``, their ids
in prompt order, and ``demos_from``), chat template (``--chat-template``: the context as the user turn of the chat model's template, used for both
models) and item, every option is scored by its log-likelihood (``probes.multiple_choice``,
one forward per context with all its options packed after it), at the output and, with
``--layers all``, at every block through the lens ``--lens`` (``logit``, default; ``tuned``, the
pair's shipped tuned lens; or a folder ``PATH/{base,chat}`` of saved tuned lenses, see
:mod:`studies._lens`; rows and ``summary.csv`` record it). The first ``--generate N`` items of
each condition are also answered by free greedy generation, mapped back to an option by
string matching (``generations.csv``, for reading; ``mapped`` says whether an option was
found, and the console prints the share of unmapped answers per model).

Where the probability goes (seed 4.1: options lose probability under RL while unexpected
tokens gain it): every scored row records, at the answer position and the final readout, the
probability of the options' distinct first tokens (``option_mass``) and the most probable
tokens that start no option (``top_other``); ``answer_mass.csv`` averages them per model x
condition, ``answer_mass_comparison.csv`` pairs chat with base by item (paired bootstrap), and
``option_mass_*.png`` draws them.

Partial scoring: ``wsc`` and ``winogrande`` items substitute each option into the sentence and
score only the shared rest of it (:mod:`probes.multiple_choice`), as lm-evaluation-harness does.
Free-generation tasks (``coqa``, :data:`GENERATIVE`) have no options: every item is answered by
greedy generation (``--max-new-tokens``; the chat template, when on, renders its dialogue history
as chat turns) and scored by the task's exact match and F1 (CoQA's official script); their rows
have ``generation``, ``answer``, ``golds``, ``em`` and ``f1`` and no by-layer readouts, their
``summary.csv`` rows ``em`` / ``f1`` with bootstrap intervals, and ``comparison.csv`` the paired
bootstrap of chat - base on each.

Long items (``--truncate``, as lm-evaluation-harness): an item fits when its context and
longest option, minus the option's last token (predicted, never fed), fit the model's
positions. ``--truncate left`` (default, the harness's behaviour) cuts the context's first
tokens until it fits (row field ``truncated``: tokens cut); ``--truncate skip`` skips the item
(row field ``skipped``: the reason). ``summary.csv`` counts, per model and condition,
``n_items``, ``n_scored``, ``n_skipped`` (with ``skip_reason``) and ``n_truncated``, and the
console names every task that lost or cut items; a condition with nothing scored keeps its
row (empty metrics). The shipped fixtures fit the toy pair at the default options.

Data: ``--data task=PATH`` per task; without it the small fixtures shipped in
``tasks/fixtures`` are used (a handful of hand-written items each: a smoke test, not the
benchmark). ``toy_capitals`` is the toy world's capital questions (the toy pair's own task).

Outputs (``runs/benchmarks/<pair>/`` or ``--out``): ``results.jsonl`` (one row per model x
task x shots x chat template x item, resumable), ``summary.csv`` (accuracy, acc_norm with
bootstrap intervals per model x condition x readout), ``comparison.csv`` (chat vs base:
McNemar and paired bootstrap), ``generations.csv``, ``answer_mass.csv``,
``answer_mass_comparison.csv``, ``meta.json``, figures (PNG + PDF).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from studies._answer_mass import mass_comparison, mass_figures, mass_report, mass_table
from studies._chat import on_off as _on_off, template_tokenizer  # noqa: F401 (calibration reads bm.template_tokenizer)
from studies._common import (
    PLACEMENT_OPTIONS,
    add_model_options,
    add_pair_options,
    add_run_options,
    comma_list,
    load_kwargs,
)
from studies._lens import LensChoice, add_lens_option

STUDY = "benchmarks"
KEY_FIELDS = ("model", "task", "shots", "chat_template", "item")
DEFAULT_TASKS = ("toy_capitals", "boolq", "cb", "copa", "rte", "wic", "cola", "stsb", "mmlu", "imppres",
                 "implicature", "triviaqa_mc")
# Options that decide a row (in the run's fingerprint, studies._identity.run_fingerprint): the
# items and prompts, the readouts and generations kept, the fixed chunks rows are computed in,
# and how the models are loaded (dtype, device and quantization change the numbers). The
# models (--pair/--base/--chat) enter by identity and --seed on its own. The others choose
# where and how fast a run goes, or shape only the summary.
ROW_OPTIONS = ("tasks", "data", "limit", "layers", "lens", "batch_size", "shots", "demos_from", "chat_template", "truncate",
               "generate", "max_new_tokens", "dtype", "device", "device_map", "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv", "comparison.csv", "generations.csv", "answer_mass.csv", "answer_mass_comparison.csv")  # written besides results, meta and figures
NOT_MC = {"syntaxgym": "SyntaxGym items are region-surprisal minimal pairs, not multiple choice: run "
                        "python -m studies.syntaxgym --suites PATH... instead"}


GENERATIVE = ("coqa",)  # answered by free generation and scored by exact match / F1, not by option log-probs


def is_generative(task: str) -> bool:
    return task in GENERATIVE


def _generation_task(task: str):
    """The module of a free-generation task: its ``STOP`` strings, ``answer_of`` (the answer in a
    generation) and ``turn_scores`` (exact match and F1 against the gold answers)."""
    import importlib

    return importlib.import_module(f"tasks.benchmarks.{task}")


@dataclass(frozen=True)
class Work:
    """One item under one condition (its context already has demonstrations / template)."""

    task: str
    shots: int
    chat_template: bool
    item: object  # MCItem
    index: int  # position within its condition (generation runs on the first N)


# -- tasks and items -------------------------------------------------------------------------------
def parse_data(specs: Sequence[str] | None) -> dict[str, str]:
    from studies._common import StudyError

    out = {}
    for spec in specs or ():
        task, sep, path = spec.partition("=")
        if not sep or not task or not path:
            raise StudyError(f"--data takes task=PATH (e.g. boolq=boolq_val.jsonl), got {spec!r}")
        out[task.strip()] = path.strip()
    return out


def load_items(tasks: Sequence[str], data: dict[str, str], limit: int | None, seed: int = 0,
               generation: bool = True) -> dict[str, list]:
    """task -> items; unknown names, non-MC tasks (and, with ``generation=False``, free-generation
    tasks) and missing files become StudyError."""
    from studies._common import StudyError
    from tasks.benchmarks import TASKS, toy_capitals
    from tasks.errors import TaskError

    loaders = {**TASKS, toy_capitals.NAME: toy_capitals.load}  # the toy task reads no external data
    unknown = [t for t in tasks if t not in loaders] + [t for t in data if t not in tasks]
    if unknown:
        raise StudyError(f"unknown task(s) {unknown} (or --data for a task not in --tasks); "
                         f"valid tasks: {', '.join(sorted(t for t in loaders if t not in NOT_MC))}")
    fixtures = [t for t in tasks if t not in data and t != "toy_capitals"]
    if fixtures:
        print(f"note: no --data for {', '.join(fixtures)}: using the shipped fixtures (tasks/fixtures, ~12 "
              "hand-written items per task): a smoke test, not the benchmark. Pass --data task=PATH.", file=sys.stderr)
    out = {}
    for task in tasks:
        if task in NOT_MC:
            raise StudyError(f"task {task!r}: {NOT_MC[task]} (this study scores multiple-choice tasks)")
        if not generation and is_generative(task):
            raise StudyError(f"task {task!r} is answered by free generation (exact match / F1), with no option "
                             "probabilities; use studies.benchmarks for it")
        try:
            out[task] = loaders[task](data=data.get(task, "fixture"), limit=limit)
        except TaskError as err:  # names the task, file, line and field already
            raise StudyError(str(err)) from None
        except (KeyError, ValueError) as err:
            raise StudyError(f"task {task!r}: {err}") from None
        if not out[task]:
            raise StudyError(f"task {task!r}: no items loaded")
    return out


def parse_demos_from(specs: Sequence[str] | None):
    """``--demos-from TASK[:CATEGORY]=COUNT`` (repeatable) -> :class:`tasks.items.DemoSource` list."""
    from studies._common import StudyError
    from tasks.items import DemoSource

    out = []
    for spec in specs or ():
        source, sep, count = spec.rpartition("=")
        task, _, category = source.partition(":")
        if not sep or not task.strip() or not count.strip().isdigit() or int(count) < 1:
            raise StudyError(f"--demos-from takes TASK[:CATEGORY]=COUNT with COUNT >= 1 (e.g. mmlu:astronomy=2 "
                             f"or boolq=1), got {spec!r}")
        out.append(DemoSource(task.strip(), int(count), category.strip() or None))
    return out


def make_work(items: dict[str, list], shots: Sequence[int], templates: Sequence[bool], template_tok,
              seed: int, demos_from: Sequence = (), pools: dict[str, list] | None = None) -> list[Work]:
    """Every (task, shots, chat template, item): demonstrations drawn from the task's own items,
    or with ``demos_from`` (:class:`tasks.items.DemoSource`) from those sources' items in
    ``pools`` (then ``shots`` is their total count)."""
    import dataclasses

    from probes.chat import chat_prompt, chat_turns
    from studies._common import StudyError
    from tasks.errors import TaskError
    from tasks.items import build_fewshot, build_mixed_fewshot

    work = []
    for task, its in items.items():
        for k in shots:
            if not demos_from and k >= len(its):
                raise StudyError(f"task {task!r} has {len(its)} items: too few for {k}-shot prompts (drawn from "
                                 "the other items); lower --shots or raise --limit")
            for tmpl in templates:
                for i, item in enumerate(its):
                    try:
                        shot = build_mixed_fewshot(item, demos_from, pools or items, seed) if demos_from \
                            else build_fewshot(its, item, k, seed)
                    except TaskError as err:
                        raise StudyError(f"task {task!r}: {err}") from None
                    if tmpl and getattr(item, "messages", None):  # a dialogue: its history as chat turns
                        demos = shot.context[:len(shot.context) - len(item.context)]
                        first = {**item.messages[0], "content": demos + item.messages[0]["content"]}
                        shot = dataclasses.replace(shot, context=chat_turns(template_tok, [first, *item.messages[1:]]))
                    elif tmpl:
                        shot = dataclasses.replace(shot, context=chat_prompt(template_tok, shot.context))
                    work.append(Work(task, k, tmpl, shot, i))
    return work


# -- scoring -----------------------------------------------------------------------------------------
TRUNCATE = ("left", "skip")


def _generation_prompt(lm, item, new_tokens: int, truncate: str):
    """The prompt tokens of a free generation: the context, left-truncated (``truncate="left"``,
    as lm-evaluation-harness's ``generate_until``) so that it and ``new_tokens`` generated
    tokens (the last one not fed) fit the model; a ``Skipped`` otherwise."""
    from probes.logprobs import fit_context

    return fit_context(lm.tokenizer(item.context)["input_ids"], new_tokens, lm.max_positions, truncate)


def _option_forms(item) -> list[list[str]]:
    choices = item.meta.get("choices")
    if isinstance(choices, list) and len(choices) == len(item.options):
        return [[o, str(c)] for o, c in zip(item.options, choices)]
    return [[o] for o in item.options]


def score_chunk(lm, member: str, chunk: list[Work], layers, generate_n: int = 0, max_new_tokens: int = 16,
                batch_size: int = 4, truncate: str = "left", lens=None, lens_fields: dict | None = None) -> list[dict]:
    """Result rows of one chunk: option log-likelihoods at every readout (+ generations).
    Items longer than the model: ``truncate`` (``left`` or ``skip``, module doc). ``lens``
    decodes the block readouts (default the logit lens); ``lens_fields`` (default
    ``{"lens": "logit"}``) go into every scored row."""
    from probes.generation import generate, map_to_option
    from probes.logprobs import Skipped
    from probes.multiple_choice import score_items
    from studies._common import StudyError

    if truncate not in TRUNCATE:
        raise StudyError(f"unknown truncate {truncate!r}; valid: {', '.join(TRUNCATE)}")
    rows = []
    mc = [i for i, w in enumerate(chunk) if not is_generative(w.task)]
    scores = dict(zip(mc, score_items(lm, [chunk[i].item for i in mc], layers=layers, batch_size=batch_size,
                                      truncate=truncate, lens=lens)))
    answered = _answer_generative(lm, chunk, max_new_tokens, truncate)
    prompts = {i: _generation_prompt(lm, chunk[i].item, max_new_tokens, truncate) for i, s in scores.items()
               if not isinstance(s, Skipped) and chunk[i].index < generate_n}
    to_generate = [i for i, fit in prompts.items() if not isinstance(fit, Skipped)]
    texts = dict(zip(to_generate, generate(lm, [prompts[i][0] for i in to_generate], max_new_tokens))) \
        if to_generate else {}
    for i, w in enumerate(chunk):
        if i in answered:
            rows.append({"model": member, "task": w.task, "shots": w.shots, "chat_template": w.chat_template,
                         "item": w.item.id, "category": w.item.category, **answered[i]})
            continue
        row = {"model": member, "task": w.task, "shots": w.shots, "chat_template": w.chat_template,
               "item": w.item.id, "label": w.item.label, "n_options": len(w.item.options),
               "category": w.item.category, "demos": w.item.meta.get("fewshot_ids", [])}
        if "demos_from" in w.item.meta:
            row["demos_from"] = w.item.meta["demos_from"]
        s = scores[i]
        if isinstance(s, Skipped):
            rows.append({**row, "skipped": f"{s.reason} (--truncate {truncate})", "truncated": 0})
            continue
        row.update(skipped=None, truncated=s.n_truncated, layers=[("final" if l is None else l) for l in s.layers],
                   **(lens_fields or {"lens": "logit"}),
                   logprobs=s.logprobs.round(6), n_tokens=s.n_tokens, n_chars=s.n_chars,
                   pred=s.pred(), pred_norm=s.pred_norm(), acc=s.acc(), acc_norm=s.acc_norm(),
                   prob_label=float(s.probs()[s.label]))
        if w.item.task == "triviaqa_ptrue":
            row["p_true"] = s.p_true()
        if s.answer is not None:  # where the probability goes (final readout, answer position)
            row.update(option_mass=round(s.answer.option_mass, 6),
                       top_other=[[lm.tokenizer.decode([t]), round(p, 6)] for t, p in s.answer.top_other])
        if i in texts:
            option = map_to_option(texts[i], _option_forms(w.item))
            row.update(generation=texts[i], generated_option=option, generation_truncated=prompts[i][1],
                       generated_correct=None if option is None else option == w.item.label)
        elif i in prompts:
            row["generation_skipped"] = f"context + {max_new_tokens} new tokens: {prompts[i].reason} " \
                                        f"(--truncate {truncate})"
        rows.append(row)
    return rows


def _answer_generative(lm, chunk: list[Work], max_new_tokens: int, truncate: str) -> dict[int, dict]:
    """Row fields of the chunk's free-generation items, by position: the greedy generation (cut at
    the task's stop strings), the answer read from it, the gold answers, ``em`` and ``f1`` (the
    task's ``turn_scores``); or ``skipped`` for an item whose prompt does not fit."""
    from probes.generation import generate
    from probes.logprobs import Skipped

    out, todo = {}, {}
    for i, w in enumerate(chunk):
        if not is_generative(w.task):
            continue
        fit = _generation_prompt(lm, w.item, max_new_tokens, truncate)
        if isinstance(fit, Skipped):
            out[i] = {"skipped": f"context + {max_new_tokens} new tokens: {fit.reason} (--truncate {truncate})",
                      "truncated": 0}
        else:
            todo[i] = fit
    by_task: dict[str, list[int]] = {}
    for i in todo:
        by_task.setdefault(chunk[i].task, []).append(i)
    for task, positions in by_task.items():
        module = _generation_task(task)
        texts = generate(lm, [todo[i][0] for i in positions], max_new_tokens, stop=module.STOP)
        for i, text in zip(positions, texts):
            answer = module.answer_of(text)
            em, f1 = module.turn_scores(chunk[i].item.answers, answer)
            out[i] = {"skipped": None, "truncated": todo[i][1], "generation": text, "answer": answer,
                      "golds": list(chunk[i].item.answers), "em": em, "f1": f1}
    return out


# -- tables -------------------------------------------------------------------------------------------
CONDITION = ["task", "shots", "chat_template"]


def layer_table(rows: list[dict]):
    """Tidy: one row per model x item x readout with ``acc``, ``acc_norm``, ``prob_label``."""
    import numpy as np
    import pandas as pd

    out = []
    for r in rows:
        if r.get("skipped") or "logprobs" not in r:  # skipped, or a free-generation row
            continue
        lp = np.asarray(r["logprobs"], dtype=float)
        chars = np.asarray(r["n_chars"], dtype=float)
        for layer, ll in zip(r["layers"], lp):
            p = np.exp(ll - ll.max())
            out.append({"model": r["model"], **{c: r[c] for c in CONDITION}, "item": r["item"],
                        "layer": str(layer), "acc": int(np.argmax(ll)) == r["label"],
                        "acc_norm": int(np.argmax(ll / chars)) == r["label"],
                        "prob_label": float(p[r["label"]] / p.sum()), "chance": 1.0 / r["n_options"]})
    return pd.DataFrame(out)


METRICS = ("chance", "prob_label", "acc", "acc_low", "acc_high", "acc_norm", "acc_norm_low", "acc_norm_high")
GEN_METRICS = ("em", "em_low", "em_high", "f1", "f1_low", "f1_high")  # free-generation tasks (final readout only)


def generation_table(rows: list[dict]):
    """Tidy: one row per model x scored free-generation item with ``em`` and ``f1``."""
    import pandas as pd

    cols = ["model", *CONDITION, "item", "em", "f1"]
    return pd.DataFrame([{c: r[c] for c in cols} for r in rows if not r.get("skipped") and "em" in r], columns=cols)


def summarize(rows: list[dict], n_boot: int = 1000):
    """Per model x condition x readout: acc and acc_norm with 95% bootstrap intervals, the lens
    of the block readouts (``lens``, ``lens_sha256``), and the item accounting
    (:data:`studies._accounting.COLUMNS`) of the model x condition. A condition
    with nothing scored keeps one ``final`` row with empty metrics. Raises StudyError when no
    item of any condition was scored."""
    import numpy as np
    import pandas as pd

    from probes.calibration import bootstrap_ci
    from studies import _accounting
    from studies._common import StudyError
    from studies._lens import add_lens_columns

    counts = _accounting.by_group(rows, ["model", *CONDITION])
    if not any(c["n_scored"] for c in counts.values()):
        hint = "; --truncate left scores long items" if any("--truncate skip" in c["skip_reason"]
                                                             for c in counts.values()) else ""
        raise StudyError("no item was scored: " + "; ".join(_accounting.notes(counts, _label)) + hint)
    table = layer_table(rows)
    scored = {key: g for key, g in table.groupby(["model", *CONDITION], sort=False)} if len(table) else {}
    generated = {key: g for key, g in generation_table(rows).groupby(["model", *CONDITION], sort=False)}
    out = []
    for key, c in counts.items():
        if key in generated:
            rec = {**dict(zip(["model", *CONDITION], key)), "layer": "final", **c}
            for metric in ("em", "f1"):
                ci = bootstrap_ci(np.mean, generated[key][metric].to_numpy(float), n_boot=n_boot)
                rec.update({metric: ci.estimate, f"{metric}_low": ci.low, f"{metric}_high": ci.high})
            out.append(rec)
            continue
        if key not in scored:
            out.append({**dict(zip(["model", *CONDITION], key)), "layer": "final", **c})
            continue
        for layer, g in scored[key].groupby("layer", sort=False):
            rec = {**dict(zip(["model", *CONDITION], key)), "layer": layer, **c,
                   "chance": float(g["chance"].mean()), "prob_label": float(g["prob_label"].mean())}
            for metric in ("acc", "acc_norm"):
                ci = bootstrap_ci(np.mean, g[metric].to_numpy(float), n_boot=n_boot)
                rec.update({metric: ci.estimate, f"{metric}_low": ci.low, f"{metric}_high": ci.high})
            out.append(rec)
    summary = pd.DataFrame(out, columns=["model", *CONDITION, "layer", *_accounting.COLUMNS, *METRICS,
                                         *(GEN_METRICS if generated else ())])
    summary = add_lens_columns(summary, rows)
    summary.attrs["notes"] = _accounting.notes(counts, _label) + _generation_notes(rows)
    return summary


def _generation_notes(rows: list[dict]) -> list[str]:
    """Conditions whose free generations (first ``--generate`` items) did not all run."""
    lost: dict[tuple, list[str]] = {}
    for r in rows:
        if r.get("generation_skipped"):
            lost.setdefault((r["task"], r["shots"], r["chat_template"], r["model"]), []).append(r["generation_skipped"])
    merged: dict[tuple, list[str]] = {}
    for (*condition, model), reasons in lost.items():
        merged.setdefault((tuple(condition), len(reasons), reasons[0]), []).append(model)
    return [f"{_label(condition)} ({', '.join(models)}): {n} free generation(s) not run: {reason}"
            for (condition, n, reason), models in merged.items()]


def _label(condition: tuple) -> str:
    """``boolq 0-shot raw`` for the condition ``(task, shots, chat_template)``."""
    task, shots, tmpl = condition
    return f"{task} {shots}-shot {'chat' if tmpl else 'raw'}"


def compare(rows: list[dict]):
    """Chat vs base on the items both answered (final readout): McNemar and paired bootstrap."""
    import pandas as pd

    from probes.stats import mcnemar, paired_bootstrap

    table = layer_table(rows)
    table = table[table["layer"] == "final"] if len(table) else table
    out = []
    for key, g in generation_table(rows).groupby(CONDITION, sort=False):
        wide = g.pivot_table(index="item", columns="model", values=["em", "f1"], aggfunc="first")
        if "base" not in wide["em"] or "chat" not in wide["em"]:
            continue
        wide = wide.dropna()
        for metric in ("em", "f1"):
            a, b = wide[metric]["base"].to_numpy(float), wide[metric]["chat"].to_numpy(float)
            pb = paired_bootstrap(a, b)
            out.append({**dict(zip(CONDITION, key)), "metric": metric, "n": len(a), "base": a.mean(),
                        "chat": b.mean(), "diff": pb.diff, "diff_low": pb.ci_low, "diff_high": pb.ci_high,
                        "bootstrap_p": pb.p_value})
    for key, g in (table.groupby(CONDITION, sort=False) if len(table) else ()):
        wide = g.pivot_table(index="item", columns="model", values=["acc", "acc_norm"], aggfunc="first")
        if "base" not in wide["acc"] or "chat" not in wide["acc"]:
            continue
        wide = wide.dropna()
        for metric in ("acc", "acc_norm"):
            a, b = wide[metric]["base"].astype(bool).to_numpy(), wide[metric]["chat"].astype(bool).to_numpy()
            mc, pb = mcnemar(a, b), paired_bootstrap(a, b)
            out.append({**dict(zip(CONDITION, key)), "metric": metric, "n": len(a), "base": a.mean(),
                        "chat": b.mean(), "diff": pb.diff, "diff_low": pb.ci_low, "diff_high": pb.ci_high,
                        "bootstrap_p": pb.p_value, "mcnemar_b": mc.b, "mcnemar_c": mc.c,
                        "mcnemar_p": mc.p_value, "mcnemar_method": mc.method})
    return pd.DataFrame(out)


def generations(rows: list[dict]):
    """The free generations, with ``mapped``: whether string matching found an option in them."""
    import pandas as pd

    cols = ["model", *CONDITION, "item", "label", "mapped", "generated_option", "generated_correct", "generation"]
    return pd.DataFrame([{**{c: r.get(c) for c in cols}, "mapped": r.get("generated_option") is not None}
                         for r in rows if "generation" in r], columns=cols)


def unmapped_report(table) -> list[str]:
    """The share of free generations that mapped to no option, per model."""
    if table.empty:
        return []
    lines = ["free generations that mapped to no option (read them in generations.csv):"]
    for model, g in table.groupby("model", sort=False):
        lines.append(f"  {model}: {int((~g['mapped']).sum())}/{len(g)} ({(~g['mapped']).mean():.0%})")
    return lines


def _tag(shots, tmpl) -> str:
    return f"{shots}shot_{'chat' if tmpl else 'raw'}"


def make_figures(summary, out: Path) -> list[Path]:
    from figures.by_layer import plot_by_layer
    from figures.task_bars import plot_task_bars
    from studies._lens import lens_label

    paths = []
    summary = summary[summary["n_scored"] > 0]  # conditions with nothing scored have no bars
    for (shots, tmpl), g in summary.groupby(["shots", "chat_template"]):
        final = g[(g["layer"] == "final") & g["acc"].notna()].rename(
            columns={"acc": "accuracy", "acc_low": "ci_low", "acc_high": "ci_high"})  # free-generation tasks have no acc
        if not final.empty:
            paths += plot_task_bars(final, out / f"accuracy_{_tag(shots, tmpl)}",
                                    title=f"{shots}-shot, chat template {'on' if tmpl else 'off'}")
        by_layer = g[g["layer"] != "final"].assign(layer=lambda d: d["layer"].astype(int)).rename(
            columns={"acc_low": "ci_low", "acc_high": "ci_high"})
        if not by_layer.empty:
            lens = lens_label(by_layer.get("lens", ["logit"]))  # (a summary.csv from before lenses has no column)
            paths += plot_by_layer(by_layer, out / f"accuracy_by_layer_{_tag(shots, tmpl)}", value_col="acc",
                                   facet_col="task", ylabel=f"accuracy ({lens})",
                                   title=f"accuracy by layer through the {lens}, {shots}-shot, "
                                         f"chat template {'on' if tmpl else 'off'}")
    return paths


def report(summary, comparison, extra: Sequence[str] = ()) -> str:
    final = summary[summary["layer"] == "final"]
    lines = ["accuracy (final readout; acc_norm in brackets):"]
    for key, g in final.groupby(CONDITION, sort=False):
        if is_generative(key[0]):
            cells = ", ".join(f"{r.model} EM {r.em:.2f} F1 {r.f1:.2f}" if r.n_scored else f"{r.model} -"
                              for r in g.itertuples())
        else:
            cells = ", ".join(f"{r.model} {r.acc:.2f} [{r.acc_norm:.2f}]" if r.n_scored else f"{r.model} -"
                              for r in g.itertuples())
        lines.append(f"  {key[0]:14s} {key[1]}-shot {'chat' if key[2] else 'raw '} n={int(g['n_scored'].max()):4d}"
                     f"/{int(g['n_items'].max())}: {cells}")
    if len(comparison):
        acc = comparison[comparison["metric"] == "acc"]
        lines.append("chat - base accuracy (paired bootstrap 95% CI; McNemar p):")
        for r in acc.itertuples():
            lines.append(f"  {r.task:14s} {r.shots}-shot {'chat' if r.chat_template else 'raw '}: {r.diff:+.2f} [{r.diff_low:+.2f}, {r.diff_high:+.2f}]; "
                         f"p = {r.mcnemar_p:.3g}")
        for r in comparison[comparison["metric"] == "f1"].itertuples():
            lines.append(f"  {r.task:14s} {r.shots}-shot {'chat' if r.chat_template else 'raw '}: F1 {r.diff:+.2f} "
                         f"[{r.diff_low:+.2f}, {r.diff_high:+.2f}]; bootstrap p = {r.bootstrap_p:.3g}")
    lines += list(extra)
    lines += [f"note: {line}" for line in summary.attrs.get("notes", [])]
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("shots must be >= 0")
    return values


def add_common_args(p: argparse.ArgumentParser, default_tasks: Sequence[str]) -> None:
    """Arguments shared with ``studies.calibration``."""
    add_pair_options(p)
    p.add_argument("--tasks", type=comma_list, default=tuple(default_tasks), help=f"default {','.join(default_tasks)}")
    p.add_argument("--data", action="append", metavar="TASK=PATH", help="a task's data file (repeatable); default: fixtures")
    p.add_argument("--limit", type=int, help="at most N items per task")
    p.add_argument("--layers", choices=("all", "none"), default="all", help="readouts at every block too (through --lens)")
    add_lens_option(p)
    p.add_argument("--truncate", choices=TRUNCATE, default="left",
                   help="items longer than the model's positions: left-truncate the context (default, as "
                        "lm-evaluation-harness) or skip them; counted in summary.csv either way")
    p.add_argument("--batch-size", type=int, default=8, help="items per chunk written to results.jsonl")
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds few-shot draws and bootstraps")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def check_args(p: argparse.ArgumentParser, args) -> None:
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if args.layers == "none" and args.lens != "logit":
        p.error("--lens decodes the block readouts, and --layers none has none; drop --lens or use --layers all")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, DEFAULT_TASKS)
    p.add_argument("--shots", type=_ints, default=None, help="e.g. 0,1,5 (default 0)")
    p.add_argument("--demos-from", action="append", metavar="TASK[:CATEGORY]=COUNT",
                   help="draw COUNT demonstrations from TASK (its CATEGORY only, if given) instead of the item's own "
                        "task; repeatable, e.g. --demos-from mmlu:astronomy=2 --demos-from boolq=1 (then the shots "
                        "are the total, and --shots must be that total or left out)")
    p.add_argument("--chat-template", type=_on_off, default=(False,), help="off, on, or off,on (default off)")
    p.add_argument("--generate", type=int, default=5, help="free generation for the first N items per condition (0: off)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    args = p.parse_args(argv)
    check_args(p, args)
    if args.demos_from:
        total = sum(s.count for s in parse_demos_from(args.demos_from)) if all(
            "=" in s and s.rpartition("=")[2].isdigit() for s in args.demos_from) else None
        if total is not None and args.shots not in (None, (total,)):
            p.error(f"--demos-from draws {total} demonstrations per item; --shots must be {total} or left out")
        args.shots = (total,) if total is not None else (0,)
    args.shots = args.shots or (0,)
    return args


def score_pair(pair, work: list[Work], log, shard, args, desc: str, generate_n: int = 0,
               lens: LensChoice = LensChoice()) -> dict[str, float]:
    """Score this shard's pending chunks of ``work`` with each member that has some (one model
    in memory at a time), block readouts through each member's ``lens``."""
    import torch

    from studies._common import progress
    from studies._shards import chunked, load_members, pending_by_member

    layers = "all" if args.layers == "all" else None
    timings = {}

    def key_of(member):
        return lambda w: (member, w.task, w.shots, w.chat_template, w.item.id)

    todo = pending_by_member(chunked(work, args.batch_size), key_of, log, shard)
    for member, lm in load_members(pair, [m for m, chunks_left in todo.items() if chunks_left]):
        t0 = time.perf_counter()
        decoder = lens.load(member, lm)
        for _, chunk in progress(todo[member], desc=f"{desc} {member}", total=len(todo[member])):
            with torch.no_grad():
                log.write(score_chunk(lm, member, chunk, layers, generate_n, getattr(args, "max_new_tokens", 16),
                                      truncate=args.truncate, lens=decoder, lens_fields=lens.row_fields(member)))
        timings[f"{member}_s"] = round(time.perf_counter() - t0, 2)
    return timings


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import StudyError, run_dir, seed_everything
    from studies._identity import finish_run, open_run, report_shard, row_options, run_fingerprint, write_study_meta
    from studies._lens import resolve_lens_option
    from studies._results import ResultsLog, read_results
    from studies._shards import parse_shard, results_name

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    lens = resolve_lens_option(args.lens, pair)  # before loading any data: a bad --lens fails fast
    out = run_dir(STUDY, pair, args.out)
    timings: dict[str, float] = {}
    items = load_items(args.tasks, parse_data(args.data), args.limit, args.seed)
    demos_from = parse_demos_from(args.demos_from)
    extra_sources = [s.task for s in demos_from if s.task not in items]
    pools = {**items, **load_items(list(dict.fromkeys(extra_sources)), parse_data(args.data), args.limit, args.seed)} \
        if extra_sources else items
    template_tok = template_tokenizer(pair) if any(args.chat_template) else None
    work = make_work(items, args.shots, args.chat_template, template_tok, args.seed, demos_from, pools)
    fingerprint = run_fingerprint(STUDY, pair, {**row_options(args, ROW_OPTIONS), "lens": lens.fingerprint}, args.seed,
                                  work)
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    extra = dict(n_items={t: len(v) for t, v in items.items()}, fingerprint=fingerprint,
                 lens=lens.fingerprint, lens_folders={m: str(f) for m, f in lens.folders.items()})
    if not args.summary_only:
        log = ResultsLog(out / results_name(shard), KEY_FIELDS)
        timings.update(score_pair(pair, work, log, shard, args, STUDY, args.generate, lens))
        finish_run(out, shard, timings=timings, n_written=log.n_written)
        if not shard.is_whole:
            report_shard(out, shard, log, log.n_written)
            return 0
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl)")
    summary = summarize(rows)
    if summary.empty:
        raise StudyError("every item was skipped (prompts longer than the model's context); lower --shots")
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    comparison = compare(rows)
    comparison.to_csv(out / "comparison.csv", index=False, float_format="%.6g")
    gens = generations(rows)
    gens.to_csv(out / "generations.csv", index=False)
    mass, mass_diff = mass_table(rows), mass_comparison(rows)
    mass.to_csv(out / "answer_mass.csv", index=False, float_format="%.6g")
    mass_diff.to_csv(out / "answer_mass_comparison.csv", index=False, float_format="%.6g")
    figures = []
    if not args.no_figures:
        t0 = time.perf_counter()
        figures = make_figures(summary, out) + mass_figures(mass, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    write_study_meta(out, args, pair, study=STUDY, timings=timings, n_rows=len(rows), key_fields=list(KEY_FIELDS),
                     outputs=[*TABLES, *(Path(f).name for f in figures)], **extra)
    print(report(summary, comparison, mass_report(mass, mass_diff) + unmapped_report(gens)))
    print(f"\nwrote {out}/ (results*.jsonl, summary.csv, comparison.csv, generations.csv, answer_mass*.csv, meta.json"
          f"{'' if args.no_figures else ', figures'}) in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing data or weights, no traceback)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    sys.exit(main())
