"""Abstention: a model's preference between answering and saying "I don't know", its free
answers mapped to answer / abstain, and how well abstaining tracks being wrong.

- :func:`preference`: from the summed log-probs of an item's responses (its candidate answers,
  then its abstentions; :func:`probes.multiple_choice.score_items`), the best answer's and the
  best abstention's log-prob, their difference ``margin`` (> 0: the model prefers abstaining),
  the same per token, and the calibration study's confidence (the probability of the chosen
  candidate under a softmax over the candidates' log-probs, :mod:`probes.calibration`).
- :func:`classify_generation`: a generated text as ``abstain`` (an abstention phrase comes
  first), ``answer`` (a candidate, or any other text) or ``empty``.
- :func:`risk_coverage`: answering only the items whose score is at least a threshold, for
  every threshold, the share answered (coverage) and the share of those answered wrong (risk);
  :func:`aurc`, the area under that curve (lower: abstention tracks errors better; ties
  are answered in random order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float, Int

from interp.errors import InterpError
from probes.calibration import confidence_and_correct, softmax
from probes.generation import map_to_option, normalize

# Phrases that make a free answer an abstention (compared after probes.generation.normalize,
# as whole words): declining, not knowing, or saying there is nothing to know.
ABSTAIN_PHRASES = (
    "i don t know", "i do not know", "don t know", "do not know", "not sure", "no idea", "unknown", "nobody knows",
    "no one knows", "cannot say", "can t say", "cannot tell", "can t tell", "cannot help", "can t help", "i cannot",
    "i can t", "unable to", "sorry", "it depends", "hard to say", "impossible to say", "impossible to know",
    "there is no", "there are no", "does not exist", "doesn t exist", "not a real", "i have no", "i would rather not",
)
KINDS = ("answer", "abstain", "empty")


@dataclass(frozen=True)
class Preference:
    """One item's answer-vs-abstain readout.

    Attributes:
        answer_logprob: the best candidate response's summed log-prob.
        abstain_logprob: the best abstention's summed log-prob.
        margin: ``abstain_logprob - answer_logprob``; > 0 means the model prefers abstaining.
        margin_per_token: the same with each response's log-prob divided by its token count.
        choice: index of the best candidate (ties: the first).
        confidence: the chosen candidate's probability, softmax over the candidates only.
    """

    answer_logprob: float
    abstain_logprob: float
    margin: float
    margin_per_token: float
    choice: int
    confidence: float

    @property
    def abstains(self) -> bool:
        return self.margin > 0


def preference(logprobs: Float[np.ndarray, " response"], n_tokens: Int[np.ndarray, " response"],
               n_candidates: int) -> Preference:
    """:class:`Preference` of responses ``[candidates..., abstentions...]`` (the first
    ``n_candidates`` are answers)."""
    lp = np.asarray(logprobs, dtype=float)
    nt = np.asarray(n_tokens, dtype=float)
    if lp.ndim != 1 or lp.shape != nt.shape:
        raise InterpError(f"logprobs and n_tokens must be 1-D of equal length, got {lp.shape} and {nt.shape}")
    if not 1 <= n_candidates < len(lp):
        raise InterpError(f"need 1 <= n_candidates < {len(lp)} responses (at least one abstention), got {n_candidates}")
    if np.any(nt < 1):
        raise InterpError("every response needs at least one token")
    answers, abstains = lp[:n_candidates], lp[n_candidates:]
    per_token = lp / nt
    conf, _ = confidence_and_correct(softmax(answers[None]), np.zeros(1, dtype=int))
    choice = int(np.argmax(answers))
    return Preference(answer_logprob=float(answers.max()), abstain_logprob=float(abstains.max()),
                      margin=float(abstains.max() - answers.max()),
                      margin_per_token=float(per_token[n_candidates:].max() - per_token[:n_candidates].max()),
                      choice=choice, confidence=float(conf[0]))


@dataclass(frozen=True)
class Outcome:
    """What a free answer did: ``kind`` (:data:`KINDS`) and, for an answer naming a candidate,
    its index (``None`` for an abstention, empty text or an answer naming none)."""

    kind: str
    candidate: int | None = None


def classify_generation(text: str, candidates: Sequence[str], abstentions: Sequence[str] = (),
                        phrases: Sequence[str] = ABSTAIN_PHRASES) -> Outcome:
    """Map a generated ``text`` to answer / abstain: whichever of an abstention (``phrases``
    and the item's own ``abstentions``) or a candidate it mentions first (whole words after
    :func:`probes.generation.normalize`; at one position the longer form wins, so "no one
    knows" is an abstention, not the candidate "no"); any other non-empty text is an answer."""
    if not normalize(text):
        return Outcome("empty")
    hit = map_to_option(text, [[*phrases, *abstentions], *[[c] for c in candidates]])
    if hit == 0:
        return Outcome("abstain")
    return Outcome("answer", None if hit is None else hit - 1)


@dataclass(frozen=True)
class RiskCoverage:
    """Selective answering: answer the items whose score is ``>= threshold[i]``.

    Attributes:
        threshold: ``[point]`` distinct scores, highest first.
        n_answered: ``[point]`` items answered at each threshold.
        coverage: ``[point]`` share of items answered (the abstention rate is ``1 - coverage``).
        risk: ``[point]`` share of the answered items that are wrong (``1 - accuracy`` on them).
    """

    threshold: Float[np.ndarray, " point"]
    n_answered: Int[np.ndarray, " point"]
    coverage: Float[np.ndarray, " point"]
    risk: Float[np.ndarray, " point"]

    def to_records(self, **constant) -> list[dict]:
        return [{**constant, "threshold": float(t), "n_answered": int(n), "coverage": float(c),
                 "abstain_rate": float(1 - c), "risk": float(r), "accuracy": float(1 - r)}
                for t, n, c, r in zip(self.threshold, self.n_answered, self.coverage, self.risk)]


def risk_coverage(score: Float[np.ndarray, " item"], correct: Bool[np.ndarray, " item"]) -> RiskCoverage:
    """The risk-coverage curve of ``score`` (higher: more willing to answer; e.g. the
    confidence, or ``-margin``) against whether answering each item is ``correct``. Items
    with equal scores are answered together (one point per distinct score)."""
    s = np.asarray(score, dtype=float)
    c = np.asarray(correct)
    if s.ndim != 1 or s.shape != c.shape or s.size == 0:
        raise InterpError(f"score and correct must be non-empty 1-D arrays of equal length, got {s.shape} and {c.shape}")
    if not np.all(np.isfinite(s)):
        raise InterpError("scores must be finite")
    if c.dtype != bool and not np.all((c == 0) | (c == 1)):
        raise InterpError("correct must be boolean or 0/1")
    c = c.astype(float)
    order = np.argsort(-s, kind="stable")
    s_sorted, wrong = s[order], np.cumsum(1 - c[order])
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], s.size - 1]  # the last item of each run of equal scores
    n = last + 1
    return RiskCoverage(threshold=s_sorted[last], n_answered=n, coverage=n / s.size, risk=wrong[last] / n)


def aurc(score: Float[np.ndarray, " item"], correct: Bool[np.ndarray, " item"]) -> float:
    """Area under the risk-coverage curve: the mean, over coverages ``k / n`` (``k = 1..n``),
    of the risk of answering the ``k`` items of highest score. Items of equal score are
    answered in a random order, so within a tie the expected number of errors grows linearly
    (without ties this is the usual mean of the cumulative risk)."""
    curve = risk_coverage(score, correct)
    total, n_before, wrong_before = 0.0, 0, 0.0
    for n, risk in zip(curve.n_answered, curve.risk):
        size, wrong = n - n_before, risk * n - wrong_before
        k = np.arange(1, size + 1)
        total += float(np.sum((wrong_before + k * wrong / size) / (n_before + k)))
        n_before, wrong_before = n, risk * n
    return total / int(curve.n_answered[-1])
