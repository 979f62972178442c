"""GRICE (Zheng et al. 2021): conversational implicature and reasoning in grammar-generated
dialogues, as multiple choice (beside :mod:`tasks.benchmarks.implicature`'s yes/no set).

A GRICE dialogue is a man's questions and a woman's indirect answers about who put what where
(``"did you leave the cucumber in the den"`` / ``"I was in the dining_room"``). Its two tasks:

- ``recovery`` (implicature recovery): after each turn, which of four explicit answers the
  woman's answer implies (``option``, gold ``answer_index``). Prompt: the turns so far,
  ``"A: {question}?\\nB: {answer}.\\n"`` each, then ``"What B means:"``; options
  ``" {option}."``.
- ``reasoning`` (conversational reasoning): a question about the whole dialogue, answered in
  one word (``"is the woman sure about where Mia was"`` / ``"no"``; ``"where was Logan lastly"``
  / ``"garage"``). Prompt: every turn, then ``"Question: {question}?\\nAnswer:"``. Options:
  ``" no"`` / ``" yes"`` for a yes/no answer; otherwise the answers of the loaded set's other
  reasoning questions that the dialogue mentions, with the gold (in the order the dialogue
  mentions them; one more from the set, the first in sorted order, if the dialogue names
  no other).

Place names' underscores become spaces (``dining_room`` -> ``dining room``). Item categories
are the task (``recovery``, ``reasoning``), so results come per task too.

Data: the dataset's JSON files (``impl_dial_*.json`` in the authors' repository,
zilongzheng/grice-dataset on GitHub): ``{"data": {"dialogs": [...]}, "split": ..., "version": ...}``,
each dialogue ``dialog_id``, ``dialog`` (turns: ``question``, ``answer``, ``explict_answer``
[sic], ``option`` (four strings), ``answer_index``) and ``question`` (a list of ``question``,
``answer``). A .jsonl file of such dialogues, one per line, or a .json list of them, works too.
GRICE is not on the HF hub: pass the file with ``--data grice=PATH``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tasks.errors import MissingDatasetError, TaskError
from tasks.items import MCItem
from tasks.sources import FIXTURE, FIXTURE_DIR, read_located, require

NAME = "grice"
PARTS = ("recovery", "reasoning")
FIXTURE_FILE = "grice.json"
FIELDS = ("dialog_id, dialog (list of turns: question, answer, option (list of str), answer_index (int)), "
          "question (list of question, answer)")


def _read(data: str) -> list[tuple[str, dict[str, Any]]]:
    path = FIXTURE_DIR / FIXTURE_FILE if str(data) == FIXTURE else Path(data)
    if not path.is_file():
        raise MissingDatasetError(f"task {NAME!r}: data file {str(path)!r} does not exist. GRICE is not on the hub: "
                                  f"download an impl_dial_*.json file of the GRICE repository (zilongzheng/grice-dataset "
                                  f"on GitHub) and pass it with --data grice=PATH (dialogue fields: {FIELDS})")
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise TaskError(f"task {NAME!r}, {path} line {err.lineno}: not valid JSON ({err.msg})") from None
        inner = obj.get("data") if isinstance(obj, dict) else None
        if isinstance(inner, dict) and isinstance(inner.get("dialogs"), list):
            return [(f"{path} dialog {i}", d) for i, d in enumerate(inner["dialogs"])]
    try:
        return read_located(path)
    except TaskError as err:
        raise TaskError(f"task {NAME!r}, {err}; GRICE files hold {{'data': {{'dialogs': [...]}}}}") from None


def _text(s: str) -> str:
    return " ".join(s.replace("_", " ").split())


def _question(s: str) -> str:
    s = _text(s)
    return s if s.endswith(("?", ".", "!")) else s + "?"


def _sentence(s: str) -> str:
    s = _text(s)
    return s if s.endswith((".", "!", "?")) else s + "."


def _turns(turns: list[dict[str, Any]]) -> str:
    return "".join(f"A: {_question(t['question'])}\nB: {_sentence(t['answer'])}\n" for t in turns)


def _check_dialog(dialog: Any, where: str) -> None:
    if not isinstance(dialog, dict):
        raise TaskError(f"task {NAME!r}, {where}: a dialogue must be an object with {FIELDS}")
    require(dialog, ["dialog"], task=NAME, where=where)
    for t, turn in enumerate(dialog["dialog"]):
        at = f"{where} turn {t}"
        if not isinstance(turn, dict):
            raise TaskError(f"task {NAME!r}, {at}: a turn must be an object with question, answer, option, answer_index")
        require(turn, ["option", "answer_index"], task=NAME, where=at, text=["question", "answer"])
        options, index = turn["option"], turn["answer_index"]
        if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) for o in options):
            raise TaskError(f"task {NAME!r}, {at}: 'option' must be a list of at least two strings, got {options!r:.60}")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(options):
            raise TaskError(f"task {NAME!r}, {at}: answer_index must be in 0..{len(options) - 1}, got {index!r}")
    for q, question in enumerate(dialog.get("question", [])):
        if not isinstance(question, dict):
            raise TaskError(f"task {NAME!r}, {where} question {q}: must be an object with question, answer")
        require(question, [], task=NAME, where=f"{where} question {q}", text=["question", "answer"])


def _mentions(text: str, word: str) -> int:
    """Position of the first whole-word mention of ``word`` in ``text`` (-1: none)."""
    match = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE)
    return match.start() if match else -1


def _reasoning_options(dialogue: str, gold: str, pool: list[str]) -> tuple[list[str], int]:
    if gold in ("yes", "no"):
        return [" no", " yes"], int(gold == "yes")
    mentioned = sorted({a for a in pool if a not in ("yes", "no") and _mentions(dialogue, a) >= 0} | {gold},
                       key=lambda a: (_mentions(dialogue, a) < 0, _mentions(dialogue, a), a))
    if len(mentioned) < 2:
        others = [a for a in pool if a not in ("yes", "no", gold)]
        if not others:
            raise TaskError(f"task {NAME!r}: the reasoning answer {gold!r} has no rival: the loaded set's other "
                            "reasoning questions give no other one-word answer; load more dialogues or parts=('recovery',)")
        mentioned.append(others[0])
    return [" " + a for a in mentioned], mentioned.index(gold)


def load(split: str = "train", data: str | None = None, limit: int | None = None,
         parts: tuple[str, ...] = PARTS) -> list[MCItem]:
    """GRICE items (``parts``: ``recovery``, ``reasoning`` or both) from ``data`` (a file or
    ``"fixture"``); ``limit`` counts items. ``split`` is ignored: a GRICE file is one split."""
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise TaskError(f"task {NAME!r}: unknown part(s) {bad}; valid: {', '.join(PARTS)}")
    if data is None:
        raise MissingDatasetError(f"task {NAME!r}: GRICE is not on the hub; pass an impl_dial_*.json file of the GRICE "
                                  "repository (zilongzheng/grice-dataset on GitHub) with --data PATH (--data grice=PATH "
                                  "in the studies; data=PATH in Python), or --data fixture for the shipped example dialogues")
    located = _read(data)
    for where, dialog in located:
        _check_dialog(dialog, where)
    pool = sorted({_text(q["answer"]).lower() for _, d in located for q in d.get("question", [])})
    items = []
    for i, (_, dialog) in enumerate(located):
        did = dialog.get("dialog_id", i)
        turns = dialog["dialog"]
        if "recovery" in parts:
            for t, turn in enumerate(turns):
                items.append(MCItem(
                    id=f"{NAME}-{did}-{t}", task=NAME,
                    context=_turns(turns[:t + 1]) + "What B means:",
                    options=[" " + _sentence(o) for o in turn["option"]],
                    label=turn["answer_index"], category="recovery",
                    meta={"dialog_id": did, "turn": t},
                ))
        if "reasoning" in parts:
            dialogue = _turns(turns)
            for q, question in enumerate(dialog.get("question", [])):
                gold = _text(question["answer"]).lower()
                options, label = _reasoning_options(dialogue, gold, pool)
                items.append(MCItem(
                    id=f"{NAME}-{did}-q{q}", task=NAME,
                    context=f"{dialogue}Question: {_question(question['question'])}\nAnswer:",
                    options=options, label=label, category="reasoning",
                    meta={"dialog_id": did, "question": q, "answer": gold},
                ))
    return items[:limit] if limit is not None else items
