"""Model diffing: what RL changed between a base model and its tuned counterpart.

``weights``: per stored tensor, relative change, fraction of entries changed (exact, and after
bf16 rounding) and the change's spectrum, streamed from the safetensors files.
``activations``: per layer, residual difference, cosine, linear CKA and KL between the two
models' early-decoded distributions on the same tokens (the models run one at a time).
"""

from interp.diff.activations import Collected, PairMismatch, collect, compare, kl, linear_cka
from interp.diff.weights import TensorDiff, WeightMismatch, locate, tensor_diff, tensor_files, weight_diff

__all__ = [
    "Collected", "PairMismatch", "TensorDiff", "WeightMismatch", "collect", "compare", "kl", "linear_cka", "locate",
    "tensor_diff", "tensor_files", "weight_diff",
]
