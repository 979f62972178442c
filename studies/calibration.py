"""Calibration, base vs RL-tuned (proposal 4.4; Kadavath et al. 2022), at the output and by layer.

    python -m studies.calibration                                 # toy pair, shipped data
    python -m studies.calibration --pair llama2-7b --tasks mmlu,triviaqa_mc,triviaqa_ptrue \\
        --data mmlu=mmlu_test.jsonl --data triviaqa_mc=tqa.jsonl --data triviaqa_ptrue=tqa.jsonl

Items are scored exactly as in :mod:`studies.benchmarks` (option log-likelihoods at the
output and, with ``--layers all``, through the lens ``--lens`` of every block: ``logit``
(default), ``tuned`` or a folder ``PATH/{base,chat}``, :mod:`studies._lens`). The confidence of
a multiple-choice item is the probability of the model's chosen option (softmax over the
options' log-likelihoods), correct when that option is the label. For ``triviaqa_ptrue``
(Kadavath et al.'s self-evaluation format) the confidence is P(True) = ``p(" (A)")``
renormalised over the two options, and the outcome whether the proposed answer is right.

Per model x task x readout (and the lens of the block readouts: ``lens``, ``lens_sha256``):
ECE (with a bootstrap interval), MCE, RMS calibration error, Brier score, NLL and accuracy; a
temperature sweep and the NLL-optimal temperature (output readout of multiple-choice tasks),
searched within ``TEMPERATURE_BOUNDS`` (0.01 to 100): a fit at a bound (``temperature_at_bound`` in ``summary.csv``, and a console warning) means the
optimum lies beyond it, e.g. a model whose confident choices are mostly wrong is best at
uniform confidence (T -> infinity). Figures: reliability diagrams base vs chat side by side,
ECE by layer, ECE against temperature.

Long items: ``--truncate left`` (default, as lm-evaluation-harness) or ``skip``, as in
:mod:`studies.benchmarks`. ``summary.csv`` counts, per model and task, ``n_items``,
``n_scored``, ``n_skipped`` (with ``skip_reason``; items whose option count differs from the
task's first item are skipped too) and ``n_truncated``; the console names every task that lost
or cut items, and a task with nothing scored keeps a ``final`` row with empty metrics.

Outputs (``runs/calibration/<pair>/`` or ``--out``): ``results.jsonl`` (resumable),
``summary.csv``, ``reliability.csv``, ``temperature.csv``, ``meta.json``, figures (PNG + PDF).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from studies import benchmarks as bm
from studies._common import PLACEMENT_OPTIONS, load_kwargs

STUDY = "calibration"
DEFAULT_TASKS = ("toy_capitals", "mmlu", "triviaqa_mc", "triviaqa_ptrue")
PTRUE_TASKS = {"triviaqa_ptrue"}
# Options that decide a row (see studies.benchmarks.ROW_OPTIONS; no generation here). --bins,
# --binning and --n-boot shape only the summary.
ROW_OPTIONS = ("tasks", "data", "limit", "layers", "lens", "batch_size", "shots", "chat_template", "truncate", "dtype",
               "device", "device_map", "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads",
                 "bins", "binning", "n_boot")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv", "reliability.csv", "temperature.csv")  # written besides results, meta and figures
TEMPERATURE_BOUNDS = (1e-2, 1e2)  # the search range of the NLL-optimal temperature
AT_BOUND = 1e-3  # a fitted temperature within this relative distance of a bound is "at" it


def _items(rows: list[dict], task: str, model: str) -> list[dict]:
    """The task's rows of one model; rows with another option count than the first scored
    item's become skipped (ECE and NLL pool items of one option count)."""
    its = [r for r in rows if r["task"] == task and r["model"] == model]
    first = next((r["n_options"] for r in its if not r.get("skipped")), None)
    return [{**r, "skipped": f"{r['n_options']} options, not the task's {first}"}
            if not r.get("skipped") and r["n_options"] != first else r for r in its]


def at_bound(temperature: float, logits, labels, bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
             tol: float = AT_BOUND) -> bool:
    """Whether a fitted temperature is no interior optimum: it sits at a bound of its search,
    or the NLL at a bound is as low (an NLL flat to rounding there, as for separable options,
    stops the search anywhere in the flat part). Either way the optimum lies beyond the bound."""
    from probes.calibration import nll

    if any(abs(temperature - b) <= tol * b for b in bounds):
        return True
    best = nll(logits, labels, temperature)
    return any(nll(logits, labels, b) <= best + 1e-12 for b in bounds)


