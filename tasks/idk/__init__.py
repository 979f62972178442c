"""An "I don't know" dataset: questions where abstaining is the right answer, mixed with
answerable ones, each labelled with ``why`` and ``answerable``.

Two variants (:data:`VARIANTS`), the same record format (:class:`IDKItem`):

- ``"text"``: English questions written for this project (``data/questions.csv``, 25 per
  category) plus answerable TriviaQA questions (``triviaqa=PATH`` in TriviaQA's hub format, or
  ``"fixture"``, the 12 shipped in ``tasks/fixtures/triviaqa.jsonl``; ``None`` leaves them out).
  Categories (:data:`CATEGORIES`): ``known`` (answerable), ``after_cutoff`` (events of
  ``year``: unknowable to a model whose training data end before it), ``fictional``
  (entities invented here), ``underspecified`` (the question lacks what it refers to),
  ``polite_evasion`` (a direct answer would be rude; declining to rank people is the polite
  answer).
- ``"toy"``: the toy world's capital question ``What is the capital of X ?`` for its real
  countries (``known``) and for invented countries the toy world lacks (``fictional``,
  ``data/fictional_countries.csv``: ``recombined`` names are two pieces of real names,
  ``Pol ##ania``; ``spelled`` ones need letter pieces, ``Z ##o ##r ##v ##ania``).

Every item has answer ``candidates``: for an answerable item its gold answer first and
distractors; for the others plausible direct answers a model might give. A response is
``answer_format.format(candidate)`` (``" Paris."``; the toy world's ``" Paris ."``) or one of
the ``abstentions`` (``" I don't know."``; the toy pair knows only its refusal, ``" Sorry , I
cannot help with that ."``). :meth:`IDKItem.to_mc` is the multiple-choice item a study scores:
the candidates' responses, then the abstentions, labelled with the right one (the gold answer,
or the first abstention).
"""

from __future__ import annotations

import csv
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.errors import TaskError
from tasks.items import MCItem

DATA_DIR = Path(__file__).parent / "data"
VARIANTS = ("text", "toy")
CATEGORIES = ("known", "after_cutoff", "fictional", "underspecified", "polite_evasion")
TEXT_ABSTENTIONS = (" I don't know.",)
TEXT_FORMAT = " {}."
TOY_FORMAT = " {} ."
TOY_QUESTION = "What is the capital of {} ?"
FICTIONAL_KINDS = ("recombined", "spelled")
FIELDS = ("id", "variant", "question", "prompt", "answerable", "why", "answers", "candidates", "abstentions",
          "answer_format", "source", "meta")


