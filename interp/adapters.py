"""Architecture adapters: a table from abstract parts of a decoder to HF module paths.

Every supported family is one row of data. Generic code (``interp.hooks``) reads the row;
it never branches on a family name. A model whose ``config.model_type`` has no row raises
:class:`UnsupportedArchitecture` naming the supported ones, instead of guessing paths (the
failure mode of heuristics that once skipped Llama's RMSNorm in other tools).

The paths below were read off transformers 5.x modules (``named_children`` of each
family). Block-relative paths (``attn``, ``mlp``) are joined to ``blocks.{layer}``.
"""

from __future__ import annotations

from dataclasses import dataclass

from interp.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Arch:
    """Where the parts of one decoder family live inside its HF ``*ForCausalLM`` model.

    Attributes:
        blocks: path of the ``ModuleList`` of decoder blocks.
        attn: attention sublayer, relative to a block; its output is a tuple whose first
            element is the attention update ``[batch, pos, d_model]``.
        mlp: FFN sublayer, relative to a block; its output is the FFN update.
        final_norm: the norm applied before the unembedding.
        unembed: the output projection to the vocabulary (bias included where it has one).
        embed: the token embedding.
        pos_embed: the learned position embedding, or ``None`` for rotary families.
        parallel: whether attention and FFN both read ``resid_pre`` (GPT-J, most
            GPT-NeoX). A ``str`` names the boolean config attribute that decides it.
    """

    blocks: str
    attn: str
    mlp: str
    final_norm: str
    unembed: str
    embed: str
    pos_embed: str | None
    parallel: bool | str

    def is_parallel(self, config) -> bool:
        if isinstance(self.parallel, bool):
            return self.parallel
        return bool(getattr(config, self.parallel))


_LLAMA_LIKE = Arch(
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
    pos_embed=None,
    parallel=False,
)

ARCHITECTURES: dict[str, Arch] = {
    "gpt2": Arch(
        blocks="transformer.h",
        attn="attn",
        mlp="mlp",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.wte",
        pos_embed="transformer.wpe",
        parallel=False,
    ),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "gpt_neox": Arch(
        blocks="gpt_neox.layers",
        attn="attention",
        mlp="mlp",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
        embed="gpt_neox.embed_in",
        pos_embed=None,
        parallel="use_parallel_residual",
    ),
    "gptj": Arch(
        blocks="transformer.h",
        attn="attn",
        mlp="mlp",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        embed="transformer.wte",
        pos_embed=None,
        parallel=True,
    ),
}


def arch_for(config) -> Arch:
    """The adapter row for an HF config; raises for a family with no row."""
    model_type = getattr(config, "model_type", None)
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"architecture {model_type!r} is not supported; supported model types: {supported}. "
            "Add a row to interp.adapters.ARCHITECTURES (module paths of blocks, attention, "
            "FFN, final norm, unembedding) and run tests/test_core_identities.py on it."
        ) from None
