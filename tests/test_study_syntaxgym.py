"""``python -W error -m studies.syntaxgym`` end to end on the toy pair: the files it writes, its
region surprisals against the plain HF models (each region's own tokens, summed by hand), its
accuracies and paired statistics against the rows, and its errors."""

import json
import math
import re
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from study_cli import rows_of, run_study_cli

import interp
from figures._save import MODEL_COLORS
from probes.stats import mcnemar
from tasks.benchmarks import syntaxgym
from tests.conftest import assert_figure_files

LIMIT = 2
cli = partial(run_study_cli, "studies.syntaxgym")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("syntaxgym")
    proc = cli("--limit", str(LIMIT), "--out", str(out))
    return out, proc


def test_files_rows_and_figures(run):
    out, proc = run
    for name in ("results.jsonl", "summary.csv", "comparison.csv", "predictions.csv", "meta.json", "fingerprint.json"):
        assert (out / name).is_file(), name
    for stem in ("accuracy_by_suite", "accuracy_by_circuit", "accuracy_by_layer"):
        assert_figure_files(out / stem, [MODEL_COLORS["base"], MODEL_COLORS["chat"]])
    rows = rows_of(out)
    items = syntaxgym.load(data="fixture")
    suites = list(dict.fromkeys(it.suite for it in items))
    assert len(rows) == 2 * LIMIT * len(suites)
    assert {r["suite"] for r in rows} == set(suites)
    assert all(r["layers"] == ["final", *range(6)] and not r["skipped"] for r in rows)
    assert "chat - base" in proc.stdout and "toy_garden_path_npz" in proc.stdout


def _oracle_regions(model, tok, item, condition):
    """Each region's surprisal (bits) from the HF model: the toy tokenizer splits on spaces and
    punctuation, so a region's tokens are those of its own content, in order after <s>."""
    pieces = [tok(c.strip(), add_special_tokens=False)["input_ids"] if c.strip() else []
              for _, c in item.conditions[condition]]
    ids = [tok.bos_token_id] + [t for p in pieces for t in p]
    assert ids == tok(item.sentence(condition))["input_ids"]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    bits = [-float(logp[i - 1, ids[i]]) / math.log(2) for i in range(1, len(ids))]
    out, pos = [], 0
    for p in pieces:
        out.append(sum(bits[pos:pos + len(p)]))
        pos += len(p)
    return out


def test_region_surprisals_and_predictions_equal_the_hf_models(run):
    out, _ = run
    rows = {(r["model"], r["item"]): r for r in rows_of(out)}
    items = {it.id: it for it in syntaxgym.load(data="fixture")}
    for member in ("base", "chat"):
        source = interp.PAIRS["toy"].source(member)
        model = transformers.AutoModelForCausalLM.from_pretrained(source).eval()
        tok = transformers.AutoTokenizer.from_pretrained(source)
        for (m, item_id), r in rows.items():
            if m != member:
                continue
            item = items[item_id]
            values = {}
            for condition in item.conditions:
                expected = _oracle_regions(model, tok, item, condition)
                np.testing.assert_allclose(r["regions"][condition][0], expected, rtol=1e-4, atol=1e-4)
                values.update({(condition, n): v for (n, _), v in zip(item.conditions[condition], expected)})
            assert r["predictions"][0] == [p(values) for p in item.predictions]
            assert r["correct"][0] == all(p(values) for p in item.predictions)


