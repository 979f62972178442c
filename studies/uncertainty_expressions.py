"""Expressions of uncertainty, base vs RL-tuned, against human data (proposal 4.4; Herbstritt & Franke 2016).

    python -m studies.uncertainty_expressions                     # toy pair, synthetic human fixture
    python -m studies.uncertainty_expressions --pair llama2-7b --human-data clean_production_data.csv \\
        --human-data clean_interpretation_data.csv --sets complex --dtype bfloat16

The urn paradigm (:mod:`tasks.uncertainty`): an urn of 10 balls, a speaker sees ``access`` of
them (2, 4, 8 or 10), ``observation`` of which are red, and says how likely it is that the next
ball is red. Every context (all 28 ``(access, observation)`` pairs), in each of
``--wordings`` wordings, zero- and few-shot (``--shots``; demonstrations of other contexts
answered by a fixed proportion rule, which they teach too: zero-shot is the clean measurement),
with the chat template off and on (``--chat-template``), is scored as multiple choice
(:mod:`probes.multiple_choice`):

- ``production``: the model's distribution over the expressions of each set (``--sets``:
  ``simple``, the five of their first experiment; ``complex``, modifier x adjective, 12);
- ``interpretation``: given an expression, its distribution over the number of red balls in
  the urn (options 0..10); ``expected_state`` is that distribution's mean (not a stated number).

Distributions are softmax over the options' log-likelihoods, summed (``sum``) or divided by the
option's tokens (``token``) or characters (``char``): all three are reported
(:mod:`probes.distribution_compare`), each averaged over the wordings.

Human data (``--human-data PATH``, repeatable; the authors' CSV formats, read by
:mod:`tasks.uncertainty.human`; default: the shipped SYNTHETIC fixture, which is made up and
shows only that the pipeline runs; ``--human-data none``: no comparison). Per context with
human data: Jensen-Shannon divergence (bits) and Pearson's r between model and human
distributions, and the log-likelihood of the human choices under the model (trial files;
aggregate files give proportions only, hence ``loglik_per_choice``). Which model is closer:
paired bootstrap over contexts of the chat - base difference of mean JS and of
``loglik_per_choice`` (:func:`probes.stats.paired_bootstrap`).

Outputs (``runs/uncertainty_expressions/<pair>/`` or ``--out``): ``results.jsonl`` (one row
per model x part x set x shots x chat template x item, resumable), ``distributions.csv``
(model and human probability per option and context), ``contexts.csv`` (per-context metrics),
``summary.csv`` (per model and condition: item accounting, mean JS, mean r, log-likelihood),
``js_by_access.csv``, ``comparison.csv`` (chat vs base), ``meta.json``, figures (PNG + PDF):
per condition of the fewest shots, model vs human bars for each context (``sum`` normalisation), and mean JS by
access level.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from studies._common import (
    PLACEMENT_OPTIONS,
    add_model_options,
    add_pair_options,
    add_run_options,
    comma_list,
    load_kwargs,
)

STUDY = "uncertainty_expressions"
KEY_FIELDS = ("model", "kind", "set", "shots", "chat_template", "item")
CONDITION = ("kind", "set", "shots", "chat_template")
ROW_OPTIONS = ("parts", "sets", "wordings", "shots", "chat_template", "truncate", "batch_size", "dtype", "device",
               "device_map", "quantization")
# --human-data and --n-boot shape only the comparison, computed from the rows.
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads",
                 "human_data", "n_boot")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv", "contexts.csv", "distributions.csv", "js_by_access.csv", "comparison.csv")
FIGURE_NORM = "sum"  # the normalisation the figures show (all three are in the tables)
BETTER = {"js": "lower", "loglik_per_choice": "higher"}  # the metrics compared between the models


@dataclass(frozen=True)
class Work:
    """One item (context x wording, its prompt already with demonstrations / template) under one condition."""

    kind: str
    set: str
    shots: int
    chat_template: bool
    item: object  # MCItem


# -- work -------------------------------------------------------------------------------------------
def make_work(parts: Sequence[str], sets: Sequence[str], n_wordings: int | None, shots: Sequence[int],
              templates: Sequence[bool], template_tok, seed: int) -> list[Work]:
    import dataclasses

    from probes.chat import chat_prompt
    from tasks.uncertainty import items, with_shots

    work = []
    for kind in parts:
        for set_name in sets:
            pool = items(kind, set_name, n_wordings)
            for k in shots:
                for tmpl in templates:
                    for item in pool:
                        shot = with_shots(pool, item, k, seed)
                        if tmpl:
                            shot = dataclasses.replace(shot, context=chat_prompt(template_tok, shot.context))
                        work.append(Work(kind, set_name, k, tmpl, shot))
    return work


def _row(member: str, w: Work, score) -> dict:
    from probes.logprobs import Skipped

    meta = w.item.meta
    row = {"model": member, "kind": w.kind, "set": w.set, "shots": w.shots, "chat_template": w.chat_template,
           "item": w.item.id, "wording": meta["wording"], "codes": meta["codes"],
           "context": meta["expression"] if w.kind == "interpretation" else f"{meta['access']},{meta['observation']}"}
    if isinstance(score, Skipped):
        return {**row, "skipped": score.reason}
    return {**row, "logprobs": score.loglik().tolist(), "n_tokens": score.n_tokens.tolist(),
            "n_chars": score.n_chars.tolist(), "truncated": score.n_truncated}


def score_pair(pair, work: list[Work], log, shard, args) -> dict[str, float]:
    """Score this shard's pending chunks of ``work`` with each member that has some, one model in memory at a time."""
    import torch

    from probes.multiple_choice import score_items
    from studies._common import progress
    from studies._shards import chunked, load_members, pending_by_member

    def key_of(member):
        return lambda w: (member, w.kind, w.set, w.shots, w.chat_template, w.item.id)

    todo = pending_by_member(chunked(work, args.batch_size), key_of, log, shard)
    timings = {}
    for member, lm in load_members(pair, [m for m, left in todo.items() if left]):
        t0 = time.perf_counter()
        for _, chunk in progress(todo[member], desc=f"{STUDY} {member}", total=len(todo[member])):
            with torch.no_grad():
                scores = score_items(lm, [w.item for w in chunk], batch_size=len(chunk), truncate=args.truncate)
            log.write([_row(member, w, s) for w, s in zip(chunk, scores)])
        timings[f"{member}_s"] = round(time.perf_counter() - t0, 2)
    return timings


