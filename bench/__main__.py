"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks in one process, print a
table of time ratios and peak-memory increases, write ``bench/results.json``.

One thread, ``OMP_WAIT_POLICY=PASSIVE`` (set in ``bench/__init__.py`` before torch loads).
``--quick`` runs fewer repeats (a CI smoke run, under two minutes on an idle machine).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import transformers

# Benchmark name -> module in this package; each has ``run(quick)`` returning table rows (a
# list, or a dict with a "rows" list), imported only when it runs.
BENCHMARKS = {"capture": "capture", "patching": "patching", "lens": "lens", "mc_scoring": "mc_scoring",
              "reward_scoring": "reward_scoring", "harvest": "harvest", "dictionary_training": "dictionary_training",
              "nnsight_backend": "nnsight_backend"}
RESULTS = Path(__file__).with_name("results.json")


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "python": sys.version.split()[0],
            "load_average_1_5_15_at_start": list(os.getloadavg())}


def table(rows: list[dict]) -> str:
    head = ["benchmark", "setting", "method", "median ms", "ratio", "vs", "peak MiB", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["benchmark"], r["setting"], r["method"],
                 f"{r['median_s'] * 1e3:.1f}" if r["median_s"] is not None else "n/a",
                 f"{r['ratio']:.2f}x" if r["ratio"] is not None else "",
                 r["baseline"] or "", f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "", r["note"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    info = {
        "machine": machine(),
        "versions": {p: _version(p) for p in ("torch", "transformers", "transformer-lens", "nnsight", "rlinterp")},
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "quick": args.quick,
        "statistic": "median of the repeats; rounds interleave the methods; peak = median increase of peak RSS over RSS before the call",
    }
    rows, started = [], time.perf_counter()
    for name in args.only or list(BENCHMARKS):
        t0 = time.perf_counter()
        result = importlib.import_module(f"bench.{BENCHMARKS[name]}").run(args.quick)
        rows += result["rows"] if isinstance(result, dict) else result
        print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    info["machine"]["load_average_1_5_15_at_end"] = list(os.getloadavg())
    info["wall_s"] = time.perf_counter() - started
    info["rows"] = rows
    info["table"] = table(rows)
    args.out.write_text(json.dumps(info, indent=2) + "\n")
    print(info["table"])
    print(f"\nwrote {args.out} ({info['wall_s']:.0f} s; load average {info['machine']['load_average_1_5_15_at_end'][0]:.1f})")


if __name__ == "__main__":
    main()
