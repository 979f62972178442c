"""(2) Activation-patching sweep of ``resid_pre`` over (layer, position): a 4-layer GPT-2-shaped
random model (d_model 256, 8 heads, vocab 50257), one prompt of 20 tokens, metric = logit
difference of two tokens at the last position. Ours (``interp.patching.patch_sweep``) vs
TransformerLens ``get_act_patch_resid_pre`` with TL 4.x ``TransformerBridge`` (in process) and
TL 3.9 ``HookedTransformer`` (subprocess, its own venv), and a naive loop of single patched
runs with plain PyTorch hooks. Every method's time includes its clean run.

Three prompt pairs: a minimal pair (clean and corrupted differ in 2 of the 20 tokens, the usual
patching setup; every method), a pair sharing no token (ours' worst case: no cell can be
skipped and every patched run starts at its position; ours and the TL 4.3 bridge only, since
the others' cost does not depend on the pair), and the case of issue 12, from a benchmark not
written here: tokens 3, 7 and 11 differ, the metric a plain function (ours, the TL 4.3 bridge
and the naive loop, which checks both).

Ours runs twice: with the metric as a plain function of the logits (the baseline row, what
TransformerLens is given), and as ``interp.patching.logit_diff(A, B)``, which names the two
tokens it reads so that only those columns of the unembedding are computed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import torch

import interp
from interp.patching import logit_diff, patch_sweep
from bench.common import LARGE_MMAP, VOCAB, baseline, bridge_of, gpt2_model, interleaved, mmap_threshold, row, tl3_python

NAME = "patching"
SEQ = 20
A, B = 100, 200  # metric: logit[A] - logit[B] at the last position
REALISTIC = (3, 7, 11)  # the differing positions of issue 12's case


def inputs(differing: list[int] | None = (4, 11)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(corrupted, clean)``, ``[1, SEQ]`` each: corrupted differs from clean at positions
    ``differing`` (``None``: everywhere)."""
    torch.manual_seed(2)
    clean = torch.randint(0, VOCAB, (1, SEQ))
    corrupted = clean.clone()
    where = list(range(SEQ)) if differing is None else list(differing)
    while bool((corrupted[0, where] == clean[0, where]).any()):
        corrupted[0, where] = torch.randint(0, VOCAB, (len(where),))
    return corrupted, clean


