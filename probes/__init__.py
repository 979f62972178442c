"""Zero-layer probes: pure functions of a readout (continuation log-probs, calibration,
paired statistics, reward scoring, generation).

A readout is the final logits (``layer=None``) or the logit lens of any block's
``resid_post`` (``layer=l``); see :mod:`probes.readouts`.
"""

from probes.generation import generate, map_to_option
from probes.logprobs import ContinuationLogprobs, continuation_logprobs, encode_pair
from probes.multiple_choice import MCScore, option_length, score_items
from probes.readouts import resolve_layers

__all__ = [
    "ContinuationLogprobs", "MCScore", "continuation_logprobs", "encode_pair", "generate", "map_to_option",
    "option_length", "resolve_layers", "score_items",
]
