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

Short names (``"resid_pre"``, ``"attn_out"``, ``"resid_mid"``, ``"mlp_out"``,
``"resid_post"``) mean that point at every layer, in layer order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interp.errors import UnknownHook

BLOCK_POINTS: tuple[str, ...] = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")
GLOBAL_POINTS: tuple[str, ...] = ("hook_embed", "hook_pos_embed", "ln_final.hook_normalized")

_BLOCK_RE = re.compile(r"^blocks\.(-?\d+)\.hook_([a-z_]+)$")


@dataclass(frozen=True, order=True)
class HookPoint:
    """A parsed hook name: ``layer`` is ``None`` for points outside the blocks."""

    layer: int | None
    point: str

    @property
    def name(self) -> str:
        if self.layer is None:
            return self.point
        return f"blocks.{self.layer}.hook_{self.point}"


def block_hook(layer: int, point: str) -> str:
    """``block_hook(3, "mlp_out") == "blocks.3.hook_mlp_out"``."""
    return f"blocks.{layer}.hook_{point}"


def valid_points(n_layers: int, parallel: bool, has_pos_embed: bool) -> tuple[list[str], list[str]]:
    """(global names, per-block points) that a model with these properties has."""
    globals_ = ["hook_embed"] + (["hook_pos_embed"] if has_pos_embed else []) + ["ln_final.hook_normalized"]
    points = [p for p in BLOCK_POINTS if not (parallel and p == "resid_mid")]
    return globals_, points


def parse(name: str, n_layers: int, parallel: bool, has_pos_embed: bool) -> list[HookPoint]:
    """Resolve a full or short hook name to the points it selects, or raise UnknownHook."""
    globals_, points = valid_points(n_layers, parallel, has_pos_embed)
    choices = (
        f"valid names: {', '.join(globals_)}, blocks.{{0..{n_layers - 1}}}.hook_{{{','.join(points)}}}, "
        f"or a short name for every layer: {', '.join(points)}"
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
    if name in points:
        return [HookPoint(layer, name) for layer in range(n_layers)]
    if name in globals_:
        return [HookPoint(None, name)]
    match = _BLOCK_RE.match(name)
    if match is None or match.group(2) not in points:
        raise UnknownHook(f"unknown hook name {name!r}; {choices}")
    layer = int(match.group(1))
    if not 0 <= layer < n_layers:
        raise UnknownHook(
            f"{name!r}: layer {layer} is out of range, the model has {n_layers} layers (0-{n_layers - 1})"
        )
    return [HookPoint(layer, match.group(2))]