# -- human data ---------------------------------------------------------------------------------------
def load_human(paths: Sequence[str]) -> dict[tuple[str, str], object]:
    """(kind, set) -> :class:`tasks.uncertainty.human.HumanData`; two files for one (kind, set) is an error."""
    from studies._common import StudyError
    from tasks.errors import TaskError
    from tasks.uncertainty.human import read_human_data

    out = {}
    for path in paths:
        try:
            data = read_human_data(path)
        except TaskError as err:
            raise StudyError(str(err)) from None
        key = (data.kind, data.set)
        if key in out:
            raise StudyError(f"--human-data {path} and {out[key].path} are both {data.kind} data of the {data.set} set; "
                             "give one file per kind and set")
        out[key] = data
    return out


def _human_key(kind: str, context: str):
    if kind == "interpretation":
        return context
    a, o = context.split(",")
    return int(a), int(o)


# -- tables -------------------------------------------------------------------------------------------
def distributions(rows: list[dict], human: dict):
    """One row per model x condition x norm x context x option: the model's probability (mean
    over wordings, ``prob``; its spread ``prob_sd``; ``n_wordings`` scored) and the human one."""
    import numpy as np
    import pandas as pd

    from probes.distribution_compare import NORMS, option_distribution

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if not r.get("skipped"):
            groups.setdefault((r["model"], *(r[c] for c in CONDITION), r["context"]), []).append(r)
    out = []
    for (model, kind, set_name, shots, tmpl, context), rs in groups.items():
        data = human.get((kind, set_name))
        key = _human_key(kind, context)
        h = data.probs.get(key) if data else None
        for norm in NORMS:
            probs = np.array([option_distribution(r["logprobs"], r["n_tokens"], r["n_chars"], norm) for r in rs])
            mean, sd = probs.mean(0), probs.std(0)
            for j, code in enumerate(rs[0]["codes"]):
                out.append({"model": model, "kind": kind, "set": set_name, "shots": shots, "chat_template": tmpl,
                            "norm": norm, "context": context, "option": code, "prob": mean[j], "prob_sd": sd[j],
                            "n_wordings": len(rs), "human_prob": np.nan if h is None else h[j],
                            "human_count": (np.nan if h is None or data.counts is None else data.counts[key][j])})
    return pd.DataFrame(out)


