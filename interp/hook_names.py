"""Hook-point names, following TransformerLens so that its users feel at home.

Full names:
    ``hook_embed``                   token embedding            [batch, pos, d_model]
    ``hook_pos_embed``               learned position embedding (GPT-2 only)
    ``blocks.{l}.hook_resid_pre``    residual stream entering block l
    ``blocks.{l}.hook_attn_out``     attention update of block l
    ``blocks.{l}.hook_resid_mid``    resid_pre + attn_out (sequential families only)
    ``blocks.{l}.hook_mlp_out``      FFN (MLP) update of block l
    ``blocks.{l}.hook_resid_post``   residual stream leaving block l
    ``ln_final.hook_normalized``     final norm output, the unembedding's input

Attention heads (families whose adapter row names the projections):
    ``blocks.{l}.attn.hook_q``       queries, before rotary     [batch, pos, head, d_head]
    ``blocks.{l}.attn.hook_k``       keys, before rotary        [batch, pos, kv_head, d_head]
    ``blocks.{l}.attn.hook_v``       values                     [batch, pos, kv_head, d_head]
    ``blocks.{l}.attn.hook_pattern`` attention probabilities    [batch, head, query_pos, key_pos]
    ``blocks.{l}.attn.hook_z``       heads' outputs, the input of the output projection
                                                                [batch, pos, head, d_head]

Short names (``"resid_pre"``, ``"attn_out"``, ``"resid_mid"``, ``"mlp_out"``,
``"resid_post"``, and ``"q"``, ``"k"``, ``"v"``, ``"pattern"``, ``"z"`` or
``"attn.hook_z"`` ...) mean that point at every layer, in layer order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interp.errors import NoHeadHooks, UnknownHook

BLOCK_POINTS: tuple[str, ...] = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")
# Per-head points inside the attention, in execution order (named blocks.{l}.attn.hook_{point}).
HEAD_POINTS: tuple[str, ...] = ("q", "k", "v", "pattern", "z")
QKV_POINTS: tuple[str, ...] = ("q", "k", "v")
GLOBAL_POINTS: tuple[str, ...] = ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized")

_BLOCK_RE = re.compile(r"^blocks\.(-?\d+)\.hook_([a-z_]+)$")
_HEAD_RE = re.compile(r"^blocks\.(-?\d+)\.attn\.hook_([a-z_]+)$")


@dataclass(frozen=True, order=True)
class HookPoint:
    """A parsed hook name: ``layer`` is ``None`` for points outside the blocks."""

    layer: int | None
    point: str

    @property
    def name(self) -> str:
        if self.layer is None:
            return self.point
        return block_hook(self.layer, self.point)

    @property
    def pos_axis(self) -> int:
        """The activation's position axis (a pattern's is its query axis)."""
        return 2 if self.point == "pattern" else 1

    @property
    def head_axis(self) -> int | None:
        """The activation's head axis, or ``None`` for points that have no heads."""
        if self.point not in HEAD_POINTS:
            return None
        return 1 if self.point == "pattern" else 2


def block_hook(layer: int, point: str) -> str:
    """``block_hook(3, "mlp_out") == "blocks.3.hook_mlp_out"``, ``block_hook(3, "z") == "blocks.3.attn.hook_z"``."""
    if point in HEAD_POINTS:
        return f"blocks.{layer}.attn.hook_{point}"
    return f"blocks.{layer}.hook_{point}"


def valid_points(
    n_layers: int, parallel: bool, has_pos_embed: bool, head_points: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """(global names, per-block points in execution order) that a model with these properties
    has; ``head_points`` are the attention-head points its adapter row supports."""
    globals_ = ["hook_embed"] + (["hook_pos_embed"] if has_pos_embed else []) + ["ln_final.hook_normalized"]
    points = [p for p in BLOCK_POINTS if not (parallel and p == "resid_mid")]
    at = points.index("resid_pre") + 1
    points[at:at] = [p for p in HEAD_POINTS if p in head_points]
    return globals_, points


def parse(
    name: str, n_layers: int, parallel: bool, has_pos_embed: bool, head_points: tuple[str, ...] = ()
) -> list[HookPoint]:
    """Resolve a full or short hook name to the points it selects, or raise UnknownHook."""
    globals_, points = valid_points(n_layers, parallel, has_pos_embed, head_points)
    plain = [p for p in points if p not in HEAD_POINTS]
    heads = [p for p in points if p in HEAD_POINTS]
    choices = (
        f"valid names: {', '.join(globals_)}, blocks.{{0..{n_layers - 1}}}.hook_{{{','.join(plain)}}}"
        + (f", blocks.{{0..{n_layers - 1}}}.attn.hook_{{{','.join(heads)}}}" if heads else "")
        + f", or a short name for every layer: {', '.join(points)}"
    )
    if not isinstance(name, str):
        raise UnknownHook(f"hook names are strings, got {type(name).__name__}; {choices}")
    if name == "resid_mid" or name.endswith(".hook_resid_mid"):
        if parallel:
            raise UnknownHook(
                f"{name!r}: this model computes attention and FFN in parallel from resid_pre, "
                "so there is no residual stream between them (no resid_mid); "
                f"{choices}"
            )
    if name.removeprefix("attn.hook_") in HEAD_POINTS:  # "attn.hook_z" is the short "z"
        name = name.removeprefix("attn.hook_")
    head_named = _HEAD_RE.match(name)
    asked = name if head_named is None else head_named.group(2)
    if asked in HEAD_POINTS and asked not in heads:
        raise NoHeadHooks(
            f"{name!r}: this model's adapter row does not name the attention projections that head "
            f"hook needs ({'attn_o' if asked in ('z', 'pattern') else 'attn_q/k/v or attn_qkv'}); "
            f"add them to its row in interp.adapters; {choices}"
        )
    if name in points:
        return [HookPoint(layer, name) for layer in range(n_layers)]
    if name in globals_:
        return [HookPoint(None, name)]
    match = _BLOCK_RE.match(name)
    if match is not None and match.group(2) in HEAD_POINTS:
        match = None  # blocks.{l}.hook_z is not a name: heads live under blocks.{l}.attn
    if match is None and head_named is not None and head_named.group(2) in heads:
        match = head_named
    if match is None or match.group(2) not in points:
        raise UnknownHook(f"unknown hook name {name!r}; {choices}")
    layer = int(match.group(1))
    if not 0 <= layer < n_layers:
        raise UnknownHook(
            f"{name!r}: layer {layer} is out of range, the model has {n_layers} layers (0-{n_layers - 1})"
        )
    return [HookPoint(layer, match.group(2))]
