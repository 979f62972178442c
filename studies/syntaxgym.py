"""SyntaxGym, base vs RL-tuned (proposal 4.1): targeted syntactic evaluation by region surprisal,
at the output and by layer.

    python -m studies.syntaxgym                                   # toy pair, shipped fixture suites
    python -m studies.syntaxgym --pair llama2-7b --suites test_suites/ npi_orc_any.json --dtype bfloat16

A SyntaxGym suite (its JSON format: ``meta``, ``region_meta``, ``items`` of ``conditions`` of
``regions``, ``predictions``; ``tasks.benchmarks.syntaxgym``) holds items read under several
conditions (e.g. grammatical and not) and prediction formulas over their regions'
surprisals, e.g. ``(2;%mismatch%) > (2;%match%)``. For every model of the pair (one in memory
at a time), item and condition, the sentence (regions joined by single spaces, SyntaxGym's
convention; ``--punctuation attach`` writes ``ate, the`` instead of ``ate , the``) is read
once; every region's surprisal is the sum (the suite's ``meta.metric``) of its tokens'
``-log2 p`` (bits), tokens aligned to regions through the tokenizer's offsets
(:mod:`probes.surprisal`: BPE, WordPiece and SentencePiece alike; a BOS / EOS token goes in
front when the tokenizer adds none, so the first word has a surprisal too). That is done at
the output and, with ``--layers all`` (default), at every block through the lens ``--lens``
(``logit``, ``tuned`` or a folder ``PATH/{base,chat}``, :mod:`studies._lens`). The models read
the bare sentence (no chat template: a SyntaxGym sentence is not a user turn).

An item is correct at a readout when all of its suite's predictions hold there (Hu et al. 2020:
an item with several predictions counts only if every one holds); ``predictions.csv`` has each
prediction's own accuracy.

Suites: ``--suites PATH...`` (suite JSON files or folders of them); by default the fixture
suites shipped in ``tasks/fixtures/syntaxgym/``, hand-written in the toy pair's vocabulary
(person and tense agreement, an object filler-gap dependency, NPI licensing, the NP/Z garden
path; ten items each): a smoke test of the method, not the benchmark. Each suite's circuit is
its ``meta.circuit`` or, for SyntaxGym's own suites, Hu et al.'s (2020) class by name
(``tasks.benchmarks.syntaxgym.CIRCUITS``).

Outputs (``runs/syntaxgym/<pair>/`` or ``--out``): ``results.jsonl`` (one row per model x
item: region surprisals of every condition and prediction outcomes, under every readout;
resumable), ``summary.csv`` (accuracy with a bootstrap interval per model x readout, by
``level`` = suite, circuit (items pooled; ``suite_mean`` = the mean of its suites' accuracies, Hu
et al.'s circuit score) and all), ``comparison.csv`` (chat vs base on the items both scored:
McNemar and paired bootstrap, per level x group x readout), ``predictions.csv``, ``meta.json``,
figures (PNG + PDF). An item that does not fit the model's positions is skipped and counted
(``n_skipped``, ``skip_reason``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from studies._common import PLACEMENT_OPTIONS, add_model_options, add_pair_options, add_run_options, load_kwargs
from studies._lens import LensChoice, add_lens_option

STUDY = "syntaxgym"
KEY_FIELDS = ("model", "suite", "item")
# Options that decide a row (studies._identity.run_fingerprint): the suites and items, the
# readouts and their lens, how sentences are joined, the chunks rows are computed in, and how
# the models are loaded. --n-boot and --seed shape only the summary (bootstraps).
ROW_OPTIONS = ("suites", "limit", "layers", "lens", "punctuation", "batch_size", "dtype", "device", "device_map",
               "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads",
                 "n_boot")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv", "comparison.csv", "predictions.csv")  # written besides results, meta and figures
LEVELS = ("suite", "circuit", "all")
PUNCTUATION = ("spaces", "attach")


# -- suites -----------------------------------------------------------------------------------------
def fixture_suites() -> Path:
    from tasks.benchmarks import syntaxgym
    from tasks.sources import FIXTURE_DIR

    return FIXTURE_DIR / syntaxgym.SOURCE.fixture


def load_suites(paths: Sequence[str] | None, limit: int | None) -> list:
    """The items of every suite in ``paths`` (files or folders; default the fixture suites), at
    most ``limit`` per suite, in file order. StudyError for a missing path, a folder with no
    suite, a malformed suite (naming the file and what is wrong) or a suite name given twice."""
    from studies._common import StudyError
    from tasks.benchmarks import syntaxgym
    from tasks.errors import TaskError

    if not paths:
        print(f"note: no --suites: using the fixture suites shipped in {fixture_suites()} (ten hand-written items "
              "each, in the toy pair's vocabulary): a smoke test, not the benchmark. Pass --suites PATH...",
              file=sys.stderr)
    items, origin = [], {}
    for path in paths or [str(fixture_suites())]:
        if not Path(path).exists():
            raise StudyError(f"--suites {path}: no such file or folder (give SyntaxGym suite .json files or folders "
                             "of them)")
        try:
            loaded = syntaxgym.load(data=path)
        except TaskError as err:
            raise StudyError(str(err)) from None
        if not loaded:
            raise StudyError(f"--suites {path}: no SyntaxGym suite (*.json) in it")
        per_suite: dict[str, list] = {}
        for it in loaded:
            per_suite.setdefault(it.suite, []).append(it)
        for suite, its in per_suite.items():
            if suite in origin:
                raise StudyError(f"suite {suite!r} is in both {origin[suite]} and {path}; give each suite once")
            origin[suite] = path
            items += its[:limit]
    return items


# -- scoring -----------------------------------------------------------------------------------------
def score_chunk(lm, member: str, chunk: list, layers, batch_size: int, attach: bool, lens=None,
                lens_fields: dict | None = None) -> list[dict]:
    """Result rows of one chunk of items: region surprisals and prediction outcomes per readout."""
    from probes.logprobs import Skipped
    from probes.syntaxgym import score_items

    rows = []
    for item, s in zip(chunk, score_items(lm, chunk, layers, batch_size, lens, attach_punctuation=attach)):
        row = {"model": member, "suite": item.suite, "circuit": item.circuit, "item": item.id,
               "item_number": item.item_number, "formulas": [p.formula for p in item.predictions]}
        if isinstance(s, Skipped):
            rows.append({**row, "skipped": s.reason})
            continue
        rows.append({**row, "skipped": None, "layers": ["final" if l is None else l for l in s.layers],
                     **(lens_fields or {"lens": "logit"}),
                     "correct": [all(p) for p in s.predictions], "predictions": s.predictions,
                     "regions": {c: [[round(v, 6) for v in layer] for layer in v] for c, v in s.regions.items()},
                     "region_numbers": s.region_numbers, "n_tokens": s.n_tokens, "n_straddling": s.n_straddling})
    return rows


def score_pair(pair, work: list, log, shard, args, lens: LensChoice = LensChoice()) -> dict[str, float]:
    """Score this shard's pending chunks of ``work`` with each member that has some (one model in
    memory at a time)."""
    import torch

    from studies._common import progress
    from studies._shards import chunked, load_members, pending_by_member

    layers = "all" if args.layers == "all" else None
    timings = {}

    def key_of(member):
        return lambda item: (member, item.suite, item.id)

    todo = pending_by_member(chunked(work, args.batch_size), key_of, log, shard)
    for member, lm in load_members(pair, [m for m, chunks_left in todo.items() if chunks_left]):
        t0 = time.perf_counter()
        decoder = lens.load(member, lm)
        for _, chunk in progress(todo[member], desc=f"{STUDY} {member}", total=len(todo[member])):
            with torch.no_grad():
                log.write(score_chunk(lm, member, chunk, layers, args.batch_size, args.punctuation == "attach",
                                      decoder, lens.row_fields(member)))
        timings[f"{member}_s"] = round(time.perf_counter() - t0, 2)
    return timings


# -- tables ------------------------------------------------------------------------------------------
def item_table(rows: list[dict]):
    """Tidy: one row per model x item x readout x level (suite, circuit, all) with ``correct``
    and the share of predictions that hold (``prediction_acc``)."""
    import pandas as pd

    out = []
    for r in rows:
        if r.get("skipped"):
            continue
        for layer, correct, preds in zip(r["layers"], r["correct"], r["predictions"]):
            base = {"model": r["model"], "item": r["item"], "suite": r["suite"], "circuit": r["circuit"],
                    "layer": str(layer), "correct": bool(correct), "prediction_acc": sum(preds) / len(preds)}
            for level, group in zip(LEVELS, (r["suite"], r["circuit"], "all")):
                out.append({**base, "level": level, "group": group})
    return pd.DataFrame(out, columns=["model", "item", "suite", "circuit", "layer", "correct", "prediction_acc",
                                      "level", "group"])


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """(model, level, group, circuit) -> its rows, skipped ones included (for the accounting)."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        for level, group, circuit in (("suite", r["suite"], r["circuit"]), ("circuit", r["circuit"], r["circuit"]),
                                      ("all", "all", "all")):
            out.setdefault((r["model"], level, group, circuit), []).append(r)
    return out


