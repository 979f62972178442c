"""Task loaders: fixtures parse into valid items, formats match lm-evaluation-harness,
missing data fails loudly, few-shot prompts never leak the item."""

import json

import pytest

from tasks import sources
from tasks.benchmarks import TASKS, load_task
from tasks.benchmarks.syntaxgym import FormulaError, Prediction, SyntaxGymItem
from tasks.benchmarks.triviaqa import is_correct, normalize_answer
from tasks.items import MCItem, build_fewshot
from tasks.errors import TaskError
from tasks.sources import MissingDatasetError

MC_TASKS = sorted(n for n in TASKS if n not in ("syntaxgym", "coqa"))  # coqa: free generation (test_ling_tasks)
JSON_FIXTURES = {"grice"}  # nested official JSON, not records per line: its malformed records are in test_ling_tasks


@pytest.mark.parametrize("name", MC_TASKS)
def test_fixture_parses_into_valid_items(name):
    items = load_task(name, data="fixture")
    assert 10 <= len(items) <= 30
    assert len({it.id for it in items}) == len(items)
    for it in items:
        assert isinstance(it, MCItem) and it.task == name
        assert it.context.strip() or it.partial  # a partial item's option may start the text
        assert 0 <= it.label < len(it.options)
        assert all(o.strip() for o in it.options) and len(set(it.options)) == len(it.options)
        assert all(o[0] == " " for o in it.options) or not it.context  # options carry their separator
        assert not it.context.endswith(" ")
    assert len({it.label for it in items}) > 1, "a fixture with one label cannot catch a constant scorer"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_limit(name):
    assert len(load_task(name, data="fixture", limit=3)) == 3


