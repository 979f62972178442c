"""Closed-ended reward pairs: a correct and an incorrect answer, in several response formats.

- ``boolq``: SuperGLUE BoolQ; the prompt is ``"{passage}\\nQuestion: {question}?"`` (the same for
  every format, so only the response's form varies, as seed section 4.3 asks), the correct answer
  is the label's, the incorrect one the other. Formats (:data:`BOOLQ_FORMATS`): ``0/1`` (``1`` =
  yes), ``yes/no``, ``true/false`` and ``sentence`` (``"Based on the passage, the answer is
  yes."``).
- ``toy_closed`` / ``toy_closed_heldout``: the toy world's capital and past-tense facts of the
  train split (the countries of the toy reward model's preference pairs) / the held-out test
  split, in the toy pair's language (spaced punctuation, as its corpus). The binary formats verify a claim, ``"Is
  the capital of Poland Warsaw ?"``, true for about half the items (the other half claims a
  wrong answer of the same relation), answered ``"Yes ."`` / ``"No ."`` (``"1 ."``, ``"True ."``);
  ``sentence`` answers the question ``"What is the capital of Poland ?"`` with ``"The capital of
  Poland is Warsaw ."`` vs a wrong answer in the same sentence, and ``short`` with ``"Warsaw ."``
  vs ``"Berlin ."`` (the form the toy reward model was trained on). Samples answer the question.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Any

from tasks.benchmarks import boolq
from tasks.reward_pairs.items import PairItem
from tasks.sources import located_records, parse_label, require
from tasks.toy_world import load_facts, templates

BOOLQ_FORMATS = ("0/1", "yes/no", "true/false", "sentence")
TOY_FORMATS = ("0/1", "yes/no", "true/false", "sentence", "short")
TOY_RELATIONS = ("capital", "past")

# (answer when the statement is true, when it is false)
_BINARY = {"0/1": ("1", "0"), "yes/no": ("Yes", "No"), "true/false": ("True", "False")}
_BOOLQ_SENTENCE = ("Based on the passage, the answer is yes.", "Based on the passage, the answer is no.")
_TOY_CLAIM = {"capital": "Is the capital of {subject} {answer} ?", "past": "Is the past tense of {subject} {answer} ?"}


# -- BoolQ ----------------------------------------------------------------------------------------
def _boolq_item(record: dict[str, Any], index: int, where: str, formats: Sequence[str]) -> list[PairItem]:
    require(record, ["label"], task="boolq", where=where, text=["question", "passage"])
    label = parse_label(record["label"], ["False", "True"], task="boolq", where=where)
    question = record["question"].strip().rstrip("?")
    prompt = f"{record['passage'].strip()}\nQuestion: {question}?"
    item_id = f"boolq-{record.get('idx', index)}"
    out = []
    for fmt in formats:
        yes, no = _BOOLQ_SENTENCE if fmt == "sentence" else _BINARY[fmt]
        right, wrong = (yes, no) if label == 1 else (no, yes)
        out.append(PairItem(item_id, "boolq", "closed", fmt, prompt, right, wrong, question=prompt,
                            reference="yes" if label else "no", meta={"label": label}))
    return out


def load_boolq(data: str | None = "fixture", limit: int | None = None,
               formats: Sequence[str] = BOOLQ_FORMATS, split: str = "validation") -> list[PairItem]:
    """BoolQ pairs (hub ``aps/super_glue`` / ``boolq``, a local file with its fields, or the fixture)."""
    records = located_records("boolq", boolq.SOURCE, split, data, limit)
    return [p for i, (where, r) in enumerate(records) for p in _boolq_item(r, i, where, formats)]


# -- the toy world --------------------------------------------------------------------------------
def _stable_bit(text: str) -> bool:
    return hashlib.sha256(text.encode()).digest()[0] % 2 == 0


def _user_turn(relation: str) -> str:
    """The toy corpus's chat question of ``relation`` (``"What is the capital of {subject} ?"``)."""
    text = next(t["text"] for t in templates(relation) if t["style"] == "chat")
    return text.removeprefix("User : ").split(" Assistant :", 1)[0]


def load_toy(limit: int | None = None, formats: Sequence[str] = TOY_FORMATS, split: str = "train",
             task: str = "toy_closed") -> list[PairItem]:
    """Toy-world pairs named ``task``: ``split`` facts (``train``: the subjects of the reward model's
    own preference pairs; ``test``: the held-out ones) of :data:`TOY_RELATIONS`
    with single-word answers; the wrong answer is another fact's answer of the same relation,
    drawn by a hash of the subject (deterministic)."""
    out: list[PairItem] = []
    facts = [f for r in TOY_RELATIONS for f in load_facts(r, include_multiword=False) if f["split"] == split]
    answers = {r: sorted({f["answer"] for f in load_facts(r, include_multiword=False)}) for r in TOY_RELATIONS}
    for fact in facts[:limit] if limit is not None else facts:
        rel, subject, answer = fact["relation"], fact["subject"], fact["answer"]
        rng = random.Random(f"toy_closed:{rel}:{subject}")
        wrong = rng.choice([a for a in answers[rel] if a != answer])
        question = _user_turn(rel).format(subject=subject)
        sentence = next(t["text"] for t in templates(rel) if t["style"] == "zero")
        claim_true = _stable_bit(f"{rel}:{subject}")
        claim = _TOY_CLAIM[rel].format(subject=subject, answer=answer if claim_true else wrong)
        item_id = f"{task}-{rel}-{subject.replace(' ', '_')}"
        meta = {"relation": rel, "subject": subject, "answer": answer, "wrong": wrong, "claim_true": claim_true}
        for fmt in formats:
            if fmt in _BINARY:
                yes, no = _BINARY[fmt]
                right, bad = (yes, no) if claim_true else (no, yes)
                prompt, right, bad = claim, f"{right} .", f"{bad} ."
            elif fmt == "sentence":
                prompt = question
                right, bad = sentence.format(subject=subject, answer=answer), sentence.format(subject=subject, answer=wrong)
            else:  # short
                prompt, right, bad = question, f"{answer} .", f"{wrong} ."
            out.append(PairItem(item_id, task, "closed", fmt, prompt, right, bad, question=question,
                                reference=answer, meta=meta))
    return out
