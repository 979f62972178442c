"""Exact activation patching: many patched runs of the corrupted prompt, batched.

Semantics are TransformerLens's ``transformer_lens.patching`` (``get_act_patch_resid_pre``,
``..._resid_mid``, ``..._attn_out``, ``..._mlp_out``, ``..._attn_head_out_all_pos``, and
``generic_activation_patch`` on ``resid_post``): for each cell, run ``corrupted`` with the
activation at that cell replaced by the one from ``clean``, and apply ``metric``. One
difference: TransformerLens's metric receives the full logits ``[batch, pos, vocab]``; ours
receives the last position's logits ``[batch, vocab]`` (a TransformerLens metric that reads
``logits[:, -1]`` gives the same numbers), so the unembedding runs at one position only.

How it is fast, without changing any number beyond float rounding:

1. *Batching.* The corrupted prompt is repeated once per cell, and one intervention per hook
   writes each copy's own rows (``[cell * batch + b]``), so a chunk of cells is one forward.
2. *Resuming.* A patch at layer ``l`` cannot change blocks below ``l``: with ``resume=True``
   a chunk holds cells of one layer and starts at block ``l`` from the corrupted run's cached
   ``resid_pre[l]`` (``interp.patching.resume``).
3. *Last position only.* ``lm.run(..., positions=-1)`` restricts the unembedding.
4. *Unchanged cells.* Where the clean and corrupted activations of a cell are bitwise equal
   (e.g. positions before the first differing token), the patched run *is* the corrupted
   run, so the cell gets the corrupted run's metric without a forward
   (``skip_unchanged=True``).

Memory: a forward holds ``chunk_size * batch`` copies; by default ``chunk_size`` keeps that
under ``TOKEN_BUDGET`` tokens. Chunked and unchunked sweeps agree.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.hook_names import block_hook
from interp.patching.heads import head_hooks, n_heads
from interp.patching.inputs import prompt_pair, scalar, sweep_point
from interp.patching.resume import output_arity, start_at

Metric = Callable[[Float[Tensor, "batch vocab"]], Tensor]
Cell = tuple[int, int | None, int | None]  # (layer, position or None = all, head or None = all)

TOKEN_BUDGET = 16384  # copies x tokens per forward when chunk_size is None
HEADS = "z"  # internal point name: the attention output projection's input


def patch_sweep(
    lm, corrupted, clean, metric: Metric, hook: str = "resid_pre", chunk_size: int | None = None,
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool | None = None,
) -> Float[Tensor, "layer pos"]:
    """Patch ``hook`` at each (layer, position) from ``clean`` into ``corrupted``.

    Args:
        lm: an ``interp.LM``.
        corrupted, clean: prompts (strings or token ids), one clean per corrupted, all of the
            same token length.
        metric: ``f(logits[batch, vocab]) -> scalar tensor``, on the patched run's last
            position.
        hook: ``"resid_pre"``, ``"attn_out"``, ``"resid_mid"`` (sequential families only),
            ``"mlp_out"`` or ``"resid_post"``.
        chunk_size: patched runs per forward (default: as many as fit ``TOKEN_BUDGET``).
        resume: start each patched run at its layer from the cached residual stream.
        skip_unchanged: give cells whose clean and corrupted activations are equal the
            corrupted run's metric without running them.
        progress: tqdm bar over chunks (default: only for sweeps of 8 or more chunks).

    Returns:
        ``[n_layers, n_pos]``: ``result[l, p]`` is the metric with ``blocks.{l}.hook_{hook}``
        at position ``p`` patched.
    """
    point = sweep_point(lm, hook)
    seq = lm.to_tokens(corrupted)[0].shape[1]
    cells = [(layer, pos, None) for layer in range(lm.n_layers) for pos in range(seq)]
    values = _sweep(lm, corrupted, clean, metric, point, cells, 1, chunk_size, resume, skip_unchanged, progress)
    return values.reshape(lm.n_layers, seq)


def patch_layers(
    lm, corrupted, clean, metric: Metric, hook: str = "resid_pre", chunk_size: int | None = None,
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool | None = None,
) -> Float[Tensor, " layer"]:
    """Patch ``hook`` at every position of one layer at a time: ``[n_layers]``.

    Arguments as for ``patch_sweep``.
    """
    point = sweep_point(lm, hook)
    cells = [(layer, None, None) for layer in range(lm.n_layers)]
    return _sweep(lm, corrupted, clean, metric, point, cells, 1, chunk_size, resume, skip_unchanged, progress)


def patch_heads(
    lm, corrupted, clean, metric: Metric, chunk_size: int | None = None,
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool | None = None,
) -> Float[Tensor, "layer head"]:
    """Patch each attention head's output at all positions: ``[n_layers, n_heads]``.

    A head's output is its ``d_head`` slice of the attention output projection's input
    (TransformerLens's ``hook_z``; ``get_act_patch_attn_head_out_all_pos``). Families
    without a row in ``interp.patching.heads.OUT_PROJ`` raise ``UnsupportedArchitecture``.
    Other arguments as for ``patch_sweep``.
    """
    heads = n_heads(lm)
    cells = [(layer, None, head) for layer in range(lm.n_layers) for head in range(heads)]
    values = _sweep(lm, corrupted, clean, metric, HEADS, cells, heads, chunk_size, resume, skip_unchanged, progress)
    return values.reshape(lm.n_layers, heads)


def baseline_metric(lm, prompts, metric: Metric) -> Tensor:
    """``metric`` on the unpatched run's last-position logits (subtract it from a sweep to get
    effects, the quantity ``attribution_sweep`` estimates)."""
    return scalar(metric(lm.run(prompts, positions=-1).logits[:, 0]))


# -- the engine ------------------------------------------------------------------------------
def _capture(
    lm, ids, point: str, resume: bool, logits: bool = True
) -> tuple[dict[int, Tensor], dict[int, Tensor], Tensor | None, int | None]:
    """One run: ``point`` at every layer (all positions), ``resid_pre`` per layer (if
    ``resume``), last-position logits (if ``logits``), and the blocks' output arity."""
    acts: dict[int, Tensor] = {}
    found: dict[str, int | None] = {}
    blocks = lm.model.get_submodule(lm.arch.blocks)
    with ExitStack() as stack:
        names = ["resid_pre"] if resume else []
        if point == HEADS:
            acts = dict.fromkeys(range(lm.n_layers))
            stack.enter_context(head_hooks(lm, capture=acts))
        else:
            names.append(point)

        def record(module, args, output):
            found["arity"] = output_arity(output)

        stack.callback(blocks[0].register_forward_hook(record).remove)
        # Captures keep every position, the unembedding only the last one.
        stack.callback(lm.unembed.register_forward_pre_hook(_last_position).remove)
        run = lm.run(ids, capture=names, logits=logits or not names)
    if point != HEADS:
        acts = {layer: run.cache[block_hook(layer, point)] for layer in range(lm.n_layers)}
    resid = {layer: run.cache[block_hook(layer, "resid_pre")] for layer in range(lm.n_layers)} if resume else {}
    last = run.logits[:, -1] if run.logits is not None else None
    return acts, resid, last, found.get("arity")


