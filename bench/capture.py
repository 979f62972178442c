"""(1) Capture overhead: ``resid_post`` + ``mlp_out`` at all 12 layers of a GPT-2-small-shaped
random model, against a bare HF forward, TransformerLens 4.x ``TransformerBridge``
``run_with_cache`` (names filter) and an nnsight trace ``.save()``-ing the same tensors.
Every method runs without the HF KV cache (``use_cache=False``) and returns full logits.
"""

from __future__ import annotations

import copy
import functools

import torch

import interp
from bench.common import SMALL_MMAP, VOCAB, baseline, bridge_of, gpt2_model, interleaved, mmap_threshold, row

NAME = "capture"
SHAPES = [(1, 16), (8, 128)]
QUICK_SHAPES = [(1, 16), (2, 128)]  # --quick: a smaller second shape, for a CI smoke run
CAPTURE = ["resid_post", "mlp_out"]


def _keep(name: str) -> bool:
    return name.endswith("hook_resid_post") or name.endswith("hook_mlp_out")


def methods(model, device: str = "cpu") -> dict:
    """Each method as ``f(ids)``; the bridge and nnsight get their own copy of the model (on
    ``device``, where ``ids`` are moved too: ``bench.gpu_check`` runs these on a GPU)."""
    model = model.to(device)
    lm = interp.LM.from_hf(model)
    bridge = bridge_of(model)
    import nnsight

    traced = nnsight.NNsight(copy.deepcopy(model))
    n_layers = model.config.n_layer

    def nnsight_save(ids):
        saved = []
        with traced.trace(ids, use_cache=False):
            for layer in range(n_layers):  # modules in execution order
                saved.append(traced.transformer.h[layer].mlp.output.save())
                saved.append(traced.transformer.h[layer].output.save())
            logits = traced.output.logits.save()
        return logits, saved

    fns = {
        "bare HF forward": lambda ids: model(input_ids=ids, use_cache=False).logits,
        "ours: lm.run(capture=...)": lambda ids: lm.run(ids, capture=CAPTURE),
        "TL 4.3 bridge run_with_cache": lambda ids: bridge.run_with_cache(ids, names_filter=_keep),
        "nnsight 0.8 trace + save": nnsight_save,
    }
    return {name: (lambda ids, fn=fn: fn(ids.to(device))) for name, fn in fns.items()}


def agreement(results: dict) -> float:
    """Max abs difference of our captures vs the bridge's (same weights): a sanity check."""
    ours = results["ours: lm.run(capture=...)"].cache
    _, theirs = results["TL 4.3 bridge run_with_cache"]
    return max(float((ours[name] - theirs[name]).abs().max()) for name in ours)


def run(quick: bool, device: str = "cpu", shape: tuple[int, int, int] = (12, 768, 12),
        shapes: list[tuple[int, int]] | None = None) -> list[dict]:
    """The rows; ``device``, the model ``shape`` (layers, width, heads) and the ``(batch,
    seq)`` ``shapes`` are ``bench.gpu_check``'s knobs (defaults: the README's setting)."""
    mmap_threshold(SMALL_MMAP)
    by_ids = methods(gpt2_model(*shape), device)
    rows = []
    for batch, seq in shapes or (QUICK_SHAPES if quick else SHAPES):
        torch.manual_seed(1)
        ids = torch.randint(0, VOCAB, (batch, seq))
        fns = {name: functools.partial(fn, ids) for name, fn in by_ids.items()}
        small = batch * seq <= 16
        repeats = (3 if small else 1) if quick else (20 if small else 5)
        results: dict = {}
        times, peaks = interleaved(fns, repeats, warmup=1 if small or not quick else 0, results=results)
        diff = agreement(results)
        results.clear()
        base = baseline(times, "bare HF forward")
        setting = f"GPT-2 {'small' if shape == (12, 768, 12) else 'x'.join(map(str, shape))}, {batch} x {seq}" + (
            f", {device}" if device != "cpu" else "")
        for name in fns:
            note = f"max |ours - TL| = {diff:.1e}" if name.startswith("TL") else ""
            rows.append(row(NAME, setting, name, times[name], base, peaks[name], note))
    return rows
