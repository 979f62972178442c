"""Architecture adapters: a table from abstract parts of a decoder to HF module paths.

Every supported family is one row of data. Generic code (``interp.hooks``) reads the row;
it never branches on a family name. A model whose ``config.model_type`` has no row raises
:class:`UnsupportedArchitecture` naming the supported ones, instead of guessing paths (the
failure mode of heuristics that once skipped Llama's RMSNorm in other tools).

The paths below were read off transformers 5.x modules (``named_children`` of each
family). Block-relative paths (``attn``, ``mlp``, ``attn_o`` ...) are joined to
``blocks.{layer}``. Head counts are read from the config (``Arch.n_heads`` and friends), the
norm's parameters through a :class:`Norm` (which attribute holds eps, weight, bias).
"""

from __future__ import annotations

from dataclasses import dataclass

from interp.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class Norm:
    """How to read a norm module's parameters (direct attribution linearises with them).

    Attributes:
        centre: the norm subtracts the mean (LayerNorm) or not (RMSNorm).
        eps: attribute holding the epsilon inside the square root.
        weight: attribute holding the elementwise gain ``[d_model]`` (``None``: no gain).
        bias: attribute holding the elementwise bias ``[d_model]`` (``None``: no bias).
    """

    centre: bool
    eps: str
    weight: str | None = "weight"
    bias: str | None = None


LAYERNORM = Norm(centre=True, eps="eps", weight="weight", bias="bias")  # torch.nn.LayerNorm
# HF's Llama-style RMSNorm: weight * x / sqrt(mean(x^2) + variance_epsilon)
RMSNORM = Norm(centre=False, eps="variance_epsilon", weight="weight", bias=None)

