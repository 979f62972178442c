"""The one forward pass: mask, position ids, key/value cache, hooks, kept columns, where to stop.

Every forward of the toolkit (``LM.run``, ``LM.run_continuation``, the patching key/value
path) is a ``forward`` call, so padding, positions, caches and hooks are set in one place:

* the attention mask is the cached positions' mask (``past_mask``) then the new tokens';
* position ids count each row's real tokens over both, ``cumsum(mask) - 1``: a left-padded
  prompt, an unpadded window continuing a cache and a right-padded continuation all get the
  ids the sequence would have alone (a padding column gets a neighbour's id; no real token
  sees it, the mask hides it);
* ``interp.hooks.HookSession`` captures and writes the named points;
* the unembedding runs at the kept columns only (or at the last column): a probe of one
  position never computes ``[batch, seq, vocab]``;
* the pass ends at the logits, after the deepest point asked for (``end="hooks"``), at the
  unembedding's input (``"unembed"``), or as the final block's FFN is about to run
  (``"last_mlp"``: the final block's attention has cached its keys and values by then).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import DynamicCache

from interp.errors import InterpError
from interp.hook_names import HookPoint
from interp.hooks import HookSession, StopForward, WriteFn, eager_attention
from interp.positions import Positions, columns

ENDS = ("logits", "hooks", "unembed", "last_mlp")


@dataclass
class Forward:
    """What ``forward`` computed.

    Attributes:
        logits: ``[batch, n_cols, vocab]`` at the unembedding's columns (``None`` if the pass
            ended before the unembedding).
        captures: full hook name -> captured tensor (at the kept columns).
        hidden: the unembedding's input at its columns ``[batch, n_cols, d_model]``, with
            ``end="unembed"`` or ``hidden=True`` (else ``None``).
        past: the HF key/value cache after the pass (with ``use_cache`` or a ``past``).
        columns: the kept columns ``[batch, n_pos]``, or ``None`` for all.
    """

    logits: Float[Tensor, "batch n_cols vocab"] | None
    captures: dict[str, Tensor]
    hidden: Float[Tensor, "batch n_cols d_model"] | None
    past: object
    columns: Int[Tensor, "batch n_pos"] | None


def forward(
    lm,
    ids: Int[Tensor, "batch seq"],
    mask: Int[Tensor, "batch seq"] | None = None,
    *,
    past=None,
    past_mask: Int[Tensor, "batch past"] | None = None,
    capture: Iterable[HookPoint] = (),
    writes: Mapping[HookPoint, WriteFn] | None = None,
    positions: Positions = None,
    unembed_last: bool = False,
    end: str = "logits",
    hidden: bool = False,
    hidden_at_all: bool = False,
    use_cache: bool = False,
    grad: bool = False,
    attention: Float[Tensor, "batch 1 seq past_seq"] | Bool[Tensor, "batch 1 seq past_seq"] | None = None,
    position_ids: Int[Tensor, "batch seq"] | None = None,
    vocab: Sequence[int] | None = None,
    capture_device: torch.device | None = None,
) -> Forward:
    """One forward of ``lm`` over ``ids``, continuing the HF cache ``past`` if given.

    Args:
        ids, mask: the new tokens and their attention mask (``None``: all real).
        past, past_mask: an HF ``Cache`` holding the positions before ``ids`` (it receives
            these), and its mask (``None``: all real, as many as the cache holds).
        capture, writes: points to capture; point -> ``f(activation, lengths)`` to write, where
            ``lengths`` counts each row's real tokens over past and new ones.
        positions: prompt-relative positions kept for captures and logits (``interp.positions``,
            counted over past and new tokens); ``None`` keeps all.
        unembed_last: unembed the last column only (captures keep ``positions``).
        end: one of ``ENDS`` (see the module docstring).
        hidden: also return the unembedding's input.
        hidden_at_all: that input at every column, whatever ``positions`` keep for captures (a
            reward model reads its score at a column of its own).
        use_cache: fill a new ``DynamicCache`` (returned as ``past``) when none is given.
        grad: keep the autograd graph (captures and logits not detached).
        attention, position_ids: a custom attention mask replacing the causal one (additive: 0
            where a query may attend, the dtype's minimum elsewhere; or boolean, for ``sdpa``), and the position ids to go
            with it, for sequences that pack several continuations of one context
            (``probes.shared_context``); ``mask`` still says which tokens are real.
        vocab: keep these logit columns only (``logits[..., vocab]``): a metric that reads two
            tokens does not move ``[rows, vocab]`` logits (off an NDIF server, say).
        capture_device: move captures and logits there (``None``: each stays where it was
            computed, e.g. on its block's device when the model is spread over several).
    """
    if end not in ENDS:
        raise InterpError(f"end must be one of {', '.join(ENDS)}, got {end!r}")
    device = lm.device
    ids = ids.to(device)
    mask = torch.ones_like(ids) if mask is None else mask.to(device)
    n, seq = ids.shape
    if past is not None and past_mask is None:
        past_mask = torch.ones(n, past.get_seq_length(), dtype=mask.dtype, device=device)
    full = mask if past_mask is None else torch.cat([past_mask.to(device), mask], 1)
    if position_ids is None:
        position_ids = (full.cumsum(-1) - 1).clamp(min=0)[:, full.shape[1] - seq:]
    lengths = full.sum(-1)
    cols = columns(positions, lengths.cpu(), seq)
    capture, writes = list(capture), dict(writes or {})
    stop_layer = _stop_layer(capture + list(writes)) if end == "hooks" else None
    session = HookSession(lm.model, lm.arch, capture, writes, lengths, cols, stop_layer, grad, capture_device)
    if past is None and use_cache:  # made here, not by the model: a pass that stops early still fills it
        past = DynamicCache(config=lm.model.config)
    plan = Pass(ids, full if attention is None else attention.to(device), position_ids.to(device), past, session,
                cols, unembed_last, end, hidden, hidden_at_all, grad, None if vocab is None else list(vocab),
                capture_device)
    # The backend runs it: PyTorch hooks (``torch_pass``), or an nnsight trace (``interp.nnsight_backend``).
    return lm.execute(plan)


@dataclass
class Pass:
    """One forward, everything decided but how it is run.

    Attributes:
        ids: the new tokens ``[batch, seq]``.
        attention: the attention mask over past and new tokens ``[batch, past + seq]``, or a
            custom additive one ``[batch, 1, seq, past + seq]``.
        position_ids: ``[batch, seq]``.
        past: the HF cache to continue and fill (``None``: no cache).
        session: the hooks (capture, writes, where to stop).
        cols, unembed_last, end, hidden, hidden_at_all, grad, vocab, capture_device: as
            ``forward``'s arguments.
    """

    ids: Int[Tensor, "batch seq"]
    attention: Tensor
    position_ids: Int[Tensor, "batch seq"]
    past: object
    session: HookSession
    cols: Int[Tensor, "batch n_pos"] | None
    unembed_last: bool
    end: str
    hidden: bool
    hidden_at_all: bool
    grad: bool
    vocab: list[int] | None = None
    capture_device: torch.device | None = None

    def kept_logits(self, logits: Tensor) -> Tensor:
        """The logits as the plan keeps them (``vocab`` columns; detached unless ``grad``; on
        ``capture_device`` if given)."""
        if self.vocab is not None:
            logits = logits[..., self.vocab]
        logits = logits if self.grad else logits.detach()
        return logits if self.capture_device is None else logits.to(self.capture_device)

    def unembed_input(self, h: Tensor) -> Tensor:
        """The unembedding's input ``h`` at the columns it is computed at."""
        if self.cols is not None and not self.hidden_at_all:
            rows = torch.arange(h.shape[0], device=h.device).unsqueeze(1)
            return h[rows, self.cols.to(h.device)]
        if self.unembed_last and not self.hidden_at_all:
            return h[:, -1:]
        return h

    @property
    def keeps_hidden(self) -> bool:
        return self.hidden or self.end == "unembed"


def torch_pass(lm, plan: Pass) -> Forward:
    """``plan`` run with PyTorch hooks on ``lm.model``."""
    session, grad, end = plan.session, plan.grad, plan.end
    found: dict[str, Tensor] = {}

    def at_unembed(module, args):
        h = plan.unembed_input(args[0])
        if plan.keeps_hidden:
            found["hidden"] = h if grad else h.detach()
        if end == "unembed":
            raise StopForward
        return None if h is args[0] else (h,) + tuple(args[1:])

    def at_last_mlp(module, args):
        raise StopForward

    logits = None
    with ExitStack() as stack:
        stack.enter_context(torch.set_grad_enabled(grad))
        # Attention patterns exist only under eager attention: switched for this pass, then back.
        stack.enter_context(eager_attention(lm.model, any(p.point == "pattern" for p in session.capture | set(session.writes))))
        stack.enter_context(session.attached())
        if end == "last_mlp":
            final = lm.model.get_submodule(lm.arch.blocks)[lm.n_layers - 1].get_submodule(lm.arch.mlp)
            stack.callback(final.register_forward_pre_hook(at_last_mlp).remove)
        elif session.stop_layer is None:
            # The row's module, not lm.unembed: a reward model's head (arch.unembed) is its score.
            stack.callback(lm.model.get_submodule(lm.arch.unembed).register_forward_pre_hook(at_unembed).remove)
        try:
            out = lm.model(input_ids=plan.ids, attention_mask=plan.attention, position_ids=plan.position_ids,
                           cache=plan.past, use_cache=plan.past is not None)
            logits = plan.kept_logits(out.logits)
        except StopForward:
            pass
    return Forward(logits, session.cache, found.get("hidden"), plan.past, plan.cols)


def _stop_layer(asked: list[HookPoint]) -> int | None:
    """The block after which every asked point is computed (``None``: the final norm is asked,
    so the pass runs to the end)."""
    if not asked:
        raise InterpError("logits=False with nothing to capture: the run would compute nothing")
    if any(p.layer is None and p.point == "ln_final.hook_normalized" for p in asked):
        return None
    # only embedding hooks: still need one block to raise from
    return max(max((p.layer for p in asked if p.layer is not None), default=-1), 0)
