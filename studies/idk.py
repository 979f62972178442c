"""Saying "I don't know", base vs RL-tuned (proposal 4.4): on questions where abstaining is the
right answer (:mod:`tasks.idk`) and on answerable ones, does a model prefer an abstention to a
direct answer, and does it abstain where it would be wrong?

    python -m studies.idk                                   # toy pair, toy variant
    python -m studies.idk --pair llama2-7b --dataset text --triviaqa tqa_validation.jsonl

Per model x chat template (``--chat-template off,on``: the raw prompt, or the question as the
user turn of the chat member's template, for both models) x item, every response (each
candidate answer written as a response, ``" Paris."``, then the abstentions, ``" I don't
know."``; the toy pair's only abstention is its refusal ``" Sorry , I cannot help with that
."``) is scored by its summed log-prob after the prompt (:func:`probes.multiple_choice.score_items`,
final readout only, so no ``--lens``), giving (:func:`probes.abstention.preference`) the
abstain-vs-answer ``margin`` (> 0: the model prefers abstaining; also per token), the chosen
candidate and the calibration study's confidence (the chosen candidate's probability among
the candidates). A greedy free answer (``--generate``, ``--max-new-tokens``, cut at the first
newline) is mapped to answer / abstain / empty (:func:`probes.abstention.classify_generation`).

Answering an item is correct when it is answerable and the chosen (generated) candidate is its
gold answer. ``summary.csv``: per model x template x category (its kinds too, e.g. the toy
variant's ``fictional:recombined`` / ``fictional:spelled`` names; and the pools ``unanswerable``, when there are several such categories, and ``all``)
the abstention rate by log-prob and by generation, mean margin, accuracy and confidence, with
the item accounting (``n_items``, ``n_scored``, ``n_skipped``, ``skip_reason``,
``n_truncated``). ``selective.csv``: how well abstaining tracks being wrong: the area under the
risk-coverage curve (AURC; lower is better) of the confidence, of the abstention preference
(``-margin``) and of an oracle, and the coverage and risk at the model's own abstentions (by
log-prob and by generation); the curves in ``abstention_curve.csv``. ``comparison.csv``: chat
vs base per template x category on the items both scored: McNemar on abstaining (log-prob and
generation) and a paired bootstrap of the mean margin. Figures: abstention by category base vs
chat (``abstention_by_category``), the abstention curves (``abstention_curve``).

Outputs (``runs/idk/<pair>/`` or ``--out``): ``results.jsonl`` (resumable), the tables above,
``meta.json``, figures (PNG + PDF).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from studies._chat import on_off
from studies._common import (
    PLACEMENT_OPTIONS,
    add_model_options,
    add_pair_options,
    add_run_options,
    comma_list,
    load_kwargs,
)

STUDY = "idk"
KEY_FIELDS = ("model", "chat_template", "item")
ROW_OPTIONS = ("dataset", "triviaqa", "categories", "limit", "chat_template", "generate", "max_new_tokens",
               "batch_size", "truncate", "dtype", "device", "device_map", "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads",
                 "n_boot")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv", "selective.csv", "abstention_curve.csv", "comparison.csv")
TRUNCATE = ("left", "skip")
STOP = ("\n",)  # a free answer is one line
SCORES = {"confidence": "confidence", "preference": "-margin", "oracle": "correct"}  # risk-coverage scores
POOLS = ("unanswerable", "all")  # summary groups besides each category


@dataclass(frozen=True)
class Work:
    """One item under one chat-template setting."""

    chat_template: bool
    item: object  # tasks.idk.IDKItem
    context: str
    index: int  # position within its template setting (generation runs on the first --generate)


def make_work(items: list, templates: Sequence[bool], template_tok) -> list[Work]:
    from probes.chat import chat_prompt

    return [Work(t, it, chat_prompt(template_tok, it.question) if t else it.prompt, i)
            for t in templates for i, it in enumerate(items)]


# -- scoring -----------------------------------------------------------------------------------------
def score_chunk(lm, member: str, chunk: list[Work], generate_n: int, max_new_tokens: int, truncate: str) -> list[dict]:
    """Result rows of one chunk: each response's log-prob, the preference readout, and the free answer."""
    from probes.abstention import classify_generation, preference
    from probes.generation import generate
    from probes.logprobs import Skipped, fit_context
    from probes.multiple_choice import score_items

    scores = score_items(lm, [w.item.to_mc(w.context) for w in chunk], truncate=truncate)
    prompts = {i: fit_context(lm.tokenizer(w.context)["input_ids"], max_new_tokens, lm.max_positions, truncate)
               for i, w in enumerate(chunk) if w.index < generate_n and not isinstance(scores[i], Skipped)}
    todo = [i for i, fit in prompts.items() if not isinstance(fit, Skipped)]
    texts = dict(zip(todo, generate(lm, [prompts[i][0] for i in todo], max_new_tokens, stop=STOP))) if todo else {}
    rows = []
    for i, (w, s) in enumerate(zip(chunk, scores)):
        it = w.item
        row = {"model": member, "chat_template": w.chat_template, "item": it.id, "why": it.why,
               "kind": it.meta.get("kind"), "answerable": it.answerable, "n_candidates": it.n_candidates}
        if isinstance(s, Skipped):
            rows.append({**row, "skipped": f"{s.reason} (--truncate {truncate})", "truncated": 0})
            continue
        pref = preference(s.logprobs[0], s.n_tokens, it.n_candidates)
        row.update(skipped=None, truncated=s.n_truncated, logprobs=s.logprobs[0].round(6), n_tokens=s.n_tokens,
                   **asdict(pref), abstains=pref.abstains, correct=it.answerable and pref.choice == 0)
        if i in texts:
            outcome = classify_generation(texts[i], it.candidates, it.abstentions)
            row.update(generation=texts[i], generation_truncated=prompts[i][1], generated=outcome.kind,
                       generated_candidate=outcome.candidate,
                       generated_correct=it.answerable and outcome.kind == "answer" and outcome.candidate == 0)
        elif i in prompts:
            row["generation_skipped"] = f"context + {max_new_tokens} new tokens: {prompts[i].reason}"
        rows.append(row)
    return rows


