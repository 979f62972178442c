"""Reward scoring throughput: length-sorted batches vs one pair at a time (``probes.reward``).

(prompt, response) pairs of mixed lengths, log-uniform so that most are short and a few long
(``toy``: prompts 4-24 words, responses 1-12, the toy world's; ``short``: prompts 4-64,
responses 2-48; ``long``: prompts 8-300, responses 4-200, about hh-rlhf's), scored by a DeBERTa-v3-base-shaped random
reward model (``DebertaV2ForSequenceClassification``: 12 layers, d_model 768, 12 heads, FFN
3072, relative attention with 256 position buckets, vocab 128100; the shape of
``microsoft/deberta-v3-base``) in pair format. Three ways: one pair at a time; batches in
input order (padding to each batch's longest); length-sorted batches (``ModelScorer.score``,
what every study uses). Scores must agree to 1e-5. One thread; times are the process's CPU
time (the development machine is shared).

What batching buys on a CPU: DeBERTa projects its 512 relative-position embeddings through
each layer's query and key projections on every call (2 x [512, 768] x [768, 768] per layer,
as much compute as ~40 tokens of content), whatever the batch holds; a batch pays it once.
The content's compute scales with its tokens and a CPU does not run it much faster in a
batch, so the ratio over one at a time falls as pairs get longer (on a GPU it would not).

    python -m bench.reward_scoring [--quick] [--pairs N] [--lengths short|long]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

import interp  # noqa: E402
from bench.common import LARGE_MMAP, mmap_threshold, row  # noqa: E402
from probes.reward import ModelScorer, scorer_from_model  # noqa: E402

NAME = "reward_scoring"
N_WORDS = 2000
BATCH = 16
# microsoft/deberta-v3-base's config (the body of OpenAssistant's reward models, at base size).
DEBERTA_V3_BASE = dict(
    vocab_size=128100, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", max_position_embeddings=512, type_vocab_size=0, relative_attention=True, max_relative_positions=-1,
    position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
    position_biased_input=False, layer_norm_eps=1e-7, pad_token_id=0, num_labels=1)


def word_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Words ``w0 .. w1999`` with DeBERTa's pair template ``[CLS] A [SEP] B [SEP]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    vocab = {w: i for i, w in enumerate(specials + [f"w{i}" for i in range(N_WORDS)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]",
                                                sep_token="[SEP]", unk_token="[UNK]")


# (prompt, response) word ranges: the toy world's requests and answers; short chat turns; about hh-rlhf's.
LENGTHS = {"toy": ((4, 24), (1, 12)), "short": ((4, 64), (2, 48)), "long": ((8, 300), (4, 200))}


def make_pairs(n: int, lengths: str = "short", seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` pairs of random words, log-uniform lengths in the ranges of ``LENGTHS[lengths]``."""
    rng = np.random.default_rng(seed)
    (p_lo, p_hi), (r_lo, r_hi) = LENGTHS[lengths]

    def text(lo: int, hi: int) -> str:
        k = int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        return " ".join(f"w{i}" for i in rng.integers(0, N_WORDS, k))

    return [text(p_lo, p_hi) for _ in range(n)], [text(r_lo, r_hi) for _ in range(n)]


def deberta_scorer(quick: bool) -> tuple[ModelScorer, str]:
    torch.manual_seed(0)
    shape = dict(DEBERTA_V3_BASE)
    if quick:
        shape.update(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024)
    model = transformers.DebertaV2ForSequenceClassification(transformers.DebertaV2Config(**shape)).eval()
    with torch.no_grad():  # a classifier head large enough that pairs' scores differ
        model.classifier.weight.normal_(std=0.5)
    setting = "DeBERTa-v3-base shape (12x768)" if not quick else "DeBERTa 4x256"
    return scorer_from_model(interp.reward.wrap(model, word_tokenizer()), name="random-deberta"), setting


def input_order(scorer: ModelScorer, prompts, responses, batch_size: int) -> np.ndarray:
    """Batches in input order: the same forward passes as ``score``, without the length sort."""
    out = []
    for s in range(0, len(prompts), batch_size):
        out.append(scorer._batch(list(zip(prompts[s:s + batch_size], responses[s:s + batch_size])), [None])[None])
    return np.concatenate(out)