def context_metrics(dist, human: dict):
    """Per model x condition x norm x context with human data: JS, r, log-likelihoods, expected state."""
    import numpy as np
    import pandas as pd

    from probes import distribution_compare as dc

    out = []
    if dist.empty:
        return pd.DataFrame(out)
    for keys, d in dist.groupby(["model", *CONDITION, "norm", "context"], sort=False):
        model, kind, set_name, shots, tmpl, norm, context = keys
        q = d["prob"].to_numpy(dtype=float)
        q = q / q.sum()  # the mean of distributions sums to 1 up to rounding
        rec = {"model": model, "kind": kind, "set": set_name, "shots": shots, "chat_template": tmpl, "norm": norm,
               "context": context}
        if kind == "production":
            rec["access"], rec["observation"] = _human_key(kind, context)
        else:
            rec["expected_state"] = float(np.dot(q, d["option"].astype(int)))
        p = d["human_prob"].to_numpy(dtype=float)
        if not np.isnan(p).any():
            counts = d["human_count"].to_numpy(dtype=float)
            has_counts = not np.isnan(counts).any()
            rec.update(js=dc.js_divergence(p, q), r=dc.pearson(p, q), loglik_per_choice=dc.loglik_per_choice(p, q),
                       loglik=dc.loglik(counts, q) if has_counts else np.nan,
                       n_human=int(counts.sum()) if has_counts else np.nan)
        out.append(rec)
    return pd.DataFrame(out)


def summarize(rows: list[dict], contexts):
    """Per model x condition x norm: item accounting and the mean metrics over contexts."""
    import numpy as np
    import pandas as pd

    from probes.distribution_compare import NORMS
    from studies import _accounting
    from studies._common import StudyError

    counts = {}
    for r in rows:
        counts.setdefault((r["model"], *(r[c] for c in CONDITION)), []).append(r)
    counts = {k: _accounting.count(v) for k, v in counts.items()}
    if not any(c["n_scored"] for c in counts.values()):
        raise StudyError("no item was scored: " + "; ".join(_accounting.notes(counts, _label)))
    out = []
    for key, c in counts.items():
        head = dict(zip(("model", *CONDITION), key))
        for norm in NORMS:
            rec = {**head, "norm": norm, **c}
            part = contexts[(contexts[list(head)] == pd.Series(head)).all(axis=1) & (contexts["norm"] == norm)] \
                if not contexts.empty else contexts
            scored = part.dropna(subset=["js"]) if "js" in part else part.iloc[0:0]
            rec["n_contexts"] = len(part)
            rec["n_compared"] = len(scored)
            if len(scored):
                rec.update(mean_js=scored["js"].mean(), mean_r=scored["r"].mean(),
                           loglik_per_choice=scored["loglik_per_choice"].mean(),
                           loglik=scored["loglik"].sum(min_count=1) if scored["loglik"].notna().all() else np.nan,
                           n_human=scored["n_human"].sum() if scored["n_human"].notna().all() else np.nan)
            out.append(rec)
    table = pd.DataFrame(out)
    table.attrs["notes"] = _accounting.notes(counts, _label)
    return table


def _label(key: tuple) -> str:
    kind, set_name, shots, tmpl = key
    return f"{kind} {set_name} {shots}-shot {'chat' if tmpl else 'raw'}"


def js_by_access(contexts):
    import pandas as pd

    if contexts.empty or "js" not in contexts:
        return pd.DataFrame()
    prod = contexts[(contexts["kind"] == "production")].dropna(subset=["js"])
    if prod.empty:
        return pd.DataFrame()
    return (prod.groupby(["model", "set", "shots", "chat_template", "norm", "access"], sort=False)
            .agg(mean_js=("js", "mean"), n_contexts=("js", "size")).reset_index())


def compare(contexts, n_boot: int, seed: int):
    """Chat vs base per condition x norm and metric: paired bootstrap over the contexts both scored."""
    import pandas as pd

    from probes.stats import paired_bootstrap

    out = []
    if contexts.empty or "js" not in contexts:
        return pd.DataFrame(out)
    scored = contexts.dropna(subset=["js"])
    for keys, d in scored.groupby([*CONDITION, "norm"], sort=False):
        wide = {m: g.set_index("context") for m, g in d.groupby("model")}
        if set(wide) != {"base", "chat"}:
            continue
        common = [c for c in wide["base"].index if c in wide["chat"].index]
        for metric, better in BETTER.items():
            a, b = wide["base"].loc[common, metric].to_numpy(), wide["chat"].loc[common, metric].to_numpy()
            res = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
            chat_better = res.ci_high < 0 if better == "lower" else res.ci_low > 0
            base_better = res.ci_low > 0 if better == "lower" else res.ci_high < 0
            out.append({**dict(zip((*CONDITION, "norm"), keys)), "metric": metric, "better": better,
                        "n_contexts": len(common), "base": a.mean(), "chat": b.mean(), "diff_chat_minus_base": res.diff,
                        "ci_low": res.ci_low, "ci_high": res.ci_high, "p_value": res.p_value,
                        "closer": "chat" if chat_better else "base" if base_better else "neither (95% CI includes 0)"})
    return pd.DataFrame(out)


