"""``python -m studies.patching`` end to end on the toy pair: files, facts every correct sweep
must show (the final residual at the last position carries the whole answer; positions before
the subject carry nothing), resumption, errors, and the minimal-pair building blocks."""

from __future__ import annotations

import json
from functools import partial

import pytest
from study_cli import rows_of, run_study_cli

import interp
from studies import patching as sp
from tests.conftest import assert_figure_files

HOOKS = ("--hooks", "resid_pre,resid_post")


cli = partial(run_study_cli, "studies.patching")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("patching_full")
    proc = cli(*HOOKS, "--limit", "3", "--out", str(out))
    return out, proc


@pytest.fixture(scope="module")
def tokenizer():
    return interp.load("toy/base").tokenizer


def test_files_and_rows(full):
    out, proc = full
    for name in ("results.jsonl", "summary.csv", "meta.json"):
        assert (out / name).stat().st_size > 0, name
    for hook in ("resid_pre", "resid_post"):  # heatmaps: coloured cells, not an empty frame
        rgb = assert_figure_files(out / f"restored_zero_{hook}", min_ink=0.1)
        assert ((rgb.max(-1) - rgb.min(-1)) > 0.3).mean() > 0.02
    rows = rows_of(out)
    pairs = {r["pair"] for r in rows}
    assert len(pairs) == 3
    n_pos = {r["pair"]: r["position"] + 1 for r in rows if r["is_last"]}
    assert len(rows) == sum(2 * 2 * 6 * n_pos[p] for p in pairs)  # models x hooks x layers x positions
    assert "strongest cell" in proc.stdout and "wrote" in proc.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["minimal_pairs"] == sorted(pairs, key=meta["minimal_pairs"].index) and meta["n_rows"] == len(rows)


def test_what_every_correct_sweep_shows(full):
    """The final block's output at the last position is all the logits read: patching it
    restores the clean logit difference exactly. Positions before the subject are the same
    tokens in both prompts, so patching them changes nothing, at any layer (up to the float
    rounding between the sweep's two-column unembedding and a full one)."""
    rows = rows_of(full[0])
    final = [r for r in rows if r["hook"] == "resid_post" and r["layer"] == 5 and r["is_last"]]
    assert len(final) == 2 * 3 and all(abs(r["restored"] - 1) < 1e-4 for r in final)
    before = [r for r in rows if not r["role"].startswith("subject") and r["role"].endswith(("@-1", "@-2", "@-3"))]
    assert before and all(abs(r["effect"]) < 1e-5 for r in before)
    subject = [r for r in rows if r["role"] == "subject_first" and r["hook"] == "resid_pre" and r["layer"] == 0]
    assert all(r["restored"] > 0.2 for r in subject)  # the country's name matters


def test_resumed_run_equals_a_fresh_one(tmp_path, full):
    resumed = tmp_path / "resumed"
    cli(*HOOKS, "--limit", "3", "--out", str(resumed), "--no-figures")
    rows = rows_of(resumed)
    first = [r for r in rows if (r["model"], r["pair"]) == (rows[0]["model"], rows[0]["pair"])]
    lines = (resumed / "results.jsonl").read_text().splitlines(keepends=True)
    (resumed / "results.jsonl").write_text("".join(lines[:len(first)]) + lines[len(first)][:40])  # interrupted
    proc = cli(*HOOKS, "--limit", "3", "--out", str(resumed), "--no-figures")
    rows = rows_of(resumed)
    assert rows[:len(first)] == first and len(rows) == len(rows_of(full[0]))
    assert (resumed / "summary.csv").read_bytes() == (full[0] / "summary.csv").read_bytes()
    assert "wrote" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (("--hooks", "resid_pre,mlp_in"), "unknown hook mlp_in; choose from resid_pre"),
    (("--styles", "fewshot"), "unknown style fewshot; choose from zero, qa"),
    (("--limit", "0"), "--limit must be a positive number"),
    (("--pair", "nope"), "nope"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    proc = cli(*args, "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_minimal_pairs_and_roles(tokenizer):
    from studies.ffn_capitals.items import toy_facts

    facts = [(f.subject, f.answer) for f in toy_facts() if f.split == "test"]
    for style in sp.STYLES:
        pairs = sp.make_pairs(tokenizer, facts, style, limit=10, seed=0)
        assert len(pairs) == 10
        for p in pairs:
            assert len(p.corrupted.ids) == len(p.clean.ids) and p.corrupted.answer_token != p.clean.answer_token
            assert p.corrupted.subject != p.clean.subject
            text = tokenizer.decode(list(p.clean.ids[slice(*p.clean.subject_span)])).replace(" ", "")
            assert text == p.clean.subject.replace(" ", "")
            first = tokenizer(f"{sp.STYLES[style].format(subject=p.clean.subject)} {p.clean.answer}")["input_ids"]
            assert first[len(p.clean.ids)] == p.clean.answer_token
    prompt = sp.tokenize(tokenizer, "zero", "Poland", "Warsaw")
    labels = sp.roles(tokenizer, prompt)
    assert labels[-1] == "is@+1" and labels[prompt.subject_span[0]] == "subject_first"
    assert labels[prompt.subject_span[1] - 1] == "subject_last" and labels[prompt.subject_span[0] - 1] == "of@-1"