def _interleaved(methods: dict, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """CPU seconds per call and each method's first result; each round runs every method once,
    in turn. CPU time of this one-thread process, not wall time: the machine is shared, and
    other processes' load would otherwise decide the ratios. No warm-up round: one call scores
    hundreds of pairs."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    results = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.process_time()
            results.setdefault(name, fn())
            times[name].append(time.process_time() - start)
    return times, results


def run_mix(scorer: ModelScorer, setting: str, n: int, lengths: str) -> dict:
    """One length mix: pairs/s of each method, the ratios, the max |score difference| over one at a time."""
    prompts, responses = make_pairs(n, lengths)
    tokens = [len(scorer.rm.tokenizer(p, r)["input_ids"]) for p, r in zip(prompts, responses)]
    setting += (f", {n} {lengths} pairs of {min(tokens)}-{max(tokens)} tokens (mean {statistics.mean(tokens):.0f}, "
                f"median {statistics.median(tokens):.0f})")
    one, ordered, ours = ("one pair at a time", f"batches of {BATCH}, input order",
                          f"ours: length-sorted batches of {BATCH}")
    methods = {
        one: lambda: scorer.score(prompts, responses, batch_size=1).scores,
        ordered: lambda: input_order(scorer, prompts, responses, BATCH),
        ours: lambda: scorer.score(prompts, responses, batch_size=BATCH).scores,
    }
    times, results = _interleaved(methods, 1 if n >= 128 else 2)
    diff = max(float(np.abs(results[name] - results[one]).max()) for name in methods)
    spread = float(np.ptp(results[one]))
    medians = {name: statistics.median(t) for name, t in times.items()}
    per_s = {name: n / m for name, m in medians.items()}
    rows = [row(NAME, setting, name, times[name], (one, medians[one]),
                note=f"{per_s[name]:.1f} pairs/s (CPU time); max |diff| {diff:.1e}") for name in methods]
    return {"setting": setting, "pairs_per_s": per_s, "speedup": medians[one] / medians[ours],
            "speedup_over_input_order": medians[ordered] / medians[ours], "max_abs_diff": diff,
            "score_spread": spread, "rows": rows}


def run(quick: bool, n_pairs: int | None = None, mixes: tuple[str, ...] | None = None) -> dict:
    """Every mix (default: ``toy`` and ``short``; ``toy`` only with ``quick``, on a small model).

    Returns ``{"mixes": {mix: run_mix(...)}, "rows": [...]}``.
    """
    mmap_threshold(LARGE_MMAP)
    torch.set_num_threads(1)
    scorer, setting = deberta_scorer(quick)
    n = n_pairs or (32 if quick else 256)
    mixes = mixes or (("toy",) if quick else ("toy", "short"))
    out = {mix: run_mix(scorer, setting, n, mix) for mix in mixes}
    return {"mixes": out, "rows": [r for result in out.values() for r in result["rows"]]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reward_scoring", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small model, 32 pairs (CI smoke)")
    p.add_argument("--pairs", type=int, default=None, help="number of pairs (default 256; 32 with --quick)")
    p.add_argument("--lengths", choices=list(LENGTHS), nargs="+", default=None,
                   help="pair length mixes (default: toy short)")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    args = p.parse_args(argv)
    result = run(args.quick, args.pairs, tuple(args.lengths) if args.lengths else None)["mixes"]
    if args.json:
        print(json.dumps({m: {k: v for k, v in r.items() if k != "rows"} for m, r in result.items()}, indent=2))
        return 0
    for r in result.values():
        print(r["setting"])
        for name, value in r["pairs_per_s"].items():
            print(f"  {name:40s} {value:8.2f} pairs/s (CPU time)")
        print(f"  ratio (length-sorted batches / one at a time): {r['speedup']:.2f}x")
        print(f"  ratio (length-sorted / input-order batches):   {r['speedup_over_input_order']:.2f}x")
        print(f"  max |score difference|: {r['max_abs_diff']:.2e} (scores spread over {r['score_spread']:.2f})")
    return 0 if all(r["max_abs_diff"] <= 1e-5 for r in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
