"""Model diffing: what RL changed between a base model and its tuned counterpart.

* :mod:`interp.diff.weights`: per stored tensor, relative change, fraction of entries changed
  (exact, and after bf16 rounding) and the change's spectrum, streamed from the safetensors files.
* :mod:`interp.diff.activations`: per layer, residual difference, cosine, linear CKA and KL
  between the two models' early-decoded distributions on the same tokens (one model at a time).
* :mod:`interp.diff.token_shift`: URIAL's token distribution shift along the chat model's answers.
* :mod:`interp.diff.adl`: the activation difference lens (mean residual difference, decoded and
  used as a steering vector).
* :mod:`interp.diff.amplify`: logit diff amplification (both models in memory; opt-in).
"""

from interp.diff.activations import Collected, PairMismatch, collect, compare, kl, linear_cka
from interp.diff.adl import MeanResid, adl_vectors, decode_vectors, mean_resid, steer, steering_write
from interp.diff.amplify import amplified_generate, amplified_tokens
from interp.diff.token_shift import (
    SHIFT_CLASSES, ChatResponse, chat_responses, check_same_tokenizer, fractions_by_position, most_shifted_tokens,
    score_shift, shift_class,
)
from interp.diff.weights import TensorDiff, WeightMismatch, locate, tensor_diff, tensor_files, weight_diff

__all__ = [
    "SHIFT_CLASSES", "ChatResponse", "Collected", "MeanResid", "PairMismatch", "TensorDiff", "WeightMismatch",
    "adl_vectors", "amplified_generate", "amplified_tokens", "chat_responses", "check_same_tokenizer", "collect",
    "compare", "decode_vectors", "fractions_by_position", "kl", "linear_cka", "locate", "mean_resid",
    "most_shifted_tokens", "score_shift", "shift_class", "steer", "steering_write", "tensor_diff", "tensor_files",
    "weight_diff",
]
