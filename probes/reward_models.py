"""Known reward models: registry name -> where the weights are and the input format they were trained with.

Every entry is a sequence classifier the core loads (``interp.reward``: Llama / Mistral / ...
``*ForSequenceClassification`` decoders, DeBERTa-v2/v3 encoders). ``format`` is the input the
model was trained on (see :mod:`probes.reward_inputs`); scoring with another format is allowed
but gives numbers the model was never trained to produce.

The hub models cannot be downloaded on every machine; their loading path is tested on random
models built from configs of the same class and tokenizer conventions (``tests/test_reward_probe.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from interp.errors import LoadError
from interp.registry import PACKAGE_ROOT


@dataclass(frozen=True)
class RewardModelSpec:
    """A reward model of the registry.

    Attributes:
        name: registry key (``--reward NAME``).
        source: a pair member (``toy/reward``, resolved by ``interp.registry.resolve``) or a hub id.
        format: the input format it was trained with (``pair``, ``chat`` or ``concat``).
        hf_class: its transformers class, as the checkpoint's config names it.
        notes: where the format comes from, and anything a user must know.
    """

    name: str
    source: str
    format: str
    hf_class: str
    notes: str


_SPECS = [
    RewardModelSpec(
        "toy", "toy/reward", "chat", "LlamaForSequenceClassification",
        "the toy pair's reward model (models/toy/reward). toy_pair/reward.py trained it on "
        "'<s>' + prompt + ' ' + completion with prompt 'User : ... Assistant :'; the tokenizer's chat "
        "template of a user and an assistant turn renders exactly those token ids (tested)."),
    RewardModelSpec(
        "oasst-deberta-v3-large-v2", "OpenAssistant/reward-model-deberta-v3-large-v2", "pair",
        "DebertaV2ForSequenceClassification",
        "the reward model Song et al. (2023) use; its model card scores tokenizer(question, answer) "
        "([CLS] question [SEP] answer [SEP]); 512 positions."),
    RewardModelSpec(
        "skywork-llama3.1-8b-v0.2", "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2", "chat",
        "LlamaForSequenceClassification",
        "RewardBench leader of late 2024; its card scores apply_chat_template([user, assistant]) "
        "(Llama 3.1 template, one <|begin_of_text|>); pad id 128256 (an added [PAD] token)."),
    RewardModelSpec(
        "fsfairx-llama3-8b", "sfairXC/FsfairX-LLaMA3-RM-v0.1", "chat", "LlamaForSequenceClassification",
        "RLHFlow's Llama-3-8B-Instruct reward model; its card renders the Llama 3 chat template, "
        "removes the template's BOS and lets the tokenizer add it (what the chat format does)."),
    RewardModelSpec(
        "rm-mistral-7b", "weqweasdas/RM-Mistral-7B", "chat", "MistralForSequenceClassification",
        "RLHFlow's Mistral-7B-Instruct-v0.2 reward model; its card renders the Mistral [INST] chat "
        "template without its BOS and lets the tokenizer add it (what the chat format does)."),
    RewardModelSpec(
        "toy-length", str(PACKAGE_ROOT / "models/toy/reward_length"), "chat", "LlamaForSequenceClassification",
        "a deliberately length-biased toy reward model (models/toy/reward_length, python -m "
        "toy_pair.reward_variant): trained like 'toy' but preferring the longer completion whatever it "
        "says; for reward-distance studies, not part of the toy pair."),
]

REWARD_MODELS: Mapping[str, RewardModelSpec] = MappingProxyType({s.name: s for s in _SPECS})
DEFAULT_REWARD = "toy"


def get_reward_model(name: str) -> RewardModelSpec:
    try:
        return REWARD_MODELS[name]
    except KeyError:
        raise LoadError(f"unknown reward model {name!r}; known: {', '.join(REWARD_MODELS)}; or implicit:PAIR "
                        "(a pair's implicit reward), or a folder / hub id (owner/name) of a sequence classifier") from None