SUMMARY_COLUMNS = ["model", "level", "group", "circuit", "layer", "n_suites", "n_predictions"]
METRICS = ("acc", "acc_low", "acc_high", "prediction_acc", "suite_mean")


def summarize(rows: list[dict], n_boot: int = 1000, seed: int = 0):
    """Per model x level x group x readout: item accuracy with a 95% bootstrap interval, the
    mean share of predictions that hold, ``suite_mean`` (mean of the suites' accuracies) and the
    item accounting; a group with nothing scored keeps one ``final`` row with empty metrics.
    StudyError when nothing at all was scored."""
    import numpy as np
    import pandas as pd

    from probes.calibration import bootstrap_ci
    from studies import _accounting
    from studies._common import StudyError
    from studies._lens import add_lens_columns

    groups = _groups(rows)
    counts = {key: _accounting.count(g) for key, g in groups.items()}
    suite_counts = {(k[0], k[2]): c for k, c in counts.items() if k[1] == "suite"}
    notes = _accounting.notes(suite_counts, lambda rest: f"suite {rest[0]}")
    if not any(c["n_scored"] for c in counts.values()):
        raise StudyError("no item was scored: " + "; ".join(notes))
    table = item_table(rows)
    scored = {key: g for key, g in table.groupby(["model", "level", "group"], sort=False)}
    out = []
    for (model, level, group, circuit), members in groups.items():
        head = {"model": model, "level": level, "group": group, "circuit": circuit,
                "n_suites": len({r["suite"] for r in members}),
                "n_predictions": len({(r["suite"], f) for r in members for f in r["formulas"]}),
                **counts[model, level, group, circuit]}
        if (model, level, group) not in scored:
            out.append({**head, "layer": "final"})
            continue
        for layer, g in scored[model, level, group].groupby("layer", sort=False):
            ci = bootstrap_ci(np.mean, g["correct"].to_numpy(float), n_boot=n_boot, seed=seed)
            out.append({**head, "layer": layer, "acc": ci.estimate, "acc_low": ci.low, "acc_high": ci.high,
                        "prediction_acc": float(g["prediction_acc"].mean()),
                        "suite_mean": float(g.groupby("suite")["correct"].mean().mean())})
    out.sort(key=lambda r: LEVELS.index(r["level"]))  # suites, then circuits, then all (stable: model, group order kept)
    summary = pd.DataFrame(out, columns=[*SUMMARY_COLUMNS, *_accounting.COLUMNS, *METRICS])
    summary = add_lens_columns(summary, rows)
    summary.attrs["notes"] = notes
    return summary


