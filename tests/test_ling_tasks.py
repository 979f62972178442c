"""Coreference (WSC, WinoGrande), GRICE and CoQA: the loaders read the official formats, and
CoQA's exact match / F1 equal the official script's definition, computed here by hand."""

import json

import pytest

from tasks.benchmarks import coqa, grice, load_task, winogrande, wsc
from tasks.errors import TaskError
from tasks.items import GenItem, MCItem
from tasks.sources import FIXTURE_DIR, MissingDatasetError


# -- CoQA scores: the official script's values, worked by hand ---------------------------------
@pytest.mark.parametrize("text, normal", [
    ("The Queen.", "queen"),
    ("A horse, and a book.", "horse and book"),
    ("  an   apple ", "apple"),
    ("the-end", "theend"),          # punctuation is removed, not replaced: no article left to remove
    ("Theater and the", "theater and"),  # an article inside a word stays
    ("the", ""),
])
def test_normalisation(text, normal):
    assert coqa.normalize_answer(text) == normal


@pytest.mark.parametrize("gold, pred, em, f1", [
    ("The queen.", "queen", 1, 1.0),
    ("a horse and a book", "horse", 0, 0.5),          # P 1/1, R 1/3: 2 (1/3) / (4/3)
    ("the cat the cat", "cat", 0, 2 / 3),              # counts clip: 1 common of 2 gold words
    ("Paris", "paris france", 0, 2 / 3),               # P 1/2, R 1
    ("", "", 1, 1.0),                                  # both empty: agree
    ("the", "a", 1, 1.0),                              # both normalise to nothing
    ("unknown", "", 0, 0.0),                           # one empty: 0
    ("", "paris", 0, 0.0),
    ("red", "blue", 0, 0.0),
])
def test_exact_and_f1_of_one_gold(gold, pred, em, f1):
    assert coqa.exact(gold, pred) == em
    assert coqa.f1(gold, pred) == pytest.approx(f1)
    assert coqa.turn_scores([gold], pred) == (pytest.approx(em), pytest.approx(f1))


def test_several_golds_leave_one_out_as_the_official_script():
    # normalised golds: "in house by lake", "by lake", "house by lake", "in house by lake"; pred "by lake".
    # EM: leaving gold 1 out leaves no exact match, each other leave-one-out has gold 1 -> 3/4.
    # F1 per gold: 2/3, 1, 0.8, 2/3; best of the others: 1, 0.8, 1, 1 -> 3.8 / 4.
    golds = ["in a house by the lake", "by the lake", "a house by the lake", "in a house by the lake"]
    em, f1 = coqa.turn_scores(golds, "By the lake.")
    assert em == pytest.approx(0.75) and f1 == pytest.approx(0.95)
    assert coqa.turn_scores(["white", "red"], "white") == (0.5, 0.5)   # matching one of two golds: 0.5
    assert coqa.turn_scores(["white", "white"], "White!") == (1.0, 1.0)  # duplicates kept, as the script keeps them
    with pytest.raises(TaskError, match="at least one gold"):
        coqa.turn_scores([], "x")


def test_answer_is_the_first_line():
    assert coqa.answer_of("  in the river\nQ: next") == "in the river"
    assert coqa.answer_of("\n\n") == ""


# -- CoQA loader: the official JSON and the hub's two shapes ------------------------------------
def test_coqa_fixture_is_the_official_format_and_gives_one_item_per_turn():
    raw = json.loads((FIXTURE_DIR / "coqa.json").read_text())
    assert set(raw) == {"version", "data"} and {"questions", "answers", "additional_answers"} <= set(raw["data"][0])
    items = coqa.load(data="fixture")
    assert all(isinstance(it, GenItem) for it in items)
    assert len(items) == sum(len(s["questions"]) for s in raw["data"])
    first, third = items[0], items[2]
    story = raw["data"][0]["story"]
    assert first.context == f"{story}\n\nQ: Where did the king live?\n\nA:"
    assert third.context == (f"{story}\n\nQ: Where did the king live?\n\nA: in a house by the lake\n\n"
                             "Q: What did he have?\n\nA: a horse and a book\n\nQ: Who lived in the city?\n\nA:")
    assert third.answers == ["the queen", "The queen.", "the queen", "queen"]  # main, then additional 0, 1, 2
    assert items[3].answers == ["the fish"]  # a story without additional answers: one gold
    assert [m["role"] for m in third.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert third.messages[0]["content"] == f"{story}\n\nWhere did the king live?"
    assert third.messages[-1]["content"] == "Who lived in the city?"
    assert first.id == "coqa-toy-1-1" and first.category == "mctest"


def test_coqa_hub_shapes_read_the_same(tmp_path):
    official = json.loads((FIXTURE_DIR / "coqa.json").read_text())["data"][0]
    columns = {**official,
               "questions": {"input_text": [q["input_text"] for q in official["questions"]],
                             "turn_id": [q["turn_id"] for q in official["questions"]]},
               "answers": {"input_text": [a["input_text"] for a in official["answers"]]},
               "additional_answers": {k: {"input_text": [a["input_text"] for a in v]}
                                      for k, v in official["additional_answers"].items()}}
    plain = {k: v for k, v in columns.items() if k != "additional_answers"}
    plain["questions"] = columns["questions"]["input_text"]
    for name, record in [("eleuther", columns), ("stanford", plain)]:
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(record) + "\n")
        items = coqa.load(data=str(path))
        want = coqa.story_items(official, 0)
        assert [it.context for it in items] == [it.context for it in want]
        expected = [it.answers for it in want] if name == "eleuther" else [it.answers[:1] for it in want]
        assert [it.answers for it in items] == expected


