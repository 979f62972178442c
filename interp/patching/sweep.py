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
3. *Last position only.* ``forward(..., positions=-1)`` restricts the unembedding (and to a
   ``TokenMetric``'s columns, its logits).
4. *Unchanged cells.* Where the clean and corrupted activations of a cell are bitwise equal
   (e.g. positions before the first differing token), the patched run *is* the corrupted
   run, so the cell gets the corrupted run's metric without a forward
   (``skip_unchanged=True``).
5. *Key/value prefix* (``kv_prefix=True``, ``interp.patching.kv``). A patch at position ``p``
   cannot change any activation before ``p`` (causal attention): a chunk of cells at positions
   ``>= p`` computes positions ``p..`` only, on the corrupted run's keys and values for the
   positions before. Chunks hold one layer's cells (with resuming), packed one after the
   other along the sequence under a 4-D attention mask, no padding
   (``interp.patching.packed``; ``sdpa`` and ``eager`` attention), or else batched in runs of
   consecutive positions grouped by a small cost model (``interp.patching.chunks``).
6. *The final block's FFN at the last position only.* Nothing reads the final block's output
   at the other positions, so its FFN runs at the last one (``interp.patching.kv``; checked
   once per model, ``_LAST_FFN``).
7. *The final layer's ``resid_pre`` on the clean keys and values.* Such a patch at ``p``
   changes only that layer's keys and values at ``p``, to the clean run's: its cells run the
   last position alone (the clean and corrupted prompts share one capture forward).
8. *Batched unembedding.* The unembedding is deferred and run over many cells' last hidden
   states at once (in blocks of the vocabulary, ``interp.patching.unembed``), so its (large)
   weight is read once per batch of cells; a ``TokenMetric``
   (``interp.patching.metrics.logit_diff``) gets only the columns it reads.
Items 5-8 need a family whose HF cache is a ``DynamicCache`` holding every position and whose
logits are its unembedding's output; others take the full-length path, as does
``kv_prefix=False``.

Memory: a forward holds ``chunk_size * batch`` copies of the prompt (and on the key/value path
their keys and values at every layer); by default ``chunk_size`` keeps that under
``TOKEN_BUDGET`` tokens. Chunked and unchunked sweeps agree.

Modules: this one (the entry points and the engine), ``patches`` (patch building), ``kv``
(runs on the key/value prefix), ``packed`` (packed runs), ``unembed`` (deferred unembedding).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.errors import InterpError
from interp.forward import forward
from interp.hook_names import block_hook
from interp.patching.chunks import Cell, chunks, kv_chunks
from interp.patching.inputs import prompt_pair, scalar, sweep_point
from interp.patching.kv import kv_chunk, prefix_cache, prefix_kv, window_run
from interp.patching.packed import packable, packed_chunk
from interp.patching.patches import HEADS, Captured, Patches, unchanged
from interp.patching.resume import output_arity
from interp.patching.metrics import TokenMetric
from interp.patching.unembed import DeferredUnembed, unembed

Metric = Callable[[Float[Tensor, "batch vocab"]], Tensor]

TOKEN_BUDGET = 16384  # copies x tokens per forward when chunk_size is None
UNEMBED_ROWS = 256  # rows per unembedding matmul of the deferred logits
# Packed runs (``interp.patching.packed``): tokens per forward, cached prefix included, per
# d_model: their attention (which grows with the square of the tokens) then costs at most
# about a quarter of their blocks' matmuls.
PACK_WIDTH = 1.5


@dataclass(frozen=True)
class SweepOptions:
    """How a sweep computes (every option gives the same numbers); see ``patch_sweep``."""

    chunk_size: int | None = None
    resume: bool = True
    skip_unchanged: bool = True
    progress: bool = False
    kv_prefix: bool = True


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
    values = _sweep(lm, corrupted, clean, metric, point, cells, 1, SweepOptions(chunk_size, resume, skip_unchanged, progress, kv_prefix))
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
    return _sweep(lm, corrupted, clean, metric, point, cells, 1, SweepOptions(chunk_size, resume, skip_unchanged, progress, kv_prefix))


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
    values = _sweep(lm, corrupted, clean, metric, HEADS, cells, heads, SweepOptions(chunk_size, resume, skip_unchanged, progress, kv_prefix))
    return values.reshape(lm.n_layers, heads)


def baseline_metric(lm, prompts, metric: Metric) -> Tensor:
    """``metric`` on the unpatched run's last-position logits (subtract it from a sweep to get
    effects, the quantity ``attribution_sweep`` estimates)."""
    return scalar(metric(lm.run(prompts, positions=-1).logits[:, 0]))


# -- the engine ------------------------------------------------------------------------------
def _capture(lm, ids, point: str, resume: bool, logits: bool = True, kv: bool = False, defer: bool = False) -> Captured:
    """One unpatched run: ``point`` at every layer (all positions), ``resid_pre`` per layer (if
    ``resume``), last-position logits (if ``logits`` and not ``defer``), the blocks' output
    arity, (if ``kv``) the HF key/value cache, and the unembedding's input at the last
    position. With ``defer`` the forward stops there (the caller unembeds later, batched)."""
    acts: dict[int, Tensor] = {}
    found: dict[str, object] = {}
    names = (["resid_pre"] if resume else []) + [point]
    with ExitStack() as stack:

        def record(module, args, output):
            found["arity"] = output_arity(output)

        stack.callback(lm.model.get_submodule(lm.arch.blocks)[0].register_forward_hook(record).remove)
        if logits or kv:
            end = "unembed" if defer else "logits"
        else:
            end = "hooks" if names else "unembed"
        # Captures keep every position, the unembedding only the last one.
        out = forward(lm, ids, capture=[p for n in names for p in lm.resolve(n)], unembed_last=True, hidden=True,
                      end=end, use_cache=kv)
    # [batch, seq, d] (hook_z's heads flattened head-major, so a head is a group of d)
    acts = {layer: out.captures[block_hook(layer, point)].flatten(2) for layer in range(lm.n_layers)}
    resid = {layer: out.captures[block_hook(layer, "resid_pre")] for layer in range(lm.n_layers)} if resume else {}
    last = out.logits[:, -1] if out.logits is not None else None
    hidden = out.hidden[:, -1] if out.hidden is not None else None
    return Captured(acts, resid, last, found.get("arity"), out.past if kv else None, hidden)


def _rows(captured: Captured, rows: slice) -> Captured:
    """The ``rows`` prompts of a capture run of several (without its cache, see ``_split_kv``)."""
    cut = lambda x: None if x is None else x[rows]  # noqa: E731
    return Captured({l: a[rows] for l, a in captured.acts.items()}, {l: r[rows] for l, r in captured.resid.items()},
                    cut(captured.logits), captured.arity, None, cut(captured.hidden))


def _split_kv(kv, batch: int):
    """Per-layer keys and values of a run of ``[corrupted; clean]``, split into the two."""
    if kv is None:
        return None, None
    return [(k[:batch], v[:batch]) for k, v in kv], [(k[batch:], v[batch:]) for k, v in kv]


# model -> whether its logits are exactly ``unembed(final hidden state)`` (no scaling or
# capping after the unembedding), which deferring the unembedding relies on. Checked once.
_PLAIN_UNEMBED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()
# model -> whether running its final block's FFN at the last position only gives that
# position's hidden state (``interp.patching.kv.last_ffn_only``). Checked once.
_LAST_FFN: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _last_ffn_ok(lm, ids: Tensor, hidden: Tensor) -> bool:
    ok = _LAST_FFN.get(lm.model)
    if ok is None:
        short = window_run(lm, ids, 0, prefix_cache(lm, [], 0, 1), {}, last_ffn=True)
        ok = short.shape == hidden.shape and torch.allclose(short, hidden, rtol=1e-5, atol=1e-5)
        _LAST_FFN[lm.model] = ok
    return ok


def _sweep(lm, corrupted, clean, metric: Metric, point: str, cells: list[Cell], groups: int,
           options: SweepOptions) -> Tensor:
    """``metric`` of each cell's patched run, ``[len(cells)]``; ``groups`` heads per layer
    (1 for whole activations)."""
    if not lm.local_modules:  # NDIF runs the model: it cannot start at a block (resume) or reuse our cache
        options = dataclasses.replace(options, resume=False, kv_prefix=False)
    resume, kv_prefix = options.resume, options.kv_prefix
    corr_ids, clean_ids = prompt_pair(lm, corrupted, clean)
    batch, seq = corr_ids.shape
    plain = _PLAIN_UNEMBED.get(lm.model) if kv_prefix else None
    if kv_prefix and point == "resid_pre":
        # Final-layer cells take the clean run's keys and values (``interp.patching.kv``), so
        # the clean run is as long as the corrupted one: both are one forward.
        both = _capture(lm, torch.cat([corr_ids, clean_ids]), point, resume, kv=True, defer=bool(plain))
        corr, clean = _rows(both, slice(0, batch)), _rows(both, slice(batch, None))
        kv, clean_kv = _split_kv(prefix_kv(lm, both.cache, seq), batch)
    else:
        clean = _capture(lm, clean_ids, point, resume=False, logits=False)
        corr = _capture(lm, corr_ids, point, resume, kv=kv_prefix, defer=bool(plain))
        kv, clean_kv = prefix_kv(lm, corr.cache, seq) if kv_prefix else None, None
    corr_logits = corr.logits
    if kv is not None and plain is None:  # first kv sweep of this model: check, then trust
        # (the unembedding's device may differ from the logits', which are where the inputs went)
        plain = torch.allclose(unembed(lm, corr.hidden).to(corr_logits.device), corr_logits, rtol=1e-5, atol=1e-5)
        _PLAIN_UNEMBED[lm.model] = plain
    if kv is None and corr_logits is None:  # deferred, but this family's cache cannot be reused
        corr_logits = unembed(lm, corr.hidden)
    if kv is not None and not plain:
        kv = None
    last_ffn = kv is not None and _last_ffn_ok(lm, corr_ids, corr.hidden)
    clean_kv = clean_kv if kv is not None else None
    out = torch.empty(len(cells))
    index = {cell: i for i, cell in enumerate(cells)}
    todo, skipped = [], []
    for cell in cells:
        if options.skip_unchanged and unchanged(cell, clean.acts, corr.acts, groups):
            skipped.append(index[cell])
        else:
            todo.append(cell)
    chunk_size = options.chunk_size
    if chunk_size is None:
        chunk_size = max(1, TOKEN_BUDGET // (batch * seq))
    if chunk_size < 1:
        raise InterpError(f"chunk_size must be a positive number of patched runs, got {chunk_size}")
    pack = kv is not None and resume and packable(lm, seq)
    if kv is not None:
        plan = kv_chunks(lm, todo, chunk_size, batch, seq, resume, final_alone=clean_kv is not None,
                         pack=int(PACK_WIDTH * lm.d_model) if pack else None)
    else:
        plan = chunks(todo, chunk_size, (lambda c: c[0]) if resume else None)
    deferred = DeferredUnembed(lm, metric, batch, out, index, columns=kv is not None, rows=UNEMBED_ROWS)
    if kv is not None:
        # The corrupted run's own unembedding joins the first batch (entry ``None``), so that
        # unchanged cells get the number patched runs would, whatever this model's history.
        deferred.add([None], corr.hidden)
    else:
        deferred.baseline = scalar(metric(corr_logits)).detach().float()
    patches = Patches(lm, point, groups, corr_ids, clean.acts, corr, resume, clean_kv)
    named = isinstance(metric, TokenMetric)
    vocab, score = (list(metric.tokens), metric.of_columns) if named else (None, metric)
    if named and metric.tokens[-1] >= lm.d_vocab:
        raise InterpError(f"{metric.description} reads token {metric.tokens[-1]}, outside the vocabulary of {lm.d_vocab}")
    for chunk in tqdm(plan, desc=f"patching {point}", disable=not options.progress, leave=False):
        if kv is not None:
            run = packed_chunk if pack and patches.packs(chunk) else kv_chunk
            run(lm, patches, corr_ids, chunk, kv, last_ffn, deferred.add)
            continue
        context, interventions = patches.setup(chunk, 0)
        _, writes = lm._points((), interventions)
        with context:  # a TokenMetric's columns only: all a trace on NDIF sends back
            logits = forward(lm, corr_ids.repeat(len(chunk), 1), writes=writes, positions=-1, vocab=vocab).logits[:, 0]
        for i, cell in enumerate(chunk):
            out[index[cell]] = scalar(score(logits[i * batch:(i + 1) * batch])).detach().float()
    deferred.flush()
    out[skipped] = deferred.baseline
    return out