# -- figures and report -------------------------------------------------------------------------------
def _tag(kind, set_name, shots, tmpl) -> str:
    return f"{kind}_{set_name}_{shots}shot_{'chat' if tmpl else 'raw'}"


def _panel(kind: str, context: str) -> str:
    if kind == "interpretation":
        return f'"{context.replace("_", " ")}"'
    a, o = context.split(",")
    return f"{o} red of {a} seen"


def make_figures(dist, by_access, out: Path) -> list[Path]:
    import pandas as pd

    from figures.by_layer import plot_by_layer
    from figures.distribution_bars import plot_distribution_bars

    paths = []
    # bars for the fewest shots only (zero-shot by default): a figure per condition costs seconds
    shown = dist[(dist["norm"] == FIGURE_NORM) & (dist["shots"] == dist["shots"].min())]
    for keys, d in shown.groupby(list(CONDITION), sort=False):
        kind = keys[0]
        d = d[d["human_prob"].notna()]  # bars for the contexts humans saw (the rest is in distributions.csv)
        if d.empty:
            continue
        if kind == "production":
            d = d.assign(_order=[tuple(map(int, c.split(","))) for c in d["context"]]).sort_values(
                "_order", kind="stable")
        bars = d.assign(source=d["model"], panel=[_panel(kind, c) for c in d["context"]])[
            ["panel", "option", "source", "prob"]]
        human = (d.drop_duplicates(["context", "option"]).dropna(subset=["human_prob"])
                 .assign(source="human", prob=lambda x: x["human_prob"],
                         panel=lambda x: [_panel(kind, c) for c in x["context"]]))[["panel", "option", "source", "prob"]]
        table = pd.concat([human, bars]) if not human.empty else bars
        what = "expression chosen" if kind == "production" else "red balls in the urn, given the expression"
        paths += plot_distribution_bars(table, out / f"bars_{_tag(*keys)}", horizontal=kind == "production",
                                        title=f"{_tag(*keys).replace('_', ' ')}: P({what}), {FIGURE_NORM} of log-probs")
    if not by_access.empty:
        for set_name, d in by_access.groupby("set", sort=False):
            d = d.assign(condition=[f"{s}-shot {'chat' if t else 'raw'}, {n}"
                                    for s, t, n in zip(d["shots"], d["chat_template"], d["norm"])])
            paths += plot_by_layer(d, out / f"js_by_access_{set_name}", value_col="mean_js", layer_col="access",
                                   facet_col="condition", ylabel="mean JS divergence (bits)",
                                   title=f"{set_name} expressions: model vs human, by access")
    return paths


def report(summary, comparison, synthetic: bool) -> str:
    import pandas as pd

    lines = [f"uncertainty expressions ({FIGURE_NORM} of log-probs): mean JS divergence (bits) and mean r against the "
             "human data, base / chat; which is closer (paired bootstrap over contexts of the JS difference)"]
    shown = summary[summary["norm"] == FIGURE_NORM]
    js = comparison[(comparison["metric"] == "js") & (comparison["norm"] == FIGURE_NORM)] if not comparison.empty \
        else comparison
    for key, d in shown.groupby(list(CONDITION), sort=False):
        by = d.set_index("model")
        n = "/".join(f"{by.n_scored[m]}" for m in by.index)
        head = f"  {_label(key):36s} n={n} of {by.n_items.iloc[0]}"
        if not by.n_compared.any():
            lines.append(f"{head}: no human data")
            continue
        text = (f"{head}: JS {' / '.join(f'{v:.3f}' for v in by.mean_js)}, r {' / '.join(f'{v:.2f}' for v in by.mean_r)}"
                f" over {by.n_compared.iloc[0]} contexts")
        match = js[(js[list(CONDITION)] == pd.Series(dict(zip(CONDITION, key)))).all(axis=1)] if not js.empty else js
        if not match.empty:
            r = match.iloc[0]
            text += (f"; closer: {r.closer} (chat - base {r.diff_chat_minus_base:+.4f} "
                     f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}])")
        lines.append(text)
    lines += [f"note: {line}" for line in summary.attrs.get("notes", [])]
    if synthetic:
        lines.append("note: the human data are the shipped SYNTHETIC fixture (made up): these comparisons only show the "
                     "pipeline runs; pass --human-data with the authors' files for real ones")
    return "\n".join(lines)


# -- CLI ----------------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(p) for p in comma_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"shots must be >= 0, got {text!r}")
    return values


