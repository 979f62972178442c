"""Known base/RL-tuned pairs. A pair shares a tokenizer; its two members load one at a time.

Hub ids are the public names on the Hugging Face hub; gated ones (Llama) need the licence
accepted and a token (``huggingface-cli login``). ``toy`` is this repository's own pair,
trained by ``python -m toy_pair.train`` and shipped under ``models/toy``, as package data
beside ``interp/`` so that an installed copy finds it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from interp.errors import LoadError

# The folder holding interp/ and models/: the repository in a checkout, site-packages (or a
# --target folder) once installed. Local pairs' members are paths relative to it.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
MEMBERS = ("base", "chat")


@dataclass(frozen=True)
class PairSpec:
    """A base model and its RL-tuned counterpart.

    Attributes:
        name: registry key, used in ``--pair`` and in ``runs/<study>/<pair>/``.
        base / chat: hub id, or for local pairs a path relative to ``PACKAGE_ROOT``.
        tuning: what turned base into chat, so that results are read for what they compare.
        reward: the reward model that tuned ``chat``, where one is published.
        local: members are folders shipped with this package.
    """

    name: str
    base: str
    chat: str
    tuning: str
    reward: str | None = None
    local: bool = False

    def source(self, member: str) -> str:
        if member not in MEMBERS and not (member == "reward" and self.reward):
            valid = MEMBERS + (("reward",) if self.reward else ())
            raise LoadError(f"pair {self.name!r} has no member {member!r}; valid: {', '.join(valid)}")
        ref = getattr(self, member)
        if not self.local:
            return ref
        folder = PACKAGE_ROOT / ref
        if not (folder / "config.json").is_file():
            raise LoadError(
                f"pair {self.name!r}: no model at {folder} (its {member} should ship with rlinterp); "
                f"reinstall rlinterp, or rebuild the pair with python -m toy_pair.train --out {folder.parent}"
            )
        return str(folder)


PAIRS: dict[str, PairSpec] = {
    spec.name: spec
    for spec in [
        PairSpec("toy", "models/toy/base", "models/toy/chat",
                 "REINFORCE with a KL penalty against a learned reward model (this repository)",
                 reward="models/toy/reward", local=True),
        PairSpec("llama2-7b", "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf",
                 "SFT + RLHF (rejection sampling, PPO) (Touvron et al. 2023)"),
        PairSpec("llama2-13b", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-13b-chat-hf",
                 "SFT + RLHF (rejection sampling, PPO) (Touvron et al. 2023)"),
        PairSpec("llama2-70b", "meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-chat-hf",
                 "SFT + RLHF (rejection sampling, PPO) (Touvron et al. 2023)"),
        PairSpec("llama3-8b", "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct",
                 "SFT + rejection sampling + PPO + DPO (Meta 2024)"),
        PairSpec("zephyr-7b", "HuggingFaceH4/mistral-7b-sft-beta", "HuggingFaceH4/zephyr-7b-beta",
                 "DPO on UltraFeedback from the SFT model (Tunstall et al. 2023): isolates DPO"),
        PairSpec("tulu2-7b", "allenai/tulu-2-7b", "allenai/tulu-2-dpo-7b",
                 "DPO on UltraFeedback from the SFT model (Ivison et al. 2023): isolates DPO"),
    ]
}


def get_pair(name: str) -> PairSpec:
    try:
        return PAIRS[name]
    except KeyError:
        raise LoadError(
            f"unknown pair {name!r}; known pairs: {', '.join(PAIRS)}; "
            "or give two models with --base PATH --chat PATH"
        ) from None


def resolve(name_or_path: str) -> str:
    """``"toy/base"`` -> its folder; ``"llama2-7b/chat"`` -> its hub id; anything else as is."""
    head, _, member = name_or_path.partition("/")
    if head in PAIRS and member:
        return PAIRS[head].source(member)
    return name_or_path