def test_coqa_malformed_records(tmp_path):
    official = json.loads((FIXTURE_DIR / "coqa.json").read_text())["data"][0]
    bad = {**official, "answers": official["answers"][:2]}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(TaskError, match=r"task 'coqa', .*line 1: 3 questions but answer lists of lengths \[2, 3, 3, 3\]"):
        coqa.load(data=str(path))
    path.write_text(json.dumps({**official, "questions": "what?"}) + "\n")
    with pytest.raises(TaskError, match="'questions' must be a list of turns"):
        coqa.load(data=str(path))


# -- WinoGrande ----------------------------------------------------------------------------------
def test_winogrande_official_records_become_partial_items(tmp_path):
    rows = [{"qID": "a-1", "sentence": "The trophy does not fit in the case because _ is too big.",
             "option1": "the trophy", "option2": "the case", "answer": "1"},
            {"qID": "b-2", "sentence": "_ gave Kim a book.", "option1": "Sam", "option2": "Kim", "answer": "2"},
            {"qID": "c-3", "sentence": "Kim sold Sam a car, so _'s money is gone.", "option1": "Sam",
             "option2": "Kim", "answer": "1"}]
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b, c = winogrande.load(data=str(path))
    assert (a.id, a.context, a.options, a.continuation, a.label) == (
        "winogrande-a-1", "The trophy does not fit in the case because", [" the trophy", " the case"],
        " is too big.", 0)
    assert (b.context, b.options, b.continuation, b.label) == ("", ["Sam", "Kim"], " gave Kim a book.", 1)
    assert c.continuation == "'s money is gone."
    for item, row in zip((a, b, c), rows):  # context + option + continuation is the sentence
        option = row["option1"] if item.label == 0 else row["option2"]
        assert item.solved() == row["sentence"].replace("_", option)


