"""The urn paradigm's contexts, the human-data reader (the authors' CSV formats) and the
distribution comparisons, against hand-written values."""

import math

import numpy as np
import pandas as pd
import pytest

from probes import distribution_compare as dc
from tasks.errors import TaskError
from tasks.uncertainty import (ACCESS, codes, contexts, decode_value, interpretation_items, production_items,
                               with_shots)
from tasks.uncertainty.human import FIXTURES, read_human_data

PAIRS = {(a, o) for a in (2, 4, 8, 10) for o in range(a + 1)}  # the paradigm, written out


# -- contexts ---------------------------------------------------------------------------------------
def test_contexts_cover_every_access_observation_pair():
    assert ACCESS == (2, 4, 8, 10)
    assert contexts() == sorted(PAIRS) and len(contexts()) == 28


@pytest.mark.parametrize("set_name", ["simple", "complex"])
def test_production_items_cover_every_pair_in_every_wording(set_name):
    items = production_items(set_name)
    wordings = sorted({it.meta["wording"] for it in items})
    assert len(wordings) >= 3
    for w in wordings:
        mine = [it for it in items if it.meta["wording"] == w]
        assert sorted((it.meta["access"], it.meta["observation"]) for it in mine) == sorted(PAIRS)
        assert len({it.context for it in mine}) == len(PAIRS)  # each context is told differently
        for it in mine:
            a, o = it.meta["access"], it.meta["observation"]
            assert f"{a} " in it.context and f"{o} " in it.context
            assert it.meta["codes"] == list(codes(set_name)) and len(it.options) == len(codes(set_name))
    assert len({(it.context.split(" ")[0]) for it in items}) == len(wordings)  # wordings differ


def test_expression_sets_are_the_authors():
    assert sorted(codes("simple")) == ["certainly", "certainlyNot", "possibly", "probably", "probablyNot"]
    assert sorted(codes("complex")) == sorted(f"{m} {a}" for m in ("is", "is_certainly", "is_probably", "might_be")
                                              for a in ("likely", "possible", "unlikely"))
    it = production_items("complex", 1)[0]
    assert it.context.endswith(" It") and " is_" not in " ".join(it.options)
    assert " might be unlikely" in it.options


def test_interpretation_items_ask_for_0_to_10_red_balls():
    items = interpretation_items("complex")
    assert {it.meta["expression"] for it in items} == set(codes("complex"))
    assert all(it.options == [f" {n}" for n in range(11)] for it in items)
    probably = next(it for it in items if it.meta["expression"] == "is_probably likely")
    assert "It is probably likely that the next ball is red." in probably.context


def test_few_shot_demonstrations_are_other_contexts_of_the_same_wording():
    pool = production_items("simple") + interpretation_items("simple")
    item = next(it for it in pool if it.id == "production-simple-a4o2-w1")
    shot = with_shots(pool, item, 2, seed=0)
    assert shot.context.endswith(item.context) and len(shot.meta["fewshot_ids"]) == 2
    assert all(i.startswith("production-simple-") and i.endswith("-w1") and i != item.id
               for i in shot.meta["fewshot_ids"])


def test_context_codes():
    assert decode_value(42) == (4, 2) and decode_value(20) == (2, 0) and decode_value(108) == (10, 8)
    assert decode_value(1010) == (10, 10) and decode_value(110) == (10, 10) and decode_value(100) == (10, 0)
    with pytest.raises(TaskError, match="access is one of 2, 4, 8, 10"):
        decode_value(53)


