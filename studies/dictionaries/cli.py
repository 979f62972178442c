"""The command line: arguments, harvesting once, the parts, summary, tables, figures and meta."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from studies._common import add_model_options, add_pair_options, add_run_options, load_kwargs
from studies.dictionaries import crosscoder, mlsae

STUDY = "dictionaries"
KEY_FIELDS = ("part", "key")
# Options of the whole study that decide rows (each part adds its own).
ROW_OPTIONS = ("n_docs", "prompt_limit", "seq_len", "harvest_batch_size", "dtype", "device", "device_map",
               "quantization")
TABLES = ("latents.csv", "summary.csv", "crosscoder_dashboard.md", "crosscoder_dashboard.html")
FOLDERS = ("crosscoder", "mlsae")
PARTS = ("crosscoder", "mlsae")  # run in this order; --parts picks some (their rows do not depend on each other)


@dataclass
class Context:
    """What a part gets: ``args``, the ``pair``, the run folder ``out``, the results ``log``,
    the pair's ``tokenizer``, the crosscoder's layers and a ``timings`` dict."""

    args: object
    pair: object
    out: Path
    log: object
    tokenizer: object
    xc_layers: tuple[int, ...]
    timings: dict = field(default_factory=dict)
    show_progress: bool = False


def _parts(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    bad = [v for v in chosen if v not in PARTS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"invalid part {bad[0] if bad else text!r}; choose from {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in chosen)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    import studies.dictionaries as package

    p = argparse.ArgumentParser(prog="python -m studies.dictionaries", description=package.__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_options(p)
    p.add_argument("--n-docs", type=int, default=1500, help="toy-world corpus documents harvested (default 1500)")
    p.add_argument("--prompt-limit", type=int, default=96,
                   help="harvested chat prompts per kind (plain, benign, harmful, harmful + refusal; default 96)")
    p.add_argument("--seq-len", type=int, default=128, help="harvest window length (default 128)")
    p.add_argument("--harvest-batch-size", type=int, default=8, help="harvest windows per forward (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per forward in the causal check (default 16)")
    p.add_argument("--parts", type=_parts, default=PARTS,
                   help=f"comma-separated parts to run: {','.join(PARTS)} (default both)")
    crosscoder.add_options(p)
    mlsae.add_options(p)
    add_run_options(p)
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="seeds the corpus, the prompt samples and training")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    if min(args.n_docs, args.prompt_limit, args.causal_limit, args.contexts) < 0 or args.n_docs + args.prompt_limit == 0:
        p.error("--n-docs, --prompt-limit, --causal-limit and --contexts must be >= 0, and some text must be harvested")
    if min(args.xc_dict_size, args.xc_k, args.xc_steps, args.xc_batch_size, args.batch_size) < 1:
        p.error("--xc-dict-size, --xc-k, --xc-steps, --xc-batch-size and --batch-size must be >= 1")
    return args


def _write_summary(rows: list[dict], out: Path) -> Path:
    import pandas as pd

    table = pd.DataFrame(crosscoder.summary(rows) + mlsae.summary(rows), columns=["part", "group", "metric", "value"], dtype=object)
    table["value"] = [str(v) if isinstance(v, int) else "" if v is None or v != v else f"{v:.6g}" for v in table["value"]]
    table.to_csv(out / "summary.csv", index=False)
    return out / "summary.csv"


def run_study(args) -> int:
    import torch

    import interp
    from interp.dictionaries.harvest import harvest_pair
    from studies._common import StudyError, run_dir, seed_everything
    from studies._identity import finish_run, open_run, row_options, run_fingerprint, write_study_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import parse_shard, results_name
    from studies.dictionaries.data import causal_prompts, study_texts

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    if not shard.is_whole:
        raise StudyError("dictionaries does not shard (--shard): a dictionary trains on the whole harvest; run it whole")
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    pair.check()
    out = run_dir(STUDY, pair, args.out)
    texts = study_texts(args.n_docs, args.prompt_limit, args.seed)
    work = {"texts": texts.texts, "kinds": texts.kinds,
            "causal": causal_prompts(args.prompt_limit, args.causal_limit, args.seed)}
    options = row_options(args, [*ROW_OPTIONS, *crosscoder.ROW_OPTIONS, *mlsae.ROW_OPTIONS])
    fingerprint = run_fingerprint(STUDY, pair, options, args.seed, work)
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    if args.overwrite:
        import shutil

        for folder in (out / name for name in FOLDERS):
            if folder.is_dir():
                shutil.rmtree(folder)
    timings: dict[str, float] = {}
    if not args.summary_only:
        log = ResultsLog(out / results_name(shard), KEY_FIELDS)
        lm = pair.load("base")  # (the toy pair loads in a second; its size and tokenizer decide what follows)
        n_layers, tokenizer = lm.n_layers, lm.tokenizer
        del lm
        xc_layers = crosscoder.layers_of(args, n_layers)
        todo = [p for p in args.parts if not log.done((p, "train"))]
        acts = None
        if todo:  # one harvest serves both parts: every block for the MLSAE, else the crosscoder's
            t0 = time.perf_counter()
            layers = list(range(n_layers)) if "mlsae" in todo else sorted(set(xc_layers))
            acts = harvest_pair(pair, texts.texts, layers, seq_len=args.seq_len, batch_size=args.harvest_batch_size,
                                progress=sys.stderr.isatty())
            timings["harvest_s"] = round(time.perf_counter() - t0, 2)
        ctx = Context(args, pair, out, log, tokenizer, xc_layers, timings, show_progress=sys.stderr.isatty())
        if "crosscoder" in todo:
            crosscoder.run(ctx, acts, texts)
        if "mlsae" in todo:
            mlsae.run(ctx, acts, texts)
        del acts
        latent_rows = [r for r in read_results(out, KEY_FIELDS) if r["part"] == crosscoder.PART
                       and r["key"].startswith("latent:")]
        if "crosscoder" in args.parts:
            crosscoder.run_causal(ctx, latent_rows)
        finish_run(out, shard, timings=timings, n_written=log.n_written)
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl); run without --summary-only first")
    import pandas as pd

    have = {r["part"] for r in rows}
    tables = [t for t in (crosscoder.latents_table(rows) if "crosscoder" in have else None,
                          mlsae.latents_table(rows)) if t is not None and not t.empty]
    pd.concat(tables, ignore_index=True).to_csv(out / "latents.csv", index=False, float_format="%.6g")
    written = [out / "latents.csv", _write_summary(rows, out)]
    if "crosscoder" in have:
        written += crosscoder.dashboards(rows, out)
    if not args.no_figures:
        t0 = time.perf_counter()
        written += (crosscoder.figures(rows, out) if "crosscoder" in have else []) + mlsae.figures(rows, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    write_study_meta(out, args, pair, study=STUDY, timings=timings, n_rows=len(rows), key_fields=list(KEY_FIELDS),
                     fingerprint=fingerprint, outputs=[Path(p).name for p in written])
    print("\n".join(crosscoder.report(rows) + mlsae.report(rows)))
    print(f"\nwrote {out}/ ({', '.join(Path(p).name for p in written if Path(p).suffix != '.pdf')}, meta.json) "
          f"in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing weights, no traceback)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)
