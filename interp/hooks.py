"""One forward pass, many hook points: capture and write, scoped to a ``with`` block.

``HookSession`` registers PyTorch hooks on the modules an ``Arch`` row names, for just the
points a run asks for, and removes exactly those hooks on exit (even on error). Where a
point is not a module boundary it is derived from ones that are:

* ``resid_pre``: input of block l (a forward pre-hook may replace it);
* ``attn_out`` / ``mlp_out``: output of the attention / FFN sublayer;
* ``resid_mid``: ``resid_pre + attn_out``, the same sum the HF block computes next. A write
  to it is carried out by adding ``new - old`` to the attention output, so the block's own
  residual sum yields the written value (up to one float rounding);
* ``resid_post``: output of block l.

Captured tensors are copies (``clone`` or a gather at the chosen positions): later in-place
operations of the model cannot touch them. They are detached unless ``grad=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Int
from torch import Tensor, nn

from interp.adapters import Arch
from interp.hook_names import HookPoint

WriteFn = Callable[[Tensor, Tensor], Tensor]


class StopForward(Exception):
    """Raised inside a hook once every requested point has been computed."""


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _with_first(output, first: Tensor):
    return (first,) + tuple(output[1:]) if isinstance(output, tuple) else first


class HookSession:
    """Hooks for one forward pass.

    Args:
        model: the HF causal LM.
        arch: its adapter row.
        capture: points whose values are stored in ``self.cache``.
        writes: point -> ``f(activation, lengths) -> activation``.
        lengths: real-token count of each prompt, ``[batch]``.
        cols: columns to keep per prompt ``[batch, n_pos]``, or ``None`` for all. Captures
            are restricted to them (the unembedding is restricted by ``interp.forward``).
        stop_layer: raise ``StopForward`` after this block (``None``: run to the end).
        grad: keep captured tensors attached to the autograd graph.
    """

    def __init__(
        self,
        model: nn.Module,
        arch: Arch,
        capture: list[HookPoint],
        writes: dict[HookPoint, WriteFn],
        lengths: Int[Tensor, " batch"],
        cols: Int[Tensor, "batch n_pos"] | None,
        stop_layer: int | None,
        grad: bool = False,
    ):
        self.model = model
        self.arch = arch
        self.capture = set(capture)
        self.writes = writes
        self.lengths = lengths
        self.cols = cols
        self.stop_layer = stop_layer
        self.grad = grad
        self.cache: dict[str, Tensor] = {}
        self._resid_pre: dict[int, Tensor] = {}
        self._handles: list = []

    # -- storing and writing ------------------------------------------------------------
    def _select(self, act: Tensor) -> Tensor:
        if self.cols is None:
            out = act.clone()
        else:
            rows = torch.arange(act.shape[0], device=act.device).unsqueeze(1)
            out = act[rows, self.cols.to(act.device)]
        return out if self.grad else out.detach()

    def _visit(self, point: HookPoint, act: Tensor) -> Tensor:
        """Apply a write at ``point`` (if any), capture (if asked), return what flows on."""
        write = self.writes.get(point)
        if write is not None:
            act = write(act, self.lengths)
        if point in self.capture:
            self.cache[point.name] = self._select(act)
        return act

    def _wants(self, layer: int | None, point: str) -> bool:
        p = HookPoint(layer, point)
        return p in self.capture or p in self.writes

    # -- hooks ----------------------------------------------------------------------------
    def _block_pre(self, layer: int):
        keep_for_mid = self._wants(layer, "resid_mid")

        def hook(module, args, kwargs):
            if args:
                hidden, rest = args[0], None
            else:
                hidden, rest = kwargs["hidden_states"], True
            new = self._visit(HookPoint(layer, "resid_pre"), hidden)
            if keep_for_mid:
                self._resid_pre[layer] = new
            if new is hidden:
                return None
            if rest is None:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        return hook

    def _attn_post(self, layer: int):
        wants_mid = self._wants(layer, "resid_mid")

        def hook(module, args, output):
            attn = _first(output)
            new = self._visit(HookPoint(layer, "attn_out"), attn)
            if wants_mid:
                resid_pre = self._resid_pre.pop(layer)
                mid = resid_pre + new
                new_mid = self._visit(HookPoint(layer, "resid_mid"), mid)
                if new_mid is not mid:
                    new = new + (new_mid - mid)
            return None if new is attn else _with_first(output, new)

        return hook

    def _simple_post(self, layer: int | None, point: str, stop: bool = False):
        def hook(module, args, output):
            act = _first(output)
            new = self._visit(HookPoint(layer, point), act) if self._wants(layer, point) else act
            if stop:
                raise StopForward
            return None if new is act else _with_first(output, new)

        return hook

    @contextmanager
    def attached(self) -> Iterator["HookSession"]:
        model, arch = self.model, self.arch
        blocks = model.get_submodule(arch.blocks)
        register = self._handles.append
        try:
            if self._wants(None, "hook_embed"):
                register(model.get_submodule(arch.embed).register_forward_hook(
                    self._simple_post(None, "hook_embed")))
            if arch.pos_embed is not None and self._wants(None, "hook_pos_embed"):
                register(model.get_submodule(arch.pos_embed).register_forward_hook(
                    self._simple_post(None, "hook_pos_embed")))
            for layer, block in enumerate(blocks):
                if self.stop_layer is not None and layer > self.stop_layer:
                    break
                if self._wants(layer, "resid_pre") or self._wants(layer, "resid_mid"):
                    register(block.register_forward_pre_hook(self._block_pre(layer), with_kwargs=True))
                if self._wants(layer, "attn_out") or self._wants(layer, "resid_mid"):
                    register(block.get_submodule(arch.attn).register_forward_hook(self._attn_post(layer)))
                if self._wants(layer, "mlp_out"):
                    register(block.get_submodule(arch.mlp).register_forward_hook(
                        self._simple_post(layer, "mlp_out")))
                stop_here = self.stop_layer == layer
                if self._wants(layer, "resid_post") or stop_here:
                    register(block.register_forward_hook(
                        self._simple_post(layer, "resid_post", stop=stop_here)))
            if self.stop_layer is None and self._wants(None, "ln_final.hook_normalized"):
                register(model.get_submodule(arch.final_norm).register_forward_hook(
                    self._simple_post(None, "ln_final.hook_normalized")))
            yield self
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._resid_pre.clear()
