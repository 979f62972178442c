"""dictionary-learning's BatchTopK trainer, timed on given activations (a subprocess of
``bench/dictionary_training.py``).

Runs under the interpreter of its own venv (``.venv-dl``: dictionary-learning 0.1.0 pins
nnsight < 0.4, which cannot share a venv with ours), so it imports nothing of ours. Usage:
``python dl_worker.py INPUTS.pt``; prints one JSON line: seconds per timed step and the final loss.
"""

import json
import sys
import time

import torch


def main(path: str) -> None:
    from importlib.metadata import version

    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer

    torch.set_num_threads(1)
    spec = torch.load(path)
    x, steps = spec["x"], spec["steps"]
    trainer = BatchTopKTrainer(steps=steps + 1, activation_dim=x.shape[1], dict_size=spec["dict_size"], k=spec["k"],
                               layer=0, lm_name="bench", lr=spec["lr"], warmup_steps=0,
                               decay_start=int(0.8 * (steps + 1)), threshold_start_step=0, seed=0, device="cpu")
    trainer.dead_feature_threshold = spec["dead_tokens"]
    g = torch.Generator().manual_seed(0)
    batches = [x[torch.randint(0, x.shape[0], (spec["batch_size"],), generator=g)] for _ in range(steps + 1)]
    trainer.update(0, batches[0])  # step 0 computes the geometric median for b_dec: set-up, not timed
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = trainer.update(step, batches[step])
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds_per_step": seconds / steps, "loss": loss, "dictionary_learning": version("dictionary-learning")}))


if __name__ == "__main__":
    main(sys.argv[1])
