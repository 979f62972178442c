"""Activation difference lens (Minder et al. 2025): the mean residual difference chat - base
over the first tokens of neutral text, per layer, read through a lens and used to steer.

    b = mean_resid(base, texts, k=5); c = mean_resid(chat, texts, k=5)     # models one at a time
    vectors = adl_vectors(b, c)                                            # [layer, d_model]
    rows = decode_vectors(chat, vectors, top=10)                           # top tokens per layer
    before, after = steer(base, prompts, vectors[4], layer=4, scale=1.0)   # token ids, greedy

Fine-tuning on a narrow behaviour leaves a trace in the residual stream even on text unrelated
to it, most visibly at the first few positions; its mean decodes (logit lens, or a tuned lens
from ``interp.lens``) to tokens of the tuned behaviour and, added back, steers a model towards
it. The residual is each block's ``resid_post``; the first token is skipped by default: it is
BOS for Llama-style tokenizers, whose residual (an attention sink with an outsized norm) is
the same kind of constant in both models and would dominate the mean (Minder et al. also
leave it out). Texts shorter than ``skip + k`` tokens are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.diff._decode import decode, last_logits, prompt_ids
from interp.diff.token_shift import vocab_hash
from interp.errors import InterpError, PromptError
from interp.hook_names import block_hook
from interp.interventions import add
from interp.lens import resolve_lens


@dataclass
class MeanResid:
    """One model's mean ``resid_post`` at the first ``k`` kept positions of a text set.

    Attributes:
        mean: ``[layer, k, d_model]`` (float32, cpu), averaged over the texts.
        n_texts: texts averaged; ``n_dropped``: texts shorter than ``skip + k`` tokens.
        skip: leading positions left out (1: the BOS position).
        vocab: hash of the tokenizer's vocabulary (``interp.diff.token_shift.vocab_hash``): the
            two means must have read the same tokens.
    """

    mean: Float[Tensor, "layer k d_model"]
    n_texts: int
    n_dropped: int
    skip: int
    vocab: str | None = None


def mean_resid(lm, texts: Sequence[str] | Sequence[Sequence[int]], k: int = 5, skip: int = 1,
               batch_size: int = 16) -> MeanResid:
    """``lm``'s mean ``resid_post`` at positions ``skip .. skip + k - 1`` of each text, every layer."""
    if not isinstance(k, int) or k < 1 or not isinstance(skip, int) or skip < 0:
        raise InterpError(f"k must be a positive integer and skip a non-negative one, got k={k!r}, skip={skip!r}")
    seqs = prompt_ids(lm, texts)
    kept = [s for s in seqs if len(s) >= skip + k]
    if not kept:
        raise PromptError(f"none of the {len(seqs)} texts has skip + k = {skip + k} tokens; use longer texts or a smaller k")
    total = torch.zeros(lm.n_layers, k, lm.d_model, dtype=torch.float64)
    positions = list(range(skip, skip + k))
    for start in range(0, len(kept), batch_size):
        with torch.no_grad():
            run = lm.run(kept[start:start + batch_size], capture=["resid_post"], positions=positions, logits=False)
        total += run.cache.stack("resid_post").double().sum(1).cpu()  # [layer, batch, k, d] -> [layer, k, d]
    vocab = vocab_hash(lm) if lm.tokenizer is not None else None
    return MeanResid((total / len(kept)).float(), len(kept), len(seqs) - len(kept), skip, vocab)


def adl_vectors(base: MeanResid, chat: MeanResid, per_position: bool = False) -> Float[Tensor, "layer d_model"]:
    """chat - base, averaged over the ``k`` positions (``[layer, d_model]``), or per position
    (``[layer, k, d_model]``) with ``per_position``."""
    if base.mean.shape != chat.mean.shape or base.skip != chat.skip:
        raise InterpError(f"the two means differ in shape {tuple(base.mean.shape)} vs {tuple(chat.mean.shape)} "
                          f"(layer, k, d_model) or skip ({base.skip} vs {chat.skip}); compute both with one k, skip "
                          "and text set on a pair of one architecture")
    if base.vocab != chat.vocab:
        raise InterpError("the two means were read through different tokenizers, so their positions hold different "
                          "tokens; the activation difference lens needs a pair that shares one tokenizer")
    if base.n_texts != chat.n_texts:
        raise InterpError(f"the means average {base.n_texts} and {chat.n_texts} texts; use one text set for both models")
    diff = chat.mean - base.mean
    return diff if per_position else diff.mean(1)


def decode_vectors(lm, vectors: Float[Tensor, "layer d_model"], lens=None, top: int = 10) -> list[dict]:
    """Each layer's vector through ``lens`` (default the logit lens of ``lm``): rows ``layer``,
    ``rank`` (1 = top), ``token_id``, ``token``, ``logit``, ``prob`` (softmax of the decoded
    vector), and ``norm`` (the vector's L2 norm)."""
    if vectors.ndim != 2 or vectors.shape[0] != lm.n_layers or vectors.shape[1] != lm.d_model:
        raise InterpError(f"vectors must be [layer={lm.n_layers}, d_model={lm.d_model}], got {tuple(vectors.shape)}")
    lens = resolve_lens(lm, lens)
    rows = []
    for layer in range(lm.n_layers):
        with torch.no_grad():
            logits = lens.decode(vectors[layer].to(lm.device), layer).float().cpu()
        probs = logits.softmax(-1)
        values, ids = logits.topk(min(top, logits.shape[-1]))
        norm = float(vectors[layer].norm())
        for rank, (value, token) in enumerate(zip(values.tolist(), ids.tolist()), start=1):
            rows.append({"layer": layer, "rank": rank, "token_id": token,
                         "token": lm.tokenizer.convert_ids_to_tokens(token) if lm.tokenizer is not None else str(token),
                         "logit": value, "prob": float(probs[token]), "norm": norm})
    return rows


def steering_write(layer: int, vector: Float[Tensor, " d_model"], scale: float = 1.0) -> dict:
    """The ``interventions=`` of ``lm.run`` that add ``scale * vector`` to block ``layer``'s
    ``resid_post`` at every position."""
    return {block_hook(layer, "resid_post"): add(scale * vector.float())}


def steer(lm, prompts, vector: Float[Tensor, " d_model"], layer: int, scale: float = 1.0,
          max_new_tokens: int = 16) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy answers of ``lm`` to ``prompts`` without and with ``scale * vector`` added to block
    ``layer``'s ``resid_post`` at every position (``interp.add``): ``(before, after)`` token ids,
    each cut after EOS."""
    if not 0 <= layer < lm.n_layers:
        raise InterpError(f"layer {layer} out of range; valid: 0..{lm.n_layers - 1}")
    if tuple(vector.shape) != (lm.d_model,):
        raise InterpError(f"the steering vector must be [d_model={lm.d_model}], got {tuple(vector.shape)}")
    seqs = prompt_ids(lm, prompts)
    eos = lm.tokenizer.eos_token_id if lm.tokenizer is not None else None
    write = steering_write(layer, vector, scale)
    before = decode(lambda s: last_logits(lm, s), seqs, eos, max_new_tokens)
    after = decode(lambda s: last_logits(lm, s, write), seqs, eos, max_new_tokens)
    return before, after
