"""Is a reward distribution one bump or two? And does it rank the right answer first?

The reward-collapse study (Song et al. 2023) asks whether a reward model's scores on a
closed-ended task split into two modes (right vs wrong answers) or collapse into one. Three
views of modality, each with its known blind spot, are reported side by side:

- :func:`dip_test`: Hartigan's dip statistic and its p-value (the ``diptest`` package;
  interpolated from its tables). Null: unimodal. Weak for small samples and for modes of
  very unequal size.
- :func:`bimodality_coefficient`: Sarle's ``(g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3)))`` with
  the sample-size corrected skewness ``g`` and excess kurtosis ``k``; above ``5/9`` (the
  value of a uniform distribution) suggests bimodality. Heavy skew alone can exceed it.
- :func:`gmm_bic`: BIC of a 1- vs a 2-component Gaussian mixture fitted by EM in 1D; the lower
  BIC wins. Prefers two components for heavy-tailed unimodal data too.

Ranking: :func:`auroc` (Mann-Whitney U / (n1 n2), ties count half), :func:`pairwise_accuracy`
(paired: reward(correct) > reward(incorrect), ties count half and are reported). Paired
comparisons of two sources (base vs chat samples): :func:`paired_tests` (Wilcoxon signed-rank
and paired t, scipy). Agreement with annotations: :func:`cohens_kappa`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from interp.errors import InterpError

BC_THRESHOLD = 5 / 9  # Sarle's bimodality coefficient of a uniform distribution


class StatsError(InterpError):
    """A statistic was asked of data it is not defined for (too few values, mismatched pairs)."""


def _values(x, name: str = "x", min_n: int = 1) -> np.ndarray:
    arr = np.asarray(x, dtype=float).ravel()
    if arr.size < min_n:
        raise StatsError(f"{name} needs at least {min_n} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise StatsError(f"{name} holds NaN or infinite values; drop them first")
    return arr


# -- modality -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DipResult:
    """Hartigan's dip test: ``statistic`` (the dip) and ``p_value`` (null: unimodal)."""

    statistic: float
    p_value: float


def dip_test(x: Float[np.ndarray, " n"]) -> DipResult:
    """Hartigan's dip test of unimodality (``diptest.diptest``, tabulated p-value)."""
    import diptest

    arr = _values(x, min_n=4)
    dip, p = diptest.diptest(arr)
    return DipResult(float(dip), float(p))