def confidences(rows: list[dict], layer_index: int, ptrue: bool):
    """``(logits [item, option], labels, confidence, correct)`` at one readout."""
    import numpy as np

    from probes.calibration import confidence_and_correct, softmax

    logits = np.array([r["logprobs"][layer_index] for r in rows], dtype=float)
    labels = np.array([r["label"] for r in rows])
    probs = softmax(logits)
    if ptrue:
        return logits, labels, probs[:, 0], labels == 0
    conf, correct = confidence_and_correct(probs, labels)
    return logits, labels, conf, correct


def metrics(logits, labels, conf, correct, ptrue: bool, n_bins: int, strategy: str, n_boot: int) -> dict:
    import numpy as np

    from probes import calibration as cal

    bins = min(n_bins, len(conf)) if strategy == "quantile" else n_bins
    ci = cal.bootstrap_ci(cal.ece, conf, correct, n_boot=n_boot, n_bins=bins, strategy=strategy)
    out = {"accuracy": float(np.mean(correct)), "mean_confidence": float(np.mean(conf)),
           "ece": ci.estimate, "ece_low": ci.low, "ece_high": ci.high,
           "mce": cal.mce(conf, correct, bins, strategy), "rms": cal.rms_calibration_error(conf, correct, bins, strategy)}
    if ptrue:
        out["brier"] = cal.brier_score_binary(conf, correct)
    else:
        out.update(brier=cal.brier_score(cal.softmax(logits), labels), nll=cal.nll(logits, labels))
    return out


def summarize(rows: list[dict], n_bins: int = 10, strategy: str = "uniform", n_boot: int = 200):
    """``(summary, reliability bins, temperature sweep)`` tables, from the rows alone."""
    import pandas as pd

    from probes import calibration as cal

    from studies import _accounting
    from studies._common import StudyError
    from studies._lens import add_lens_columns

    summary, bins, temps = [], [], []
    counts = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        ptrue = task in PTRUE_TASKS
        for model in dict.fromkeys(r["model"] for r in rows):
            group = _items(rows, task, model)
            if not group:
                continue
            counts[(model, task)] = c = _accounting.count(group)
            head = {"model": model, "task": task, "kind": "p_true" if ptrue else "mc", **c}
            its = [r for r in group if not r.get("skipped")]
            if not its:
                summary.append({**head, "layer": "final"})
                continue
            for index, layer in enumerate(its[0]["layers"]):
                logits, labels, conf, correct = confidences(its, index, ptrue)
                rec = {**head, "layer": str(layer), **metrics(logits, labels, conf, correct, ptrue, n_bins, strategy, n_boot)}
                if layer == "final" and not ptrue:
                    rec["temperature"] = cal.fit_temperature(logits, labels, bounds=TEMPERATURE_BOUNDS)
                    rec["temperature_at_bound"] = at_bound(rec["temperature"], logits, labels)
                    temps += cal.temperature_sweep(logits, labels, n_bins=n_bins, strategy=strategy).to_records(
                        model=model, task=task)
                if layer == "final":
                    b = min(n_bins, len(conf)) if strategy == "quantile" else n_bins
                    bins += cal.reliability_diagram(conf, correct, b, strategy).to_records(model=model, task=task)
                summary.append(rec)
    notes = _accounting.notes(counts, lambda key: key[0])
    if not any(c["n_scored"] for c in counts.values()):
        hint = "; --truncate left scores long items" if any("--truncate skip" in c["skip_reason"]
                                                             for c in counts.values()) else ""
        raise StudyError("no item was scored: " + "; ".join(notes) + hint)
    table = pd.DataFrame(summary)
    table = table[[c for c in ("model", "task", "layer", "kind", *_accounting.COLUMNS) if c in table]
                  + [c for c in table if c not in ("model", "task", "layer", "kind", *_accounting.COLUMNS)]]
    table = add_lens_columns(table, rows)
    table.attrs["notes"] = notes
    return table, pd.DataFrame(bins), pd.DataFrame(temps)


def make_figures(summary, bins, temps, out: Path) -> list[Path]:
    from figures.by_layer import plot_by_layer
    from figures.reliability import plot_reliability
    from studies._lens import lens_label

    paths = []
    summary = summary[summary["n_scored"] > 0]  # tasks with nothing scored have no figures
    final = summary[summary["layer"] == "final"]
    for task, b in bins.groupby("task", sort=False):
        title = f"{task}: P(True) calibration" if task in PTRUE_TASKS else task
        paths += plot_reliability(b, out / f"reliability_{task}", summary=final[final["task"] == task], title=title)
    layered = summary[summary["layer"] != "final"].assign(layer=lambda d: d["layer"].astype(int))
    if not layered.empty:
        lens = lens_label(layered.get("lens", ["logit"]))  # (a summary.csv from before lenses has no column)
        paths += plot_by_layer(layered.rename(columns={"ece_low": "ci_low", "ece_high": "ci_high"}),
                               out / "ece_by_layer", value_col="ece", facet_col="task", ylabel=f"ECE ({lens})",
                               title=f"ECE by layer through the {lens}")
    if not temps.empty:
        paths += plot_by_layer(temps, out / "ece_by_temperature", value_col="ece", layer_col="temperature",
                               facet_col="task", ylabel="ECE")
    return paths


