"""Calibration metrics against hand computations and synthetic predictors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.calibration import (
    bootstrap_ci,
    brier_score,
    brier_score_binary,
    confidence_and_correct,
    ece,
    fit_temperature,
    mce,
    nll,
    p_true,
    reliability_diagram,
    rms_calibration_error,
    softmax,
    temperature_sweep,
)


def test_perfectly_calibrated_predictor_has_near_zero_ece():
    rng = np.random.default_rng(0)
    conf = rng.uniform(size=200_000)
    correct = rng.uniform(size=conf.size) < conf
    assert ece(conf, correct) < 0.01
    assert ece(conf, correct, strategy="quantile") < 0.01


def test_overconfident_predictor_matches_hand_value():
    conf = np.full(100, 0.9)
    correct = np.arange(100) < 60
    assert ece(conf, correct) == pytest.approx(0.3, abs=1e-12)
    assert mce(conf, correct) == pytest.approx(0.3, abs=1e-12)
    assert rms_calibration_error(conf, correct) == pytest.approx(0.3, abs=1e-12)
    d = reliability_diagram(conf, correct, n_bins=10)
    assert d.counts[9] == 100 and d.counts.sum() == 100
    assert d.accuracy[9] == pytest.approx(0.6)
    assert np.isnan(d.accuracy[0])


def test_two_bin_hand_computation():
    # bin [0.2, 0.3): conf 0.25 x4, 1 correct -> gap 0; bin [0.8, 0.9): conf 0.85 x6, 3 correct -> gap 0.35
    conf = np.array([0.25] * 4 + [0.85] * 6)
    correct = np.array([1, 0, 0, 0] + [1, 1, 1, 0, 0, 0])
    assert ece(conf, correct) == pytest.approx(0.6 * 0.35)
    assert mce(conf, correct) == pytest.approx(0.35)
    assert rms_calibration_error(conf, correct) == pytest.approx(np.sqrt(0.6 * 0.35**2))


def test_uniform_bin_edges_and_confidence_one():
    d = reliability_diagram([0.0, 0.1, 0.5, 1.0], [1, 0, 1, 1], n_bins=10)
    np.testing.assert_allclose(d.edges, np.linspace(0, 1, 11))
    assert d.counts.tolist() == [1, 1, 0, 0, 0, 1, 0, 0, 0, 1]


def test_equal_mass_bins_have_equal_counts():
    rng = np.random.default_rng(1)
    conf = rng.beta(5, 2, size=1000)
    d = reliability_diagram(conf, rng.uniform(size=1000) < conf, n_bins=10, strategy="quantile")
    assert d.counts.tolist() == [100] * 10
    assert np.all(np.diff(d.edges) >= 0) and d.edges[0] == 0 and d.edges[-1] == 1
    assert np.all(np.diff(d.mean_confidence) > 0)


def test_brier_hand_computation():
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    labels = np.array([0, 1])
    # (0.09 + 0.04 + 0.01) and (0.25 + 0.25 + 0) -> mean 0.32
    assert brier_score(probs, labels) == pytest.approx(0.32)
    assert brier_score_binary([0.9, 0.2], [1, 1]) == pytest.approx((0.01 + 0.64) / 2)


def test_temperature_scaling_recovers_known_temperature():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, size=(20_000, 5))
    probs = softmax(logits, 2.0)
    labels = (probs.cumsum(axis=1) > rng.uniform(size=(len(probs), 1))).argmax(axis=1)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.0, rel=0.05)
    assert nll(logits, labels, t) <= min(nll(logits, labels, 1.0), nll(logits, labels, 3.0))


def test_temperature_sweep_shapes_and_invariant_accuracy():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 4))
    labels = rng.integers(0, 4, 500)
    sweep = temperature_sweep(logits, labels, temperatures=[0.5, 1.0, 2.0])
    assert sweep.nll.shape == (3,)
    assert np.ptp(sweep.accuracy) == 0
    assert sweep.nll[1] == pytest.approx(nll(logits, labels, 1.0))
    assert len(sweep.to_records(model="base")) == 3


def test_confidence_and_p_true():
    conf, correct = confidence_and_correct(np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]))
    assert conf.tolist() == [0.8, 0.6] and correct.tolist() == [True, False]
    assert p_true(np.log([0.3]), np.log([0.1]))[0] == pytest.approx(0.75)


def test_bootstrap_ci_is_seeded_and_brackets_mean():
    rng = np.random.default_rng(4)
    conf = rng.uniform(size=400)
    correct = rng.uniform(size=400) < conf
    a = bootstrap_ci(brier_score_binary, conf, correct, n_boot=300, seed=7)
    b = bootstrap_ci(brier_score_binary, conf, correct, n_boot=300, seed=7)
    c = bootstrap_ci(brier_score_binary, conf, correct, n_boot=300, seed=8)
    assert a == b and (a.low, a.high) != (c.low, c.high)
    assert a.low < a.estimate < a.high


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        ece([1.2], [1])
    with pytest.raises(ValueError):
        ece([0.5, 0.5], [1])
    with pytest.raises(ValueError):
        reliability_diagram([0.5], [1], strategy="nope")


pairs = st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=200)


@settings(max_examples=60, deadline=None)
@given(pairs, st.integers(1, 20), st.sampled_from(["uniform", "quantile"]), st.randoms(use_true_random=False))
def test_ece_bounded_and_order_invariant(data, n_bins, strategy, rnd):
    n_bins = min(n_bins, len(data)) if strategy == "quantile" else n_bins
    conf = np.array([c for c, _ in data])
    correct = np.array([k for _, k in data])
    value = ece(conf, correct, n_bins, strategy)
    assert 0.0 <= value <= 1.0
    assert value <= mce(conf, correct, n_bins, strategy) + 1e-12
    assert value <= rms_calibration_error(conf, correct, n_bins, strategy) + 1e-12
    perm = list(range(len(data)))
    rnd.shuffle(perm)
    assert ece(conf[perm], correct[perm], n_bins, strategy) == pytest.approx(value, abs=1e-12)
    d = reliability_diagram(conf, correct, n_bins, strategy)
    assert d.counts.sum() == len(data)
    if strategy == "quantile":
        assert d.counts.max() - d.counts.min() <= 1
