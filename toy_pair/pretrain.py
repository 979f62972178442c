"""Stage 1: pretrain a tiny Llama on the toy-world corpus.

Each training row is ``<s> doc </s> <s> doc </s> ...`` (whole documents, right-padded to
``seq_len``), so every row starts at position 0 with ``<s>``, as evaluation prompts do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tasks.toy_world import Corpus

from .common import encode


@dataclass
class PretrainConfig:
    layers: int = 6
    hidden: int = 128
    heads: int = 4
    intermediate: int = 512
    max_positions: int = 128
    seq_len: int = 64
    batch: int = 32
    steps: int = 1200
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0


def model_config(tokenizer, cfg: PretrainConfig) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_positions, tie_word_embeddings=True, rms_norm_eps=1e-5,
        attention_dropout=0.0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


class RowPacker:
    """Packs whole corpus documents into rows of ``seq_len`` tokens."""

    def __init__(self, corpus: Corpus, tokenizer, seq_len: int):
        self.corpus, self.tok, self.seq_len = corpus, tokenizer, seq_len
        self.buffer: list[list[int]] = []

    def _next_doc(self) -> list[int]:
        if not self.buffer:
            docs = [self.corpus.document() for _ in range(256)]
            self.buffer = [ids + [self.tok.eos_token_id] for ids in encode(self.tok, docs)][::-1]
        return self.buffer.pop()

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((n, self.seq_len), self.tok.pad_token_id, dtype=torch.long)
        for i in range(n):
            row: list[int] = []
            while True:
                doc = self._next_doc()[: self.seq_len]
                if len(row) + len(doc) > self.seq_len:
                    self.buffer.append(doc)
                    break
                row += doc
            ids[i, : len(row)] = torch.tensor(row)
        mask = (ids != self.tok.pad_token_id).long()
        return ids, mask


def lr_at(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def pretrain(tokenizer, cfg: PretrainConfig, log=print) -> LlamaForCausalLM:
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(model_config(tokenizer, cfg))
    packer = RowPacker(Corpus(cfg.seed), tokenizer, cfg.seq_len)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    model.train()
    t0 = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        ids, mask = packer.batch(cfg.batch)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == cfg.steps - 1:
            log(f"base step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    model.eval()
    return model