def score_pair(pair, work: list[Work], log, shard, args) -> dict[str, float]:
    import torch

    from studies._common import progress
    from studies._shards import chunked, load_members, pending_by_member

    def key_of(member):
        return lambda w: (member, w.chat_template, w.item.id)

    generate_n = len(work) if args.generate is None else args.generate
    todo = pending_by_member(chunked(work, args.batch_size), key_of, log, shard)
    timings = {}
    for member, lm in load_members(pair, [m for m, chunks in todo.items() if chunks]):
        t0 = time.perf_counter()
        for _, chunk in progress(todo[member], desc=f"{STUDY} {member}", total=len(todo[member])):
            with torch.no_grad():
                log.write(score_chunk(lm, member, chunk, generate_n, args.max_new_tokens, args.truncate))
        timings[f"{member}_s"] = round(time.perf_counter() - t0, 2)
    return timings


# -- tables ------------------------------------------------------------------------------------------
def _groups(rows: list[dict]):
    """``(category, rows)`` for each category present, its kinds (``fictional:spelled``) when
    its items have them, then the pools."""
    cats = list(dict.fromkeys(r["why"] for r in rows))
    out = []
    for c in cats:
        out.append((c, [r for r in rows if r["why"] == c]))
        for kind in dict.fromkeys(r.get("kind") for r in rows if r["why"] == c and r.get("kind")):
            out.append((f"{c}:{kind}", [r for r in rows if r["why"] == c and r.get("kind") == kind]))
    if len([c for c in cats if c != "known"]) > 1:  # (with one such category it would repeat it)
        out.append(("unanswerable", [r for r in rows if not r["answerable"]]))
    out.append(("all", list(rows)))
    return [(c, g) for c, g in out if g]


def _mean(values) -> float:
    import numpy as np

    values = [float(v) for v in values]
    return float(np.mean(values)) if values else float("nan")


