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
5. *Key/value prefix* (``kv_prefix=True``, ``interp.patching.kv``). A patch at position ``p``
   cannot change any activation before ``p`` (causal attention): a chunk of cells at positions
   ``>= p`` computes positions ``p..`` only, on the corrupted run's keys and values for the
   positions before. Chunks hold one layer's cells (with resuming), grouped into runs of
   consecutive positions by a small cost model (``interp.patching.chunks``).
6. *The final block's FFN at the last position only.* A chunk's head run stops at the final
   block's FFN, once its attention has cached keys and values; one tail run per layer
   computes the last position of all that layer's cells together.
7. *Batched unembedding.* The unembedding is deferred and run over many cells' last hidden
   states at once, so its (large) weight is read once per batch of cells; a
   ``TokenMetric`` (``interp.patching.metrics.logit_diff``) gets only the columns it reads.
Items 5-7 need a family whose HF cache is a ``DynamicCache`` holding every position and whose
logits are its unembedding's output; others take the full-length path, as does
``kv_prefix=False``.

Memory: a forward holds ``chunk_size * batch`` copies of the prompt (and on the key/value path
their keys and values at every layer); by default ``chunk_size`` keeps that under
``TOKEN_BUDGET`` tokens. A tail run waits for at most ``chunk_size // 2`` cells, so that their
caches and the tail's concatenated copy together stay within one chunk's. Chunked and
unchunked sweeps agree.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import ExitStack

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from interp.errors import InterpError
from interp.hook_names import block_hook
from interp.hooks import StopForward
from interp.patching.chunks import Cell, chunks, kv_chunks
from interp.patching.inputs import prompt_pair, scalar, sweep_point
from interp.patching.kv import KV, WindowSetup, concat_caches, head_run, prefix_cache, prefix_kv, window_run
from interp.patching.metrics import TokenMetric
from interp.patching.resume import output_arity, start_at

Metric = Callable[[Float[Tensor, "batch vocab"]], Tensor]

TOKEN_BUDGET = 16384  # copies x tokens per forward when chunk_size is None
HEADS = "z"  # the heads' outputs, blocks.{l}.attn.hook_z (the attention output projection's input)


def patch_sweep(
    lm, corrupted, clean, metric: Metric, hook: str = "resid_pre", chunk_size: int | None = None,
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool = False,
    kv_prefix: bool = True,
) -> Float[Tensor, "layer pos"]:
    """Patch ``hook`` at each (layer, position) from ``clean`` into ``corrupted``.

    Args:
        lm: an ``interp.LM``.
        corrupted, clean: prompts (strings or token ids), one clean per corrupted, all of the
            same token length.
        metric: ``f(logits[batch, vocab]) -> scalar tensor``, on the patched run's last
            position. A ``TokenMetric`` (``logit_diff(a, b)``, ``logit(a)``) gives the same
            numbers and lets the sweep compute only the logits it reads.
        hook: ``"resid_pre"``, ``"attn_out"``, ``"resid_mid"`` (sequential families only),
            ``"mlp_out"`` or ``"resid_post"``.
        chunk_size: patched runs per forward (default: as many as fit ``TOKEN_BUDGET``).
        resume: start each patched run at its layer from the cached residual stream.
        skip_unchanged: give cells whose clean and corrupted activations are equal the
            corrupted run's metric without running them.
        progress: a tqdm bar over chunks (off by default: library calls stay quiet).
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
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool = False,
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
    *, resume: bool = True, skip_unchanged: bool = True, progress: bool = False,
    kv_prefix: bool = True,
) -> Float[Tensor, "layer head"]:
    """Patch each attention head's output at all positions: ``[n_layers, n_heads]``.

    A head's output is its slice of ``blocks.{l}.attn.hook_z`` (TransformerLens's
    ``get_act_patch_attn_head_out_all_pos``). Families whose adapter row has no ``attn_o``
    raise ``NoHeadHooks`` (an ``UnsupportedArchitecture``). Other arguments as for
    ``patch_sweep``.
    """
    lm.resolve(HEADS)  # a family without head hooks raises here, before any work
    heads = lm.n_heads
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
        names = (["resid_pre"] if resume else []) + [point]

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
                return args, {**kwargs, "use_cache": True, "cache": found["cache"]}

            stack.callback(lm.model.register_forward_pre_hook(cache_on, with_kwargs=True).remove)
        run = lm.run(ids, capture=names, logits=logits or not names or kv)
    # [batch, seq, d] (hook_z's heads flattened head-major, so a head is a group of d)
    acts = {layer: run.cache[block_hook(layer, point)].flatten(2) for layer in range(lm.n_layers)}
    resid = {layer: run.cache[block_hook(layer, "resid_pre")] for layer in range(lm.n_layers)} if resume else {}
    last = run.logits[:, -1] if run.logits is not None else None
    return acts, resid, last, found.get("arity"), found.get("cache"), found.get("hidden")


# model -> whether its logits are exactly ``unembed(final hidden state)`` (no scaling or
# capping after the unembedding), which deferring the unembedding relies on. Checked once.
_PLAIN_UNEMBED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _cell_mask(cells: list[Cell], batch: int, seq: int, groups: int, device) -> Tensor:
    """``[len(cells) * batch, seq, groups]``: True where a copy's activation is patched."""
    mask = torch.zeros(len(cells), seq, groups, dtype=torch.bool, device=device)
    for i, (_, pos, head) in enumerate(cells):
        mask[i, slice(None) if pos is None else pos, slice(None) if head is None else head] = True
    return mask.repeat_interleave(batch, 0)


