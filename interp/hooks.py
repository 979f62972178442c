"""One forward pass, many hook points: capture and write, scoped to a ``with`` block.

``HookSession`` registers PyTorch hooks on the modules an ``Arch`` row names, for just the
points a run asks for, and removes exactly those hooks on exit (even on error). Where a
point is not a module boundary it is derived from ones that are:

* ``resid_pre``: input of block l (a forward pre-hook may replace it);
* ``attn_out`` / ``mlp_out``: output of the attention / FFN sublayer;
* ``resid_mid``: ``resid_pre + attn_out``, the same sum the HF block computes next. A write
  to it is carried out by adding ``new - old`` to the attention output, so the block's own
  residual sum yields the written value (up to one float rounding);
* ``resid_post``: output of block l;
* ``attn.hook_q/k/v``: outputs of the q/k/v projections (or the three parts of a fused one,
  split as the row's ``qkv_layout`` says), viewed ``[batch, pos, head, d_head]``: before
  rotary, as TransformerLens's; k and v have the model's ``n_kv_heads`` (grouped-query);
* ``attn.hook_z``: input of the attention output projection, viewed ``[batch, pos, head,
  d_head]`` (a forward pre-hook may replace it);
* ``attn.hook_pattern``: the attention probabilities ``[batch, head, query, key]``, the output
  of the one softmax the attention sublayer computes under eager attention (``eager_attention``
  switches a run to it), taken with a torch function mode while that sublayer runs; a write
  there is what the values are mixed with.

Captured tensors are copies (``clone`` or a gather at the chosen positions): later in-place
operations of the model cannot touch them. They are detached unless ``grad=True``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from interp.adapters import Arch
from interp.errors import InterpError
from interp.hook_names import QKV_POINTS, HookPoint

WriteFn = Callable[[Tensor, Tensor], Tensor]


class StopForward(Exception):
    """Raised inside a hook once every requested point has been computed."""


class _SoftmaxTap(TorchFunctionMode):
    """While an attention sublayer runs, passes its softmax's output (the probabilities, in
    eager attention the one softmax of every supported family) through ``visit``: captured
    there, and a write is what the values are then mixed with."""

    def __init__(self, visit: Callable[[Tensor], Tensor]):
        super().__init__()
        self.visit = visit
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SOFTMAXES:
            self.calls += 1
            out = self.visit(out)
        return out


_SOFTMAXES = (torch.nn.functional.softmax, torch.softmax, Tensor.softmax)


@contextmanager
def eager_attention(model: nn.Module, wanted: bool) -> Iterator[None]:
    """Within the ``with``, ``model`` runs eager attention (when ``wanted``), which alone returns
    attention probabilities; its previous implementation is restored on exit."""
    before = getattr(model.config, "_attn_implementation", None)
    if not wanted or before == "eager":
        yield
        return
    switch = getattr(model, "set_attn_implementation", None)
    if switch is not None:
        try:
            switch("eager")
        except (ValueError, KeyError, ImportError, NotImplementedError):
            pass
    if getattr(model.config, "_attn_implementation", None) != "eager":
        raise InterpError(
            f"attention patterns (attn.hook_pattern) need eager attention; this model runs {before!r} "
            "attention and could not be switched at run time. Load it with "
            "AutoModelForCausalLM.from_pretrained(..., attn_implementation='eager') and wrap it with "
            "interp.LM.from_hf, or capture the other head hooks (q, k, v, z), which work with any attention"
        )
    try:
        yield
    finally:
        switch(before)


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
        capture_device: where captured tensors are stored (``None``: where computed; with
            a ``device_map`` each block's on its own device).
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
        capture_device: torch.device | None = None,
    ):
        self.model = model
        self.capture_device = capture_device
        self.arch = arch
        self.capture = set(capture)
        self.writes = writes
        self.lengths = lengths
        self.cols = cols
        self.stop_layer = stop_layer
        self.grad = grad
        config = model.config
        self.n_heads, self.n_kv_heads, self.d_head = arch.n_heads(config), arch.n_kv_heads(config), arch.d_head(config)
        self.n_layers = len(model.get_submodule(arch.blocks))
        self.cache: dict[str, Tensor] = {}
        self._resid_pre: dict[int, Tensor] = {}
        self._handles: list = []
        self._taps: list[_SoftmaxTap] = []  # active while an attention sublayer runs

    # -- storing and writing ------------------------------------------------------------
    def _select(self, act: Tensor, pos_axis: int = 1) -> Tensor:
        if self.cols is None:
            out = act.clone()
        else:
            rows = torch.arange(act.shape[0], device=act.device).unsqueeze(1)
            out = act.movedim(pos_axis, 1)[rows, self.cols.to(act.device)].movedim(1, pos_axis)
        if self.capture_device is not None:  # a copy already, so moving keeps it private
            out = out.to(self.capture_device)
        return out if self.grad else out.detach()

    def _visit(self, point: HookPoint, act: Tensor) -> Tensor:
        """Apply a write at ``point`` (if any), capture (if asked), return what flows on."""
        write = self.writes.get(point)
        if write is not None:
            act = write(act, self.lengths)
        if point in self.capture:
            self.cache[point.name] = self._select(act, point.pos_axis)
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

    def _simple_post(self, layer: int | None, point: str):
        def hook(module, args, output):
            act = _first(output)
            new = self._visit(HookPoint(layer, point), act) if self._wants(layer, point) else act
            return None if new is act else _with_first(output, new)

        return hook

    def _heads_of(self, flat: Tensor) -> Tensor:
        """``[batch, pos, n * d_head]`` viewed ``[batch, pos, n, d_head]``."""
        return flat.reshape(*flat.shape[:-1], -1, self.d_head)

    def _z_pre(self, layer: int):
        point = HookPoint(layer, "z")

        def hook(module, args):
            flat = args[0]
            z = self._heads_of(flat)
            new = self._visit(point, z)
            return None if new is z else (new.reshape(flat.shape),) + tuple(args[1:])

        return hook

    def _proj_post(self, layer: int, point: str):
        p = HookPoint(layer, point)

        def hook(module, args, output):
            act = self._heads_of(output)
            new = self._visit(p, act)
            return None if new is act else new.reshape(output.shape)

        return hook

    def _qkv_post(self, layer: int):
        """A fused projection's output split into q, k, v (as the row's ``qkv_layout`` says),
        each visited, and put back together when one was written."""
        layout = self.arch.qkv_layout

        def hook(module, args, output):
            if layout == "per_head":  # [..., head, (q_h | k_h | v_h)]
                parts = output.reshape(*output.shape[:-1], self.n_heads, 3 * self.d_head).chunk(3, dim=-1)
            else:  # [..., (q | k | v)], each head-major
                sizes = [self.n_heads * self.d_head] + [self.n_kv_heads * self.d_head] * 2
                parts = [self._heads_of(x) for x in output.split(sizes, dim=-1)]
            new = [self._visit(HookPoint(layer, name), x) if self._wants(layer, name) else x
                   for name, x in zip(QKV_POINTS, parts)]
            if all(a is b for a, b in zip(new, parts)):
                return None
            if layout == "per_head":
                return torch.cat(new, dim=-1).reshape(output.shape)
            return torch.cat([x.flatten(-2) for x in new], dim=-1)

        return hook

    def _pattern_taps(self, layer: int):
        """Hooks around the attention sublayer that put a ``_SoftmaxTap`` on for its forward."""
        point = HookPoint(layer, "pattern")

        def pre(module, args):
            tap = _SoftmaxTap(lambda weights: self._visit(point, weights))
            tap.__enter__()
            self._taps.append(tap)

        def post(module, args, output):
            tap = self._taps.pop()
            tap.__exit__(None, None, None)
            if tap.calls != 1:
                raise InterpError(
                    f"{point.name}: the attention computed {tap.calls} softmaxes, not one (it computes "
                    "its probabilities with one softmax under eager attention only); load the model "
                    "with attn_implementation='eager'"
                )

        return pre, post

    def _head_taps(self, layer: int, prefix: str) -> list["Tap"]:
        """The taps of block ``layer``'s attention heads (module paths under ``prefix``), in
        execution order: the q/k/v projections' outputs, the softmax, the output projection's input."""
        arch, out = self.arch, []
        qkv = [name for name in QKV_POINTS if self._wants(layer, name)]
        if qkv and arch.attn_qkv is not None:
            out.append(Tap(prefix + arch.attn_qkv, "post", self._qkv_post(layer)))
        elif qkv:
            paths = {"q": arch.attn_q, "k": arch.attn_k, "v": arch.attn_v}
            out += [Tap(prefix + paths[name], "post", self._proj_post(layer, name)) for name in qkv]
        if self._wants(layer, "pattern"):
            pre, post = self._pattern_taps(layer)
            out += [Tap(prefix + arch.attn, "pattern_pre", pre), Tap(prefix + arch.attn, "pattern_post", post)]
        if self._wants(layer, "z"):
            out.append(Tap(prefix + arch.attn_o, "pre", self._z_pre(layer)))
        return out

    def taps(self) -> list["Tap"]:
        """Every hook this session needs, in the order the forward reaches them (an nnsight
        trace reads modules in that order, ``interp.nnsight_backend``); the last one is the
        stopping block's output when the pass ends early (``stop``)."""
        arch, out = self.arch, []
        if self._wants(None, "hook_embed"):
            out.append(Tap(arch.embed, "post", self._simple_post(None, "hook_embed")))
        if arch.pos_embed is not None and self._wants(None, "hook_pos_embed"):
            out.append(Tap(arch.pos_embed, "post", self._simple_post(None, "hook_pos_embed")))
        for layer in range(self.n_layers):
            if self.stop_layer is not None and layer > self.stop_layer:
                break
            block = f"{arch.blocks}.{layer}"
            if self._wants(layer, "resid_pre") or self._wants(layer, "resid_mid"):
                out.append(Tap(block, "pre_kwargs", self._block_pre(layer)))
            out += self._head_taps(layer, block + ".")
            if self._wants(layer, "attn_out") or self._wants(layer, "resid_mid"):
                out.append(Tap(f"{block}.{arch.attn}", "post", self._attn_post(layer)))
            if self._wants(layer, "mlp_out"):
                out.append(Tap(f"{block}.{arch.mlp}", "post", self._simple_post(layer, "mlp_out")))
            stop_here = self.stop_layer == layer
            if self._wants(layer, "resid_post") or stop_here:
                out.append(Tap(block, "post", self._simple_post(layer, "resid_post"), stop=stop_here))
        if self.stop_layer is None and self._wants(None, "ln_final.hook_normalized"):
            out.append(Tap(arch.final_norm, "post", self._simple_post(None, "ln_final.hook_normalized")))
        return out

    @contextmanager
    def attached(self) -> Iterator["HookSession"]:
        """The taps as PyTorch hooks on the model for the ``with`` (removed on exit, even on error)."""
        model, register = self.model, self._handles.append
        try:
            for tap in self.taps():
                module = model.get_submodule(tap.path)
                if tap.kind == "pre":
                    register(module.register_forward_pre_hook(tap.fn))
                elif tap.kind == "pre_kwargs":
                    register(module.register_forward_pre_hook(tap.fn, with_kwargs=True))
                elif tap.kind == "pattern_pre":
                    register(module.register_forward_pre_hook(tap.fn))
                else:
                    register(module.register_forward_hook(tap.stopping() if tap.stop else tap.fn))
            yield self
        finally:
            while self._taps:  # an error inside the attention left its tap on
                self._taps.pop().__exit__(None, None, None)
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self._resid_pre.clear()


@dataclass(frozen=True)
class Tap:
    """One hook of a session: the module at ``path`` (from the model's root), when it runs
    (``"pre"``: ``fn(module, args)``; ``"pre_kwargs"``: ``fn(module, args, kwargs)``;
    ``"post"``: ``fn(module, args, output)``; ``"pattern_pre"``/``"pattern_post"``: the softmax
    tap around an attention sublayer), and whether the forward stops after it (``stop``).
    ``fn`` returns what replaces the value, or ``None`` to leave it."""

    path: str
    kind: str
    fn: Callable
    stop: bool = False

    def stopping(self) -> Callable:
        def hook(module, args, output):
            self.fn(module, args, output)
            raise StopForward

        return hook
