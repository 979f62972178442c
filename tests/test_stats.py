"""McNemar's test and the paired bootstrap against hand values and scipy."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from probes.stats import mcnemar, mcnemar_from_counts, paired_bootstrap


def _paired(b, c, both=10, neither=5):
    a = np.array([1] * b + [0] * c + [1] * both + [0] * neither, dtype=bool)
    z = np.array([0] * b + [1] * c + [1] * both + [0] * neither, dtype=bool)
    return a, z


def test_mcnemar_exact_matches_hand_binomial():
    a, z = _paired(3, 12)
    r = mcnemar(a, z)
    hand = 2 * sum(math.comb(15, i) for i in range(4)) / 2**15  # = 0.03515625
    assert (r.b, r.c, r.method) == (3, 12, "exact")
    assert r.p_value == pytest.approx(hand, abs=1e-15)
    assert r.p_value == pytest.approx(sps.binomtest(3, 15, 0.5).pvalue, abs=1e-12)


def test_mcnemar_chi2_matches_scipy_with_continuity_correction():
    a, z = _paired(20, 40)
    r = mcnemar(a, z)
    assert r.method == "chi2"
    assert r.statistic == pytest.approx(19**2 / 60)
    assert r.p_value == pytest.approx(sps.chi2.sf(19**2 / 60, df=1), rel=1e-10)


def test_mcnemar_degenerate_and_forced_methods():
    assert mcnemar_from_counts(0, 0).p_value == 1.0
    assert mcnemar_from_counts(5, 8, method="chi2").p_value == pytest.approx(sps.chi2.sf(4 / 13, 1))
    assert mcnemar_from_counts(5, 5, method="chi2").p_value == 1.0  # correction never overshoots 0
    assert mcnemar_from_counts(30, 31, method="exact").method == "exact"
    with pytest.raises(ValueError):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_symmetric_and_valid(b, c):
    r, s = mcnemar_from_counts(b, c), mcnemar_from_counts(c, b)
    assert 0.0 <= r.p_value <= 1.0
    assert r.p_value == pytest.approx(s.p_value)


def test_paired_bootstrap_contains_true_difference_and_is_seeded():
    rng = np.random.default_rng(0)
    n = 2000
    skill = rng.uniform(size=n)
    base = rng.uniform(size=n) < 0.6
    chat = np.where(rng.uniform(size=n) < 0.7, base | (skill > 0.75), base)  # correlated pairs
    res = paired_bootstrap(base, chat, n_boot=2000, seed=3)
    assert res.diff == pytest.approx(chat.mean() - base.mean())
    assert res.ci_low < res.diff < res.ci_high
    assert res.ci_low > 0 and res.p_value < 0.01
    assert res == paired_bootstrap(base, chat, n_boot=2000, seed=3)
    assert res != paired_bootstrap(base, chat, n_boot=2000, seed=4)


def test_paired_bootstrap_null_difference_not_significant():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=300) < 0.5
    res = paired_bootstrap(a, a.copy(), n_boot=500)
    assert res.diff == 0 and res.ci_low == 0 and res.ci_high == 0
    assert res.p_value == 1.0


def test_paired_bootstrap_coverage_of_population_difference():
    # population difference is exactly 0.1: chat fixes a wrong base answer with prob 0.25 (0.4 * 0.25)
    covered = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        base = rng.uniform(size=400) < 0.6
        chat = base | (rng.uniform(size=400) < 0.25)
        r = paired_bootstrap(base, chat, n_boot=400, seed=seed)
        covered += r.ci_low <= 0.1 <= r.ci_high
    assert covered >= 34  # nominal 95%: 38 of 40; a broken interval misses far more often
