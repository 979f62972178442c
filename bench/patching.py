"""(2) Activation-patching sweep of ``resid_pre`` over (layer, position): a 4-layer GPT-2-shaped
random model (d_model 256, 8 heads, vocab 50257), one prompt of 20 tokens, metric = logit
difference of two tokens at the last position. Ours (``interp.patching.patch_sweep``) vs
TransformerLens ``get_act_patch_resid_pre`` with TL 4.x ``TransformerBridge`` (in process) and
TL 3.9 ``HookedTransformer`` (subprocess, its own venv), and a naive loop of single patched
runs with plain PyTorch hooks. Every method's time includes its clean run.

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
from bench.common import LARGE_MMAP, VOCAB, baseline, bridge_of, gpt2_model, interleaved, mmap_threshold, row, tl3_python

NAME = "patching"
SEQ = 20
A, B = 100, 200  # metric: logit[A] - logit[B] at the last position


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    clean = torch.randint(0, VOCAB, (1, SEQ))
    corrupted = clean.clone()
    corrupted[0, [4, 11]] = torch.randint(0, VOCAB, (2,))
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


def run(quick: bool) -> list[dict]:
    mmap_threshold(LARGE_MMAP)
    model = gpt2_model(4, 256, 8)
    lm = interp.LM.from_hf(model)
    corrupted, clean = inputs()
    repeats = 1 if quick else 5

    def metric(logits):  # ours: last-position logits [batch, vocab]
        return logits[:, A].mean() - logits[:, B].mean()

    fns, notes = {}, {}
    try:
        from interp.patching import logit_diff, patch_sweep
    except ImportError as err:
        patch_sweep = None
        notes["ours"] = f"not available ({err})"
    if patch_sweep is not None:
        fns["ours: patch_sweep"] = lambda: patch_sweep(lm, corrupted, clean, metric, hook="resid_pre", progress=False)
        fns["ours: patch_sweep, metric=logit_diff(A, B)"] = lambda: patch_sweep(
            lm, corrupted, clean, logit_diff(A, B), hook="resid_pre", progress=False)
        fns["ours: patch_sweep(resume=False, skip_unchanged=False)"] = lambda: patch_sweep(
            lm, corrupted, clean, metric, hook="resid_pre", resume=False, skip_unchanged=False, progress=False)
    bridge = bridge_of(model)
    from transformer_lens.patching import get_act_patch_resid_pre

    def bridge_sweep():
        _, cache = bridge.run_with_cache(clean)
        return get_act_patch_resid_pre(bridge, corrupted, cache, lambda lg: lg[0, -1, A] - lg[0, -1, B])

    fns["TL 4.3 bridge get_act_patch_resid_pre"] = bridge_sweep
    fns["naive loop, plain torch hooks"] = lambda: naive_sweep(model, corrupted, clean)

    results: dict = {}
    times, _ = interleaved(fns, repeats, warmup=0 if quick else 1, results=results, memory=False)
    results = {name: value.float() for name, value in results.items()}
    tl3_out, tl3_note = tl3(model, corrupted, clean, repeats, warmup=0 if quick else 1)
    if tl3_out is not None:
        results["TL 3.9 HookedTransformer get_act_patch_resid_pre"] = torch.tensor(tl3_out["result"])
        times["TL 3.9 HookedTransformer get_act_patch_resid_pre"] = tl3_out["times_s"]
        tl3_note = f"subprocess, TL {tl3_out['transformer_lens']}; logits vs HF {tl3_out['max_logit_diff_vs_hf']:.1e}"

    reference = results.get("ours: patch_sweep")
    base_name = "ours: patch_sweep" if reference is not None else "naive loop, plain torch hooks"
    base = baseline(times, base_name)
    setting = f"4 x 256 GPT-2 shape, {SEQ} tokens, {4 * SEQ} cells"
    rows = []
    if reference is None:
        rows.append(row(NAME, setting, "ours: patch_sweep", None, None, note=notes["ours"]))
    for name in times:
        note = ""
        if reference is not None and name != "ours: patch_sweep":
            note = f"max |diff vs ours| = {float((results[name] - reference).abs().max()):.1e}"
        if name.startswith("TL 3.9"):
            note = f"{note}; {tl3_note}"
        rows.append(row(NAME, setting, name, times[name], base, note=note))
    if tl3_out is None:
        rows.append(row(NAME, setting, "TL 3.9 HookedTransformer get_act_patch_resid_pre", None, None, note=tl3_note))
    return rows
