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
5. *Key/value prefix.* A patch at position ``p`` cannot change any activation at positions
   before ``p`` (causal attention). With ``kv_prefix=True`` the corrupted run keeps its HF
   key/value cache (a ``DynamicCache``), and a chunk of cells whose positions are all ``>= p``
   runs only positions ``p..`` on a copy of that cache truncated to the first ``p``
   positions (``position_ids`` ``p..``, full-length attention mask). Combined with resuming:
   chunks hold one layer's cells, grouped into runs of consecutive positions by a small cost
   model (fewer tokens vs fewer forwards). The unembedding is then deferred and batched over
   many cells, so its (large) weight is read once per batch of cells, not once per forward.
   Families whose cache is not a ``DynamicCache`` holding every position fall back to the
   full-length path (as does ``kv_prefix=False``, and cells patching all positions).

Memory: a forward holds ``chunk_size * batch`` copies; by default ``chunk_size`` keeps that
under ``TOKEN_BUDGET`` tokens. Chunked and unchunked sweeps agree.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import ExitStack

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformers import DynamicCache, DynamicLayer
from transformers.cache_utils import DynamicSlidingWindowLayer

from interp.hook_names import HookPoint, block_hook
from interp.hooks import HookSession, StopForward
from interp.interventions import as_callable
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
    kv_prefix: bool = True,
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
        kv_prefix: compute each patched run from its patched position on, reusing the
            corrupted run's keys and values before it (where the family's cache allows).

    Returns:
        ``[n_layers, n_pos]``: ``result[l, p]`` is the metric with ``blocks.{l}.hook_{hook}``
        at position ``p`` patched.
    """
    point = sweep_point(lm, hook)
    seq = lm.to_tokens(corrupted)[0].shape[1]
    cells = [(layer, pos, None) for layer in range(lm.n_layers) for pos in range(seq)]
    values = _sweep(lm, corrupted, clean, metric, point, cells, 1, chunk_size, resume, skip_unchanged, progress, kv_prefix)
    return values.reshape(lm.n_layers, seq)


def patch_layers(
    lm, corrupted, clean, metric: Metric, hook: str = "resid_pre", chunk_size: int | None = None,
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool | None = None,
    kv_prefix: bool = True,
) -> Float[Tensor, " layer"]:
    """Patch ``hook`` at every position of one layer at a time: ``[n_layers]``.

    Arguments as for ``patch_sweep``.
    """
    point = sweep_point(lm, hook)
    cells = [(layer, None, None) for layer in range(lm.n_layers)]
    return _sweep(lm, corrupted, clean, metric, point, cells, 1, chunk_size, resume, skip_unchanged, progress, kv_prefix)


def patch_heads(
    lm, corrupted, clean, metric: Metric, chunk_size: int | None = None,
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool | None = None,
    kv_prefix: bool = True,
) -> Float[Tensor, "layer head"]:
    """Patch each attention head's output at all positions: ``[n_layers, n_heads]``.

    A head's output is its ``d_head`` slice of the attention output projection's input
    (TransformerLens's ``hook_z``; ``get_act_patch_attn_head_out_all_pos``). Families
    without a row in ``interp.patching.heads.OUT_PROJ`` raise ``UnsupportedArchitecture``.
    Other arguments as for ``patch_sweep``.
    """
    heads = n_heads(lm)
    cells = [(layer, None, head) for layer in range(lm.n_layers) for head in range(heads)]
    values = _sweep(lm, corrupted, clean, metric, HEADS, cells, heads, chunk_size, resume, skip_unchanged, progress, kv_prefix)
    return values.reshape(lm.n_layers, heads)


def baseline_metric(lm, prompts, metric: Metric) -> Tensor:
    """``metric`` on the unpatched run's last-position logits (subtract it from a sweep to get
    effects, the quantity ``attribution_sweep`` estimates)."""
    return scalar(metric(lm.run(prompts, positions=-1).logits[:, 0]))


# -- the engine ------------------------------------------------------------------------------
def _capture(
    lm, ids, point: str, resume: bool, logits: bool = True, kv: bool = False, defer: bool = False
) -> tuple[dict[int, Tensor], dict[int, Tensor], Tensor | None, int | None, object, Tensor | None]:
    """One run: ``point`` at every layer (all positions), ``resid_pre`` per layer (if
    ``resume``), last-position logits (if ``logits`` and not ``defer``), the blocks' output
    arity, (if ``kv``) the HF key/value cache of the run (else ``None``), and (if ``logits``)
    the unembedding's input at the last position. With ``defer`` the forward stops there, and
    the logits are ``None`` (the caller unembeds later, batched with other rows)."""
    acts: dict[int, Tensor] = {}
    found: dict[str, object] = {}
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

        def last_position(module, args):
            # Captures keep every position, the unembedding only the last one.
            found["hidden"] = args[0][:, -1].detach()
            if defer:
                raise StopForward
            return (args[0][:, -1:],) + tuple(args[1:])

        stack.callback(blocks[0].register_forward_hook(record).remove)
        stack.callback(lm.unembed.register_forward_pre_hook(last_position).remove)
        if kv:
            def cache_on(module, args, kwargs):
                found["cache"] = DynamicCache(config=lm.model.config)
                return args, {**kwargs, "use_cache": True, "past_key_values": found["cache"]}

            stack.callback(lm.model.register_forward_pre_hook(cache_on, with_kwargs=True).remove)
        run = lm.run(ids, capture=names, logits=logits or not names or kv)
    if point != HEADS:
        acts = {layer: run.cache[block_hook(layer, point)] for layer in range(lm.n_layers)}
    resid = {layer: run.cache[block_hook(layer, "resid_pre")] for layer in range(lm.n_layers)} if resume else {}
    last = run.logits[:, -1] if run.logits is not None else None
    return acts, resid, last, found.get("arity"), found.get("cache"), found.get("hidden")


# model -> whether its logits are exactly ``unembed(final hidden state)`` (no scaling or
# capping after the unembedding), which deferring the unembedding relies on. Checked once.
_PLAIN_UNEMBED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _prefix_kv(lm, cache, seq: int) -> list[tuple[Tensor, Tensor]] | None:
    """The corrupted run's per-layer ``(keys, values)`` (``[batch, kv_heads, seq, d_head]``), or
    ``None`` where the family's cache is not a ``DynamicCache`` of plain (or not yet sliding)
    layers holding every position, so the prefix shortcut would not be exact."""
    if not isinstance(cache, DynamicCache) or len(cache.layers) != lm.n_layers:
        return None
    out = []
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
            return None
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, Tensor) or not isinstance(values, Tensor) or keys.ndim != 4:
            return None
        if keys.shape[-2] != seq or values.shape[-2] != seq:  # e.g. a sliding window dropped some
            return None
        out.append((keys, values))
    return out


def _prefix_cache(lm, kv: list[tuple[Tensor, Tensor]], prefix: int, copies: int) -> DynamicCache:
    """A fresh cache holding the first ``prefix`` positions of ``kv``, repeated ``copies``
    times along the batch (copy-major, as ``ids.repeat(copies, 1)``)."""
    cache = DynamicCache(config=lm.model.config)
    device = lm.device
    for i, (keys, values) in enumerate(kv):
        cache.update(keys[:, :, :prefix].to(device).repeat(copies, 1, 1, 1),
                     values[:, :, :prefix].to(device).repeat(copies, 1, 1, 1), i)
    return cache


def _suffix_run(
    lm, ids: Tensor, prefix: int, cache: DynamicCache | None, writes: dict[HookPoint, Callable]
) -> Float[Tensor, "batch d_model"]:
    """The unembedding's input at the last position of the unpadded ``ids``, computed at
    positions ``prefix..`` only, the earlier positions' keys and values coming from ``cache``
    (``None`` when ``prefix`` is 0). ``writes`` see the activations of positions ``prefix..``.
    The forward stops before the unembedding (``_unembed``, batched over many runs, follows)."""
    n, seq = ids.shape
    device = lm.device
    ids = ids.to(device)
    lengths = torch.full((n,), seq, dtype=torch.long, device=device)
    session = HookSession(lm.model, lm.arch, [], writes, lengths, None, None)
    position_ids = torch.arange(prefix, seq, device=device).unsqueeze(0).expand(n, -1)
    mask = torch.ones(n, seq, dtype=torch.long, device=device)
    found: list[Tensor] = []

    def stop(module, args):
        found.append(args[0][:, -1].detach())
        raise StopForward

    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(session.attached())
        stack.callback(lm.unembed.register_forward_pre_hook(stop).remove)
        try:
            lm.model(input_ids=ids[:, prefix:], attention_mask=mask, position_ids=position_ids,
                     past_key_values=cache, use_cache=cache is not None)
        except StopForward:
            pass
    return found[0]


UNEMBED_ROWS = 256  # rows per unembedding matmul of the deferred logits


def _unembed(lm, hidden: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows vocab"]:
    with torch.no_grad():
        return lm.unembed(hidden.unsqueeze(1))[:, 0].detach()


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


def _chunks(cells: list[Cell], size: int, key: Callable[[Cell], object] | None) -> list[list[Cell]]:
    """Consecutive runs of ``cells`` of at most ``size``, a new one wherever ``key`` changes."""
    chunks: list[list[Cell]] = []
    for cell in cells:
        if not chunks or len(chunks[-1]) >= size or (key is not None and key(chunks[-1][0]) != key(cell)):
            chunks.append([])
        chunks[-1].append(cell)
    return chunks


# Cost model of one forward for choosing chunks on the kv path, in multiply-adds. A block run
# costs ~12 d_model^2 per token and row, plus reading the block's weights, which costs about
# as much as WEIGHT_ROWS more token-rows (small batches are bandwidth-bound on CPU), plus
# Python overhead per forward and per block (what a core multiply-adds in ~1 ms / ~0.1 ms).
WEIGHT_ROWS = 8
FORWARD_MACS = 15_000_000
BLOCK_MACS = 1_500_000


def _kv_chunks(lm, cells: list[Cell], size: int, batch: int, seq: int, resume: bool) -> list[list[Cell]]:
    """Chunks for the kv path: cells of one layer (with ``resume``), positions grouped into
    consecutive runs of at most ``size`` cells. A chunk computes positions ``min(pos)..`` only,
    so small groups save tokens and large ones save per-forward overhead; the grouping
    minimising the cost model (dynamic programming over each layer's sorted positions) wins.
    Cells patching all positions (``pos is None``) are chunked as before."""
    whole = [c for c in cells if c[1] is None]
    if whole:
        return _chunks(whole, size, (lambda c: c[0]) if resume else None) + _kv_chunks(
            lm, [c for c in cells if c[1] is not None], size, batch, seq, resume)
    by_layer: dict[int, list[Cell]] = {}
    for cell in cells:
        by_layer.setdefault(cell[0] if resume else 0, []).append(cell)
    per_token = 12 * lm.d_model ** 2
    chunks: list[list[Cell]] = []
    for start, group in sorted(by_layer.items()):
        group.sort(key=lambda c: (c[1], c))
        blocks = lm.n_layers - start
        best = [0.0] + [float("inf")] * len(group)
        cut = [0] * (len(group) + 1)
        for j in range(1, len(group) + 1):
            for i in range(max(0, j - size), j):
                tokens = (j - i) * batch * (seq - group[i][1])
                cost = best[i] + FORWARD_MACS + blocks * (BLOCK_MACS + (tokens + WEIGHT_ROWS) * per_token)
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        j, parts = len(group), []
        while j > 0:
            parts.append(group[cut[j]:j])
            j = cut[j]
        chunks.extend(reversed(parts))
    return chunks


def _sweep(lm, corrupted, clean, metric, point, cells, groups, chunk_size, resume, skip_unchanged, progress,
           kv_prefix=True) -> Tensor:
    corr_ids, clean_ids = prompt_pair(lm, corrupted, clean)
    batch, seq = corr_ids.shape
    kv_prefix = kv_prefix and any(c[1] is not None and c[1] > 0 for c in cells)
    clean_acts, _, _, _, _, _ = _capture(lm, clean_ids, point, resume=False, logits=False)
    plain = _PLAIN_UNEMBED.get(lm.model) if kv_prefix else None
    corr_acts, corr_resid, corr_logits, arity, corr_cache, corr_hidden = _capture(
        lm, corr_ids, point, resume, kv=kv_prefix, defer=bool(plain))
    kv = _prefix_kv(lm, corr_cache, seq) if kv_prefix else None
    if kv is not None and plain is None:  # first kv sweep of this model: check, then trust
        plain = torch.allclose(_unembed(lm, corr_hidden), corr_logits, rtol=1e-5, atol=1e-5)
        _PLAIN_UNEMBED[lm.model] = plain
    if kv is None and corr_logits is None:  # deferred, but this family's cache cannot be reused
        corr_logits = _unembed(lm, corr_hidden)
    if kv is not None and not plain:
        kv = None
    out = torch.empty(len(cells))
    index = {cell: i for i, cell in enumerate(cells)}
    todo, skipped = [], []
    for cell in cells:
        if skip_unchanged and _unchanged(cell, clean_acts, corr_acts, groups):
            skipped.append(index[cell])
        else:
            todo.append(cell)
    if chunk_size is None:
        chunk_size = max(1, TOKEN_BUDGET // (batch * seq))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of patched runs, got {chunk_size}")
    if kv is not None:
        chunks = _kv_chunks(lm, todo, chunk_size, batch, seq, resume)
    else:
        chunks = _chunks(todo, chunk_size, (lambda c: c[0]) if resume else None)
    show = len(chunks) >= 8 if progress is None else progress
    device = lm.device
    # The kv path defers the unembedding: one matmul over many cells' last hidden states reads
    # the (large) unembedding matrix once instead of once per forward.
    pending: list[tuple[Cell | None, Tensor]] = []
    baseline = torch.tensor(float("nan"))
    if corr_logits is not None:
        baseline = scalar(metric(corr_logits)).detach().float()
    else:  # the corrupted run's own unembedding joins the first batch (entry ``None``)
        pending.append((None, corr_hidden))

    def flush() -> None:
        nonlocal baseline
        while pending:
            part = pending[:max(1, UNEMBED_ROWS // batch)]
            del pending[:len(part)]
            logits = _unembed(lm, torch.cat([h for _, h in part]))
            for i, (cell, _) in enumerate(part):
                value = scalar(metric(logits[i * batch:(i + 1) * batch])).detach().float()
                if cell is None:
                    baseline = value
                else:
                    out[index[cell]] = value

    for chunk in tqdm(chunks, desc=f"patching {point}", disable=not show, leave=False):
        n = len(chunk)
        # Positions before ``prefix`` are unchanged by every patch of the chunk: their keys and
        # values come from the corrupted run and only positions ``prefix..`` are computed.
        prefix = 0 if kv is None or any(c[1] is None for c in chunk) else min(c[1] for c in chunk)
        mask = _cell_mask(chunk, batch, seq, groups, device)[:, prefix:]
        writes = {}
        for layer in sorted({c[0] for c in chunk}):
            mine = torch.tensor([i for i, c in enumerate(chunk) if c[0] == layer], device=device)
            rows = (mine.unsqueeze(1) * batch + torch.arange(batch, device=device)).flatten()
            src = clean_acts[layer][:, prefix:].to(device).repeat(len(mine), 1, 1)
            writes[layer] = _writer(src, rows, mask[rows], groups)
        start = min(c[0] for c in chunk) if resume else 0
        with ExitStack() as stack:
            if start > 0:
                resid = corr_resid[start][:, prefix:].to(device).repeat(n, 1, 1)
                stack.enter_context(start_at(lm, start, resid, arity))
            if point == HEADS:
                stack.enter_context(head_hooks(lm, writes=writes))
                interventions = {}
            else:
                interventions = {block_hook(layer, point): fn for layer, fn in writes.items()}
            if kv is None:
                logits = lm.run(corr_ids.repeat(n, 1), positions=-1, interventions=interventions or None).logits[:, 0]
            else:
                cache = _prefix_cache(lm, kv, prefix, n) if prefix > 0 else None
                points = {p: as_callable(fn, name) for name, fn in interventions.items() for p in lm.resolve(name)}
                hidden = _suffix_run(lm, corr_ids.repeat(n, 1), prefix, cache, points)
                pending.extend((cell, hidden[i * batch:(i + 1) * batch]) for i, cell in enumerate(chunk))
                if len(pending) * batch >= UNEMBED_ROWS:
                    flush()
                continue
        for i, cell in enumerate(chunk):
            out[index[cell]] = scalar(metric(logits[i * batch:(i + 1) * batch])).detach().float()
    flush()
    out[skipped] = baseline
    return out