def test_summary_and_comparison_follow_the_rows(run):
    out, _ = run
    rows = rows_of(out)
    summary = pd.read_csv(out / "summary.csv")
    comparison = pd.read_csv(out / "comparison.csv")
    for level, key in (("suite", "suite"), ("circuit", "circuit")):
        for group in {r[key] for r in rows}:
            mine = {m: [r for r in rows if r[key] == group and r["model"] == m] for m in ("base", "chat")}
            for m, rs in mine.items():
                for index, layer in enumerate(rs[0]["layers"]):
                    got = summary[(summary.model == m) & (summary.level == level) & (summary.group == group)
                                  & (summary.layer.astype(str) == str(layer))]
                    assert len(got) == 1
                    assert got["acc"].iloc[0] == pytest.approx(np.mean([r["correct"][index] for r in rs]))
            base = {r["item"]: r["correct"][0] for r in mine["base"]}
            chat = {r["item"]: r["correct"][0] for r in mine["chat"]}
            ids = sorted(base)
            expected = mcnemar(np.array([base[i] for i in ids]), np.array([chat[i] for i in ids]))
            got = comparison[(comparison.level == level) & (comparison.group == group) & (comparison.layer == "final")]
            assert (got["mcnemar_b"].iloc[0], got["mcnemar_c"].iloc[0]) == (expected.b, expected.c)
            assert got["mcnemar_p"].iloc[0] == pytest.approx(expected.p_value)
    everything = summary[(summary.level == "all") & (summary.layer == "final")]
    assert set(everything["n_items"]) == {len(rows) // 2}


def test_resume_writes_nothing_new_and_other_options_are_refused(run, capsys):
    from studies import syntaxgym as study

    out, _ = run
    before = (out / "results.jsonl").read_bytes()
    assert study.main(["--limit", str(LIMIT), "--out", str(out), "--no-figures"]) == 0
    assert (out / "results.jsonl").read_bytes() == before
    assert study.main(["--limit", str(LIMIT), "--out", str(out), "--punctuation", "attach", "--no-figures"]) == 2
    assert "different settings: punctuation spaces -> attach" in capsys.readouterr().err


def _suite_file(tmp_path, name="bad", **change):
    suite = json.loads((syntaxgym.FIXTURE_DIR / "syntaxgym" / "toy_agreement_tense.json").read_text())
    suite["meta"]["name"] = name
    suite.update(change)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(suite))
    return path


def _error(capsys, *args) -> str:
    """The one ``error:`` line of an in-process run that must fail (before any model runs)."""
    from studies import syntaxgym as study

    assert study.main(list(args)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("change, message", [
    ({"predictions": [{"type": "formula", "formula": "(5;%mismatch%) >> (5;%match%)"}]},
     r"bad.json: unexpected '>' at position 16 of '\(5;%mismatch%\) >> \(5;%match%\)'"),
    ({"predictions": [{"type": "formula", "formula": "((5;%mismatch%) > (5;%match%)"}]},
     r"bad.json: unbalanced '\(': no '\)' before the end"),
    ({"predictions": [{"type": "formula", "formula": "(5;%mismatch%) > (5;%match%) $ 1"}]},
     r"cannot parse .* at position 29: '\$ 1'"),
    ({"predictions": [{"type": "formula", "formula": "(7;%mismatch%) > (7;%match%)"}]},
     r"names region 7 of 'm\w+', which has regions \[1, 2, 3, 4, 5, 6\]"),
    ({"predictions": [{"type": "formula", "formula": "(5;%ungrammatical%) > (5;%match%)"}]},
     r"names condition 'ungrammatical'; conditions are \['match', 'mismatch'\]"),
    ({"predictions": []}, r"suite 'bad' has no predictions"),
    ({"meta": {"name": "bad", "metric": "total"}}, r"unknown meta.metric 'total'; SyntaxGym's metrics are sum, mean"),
    ({"items": [{"item_number": 1}]}, r"bad.json: not a SyntaxGym suite \(KeyError: 'conditions'\)"),
])
def test_bad_suites_name_the_problem(tmp_path, capsys, change, message):
    line = _error(capsys, "--suites", str(_suite_file(tmp_path, **change)), "--out", str(tmp_path / "out"))
    assert re.search(message, line), line


def test_missing_and_repeated_suites_name_the_problem(tmp_path, capsys):
    line = _error(capsys, "--suites", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert "--suites" in line and "nowhere: no such file or folder" in line
    path = _suite_file(tmp_path, "twice")
    line = _error(capsys, "--suites", str(path), str(tmp_path), "--out", str(tmp_path / "out"))
    assert "suite 'twice' is in both" in line
    (tmp_path / "empty").mkdir()
    assert "no SyntaxGym suite (*.json)" in _error(capsys, "--suites", str(tmp_path / "empty"))


def test_benchmarks_points_to_this_study(tmp_path, capsys):
    from studies import benchmarks

    assert benchmarks.main(["--tasks", "syntaxgym", "--out", str(tmp_path)]) == 2
    assert "python -m studies.syntaxgym" in capsys.readouterr().err
