"""Comparing a model's distribution over options with a human one (uncertainty expressions).

- :func:`option_distribution`: a model's distribution over multiple-choice options from their
  summed log-probs: softmax of the scores under one of :data:`NORMS`: ``"sum"`` (the summed
  log-prob, lm-evaluation-harness's ``acc``), ``"token"`` (divided by the option's tokens) or
  ``"char"`` (divided by its characters, ``acc_norm``). Longer options lose probability under
  ``"sum"``; the normalised forms are a heuristic correction, so all three are reported.
- :func:`js_divergence`: Jensen-Shannon divergence in bits (base 2, so in [0, 1]), the square of
  ``scipy.spatial.distance.jensenshannon``.
- :func:`pearson`: Pearson's r across options (``scipy.stats.pearsonr``); NaN when either
  distribution is constant (r is undefined there).
- :func:`loglik`: the log-likelihood (nats) of human choice counts under the model's
  distribution, ``sum_k n_k log q_k``; :func:`loglik_per_choice` the same for proportions
  (``sum_k p_k log q_k``, minus the cross-entropy), for data given as percentages.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from interp.errors import InterpError

NORMS = ("sum", "token", "char")


def _vector(x, name: str) -> np.ndarray:
    v = np.asarray(x, dtype=float)
    if v.ndim != 1 or v.size < 2:
        raise InterpError(f"{name} must be a 1-D array of at least two options, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise InterpError(f"{name} holds NaN or infinite values")
    return v


def _distribution(x, name: str) -> np.ndarray:
    v = _vector(x, name)
    if np.any(v < 0) or not np.isclose(v.sum(), 1.0, atol=1e-6):
        raise InterpError(f"{name} must be a probability distribution (>= 0, sum 1), got sum {v.sum():.6g}")
    return v


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    a, b = _distribution(p, "p"), _distribution(q, "q")
    if a.shape != b.shape:
        raise InterpError(f"p and q must have the same options, got {a.size} and {b.size}")
    return a, b


def option_distribution(logprobs: Float[np.ndarray, " option"], n_tokens, n_chars, norm: str = "sum"
                        ) -> Float[np.ndarray, " option"]:
    """Softmax over the options' scores under ``norm`` (module doc)."""
    lp = _vector(logprobs, "logprobs")
    if norm == "sum":
        score = lp
    elif norm == "token":
        score = lp / np.asarray(n_tokens, dtype=float)
    elif norm == "char":
        score = lp / np.asarray(n_chars, dtype=float)
    else:
        raise InterpError(f"unknown normalisation {norm!r}; valid: {', '.join(NORMS)}")
    z = np.exp(score - score.max())
    return z / z.sum()


def js_divergence(p: Float[np.ndarray, " option"], q: Float[np.ndarray, " option"]) -> float:
    """Jensen-Shannon divergence in bits: ``(KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``."""
    from scipy.spatial.distance import jensenshannon

    a, b = _pair(p, q)
    return float(jensenshannon(a, b, base=2) ** 2)


def pearson(p: Float[np.ndarray, " option"], q: Float[np.ndarray, " option"]) -> float:
    """Pearson's r between two distributions across their options (NaN if either is constant)."""
    from scipy.stats import pearsonr

    a, b = _pair(p, q)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(pearsonr(a, b).statistic)


def loglik(counts, q: Float[np.ndarray, " option"]) -> float:
    """Log-likelihood (nats) of choice ``counts`` under the distribution ``q``."""
    n = _vector(counts, "counts")
    b = _distribution(q, "q")
    if n.shape != b.shape or np.any(n < 0):
        raise InterpError(f"counts must be >= 0 and have q's {b.size} options, got {n.tolist()}")
    used = n > 0  # options nobody chose add nothing (0 log 0 = 0), even where q is 0
    with np.errstate(divide="ignore"):
        return float(np.sum(n[used] * np.log(b[used])))


def loglik_per_choice(p: Float[np.ndarray, " option"], q: Float[np.ndarray, " option"]) -> float:
    """Mean log-likelihood (nats) of one choice drawn from ``p`` under ``q``: ``sum_k p_k log q_k``."""
    a, b = _pair(p, q)
    return loglik(a, b)