@pytest.mark.parametrize("record, message", [
    ({"sentence": "A _ b _.", "option1": "x", "option2": "y", "answer": "1"}, "exactly one '_'"),
    ({"sentence": "A b _", "option1": "x", "option2": "y", "answer": "1"}, "nothing follows the blank"),
    ({"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": ""}, "hidden, as in the test split"),
    ({"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "3"}, "answer must be '1' or '2'"),
])
def test_winogrande_malformed(record, message, tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(TaskError, match=rf"task 'winogrande', .*line 1: .*{message}"):
        winogrande.load(data=str(path))


# -- WSC (SuperGLUE) -----------------------------------------------------------------------------
WSC_TEXT = "Mark told Pete many lies about himself , which Pete included in his book . He should have been more truthful ."


def _wsc_records(nested: bool):
    out = []
    for idx, (cand, index, label) in enumerate([("Mark", 0, True), ("Pete", 2, False)]):
        spans = {"span1_index": index, "span1_text": cand, "span2_index": 15, "span2_text": "He"}
        out.append({"text": WSC_TEXT, "idx": idx, "label": label, **({"target": spans} if nested else spans)})
    # a possessive pronoun, candidates given answer-second; and a pronoun with one candidate only
    text = "The man lifted the boy onto his shoulders ."
    out += [{"text": text, "span1_index": 3, "span1_text": "the boy", "span2_index": 6, "span2_text": "his",
             "label": 0, "idx": 2},
            {"text": text, "span1_index": 0, "span1_text": "The man", "span2_index": 6, "span2_text": "his",
             "label": 1, "idx": 3},
            {"text": "Sam ate it .", "span1_index": 0, "span1_text": "Sam", "span2_index": 2, "span2_text": "it",
             "label": 0, "idx": 4}]
    return out


@pytest.mark.parametrize("nested", [False, True], ids=["hub", "official"])
def test_wsc_groups_candidates_of_one_pronoun_into_a_partial_item(nested, tmp_path, capsys):
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _wsc_records(nested)))
    lies, shoulders = wsc.load(data=str(path))
    assert lies.context == "Mark told Pete many lies about himself , which Pete included in his book ."
    assert lies.options == [" Mark", " Pete"] and lies.label == 0 and lies.continuation == " should have been more truthful ."
    # text order of the candidates, the article lower-cased mid-sentence, the possessive kept
    assert shoulders.options == [" the man's", " the boy's"] and shoulders.label == 0
    assert shoulders.continuation == " shoulders ." and shoulders.id == "wsc-3"
    assert "1 of 5 records make no item" in capsys.readouterr().err
    assert len(wsc.load(data=str(path), limit=1)) == 1


def test_wsc_substitution_and_errors(tmp_path):
    assert wsc.substitute("the city councilmen", "They", "The police came .") == "The city councilmen"
    assert wsc.substitute("The city councilmen", "they", "because") == "the city councilmen"
    assert wsc.substitute("Joan", "her", "thanked") == "Joan"  # 'her' is read as an object
    record = {**_wsc_records(False)[0], "span2_index": 3}
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**_wsc_records(False)[1], "span2_index": 3}) + "\n")
    with pytest.raises(TaskError, match=r"task 'wsc', .*line 1: word 3 of the text is 'many', not the pronoun"):
        wsc.load(data=str(path))


# -- GRICE -----------------------------------------------------------------------------------------
def test_grice_fixture_is_the_official_format():
    raw = json.loads((FIXTURE_DIR / "grice.json").read_text())
    dialogs = raw["data"]["dialogs"]
    assert {"dialog_id", "dialog", "question"} <= set(dialogs[0])
    assert {"question", "answer", "explict_answer", "option", "answer_index"} <= set(dialogs[0]["dialog"][0])
    items = grice.load(data="fixture")
    recovery = [it for it in items if it.category == "recovery"]
    reasoning = [it for it in items if it.category == "reasoning"]
    assert len(recovery) == sum(len(d["dialog"]) for d in dialogs) and len(reasoning) == len(dialogs)
    first = recovery[0]
    assert first.context == "A: did you leave the apple in the house?\nB: I was in the field.\nWhat B means:"
    assert first.options[first.label] == " I didn't leave the apple in the house."
    assert " I was not in the dining room." in recovery[4].options  # underscores become spaces
    assert "dining room" in recovery[5].context
    yes_no = reasoning[0]
    assert yes_no.context.endswith("Question: did the king put the cake in the house?\nAnswer:")
    assert yes_no.options == [" no", " yes"] and yes_no.label == 1
    where = reasoning[1]  # the dialogue names the house, then the field: both are options, in that order
    assert where.options == [" house", " field"] and where.label == 1
    only_house = reasoning[3]  # the dialogue names the house only: one more answer from the set
    assert only_house.options == [" house", " field"] and only_house.label == 0
    assert [it.category for it in grice.load(data="fixture", parts=("reasoning",))] == ["reasoning"] * 4


def test_grice_reads_jsonl_dialogues_and_rejects_bad_ones(tmp_path):
    dialogs = json.loads((FIXTURE_DIR / "grice.json").read_text())["data"]["dialogs"]
    path = tmp_path / "grice.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in dialogs))
    assert [it.context for it in grice.load(data=str(path))] == [it.context for it in grice.load(data="fixture")]
    bad = json.loads(json.dumps(dialogs[0]))
    bad["dialog"][1]["answer_index"] = 4
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(TaskError, match=r"task 'grice', .*line 1 turn 1: answer_index must be in 0..3, got 4"):
        grice.load(data=str(path))
    with pytest.raises(TaskError, match="unknown part"):
        grice.load(data="fixture", parts=("recall",))
    with pytest.raises(MissingDatasetError, match="not on the hub"):
        grice.load()


def test_registered_and_loadable_by_name():
    for name, kind in [("wsc", MCItem), ("winogrande", MCItem), ("grice", MCItem), ("coqa", GenItem)]:
        items = load_task(name, data="fixture")
        assert items and all(isinstance(it, kind) and it.task == name for it in items)
    assert all(it.partial for it in load_task("wsc", data="fixture") + load_task("winogrande", data="fixture"))