def compare(rows: list[dict], n_boot: int = 10_000, seed: int = 0):
    """Chat vs base on the items both scored, per level x group x readout: McNemar on the paired
    item outcomes and a paired bootstrap of the accuracy difference (chat - base)."""
    import pandas as pd

    from probes.stats import mcnemar, paired_bootstrap

    table = item_table(rows)
    out = []
    table = table.sort_values("level", key=lambda c: c.map(LEVELS.index), kind="stable")
    for (level, group, layer), g in table.groupby(["level", "group", "layer"], sort=False):
        wide = g.pivot_table(index="item", columns="model", values="correct", aggfunc="first")
        if "base" not in wide or "chat" not in wide:
            continue
        wide = wide.dropna()
        if wide.empty:
            continue
        a, b = wide["base"].astype(bool).to_numpy(), wide["chat"].astype(bool).to_numpy()
        mc, pb = mcnemar(a, b), paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
        out.append({"level": level, "group": group, "circuit": g["circuit"].iloc[0] if level != "all" else "all",
                    "layer": layer, "n": len(a), "base": a.mean(), "chat": b.mean(), "diff": pb.diff,
                    "diff_low": pb.ci_low, "diff_high": pb.ci_high, "bootstrap_p": pb.p_value, "mcnemar_b": mc.b,
                    "mcnemar_c": mc.c, "mcnemar_p": mc.p_value, "mcnemar_method": mc.method})
    return pd.DataFrame(out, columns=["level", "group", "circuit", "layer", "n", "base", "chat", "diff", "diff_low",
                                      "diff_high", "bootstrap_p", "mcnemar_b", "mcnemar_c", "mcnemar_p",
                                      "mcnemar_method"])


