"""(3) Logit lens over every layer: GPT-2-small-shaped random model, batch 4 x 128 tokens,
``resid_post`` of all 12 layers decoded at the last position and at every position.
Ours: ``interp.lens.readout``, decoding chunks of rows (layer, prompt, position) whose logits
fit ``interp.lens.DECODE_BUDGET`` into one reused buffer and keeping top-5, entropy and two
targets' rank/probability (top-k and ranks from the logits, the log-softmax normaliser applied
to the kept values only). Naive: materialise ``[layer, batch, pos, vocab]`` logits and
log-softmax, then the same reductions (entropy, ranks and top-5 of the whole tensor). The
note says whether both give the same top-5 ids and ranks, and the largest difference of the
probabilities and entropies.
``--quick`` decodes the all-positions case for one prompt only (a quarter of the work).
Both start from the same captured residuals; the forward that captures them is timed on its
own for scale.
"""

from __future__ import annotations

import torch

import interp
from bench.common import SMALL_MMAP, VOCAB, baseline, gpt2_model, interleaved, measure, mmap_threshold, row
from interp.lens import logit_lens, readout, target_rank

NAME = "lens"
BATCH, SEQ, K = 4, 128, 5


def naive(lm, resids: torch.Tensor, targets: torch.Tensor) -> tuple:
    """All layers and positions at once: ``[layer, batch, pos, vocab]`` in memory."""
    logits = logit_lens(lm, resids).float()
    logp = logits.log_softmax(-1)
    top = logp.topk(K, dim=-1)
    t = targets[None, :, None, :].expand(*logp.shape[:3], -1)
    return top.values.exp(), top.indices, -(logp.exp() * logp).sum(-1), target_rank(logits, t), logp.gather(-1, t).exp()


def run(quick: bool) -> list[dict]:
    mmap_threshold(SMALL_MMAP)
    lm = interp.LM.from_hf(gpt2_model(12, 768, 12))
    torch.manual_seed(3)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    targets = torch.randint(0, VOCAB, (BATCH, 2))
    setting = f"GPT-2 small, {BATCH} x {SEQ}, 12 layers"
    all_rows = 1 if quick else BATCH
    forward_s, forward_peak, run_ = measure(lambda: lm.run(ids, capture="resid_post", logits=False))
    rows = [row(NAME, setting, "forward capturing resid_post (for scale)", [forward_s], None, forward_peak)]
    every = run_.cache.stack("resid_post")  # [layer, batch, pos, d_model]
    del run_
    cases = (("last position", every[:, :, -1:].clone(), targets),
             (f"all positions{' of prompt 0' if quick else ''}", every[:, :all_rows], targets[:all_rows]))
    for where, resids, tgt in cases:
        fns = {
            "ours: lens.readout (row chunks)": lambda r=resids, t=tgt: readout(lm, r, targets=t, k=K),
            "naive: materialised log-softmax": lambda r=resids, t=tgt: naive(lm, r, t),
        }
        small = where == "last position"
        repeats = (3 if small else 1) if quick else (10 if small else 2)
        results: dict = {}
        times, peaks = interleaved(fns, repeats, warmup=1 if small or not quick else 0, results=results)
        ours, theirs = results["ours: lens.readout (row chunks)"], results["naive: materialised log-softmax"]
        agree = bool(torch.equal(ours.top_ids, theirs[1]) and torch.equal(ours.target_rank, theirs[3]))
        diff = max(float((a - b).abs().max()) for a, b in ((ours.top_probs, theirs[0]), (ours.entropy, theirs[2]),
                                                           (ours.target_prob, theirs[4])))
        base = baseline(times, "naive: materialised log-softmax")
        for name in fns:
            note = f"top-5 and ranks identical: {agree}; max |diff| {diff:.1e}" if name.startswith("ours") else ""
            rows.append(row(NAME, f"{setting}, {where}", name, times[name], base, peaks[name], note))
    return rows