def _writer(src: Tensor, rows: Tensor, mask: Tensor, groups: int) -> Callable[[Tensor], Tensor]:
    """Write ``src`` (``[len(rows), seq, d]``) into the copies ``rows`` where ``mask`` holds
    (an activation with more axes, as hook_z's heads, is flattened to ``d`` and back)."""

    def write(act: Tensor) -> Tensor:
        shape = act.shape
        act = act.flatten(2)
        n, seq, d = act.shape
        old = act[rows].reshape(len(rows), seq, groups, d // groups)
        new = src.to(act.dtype).reshape(len(rows), seq, groups, d // groups)
        out = act.clone()
        out[rows] = torch.where(mask.unsqueeze(-1), new, old).reshape(len(rows), seq, d)
        return out.reshape(shape)

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


UNEMBED_ROWS = 256  # rows per unembedding matmul of the deferred logits


def _unembed(lm, hidden: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows vocab"]:
    with torch.no_grad():
        return lm.unembed(hidden.unsqueeze(1))[:, 0].detach()


class _Patches:
    """What every chunk of one sweep shares; ``setup`` builds a chunk's patches."""

    def __init__(self, lm, point: str, groups: int, batch: int, seq: int, clean_acts: dict[int, Tensor],
                 corr_resid: dict[int, Tensor], arity: int | None, resume: bool):
        self.lm, self.point, self.groups, self.batch, self.seq = lm, point, groups, batch, seq
        self.clean_acts, self.corr_resid, self.arity, self.resume = clean_acts, corr_resid, arity, resume

    def start(self, cells: list[Cell]) -> int:
        """The first block a chunk computes."""
        return min(c[0] for c in cells) if self.resume else 0

    def setup(self, cells: list[Cell], prefix: int) -> WindowSetup:
        """The patches of ``cells`` (copy ``i`` of the corrupted prompt patched as
        ``cells[i]``) over positions ``prefix..``, for any window of those positions.

        The forward starts at the cells' first block. A copy whose cell lies in a later block
        ``l`` has its ``resid_pre[l]`` reset to the corrupted run's before its patch, so it
        gets what starting at ``l`` would give: cells of several layers share a forward."""
        lm, batch, device = self.lm, self.batch, self.lm.device
        start = self.start(cells)
        mask = _cell_mask(cells, batch, self.seq, self.groups, device)[:, prefix:]
        patches = []  # (layer, copy rows, clean source, mask, reset source or None), positions prefix..
        for layer in sorted({c[0] for c in cells}):
            mine = torch.tensor([i for i, c in enumerate(cells) if c[0] == layer], device=device)
            rows = (mine.unsqueeze(1) * batch + torch.arange(batch, device=device)).flatten()
            src = self.clean_acts[layer][:, prefix:].to(device).repeat(len(mine), 1, 1)
            reset = None
            if self.resume and layer > start:
                reset = self.corr_resid[layer][:, prefix:].to(device).repeat(len(mine), 1, 1)
            patches.append((layer, rows, src, mask[rows], reset))

        def setup(window: slice):
            stack = ExitStack()
            if start > 0:
                resid = self.corr_resid[start][:, prefix:][:, window].to(device).repeat(len(cells), 1, 1)
                stack.enter_context(start_at(lm, start, resid, self.arity))
            writes, resets = {}, {}
            for layer, rows, src, m, reset in patches:
                writes[layer] = _writer(src[:, window], rows, m[:, window], self.groups)
                if reset is not None:
                    resets[layer] = _writer(reset[:, window], rows, torch.ones_like(m[:, window, :1]), 1)
            interventions = {block_hook(layer, "resid_pre"): fn for layer, fn in resets.items()}
            for layer, fn in writes.items():
                name = block_hook(layer, self.point)
                interventions[name] = _then(interventions[name], fn) if name in interventions else fn
            return stack, interventions

        return setup


def _then(first: Callable[[Tensor], Tensor], second: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda act: second(first(act))


class _Tails:
    """Chunks whose head runs are done, waiting for one tail run: their last position,
    computed together on their caches concatenated (cells of several layers share it, see
    ``_Patches.setup``); flushed when ``size`` cells are waiting."""

    def __init__(self, lm, patches: _Patches, ids: Tensor, size: int, done: Callable[[list[Cell], Tensor], None]):
        self.lm, self.patches, self.ids, self.size, self.done = lm, patches, ids, size, done
        self.cells: list[Cell] = []
        self.caches: list[DynamicCache] = []

    def add(self, chunk: list[Cell], cache: DynamicCache) -> None:
        if self.cells and len(self.cells) + len(chunk) > self.size:
            self.flush()
        self.cells.extend(chunk)
        self.caches.append(cache)

    def flush(self) -> None:
        if not self.cells:
            return
        cells, caches = self.cells, self.caches
        self.cells, self.caches = [], []
        seq = self.ids.shape[1]
        context, interventions = self.patches.setup(cells, seq - 1)(slice(0, 1))
        with context:
            hidden = window_run(self.lm, self.ids.repeat(len(cells), 1), seq - 1, seq, concat_caches(self.lm, caches),
                                interventions, last=True)
        self.done(cells, hidden)


def _kv_chunk(lm, patches: _Patches, ids: Tensor, chunk: list[Cell], kv: KV, tails: _Tails,
              done: Callable[[list[Cell], Tensor], None]) -> None:
    """Compute one chunk on the key/value path: its head run now, its last position later."""
    seq = ids.shape[1]
    n = len(chunk)
    # Positions before ``prefix`` are unchanged by every patch of the chunk.
    prefix = 0 if any(c[1] is None for c in chunk) else min(c[1] for c in chunk)
    if prefix == seq - 1:
        tails.add(chunk, prefix_cache(lm, kv, seq - 1, n))
        return
    cache = head_run(lm, ids.repeat(n, 1), prefix, kv, patches.start(chunk), patches.setup(chunk, prefix))
    if cache is not None:
        tails.add(chunk, cache)
        return
    context, interventions = patches.setup(chunk, prefix)(slice(None))  # computed whole
    with context:
        done(chunk, window_run(lm, ids.repeat(n, 1), prefix, seq, prefix_cache(lm, kv, prefix, n), interventions, last=True))


def _sweep(lm, corrupted, clean, metric, point, cells, groups, chunk_size, resume, skip_unchanged, progress,
           kv_prefix=True) -> Tensor:
    corr_ids, clean_ids = prompt_pair(lm, corrupted, clean)
    batch, seq = corr_ids.shape
    clean_acts, _, _, _, _, _ = _capture(lm, clean_ids, point, resume=False, logits=False)
    plain = _PLAIN_UNEMBED.get(lm.model) if kv_prefix else None
    corr_acts, corr_resid, corr_logits, arity, corr_cache, corr_hidden = _capture(
        lm, corr_ids, point, resume, kv=kv_prefix, defer=bool(plain))
    kv = prefix_kv(lm, corr_cache, seq) if kv_prefix else None
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
        raise InterpError(f"chunk_size must be a positive number of patched runs, got {chunk_size}")
    if kv is not None:
        plan = kv_chunks(lm, todo, chunk_size, batch, seq, resume)
    else:
        plan = chunks(todo, chunk_size, (lambda c: c[0]) if resume else None)
    unembed = _DeferredUnembed(lm, metric, batch, out, index, columns=kv is not None)
    if kv is not None:
        # The corrupted run's own unembedding joins the first batch (entry ``None``), so that
        # unchanged cells get the number patched runs would, whatever this model's history.
        unembed.add([None], corr_hidden)
    else:
        unembed.baseline = scalar(metric(corr_logits)).detach().float()
    patches = _Patches(lm, point, groups, batch, seq, clean_acts, corr_resid, arity, resume)
    tails = _Tails(lm, patches, corr_ids, max(1, chunk_size // 2), unembed.add)
    for chunk in tqdm(plan, desc=f"patching {point}", disable=not progress, leave=False):
        if kv is not None:
            _kv_chunk(lm, patches, corr_ids, chunk, kv, tails, unembed.add)
            continue
        context, interventions = patches.setup(chunk, 0)(slice(None))
        with context:
            logits = lm.run(corr_ids.repeat(len(chunk), 1), positions=-1, interventions=interventions or None).logits[:, 0]
        for i, cell in enumerate(chunk):
            out[index[cell]] = scalar(metric(logits[i * batch:(i + 1) * batch])).detach().float()
    tails.flush()
    unembed.flush()
    out[skipped] = unembed.baseline
    return out


class _DeferredUnembed:
    """Last hidden states of patched runs, unembedded and scored in batches of
    ``UNEMBED_ROWS`` rows: one matmul over many cells reads the (large) unembedding matrix
    once instead of once per forward. With ``columns`` and a ``TokenMetric`` over a plain
    ``nn.Linear`` unembedding, only the metric's columns are computed. The entry ``None``
    stands for the corrupted run itself (``baseline``)."""

    def __init__(self, lm, metric, batch: int, out: Tensor, index: dict[Cell, int], columns: bool):
        self.lm, self.metric, self.batch, self.out, self.index = lm, metric, batch, out, index
        self.baseline = torch.tensor(float("nan"))
        self.pending: list[tuple[Cell | None, Tensor]] = []
        self.weight = self.bias = None
        if columns and isinstance(metric, TokenMetric) and type(lm.unembed) is nn.Linear:
            vocab = lm.unembed.weight.shape[0]
            if metric.tokens[-1] >= vocab:
                raise InterpError(f"{metric.description} reads token {metric.tokens[-1]}, outside the vocabulary of {vocab}")
            rows = torch.tensor(metric.tokens, device=lm.unembed.weight.device)
            self.weight = lm.unembed.weight.detach()[rows]
            self.bias = lm.unembed.bias.detach()[rows] if lm.unembed.bias is not None else None

    def add(self, cells: list[Cell | None], hidden: Float[Tensor, "rows d_model"]) -> None:
        batch = self.batch
        self.pending.extend((cell, hidden[i * batch:(i + 1) * batch]) for i, cell in enumerate(cells))
        if len(self.pending) * batch >= UNEMBED_ROWS:
            self.flush()

    def flush(self) -> None:
        batch = self.batch
        while self.pending:
            part = self.pending[:max(1, UNEMBED_ROWS // batch)]
            del self.pending[:len(part)]
            hidden = torch.cat([h for _, h in part])
            if self.weight is not None:
                with torch.no_grad():
                    logits = nn.functional.linear(hidden.to(self.weight.dtype), self.weight, self.bias)
                score = self.metric.of_columns
            else:
                logits, score = _unembed(self.lm, hidden), self.metric
            for i, (cell, _) in enumerate(part):
                value = scalar(score(logits[i * batch:(i + 1) * batch])).detach().float()
                if cell is None:
                    self.baseline = value
                else:
                    self.out[self.index[cell]] = value
