"""STARC between LLM reward models (contextual bandit, gamma = 0): hand values, invariances,
scipy oracles and the bad-input errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from interp.errors import InterpError
from probes.reward_distance import RewardDistanceError, canonicalise, compare, standardise, starc

IDS = ["p0", "p0", "p0", "p1", "p1", "p2", "p2", "p2", "p2"]


def _pool(seed, n_prompts=6, per=4):
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.arange(n_prompts), per)
    return rng.normal(size=len(ids)), rng.normal(size=len(ids)), ids


def test_hand_computed_distance():
    # one prompt, two responses: a prefers the first by 2, b the second by 1 -> opposite preferences
    assert starc([3.0, 1.0], [0.0, 1.0], ["x", "x"]) == pytest.approx(1.0)
    # two prompts; a = (1, -1 | 1, -1), b = (1, -1 | -1, 1): standardised a = (1,-1,1,-1)/2,
    # b = (1,-1,-1,1)/2, difference (0,0,2,-2)/2, L2 = sqrt(2), half of it:
    assert starc([5, 3, 1, -1], [1, -1, -1, 1], ["p", "p", "q", "q"]) == pytest.approx(np.sqrt(2) / 2)


def test_canonicalise_subtracts_each_prompts_mean_and_counts_singletons():
    r = np.array([1.0, 2.0, 6.0, 10.0, 4.0, 7.0, 0.0, 0.0, 1.0])
    ids = IDS[:5] + ["solo"] + IDS[6:]  # "solo" has a single response
    c = canonicalise(r, ids)
    hand = [1 - 3, 2 - 3, 6 - 3, 10 - 7, 4 - 7, 0.0, 0 - 1 / 3, 0 - 1 / 3, 1 - 1 / 3]
    np.testing.assert_allclose(c.values, hand, atol=1e-12)
    assert (c.n_prompts, c.n_single_prompts) == (4, 1)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(0.01, 100), shift_scale=st.floats(0, 1000))
def test_zero_for_per_prompt_shift_and_positive_scale(seed, scale, shift_scale):
    a, _, ids = _pool(seed)
    shifts = np.random.default_rng(seed + 1).normal(size=ids.max() + 1) * shift_scale
    b = scale * a + shifts[ids]
    assert starc(a, b, ids) == pytest.approx(0.0, abs=1e-7)
    assert starc(a, -b, ids) == pytest.approx(1.0, abs=1e-7)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_metric_properties(seed):
    a, b, ids = _pool(seed)
    c = np.random.default_rng(seed + 7).normal(size=len(a))
    dab, dba, dac, dcb = starc(a, b, ids), starc(b, a, ids), starc(a, c, ids), starc(c, b, ids)
    assert 0 < dab <= 1
    assert dab == pytest.approx(dba, abs=1e-12)
    assert dab <= dac + dcb + 1e-12


def test_shift_of_one_prompt_only_changes_nothing_but_reordering_does():
    a, _, ids = _pool(3)
    b = a.copy()
    b[ids == 2] += 50.0  # a constant per-prompt shift: same preferences
    assert starc(a, b, ids) == pytest.approx(0.0, abs=1e-12)
    b[ids == 2] = b[ids == 2][::-1]  # reversed order within one prompt: different preferences
    assert starc(a, b, ids) > 0.05


def test_compare_matches_scipy_and_epic_equals_starc_at_gamma_zero():
    a, b, ids = _pool(11)
    r = compare(a, b, ids)
    ca, cb = canonicalise(a, ids).values, canonicalise(b, ids).values
    rho = sps.pearsonr(ca, cb).statistic
    assert r.epic == pytest.approx(np.sqrt((1 - rho) / 2), abs=1e-12)
    assert r.starc == pytest.approx(r.epic, abs=1e-12)  # see the module docstring
    assert r.starc == pytest.approx(starc(a, b, ids), abs=1e-15)
    assert r.spearman == pytest.approx(sps.spearmanr(ca, cb).statistic, abs=1e-12)
    assert r.kendall == pytest.approx(sps.kendalltau(ca, cb).statistic, abs=1e-12)
    assert r.pearson_raw == pytest.approx(sps.pearsonr(a, b).statistic, abs=1e-12)
    assert (r.n_pairs, r.n_prompts, r.n_single_prompts) == (24, 6, 0)


def test_raw_pearson_is_not_shift_invariant_but_starc_is():
    a, _, ids = _pool(5)
    b = a + np.arange(ids.max() + 1)[ids] * 10.0
    r = compare(a, b, ids)
    assert r.starc == pytest.approx(0.0, abs=1e-12) and r.spearman == pytest.approx(1.0)
    assert r.pearson_raw < 0.5


def test_single_response_prompts_carry_no_preference():
    a, b, ids = _pool(2)
    ids2 = np.concatenate([ids, [100, 101]])
    with_solo = starc(np.concatenate([a, [9.0, -9.0]]), np.concatenate([b, [-9.0, 9.0]]), ids2)
    assert with_solo == pytest.approx(starc(a, b, ids), abs=1e-12)
    assert compare(np.concatenate([a, [1.0]]), np.concatenate([b, [2.0]]), list(ids) + ["x"]).n_single_prompts == 1


def test_bad_input_errors():
    with pytest.raises(RewardDistanceError, match="3 scores but prompt_ids has 2"):
        starc([1, 2, 3], [1, 2, 3], ["a", "a"])
    with pytest.raises(RewardDistanceError, match="rewards_b has 2 scores"):
        starc([1, 2, 3], [1, 2], ["a", "a", "b"])
    with pytest.raises(RewardDistanceError, match="non-finite"):
        starc([1, np.nan], [1, 2], ["a", "a"])
    with pytest.raises(RewardDistanceError, match="empty"):
        starc([], [], [])
    # constant within each prompt (a per-prompt shift is no preference): zero norm, undefined
    with pytest.raises(RewardDistanceError, match="rewards_a is constant within every prompt"):
        starc([1.0, 1.0, 5.0, 5.0], [1.0, 2.0, 3.0, 4.0], ["a", "a", "b", "b"])
    with pytest.raises(RewardDistanceError, match="2 of 2 prompts have a single response"):
        standardise([1.0, 2.0], ["a", "b"])
    assert issubclass(RewardDistanceError, InterpError)
