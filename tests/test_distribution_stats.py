"""probes.distribution_stats: modality statistics recover planted bimodal vs unimodal samples;
ranking and agreement statistics equal hand computations and scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from probes import distribution_stats as ds


def _unimodal(n=400, seed=0):
    return np.random.default_rng(seed).normal(0.0, 1.0, n)


def _bimodal(n=400, seed=0, gap=6.0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-gap / 2, 1.0, n // 2), rng.normal(gap / 2, 1.0, n - n // 2)])


def test_dip_test_separates_planted_bimodal_from_unimodal():
    uni, bi = ds.dip_test(_unimodal()), ds.dip_test(_bimodal())
    assert uni.p_value > 0.1
    assert bi.p_value < 0.01
    assert bi.statistic > 2 * uni.statistic


def test_bimodality_coefficient_matches_formula_and_threshold():
    bi, uni = _bimodal(), _unimodal()
    assert ds.bimodality_coefficient(bi) > ds.BC_THRESHOLD > ds.bimodality_coefficient(uni)
    # the sample-size corrected formula by hand (SAS's G1, G2)
    x = np.array([1.0, 2.0, 2.5, 4.0, 7.0, 7.5, 9.0])
    n = x.size
    m2, m3, m4 = (((x - x.mean()) ** p).mean() for p in (2, 3, 4))
    g1 = m3 / m2**1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    g2 = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (m4 / m2**2 - 3) + 6)
    hand = (g1**2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    assert ds.bimodality_coefficient(x) == pytest.approx(hand, rel=1e-12)


def test_gmm_bic_prefers_two_components_on_a_mixture_and_one_on_a_gaussian():
    mix = ds.gmm_bic(_bimodal(seed=1))
    assert mix.best == 2 and mix.delta > 10
    assert mix.two.means == pytest.approx((-3.0, 3.0), abs=0.3)
    assert mix.two.weights == pytest.approx((0.5, 0.5), abs=0.05)
    assert ds.gmm_bic(_unimodal(seed=1)).best == 1


def test_gmm_one_component_is_the_closed_form_fit():
    x = _unimodal(50, seed=3)
    fit = ds.fit_mixture(x, 1)
    ll = stats.norm(x.mean(), x.std()).logpdf(x).sum()
    assert fit.log_likelihood == pytest.approx(ll, rel=1e-12)
    assert fit.bic == pytest.approx(-2 * ll + 2 * math.log(50), rel=1e-12)


def test_gmm_two_components_reach_at_least_the_one_component_likelihood():
    # EM from a split can only raise the likelihood; a two-component fit nests the one-component one
    for seed in range(5):
        x = np.random.default_rng(seed).standard_t(3, 60)
        assert ds.fit_mixture(x, 2).log_likelihood >= ds.fit_mixture(x, 1).log_likelihood - 1e-9


def test_auroc_equals_hand_count_and_mann_whitney():
    pos = np.array([0.9, 0.4, 0.4, 2.0, -1.0])
    neg = np.array([0.4, 0.1, 0.4, 3.0])
    hand = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)) / 20
    assert ds.auroc(pos, neg) == pytest.approx(hand, abs=1e-15)
    u = stats.mannwhitneyu(pos, neg).statistic
    assert ds.auroc(pos, neg) == pytest.approx(u / 20, abs=1e-15)
    assert ds.auroc(neg, pos) == pytest.approx(1 - hand, abs=1e-15)


def test_pairwise_accuracy_counts_ties_half():
    r = ds.pairwise_accuracy([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0])
    assert (r.n_wins, r.n_ties, r.n) == (2, 1, 4)
    assert r.accuracy == pytest.approx(2.5 / 4)
    with pytest.raises(ds.StatsError, match="paired"):
        ds.pairwise_accuracy([1.0, 2.0], [1.0])


def test_paired_tests_equal_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 30)
    b = a + rng.normal(0.5, 1, 30)
    r = ds.paired_tests(a, b)
    assert r.mean_diff == pytest.approx(float((b - a).mean()))
    assert r.t_p == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert r.t_statistic > 0
    same = ds.paired_tests(a, a)
    assert math.isnan(same.t_p) and math.isnan(same.wilcoxon_p)


def test_cohens_kappa_equals_hand_value():
    # 2x2 table: both yes 20, a yes b no 5, a no b yes 10, both no 15 (n = 50)
    a = ["y"] * 20 + ["y"] * 5 + ["n"] * 10 + ["n"] * 15
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    p_o = 35 / 50
    p_e = (25 / 50) * (30 / 50) + (25 / 50) * (20 / 50)
    assert ds.cohens_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e), abs=1e-15)
    assert ds.cohens_kappa(a, a) == pytest.approx(1.0)
    assert math.isnan(ds.cohens_kappa(["y"] * 3, ["y"] * 3))


def test_describe_small_samples_and_errors():
    d = ds.describe([1.0, 2.0, 3.0])
    assert d["n"] == 3 and d["mean"] == 2.0 and math.isnan(d["dip"]) and d["gmm_components"] is None
    with pytest.raises(ds.StatsError, match="NaN"):
        ds.describe([1.0, math.nan])
    with pytest.raises(ds.StatsError, match="at least 4"):
        ds.dip_test([1.0, 2.0])
