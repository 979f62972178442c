"""Early decoding: a lens (by default the logit lens, the model's own final norm and unembedding) on any residual.

``logit_lens(lm, resid)`` returns logits for a ``[..., d_model]`` tensor; applied to the last
block's ``resid_post`` it gives the model's logits exactly. ``decode_layers`` reads out every
layer without materialising ``[layer, batch, pos, vocab]``: it decodes groups of layers under
a memory budget and keeps top-k tokens, entropy, and the rank/probability of target tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.devices import execution_device, weights_of
from interp.errors import InterpError
from interp.lens.objects import Lens, LogitLens, logit_lens, resolve_lens
from interp.lens.tuned import TunedLens, TunedLensConfig, train_tuned_lens


def reward_lens(lm, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_labels"]:
    """A reward model's head on any residual ``[..., d_model]``: final norm then score head for
    a decoder (``interp.reward``), pooler then classifier for an encoder (``interp.encoder``,
    which scores its first token's residual). On the last layer at the scored token it equals
    ``run.scores``."""
    method = getattr(lm, "reward_lens", None)
    if method is None:
        raise InterpError(f"reward_lens needs a reward model, and {lm!r} is a causal LM (use logit_lens); "
                          "load one with interp.load_reward(...) or interp.load(..., head='classifier')")
    return method(resid)


def target_rank(logits: Float[Tensor, "... vocab"], targets: Int[Tensor, "... n_target"]) -> Int[Tensor, "... n_target"]:
    """Rank of each target token: how many tokens have a strictly larger logit (0 = top-1)."""
    target_logits = logits.gather(-1, targets)
    return (logits.unsqueeze(-2) > target_logits.unsqueeze(-1)).sum(-1)


@dataclass
class LayerReadout:
    """Per-layer early decoding of chosen positions.

    Attributes:
        top_ids: top-k token ids ``[layer, batch, pos, k]``.
        top_probs: their probabilities ``[layer, batch, pos, k]``.
        entropy: entropy of the decoded distribution in nats ``[layer, batch, pos]``.
        target_rank: rank of each target (0 = top-1) ``[layer, batch, pos, n_target]``, or
            ``None`` when no targets were given.
        target_prob: probability of each target ``[layer, batch, pos, n_target]`` or ``None``.
    """

    top_ids: Int[Tensor, "layer batch pos k"]
    top_probs: Float[Tensor, "layer batch pos k"]
    entropy: Float[Tensor, "layer batch pos"]
    target_rank: Int[Tensor, "layer batch pos n_target"] | None
    target_prob: Float[Tensor, "layer batch pos n_target"] | None

    def first_top1_layer(self, target: int = 0) -> Int[Tensor, "batch pos"]:
        """First layer where target ``target`` is top-1, or -1 where it never is."""
        if self.target_rank is None:
            raise InterpError("no targets were decoded; pass targets= to decode_layers")
        is_top = self.target_rank[..., target] == 0  # [layer, batch, pos]
        any_top = is_top.any(0)
        first = is_top.float().argmax(0)
        return torch.where(any_top, first, torch.full_like(first, -1))


# Logit elements decoded per chunk (rows = this // vocab). Each chunk's logits go into one
# reused buffer and are reduced there, so memory stays at two chunks whatever the number of
# layers and positions and no chunk pays fresh page faults. Smaller chunks re-read the
# unembedding matrix more often: at GPT-2's vocabulary this budget is 333 rows (64 MiB per
# buffer); 83 and 166 rows were 1.4x and 1.1x slower over 12 layers x 4 x 128 positions.
DECODE_BUDGET = 2**24


def _reduce_chunk(
    logits: Float[Tensor, "rows vocab"], work: Float[Tensor, "rows vocab"],
    targets: Int[Tensor, "rows n_target"] | None, k: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """``reduce_logits`` of float32 ``logits``, overwriting it and ``work``. Log-softmax is
    monotone, so top-k and ranks come from the logits; the normaliser ``m + log z`` (``m`` the
    top logit, ``z = sum exp(logits - m)``) is subtracted only for the values returned, and the
    entropy is ``log z - sum(exp(logits - m) * (logits - m)) / z``: no ``[rows, vocab]``
    log-softmax, probability or product tensor is allocated."""
    top, top_ids = logits.topk(k, dim=-1)
    m = top[:, :1]
    ranks = target_logits = None
    if targets is not None:
        target_logits = logits.gather(-1, targets)
        counts = []
        for j in range(targets.shape[-1]):  # a float 0/1 sum is exact below 2**24 tokens
            counts.append(torch.gt(logits, target_logits[:, j:j + 1], out=work).sum(-1))
        ranks = torch.stack(counts, -1).long()
    shifted = torch.sub(logits, m, out=logits)
    z = torch.exp(shifted, out=work).sum(-1, keepdim=True)
    log_z = z.log()
    entropy = (log_z - work.mul_(shifted).sum(-1, keepdim=True) / z).squeeze(-1)
    top_probs = (top - m - log_z).exp()
    if targets is None:
        return top_ids, top_probs, entropy, None, None
    return top_ids, top_probs, entropy, ranks, (target_logits - m - log_z).exp()


def _unembed_into(lm, normed: Float[Tensor, "rows d_model"], out: Float[Tensor, "rows vocab"]) -> None:
    """The unembedding of final-normed rows, written into ``out`` (float32)."""
    head = lm.unembed
    with weights_of(head) as device:  # offloaded weights brought in (interp.devices)
        if isinstance(head, torch.nn.Linear) and head.weight.dtype == out.dtype == normed.dtype and out.device == device:
            normed = normed.to(device)
            if head.bias is None:
                torch.mm(normed, head.weight.t(), out=out)
            else:
                torch.addmm(head.bias, normed, head.weight.t(), out=out)
        else:
            out.copy_(head(normed.to(device)))


def _buffers(rows: int, vocab: int, device) -> tuple[Tensor, Tensor]:
    return (torch.empty(rows, vocab, dtype=torch.float32, device=device),
            torch.empty(rows, vocab, dtype=torch.float32, device=device))


def reduce_logits(
    logits: Float[Tensor, "*lead vocab"], targets: Int[Tensor, "*lead n_target"] | None, k: int
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """``(top_ids, top_probs, entropy, target_rank, target_prob)`` of a block of logits
    (reduced in chunks of ``DECODE_BUDGET`` elements; ``logits`` is not changed)."""
    lead, vocab = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    flat_targets = None if targets is None else targets.to(logits.device).reshape(flat.shape[0], -1)
    step = max(1, DECODE_BUDGET // vocab)
    buf, work = _buffers(min(step, flat.shape[0]), vocab, logits.device)
    parts = []
    with torch.no_grad():
        for start in range(0, flat.shape[0], step):
            rows = flat[start:start + step]
            chunk = buf[:rows.shape[0]]
            chunk.copy_(rows)
            t = None if flat_targets is None else flat_targets[start:start + step]
            parts.append(_reduce_chunk(chunk, work[:rows.shape[0]], t, k))
    return tuple(None if f[0] is None else torch.cat(f).reshape(*lead, *f[0].shape[1:]) for f in zip(*parts))


def readout(
    lm,
    resids: Sequence[Float[Tensor, "batch pos d_model"]] | Float[Tensor, "layer batch pos d_model"],
    targets: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    lens: Lens | None = None,
    layers: Sequence[int] | None = None,
) -> LayerReadout:
    """Decode each residual in ``resids`` (one per layer), in chunks of rows (layer, prompt,
    position) whose logits fit ``DECODE_BUDGET`` elements.

    ``targets`` gives, per prompt, token ids whose rank and probability to track (e.g. the
    answer's and the argument's first tokens); they are shared by all positions. ``lens``
    decodes (default: the logit lens); ``layers`` names the block of each residual for a lens
    that depends on it (default ``0, 1, ...``: ``resids`` is every block's ``resid_post``).
    """
    if not isinstance(resids, Tensor):
        resids = torch.stack(list(resids))
    n_layers, batch, pos, _ = resids.shape
    layers = list(range(n_layers)) if layers is None else list(layers)
    if len(layers) != n_layers:
        raise InterpError(f"readout got {n_layers} residuals but {len(layers)} layers; pass one layer per residual")
    vocab = lm.d_vocab
    step = max(1, DECODE_BUDGET // vocab)
    row_targets = None
    if targets is not None:  # [layer * batch * pos, n_target], in the rows' order
        targets = targets.to(resids.device)
        row_targets = targets[None, :, None, :].expand(n_layers, -1, pos, -1).reshape(n_layers * batch * pos, -1)
    logit = lens is None or isinstance(lens, LogitLens)
    # The logit lens is the same at every layer: all rows are decoded as one list (the final
    # norm once), so chunks span layers. Another lens decodes each layer's rows on its own.
    if logit:
        with torch.no_grad():
            norm = lm.final_norm
            normed = norm(resids.reshape(-1, resids.shape[-1]).to(execution_device(norm), lm.dtype))
        spans = [(0, n_layers * batch * pos, None)]
    else:
        per_layer = resids.reshape(n_layers, batch * pos, -1)
        spans = [(i * batch * pos, (i + 1) * batch * pos, i) for i in range(n_layers)]
    buf, work = _buffers(min(step, spans[0][1] - spans[0][0]), vocab, resids.device)
    parts = []
    with torch.no_grad():
        for lo, hi, layer_index in spans:
            for start in range(lo, hi, step):
                stop = min(start + step, hi)
                chunk = buf[:stop - start]
                if logit:
                    _unembed_into(lm, normed[start:stop], chunk)
                else:
                    rows = per_layer[layer_index, start - lo:stop - lo]
                    chunk.copy_(lens.decode(rows, layers[layer_index]))
                t = None if row_targets is None else row_targets[start:stop]
                parts.append(_reduce_chunk(chunk, work[:stop - start], t, k))
    fields = [None if f[0] is None else torch.cat(f).reshape(n_layers, batch, pos, *f[0].shape[1:])
              for f in zip(*parts)]
    return LayerReadout(*fields)


def decode_layers(
    lm,
    prompts,
    hook: str = "resid_post",
    positions=-1,
    targets: Int[Tensor, "batch n_target"] | None = None,
    k: int = 5,
    lens: Lens | None = None,
) -> LayerReadout:
    """Run ``prompts`` once and early-decode ``hook`` at every layer at ``positions``."""
    run = lm.run(prompts, capture=[hook], positions=positions, logits=False)
    return readout(lm, run.cache.stack(hook), targets=targets, k=k, lens=lens)


__all__ = ["DECODE_BUDGET", "LayerReadout", "Lens", "LogitLens", "TunedLens", "TunedLensConfig", "decode_layers",
           "logit_lens", "readout", "reduce_logits", "resolve_lens", "reward_lens", "target_rank", "train_tuned_lens"]
