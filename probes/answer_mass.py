"""Where the probability goes at a multiple-choice item's answer position.

Scoring by log-likelihood compares the options with each other and hides how much of the
next-token distribution they hold at all. Under RL tuning options can lose probability while
tokens no option starts with (a chat preamble, ``"Sorry"``) gain it (seed section 4.1), which
renormalised option probabilities never show. :func:`answer_mass` reads the final next-token
distribution at the position right after the context (the one that predicts every option's
first token) and splits it into the options' distinct first tokens and everything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

TOP_K = 5


@dataclass(frozen=True)
class AnswerMass:
    """The answer position's next-token distribution, split by option first tokens.

    Attributes:
        option_mass: total probability of the options' distinct first tokens (options that
            share a first token count it once), in [0, 1].
        top_other: the ``k`` most probable tokens that start no option, ``(token id, prob)``,
            most probable first.
    """

    option_mass: float
    top_other: list[tuple[int, float]]

    @property
    def other_mass(self) -> float:
        """Probability of every token that starts no option."""
        return 1.0 - self.option_mass


def answer_mass(logits: Float[Tensor, " vocab"], first_tokens: Sequence[int], top_k: int = TOP_K) -> AnswerMass:
    """Split the distribution ``softmax(logits)`` into the tokens ``first_tokens`` and the rest."""
    logp = logits.float().log_softmax(-1)
    ids = torch.tensor(sorted(set(first_tokens)), device=logp.device)
    option_mass = float(logp[ids].exp().sum())
    others = logp.clone()
    others[ids] = float("-inf")
    top = others.topk(min(top_k, others.numel() - len(ids)))
    return AnswerMass(min(option_mass, 1.0), [(int(i), float(v)) for v, i in zip(top.values.exp(), top.indices)])
