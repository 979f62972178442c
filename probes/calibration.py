"""Calibration of confidences: reliability diagrams, ECE/MCE/RMS, Brier, bootstrap CIs,
temperature scaling.

Pure numpy functions of arrays.  Axis names: ``item`` (one question), ``option`` (its
answer options).  A *confidence* is the probability the model gives its chosen answer (or
P(True) for a proposed answer); *correct* says whether that answer was right.

Binning follows Guo et al. (2017) and Kadavath et al. (2022):

- ``strategy="uniform"``: ``n_bins`` equal-width bins on [0, 1]; bin ``i`` holds
  ``edges[i] <= c < edges[i+1]``, the last bin also holds ``c == 1``;
- ``strategy="quantile"``: equal-mass bins; items sorted by (confidence, correct) are split
  into ``n_bins`` consecutive groups whose sizes differ by at most one.  The sort key makes
  the result independent of item order even with tied confidences.  Edges are 0, the
  midpoints between neighbouring groups, and 1.

``ECE = sum_b (n_b / n) |acc_b - conf_b|``, ``MCE = max_b |acc_b - conf_b|`` over non-empty
bins, ``RMS = sqrt(sum_b (n_b / n) (acc_b - conf_b)^2)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from jaxtyping import Bool, Float, Int

from interp.errors import InterpError

Strategy = Literal["uniform", "quantile"]


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin calibration data.

    Attributes:
        edges: ``[n_bins + 1]`` bin edges in [0, 1].
        mean_confidence: ``[n_bins]`` mean confidence per bin (NaN for an empty bin).
        accuracy: ``[n_bins]`` fraction correct per bin (NaN for an empty bin).
        counts: ``[n_bins]`` items per bin.
        strategy: ``"uniform"`` or ``"quantile"``.
    """

    edges: Float[np.ndarray, " edge"]
    mean_confidence: Float[np.ndarray, " bin"]
    accuracy: Float[np.ndarray, " bin"]
    counts: Int[np.ndarray, " bin"]
    strategy: str

    @property
    def n(self) -> int:
        """Number of items."""
        return int(self.counts.sum())

    @property
    def gaps(self) -> Float[np.ndarray, " bin"]:
        """``accuracy - mean_confidence`` per bin (NaN for empty bins)."""
        return self.accuracy - self.mean_confidence

    def to_records(self, **constant: Any) -> list[dict[str, Any]]:
        """One dict per bin (``bin, bin_lower, bin_upper, mean_confidence, accuracy, count``)
        plus ``constant`` columns (e.g. ``model="chat"``): tidy rows for a DataFrame."""
        return [
            {
                **constant,
                "bin": i,
                "bin_lower": float(self.edges[i]),
                "bin_upper": float(self.edges[i + 1]),
                "mean_confidence": float(self.mean_confidence[i]),
                "accuracy": float(self.accuracy[i]),
                "count": int(self.counts[i]),
            }
            for i in range(len(self.counts))
        ]


def _check(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=float)
    corr = np.asarray(correct, dtype=float)
    if conf.ndim != 1 or conf.shape != corr.shape:
        raise InterpError(f"confidence and correct must be 1-D of equal length, got {conf.shape} and {corr.shape}")
    if conf.size == 0:
        raise InterpError("no items")
    if np.any(~np.isfinite(conf)) or np.any((conf < 0) | (conf > 1)):
        raise InterpError("confidences must be finite and in [0, 1]")
    if np.any((corr != 0) & (corr != 1)):
        raise InterpError("correct must be 0/1 or boolean")
    return conf, corr


def reliability_diagram(
    confidence: Float[np.ndarray, " item"],
    correct: Bool[np.ndarray, " item"],
    n_bins: int = 10,
    strategy: Strategy = "uniform",
) -> ReliabilityDiagram:
    """Bin items by confidence and return per-bin confidence, accuracy and counts."""
    conf, corr = _check(confidence, correct)
    if n_bins < 1:
        raise InterpError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        index = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    elif strategy == "quantile":
        if n_bins > conf.size:
            raise InterpError(f"quantile binning needs n_bins <= number of items ({conf.size}), got {n_bins}")
        order = np.lexsort((corr, conf))
        groups = np.array_split(order, n_bins)
        index = np.empty(conf.size, dtype=int)
        for b, g in enumerate(groups):
            index[g] = b
        inner = [(conf[groups[b][-1]] + conf[groups[b + 1][0]]) / 2 for b in range(n_bins - 1)]
        edges = np.array([0.0, *inner, 1.0])
    else:
        raise InterpError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / counts
        accuracy = np.bincount(index, weights=corr, minlength=n_bins) / counts
    return ReliabilityDiagram(edges, mean_conf, accuracy, counts, strategy)


