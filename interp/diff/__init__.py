"""Model diffing: what RL changed between a pair's base and chat models.

* :mod:`interp.diff.token_shift`: URIAL's token distribution shift along the chat model's answers.
* :mod:`interp.diff.adl`: the activation difference lens (mean residual difference, decoded and
  used as a steering vector).
* :mod:`interp.diff.amplify`: logit diff amplification (both models in memory; opt-in).
"""

from interp.diff.adl import adl_vectors, decode_vectors, mean_resid, steer
from interp.diff.amplify import amplified_generate
from interp.diff.token_shift import (
    SHIFT_CLASSES, ChatResponse, chat_responses, check_same_tokenizer, fractions_by_position, most_shifted_tokens,
    score_shift, shift_class,
)

__all__ = [
    "SHIFT_CLASSES", "ChatResponse", "adl_vectors", "amplified_generate", "chat_responses", "check_same_tokenizer",
    "decode_vectors", "fractions_by_position", "mean_resid", "most_shifted_tokens", "score_shift", "shift_class",
    "steer",
]