@dataclass(frozen=True)
class IDKItem:
    """One question.

    Attributes:
        id: unique within the dataset.
        variant: ``"text"`` or ``"toy"``.
        question: the question as a user would ask it.
        prompt: the question framed for a model without a chat template (ends before the answer).
        answerable: whether a direct answer can be right.
        why: the category (:data:`CATEGORIES`); ``known`` exactly when ``answerable``.
        answers: accepted forms of the right answer (empty when not answerable).
        candidates: direct answers to weigh against abstaining; an answerable item's gold first.
        abstentions: abstention responses (with their leading space and end punctuation).
        answer_format: how a candidate is written as a response (``" {}."``).
        source: ``"written"``, ``"triviaqa:<question_id>"`` or ``"toy_world"``.
        meta: anything else (``year`` of an after-cutoff event, a fictional name's ``kind``, ...).
    """

    id: str
    variant: str
    question: str
    prompt: str
    answerable: bool
    why: str
    answers: list[str]
    candidates: list[str]
    abstentions: list[str]
    answer_format: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"idk item {self.id!r}"
        if self.variant not in VARIANTS:
            raise TaskError(f"{where}: unknown variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        if self.why not in CATEGORIES:
            raise TaskError(f"{where}: unknown category (why) {self.why!r}; valid: {', '.join(CATEGORIES)}")
        if not isinstance(self.answerable, bool) or self.answerable != (self.why == "known"):
            raise TaskError(f"{where}: answerable must be true exactly for why='known', got answerable="
                            f"{self.answerable!r} with why={self.why!r}")
        for name in ("question", "prompt", "answer_format", "source"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise TaskError(f"{where}: {name} must be a non-empty string, got {getattr(self, name)!r:.60}")
        if "{}" not in self.answer_format:
            raise TaskError(f"{where}: answer_format needs a '{{}}' slot, got {self.answer_format!r}")
        for name in ("answers", "candidates", "abstentions"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise TaskError(f"{where}: {name} must be a list of non-empty strings, got {value!r:.80}")
        if not self.candidates or not self.abstentions:
            raise TaskError(f"{where}: needs at least one candidate answer and one abstention")
        if bool(self.answers) != self.answerable:
            raise TaskError(f"{where}: an answerable item needs answers and an unanswerable one none, got "
                            f"{self.answers!r}")
        responses = self.responses()
        if len(set(responses)) != len(responses):
            raise TaskError(f"{where}: duplicate responses in {responses!r}")
        if self.answerable and self.candidates[0] not in self.answers:
            raise TaskError(f"{where}: the first candidate {self.candidates[0]!r} must be a gold answer "
                            f"({self.answers!r})")

    def responses(self) -> list[str]:
        """Each candidate written as a response, then the abstentions."""
        return [self.answer_format.format(c) for c in self.candidates] + list(self.abstentions)

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

    def to_mc(self, context: str | None = None) -> MCItem:
        """The item as multiple choice over :meth:`responses` after ``context`` (default the
        raw ``prompt``), labelled with the gold answer (answerable) or the first abstention."""
        return MCItem(id=self.id, task=f"idk_{self.variant}", context=self.prompt if context is None else context,
                      options=self.responses(), label=0 if self.answerable else self.n_candidates,
                      category=self.why, meta={"n_candidates": self.n_candidates})

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str = "record") -> IDKItem:
        if not isinstance(record, dict):
            raise TaskError(f"{where}: an idk record must be a JSON object, got {type(record).__name__}")
        missing = [f for f in FIELDS if f not in record]
        extra = sorted(set(record) - set(FIELDS))
        if missing or extra:
            raise TaskError(f"{where}: idk record fields {list(FIELDS)}; missing {missing}, unknown {extra}")
        try:
            return cls(**record)
        except TaskError as err:
            raise TaskError(f"{where}: {err}") from None


def _split(cell: str) -> list[str]:
    return [p.strip() for p in cell.split("|") if p.strip()]


def text_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def written_items() -> list[IDKItem]:
    """The hand-written English questions (``data/questions.csv``)."""
    path = DATA_DIR / "questions.csv"
    items = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            meta = {k: row[k] for k in ("note",) if row.get(k)}
            if row.get("year"):
                meta["year"] = int(row["year"])
            items.append(IDKItem(
                id=f"idk-{row['id']}", variant="text", question=row["question"], prompt=text_prompt(row["question"]),
                answerable=row["why"] == "known", why=row["why"], answers=_split(row["answers"]),
                candidates=_split(row["candidates"]), abstentions=list(TEXT_ABSTENTIONS), answer_format=TEXT_FORMAT,
                source="written", meta=meta))
    return items


def triviaqa_items(data: str, limit: int | None = None, n_candidates: int = 3, seed: int = 0) -> list[IDKItem]:
    """Answerable TriviaQA questions (``data``: a file in the hub's format or ``"fixture"``), with
    the distractors of :func:`tasks.benchmarks.triviaqa.load` (other questions' answers)."""
    from tasks.benchmarks import triviaqa

    items = []
    for mc in triviaqa.load(data=data, limit=limit, n_options=n_candidates, seed=seed):
        choices = list(mc.meta["choices"])
        gold = choices.pop(mc.label)
        question = mc.context.split("\n", 1)[0].removeprefix("Question: ")
        aliases = list(dict.fromkeys(mc.meta["aliases"]))
        items.append(IDKItem(
            id=f"idk-triviaqa-{mc.meta['question_id']}", variant="text", question=question,
            prompt=text_prompt(question), answerable=True, why="known", answers=aliases, candidates=[gold, *choices],
            abstentions=list(TEXT_ABSTENTIONS), answer_format=TEXT_FORMAT, source=f"triviaqa:{mc.meta['question_id']}"))
    return items


def fictional_countries() -> list[dict[str, str]]:
    """``name`` and ``kind`` of the invented countries of the toy variant."""
    with open(DATA_DIR / "fictional_countries.csv", newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


def toy_prompt(question: str) -> str:
    """The toy world's Q/A frame (no chat template): ``Q : What is the capital of X ? A :``."""
    return f"Q : {question} A :"


def toy_items(split: str = "all", n_candidates: int = 4, seed: int = 0) -> list[IDKItem]:
    """Capital questions on the toy world's countries of ``split`` (``known``) and on the
    invented ones (``fictional``); candidates are capitals drawn by a generator seeded with
    ``(seed, country)`` (a real country's own capital first)."""
    from tasks.toy_world import REFUSAL, SPLITS, load_facts

    if split not in SPLITS:
        raise TaskError(f"unknown toy split {split!r}; valid: {', '.join(SPLITS)}")
    facts = load_facts(relation="capital")
    capitals = sorted({f["answer"] for f in facts})
    real = {f["subject"] for f in facts} | set(capitals)
    items = []

    def item(country: str, why: str, answers: list[str], meta: dict) -> IDKItem:
        rng = random.Random(f"{seed}:{country}")
        others = rng.sample([c for c in capitals if c not in answers], n_candidates - len(answers))
        question = TOY_QUESTION.format(country)
        return IDKItem(id=f"idk-toy-{country.replace(' ', '_')}", variant="toy", question=question,
                       prompt=toy_prompt(question), answerable=why == "known", why=why, answers=answers,
                       candidates=[*answers, *others], abstentions=[f" {REFUSAL}"], answer_format=TOY_FORMAT,
                       source="toy_world" if answers else "written", meta=meta)

    for f in facts:
        if split in ("all", f["split"]):
            items.append(item(f["subject"], "known", [f["answer"]], {"split": f["split"]}))
    for row in fictional_countries():
        if row["name"] in real:
            raise TaskError(f"fictional country {row['name']!r} is a toy-world country or capital")
        if row["kind"] not in FICTIONAL_KINDS:
            raise TaskError(f"fictional country {row['name']!r}: unknown kind {row['kind']!r}; valid: "
                            f"{', '.join(FICTIONAL_KINDS)}")
        items.append(item(row["name"], "fictional", [], {"kind": row["kind"]}))
    return items


def load(variant: str = "toy", triviaqa: str | None = "fixture", limit: int | None = None,
         categories: tuple[str, ...] | None = None, seed: int = 0) -> list[IDKItem]:
    """The items of ``variant`` (see the module docstring); ``limit`` keeps at most that many
    per category (in file order), ``categories`` only those."""
    if variant not in VARIANTS:
        raise TaskError(f"unknown idk variant {variant!r}; valid: {', '.join(VARIANTS)}")
    bad = [c for c in categories or () if c not in CATEGORIES]
    if bad:
        raise TaskError(f"unknown idk categories {bad}; valid: {', '.join(CATEGORIES)}")
    if limit is not None and limit < 1:
        raise TaskError(f"limit must be >= 1, got {limit}")
    if variant == "toy":
        if triviaqa not in (None, "fixture"):
            raise TaskError("the toy variant has no TriviaQA part; drop the TriviaQA file (or use variant 'text')")
        items = toy_items(seed=seed)
    else:
        items = written_items() + (triviaqa_items(triviaqa, seed=seed) if triviaqa else [])
    kept, count = [], {}
    for it in items:
        if categories and it.why not in categories:
            continue
        count[it.why] = count.get(it.why, 0) + 1
        if limit is None or count[it.why] <= limit:
            kept.append(it)
    if not kept:
        raise TaskError(f"no idk items of categories {list(categories or CATEGORIES)} in variant {variant!r}")
    ids = [it.id for it in kept]
    if len(set(ids)) != len(ids):
        raise TaskError(f"duplicate idk item ids: {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    return kept