def _weighted_gaps(diagram: ReliabilityDiagram) -> tuple[np.ndarray, np.ndarray]:
    keep = diagram.counts > 0
    return np.abs(diagram.gaps[keep]), diagram.counts[keep] / diagram.n


def ece(
    confidence: Float[np.ndarray, " item"],
    correct: Bool[np.ndarray, " item"],
    n_bins: int = 10,
    strategy: Strategy = "uniform",
) -> float:
    """Expected calibration error (count-weighted mean |accuracy - confidence| over bins)."""
    gaps, weights = _weighted_gaps(reliability_diagram(confidence, correct, n_bins, strategy))
    return float(np.sum(weights * gaps))


def mce(
    confidence: Float[np.ndarray, " item"],
    correct: Bool[np.ndarray, " item"],
    n_bins: int = 10,
    strategy: Strategy = "uniform",
) -> float:
    """Maximum calibration error (largest |accuracy - confidence| over non-empty bins)."""
    gaps, _ = _weighted_gaps(reliability_diagram(confidence, correct, n_bins, strategy))
    return float(np.max(gaps))


def rms_calibration_error(
    confidence: Float[np.ndarray, " item"],
    correct: Bool[np.ndarray, " item"],
    n_bins: int = 10,
    strategy: Strategy = "uniform",
) -> float:
    """Root-mean-square calibration error (count-weighted over bins)."""
    gaps, weights = _weighted_gaps(reliability_diagram(confidence, correct, n_bins, strategy))
    return float(np.sqrt(np.sum(weights * gaps**2)))