# -- the human-data reader ------------------------------------------------------------------------------
# The authors' headers, verbatim; the rows are made up in their format.
PRODUCTION = '''"","id","itemTime","trialnumber","value","access","observation","answer1","answer2","RT","answer3","answer.full","uncertainty"
"1","S1:X",1456171479347,1,42,4,2,"is_certainly","probable",18214,"likely","is_certainly likely","high"
"2","S1:X",1456171487254,2,42,4,2,"might_be","possible",7905,"possible","might_be possible","high"
"3","S2:X",1456171502803,1,42,4,2,"is_certainly","likely",15547,"likely","is_certainly likely","high"
"4","S2:X",1456171511317,2,108,10,8,"is","unlikely",8508,"unlikely","is unlikely","none"
'''
PRODUCTION_CIS = '''"","value","message","ci.low","mean","ci.high"
"1",42,"is likely",3.6,75,5.1
"2",42,"might_be possible",7.6,25,8.6
"3",108,"is unlikely",1.2,100,2.3
'''
INTERPRETATION = '''"","id","itemTime","trialnumber","kind","expression","access","observation","state","RT","value"
"1","S1:X",1480201837227,1,"c","is_probably likely",6,4,NA,26777,64
"2","S1:X",1480201855784,2,"f","might_be likely",NA,NA,6,18556,NA
"3","S2:X",1480201882790,1,"f","might_be likely",NA,NA,6,27005,NA
"4","S2:X",1480201893132,2,"f","is_certainly unlikely",NA,NA,2,10340,NA
'''
STATE_CIS = '''"","expression","state","ci.low","mean","ci.high"
"1","is likely",7,0,60,0
"2","is likely",8,2.8,40,4.1
'''


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_production_trials(tmp_path):
    data = read_human_data(_write(tmp_path, "clean_production_data.csv", PRODUCTION))
    assert (data.kind, data.set, data.format) == ("production", "complex", "production trials")
    assert set(data.probs) == {(4, 2), (10, 8)}
    want = np.zeros(12)
    want[list(data.options).index("is_certainly likely")] = 2
    want[list(data.options).index("might_be possible")] = 1
    np.testing.assert_array_equal(data.counts[(4, 2)], want)
    np.testing.assert_allclose(data.probs[(4, 2)], want / 3)
    assert data.probs[(10, 8)][list(data.options).index("is unlikely")] == 1.0


def test_reads_simple_production_trials(tmp_path):
    text = '"","id","value","access","observation","answer","uncertainty"\n"1","a",20,2,0,"certainlyNot","high"\n' \
           '"2","b",20,2,0,"probablyNot","high"\n'
    data = read_human_data(_write(tmp_path, "simple.csv", text))
    assert data.set == "simple" and data.counts[(2, 0)].sum() == 2
    assert data.probs[(2, 0)][list(data.options).index("certainlyNot")] == 0.5


def test_reads_the_aggregated_production_file(tmp_path):
    data = read_human_data(_write(tmp_path, "complex_production_cis.csv", PRODUCTION_CIS))
    assert data.format == "production aggregate" and data.counts is None
    p = data.probs[(4, 2)]  # value 42 = 4 seen, 2 red
    assert p[list(data.options).index("is likely")] == pytest.approx(0.75)
    assert p[list(data.options).index("might_be possible")] == pytest.approx(0.25)
    assert (10, 8) in data.probs


def test_reads_interpretation_trials_and_ignores_kind_c(tmp_path):
    data = read_human_data(_write(tmp_path, "clean_interpretation_data.csv", INTERPRETATION))
    assert (data.kind, data.set, data.n_rows, data.n_ignored) == ("interpretation", "complex", 4, 1)
    assert set(data.probs) == {"might_be likely", "is_certainly unlikely"}
    assert data.counts["might_be likely"][6] == 2 and data.counts["might_be likely"].sum() == 2
    assert data.probs["is_certainly unlikely"][2] == 1.0


def test_reads_the_aggregated_state_file(tmp_path):
    data = read_human_data(_write(tmp_path, "complex_interpretation_state_cis.csv", STATE_CIS))
    assert data.format == "interpretation aggregate"
    np.testing.assert_allclose(data.probs["is likely"][[7, 8]], [0.6, 0.4])


def test_the_shipped_fixtures_say_they_are_synthetic_and_parse():
    kinds = set()
    for path in FIXTURES:
        assert "synthetic" in path.name
        assert path.read_text().startswith("# SYNTHETIC")
        data = read_human_data(path)
        kinds.add((data.kind, data.set))
        assert data.counts is not None and all(v.sum() > 0 for v in data.counts.values())
    assert kinds == {("production", "complex"), ("production", "simple"), ("interpretation", "complex")}


