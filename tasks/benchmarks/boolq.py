"""BoolQ (SuperGLUE): yes/no questions about a passage.

Prompt as in lm-evaluation-harness: ``"{passage}\\nQuestion: {question}?\\nAnswer:"`` with
options ``" no"`` / ``" yes"`` (label 1 = yes, the hub's ``True``).
"""

from __future__ import annotations

from typing import Any

from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "boolq"
OPTIONS = [" no", " yes"]
SOURCE = HubSource(
    path="aps/super_glue",
    name="boolq",
    fields="question (str), passage (str), label (0=False, 1=True; bools accepted), idx (optional)",
    fixture="boolq.jsonl",
)


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One BoolQ record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["label"], task=NAME, where=where, text=["question", "passage"])
    question = record["question"].strip().rstrip("?")
    return MCItem(
        id=f"{NAME}-{record.get('idx', index)}",
        task=NAME,
        context=f"{record['passage'].strip()}\nQuestion: {question}?\nAnswer:",
        options=list(OPTIONS),
        label=parse_label(record["label"], ["False", "True"], task=NAME, where=where),
        meta={"idx": record.get("idx", index)},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """BoolQ items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