def brier_score(probs: Float[np.ndarray, "item option"], labels: Int[np.ndarray, " item"]) -> float:
    """Multi-class Brier score: mean over items of ``sum_k (p_k - [k == label])^2`` (in [0, 2])."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels)
    if p.ndim != 2 or y.shape != (p.shape[0],):
        raise InterpError(f"probs must be [item, option] and labels [item], got {p.shape} and {y.shape}")
    if np.any((y < 0) | (y >= p.shape[1])):
        raise InterpError(f"labels must be in 0..{p.shape[1] - 1}")
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def brier_score_binary(confidence: Float[np.ndarray, " item"], correct: Bool[np.ndarray, " item"]) -> float:
    """Binary Brier score: mean of ``(confidence - correct)^2`` (in [0, 1])."""
    conf, corr = _check(confidence, correct)
    return float(np.mean((conf - corr) ** 2))


def softmax(logits: Float[np.ndarray, "item option"], temperature: float = 1.0) -> Float[np.ndarray, "item option"]:
    """Row-wise softmax of ``logits / temperature`` (numerically stable)."""
    z = np.asarray(logits, dtype=float) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(logits: Float[np.ndarray, "item option"], temperature: float = 1.0) -> Float[np.ndarray, "item option"]:
    """Row-wise log-softmax of ``logits / temperature``."""
    z = np.asarray(logits, dtype=float) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(logits: Float[np.ndarray, "item option"], labels: Int[np.ndarray, " item"], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    y = np.asarray(labels)
    lp = log_softmax(logits, temperature)
    return float(-np.mean(lp[np.arange(len(y)), y]))


def confidence_and_correct(
    probs: Float[np.ndarray, "item option"], labels: Int[np.ndarray, " item"]
) -> tuple[Float[np.ndarray, " item"], Bool[np.ndarray, " item"]]:
    """Top-option probability and whether the top option is the label (ties: first option)."""
    p = np.asarray(probs, dtype=float)
    pred = np.argmax(p, axis=1)
    return p[np.arange(len(p)), pred], pred == np.asarray(labels)


def p_true(logprob_true: Float[np.ndarray, " item"], logprob_false: Float[np.ndarray, " item"]) -> Float[np.ndarray, " item"]:
    """Kadavath et al.'s P(True): ``p(True)`` renormalised over the two options."""
    a = np.asarray(logprob_true, dtype=float)
    b = np.asarray(logprob_false, dtype=float)
    return 1.0 / (1.0 + np.exp(b - a))


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate with a percentile bootstrap interval.

    Attributes:
        estimate: the metric on the full sample.
        low: lower ``alpha/2`` percentile of the bootstrap distribution.
        high: upper ``1 - alpha/2`` percentile.
        alpha: 1 - confidence level.
        n_boot: number of resamples.
        seed: generator seed.
    """

    estimate: float
    low: float
    high: float
    alpha: float
    n_boot: int
    seed: int


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: Sequence[Any] | np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    **kwargs: Any,
) -> BootstrapCI:
    """Percentile bootstrap CI of ``metric(*arrays, **kwargs)``, resampling items.

    All ``arrays`` share their first axis (items) and are resampled together, e.g.
    ``bootstrap_ci(ece, conf, correct, n_bins=15)`` or ``bootstrap_ci(brier_score, probs, labels)``.
    Deterministic for a given ``seed``.  Binned metrics such as ECE are biased upward
    on resamples (duplicated items sharpen the bins' noise), so their percentile interval
    can sit above the point estimate; report both, or compare models by the paired
    difference.
    """
    arrs = [np.asarray(a) for a in arrays]
    if not arrs:
        raise InterpError("give at least one array")
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise InterpError("all arrays must have the same number of items")
    if not 0 < alpha < 1:
        raise InterpError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, n, n)
        stats[i] = metric(*(a[idx] for a in arrs), **kwargs)
    low, high = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return BootstrapCI(float(metric(*arrs, **kwargs)), float(low), float(high), alpha, n_boot, seed)


def fit_temperature(
    logits: Float[np.ndarray, "item option"],
    labels: Int[np.ndarray, " item"],
    bounds: tuple[float, float] = (1e-2, 1e2),
    tol: float = 1e-6,
) -> float:
    """The temperature ``T`` minimising ``nll(logits, labels, T)``, by golden-section search
    on ``log T`` within ``bounds``.

    The NLL is convex in ``1/T`` and hence unimodal in ``log T``, so the search finds the
    global minimum inside the bounds.  A result at a bound means the optimum lies beyond it
    (e.g. perfectly separable data drives ``T`` to 0).
    """
    lo, hi = np.log(bounds[0]), np.log(bounds[1])
    z = np.asarray(logits, dtype=float)
    y = np.asarray(labels)
    f = lambda log_t: nll(z, y, float(np.exp(log_t)))  # noqa: E731
    ratio = (np.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return float(np.exp((a + b) / 2))


@dataclass(frozen=True)
class TemperatureSweep:
    """Calibration metrics as a function of temperature.

    Attributes:
        temperatures: ``[temperature]`` values swept.
        nll: mean negative log-likelihood at each temperature.
        ece: ECE of the top-option confidence at each temperature.
        brier: multi-class Brier score at each temperature.
        accuracy: top-option accuracy (constant in T: the argmax does not move).
    """

    temperatures: Float[np.ndarray, " temperature"]
    nll: Float[np.ndarray, " temperature"]
    ece: Float[np.ndarray, " temperature"]
    brier: Float[np.ndarray, " temperature"]
    accuracy: Float[np.ndarray, " temperature"]

    def to_records(self, **constant: Any) -> list[dict[str, Any]]:
        """One tidy dict per temperature, plus ``constant`` columns."""
        return [
            {**constant, "temperature": float(t), "nll": float(a), "ece": float(b), "brier": float(c), "accuracy": float(d)}
            for t, a, b, c, d in zip(self.temperatures, self.nll, self.ece, self.brier, self.accuracy)
        ]


def temperature_sweep(
    logits: Float[np.ndarray, "item option"],
    labels: Int[np.ndarray, " item"],
    temperatures: Sequence[float] | np.ndarray = tuple(np.geomspace(0.25, 4.0, 17)),
    n_bins: int = 10,
    strategy: Strategy = "uniform",
) -> TemperatureSweep:
    """NLL, ECE, Brier and accuracy of ``softmax(logits / T)`` for each ``T``."""
    temps = np.asarray(temperatures, dtype=float)
    if np.any(temps <= 0):
        raise InterpError("temperatures must be positive")
    y = np.asarray(labels)
    rows = []
    for t in temps:
        probs = softmax(logits, t)
        conf, corr = confidence_and_correct(probs, y)
        rows.append((nll(logits, y, t), ece(conf, corr, n_bins, strategy), brier_score(probs, y), float(corr.mean())))
    cols = np.array(rows).T
    return TemperatureSweep(temps, *cols)
