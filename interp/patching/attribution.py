"""Attribution patching: a first-order estimate of every patch from one backward pass.

For a cell (layer ``l``, position ``p``) the exact patching effect is
``metric(corrupted with act[l, p] := clean) - metric(corrupted)``. Its linear approximation
at the corrupted run is ``sum_{b, d} (clean[l, b, p, d] - corrupted[l, b, p, d]) *
d metric / d act[l, b, p, d]``: two forwards (clean, corrupted) and one backward give the
whole ``[layer, pos]`` grid. It is exact where the path from the activation to the metric is
linear, and an estimate otherwise; ``compare`` says how good it is against an exact sweep
(pass the exact sweep minus ``baseline_metric``, since both must be effects).
``attribution_heads`` does the same for each attention head's output at all positions, the
layout of ``patch_heads``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError
from interp.hook_names import block_hook
from interp.patching.inputs import prompt_pair, scalar, sweep_point
from interp.patching.sweep import Metric


def attribution_sweep(
    lm, corrupted, clean, metric: Metric, hook: str = "resid_pre"
) -> Float[Tensor, "layer pos"]:
    """Estimated patching *effect* of ``hook`` at each (layer, position), ``[n_layers, n_pos]``.

    Arguments as for ``interp.patching.patch_sweep``.
    """
    point = sweep_point(lm, hook)
    corr_ids, clean_ids = prompt_pair(lm, corrupted, clean)
    names = [block_hook(layer, point) for layer in range(lm.n_layers)]
    clean_acts = lm.run(clean_ids, capture=point, logits=False).cache.stack(point)  # [layer, batch, seq, d]
    kept: dict[str, Tensor] = {}
    run = lm.run(corr_ids, positions=-1, interventions={n: _keeper(kept, n) for n in names}, grad=True)
    acts = [kept[n] for n in names]
    grads = torch.stack(_gradients(metric, run.logits[:, 0], acts))
    corr_acts = torch.stack(acts).detach()
    return ((clean_acts.to(grads.dtype) - corr_acts) * grads).sum(dim=(1, 3)).float()


def attribution_heads(lm, corrupted, clean, metric: Metric) -> Float[Tensor, "layer head"]:
    """Estimated patching *effect* of each attention head's output at all positions,
    ``[n_layers, n_heads]``: the first-order estimate of ``interp.patching.patch_heads``.

    A head's output is its slice of ``blocks.{l}.attn.hook_z``; families whose adapter row has
    no ``attn_o`` raise ``NoHeadHooks`` (an ``UnsupportedArchitecture``). Other arguments as
    for ``attribution_sweep``.
    """
    names = [p.name for p in lm.resolve("z")]  # a family without head hooks raises here
    corr_ids, clean_ids = prompt_pair(lm, corrupted, clean)
    clean_z = lm.run(clean_ids, capture="z", logits=False).cache
    kept: dict[str, Tensor] = {}
    run = lm.run(corr_ids, positions=-1, interventions={n: _keeper(kept, n) for n in names}, grad=True)
    acts = [kept[n] for n in names]
    grads = _gradients(metric, run.logits[:, 0], acts)
    out = []
    for name, act, grad in zip(names, acts, grads):
        delta = (clean_z[name].to(grad.dtype) - act.detach()) * grad  # [batch, seq, head, d_head]
        out.append(delta.sum(dim=(0, 1, 3)))
    return torch.stack(out).float()


def _keeper(kept: dict, key) -> Callable[[Tensor], Tensor]:
    """A write that passes a copy of the activation on and keeps it in ``kept[key]``: the
    copy is the tensor the rest of the forward reads, so gradients can be taken at it."""

    def keep(act: Tensor) -> Tensor:
        kept[key] = act.clone()
        return kept[key]

    return keep


def _gradients(metric: Metric, logits: Tensor, acts: list[Tensor]) -> list[Tensor]:
    """d metric(logits) / d act for each of ``acts`` (zeros where it does not depend on it)."""
    value = scalar(metric(logits))
    if not value.requires_grad:
        raise InterpError("the metric's value does not depend on the logits (no gradient); "
                          "compute it from the logits it is given with torch operations")
    grads = torch.autograd.grad(value, acts, allow_unused=True)
    return [torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads)]


@dataclass(frozen=True)
class Comparison:
    """How well an approximate grid of effects matches an exact one (flattened cells).

    Attributes:
        pearson: Pearson correlation of the values.
        spearman: Spearman rank correlation (Pearson of average ranks).
        top_k_overlap: fraction of the ``k`` cells largest in absolute value that both share.
        k: the ``k`` used.
    """

    pearson: float
    spearman: float
    top_k_overlap: float
    k: int


def _pearson(a: Tensor, b: Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = a.norm() * b.norm()
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (ties share the mean of their positions)."""
    order = x.argsort()
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(len(x), dtype=x.dtype)
    values, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(values), dtype=x.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(values), dtype=x.dtype).index_add_(0, inverse, torch.ones_like(x))
    return (sums / counts)[inverse]


def compare(approx: Tensor, exact: Tensor, k: int = 5) -> Comparison:
    """Pearson, Spearman and top-``k`` overlap (by absolute value) of two equal-shape grids."""
    if approx.shape != exact.shape:
        raise InterpError(f"compare needs grids of one shape, got {tuple(approx.shape)} and {tuple(exact.shape)}")
    a, e = approx.detach().flatten().double().cpu(), exact.detach().flatten().double().cpu()
    if not 1 <= k <= len(a):
        raise InterpError(f"k must lie in 1..{len(a)} (the number of cells), got {k}")
    top_a = set(a.abs().topk(k).indices.tolist())
    top_e = set(e.abs().topk(k).indices.tolist())
    return Comparison(
        pearson=_pearson(a, e),
        spearman=_pearson(_ranks(a), _ranks(e)),
        top_k_overlap=len(top_a & top_e) / k,
        k=k,
    )
