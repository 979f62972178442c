"""STARC distance between two LLM reward models on a shared pool of (prompt, response) pairs.

    d = starc(rewards_a, rewards_b, prompt_ids)      # in [0, 1]; 0: the same preferences
    r = compare(rewards_a, rewards_b, prompt_ids)     # STARC, EPIC, Pearson, Spearman, Kendall

An LLM reward model is a reward of a contextual bandit (Skalse et al., ICLR 2024, "STARC", with
discount gamma = 0): the state is the prompt, the action the response, and there is no next
state. Two rewards induce the same ordering of policies iff they differ by a per-prompt shift
(potential shaping with gamma = 0 is ``R(x, y) - phi(x)``) and a positive scale. STARC removes
both:

1. canonicalise: subtract each prompt's mean reward over its response pool (the pool is the
   coverage distribution, uniform over the responses of that prompt);
2. normalise: divide by the L2 norm over the pooled (prompt, response) set, every pair
   weighted 1;
3. distance: half the L2 distance of the two standardised vectors, so ``d`` is in ``[0, 1]``:
   0 for rewards that differ by a per-prompt shift and a positive scale, 1 for ``R`` vs ``-R``.

With gamma = 0, EPIC's canonicalisation (Gleave et al. 2021) is the same per-prompt centring,
and the canonical rewards have mean 0, so EPIC's Pearson distance ``sqrt((1 - rho) / 2)``
equals this STARC distance exactly (``compare`` reports both; a test checks it). They part ways
in MDPs with gamma > 0 (:mod:`probes.reward_distance_mdp`). Spearman and Kendall correlations
of the canonical rewards sit beside them (invariant to any per-prompt shift and to monotone
rescaling of the pooled values), and ``pearson_raw`` (Pearson of the raw scores, not invariant
to per-prompt shifts) shows what the canonicalisation removes.

Edge cases. A prompt with a single response has canonical reward 0 under both models: it
carries no preference and adds nothing to any of the numbers, so it is counted
(``n_single_prompts``) rather than silently averaged in. A reward that is constant within
every prompt (zero norm after canonicalisation: no preference at all) makes the distance
undefined: :class:`RewardDistanceError` says so (the MDP module follows the paper's convention of
a zero standardised reward instead; here a flat reward model almost always means a bug).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from interp.errors import InterpError


class RewardDistanceError(InterpError):
    """Rewards that cannot be compared: mismatched lengths, non-finite scores, a reward with no
    preference among the responses of any prompt (zero norm after canonicalisation)."""


@dataclass(frozen=True)
class Canonical:
    """Per-prompt-centred rewards.

    Attributes:
        values: reward minus its prompt's mean, in input order.
        n_prompts: distinct prompts.
        n_single_prompts: prompts with one response (their canonical reward is 0).
    """

    values: Float[np.ndarray, " n"]
    n_prompts: int
    n_single_prompts: int


@dataclass(frozen=True)
class RewardComparison:
    """Two reward models on one pool (see the module docstring for each number).

    Attributes:
        starc: half the L2 distance of the standardised rewards, in [0, 1].
        epic: EPIC's Pearson distance of the canonical rewards (equal to ``starc`` here).
        pearson_raw: Pearson correlation of the raw scores.
        spearman, kendall: rank correlations (tau-b) of the canonical rewards.
        n_pairs, n_prompts, n_single_prompts: pool size, prompts, prompts with one response.
    """

    starc: float
    epic: float
    pearson_raw: float
    spearman: float
    kendall: float
    n_pairs: int
    n_prompts: int
    n_single_prompts: int


def _check(rewards, prompt_ids, name: str = "rewards") -> Float[np.ndarray, " n"]:
    r = np.asarray(rewards, dtype=float)
    if r.ndim != 1:
        raise RewardDistanceError(f"{name} must be one score per (prompt, response) pair, got shape {r.shape}")
    if len(r) != len(prompt_ids):
        raise RewardDistanceError(f"{name} has {len(r)} scores but prompt_ids has {len(prompt_ids)}; give one "
                                  "prompt id per (prompt, response) pair")
    if len(r) == 0:
        raise RewardDistanceError(f"{name} is empty: give at least one prompt with two responses")
    if not np.all(np.isfinite(r)):
        raise RewardDistanceError(f"{name} has {int(np.sum(~np.isfinite(r)))} non-finite scores (NaN or inf)")
    return r


def canonicalise(rewards: Float[np.ndarray, " n"], prompt_ids: Sequence[Hashable], name: str = "rewards") -> Canonical:
    """Subtract each prompt's mean reward over its responses (``prompt_ids[i]`` names the
    prompt of pair ``i``; any hashable ids)."""
    r = _check(rewards, prompt_ids, name)
    index: dict[Hashable, int] = {}
    group = np.array([index.setdefault(p, len(index)) for p in prompt_ids])
    counts = np.bincount(group)
    means = np.bincount(group, weights=r) / counts
    return Canonical(r - means[group], n_prompts=len(counts), n_single_prompts=int(np.sum(counts == 1)))


def standardise(rewards: Float[np.ndarray, " n"], prompt_ids: Sequence[Hashable], name: str = "rewards") -> Canonical:
    """:func:`canonicalise`, then divide by the L2 norm over the pool. Raises
    RewardDistanceError when that norm is 0 (no preference within any prompt)."""
    c = canonicalise(rewards, prompt_ids, name)
    norm = float(np.linalg.norm(c.values))
    scale = float(np.max(np.abs(np.asarray(rewards, dtype=float))))
    if norm <= 1e-12 * max(scale, 1.0) * np.sqrt(len(c.values)):
        single = f" ({c.n_single_prompts} of {c.n_prompts} prompts have a single response)" if c.n_single_prompts else ""
        raise RewardDistanceError(f"{name} is constant within every prompt{single}: after subtracting each prompt's "
                                  "mean nothing is left, so the STARC distance is undefined; give prompts with at "
                                  "least two differently scored responses")
    return Canonical(c.values / norm, c.n_prompts, c.n_single_prompts)


def starc(rewards_a: Float[np.ndarray, " n"], rewards_b: Float[np.ndarray, " n"],
          prompt_ids: Sequence[Hashable]) -> float:
    """STARC distance (contextual bandit, L2 norm, metric L2 / 2) between two reward models'
    scores of the same (prompt, response) pairs; in [0, 1]."""
    a = standardise(rewards_a, prompt_ids, "rewards_a")
    b = standardise(rewards_b, prompt_ids, "rewards_b")
    return float(np.linalg.norm(a.values - b.values) / 2)


def compare(rewards_a: Float[np.ndarray, " n"], rewards_b: Float[np.ndarray, " n"],
            prompt_ids: Sequence[Hashable]) -> RewardComparison:
    """STARC beside EPIC, raw Pearson, Spearman and Kendall (see :class:`RewardComparison`)."""
    from scipy import stats

    a = standardise(rewards_a, prompt_ids, "rewards_a")
    b = standardise(rewards_b, prompt_ids, "rewards_b")
    rho = float(stats.pearsonr(a.values, b.values).statistic)
    raw_a, raw_b = np.asarray(rewards_a, dtype=float), np.asarray(rewards_b, dtype=float)
    raw = float(stats.pearsonr(raw_a, raw_b).statistic) if np.ptp(raw_a) > 0 and np.ptp(raw_b) > 0 else float("nan")
    return RewardComparison(
        starc=float(np.linalg.norm(a.values - b.values) / 2),
        epic=float(np.sqrt(max(0.0, (1 - rho) / 2))),
        pearson_raw=raw,
        spearman=float(stats.spearmanr(a.values, b.values).statistic),
        kendall=float(stats.kendalltau(a.values, b.values).statistic),
        n_pairs=len(a.values), n_prompts=a.n_prompts, n_single_prompts=a.n_single_prompts,
    )
