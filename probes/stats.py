"""Paired statistics for two models answering the same items (base vs chat).

- :func:`mcnemar`: McNemar's test on paired correctness.  With ``b`` = items only the first
  model got right and ``c`` = items only the second got right, the exact version is a
  two-sided binomial test of ``b ~ Binomial(b + c, 1/2)`` (used when ``b + c < 25`` by
  default); otherwise the chi-square statistic with continuity correction,
  ``(|b - c| - 1)^2 / (b + c)`` on one degree of freedom (0 when ``b == c``: the
  correction never overshoots; statsmodels would give ``1 / (b + c)`` there).
- :func:`paired_bootstrap`: bootstrap of the accuracy difference, resampling items (so both
  models keep their pairing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from jaxtyping import Bool

from interp.errors import InterpError

EXACT_BELOW = 25


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test.

    Attributes:
        b: items the first model got right and the second wrong.
        c: items the second model got right and the first wrong.
        statistic: ``min(b, c)`` for the exact test; the corrected chi-square otherwise.
        p_value: two-sided p-value.
        method: ``"exact"`` or ``"chi2"``.
    """

    b: int
    c: int
    statistic: float
    p_value: float
    method: str


def _binom_two_sided(k: int, n: int) -> float:
    """Two-sided exact p-value of ``min(b, c) = k`` under ``Binomial(n, 1/2)``."""
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def mcnemar_from_counts(b: int, c: int, method: Literal["auto", "exact", "chi2"] = "auto") -> McNemarResult:
    """McNemar's test from the two discordant counts."""
    if b < 0 or c < 0:
        raise InterpError(f"counts must be non-negative, got b={b}, c={c}")
    if method not in ("auto", "exact", "chi2"):
        raise InterpError(f"method must be 'auto', 'exact' or 'chi2', got {method!r}")
    n = b + c
    if method == "exact" or (method == "auto" and n < EXACT_BELOW):
        return McNemarResult(b, c, float(min(b, c)), 1.0 if n == 0 else _binom_two_sided(min(b, c), n), "exact")
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "chi2")
    stat = (abs(b - c) - 1) ** 2 / n if abs(b - c) >= 1 else 0.0
    return McNemarResult(b, c, float(stat), float(math.erfc(math.sqrt(stat / 2))), "chi2")


def mcnemar(
    correct_a: Bool[np.ndarray, " item"],
    correct_b: Bool[np.ndarray, " item"],
    method: Literal["auto", "exact", "chi2"] = "auto",
) -> McNemarResult:
    """McNemar's test on per-item correctness of two models on the same items."""
    a = np.asarray(correct_a, dtype=bool)
    bb = np.asarray(correct_b, dtype=bool)
    if a.shape != bb.shape or a.ndim != 1:
        raise InterpError(f"need two 1-D arrays of equal length, got {a.shape} and {bb.shape}")
    return mcnemar_from_counts(int(np.sum(a & ~bb)), int(np.sum(~a & bb)), method)


@dataclass(frozen=True)
class PairedBootstrapResult:
    """Paired bootstrap of an accuracy difference.

    Attributes:
        diff: ``accuracy(b) - accuracy(a)`` on the full sample.
        ci_low: lower ``alpha/2`` percentile of the bootstrap differences.
        ci_high: upper ``1 - alpha/2`` percentile.
        p_value: two-sided p-value for "no difference": the share of bootstrap differences,
            centred on ``diff``, at least as far from 0 as ``diff`` (with +1 smoothing).
        n_boot: number of resamples.
        alpha: 1 - confidence level.
        seed: generator seed.
    """

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n_boot: int
    alpha: float
    seed: int


def paired_bootstrap(
    correct_a: Bool[np.ndarray, " item"],
    correct_b: Bool[np.ndarray, " item"],
    n_boot: int = 10_000,
    alpha: float = 0.05,
    seed: int = 0,
) -> PairedBootstrapResult:
    """Bootstrap the accuracy difference ``b - a``, resampling items jointly."""
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise InterpError(f"need two non-empty 1-D arrays of equal length, got {a.shape} and {b.shape}")
    if not 0 < alpha < 1:
        raise InterpError(f"alpha must be in (0, 1), got {alpha}")
    d = b - a
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # chunks keep memory at 1000 x n
        stop = min(start + 1000, n_boot)
        boots[start:stop] = d[rng.integers(0, d.size, (stop - start, d.size))].mean(axis=1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    extreme = np.sum(np.abs(boots - diff) >= abs(diff) - 1e-12)
    return PairedBootstrapResult(diff, float(low), float(high), float((extreme + 1) / (n_boot + 1)), n_boot, alpha, seed)