def summarize(rows: list[dict]):
    """Per model x template x category: abstention by log-prob and generation, margins,
    accuracy, confidence, and the item accounting. Raises StudyError when nothing was scored."""
    import pandas as pd

    from studies import _accounting
    from studies._common import StudyError

    out, counts = [], {}
    for (model, tmpl), rs in _by(rows, ("model", "chat_template")).items():
        for category, g in _groups(rs):
            c = _accounting.count(g)
            counts[(model, tmpl, category)] = c
            s = [r for r in g if not r.get("skipped")]
            gen = [r for r in s if "generated" in r]
            ans = [r for r in s if r["answerable"]]
            out.append({"model": model, "chat_template": tmpl, "category": category, **c,
                        "abstain_rate": _mean(r["abstains"] for r in s),
                        "margin": _mean(r["margin"] for r in s),
                        "margin_per_token": _mean(r["margin_per_token"] for r in s),
                        "confidence": _mean(r["confidence"] for r in s),
                        "accuracy": _mean(r["correct"] for r in ans),
                        "n_generated": len(gen),
                        "gen_abstain_rate": _mean(r["generated"] == "abstain" for r in gen),
                        "gen_answer_rate": _mean(r["generated"] == "answer" for r in gen),
                        "gen_empty_rate": _mean(r["generated"] == "empty" for r in gen),
                        "gen_accuracy": _mean(r["generated_correct"] for r in gen if r["answerable"])})
    per_category = {k: v for k, v in counts.items() if k[2] not in POOLS and ":" not in k[2]}
    if not any(c["n_scored"] for c in per_category.values()):
        raise StudyError("no item was scored: " + "; ".join(_accounting.notes(per_category, _label)))
    table = pd.DataFrame(out)
    table.attrs["notes"] = _accounting.notes(per_category, _label) + _generation_notes(rows)
    return table


def _by(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def _label(key: tuple) -> str:
    tmpl, category = key
    return f"{category} ({'chat template' if tmpl else 'raw'})"


def _generation_notes(rows: list[dict]) -> list[str]:
    lost = [r for r in rows if r.get("generation_skipped")]
    if not lost:
        return []
    return [f"{len(lost)} free generation(s) not run: {lost[0]['generation_skipped']}"]


def selective(rows: list[dict]):
    """``(selective table, curves)``: per model x template, the AURC of each score in
    :data:`SCORES` and the coverage / risk at the model's own abstentions."""
    import numpy as np
    import pandas as pd

    from probes.abstention import aurc, risk_coverage

    table, curves = [], []
    for (model, tmpl), rs in _by([r for r in rows if not r.get("skipped")], ("model", "chat_template")).items():
        correct = np.array([r["correct"] for r in rs], dtype=bool)
        scores = {"confidence": np.array([r["confidence"] for r in rs]),
                  "preference": -np.array([r["margin"] for r in rs]), "oracle": correct.astype(float)}
        head = {"model": model, "chat_template": tmpl, "n": len(rs), "accuracy_all": float(correct.mean())}
        for name, score in scores.items():
            table.append({**head, "rule": f"curve:{name}", "aurc": aurc(score, correct)})
            curves += risk_coverage(score, correct).to_records(model=model, chat_template=tmpl, score=name)
        decisions = {"logprob": (np.array([not r["abstains"] for r in rs]), correct)}
        gen = [r for r in rs if "generated" in r]
        if gen:
            decisions["generation"] = (np.array([r["generated"] != "abstain" for r in gen]),
                                       np.array([r["generated_correct"] for r in gen], dtype=bool))
        for name, (answered, right) in decisions.items():
            table.append({**head, "rule": f"own:{name}", "n": len(answered), "coverage": float(answered.mean()),
                          "risk": float(1 - right[answered].mean()) if answered.any() else float("nan"),
                          "wrong_abstained": float(np.mean(~answered[~right])) if (~right).any() else float("nan"),
                          "right_abstained": float(np.mean(~answered[right])) if right.any() else float("nan")})
    return pd.DataFrame(table), pd.DataFrame(curves)


def compare(rows: list[dict], n_boot: int = 2000, seed: int = 0):
    """Chat vs base per template x category (and pools) on the items both scored."""
    import numpy as np
    import pandas as pd

    from probes.stats import mcnemar, paired_bootstrap

    scored = [r for r in rows if not r.get("skipped")]
    out = []
    for (tmpl,), rs in _by(scored, ("chat_template",)).items():
        by_model = {m: {r["item"]: r for r in rs if r["model"] == m} for m in ("base", "chat")}
        both = [i for i in by_model["base"] if i in by_model["chat"]]
        if not both:
            continue
        paired = [{**by_model["base"][i], "chat_row": by_model["chat"][i]} for i in both]
        for category, g in _groups(paired):
            base, chat = g, [r["chat_row"] for r in g]
            rec = {"chat_template": tmpl, "category": category, "n": len(g)}
            for name, field in (("abstain", "abstains"), ("gen_abstain", "generated")):
                keep = [k for k, r in enumerate(base) if field in r and field in chat[k]]
                if not keep:
                    continue
                a = np.array([_flag(base[k][field]) for k in keep])
                b = np.array([_flag(chat[k][field]) for k in keep])
                mc = mcnemar(a, b)
                rec.update({f"{name}_n": len(keep), f"{name}_base": a.mean(), f"{name}_chat": b.mean(),
                            f"{name}_mcnemar_b": mc.b, f"{name}_mcnemar_c": mc.c, f"{name}_mcnemar_p": mc.p_value})
            a = np.array([r["margin"] for r in base])
            b = np.array([r["margin"] for r in chat])
            pb = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)  # the mean of chat - base margins
            rec.update(margin_base=a.mean(), margin_chat=b.mean(), margin_diff=pb.diff, margin_diff_low=pb.ci_low,
                       margin_diff_high=pb.ci_high, margin_bootstrap_p=pb.p_value)
            out.append(rec)
    return pd.DataFrame(out)


