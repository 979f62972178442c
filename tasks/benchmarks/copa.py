"""COPA (SuperGLUE): choose the more plausible cause or effect.

Prompt as in lm-evaluation-harness: the premise without its final period, then
``" because"`` (question ``cause``) or ``" therefore"`` (``effect``); each option is
``" " + choice`` with its first letter lower-cased.
"""

from __future__ import annotations

from typing import Any

from tasks.errors import TaskError
from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "copa"
CONNECTORS = {"cause": "because", "effect": "therefore"}
SOURCE = HubSource(
    path="aps/super_glue",
    name="copa",
    fields="premise (str), choice1 (str), choice2 (str), question ('cause' or 'effect'), label (0=choice1, 1=choice2), idx (optional)",
    fixture="copa.jsonl",
)


def _lower_first(text: str) -> str:
    text = text.strip()
    return text[:1].lower() + text[1:]


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One COPA record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["label"], task=NAME, where=where, text=["premise", "choice1", "choice2", "question"])
    if record["question"] not in CONNECTORS:
        raise TaskError(f"task {NAME!r}, {where}: question must be 'cause' or 'effect', got {record['question']!r}")
    premise = record["premise"].strip()
    if premise.endswith((".", "!", "?")):
        premise = premise[:-1]
    return MCItem(
        id=f"{NAME}-{record.get('idx', index)}",
        task=NAME,
        context=f"{premise} {CONNECTORS[record['question']]}",
        options=[" " + _lower_first(record["choice1"]), " " + _lower_first(record["choice2"])],
        label=parse_label(record["label"], ["choice1", "choice2"], task=NAME, where=where),
        category=record["question"],
        meta={"idx": record.get("idx", index)},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """COPA items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
