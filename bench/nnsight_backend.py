"""(6) The nnsight backend's overhead (``interp.load(..., backend="nnsight")``, run locally)
against the torch backend on the same weights: a capture (``resid_post`` + ``mlp_out`` at all
12 layers of a GPT-2-small-shaped random model, full logits) and the activation-patching sweep
of ``bench.patching`` (``resid_pre``, 4 x 256 GPT-2 shape, 20 tokens, 2 of them differ).

Both backends compute the same numbers (the note gives the largest difference); the nnsight one
runs each forward as a trace, reading the same hook points through nnsight's envoys, so the
ratio is nnsight's cost per trace and per module read.
"""

from __future__ import annotations

import copy
import functools

import torch

import interp
from bench.capture import CAPTURE, QUICK_SHAPES, SHAPES
from bench.common import LARGE_MMAP, VOCAB, baseline, gpt2_model, interleaved, mmap_threshold, row
from bench.patching import A, B, SEQ, inputs
from interp.nnsight_backend import NNsightLM
from interp.patching import patch_sweep

NAME = "nnsight_backend"
TORCH, NNSIGHT = "torch backend", "nnsight backend (local)"


def _pair(model):
    """The two backends, each on its own copy of the weights (nnsight wraps its modules)."""
    return {TORCH: interp.LM.from_hf(model), NNSIGHT: NNsightLM(copy.deepcopy(model))}


def _rows(setting: str, fns: dict, repeats: int, warmup: int, differ) -> list[dict]:
    results: dict = {}
    times, _ = interleaved(fns, repeats, warmup=warmup, results=results, memory=False)
    diff = differ(results[TORCH], results[NNSIGHT])
    base = baseline(times, TORCH)
    return [row(NAME, setting, name, times[name], base, note=f"max |nnsight - torch| = {diff:.1e}" if name == NNSIGHT else "")
            for name in fns]


def run(quick: bool) -> list[dict]:
    mmap_threshold(LARGE_MMAP)
    rows = []
    lms = _pair(gpt2_model(12, 768, 12))
    for batch, seq in QUICK_SHAPES[:1] if quick else SHAPES:
        torch.manual_seed(1)
        ids = torch.randint(0, VOCAB, (batch, seq))
        fns = {name: functools.partial(lambda lm: lm.run(ids, capture=CAPTURE), lm) for name, lm in lms.items()}

        def differ(a, b):
            return max(float((a.cache[n] - b.cache[n]).abs().max()) for n in a.cache.keys())

        rows += _rows(f"capture, GPT-2 small, {batch} x {seq}", fns, 1 if quick else 5, 0 if quick else 1, differ)
    lms = _pair(gpt2_model(4, 256, 8))
    corrupted, clean = inputs((4, 11))

    def metric(logits):
        return logits[:, A].mean() - logits[:, B].mean()

    fns = {name: functools.partial(lambda lm: patch_sweep(lm, corrupted, clean, metric), lm) for name, lm in lms.items()}
    rows += _rows(f"patch_sweep resid_pre, 4 x 256 GPT-2 shape, {SEQ} tokens (2 differ)", fns,
                  1 if quick else 5, 0 if quick else 1, lambda a, b: float((a - b).abs().max()))
    return rows
