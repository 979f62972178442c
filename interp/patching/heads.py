"""Per-head attention outputs: the input of each block's attention output projection.

Every supported family concatenates its heads' outputs head-major (``[..., head, d_head]``
flattened) right before one linear map back to ``d_model``; that map's input split into
``n_heads`` chunks is TransformerLens's ``hook_z``. Where that projection lives is data, one
row per ``config.model_type``; a family without a row raises instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn

from interp.errors import UnsupportedArchitecture

# Block-relative path of the attention output projection, by config.model_type.
OUT_PROJ: dict[str, str] = {
    "gpt2": "attn.c_proj",
    "llama": "self_attn.o_proj",
    "mistral": "self_attn.o_proj",
    "qwen2": "self_attn.o_proj",
    "gpt_neox": "attention.dense",
    "gptj": "attn.out_proj",
}


def out_proj(lm, layer: int) -> nn.Module:
    """The attention output projection of block ``layer`` (raises for a family with no row)."""
    model_type = lm.model.config.model_type
    if model_type not in OUT_PROJ:
        raise UnsupportedArchitecture(
            f"per-head patching needs the attention output projection of {model_type!r}, which "
            f"interp.patching.heads.OUT_PROJ does not list (it has: {', '.join(sorted(OUT_PROJ))}); "
            "add its block-relative module path"
        )
    block = lm.model.get_submodule(lm.arch.blocks)[layer]
    return block.get_submodule(OUT_PROJ[model_type])


def n_heads(lm) -> int:
    return int(lm.model.config.num_attention_heads)


@contextmanager
def head_hooks(
    lm,
    capture: dict[int, Tensor | None] | None = None,
    writes: Mapping[int, Callable[[Tensor], Tensor]] | None = None,
) -> Iterator[None]:
    """Capture (into ``capture[layer]``, ``[batch, seq, n_heads * d_head]``) and/or rewrite the
    head outputs of blocks; ``capture`` keys say which layers to capture."""
    handles = []

    def make(layer: int):
        def hook(module, args):
            z = args[0]
            if writes is not None and layer in writes:
                z = writes[layer](z)
            if capture is not None and layer in capture:
                capture[layer] = z.detach().clone()
            return None if z is args[0] else (z,) + tuple(args[1:])

        return hook

    layers = set(capture or ()) | set(writes or ())
    try:
        for layer in sorted(layers):
            handles.append(out_proj(lm, layer).register_forward_pre_hook(make(layer)))
        yield
    finally:
        for h in handles:
            h.remove()
