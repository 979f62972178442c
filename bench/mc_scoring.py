"""Multiple-choice scoring throughput: shared-context KV reuse vs naive per-option batching.

Items have 4 options of 1-5 tokens after a ~400-token context (a 5-shot prompt's length).
The naive way runs each ``context + option`` as its own sequence (an item's options batched
together, as lm-evaluation-harness does); KV reuse runs the context once, with every option
packed after it in the same row under a mask that keeps options apart (``probes.shared_context``,
``interp.packed``): the context's keys and values are computed once and never copied per
option. Both restrict the unembedding to the positions that predict option tokens.
GPT-2-small-shaped random model, 1 thread.

    python -m bench.mc_scoring [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import interp  # noqa: E402
from bench.common import LARGE_MMAP, VOCAB, gpt2_model, mmap_threshold, row  # noqa: E402
from probes.logprobs import naive_pair_logprobs  # noqa: E402
from probes.shared_context import shared_context_logprobs  # noqa: E402

NAME = "mc_scoring"
N_OPTIONS = 4


def make_items(n_items: int, context_len: int, seed: int = 0) -> list[tuple[list[int], list[list[int]]]]:
    """Random token items: a context of ``context_len +- 5%`` tokens and 4 options of 1-5 tokens."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n_items):
        n_ctx = context_len + int(torch.randint(-context_len // 20, context_len // 20 + 1, (1,), generator=g))
        ctx = torch.randint(0, VOCAB, (n_ctx,), generator=g).tolist()
        opts = [torch.randint(0, VOCAB, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist()
                for _ in range(N_OPTIONS)]
        items.append((ctx, opts))
    return items


def _interleaved(methods: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call; each round runs every method once, in turn (shared-machine noise)."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            with torch.no_grad():
                fn()
            times[name].append(time.perf_counter() - start)
    return times


def run(quick: bool) -> dict:
    """Items/s of both methods, their ratio, and the max |difference| of option log-probs.

    Returns ``{"items_per_s": {method: ...}, "speedup", "max_abs_diff", "setting", "rows"}``;
    ``rows`` are ``bench.common.row`` dicts (seconds per batch of items) for the bench table.
    """
    mmap_threshold(LARGE_MMAP)
    torch.set_num_threads(1)
    if quick:
        model, n_items, context_len, repeats, setting = gpt2_model(4, 256, 4), 4, 200, 1, "GPT-2 4x256, 4 items, ~200-token context"
    else:
        model, n_items, context_len, repeats, setting = gpt2_model(12, 768, 12), 8, 400, 2, "GPT-2 small, 8 items, ~400-token context"
    lm = interp.LM.from_hf(model)
    items = make_items(n_items, context_len)
    pairs = [(ctx, opt) for ctx, opts in items for opt in opts]
    final = [None]
    methods = {
        "naive: each option its own sequence": lambda: naive_pair_logprobs(lm, pairs, final, batch_size=N_OPTIONS),
        "ours: shared-context KV reuse": lambda: shared_context_logprobs(lm, items, final, batch_size=1),
    }
    with torch.no_grad():
        naive = [lp for lp, _ in methods["naive: each option its own sequence"]()]
        kv = [lp for opts in methods["ours: shared-context KV reuse"]() for lp, _ in opts]
    diff = max(float((a - b).abs().max()) for a, b in zip(naive, kv))
    times = _interleaved(methods, repeats)
    medians = {name: statistics.median(t) for name, t in times.items()}
    naive_name = "naive: each option its own sequence"
    base = medians[naive_name]
    per_s = {name: n_items / m for name, m in medians.items()}
    speedup = base / medians["ours: shared-context KV reuse"]
    rows = [row(NAME, setting, name, times[name], (naive_name, base),
                note=f"{per_s[name]:.2f} items/s; max |diff| {diff:.1e}")
            for name in methods]
    return {"setting": setting, "items_per_s": per_s, "speedup": speedup, "max_abs_diff": diff, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mc_scoring", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small model, few items (CI smoke, < 30 s)")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = p.parse_args(argv)
    result = run(args.quick)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
        return 0
    print(result["setting"])
    for name, value in result["items_per_s"].items():
        print(f"  {name:40s} {value:8.2f} items/s")
    print(f"  speedup (KV reuse / naive): {result['speedup']:.2f}x")
    print(f"  max |log-prob difference|:  {result['max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
