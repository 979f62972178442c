"""(6) Activation harvesting: ``interp.dictionaries.harvest.harvest`` of ``resid_post`` at all
12 layers of a GPT-2-small-shaped random model over 8 windows of 128 tokens (one batch of
8 x 128), against a bare HF forward of the same ids (with logits: what a user would time
first) and the bare HF body without the unembedding (the fairer floor, since harvesting stops
after the last harvested block). Harvests keep every token (this model has no tokenizer, so
no BOS) and run in memory, to a fresh folder in float32, and in bfloat16. The note gives the
throughput (tokens per second) as a multiple of the bare forward's; the target is >= 0.9x.
"""

from __future__ import annotations

import functools
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

import interp
from bench.common import LARGE_MMAP, VOCAB, baseline, gpt2_model, interleaved, mmap_threshold, row
from interp.dictionaries.harvest import harvest

NAME = "harvest"
BATCH, SEQ = 8, 128


def _to_disk(lm, texts, layers, dtype, root: Path):
    folder = Path(tempfile.mkdtemp(dir=root))
    try:
        return harvest(lm, texts, layers, seq_len=SEQ, batch_size=BATCH, out=folder, dtype=dtype, progress=False).n_tokens
    finally:
        shutil.rmtree(folder)


def run(quick: bool) -> list[dict]:
    mmap_threshold(LARGE_MMAP)  # timing only
    model = gpt2_model(12, 768, 12)
    lm = interp.LM.from_hf(model)
    torch.manual_seed(5)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    texts = [row_ids.tolist() for row_ids in ids]  # token-id "texts": one window each
    layers = list(range(12))
    root = Path(tempfile.mkdtemp(prefix="bench-harvest-"))
    fns = {
        "bare HF forward (logits)": lambda: model(input_ids=ids, use_cache=False).logits,
        "bare HF body (no unembedding)": lambda: model.transformer(input_ids=ids, use_cache=False).last_hidden_state,
        "ours: harvest, in memory": lambda: harvest(lm, texts, layers, seq_len=SEQ, batch_size=BATCH, progress=False),
        "ours: harvest to disk, float32": functools.partial(_to_disk, lm, texts, layers, torch.float32, root),
        "ours: harvest to disk, bfloat16": functools.partial(_to_disk, lm, texts, layers, torch.bfloat16, root),
    }
    try:
        results: dict = {}
        times, _ = interleaved(fns, 1 if quick else 3, warmup=0 if quick else 1, results=results, memory=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    mem = results["ours: harvest, in memory"]
    assert mem.n_tokens == BATCH * SEQ
    with torch.no_grad():  # the harvest's numbers are the capture's
        ref = lm.run(ids, capture="blocks.7.hook_resid_post").cache["blocks.7.hook_resid_post"].reshape(-1, 768)
    diff = float((mem.layer(7) - ref).abs().max())
    base = baseline(times, "bare HF forward (logits)")
    body = statistics.median(times["bare HF body (no unembedding)"])
    setting = f"GPT-2 small, {BATCH} x {SEQ}, resid_post x 12 layers"
    rows = []
    for name in fns:
        median = statistics.median(times[name])
        note = (f"throughput {base[1] / median:.2f}x bare forward, {body / median:.2f}x bare body"
                if name.startswith("ours") else "")
        if name == "ours: harvest, in memory":
            note += f"; max |harvest - lm.run capture| {diff:.1e}"
        rows.append(row(NAME, setting, name, times[name], base, None, note))
        if name.startswith("ours"):
            print(f"[harvest] {name}: {note}", flush=True)
    return rows
