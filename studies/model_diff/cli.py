"""The command line: arguments, the parts in order, the shared results log, summary and meta."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from studies._common import add_model_options, add_pair_options, add_run_options, load_kwargs
from studies._lens import add_lens_option, resolve_lens_option
from studies.model_diff import activations, adl, amplify, token_shift, weights
from studies.model_diff.parts import KEY_FIELDS, Context, Part

STUDY = "model_diff"
# The parts, run in this order. A new part is a module with a ``PART`` (studies.model_diff.parts.Part)
# appended here; its rows share results.jsonl (key fields part, key).
PARTS: list[Part] = [weights.PART, activations.PART, token_shift.PART, adl.PART, amplify.PART]
# --parts without a value: the parts not opt-in (amplify holds both models in memory)
DEFAULT_PARTS = tuple(p.name for p in PARTS if not p.opt_in)
# Options of the whole study deciding rows; each part adds its own (Part.row_options). --parts
# does not: a part's rows do not depend on which other parts ran, so parts may run separately
# into one folder.
# The lens enters as its fingerprint (kind and file hashes), not as the option's text.
ROW_OPTIONS = ("dtype", "device", "device_map", "quantization")
SUMMARY_COLUMNS = ("part", "group", "layer", "metric", "value")


def _parts(text: str) -> tuple[str, ...]:
    names = [p.name for p in PARTS]
    chosen = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if "all" in chosen:
        chosen = tuple(names)
    bad = [p for p in chosen if p not in names]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"invalid part {bad[0] if bad else text!r}; choose from {', '.join(names)} or all")
    return tuple(n for n in names if n in chosen)  # always in PARTS order


# options whose value is a comma-separated list of numbers that may start with a minus sign
NUMBER_LIST_OPTIONS = ("--amp-alphas", "--adl-scales")


def _attach_negative_lists(argv: Sequence[str]) -> list[str]:
    """``--amp-alphas -1,0,4`` as ``--amp-alphas=-1,0,4``: argparse takes a value starting with
    ``-`` for another option (it only knows single negative numbers) and fails with
    "expected one argument"."""
    out, argv = [], list(argv)
    for i, arg in enumerate(argv):
        if out and out[-1] in NUMBER_LIST_OPTIONS and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    import sys

    import studies.model_diff as package

    argv = _attach_negative_lists(sys.argv[1:] if argv is None else argv)

    p = argparse.ArgumentParser(prog="python -m studies.model_diff", description=package.__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_options(p)
    p.add_argument("--parts", type=_parts, default=DEFAULT_PARTS,
                   help=f"comma-separated parts to run, in this order: {','.join(p.name for p in PARTS)}, or all "
                        f"(default {','.join(DEFAULT_PARTS)}; opt-in: "
                        f"{','.join(p.name for p in PARTS if p.opt_in)}, which holds both models in memory)")
    add_lens_option(p)
    for part in PARTS:
        part.add_options(p)
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the corpus and prompt samples")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    return p.parse_args(argv)


def _write_summary(rows_by_part: dict[str, list[dict]], out: Path) -> Path:
    import pandas as pd

    found = [r for part in PARTS if rows_by_part.get(part.name) for r in part.summary(rows_by_part[part.name])]
    table = pd.DataFrame(found, columns=list(SUMMARY_COLUMNS), dtype=object)
    table["layer"] = table["layer"].astype("Int64")
    # counts stay integers, other values 6 significant digits (as the other tables), NaN empty
    table["value"] = [str(v) if isinstance(v, int) else "" if v != v else f"{v:.6g}" for v in table["value"]]
    table.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    return out / "summary.csv"


def _report(summary_path: Path) -> str:
    import pandas as pd

    s = pd.read_csv(summary_path)
    lines = []
    w = s[s["part"] == weights.NAME]
    if not w.empty:
        get = lambda g, m: w[(w["group"] == g) & (w["metric"] == m)]["value"].iloc[0]  # noqa: E731
        lines.append(f"weights: {int(get('all', 'n_changed')):,} of {int(get('all', 'n_params')):,} parameters changed "
                     f"(|chat - base| > --tol), {int(get('all', 'n_differ_bf16')):,} "
                     f"({get('all', 'frac_differ_bf16'):.2%}) still differ after rounding both to bf16")
        mods = w[(w["metric"] == "rel_change_mean") & (w["group"] != "all")].sort_values("value", ascending=False)
        lines.append("  largest mean relative change: " + ", ".join(f"{g} {v:.3f}" for g, v in zip(mods["group"][:4], mods["value"][:4])))
    a = s[(s["part"] == activations.NAME) & (s["metric"].isin(["rel_diff_max", "kl_base_chat"]))]
    for corpus, g in a.groupby("group", sort=False):
        peak = g[g["metric"] == "rel_diff_max"].iloc[0]
        kl = g[g["metric"] == "kl_base_chat"].iloc[0]
        lines.append(f"activations {corpus}: largest rel diff {peak['value']:.3f} at block {int(peak['layer'])}; "
                     f"KL(base||chat) at block {int(kl['layer'])} {kl['value']:.4f}")
    t = s[s["part"] == token_shift.NAME]
    for group, g in t.groupby("group", sort=False):
        get = dict(zip(g["metric"], g["value"]))
        lines.append(f"token shift {group}: {get['frac_shifted']:.1%} shifted, {get['frac_marginal']:.1%} marginal "
                     f"of {int(get['n'])} answer positions; mean KL(chat||base) {get['mean_kl']:.3f}")
    r = s[(s["part"] == adl.NAME) & (s["metric"] == "target_median_rank")]
    for group, g in r.groupby("group", sort=False):
        last = g.sort_values("layer").iloc[-1]
        lines.append(f"adl through {group}: target tokens' median rank {last['value']:g} at block {int(last['layer'])}")
    m = s[(s["part"] == amplify.NAME) & (s["metric"] == "refusal_rate")]
    if not m.empty:
        lines.append("amplify refusal rate: " + ", ".join(f"{g} {v:.2f}" for g, v in zip(m["group"], m["value"])))
    return "\n".join(lines)


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import StudyError, run_dir, seed_everything
    from studies._identity import finish_run, open_run, report_shard, row_options, run_fingerprint, write_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import parse_shard, results_name

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    unsharded = [p.name for p in PARTS if p.name in args.parts and not p.shards]
    if not shard.is_whole and unsharded:
        sharded = ", ".join(p.name for p in PARTS if p.shards)
        raise StudyError(f"--shard: of model_diff's parts only {sharded} shards (by blocks of --shift-block "
                         f"prompts), not {', '.join(unsharded)} (weights, activations and adl reduce over all "
                         "tensors or texts in one pass per model: norms, CKA and means that shards could not merge; "
                         f"amplify is one small pass holding both models): run --parts {sharded} --shard i/n, and "
                         "the other parts whole into the same --out")
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    pair.check()
    lens = resolve_lens_option(args.lens, pair)
    out = run_dir(STUDY, pair, args.out)
    names = [n for part in PARTS for n in part.row_options]
    options = {**row_options(args, [*ROW_OPTIONS, *names]), "lens": lens.fingerprint}
    work = {part.name: part.work(args) for part in PARTS}
    fingerprint = run_fingerprint(STUDY, pair, options, args.seed, work)
    outputs = ["summary.csv", *(name for p in PARTS for name in p.outputs)]
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=outputs)
    if args.overwrite:  # open_run deleted the files; the parts' caches go too
        import shutil

        for folder in (out / name for part in PARTS for name in part.folders):
            if folder.is_dir():
                shutil.rmtree(folder)
    ctx = Context(args, pair, out, None, lens, shard=shard)
    if not args.summary_only:
        ctx.log = ResultsLog(out / results_name(shard), KEY_FIELDS)
        for part in PARTS:
            if part.name in args.parts:
                part.run(ctx)
        finish_run(out, shard, timings=ctx.timings, n_written=ctx.log.n_written)
        if not shard.is_whole:
            report_shard(out, shard, ctx.log, ctx.log.n_written)
            return 0
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl)")
    by_part: dict[str, list[dict]] = {}
    for r in rows:
        by_part.setdefault(r["part"], []).append(r)
    written = [p for part in PARTS if by_part.get(part.name) for p in part.tables(by_part[part.name], out)]
    written.append(_write_summary(by_part, out))
    if not args.no_figures:
        t0 = time.perf_counter()
        written += [p for part in PARTS if by_part.get(part.name) for p in part.figures(by_part[part.name], out)]
        ctx.timings["figures_s"] = round(time.perf_counter() - t0, 2)
    ctx.timings["total_s"] = round(time.perf_counter() - started, 2)
    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    extra = {"pair": asdict(pair.spec), "n_rows": len(rows), "key_fields": list(KEY_FIELDS),
             "rows_by_part": {k: len(v) for k, v in by_part.items()}, "fingerprint": fingerprint,
             "lens": lens.fingerprint, "models": {m: pair.spec.source(m) for m in interp.registry.MEMBERS},
             "load_options": load_kwargs(args), "outputs": [Path(p).name for p in written]}
    write_meta(out, study=STUDY, options=opts, seed=args.seed, timings=ctx.timings, **extra)
    print(_report(out / "summary.csv"))
    print(f"\nwrote {out}/ ({', '.join(Path(p).name for p in written if Path(p).suffix != '.pdf')}, meta.json) "
          f"in {ctx.timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing weights, no traceback)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)