def _last_position(module, args):
    return (args[0][:, -1:],) + tuple(args[1:])


def _cell_mask(cells: list[Cell], batch: int, seq: int, groups: int, device) -> Tensor:
    """``[len(cells) * batch, seq, groups]``: True where a copy's activation is patched."""
    mask = torch.zeros(len(cells), seq, groups, dtype=torch.bool, device=device)
    for i, (_, pos, head) in enumerate(cells):
        mask[i, slice(None) if pos is None else pos, slice(None) if head is None else head] = True
    return mask.repeat_interleave(batch, 0)


def _writer(src: Tensor, rows: Tensor, mask: Tensor, groups: int) -> Callable[[Tensor], Tensor]:
    """Write ``src`` (``[len(rows), seq, d]``) into the copies ``rows`` where ``mask`` holds."""

    def write(act: Tensor) -> Tensor:
        n, seq, d = act.shape
        old = act[rows].reshape(len(rows), seq, groups, d // groups)
        new = src.to(act.dtype).reshape(len(rows), seq, groups, d // groups)
        out = act.clone()
        out[rows] = torch.where(mask.unsqueeze(-1), new, old).reshape(len(rows), seq, d)
        return out

    return write


def _unchanged(cell: Cell, clean: dict[int, Tensor], corr: dict[int, Tensor], groups: int) -> bool:
    layer, pos, head = cell
    a, b = clean[layer], corr[layer]
    if pos is not None:
        a, b = a[:, pos], b[:, pos]
    if head is not None:
        a = a.reshape(*a.shape[:-1], groups, -1)[..., head, :]
        b = b.reshape(*b.shape[:-1], groups, -1)[..., head, :]
    return torch.equal(a, b)


def _chunks(cells: list[Cell], size: int, by_layer: bool) -> list[list[Cell]]:
    chunks: list[list[Cell]] = []
    for cell in cells:
        if not chunks or len(chunks[-1]) >= size or (by_layer and chunks[-1][0][0] != cell[0]):
            chunks.append([])
        chunks[-1].append(cell)
    return chunks


def _sweep(lm, corrupted, clean, metric, point, cells, groups, chunk_size, resume, skip_unchanged, progress) -> Tensor:
    corr_ids, clean_ids = prompt_pair(lm, corrupted, clean)
    batch, seq = corr_ids.shape
    clean_acts, _, _, _ = _capture(lm, clean_ids, point, resume=False, logits=False)
    corr_acts, corr_resid, corr_logits, arity = _capture(lm, corr_ids, point, resume)
    baseline = scalar(metric(corr_logits)).detach().float()
    out = torch.empty(len(cells))
    index = {cell: i for i, cell in enumerate(cells)}
    todo = []
    for cell in cells:
        if skip_unchanged and _unchanged(cell, clean_acts, corr_acts, groups):
            out[index[cell]] = baseline
        else:
            todo.append(cell)
    if chunk_size is None:
        chunk_size = max(1, TOKEN_BUDGET // (batch * seq))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of patched runs, got {chunk_size}")
    chunks = _chunks(todo, chunk_size, by_layer=resume)
    show = len(chunks) >= 8 if progress is None else progress
    device = lm.device
    for chunk in tqdm(chunks, desc=f"patching {point}", disable=not show, leave=False):
        n = len(chunk)
        mask = _cell_mask(chunk, batch, seq, groups, device)
        writes = {}
        for layer in sorted({c[0] for c in chunk}):
            mine = torch.tensor([i for i, c in enumerate(chunk) if c[0] == layer], device=device)
            rows = (mine.unsqueeze(1) * batch + torch.arange(batch, device=device)).flatten()
            src = clean_acts[layer].to(device).repeat(len(mine), 1, 1)
            writes[layer] = _writer(src, rows, mask[rows], groups)
        start = chunk[0][0] if resume else 0
        with ExitStack() as stack:
            if start > 0:
                stack.enter_context(start_at(lm, start, corr_resid[start].to(device).repeat(n, 1, 1), arity))
            if point == HEADS:
                stack.enter_context(head_hooks(lm, writes=writes))
                interventions = None
            else:
                interventions = {block_hook(layer, point): fn for layer, fn in writes.items()}
            logits = lm.run(corr_ids.repeat(n, 1), positions=-1, interventions=interventions).logits[:, 0]
        for i, cell in enumerate(chunk):
            out[index[cell]] = scalar(metric(logits[i * batch:(i + 1) * batch])).detach().float()
    return out
