"""The command line: arguments, the run over models and conditions, outputs and figures."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from studies._common import PLACEMENT_OPTIONS, add_model_options, add_pair_options, add_run_options, load_kwargs
from studies._lens import add_lens_option, lens_label, resolve_lens_option
from studies.ffn_capitals.analysis import KEY_FIELDS, TRANSPLANT_TARGETS, analyse_chunk, source_vectors
from studies.ffn_capitals.items import CONTEXT_ALIASES, CONTEXTS, SPLITS, STYLES, Condition, Item, make_items, \
    read_facts_file, select_facts, toy_facts
from studies.ffn_capitals.report import report
from studies.ffn_capitals.summary import summarize

STUDY = "ffn_capitals"
# Options that decide a row (in the run's fingerprint, studies._identity.run_fingerprint): the
# conditions, facts and items, the o-vector sources, what a row keeps (top-k, propagated
# ablation), the fixed chunks rows are computed in, and how the models are loaded. The models
# enter by identity and --seed on its own; the others choose where and how fast a run goes.
ROW_OPTIONS = ("prompting", "context", "chat_template", "facts", "split", "limit", "source_items", "batch_size",
               "top_k", "lens", "propagate_ablation", "dtype", "device", "device_map", "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv",)  # written besides results, meta and figures (top_tokens.md: make_figures)


# -- figures --------------------------------------------------------------------------------------
def make_figures(summary, rows: list[dict], out: Path) -> list[Path]:
    """All figures of the study into ``out`` (PNG + PDF) and ``top_tokens.md``."""
    from figures.first_top1 import plot_first_top1
    from figures.rank_by_layer import plot_contribution_by_layer, plot_rank_by_layer
    from figures.top_tokens_table import write_top_tokens_table
    from figures.transplant import plot_transplant

    order = {name: i for i, name in enumerate(STYLES + CONTEXTS)}  # rows: context x template; columns: style
    summary = summary.sort_values(["context", "chat_template", "style", "model", "layer"],
                                  key=lambda col: col.map(order) if col.name in ("style", "context") else col)
    lens = lens_label(summary.get("lens", ["logit"]))  # what decoded the blocks
    paths = []
    paths += plot_rank_by_layer(summary, out / "answer_rank_by_layer", value_col="answer_rank_mean",
                                ylabel="mean rank of the answer + 1 (log; 1 = top-1)", log=True,
                                title=f"answer rank by block ({lens})")
    paths += plot_rank_by_layer(summary, out / "answer_prob_by_layer", value_col="answer_prob_mean",
                                ylabel="mean probability of the answer", title=f"answer probability by block ({lens})")
    paths += plot_first_top1(summary, out / "first_top1_layer", title=f"first block with the token top-1 ({lens})")
    paths += plot_transplant(summary, out / "transplant_by_layer", targets=list(TRANSPLANT_TARGETS))
    paths += plot_contribution_by_layer(summary, out / "sublayer_contribution")
    paths.append(write_top_tokens_table(rows, out / "top_tokens.md", lens=lens))
    return paths


# -- CLI ------------------------------------------------------------------------------------------
def _csv_choice(valid: Sequence[str], aliases: dict | None = None):
    def parse(text: str) -> tuple[str, ...]:
        out: list[str] = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            expanded = (aliases or {}).get(part, (part,))
            for v in expanded:
                if v not in valid:
                    choices = list(valid) + list(aliases or {})
                    raise argparse.ArgumentTypeError(f"invalid choice {part!r}; choose from {', '.join(choices)}")
                if v not in out:
                    out.append(v)
        if not out:
            raise argparse.ArgumentTypeError("give at least one value")
        return tuple(out)

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    import studies.ffn_capitals as package
    from studies._chat import on_off

    p = argparse.ArgumentParser(prog="python -m studies.ffn_capitals", description=package.__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_options(p)
    p.add_argument("--prompting", type=_csv_choice(STYLES), default=STYLES, help="zero,one,few (default all)")
    p.add_argument("--context", type=_csv_choice(CONTEXTS, CONTEXT_ALIASES), default=("plain", "harmful", "benign"),
                   help="plain,forbidden (forbidden = harmful and benign cues; default both)")
    p.add_argument("--chat-template", type=on_off, default=(False, True),
                   help="off,on: raw text and/or the chat model's chat template (default both)")
    p.add_argument("--facts", help="CSV/JSONL of facts (subject,answer[,split,id]) instead of the toy world")
    p.add_argument("--split", choices=SPLITS, default="test", help="which facts are items (default held-out test)")
    p.add_argument("--limit", type=int, help="at most N items")
    p.add_argument("--source-items", type=int, default=8, help="source prompts averaged into the o-vector (1 = single)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("-k", "--top-k", type=int, default=5, help="top tokens kept per layer")
    add_lens_option(p)
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds torch/numpy/random; != 0 also redraws demonstrations")
    p.add_argument("--propagate-ablation", action="store_true",
                   help="also zero each block's FFN update and read the output (one more forward of L x batch)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.source_items < 1:
        p.error("--source-items must be >= 1")
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


def _template_tokenizer(pair):
    """The chat member's tokenizer (its chat template renders prompts for both models)."""
    import transformers

    from interp import LoadError

    pair.check()  # a member folder without a model: say so, not what its tokenizer lacks
    source = pair.spec.source("chat")
    if source.startswith((".", "/", "~")) and not os.path.exists(source):
        raise LoadError(f"no model folder at {source!r}")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise LoadError(f"could not load the tokenizer of {source!r} to render its chat template "
                        f"({type(err).__name__}: {err}); use --chat-template off, or check the path / hub id") from None
    if not getattr(tok, "chat_template", None):
        raise LoadError(f"the tokenizer of {source!r} has no chat template; use --chat-template off")
    return tok


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import StudyError, progress, run_dir, seed_everything
    from studies._identity import finish_run, open_run, report_shard, row_options, run_fingerprint, write_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import chunked, load_members, parse_shard, pending_by_member, results_name

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    lens = resolve_lens_option(args.lens, pair)  # before loading any data: a bad --lens fails fast
    out = run_dir(STUDY, pair, args.out)
    timings: dict[str, float] = {}
    facts = read_facts_file(args.facts) if args.facts else toy_facts()
    items, sources = select_facts(facts, args.split, args.limit, args.source_items)
    pool = [f for f in facts if f.split == "train" and " " not in f.answer] or facts
    conditions = [Condition(s, c, t) for t in args.chat_template for c in args.context for s in args.prompting]
    template_tok = _template_tokenizer(pair) if any(c.chat_template for c in conditions) else None
    per_condition = make_items(conditions, items, sources, pool, template_tok, args.seed)
    fingerprint = run_fingerprint(STUDY, pair, {**row_options(args, ROW_OPTIONS), "lens": lens.fingerprint}, args.seed,
                                  per_condition)
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    if not args.summary_only:
        log = ResultsLog(out / results_name(shard), KEY_FIELDS)
        # the whole work list: every condition's fixed chunks, condition by condition
        chunks = [chunk for its, _ in per_condition.values() for chunk in chunked(its, args.batch_size)]

        def key_of(member):
            return lambda it: (member, it.condition.style, it.condition.context, it.condition.chat_template, it.fact.id)

        todo = pending_by_member(chunks, key_of, log, shard)
        for member, lm in load_members(pair, [m for m, left in todo.items() if left]):
            t0 = time.perf_counter()
            vectors, decoder = {}, lens.load(member, lm)
            for _, chunk in progress(todo[member], desc=f"{STUDY} {member}", total=len(todo[member])):
                cond = chunk[0].condition
                with torch.no_grad():
                    if cond not in vectors:
                        vectors[cond] = source_vectors(lm, per_condition[cond][1])
                    rows = analyse_chunk(lm, chunk, vectors[cond], member, k=args.top_k,
                                         propagate=args.propagate_ablation, lens=decoder,
                                         lens_fields=lens.row_fields(member))
                log.write(rows)
            timings[f"{member}_s"] = round(time.perf_counter() - t0, 2)
        finish_run(out, shard, timings=timings, n_written=log.n_written)
        if not shard.is_whole:
            report_shard(out, shard, log, log.n_written)
            return 0
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl)")
    summary = summarize(rows)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    figures = []
    if not args.no_figures:
        t0 = time.perf_counter()
        figures = make_figures(summary, rows, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    text = report(rows, pair.name)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    extra = {"pair": asdict(pair.spec), "n_rows": len(rows), "key_fields": list(KEY_FIELDS),
             "transplant_targets": TRANSPLANT_TARGETS, "fingerprint": fingerprint, "lens": lens.fingerprint,
             "lens_folders": {m: str(f) for m, f in lens.folders.items()},
             "models": {m: pair.spec.source(m) for m in interp.registry.MEMBERS}, "n_items": len(items),
             "items": [f.id for f in items], "transplant_sources": [f.id for f in sources],
             "conditions": [c.label for c in conditions], "load_options": load_kwargs(args),
             "outputs": [*TABLES, *(Path(f).name for f in figures)]}
    write_meta(out, study=STUDY, options=options, seed=args.seed, timings=timings, **extra)
    print(text)
    print(f"\nwrote {out}/ (results*.jsonl, summary.csv, meta.json{'' if args.no_figures else ', figures, top_tokens.md'}) "
          f"in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing weights, no traceback)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)