def prediction_table(rows: list[dict]):
    """Per model x suite x prediction x readout: the share of items whose prediction holds."""
    import pandas as pd

    out: dict[tuple, list[bool]] = {}
    for r in rows:
        if r.get("skipped"):
            continue
        for layer, preds in zip(r["layers"], r["predictions"]):
            for k, (formula, ok) in enumerate(zip(r["formulas"], preds)):
                out.setdefault((r["model"], r["suite"], k, formula, str(layer)), []).append(bool(ok))
    return pd.DataFrame([{"model": m, "suite": s, "prediction": k, "formula": f, "layer": layer, "n": len(v),
                          "acc": sum(v) / len(v)} for (m, s, k, f, layer), v in out.items()],
                        columns=["model", "suite", "prediction", "formula", "layer", "n", "acc"])


def make_figures(summary, out: Path) -> list[Path]:
    from figures.by_layer import plot_by_layer
    from figures.task_bars import plot_task_bars
    from studies._lens import lens_label

    paths = []
    summary = summary[summary["n_scored"] > 0]
    final = summary[summary["layer"] == "final"].rename(columns={"acc": "accuracy", "acc_low": "ci_low",
                                                                 "acc_high": "ci_high"})
    for level in ("suite", "circuit"):
        part = final[final["level"] == level]
        paths += plot_task_bars(part, out / f"accuracy_by_{level}", task_col="group", ylabel="item accuracy",
                                title=f"SyntaxGym accuracy by {level} (final readout)")
    layered = summary[(summary["layer"] != "final") & (summary["level"] != "circuit")]
    if not layered.empty:
        layered = layered.assign(layer=lambda d: d["layer"].astype(int)).rename(
            columns={"acc_low": "ci_low", "acc_high": "ci_high"})
        lens = lens_label(layered.get("lens", ["logit"]))
        paths += plot_by_layer(layered, out / "accuracy_by_layer", value_col="acc", facet_col="group",
                               ylabel=f"item accuracy ({lens})", title=f"SyntaxGym accuracy by layer through the {lens}")
    return paths


