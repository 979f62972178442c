"""tasks.reward_pairs: the reward-collapse tasks' items are right, and bad input errors name the choices."""

from __future__ import annotations

import json

import pytest

from tasks.benchmarks import boolq
from tasks.errors import TaskError
from tasks.reward_pairs import TASKS, load_pairs
from tasks.toy_world import REFUSAL, load_facts


def test_boolq_correct_answer_is_the_label_in_every_format():
    items = load_pairs("boolq", formats=["yes/no", "0/1", "true/false", "sentence"])
    labels = {it.id: it.label for it in boolq.load(data="fixture")}
    assert len(items) == 4 * len(labels)
    for it in items:
        yes = labels[it.id] == 1
        want = {"yes/no": ("Yes", "No"), "0/1": ("1", "0"), "true/false": ("True", "False"),
                "sentence": ("Based on the passage, the answer is yes.", "Based on the passage, the answer is no.")}[it.format]
        assert (it.chosen, it.rejected) == (want if yes else want[::-1])
        assert it.prompt == it.question and "Question:" in it.prompt


def test_toy_closed_answers_are_the_facts():
    items = load_pairs("toy_closed")
    facts = {(f["relation"], f["subject"]): f["answer"] for r in ("capital", "past") for f in load_facts(r)}
    claims = {}
    for it in items:
        answer = facts[(it.meta["relation"], it.meta["subject"])]
        assert it.reference == answer and it.meta["wrong"] != answer
        if it.format == "short":
            assert (it.chosen, it.rejected) == (f"{answer} .", f"{it.meta['wrong']} .")
        elif it.format == "sentence":
            assert (it.chosen.split()[-2], it.rejected.split()[-2]) == (answer, it.meta["wrong"])
        else:  # the claim in the prompt is true iff the chosen answer says yes
            stated = it.prompt.split()[-2]
            says_yes = it.chosen in ("Yes .", "1 .", "True .")
            assert says_yes == (stated == answer), it
            claims[it.id] = stated == answer
    assert 0.3 < sum(claims.values()) / len(claims) < 0.7  # both answers occur


def test_toy_open_rejects_with_refusal_off_topic_or_language():
    items = load_pairs("toy_open")
    kinds = {it.meta["rejected_kind"] for it in items}
    assert kinds == {"refusal", "off_topic", "language"}
    assert all(it.rejected == REFUSAL for it in items if it.meta["rejected_kind"] == "refusal")
    assert all(it.chosen.endswith(" .") and it.chosen != it.rejected for it in items)
    assert len({it.id for it in items}) == len(items)


def test_hh_reads_prompt_fields_and_full_transcripts(tmp_path):
    items = load_pairs("hh_pairwise")
    assert items[0].prompt == "How long should I boil an egg for a soft yolk?"
    multi = [it for it in items if it.meta["turns"] == 2]
    assert multi and multi[0].prompt.startswith("Human: I want to start running.") and "Assistant:" in multi[0].prompt
    path = tmp_path / "hh.jsonl"
    head = "\n\nHuman: Hi there?\n\nAssistant:"
    path.write_text(json.dumps({"chosen": head + " Hello! How can I help?", "rejected": head + " Go away."}) + "\n")
    (it,) = load_pairs("hh_pairwise", data=str(path))
    assert (it.prompt, it.chosen, it.rejected) == ("Hi there?", "Hello! How can I help?", "Go away.")
    path.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}) + "\n")
    with pytest.raises(TaskError, match="sharing everything up to"):
        load_pairs("hh_pairwise", data=str(path))


def test_a_format_the_task_lacks_names_its_formats():
    with pytest.raises(TaskError, match=r"task 'boolq' has no response format 'short'; its formats: 0/1, yes/no"):
        load_pairs("boolq", formats=["short"])
    with pytest.raises(TaskError, match=r"its formats: text"):
        load_pairs("toy_open", formats=["yes/no"])
    with pytest.raises(TaskError, match="valid: toy_closed, toy_closed_heldout, toy_open, toy_open_heldout, boolq, hh_pairwise"):
        load_pairs("nope")
    with pytest.raises(TaskError, match="reads no data file"):
        load_pairs("toy_closed", data="x.jsonl")


def test_limit_counts_items_not_formats():
    assert len(load_pairs("toy_closed", limit=3)) == 3 * len(TASKS["toy_closed"].formats)
    assert len(load_pairs("boolq", limit=2, formats=["yes/no"])) == 2