@pytest.mark.parametrize("text, match", [
    ('"","access","observation","answer1"\n"1",4,2,"is"\n', r"lacks column\(s\) answer.full or answer"),
    ('"","value","message","ci.low"\n"1",42,"is likely",1\n', r"lacks column\(s\) mean; expected columns: value, message, mean"),
    ('"","kind","expression"\n"1","f","is likely"\n', r"lacks column\(s\) state"),
    ('"","foo","bar"\n"1",2,3\n', "match no human-data format; expected one of: production trials"),
    ('"","access","observation","answer.full"\n"1",4,2,"is very likely"\n', r"unknown \['is very likely'\]; valid codes"),
    ('"","access","observation","answer.full"\n"1",5,2,"is likely"\n', "line 2: access 5, observation 2 is no context"),
    ('"","access","observation","answer.full"\n"1",4,x,"is likely"\n', "line 2: column 'observation' must be a number"),
    ('"","kind","expression","state"\n"1","f","is likely",11\n', "state 11 is not a number of red balls"),
])
def test_bad_human_data_errors_name_what_is_expected(tmp_path, text, match):
    with pytest.raises(TaskError, match=match):
        read_human_data(_write(tmp_path, "bad.csv", text))


def test_missing_human_data_file(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        read_human_data(tmp_path / "nope.csv")


# -- comparisons ------------------------------------------------------------------------------------------
def test_js_divergence_equals_hand_values():
    # m = (1/4, 1/2, 1/4): KL(p || m) = KL(q || m) = 1/2 log2 2 = 1/2 bit
    assert dc.js_divergence([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(0.5)
    # m = (3/4, 1/4): (log2 4/3 + 1/2 log2 2/3 + 1/2 log2 2) / 2
    hand = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert dc.js_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(hand, abs=1e-12)
    assert dc.js_divergence([0.2, 0.8], [0.2, 0.8]) == pytest.approx(0.0, abs=1e-12)
    assert dc.js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)


def test_pearson_equals_hand_values():
    # deviations (1/6, 1/6, -1/3) and (-1/3, 1/6, 1/6): cov -3/36, variances 6/36
    assert dc.pearson([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]) == pytest.approx(-0.5)
    assert dc.pearson([0.1, 0.2, 0.7], [0.1, 0.2, 0.7]) == pytest.approx(1.0)
    assert math.isnan(dc.pearson([0.5, 0.5], [0.2, 0.8]))  # constant: r undefined


def test_loglik_of_human_choices_equals_hand_value():
    # two choices of option 0 (p 1/2) and one of option 1 (p 1/4): 2 ln 1/2 + ln 1/4 = -4 ln 2
    assert dc.loglik([2, 1, 0], [0.5, 0.25, 0.25]) == pytest.approx(-4 * math.log(2))
    assert dc.loglik([2, 0], [1.0, 0.0]) == 0.0  # an option nobody chose may have probability 0
    assert dc.loglik([1, 1], [1.0, 0.0]) == -math.inf
    assert dc.loglik_per_choice([2 / 3, 1 / 3, 0], [0.5, 0.25, 0.25]) == pytest.approx(-4 * math.log(2) / 3)


def test_option_distribution_normalisations():
    lp, toks, chars = [-2.0, -6.0], [2, 3], [4, 12]
    np.testing.assert_allclose(dc.option_distribution(lp, toks, chars, "sum"), [1 / (1 + math.exp(-4)), 1 / (1 + math.exp(4))])
    np.testing.assert_allclose(dc.option_distribution(lp, toks, chars, "token"), [1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))])
    np.testing.assert_allclose(dc.option_distribution(lp, toks, chars, "char"), [0.5, 0.5])
    with pytest.raises(Exception, match="valid: sum, token, char"):
        dc.option_distribution(lp, toks, chars, "mean")


def test_distributions_are_checked():
    with pytest.raises(Exception, match="probability distribution"):
        dc.js_divergence([0.5, 0.6], [0.5, 0.5])
    with pytest.raises(Exception, match="same options"):
        dc.pearson([0.5, 0.5], [0.2, 0.3, 0.5])