def _flag(value) -> bool:
    """An abstention flag from ``abstains`` (bool) or ``generated`` (a kind)."""
    return value == "abstain" if isinstance(value, str) else bool(value)


# -- figures and report --------------------------------------------------------------------------------
def make_figures(summary, curves, out: Path, pair_name: str) -> list[Path]:
    from figures.abstention import plot_abstention_by_category, plot_abstention_curve

    paths = []
    cats = summary[~summary["category"].isin(POOLS)]
    paths += plot_abstention_by_category(cats, out / "abstention_by_category",
                                         title=f"{pair_name}: abstaining by category")
    if not curves.empty:
        paths += plot_abstention_curve(curves, out / "abstention_curve",
                                       title=f"{pair_name}: accuracy on the answered items vs abstention rate")
    return paths


def report(summary, selective_table, comparison) -> str:
    lines = ["abstention rate (log-prob preference; free generation) and accuracy on answerable items:"]
    for r in summary.itertuples():
        if not r.n_scored:
            lines.append(f"  {r.model:4s} {'chat' if r.chat_template else 'raw '} {r.category:20s} n=   0/{r.n_items}")
            continue
        gen = f"{r.gen_abstain_rate:.2f}" if r.n_generated else "-"
        acc = f", acc {r.accuracy:.2f}" if r.accuracy == r.accuracy else ""
        lines.append(f"  {r.model:4s} {'chat' if r.chat_template else 'raw '} {r.category:20s} n={r.n_scored:4d}"
                     f"/{r.n_items}: abstain {r.abstain_rate:.2f}; {gen}, margin {r.margin:+.2f}{acc}")
    curves = selective_table[selective_table["rule"].str.startswith("curve:")]
    lines.append("AURC (lower: abstention tracks errors better): confidence / preference / oracle")
    for (model, tmpl), g in curves.groupby(["model", "chat_template"], sort=False):
        a = dict(zip(g["rule"], g["aurc"]))
        lines.append(f"  {model:4s} {'chat' if tmpl else 'raw '}: {a['curve:confidence']:.3f} / "
                     f"{a['curve:preference']:.3f} / {a['curve:oracle']:.3f}")
    if len(comparison):
        lines.append("chat - base (McNemar p on abstaining by log-prob; margin difference [95% CI]):")
        for r in comparison.itertuples():
            lines.append(f"  {'chat' if r.chat_template else 'raw '} {r.category:20s}: abstain {r.abstain_base:.2f} -> "
                         f"{r.abstain_chat:.2f} (p {r.abstain_mcnemar_p:.3g}); margin {r.margin_diff:+.2f} "
                         f"[{r.margin_diff_low:+.2f}, {r.margin_diff_high:+.2f}]")
    lines += [f"note: {n}" for n in summary.attrs.get("notes", [])]
    return "\n".join(lines)


