"""CoLA (GLUE): grammatical acceptability.

Prompt as in lm-evaluation-harness: ``"{sentence}\\nQuestion: Does this sentence make
sense?\\nAnswer:"`` with options ``" no"`` / ``" yes"`` (label 1 = acceptable).
"""

from __future__ import annotations

from typing import Any

from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "cola"
OPTIONS = [" no", " yes"]
SOURCE = HubSource(
    path="nyu-mll/glue",
    name="cola",
    fields="sentence (str), label (0=unacceptable, 1=acceptable), idx (optional)",
    fixture="cola.jsonl",
)


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One CoLA record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["label"], task=NAME, where=where, text=["sentence"])
    return MCItem(
        id=f"{NAME}-{record.get('idx', index)}",
        task=NAME,
        context=f"{record['sentence'].strip()}\nQuestion: Does this sentence make sense?\nAnswer:",
        options=list(OPTIONS),
        label=parse_label(record["label"], ["unacceptable", "acceptable"], task=NAME, where=where),
        meta={"idx": record.get("idx", index)},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """CoLA items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