def bimodality_coefficient(x: Float[np.ndarray, " n"]) -> float:
    """Sarle's bimodality coefficient with sample-size corrected skewness and kurtosis
    (SAS's formula; needs n >= 4). ``nan`` when the values are all equal (no shape)."""
    from scipy import stats

    arr = _values(x, min_n=4)
    n = arr.size
    if np.ptp(arr) == 0:
        return math.nan
    g = stats.skew(arr, bias=False)
    k = stats.kurtosis(arr, fisher=True, bias=False)
    return float((g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


@dataclass(frozen=True)
class MixtureFit:
    """A 1-D Gaussian mixture: ``weights``, ``means``, ``sds`` (per component),
    ``log_likelihood`` and ``bic`` (``-2 LL + p ln n``, ``p = 3k - 1`` parameters)."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    sds: tuple[float, ...]
    log_likelihood: float
    bic: float


@dataclass(frozen=True)
class BICComparison:
    """1- vs 2-component fits; ``best`` is the number of components with the lower BIC and
    ``delta`` = ``bic_1 - bic_2`` (positive: two components fit better)."""

    one: MixtureFit
    two: MixtureFit

    @property
    def best(self) -> int:
        return 2 if self.two.bic < self.one.bic else 1

    @property
    def delta(self) -> float:
        return self.one.bic - self.two.bic


def _normal_logpdf(x, mean, var):
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def fit_mixture(x: Float[np.ndarray, " n"], k: int, *, n_iter: int = 500, tol: float = 1e-10,
                var_floor: float = 1e-6) -> MixtureFit:
    """Maximum-likelihood ``k``-component Gaussian mixture by EM (``k`` = 1: closed form).

    Deterministic: EM starts from several splits of the sorted data (at its 25th, 50th and
    75th percentiles for ``k = 2``) and the best likelihood wins, so the fit does not depend on a
    seed. Variances are floored at ``var_floor`` times the data's variance (at least
    ``var_floor``): without it a component can shrink onto repeated values and the likelihood
    grows without bound."""
    arr = _values(x, min_n=max(2, k))
    n = arr.size
    floor = var_floor * max(float(arr.var()), 1.0)
    if k == 1:
        mean, var = float(arr.mean()), max(float(arr.var()), floor)
        ll = float(_normal_logpdf(arr, mean, var).sum())
        return MixtureFit((1.0,), (mean,), (math.sqrt(var),), ll, -2 * ll + 2 * math.log(n))
    if k != 2:
        raise StatsError(f"fit_mixture supports k = 1 or 2 components, got {k}")
    xs = np.sort(arr)
    best = None
    for q in (0.25, 0.5, 0.75):
        cut = max(1, min(n - 1, int(round(q * n))))
        lo, hi = xs[:cut], xs[cut:]
        w = np.array([cut / n, 1 - cut / n])
        mu = np.array([lo.mean(), hi.mean()])
        var = np.maximum(np.array([lo.var(), hi.var()]), floor)
        prev = -np.inf
        for _ in range(n_iter):
            logp = np.log(w)[None, :] + _normal_logpdf(arr[:, None], mu[None, :], var[None, :])
            top = logp.max(1, keepdims=True)
            ll = float((top[:, 0] + np.log(np.exp(logp - top).sum(1))).sum())
            resp = np.exp(logp - top)
            resp /= resp.sum(1, keepdims=True)
            nk = resp.sum(0)
            if np.any(nk < 1e-12):  # a component emptied: the fit is one component
                break
            w = nk / n
            mu = (resp * arr[:, None]).sum(0) / nk
            var = np.maximum((resp * (arr[:, None] - mu[None, :]) ** 2).sum(0) / nk, floor)
            if ll - prev < tol * max(1.0, abs(ll)):
                break
            prev = ll
        logp = np.log(w)[None, :] + _normal_logpdf(arr[:, None], mu[None, :], var[None, :])
        top = logp.max(1, keepdims=True)
        ll = float((top[:, 0] + np.log(np.exp(logp - top).sum(1))).sum())
        if best is None or ll > best[0]:
            order = np.argsort(mu)
            best = (ll, tuple(w[order]), tuple(mu[order]), tuple(np.sqrt(var[order])))
    ll, w, mu, sd = best
    return MixtureFit(tuple(map(float, w)), tuple(map(float, mu)), tuple(map(float, sd)), ll,
                      -2 * ll + 5 * math.log(n))


def gmm_bic(x: Float[np.ndarray, " n"]) -> BICComparison:
    """BIC of a 1- and a 2-component Gaussian mixture on ``x`` (needs n >= 4)."""
    arr = _values(x, min_n=4)
    return BICComparison(fit_mixture(arr, 1), fit_mixture(arr, 2))


# -- ranking --------------------------------------------------------------------------------------
def auroc(positive: Float[np.ndarray, " n1"], negative: Float[np.ndarray, " n2"]) -> float:
    """P(a positive scores above a negative), ties counting half: the Mann-Whitney U of the
    positives divided by ``n1 n2`` (unpaired: every positive against every negative)."""
    from scipy.stats import rankdata

    pos, neg = _values(positive, "positive"), _values(negative, "negative")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks: ties count half
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


@dataclass(frozen=True)
class PairwiseAccuracy:
    """Paired comparison ``better[i]`` vs ``worse[i]``: ``accuracy`` = (wins + ties / 2) / n."""

    accuracy: float
    n: int
    n_wins: int
    n_ties: int


def pairwise_accuracy(better: Float[np.ndarray, " n"], worse: Float[np.ndarray, " n"]) -> PairwiseAccuracy:
    """How often the reward of the correct (chosen) response of a pair beats the incorrect
    (rejected) one's; a tie counts half and is counted in ``n_ties``."""
    a, b = _values(better, "better"), _values(worse, "worse")
    if a.shape != b.shape:
        raise StatsError(f"pairwise accuracy needs paired values, got {a.size} and {b.size}")
    wins, ties = int((a > b).sum()), int((a == b).sum())
    return PairwiseAccuracy((wins + 0.5 * ties) / a.size, a.size, wins, ties)


# -- paired tests ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedTests:
    """Two paired samples ``a`` and ``b`` (e.g. per-prompt mean rewards of base and chat
    samples): ``mean_diff`` = mean(b - a), Wilcoxon signed-rank and paired t statistics and
    two-sided p-values (``nan`` when undefined: fewer than 2 pairs, or all differences 0)."""

    n: int
    mean_diff: float
    wilcoxon_statistic: float
    wilcoxon_p: float
    t_statistic: float
    t_p: float


def paired_tests(a: Float[np.ndarray, " n"], b: Float[np.ndarray, " n"]) -> PairedTests:
    """Wilcoxon signed-rank (``scipy.stats.wilcoxon``, zero differences dropped as its default)
    and paired t (``scipy.stats.ttest_rel``) of ``b`` against ``a``."""
    from scipy import stats

    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise StatsError(f"paired tests need paired values, got {x.size} and {y.size}")
    diff = y - x
    nan = math.nan
    if x.size < 2 or np.all(diff == 0):
        return PairedTests(x.size, float(diff.mean()), nan, nan, nan, nan)
    w = stats.wilcoxon(y, x)
    t = stats.ttest_rel(y, x)
    return PairedTests(x.size, float(diff.mean()), float(w.statistic), float(w.pvalue), float(t.statistic),
                       float(t.pvalue))


# -- agreement ------------------------------------------------------------------------------------
def cohens_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters' labels (any hashable categories): ``(p_o - p_e) / (1 - p_e)``;
    ``nan`` when chance agreement is 1 (both raters used one and the same label throughout)."""
    if len(a) != len(b):
        raise StatsError(f"kappa needs one label per item from both raters, got {len(a)} and {len(b)}")
    if not len(a):
        raise StatsError("kappa needs at least one labelled item")
    n = len(a)
    cats = sorted(set(a) | set(b), key=str)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in cats)
    return math.nan if p_e == 1 else (p_o - p_e) / (1 - p_e)


# -- one group's description ----------------------------------------------------------------------
def describe(x: Float[np.ndarray, " n"]) -> dict:
    """``n``, ``mean``, ``sd`` (ddof 1) and the modality statistics of one sample, as a flat
    dict for a summary row; statistics a small sample cannot have are ``nan``."""
    arr = _values(x, min_n=1)
    out = {"n": int(arr.size), "mean": float(arr.mean()), "sd": float(arr.std(ddof=1)) if arr.size > 1 else math.nan,
           "dip": math.nan, "dip_p": math.nan, "bimodality_coefficient": math.nan, "bic_1": math.nan,
           "bic_2": math.nan, "gmm_components": None}
    if arr.size >= 4:
        dip = dip_test(arr)
        bic = gmm_bic(arr)
        out.update(dip=dip.statistic, dip_p=dip.p_value, bimodality_coefficient=bimodality_coefficient(arr),
                   bic_1=bic.one.bic, bic_2=bic.two.bic, gmm_components=bic.best)
    return out