@pytest.mark.parametrize("name", sorted(TASKS))
def test_missing_dataset_gives_clear_error(name, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(MissingDatasetError, match=r"--data PATH") as info:
        load_task(name)
    assert name in str(info.value)
    with pytest.raises(MissingDatasetError, match="does not exist"):
        load_task(name, data="/nonexistent/file.jsonl")


def test_hub_failure_becomes_clear_error(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def offline(source, split):
        raise ConnectionError("no network")

    monkeypatch.setattr(sources, "load_hub", offline)
    with pytest.raises(MissingDatasetError, match=r"aps/super_glue.*ConnectionError.*--data PATH.*question \(str\), passage"):
        load_task("boolq")


def test_unknown_task_names_valid_ones():
    with pytest.raises(TaskError, match="valid tasks: .*boolq.*mmlu"):
        load_task("superglue_everything")


def test_local_jsonl_and_csv_with_hub_field_names(tmp_path):
    rows = [{"question": "is it raining", "passage": "It rains.", "label": True},
            {"question": "is it dry", "passage": "It rains.", "label": False}]
    jsonl = tmp_path / "boolq.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    items = load_task("boolq", data=str(jsonl))
    assert [it.label for it in items] == [1, 0]
    assert items[0].context == "It rains.\nQuestion: is it raining?\nAnswer:"
    assert items[0].options == [" no", " yes"]
    csv_path = tmp_path / "rte.csv"
    csv_path.write_text("premise,hypothesis,label\nA cat sat.,An animal sat.,entailment\nA cat sat.,A dog sat.,1\n")
    assert [it.label for it in load_task("rte", data=str(csv_path))] == [0, 1]


def test_hidden_test_labels_raise(tmp_path):
    path = tmp_path / "cb.jsonl"
    path.write_text(json.dumps({"premise": "p", "hypothesis": "h", "label": -1}))
    with pytest.raises(ValueError, match="hidden"):
        load_task("cb", data=str(path))


def test_harness_formats():
    copa = load_task("copa", data="fixture")
    assert copa[0].context == "The ice cream melted because"
    assert copa[0].options == [" it was left in the sun.", " it was kept in the freezer."]
    assert load_task("copa", data="fixture")[2].context.endswith(" therefore")
    rte = load_task("rte", data="fixture")[0]
    assert rte.context.endswith(" True or False?\nAnswer:") and rte.options == [" True", " False"]
    mmlu = load_task("mmlu", data="fixture")[0]
    assert mmlu.context.startswith("The following are multiple choice questions (with answers) about astronomy.\n\n")
    assert mmlu.context.endswith("\nD. Earth\nAnswer:") and mmlu.answer == " B"
    cb = load_task("cb", data="fixture")[0]
    assert cb.context.endswith(". True, False, or Neither?\nAnswer:") and cb.answer == " True"


def test_mmlu_original_headerless_csv(tmp_path):
    path = tmp_path / "college_chemistry_val.csv"
    path.write_text('What is H2O?,Water,Salt,Sand,Gold,A\n"Which is a noble gas?",Oxygen,Neon,Iron,Carbon,B\n')
    items = load_task("mmlu", data=str(path))
    assert [it.label for it in items] == [0, 1]
    assert items[0].category == "college_chemistry" and "about college chemistry." in items[0].context


def test_stsb_keeps_raw_score_and_buckets():
    items = load_task("stsb", data="fixture")
    assert items[0].meta["score"] == 3.8 and items[0].label == 4
    assert items[5].meta["score"] == 5.0 and items[5].label == 5


def test_imppres_reading_switches_implicature_label():
    prag = load_task("imppres", data="fixture")
    log = load_task("imppres", data="fixture", reading="logical")
    some = [i for i, it in enumerate(prag) if it.meta["kind"] == "implicature"][0]
    assert prag[some].answer == " True" and log[some].answer == " Neither"
    pres = [i for i, it in enumerate(prag) if it.meta["kind"] == "presupposition"]
    assert all(prag[i].label == log[i].label for i in pres)


def test_triviaqa_formats():
    mc = load_task("triviaqa_mc", data="fixture")
    for it in mc:
        gold = it.meta["choices"][it.label]
        assert is_correct(gold, it.meta["aliases"])
        assert sum(is_correct(c, it.meta["aliases"]) for c in it.meta["choices"]) == 1
    assert [it.label for it in mc] == [it.label for it in load_task("triviaqa_mc", data="fixture")]
    pt = load_task("triviaqa_ptrue", data="fixture")
    assert pt[0].context.endswith("Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:")
    for it in pt:
        assert it.label == (0 if is_correct(it.meta["proposal"], it.meta["aliases"]) else 1)
    from tasks.benchmarks.triviaqa import load_ptrue
    own = load_ptrue(data="fixture", proposals={"fx_000": ["iron", "Copper"], "fx_001": ["The Rome"]})
    assert [it.label for it in own] == [0, 1, 0]
    assert normalize_answer("The  Pacific, Ocean!") == "pacific ocean"


def test_syntaxgym_fixture_and_predictions():
    items = load_task("syntaxgym", data="fixture")
    assert all(isinstance(it, SyntaxGymItem) for it in items)
    suites = {it.suite: it.circuit for it in items}
    assert set(suites.values()) == {"Agreement", "Long-Distance Dependencies", "Licensing", "Garden-Path Effects"}
    it = next(it for it in items if it.suite == "toy_agreement_person")
    sentence = it.sentence("third_mismatch")
    spans = dict((n, (a, b)) for n, a, b in it.region_spans("third_mismatch"))
    assert sentence == "The king sit in the house ." and sentence[slice(*spans[2])] == "sit"
    good = {(c, n): (9.0 if c.endswith("mismatch") and n == 2 else 1.0)
            for c in it.conditions for n, _ in it.conditions[c]}
    bad = {k: (1.0 if v == 9.0 else 9.0 if k[1] == 2 else v) for k, v in good.items()}
    assert it.evaluate(good) == [True, True]
    assert it.evaluate(bad) == [False, False]


def test_syntaxgym_fixture_is_in_the_toy_vocabulary():
    """The fixture suites use only words of the toy pair's vocabulary (no <unk>, no word spelt
    with letter pieces), except the NPI 'any' (the toy vocabulary has no NPI)."""
    from toy_pair.tokenizer import build_tokenizer

    tok = build_tokenizer()
    spelt = set()
    for it in load_task("syntaxgym", data="fixture"):
        for condition in it.conditions:
            for word in it.sentence(condition).split():
                pieces = tok.tokenize(word)
                if tok.unk_token in pieces or (len(pieces) > 1 and all(len(p.lstrip("#")) == 1 for p in pieces)):
                    spelt.add(word)
    assert spelt == {"any"}


def test_syntaxgym_punctuation_joining():
    items = load_task("syntaxgym", data="fixture")
    it = next(it for it in items if it.suite == "toy_garden_path_npz")
    assert it.sentence("ambig_comma") == "As the king ate , the bread fell ."
    assert it.sentence("ambig_comma", attach_punctuation=True) == "As the king ate, the bread fell."
    assert it.sentence("ambig_nocomma", attach_punctuation=True) == "As the king ate the bread fell."
    for attach in (False, True):
        for condition in it.conditions:
            text = it.sentence(condition, attach)
            contents = [text[a:b] for _, a, b in it.region_spans(condition, attach)]
            assert contents == [c.strip() for _, c in it.conditions[condition]]


def test_syntaxgym_formula_grammar():
    s = {("a", 1): 2.0, ("a", 2): 3.0, ("b", 1): 1.0, ("b", 2): 5.0}
    assert Prediction("[(1;%a%) > (1;%b%)] & [(2;%a%) < (2;%b%)]")(s)
    assert Prediction("((1;%a%) - (1;%b%)) < ((2;%b%) - (2;%a%))")(s)
    assert Prediction("(*;%a%) = 5")(s) and not Prediction("(*;%a%) = 5.1")(s)
    assert Prediction("-(1;%a%) + 3 > 0 | (1;%a%) > 100")(s)
    assert not Prediction("(1;%a%) > 1 & (2;%a%) > 4")(s)
    assert Prediction("(1;%a%) < (2;%b%)").references == {("a", 1), ("b", 2)}
    for bad in ["(1;%a%) >", "((1;%a%) > 1", "(1;%a%) $ 2"]:
        with pytest.raises(FormulaError):
            Prediction(bad)
    with pytest.raises(FormulaError, match="not a comparison"):
        Prediction("(1;%a%) + 1")(s)


def test_syntaxgym_unknown_condition_raises(tmp_path):
    suite = json.loads((sources.FIXTURE_DIR / "syntaxgym" / "toy_agreement_tense.json").read_text())
    suite["predictions"] = [{"type": "formula", "formula": "(5;%match%) < (5;%mismatched%)"}]
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    with pytest.raises(ValueError, match=r"names condition 'mismatched'; conditions are \['match', 'mismatch'\]"):
        load_task("syntaxgym", data=str(path))


def test_item_validation():
    with pytest.raises(ValueError, match="out of range"):
        MCItem("x", "t", "ctx", [" a", " b"], 2)
    with pytest.raises(ValueError, match="duplicate"):
        MCItem("x", "t", "ctx", [" a", " a"], 0)
    with pytest.raises(ValueError, match="empty context"):
        MCItem("x", "t", "  ", [" a", " b"], 0)


def test_fewshot_never_leaks_item_and_is_seeded():
    pool = load_task("boolq", data="fixture")
    item = pool[3]
    shot = build_fewshot(pool, item, k=4, seed=0)
    assert item.id not in shot.meta["fewshot_ids"] and len(shot.meta["fewshot_ids"]) == 4
    assert shot.context.endswith(item.context) and shot.context.count(item.context) == 1
    assert shot.options == item.options and shot.label == item.label
    for ex in (x for x in pool if x.id in shot.meta["fewshot_ids"]):
        assert ex.solved() in shot.context
    assert shot == build_fewshot(pool, item, k=4, seed=0)
    assert {build_fewshot(pool, item, k=4, seed=s).context for s in range(5)} != {shot.context}
    with pytest.raises(ValueError, match="need k=12"):
        build_fewshot(pool, item, k=12, seed=0)


def test_fewshot_balanced_and_preamble_once():
    pool = load_task("mmlu", data="fixture")
    shot = build_fewshot(pool, pool[0], k=8, seed=1, balanced_by="category")
    cats = [x.category for x in pool if x.id in shot.meta["fewshot_ids"]]
    assert sorted(cats.count(c) for c in set(cats)) == [2, 2, 2, 2]
    assert shot.context.count("The following are multiple choice questions") == 1
    labels = build_fewshot(pool, pool[0], k=4, seed=1, balanced_by="label")
    assert sorted(x.label for x in pool if x.id in labels.meta["fewshot_ids"]) == [0, 1, 2, 3]


# -- malformed local files: one TaskError naming the file, line and field -------------------------
TEXT_FIELD = {"boolq": "question", "cb": "premise", "cola": "sentence", "copa": "choice1", "rte": "hypothesis",
              "wic": "word", "stsb": "sentence1", "mmlu": "question", "imppres": "premise",
              "implicature": "utterance", "triviaqa_mc": "question", "triviaqa_ptrue": "question",
              "wsc": "text", "winogrande": "sentence"}


def _fixture_records(name):
    return [json.loads(line) for line in (sources.FIXTURE_DIR / TASKS[name].__module__.split(".")[-1]
                                          ).with_suffix(".jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(TEXT_FIELD))
@pytest.mark.parametrize("value", [5, ["a", "list"], None])
def test_non_string_field_names_file_line_and_field(name, value, tmp_path):
    assert sorted(TEXT_FIELD) == sorted(set(MC_TASKS) - JSON_FIXTURES)  # every multiple-choice loader is covered
    records = _fixture_records(name)[:6]
    field = TEXT_FIELD[name]
    records[2] = {**records[2], field: value}
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + "\n".join(json.dumps(r) for r in records[2:]))
    with pytest.raises(TaskError, match=rf"task '{name}', .*{name}.jsonl line 4: field '{field}' must be a string, "
                                         rf"got {type(value).__name__}"):
        load_task(name, data=str(path))


def test_csv_rows_are_located_by_line(tmp_path):
    path = tmp_path / "rte.csv"
    path.write_text("premise,hypothesis,label\nA cat sat.,An animal sat.,0\nA cat sat.\n")  # row 2 lacks cells
    with pytest.raises(TaskError, match=r"rte.csv line 3: field 'hypothesis' must be a string, got NoneType"):
        load_task("rte", data=str(path))


@pytest.mark.parametrize("name, record, message", [
    ("mmlu", {"question": "q", "subject": "s", "choices": [1, 2, 3, 4], "answer": 0}, "'choices' must be a list of 4 strings"),
    ("mmlu", {"question": "q", "subject": "s", "choices": "not json", "answer": 0}, "'choices' must be a list of 4 strings"),
    ("stsb", {"sentence1": "a", "sentence2": "b", "label": "high"}, "label must be a number in \\[0, 5\\], got 'high'"),
    ("copa", {"premise": "p", "choice1": "a", "choice2": "b", "question": ["cause"], "label": 0}, "field 'question' must be a string"),
    ("triviaqa_mc", {"question": "q", "answer": 7}, "field 'answer' must be a string or an object"),
    ("triviaqa_mc", {"question": "q", "answer": {"value": "v", "aliases": "v"}}, "'aliases' must be a list of strings"),
    ("boolq", {"question": "q", "passage": "p", "label": [1]}, "cannot read label \\[1\\]"),
])
def test_malformed_record_fields(name, record, message, tmp_path):
    path = tmp_path / f"{name}.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(TaskError, match=rf"task '{name}', .*line 1: .*{message}"):
        load_task(name, data=str(path))


@pytest.mark.parametrize("suffix, content, message", [
    (".jsonl", '{"question": "q"}\n[1, 2]\n', r"x.jsonl line 2: a record must be a JSON object"),
    (".jsonl", '{"question": "q"}\n{"question": \n', r"x.jsonl line 2: not valid JSON"),
    (".json", '[{"question": "q"}, 3]', r"x.json record 1: a record must be a JSON object"),
    (".json", '{"rows": []}', r"x.json: expected a JSON list of records"),
    (".txt", "question", r"x.txt: unsupported extension '.txt'"),
])
def test_malformed_files_name_file_and_line(suffix, content, message, tmp_path):
    path = tmp_path / f"x{suffix}"
    path.write_text(content)
    with pytest.raises(TaskError, match=rf"task 'boolq', .*{message}"):
        load_task("boolq", data=str(path))


def test_headerless_mmlu_row_with_missing_columns(tmp_path):
    path = tmp_path / "astronomy_val.csv"
    path.write_text("What is H2O?,Water,Salt,Sand,Gold,A\nWhich is a noble gas?,Oxygen,Neon\n")
    with pytest.raises(TaskError, match=r"astronomy_val.csv line 2: a headerless MMLU row has 6 columns .* got 3"):
        load_task("mmlu", data=str(path))


def test_malformed_syntaxgym_suite_names_the_file(tmp_path):
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"meta": {"name": "x"}, "predictions": [], "items": [{"conditions": 3}]}))
    with pytest.raises(TaskError, match=r"task 'syntaxgym', .*suite.json: not a SyntaxGym suite"):
        load_task("syntaxgym", data=str(path))


def test_task_errors_are_interp_errors():
    from interp import InterpError
    from tasks.toy_world import prompts

    assert issubclass(MissingDatasetError, InterpError) and issubclass(MissingDatasetError, FileNotFoundError)
    with pytest.raises(InterpError, match="unknown style 'nope'"):
        prompts("nope")
    with pytest.raises(InterpError, match="need k=12"):
        build_fewshot(load_task("boolq", data="fixture"), load_task("boolq", data="fixture")[0], k=12, seed=0)