def _choices(valid: Sequence[str]):
    def parse(text: str) -> tuple[str, ...]:
        parts = comma_list(text)
        bad = [p for p in parts if p not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid choice {bad[0]!r}; choose from {', '.join(valid)}")
        return parts
    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from tasks.uncertainty import KINDS, PRODUCTION_WORDINGS, SETS

    p = argparse.ArgumentParser(prog=f"python -m studies.{STUDY}", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_options(p)
    p.add_argument("--parts", type=_choices(KINDS), default=KINDS, help=f"default {','.join(KINDS)}")
    p.add_argument("--sets", type=_choices(SETS), default=SETS, help=f"expression sets (default {','.join(SETS)})")
    p.add_argument("--wordings", type=int, default=len(PRODUCTION_WORDINGS),
                   help=f"wordings per context, 1..{len(PRODUCTION_WORDINGS)} (default all)")
    p.add_argument("--shots", type=_ints, default=(0, 2), help="demonstrations per prompt, e.g. 0,2 (default)")
    p.add_argument("--chat-template", type=_choices(("off", "on")), default=("off", "on"),
                   help="off, on, or off,on (default)")
    p.add_argument("--human-data", action="append", metavar="PATH",
                   help="a human-data CSV in the authors' format (repeatable); default: the shipped synthetic "
                        "fixture; 'none': no comparison")
    p.add_argument("--truncate", choices=("left", "skip"), default="left",
                   help="items longer than the model: left-truncate the context (default) or skip them; counted "
                        "in summary.csv either way")
    p.add_argument("--batch-size", type=int, default=16, help="items per chunk written to results.jsonl")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the base vs chat comparison")
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds few-shot draws and bootstraps")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    if not 1 <= args.wordings <= len(PRODUCTION_WORDINGS):
        p.error(f"--wordings must be 1..{len(PRODUCTION_WORDINGS)}")
    if args.batch_size < 1 or args.n_boot < 1:
        p.error("--batch-size and --n-boot must be >= 1")
    args.chat_template = tuple(c == "on" for c in args.chat_template)
    return args


def _human_paths(args) -> tuple[list[str], bool]:
    from tasks.uncertainty.human import FIXTURES

    if not args.human_data:
        return [str(p) for p in FIXTURES], True
    if args.human_data == ["none"]:
        return [], False
    return list(args.human_data), False


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import StudyError, run_dir, seed_everything
    from studies._identity import finish_run, open_run, report_shard, row_options, run_fingerprint, write_study_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import parse_shard, results_name
    # (the chat member's tokenizer, whose template renders prompts for both models)
    from studies.benchmarks import template_tokenizer

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    paths, synthetic = _human_paths(args)
    human = load_human(paths)  # before loading models: a bad file fails fast
    if synthetic:
        print("note: no --human-data: comparing with the shipped SYNTHETIC fixture (made up, not the authors' data): "
              "a smoke test of the comparison, not a finding", file=sys.stderr)
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    out = run_dir(STUDY, pair, args.out)
    template_tok = template_tokenizer(pair) if any(args.chat_template) else None
    work = make_work(args.parts, args.sets, args.wordings, args.shots, args.chat_template, template_tok, args.seed)
    fingerprint = run_fingerprint(STUDY, pair, row_options(args, ROW_OPTIONS), args.seed, work)
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
    dist = distributions(rows, human)
    contexts = context_metrics(dist, human)
    summary = summarize(rows, contexts)
    by_access = js_by_access(contexts)
    comparison = compare(contexts, args.n_boot, args.seed)
    for name, table in zip(TABLES, (summary, contexts, dist, by_access, comparison)):
        table.to_csv(out / name, index=False, float_format="%.6g")
    figures = []
    if not args.no_figures and not dist.empty:
        t0 = time.perf_counter()
        figures = make_figures(dist, by_access, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    human_data = {f"{k[0]} {k[1]}": {"path": d.path, "format": d.format, "n_rows": d.n_rows, "n_ignored": d.n_ignored}
                  for k, d in human.items()}
    write_study_meta(out, args, pair, study=STUDY, timings=timings, n_rows=len(rows), key_fields=list(KEY_FIELDS),
                     outputs=[*TABLES, *(Path(f).name for f in figures)], fingerprint=fingerprint,
                     human_data=human_data, human_data_synthetic=synthetic)
    print(report(summary, comparison, synthetic))
    print(f"\nwrote {out}/ (results*.jsonl, {', '.join(TABLES)}, meta.json{'' if args.no_figures else ', figures'}) "
          f"in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing data or weights, no traceback)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    sys.exit(main())
