"""MMLU: four-way multiple choice over 57 subjects.

Prompt as in lm-evaluation-harness:
``"The following are multiple choice questions (with answers) about {subject}.\\n\\n{question}\\n
A. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer:"`` with options ``" A"`` ... ``" D"``.  The header
is kept in ``meta["preamble"]`` so a few-shot prompt writes it once.  ``category`` is the
subject (``"high_school_physics"``).

Local files: hub fields (``question``, ``subject``, ``choices`` as a list, or a JSON string
in CSV, ``answer`` 0-3 or A-D), or the original headerless CSV release (``question, A, B, C,
D, answer`` per row, subject taken from a file name like ``astronomy_val.csv``).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from tasks.errors import TaskError
from tasks.items import MCItem
from tasks.sources import FIXTURE, HubSource, located_records, parse_label, require

NAME = "mmlu"
LETTERS = ["A", "B", "C", "D"]
OPTIONS = [f" {x}" for x in LETTERS]
SOURCE = HubSource(
    path="cais/mmlu",
    name="all",
    fields="question (str), subject (str, e.g. 'astronomy'), choices (list of 4 str), answer (0-3 or A-D)",
    fixture="mmlu.jsonl",
)


def preamble(subject: str) -> str:
    """The lm-evaluation-harness header for ``subject``."""
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One MMLU record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["choices", "answer"], task=NAME, where=where, text=["question", "subject"])
    choices = record["choices"]
    if isinstance(choices, str):  # a JSON list inside a CSV cell
        try:
            choices = json.loads(choices)
        except json.JSONDecodeError:
            raise TaskError(f"task {NAME!r}, {where}: field 'choices' must be a list of 4 strings "
                            f"(in a CSV, a JSON list), got {choices!r:.60}") from None
    if not isinstance(choices, list) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        raise TaskError(f"task {NAME!r}, {where}: field 'choices' must be a list of 4 strings, got {choices!r:.80}")
    head = preamble(record["subject"])
    body = record["question"].strip() + "\n" + "".join(
        f"{letter}. {str(choice).strip()}\n" for letter, choice in zip(LETTERS, choices)
    )
    return MCItem(
        id=f"{NAME}-{record['subject']}-{record.get('idx', index)}",
        task=NAME,
        context=head + body + "Answer:",
        options=list(OPTIONS),
        label=parse_label(record["answer"], LETTERS, task=NAME, where=where),
        category=record["subject"],
        meta={"preamble": head, "choices": [str(c) for c in choices]},
    )


def _read_original_csv(path: Path) -> list[tuple[str, dict[str, Any]]] | None:
    """``(where, record)`` rows of the original headerless release, or None if the file has a header."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        rows = [(f"{path} line {reader.line_num}", row) for row in reader]
    if not rows or rows[0][1][:1] == ["question"] or "question" in rows[0][1]:
        return None
    subject = re.sub(r"_(val|test|dev)$", "", path.stem)
    out = []
    for i, (where, r) in enumerate(rows):
        if len(r) != 6:
            raise TaskError(f"task {NAME!r}, {where}: a headerless MMLU row has 6 columns "
                            f"(question, A, B, C, D, answer), got {len(r)}")
        out.append((where, {"question": r[0], "choices": r[1:5], "answer": r[5], "subject": subject, "idx": i}))
    return out


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """MMLU items from ``data`` (file path or ``"fixture"``) or the hub (config ``all``)."""
    if data is not None and str(data) != FIXTURE and Path(data).suffix.lower() == ".csv" and Path(data).is_file():
        original = _read_original_csv(Path(data))
        if original is not None:
            return [to_item(r, i, w) for i, (w, r) in enumerate(original[:limit] if limit is not None else original)]
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
