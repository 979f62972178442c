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

from tasks.items import MCItem
from tasks.sources import FIXTURE, HubSource, load_records, parse_label, require

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


def to_item(record: dict[str, Any], index: int) -> MCItem:
    """One MMLU record as an :class:`MCItem`."""
    where = f"record {index}"
    require(record, ["question", "subject", "choices", "answer"], task=NAME, where=where)
    choices = record["choices"]
    if isinstance(choices, str):
        choices = json.loads(choices)
    if len(choices) != 4:
        raise ValueError(f"task {NAME!r}, {where}: expected 4 choices, got {len(choices)}")
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


def _read_original_csv(path: Path) -> list[dict[str, Any]] | None:
    """Rows of the original headerless release, or None if the file has a header."""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:1] == ["question"] or "question" in rows[0]:
        return None
    subject = re.sub(r"_(val|test|dev)$", "", path.stem)
    return [
        {"question": r[0], "choices": r[1:5], "answer": r[5], "subject": subject, "idx": i}
        for i, r in enumerate(rows)
    ]


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """MMLU items from ``data`` (file path or ``"fixture"``) or the hub (config ``all``)."""
    if data is not None and str(data) != FIXTURE and Path(data).suffix.lower() == ".csv" and Path(data).is_file():
        original = _read_original_csv(Path(data))
        if original is not None:
            return [to_item(r, i) for i, r in enumerate(original[:limit] if limit is not None else original)]
    return [to_item(r, i) for i, r in enumerate(load_records(NAME, SOURCE, split, data, limit))]
