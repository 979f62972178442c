"""Logit diff amplification (Aranguri & McGrath 2025): decode from
``logits_chat + alpha * (logits_chat - logits_base)`` to make rare behaviours of the chat model
that differ from the base model frequent enough to see.

    texts = amplified_generate(base, chat, prompts, alpha=1.0, greedy=False, seed=0)

Opt-in: this is the one model-diff readout that holds BOTH models in memory at once (every
step needs both next-token distributions); every call logs a line saying so. ``alpha=0`` is the
chat model's own decoding (greedy: its greedy answer); ``alpha=-1`` is the base model's.
Sampling draws from ``softmax(amplified / temperature)`` with a ``torch.Generator`` seeded by
``seed`` (one int, or one per prompt; independent of the global RNG). The loop recomputes each
sequence at every step (``interp.diff._decode``), fine for the short answers read here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jaxtyping import Float
from torch import Tensor

from interp.diff._decode import decode, last_logits, prompt_ids
from interp.diff.token_shift import check_same_tokenizer

log = logging.getLogger(__name__)


def amplified_logits(base_logits: Float[Tensor, "batch vocab"], chat_logits: Float[Tensor, "batch vocab"],
                     alpha: float) -> Float[Tensor, "batch vocab"]:
    """``chat + alpha * (chat - base)`` in float32."""
    chat_logits = chat_logits.float()
    return chat_logits + alpha * (chat_logits - base_logits.float().to(chat_logits.device))


def amplified_tokens(base, chat, prompts: Sequence[str] | Sequence[Sequence[int]], alpha: float = 1.0,
                     max_new_tokens: int = 32, greedy: bool = False, temperature: float = 1.0,
                     seed: int | Sequence[int] = 0) -> list[list[int]]:
    """New token ids per prompt (cut after EOS, which is kept) under logit diff amplification."""
    check_same_tokenizer(base, chat)
    log.warning("logit diff amplification holds both models in memory (%s and %s)", base.name, chat.name)
    seqs = prompt_ids(chat, prompts)

    def logits_fn(batch: list[list[int]]) -> Tensor:
        return amplified_logits(last_logits(base, batch), last_logits(chat, batch), alpha)

    return decode(logits_fn, seqs, chat.tokenizer.eos_token_id, max_new_tokens, greedy, temperature, seed)


def amplified_generate(base, chat, prompts, alpha: float = 1.0, max_new_tokens: int = 32, greedy: bool = False,
                       temperature: float = 1.0, seed: int | Sequence[int] = 0) -> list[str]:
    """:func:`amplified_tokens` decoded to text (special tokens skipped)."""
    new = amplified_tokens(base, chat, prompts, alpha, max_new_tokens, greedy, temperature, seed)
    return [chat.tokenizer.decode(n, skip_special_tokens=True) for n in new]
