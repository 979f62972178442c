"""Dictionary training speed: our BatchTopK crosscoder (``interp.dictionaries.crosscoder``)
against dictionary-learning's ``BatchTopKTrainer`` (saprmarks/dictionary_learning 0.1.0, the
trainer Minder et al.'s crosscoders build on), on the same activations and hyperparameters.

Activations: the toy pair's ``blocks.3.hook_resid_post`` on toy-world documents, base and chat
at the same tokens (``interp.dictionaries.harvest``). Ours trains a crosscoder on ``[n, 2,
d_model]``; dictionary-learning (which ships no crosscoder on PyPI) trains a BatchTopK SAE on
the same tokens concatenated, ``[n, 2 d_model]``: the same encoder size, the same decoder
parameters in one matrix, the same k, batch, learning rate, decay schedule and AuxK. Its trainer
also renormalises decoder rows and clips gradients each step (part of its cost).

dictionary-learning 0.1.0 pins nnsight < 0.4, so it runs from its own venv in a subprocess
(``.venv-dl``, or ``/tmp/dl/venv``; ``make bench`` builds ``.venv-dl``), timed inside the
worker (set-up and its first step excluded), in rounds interleaved with ours.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import torch

from bench.common import LARGE_MMAP, ROOT, mmap_threshold, row

SETTING = dict(dict_size=1024, k=16, batch_size=512, lr=1e-3, dead_tokens=100_000)


def dl_python() -> Path | None:
    for candidate in (ROOT / ".venv-dl/bin/python", Path("/tmp/dl/venv/bin/python")):
        if candidate.exists():
            return candidate
    return None


def activations(n_docs: int) -> torch.Tensor:
    import interp
    from interp.dictionaries.crosscoder import stack_sources
    from interp.dictionaries.harvest import harvest_pair
    from tasks.toy_world.corpus import Corpus

    corpus = Corpus(0)
    acts = harvest_pair(interp.load_pair("toy"), [corpus.document() for _ in range(n_docs)], [3], progress=False)
    return stack_sources(acts.base(3), acts.chat(3))


def ours(x: torch.Tensor, steps: int) -> float:
    from interp.dictionaries.crosscoder import CrosscoderConfig, train_crosscoder

    config = CrosscoderConfig(d_model=x.shape[-1], steps=steps, **SETTING)
    _, history = train_crosscoder(x, config, log_every=steps)
    return 1 / history.steps_per_second  # (the first step excluded, as the worker excludes its first)


def theirs(python: Path, x: torch.Tensor, steps: int) -> dict:
    from interp.dictionaries.crosscoder import source_scales

    scaled = (x * source_scales(x)[:, None]).flatten(1)  # what our crosscoder trains on, concatenated
    with tempfile.TemporaryDirectory(prefix="bench-dl-") as tmp:
        path = Path(tmp) / "inputs.pt"
        torch.save({"x": scaled, "steps": steps, **SETTING}, path)
        proc = subprocess.run([str(python), str(Path(__file__).with_name("dl_worker.py")), str(path)],
                              capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[dict]:
    mmap_threshold(LARGE_MMAP)  # timing only (bench.common): no page faults a user's process would not pay
    steps, rounds = (30, 1) if quick else (200, 3)
    x = activations(100 if quick else 400)
    setting = (f"toy pair block 3, {x.shape[0]} tokens x 2 x {x.shape[-1]}, dict {SETTING['dict_size']}, "
               f"k {SETTING['k']}, batch {SETTING['batch_size']}, {steps} steps")
    python = dl_python()
    ours_s, theirs_s, note = [], [], ""
    for _ in range(rounds):
        ours_s.append(ours(x, steps))
        if python is not None:
            try:
                got = theirs(python, x, steps)
                theirs_s.append(got["seconds_per_step"])
                note = f"subprocess, dictionary-learning {got['dictionary_learning']}"
            except (RuntimeError, subprocess.TimeoutExpired) as err:
                python, note = None, f"dictionary-learning worker failed: {err}"
    if not theirs_s and not note:
        note = ("dictionary-learning not installed (no .venv-dl or /tmp/dl/venv): `make bench` creates .venv-dl "
                "(pip install torch==2.13.0 dictionary-learning==0.1.0)")
    base = ("dictionary-learning BatchTopKTrainer", statistics.median(theirs_s)) if theirs_s else None
    steps_note = lambda s: f"{1 / statistics.median(s):.0f} steps/s"  # noqa: E731
    rows = [row("dictionary_training", setting, "ours: BatchTopK crosscoder", ours_s, base,
                note=steps_note(ours_s) + ("" if theirs_s else f"; {note}"))]
    if theirs_s:
        rows.append(row("dictionary_training", setting, "dictionary-learning BatchTopKTrainer (SAE on concat)",
                        theirs_s, base, note=f"{steps_note(theirs_s)}; {note}"))
    return rows
