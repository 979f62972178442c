"""tasks.idk: every item labelled, the export round-trips, the toy variant's invented countries
encodable by the toy tokenizer and absent from the toy world, and bad records refused."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import transformers

import interp
from tasks.errors import TaskError
from tasks.idk import CATEGORIES, FIELDS, IDKItem, fictional_countries, load
from tasks.idk.export import read, write
from tasks.toy_world import load_facts

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def items():
    return load("text") + load("toy")


def test_every_item_has_a_category_and_label(items):
    for it in items:
        assert it.why in CATEGORIES and isinstance(it.answerable, bool)
        assert it.answerable == (it.why == "known") == bool(it.answers)
        mc = it.to_mc()
        assert mc.options == it.responses() and mc.context == it.prompt
        assert mc.label == (0 if it.answerable else it.n_candidates)  # the gold answer, or the first abstention
        assert mc.options[mc.label] == (it.answer_format.format(it.answers[0]) if it.answerable else it.abstentions[0])
    text = Counter(it.why for it in items if it.variant == "text" and it.source == "written")
    assert text == {c: 25 for c in CATEGORIES}
    assert sum(it.source.startswith("triviaqa:") for it in items) == 12  # the shipped fixture
    toy = Counter(it.why for it in items if it.variant == "toy")
    assert toy == {"known": len(load_facts()), "fictional": len(fictional_countries())}
    assert {tuple(it.abstentions) for it in items if it.variant == "toy"} == {(" Sorry , I cannot help with that .",)}


def test_export_round_trips(items, tmp_path):
    path, sheet = write(items, tmp_path / "idk.jsonl")
    assert read(path) == items
    lines = path.read_text().splitlines()
    assert len(lines) == len(items) and set(json.loads(lines[0])) == set(FIELDS)
    text = sheet.read_text()
    for heading in ("## Motivation", "## Composition", "## Collection", "## Labels", "## Uses", "## Limits"):
        assert heading in text
    assert "| toy | fictional | no | 40 |" in text and "| text | polite_evasion | no | 25 |" in text


def test_export_cli(tmp_path):
    env = {"PYTHONPATH": str(REPO), "OMP_WAIT_POLICY": "PASSIVE", "PATH": "/usr/bin:/bin"}
    out = tmp_path / "sub" / "toy.jsonl"
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "tasks.idk", "--export", str(out), "--variant", "toy"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert read(out) == load("toy") and (tmp_path / "sub" / "toy.datasheet.md").is_file()
    bad = subprocess.run([sys.executable, "-m", "tasks.idk", "--export", str(tmp_path / "x.csv")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: export path must end in .jsonl")


def test_fictional_countries_tokenize_and_are_not_real():
    tok = transformers.AutoTokenizer.from_pretrained(interp.PAIRS["toy"].source("base"))
    facts = load_facts()
    real = {f["subject"] for f in facts} | {f["answer"] for f in facts}
    real_pieces = {p for name in real for p in tok.tokenize(name)}
    for row in fictional_countries():
        name = row["name"]
        assert name not in real
        pieces = tok.tokenize(f"What is the capital of {name} ?")
        assert tok.unk_token not in pieces, name
        own = tok.tokenize(name)
        if row["kind"] == "recombined":  # two pieces of real names, in an order no real name has
            assert len(own) == 2 and set(own) <= real_pieces, (name, own)
        else:  # spelled: it needs pieces beyond two
            assert len(own) > 2, (name, own)


def _record(**change):
    base = load("text")[0].to_record()
    base.update(change)
    return base


@pytest.mark.parametrize("change, message", [
    ({"why": "dunno"}, "unknown category"),
    ({"answerable": False}, "answerable must be true exactly for why='known'"),
    ({"why": "fictional"}, "answerable must be true"),
    ({"candidates": ["Lyon", "Paris"]}, "must be a gold answer"),
    ({"candidates": ["Paris", "Paris"]}, "duplicate responses"),
    ({"abstentions": []}, "at least one candidate answer and one abstention"),
    ({"answer_format": " no slot"}, "slot"),
    ({"variant": "audio"}, "unknown variant"),
    ({"answers": "Paris"}, "list of non-empty strings"),
])
def test_bad_records(change, message):
    with pytest.raises(TaskError, match=message):
        IDKItem.from_record(_record(**change), "x.jsonl line 1")


def test_bad_files_and_options(tmp_path):
    rec = _record()
    del rec["why"]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(TaskError, match=r"bad.jsonl line 1: idk record fields .*missing \['why'\]"):
        read(path)
    path.write_text(json.dumps(_record()) + "\n" + json.dumps(_record()) + "\n")
    with pytest.raises(TaskError, match="duplicate item ids"):
        read(path)
    with pytest.raises(TaskError, match="unknown idk variant 'audio'; valid: text, toy"):
        load("audio")
    with pytest.raises(TaskError, match="unknown idk categories"):
        load("text", categories=("knwn",))
    with pytest.raises(TaskError, match="no idk items"):
        load("toy", categories=("polite_evasion",))
    with pytest.raises(TaskError, match="no TriviaQA part"):
        load("toy", triviaqa="tqa.jsonl")


def test_limit_and_categories():
    its = load("text", limit=3, categories=("known", "fictional"))
    assert Counter(it.why for it in its) == {"known": 3, "fictional": 3}