def report(summary, comparison) -> str:
    final = summary[summary["layer"] == "final"]
    lines = ["SyntaxGym item accuracy (final readout) [95% bootstrap CI]:"]
    for (level, group), g in final.groupby(["level", "group"], sort=False):
        cells = ", ".join(f"{r.model} {r.acc:.2f} [{r.acc_low:.2f}, {r.acc_high:.2f}]" if r.n_scored else f"{r.model} -"
                          for r in g.itertuples())
        lines.append(f"  {level:7s} {group:28s} n={int(g['n_scored'].max()):4d}/{int(g['n_items'].max())}: {cells}")
    comp = comparison[comparison["layer"] == "final"] if len(comparison) else comparison
    if len(comp):
        lines.append("chat - base (paired bootstrap 95% CI; McNemar p):")
        for r in comp.itertuples():
            lines.append(f"  {r.level:7s} {r.group:28s} {r.diff:+.2f} [{r.diff_low:+.2f}, {r.diff_high:+.2f}]; "
                         f"p = {r.mcnemar_p:.3g}")
    lines += [f"note: {line}" for line in summary.attrs.get("notes", [])]
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.syntaxgym", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_options(p)
    p.add_argument("--suites", nargs="+", metavar="PATH",
                   help="SyntaxGym suite .json files or folders of them (default: the fixture suites, "
                        "tasks/fixtures/syntaxgym)")
    p.add_argument("--limit", type=int, help="at most N items per suite")
    p.add_argument("--layers", choices=("all", "none"), default="all", help="readouts at every block too (through --lens)")
    add_lens_option(p)
    p.add_argument("--punctuation", choices=PUNCTUATION, default="spaces",
                   help="how regions are joined: single spaces everywhere (default, SyntaxGym's convention) or "
                        "punctuation regions (. , ; : ! ? 's) attached to the word before them")
    p.add_argument("--batch-size", type=int, default=8, help="items per chunk written to results.jsonl")
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the bootstraps")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of each accuracy interval")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.batch_size < 1 or args.n_boot < 1:
        p.error("--batch-size and --n-boot must be >= 1")
    if args.layers == "none" and args.lens != "logit":
        p.error("--lens decodes the block readouts, and --layers none has none; drop --lens or use --layers all")
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
    work = load_suites(args.suites, args.limit)
    fingerprint = run_fingerprint(STUDY, pair, {**row_options(args, ROW_OPTIONS), "lens": lens.fingerprint}, args.seed,
                                  work)
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    n_items: dict[str, int] = {}
    for item in work:
        n_items[item.suite] = n_items.get(item.suite, 0) + 1
    extra = dict(n_items=n_items, circuits={it.suite: it.circuit for it in work}, fingerprint=fingerprint,
                 lens=lens.fingerprint, lens_folders={m: str(f) for m, f in lens.folders.items()})
    timings: dict[str, float] = {}
    if not args.summary_only:
        log = ResultsLog(out / results_name(shard), KEY_FIELDS)
        timings.update(score_pair(pair, work, log, shard, args, lens))
        finish_run(out, shard, timings=timings, n_written=log.n_written)
        if not shard.is_whole:
            report_shard(out, shard, log, log.n_written)
            return 0
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl); run without --summary-only first")
    summary = summarize(rows, args.n_boot, args.seed)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    comparison = compare(rows, seed=args.seed)
    comparison.to_csv(out / "comparison.csv", index=False, float_format="%.6g")
    prediction_table(rows).to_csv(out / "predictions.csv", index=False, float_format="%.6g")
    figures = []
    if not args.no_figures:
        t0 = time.perf_counter()
        figures = make_figures(summary, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    write_study_meta(out, args, pair, study=STUDY, timings=timings, n_rows=len(rows), key_fields=list(KEY_FIELDS),
                     outputs=[*TABLES, *(Path(f).name for f in figures)], **extra)
    print(report(summary, comparison))
    print(f"\nwrote {out}/ (results*.jsonl, summary.csv, comparison.csv, predictions.csv, meta.json"
          f"{'' if args.no_figures else ', figures'}) in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing suites or weights, no traceback)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    sys.exit(main())
