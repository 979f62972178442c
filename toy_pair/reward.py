"""Stage 2: a reward model trained on synthetic preference pairs (Bradley-Terry loss).

It is a ``LlamaForSequenceClassification`` (one label) whose body is a copy of the base
model's embeddings and first ``layers`` blocks, so it starts out knowing the facts; it scores
the last non-pad token of ``prompt + " " + completion``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LlamaForSequenceClassification

from tasks.toy_world import preference_pairs

from .common import encode, pad


@dataclass
class RewardConfig:
    layers: int = 5
    steps: int = 300
    batch: int = 32
    lr: float = 3e-4
    seed: int = 0


def init_reward_model(base, layers: int) -> LlamaForSequenceClassification:
    cfg = base.config.to_dict()
    cfg.update(num_hidden_layers=layers, num_labels=1, tie_word_embeddings=False)
    for key in ("architectures", "id2label", "label2id"):
        cfg.pop(key, None)
    config = type(base.config).from_dict(cfg)
    rm = LlamaForSequenceClassification(config)
    state = {k: v for k, v in base.model.state_dict().items()
             if not k.startswith("layers.") or int(k.split(".")[1]) < layers}
    rm.model.load_state_dict(state)
    torch.nn.init.zeros_(rm.score.weight)
    return rm


def _scores(rm, tokenizer, texts: list[str]) -> torch.Tensor:
    ids, mask = pad(encode(tokenizer, texts), tokenizer.pad_token_id)
    return rm(input_ids=ids, attention_mask=mask).logits[:, 0]


def train_reward(base, tokenizer, cfg: RewardConfig, log=print,
                 pairs: list[dict] | None = None) -> LlamaForSequenceClassification:
    """Bradley-Terry training on ``pairs`` (``prompt``, ``chosen``, ``rejected``; default the
    toy world's ``preference_pairs("train")``)."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    rm = init_reward_model(base, cfg.layers)
    pairs = preference_pairs("train", seed=cfg.seed) if pairs is None else pairs
    opt = torch.optim.AdamW(rm.parameters(), lr=cfg.lr, weight_decay=0.0)
    rm.train()
    t0 = time.time()
    for step in range(cfg.steps):
        batch = rng.sample(pairs, cfg.batch)
        chosen = _scores(rm, tokenizer, [p["prompt"] + " " + p["chosen"] for p in batch])
        rejected = _scores(rm, tokenizer, [p["prompt"] + " " + p["rejected"] for p in batch])
        loss = -F.logsigmoid(chosen - rejected).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            acc = (chosen > rejected).float().mean().item()
            log(f"reward step {step} loss {loss.item():.4f} batch acc {acc:.2f} ({time.time() - t0:.0f}s)")
    rm.eval()
    return rm
