"""Model diffing: what RL changed between a pair's base and chat models.

* :mod:`interp.diff.token_shift`: URIAL's token distribution shift along the chat model's answers.
* :mod:`interp.diff.adl`: the activation difference lens (mean residual difference, decoded and
  used as a steering vector).
* :mod:`interp.diff.amplify`: logit diff amplification (both models in memory; opt-in).
"""

from interp.diff.adl import MeanResid, adl_vectors, decode_vectors, mean_resid, steer, steering_write
from interp.diff.amplify import amplified_generate, amplified_tokens
from interp.diff.token_shift import (
    SHIFT_CLASSES, ChatResponse, chat_responses, check_same_tokenizer, fractions_by_position, most_shifted_tokens,
    score_shift, shift_class,
)

__all__ = [
    "SHIFT_CLASSES", "ChatResponse", "MeanResid", "adl_vectors", "amplified_generate", "amplified_tokens",
    "chat_responses", "check_same_tokenizer", "decode_vectors", "fractions_by_position", "mean_resid",
    "most_shifted_tokens", "score_shift", "shift_class", "steer", "steering_write",
]