# How a fused q/k/v projection's output ``[..., 3 * n_heads * d_head]`` splits:
# "qkv": [all q | all k | all v], each head-major (GPT-2's c_attn);
# "per_head": per head [q_h | k_h | v_h], head-major (GPT-NeoX's query_key_value).
QKV_LAYOUTS = ("qkv", "per_head")


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
        norm: how the final norm's (and the blocks' norms') parameters are read.
        attn_o: attention output projection, block-relative; its input, split into heads,
            is ``hook_z``. ``None``: head hooks are not available for the family.
        attn_q, attn_k, attn_v: separate q/k/v projections, block-relative (``None`` when
            fused or unknown); their outputs, split into heads, are ``hook_q/k/v`` (before
            rotary, as in TransformerLens).
        attn_qkv: a fused q/k/v projection instead, block-relative, split as ``qkv_layout``
            says (one of ``QKV_LAYOUTS``).
        n_heads_key, n_kv_heads_key, head_dim_key: config attributes of the query-head
            count, the key/value-head count (grouped-query; absent means ``n_heads``) and
            the head width (absent means ``hidden_size // n_heads``).
        score: the score head of the family's ``*ForSequenceClassification`` (a reward
            model; its body sits at the same paths as the causal LM's). ``None``: the family
            has no sequence classifier we read.
    """

    blocks: str
    attn: str
    mlp: str
    final_norm: str
    unembed: str
    embed: str
    pos_embed: str | None
    parallel: bool | str
    norm: Norm = LAYERNORM
    attn_o: str | None = None
    attn_q: str | None = None
    attn_k: str | None = None
    attn_v: str | None = None
    attn_qkv: str | None = None
    qkv_layout: str = "qkv"
    n_heads_key: str = "num_attention_heads"
    n_kv_heads_key: str | None = "num_key_value_heads"
    head_dim_key: str | None = "head_dim"
    score: str | None = "score"

    def __post_init__(self):
        if self.qkv_layout not in QKV_LAYOUTS:
            raise UnsupportedArchitecture(f"qkv_layout {self.qkv_layout!r} is not one of {', '.join(QKV_LAYOUTS)}")

    def is_parallel(self, config) -> bool:
        if isinstance(self.parallel, bool):
            return self.parallel
        return bool(getattr(config, self.parallel))

    def n_heads(self, config) -> int:
        return int(getattr(config, self.n_heads_key))

    def n_kv_heads(self, config) -> int:
        """Key/value heads: fewer than ``n_heads`` for grouped-query attention."""
        value = getattr(config, self.n_kv_heads_key, None) if self.n_kv_heads_key else None
        return int(value) if value else self.n_heads(config)

    def d_head(self, config) -> int:
        value = getattr(config, self.head_dim_key, None) if self.head_dim_key else None
        return int(value) if value else int(config.hidden_size) // self.n_heads(config)

    def has_qkv(self) -> bool:
        return self.attn_qkv is not None or None not in (self.attn_q, self.attn_k, self.attn_v)


_LLAMA_LIKE = Arch(
    blocks="model.layers",
    attn="self_attn",
    mlp="mlp",
    final_norm="model.norm",
    unembed="lm_head",
    embed="model.embed_tokens",
    pos_embed=None,
    parallel=False,
    norm=RMSNORM,
    attn_o="self_attn.o_proj",
    attn_q="self_attn.q_proj",
    attn_k="self_attn.k_proj",
    attn_v="self_attn.v_proj",
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
        attn_o="attn.c_proj",
        attn_qkv="attn.c_attn",
        qkv_layout="qkv",
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
        attn_o="attention.dense",
        attn_qkv="attention.query_key_value",
        qkv_layout="per_head",
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
        attn_o="attn.out_proj",
        attn_q="attn.q_proj",
        attn_k="attn.k_proj",
        attn_v="attn.v_proj",
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


@dataclass(frozen=True)
class EncoderArch:
    """Where an encoder sequence classifier's parts live (a reward model such as DeBERTa-v3):
    ``body`` (the HF base model), ``embed``, ``blocks`` (the layer list), ``pooler`` and
    ``classifier`` (the score head)."""

    body: str
    embed: str
    blocks: str
    pooler: str
    classifier: str

    def session_arch(self) -> Arch:
        # HookSession reads only blocks and embed for the points encoders have, and puts its
        # keep-positions pre-hook on ``unembed``, which is called outside the session (see
        # interp.encoder's run).
        return Arch(blocks=self.blocks, attn="attention", mlp="output", final_norm=self.classifier,
                    unembed=self.classifier, embed=self.embed, pos_embed=None, parallel=False, score=None)


ENCODERS: dict[str, EncoderArch] = {
    "deberta-v2": EncoderArch(body="deberta", embed="deberta.embeddings", blocks="deberta.encoder.layer",
                              pooler="pooler", classifier="classifier"),
}


def supported_classifiers() -> list[str]:
    """Model types whose sequence classifiers (reward models) load: decoders, then encoders."""
    return sorted(t for t, row in ARCHITECTURES.items() if row.score) + sorted(ENCODERS)


def classifier_kind(config) -> str:
    """``"decoder"`` or ``"encoder"`` for a sequence classifier's config; raises for a family
    whose classifier has no row."""
    model_type = getattr(config, "model_type", None)
    if model_type in ENCODERS:
        return "encoder"
    if model_type in ARCHITECTURES and ARCHITECTURES[model_type].score:
        return "decoder"
    raise UnsupportedArchitecture(
        f"sequence classifier of architecture {model_type!r} is not supported; supported model "
        f"types: {', '.join(supported_classifiers())}"
    )


def encoder_arch_for(config) -> EncoderArch:
    """The encoder row for a sequence classifier's config; raises naming the supported ones."""
    if classifier_kind(config) != "encoder":
        raise UnsupportedArchitecture(f"{getattr(config, 'model_type', None)!r} is a decoder, not an encoder; "
                                      f"supported encoders: {', '.join(sorted(ENCODERS))}")
    return ENCODERS[config.model_type]