def naive_sweep(model, corrupted, clean) -> torch.Tensor:
    """One forward per (layer, position), with a pre-hook writing the clean residual."""
    blocks = model.transformer.h
    cached = {}

    def hidden_of(args, kwargs):
        return args[0] if args else kwargs["hidden_states"]

    def with_hidden(args, kwargs, h):
        return ((h,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    def keeper(layer):
        def keep(module, args, kwargs):
            cached[layer] = hidden_of(args, kwargs).clone()
        return keep

    handles = [block.register_forward_pre_hook(keeper(layer), with_kwargs=True) for layer, block in enumerate(blocks)]
    try:
        model(clean, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    out = torch.empty(len(blocks), SEQ)
    for layer, block in enumerate(blocks):
        for pos in range(SEQ):
            def patch(module, args, kwargs, layer=layer, pos=pos):
                h = hidden_of(args, kwargs).clone()
                h[:, pos] = cached[layer][:, pos]
                return with_hidden(args, kwargs, h)

            handle = block.register_forward_pre_hook(patch, with_kwargs=True)
            try:
                logits = model(corrupted, use_cache=False).logits
            finally:
                handle.remove()
            out[layer, pos] = logits[0, -1, A] - logits[0, -1, B]
    return out


def tl3(model, corrupted, clean, repeats: int, warmup: int) -> tuple[dict | None, str]:
    python = tl3_python()
    if python is None:
        return None, "no TL 3.9 venv (.venv-tl3 or /tmp/tl39): `make bench` creates .venv-tl3"
    with tempfile.TemporaryDirectory(prefix="bench-tl3-") as tmp:
        folder = Path(tmp)
        model.save_pretrained(folder)
        torch.save({"corrupted": corrupted, "clean": clean, "a": A, "b": B}, folder / "inputs.pt")
        worker = Path(__file__).with_name("tl3_worker.py")
        proc = subprocess.run([str(python), str(worker), str(folder), str(folder / "inputs.pt"), str(repeats), str(warmup)],
                              capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return None, f"TL 3.9 worker failed: {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1]), f"{python}"


def run(quick: bool, device: str = "cpu", cases: str = "all", shape: tuple[int, int, int] = (4, 256, 8)) -> list[dict]:
    """The rows; on ``device`` (``bench.gpu_check``), where ``cases="main"`` runs only the
    minimal pair against the TL 4.3 bridge, for a model of ``shape`` (layers, width, heads)."""
    mmap_threshold(LARGE_MMAP)
    model = gpt2_model(*shape).to(device)
    lm = interp.LM.from_hf(model)
    bridge = bridge_of(model)
    repeats = 1 if quick else 5
    rows = []
    where = "" if device == "cpu" else f", {device}"
    for differing, everyone in [((4, 11), True), (None, False)][:1 if cases == "main" else 2]:
        corrupted, clean = (x.to(device) for x in inputs(differing))
        shared = "2 of 20 tokens differ" if differing else "no shared token"
        setting = f"{shape[0]} x {shape[1]} GPT-2 shape, {SEQ} tokens ({shared}), {shape[0] * SEQ} cells{where}"
        rows += _compare(model, lm, bridge, corrupted, clean, setting, everyone and cases != "main", repeats,
                         warmup=0 if quick else 1)
    if cases == "main":
        return rows
    corrupted, clean = inputs(REALISTIC)
    setting = f"4 x 256 GPT-2 shape, {SEQ} tokens (tokens {', '.join(map(str, REALISTIC))} differ), {4 * SEQ} cells, plain metric"
    rows += _compare(model, lm, bridge, corrupted, clean, setting, False, repeats, warmup=0 if quick else 1, naive=True,
                     named=False)
    return rows


def _compare(model, lm, bridge, corrupted, clean, setting: str, everyone: bool, repeats: int, warmup: int,
             naive: bool = False, named: bool = True) -> list[dict]:
    """Rows of one prompt pair: ours (plain metric; with ``named`` also ``logit_diff``), the
    TL 4.3 bridge, and with ``everyone`` the other methods (with ``naive`` the naive loop)."""
    from transformer_lens.patching import get_act_patch_resid_pre

    def metric(logits):  # ours: last-position logits [batch, vocab]
        return logits[:, A].mean() - logits[:, B].mean()

    def bridge_sweep():
        _, cache = bridge.run_with_cache(clean)
        return get_act_patch_resid_pre(bridge, corrupted, cache, lambda lg: lg[0, -1, A] - lg[0, -1, B])

    fns = {"ours: patch_sweep": lambda: patch_sweep(lm, corrupted, clean, metric, hook="resid_pre", progress=False)}
    if named:
        fns["ours: patch_sweep, metric=logit_diff(A, B)"] = lambda: patch_sweep(
            lm, corrupted, clean, logit_diff(A, B), hook="resid_pre", progress=False)
    fns["TL 4.3 bridge get_act_patch_resid_pre"] = bridge_sweep
    if everyone:
        fns["ours: patch_sweep(resume=False, skip_unchanged=False)"] = lambda: patch_sweep(
            lm, corrupted, clean, metric, hook="resid_pre", resume=False, skip_unchanged=False, progress=False)
    if everyone or naive:
        fns["naive loop, plain torch hooks"] = lambda: naive_sweep(model, corrupted, clean)
    results: dict = {}
    times, _ = interleaved(fns, repeats, warmup=warmup, results=results, memory=False)
    results = {name: value.float() for name, value in results.items()}
    notes = {}
    if everyone:
        tl3_name = "TL 3.9 HookedTransformer get_act_patch_resid_pre"
        tl3_out, notes[tl3_name] = tl3(model, corrupted, clean, repeats, warmup)
        if tl3_out is not None:
            results[tl3_name] = torch.tensor(tl3_out["result"])
            times[tl3_name] = tl3_out["times_s"]
            notes[tl3_name] = f"subprocess, TL {tl3_out['transformer_lens']}; logits vs HF {tl3_out['max_logit_diff_vs_hf']:.1e}"
        else:
            times[tl3_name] = None
    reference = results["ours: patch_sweep"]
    base = baseline(times, "ours: patch_sweep")
    rows = []
    for name, seconds in times.items():
        note = []
        if name in results and name != "ours: patch_sweep":
            note.append(f"max |diff vs ours| = {float((results[name] - reference).abs().max()):.1e}")
        if name in notes:
            note.append(notes[name])
        rows.append(row(NAME, setting, name, seconds, base if seconds else None, note="; ".join(note)))
    return rows