def report(summary) -> str:
    final = summary[summary["layer"] == "final"]
    lines = ["calibration (final readout): ECE [95% bootstrap CI], Brier, accuracy, fitted temperature"]
    warnings = []
    for r in final.itertuples():
        if not r.n_scored:
            lines.append(f"  {r.task:14s} {r.model:5s} n=   0/{r.n_items}: nothing scored (see the note below)")
            continue
        temp = f", T* {r.temperature:.2f}" if "temperature" in final and r.temperature == r.temperature else ""
        if temp and r.temperature_at_bound:
            temp += " (no optimum inside the search bounds)"
            why = ("the NLL keeps falling as T grows: uniform confidence beats the model's"
                   if r.temperature > 1 else "the NLL keeps falling as T shrinks (e.g. separable options)")
            warnings.append(f"warning: {r.task} {r.model}: the fitted temperature {r.temperature:.2f} is at a bound of "
                            f"the search ({TEMPERATURE_BOUNDS[0]:g} to {TEMPERATURE_BOUNDS[1]:g}) or as good as it, "
                            f"not an optimum: {why}")
        lines.append(f"  {r.task:14s} {r.model:5s} n={r.n_scored:4d}/{r.n_items}: ECE {r.ece:.3f} "
                     f"[{r.ece_low:.3f}, {r.ece_high:.3f}], Brier {r.brier:.3f}, acc {r.accuracy:.2f}{temp}")
    lines += warnings + [f"note: {line}" for line in summary.attrs.get("notes", [])]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.calibration", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    bm.add_common_args(p, DEFAULT_TASKS)
    p.add_argument("--shots", type=int, default=0, help="demonstrations per prompt (default 0)")
    p.add_argument("--chat-template", choices=("on", "off"), default="off")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--binning", choices=("uniform", "quantile"), default="uniform")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples of the ECE")
    args = p.parse_args(argv)
    bm.check_args(p, args)
    if args.bins < 1 or args.shots < 0:
        p.error("--bins must be >= 1 and --shots >= 0")
    return args


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
    items = bm.load_items(args.tasks, bm.parse_data(args.data), args.limit, args.seed, generation=False)
    template = args.chat_template == "on"
    work = bm.make_work(items, [args.shots], [template], bm.template_tokenizer(pair) if template else None, args.seed)
    fingerprint = run_fingerprint(STUDY, pair, {**row_options(args, ROW_OPTIONS), "lens": lens.fingerprint}, args.seed,
                                  work)
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    extra = dict(n_items={t: len(v) for t, v in items.items()}, fingerprint=fingerprint,
                 lens=lens.fingerprint, lens_folders={m: str(f) for m, f in lens.folders.items()})
    if not args.summary_only:
        log = ResultsLog(out / results_name(shard), bm.KEY_FIELDS)
        timings.update(bm.score_pair(pair, work, log, shard, args, STUDY, lens=lens))
        finish_run(out, shard, timings=timings, n_written=log.n_written)
        if not shard.is_whole:
            report_shard(out, shard, log, log.n_written)
            return 0
    rows = read_results(out, bm.KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl); run without --summary-only first")
    summary, bins, temps = summarize(rows, args.bins, args.binning, args.n_boot)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    bins.to_csv(out / "reliability.csv", index=False, float_format="%.6g")
    temps.to_csv(out / "temperature.csv", index=False, float_format="%.6g")
    figures = []
    if not args.no_figures:
        t0 = time.perf_counter()
        figures = make_figures(summary, bins, temps, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    write_study_meta(out, args, pair, study=STUDY, timings=timings, n_rows=len(rows), key_fields=list(bm.KEY_FIELDS),
                     outputs=[*TABLES, *(Path(f).name for f in figures)], **extra)
    print(report(summary))
    print(f"\nwrote {out}/ (results*.jsonl, summary.csv, reliability.csv, temperature.csv, meta.json"
          f"{'' if args.no_figures else ', figures'}) in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing data or weights)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    sys.exit(main())
