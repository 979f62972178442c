"""Every fact and pair of the patching study accounted for: facts that make no minimal pair
are named (console, meta.json), and pairs without a restored fraction are counted."""

import json

import pytest

from studies import patching as sp
from tests.study_cli import REPO, run_study_cli


def test_unpaired_facts_are_named_with_their_reason(tokenizer):
    # word tokenizer: one token per known word; "red blue green" is the only three-token subject
    facts = [("france", "paris"), ("poland", "warsaw"), ("spain", "madrid"), ("red blue green", "rome")]
    pairing = sp.pair_facts(tokenizer, facts, "zero", limit=None, seed=0)
    assert pairing.unpaired == {"red blue green": sp.UNMATCHED}
    assert sorted(p.clean.subject for p in pairing.pairs) == ["france", "poland", "spain"]
    assert pairing.notes() == [f"zero prompts: 1 fact(s) make no minimal pair (red blue green): {sp.UNMATCHED}"]
    # an answer that adds no token after the prompt cannot be scored
    pairing = sp.pair_facts(tokenizer, facts[:3] + [("italy", "")], "zero", limit=None, seed=0)
    assert pairing.unpaired == {"italy": sp.UNTOKENIZABLE}
    assert sp.make_pairs(tokenizer, facts, "zero", None, 0) == sp.pair_facts(tokenizer, facts, "zero", None, 0).pairs


def _rows(pair: str, gap_small: bool) -> list[dict]:
    return [{"model": "base", "style": "zero", "pair": pair, "hook": "mlp_out", "layer": layer, "position": pos,
             "role": f"r{pos}", "is_last": pos == 1, "effect": 0.5, "restored": None if gap_small else 0.5,
             "corrupted_metric": 0.0, "clean_metric": 1.0} for layer in range(2) for pos in range(2)]


def test_pairs_without_a_restored_fraction_are_counted():
    summary = sp.summarize(_rows("a>b", False) + _rows("c>d", True) + _rows("e>f", False))
    assert set(summary.n_pairs) == {3} and set(summary.n_pairs_excluded) == {1} and set(summary.n) == {2}
    assert set(summary.exclude_reason) == {sp.EXCLUDED}
    note = f"zero prompts, mlp_out (base): 1 of 3 pairs excluded: {sp.EXCLUDED}"
    assert summary.attrs["notes"] == [note] and f"note: {note}" in sp.report(summary, "toy")
    clean = sp.summarize(_rows("a>b", False))
    assert set(clean.n_pairs_excluded) == {0} and not clean.attrs["notes"]


@pytest.mark.skipif(not (REPO / "models/toy/base").exists(), reason="models/toy not built (python -m toy_pair.train)")
def test_cli_names_unpaired_facts(tmp_path):
    from studies.ffn_capitals.items import toy_facts

    facts = [{"subject": f.subject, "answer": f.answer} for f in toy_facts() if f.split == "test"][:4]
    facts.append({"subject": "The Very Long And Entirely Imaginary Republic Of Nowhere", "answer": "Paris"})
    path = tmp_path / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in facts))
    proc = run_study_cli("studies.patching", "--facts", str(path), "--hooks", "mlp_out", "--limit", "10",
                         "--no-figures", "--out", str(tmp_path / "out"))
    lonely = "The Very Long And Entirely Imaginary Republic Of Nowhere"
    assert f"note: zero prompts: 1 fact(s) make no minimal pair ({lonely}): {sp.UNMATCHED}" in proc.stdout
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["unpaired_facts"] == {"zero": {lonely: sp.UNMATCHED}}