# -- CLI ------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from tasks.idk import CATEGORIES, VARIANTS

    p = argparse.ArgumentParser(prog="python -m studies.idk", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_options(p)
    p.add_argument("--dataset", choices=VARIANTS, default="toy",
                   help="toy: capitals of real and invented toy-world countries (default); text: the English questions")
    p.add_argument("--triviaqa", default="fixture",
                   help="text dataset: answerable TriviaQA questions from a file in the hub's format, 'fixture' "
                        "(12 shipped items, default) or 'none'")
    p.add_argument("--categories", type=comma_list, help=f"only these categories ({', '.join(CATEGORIES)})")
    p.add_argument("--limit", type=int, help="at most N items per category")
    p.add_argument("--chat-template", type=on_off, default=(False, True), help="off, on, or off,on (default off,on)")
    p.add_argument("--generate", type=int, help="free answers for the first N items per template (default all; 0: none)")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--truncate", choices=TRUNCATE, default="left",
                   help="items longer than the model: left-truncate the prompt (default) or skip them; counted")
    p.add_argument("--batch-size", type=int, default=16, help="items per chunk written to results.jsonl")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the margin difference")
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the toy candidates' draw and the bootstrap")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.generate is not None and args.generate < 0:
        p.error("--generate must be >= 0")
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.n_boot < 1:
        p.error("--batch-size, --max-new-tokens and --n-boot must be >= 1")
    return args


def load_items(args) -> list:
    from studies._common import StudyError
    from tasks.errors import TaskError
    from tasks.idk import load

    triviaqa = None if args.triviaqa == "none" or args.dataset == "toy" else args.triviaqa
    if args.dataset == "toy" and args.triviaqa not in ("fixture", "none"):
        raise StudyError("--triviaqa feeds the text dataset; the toy dataset has no TriviaQA part (use --dataset text)")
    try:
        return load(args.dataset, triviaqa=triviaqa, limit=args.limit, categories=args.categories, seed=args.seed)
    except TaskError as err:
        raise StudyError(str(err)) from None


def run_study(args) -> int:
    import torch

    import interp
    from studies._chat import template_tokenizer
    from studies._common import StudyError, run_dir, seed_everything
    from studies._identity import finish_run, open_run, report_shard, row_options, run_fingerprint, write_study_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import parse_shard, results_name

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    items = load_items(args)  # bad options fail before any model loads
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    out = run_dir(STUDY, pair, args.out)
    work = make_work(items, args.chat_template, template_tokenizer(pair) if any(args.chat_template) else None)
    fingerprint = run_fingerprint(STUDY, pair, row_options(args, ROW_OPTIONS), args.seed,
                                  [(w.chat_template, w.item.to_record(), w.context) for w in work])
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    timings: dict[str, float] = {}
    if not args.summary_only:
        log = ResultsLog(out / results_name(shard), KEY_FIELDS)
        timings.update(score_pair(pair, work, log, shard, args))
        finish_run(out, shard, timings=timings, n_written=log.n_written)
        if not shard.is_whole:
            report_shard(out, shard, log, log.n_written)
            return 0
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl); run without --summary-only first")
    summary = summarize(rows)
    selective_table, curves = selective(rows)
    comparison = compare(rows, args.n_boot, args.seed)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    selective_table.to_csv(out / "selective.csv", index=False, float_format="%.6g")
    curves.to_csv(out / "abstention_curve.csv", index=False, float_format="%.6g")
    comparison.to_csv(out / "comparison.csv", index=False, float_format="%.6g")
    figures = []
    if not args.no_figures:
        t0 = time.perf_counter()
        figures = make_figures(summary, curves, out, pair.spec.name)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    write_study_meta(out, args, pair, study=STUDY, timings=timings, n_rows=len(rows), key_fields=list(KEY_FIELDS),
                     fingerprint=fingerprint,
                     n_items={c: sum(it.why == c for it in items) for c in dict.fromkeys(it.why for it in items)},
                     outputs=[*TABLES, *(Path(f).name for f in figures)])
    print(report(summary, selective_table, comparison))
    print(f"\nwrote {out}/ (results*.jsonl, {', '.join(TABLES)}, meta.json{'' if args.no_figures else ', figures'}) "
          f"in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing data or weights)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    sys.exit(main())
