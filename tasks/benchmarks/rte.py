"""RTE (SuperGLUE): two-way entailment.

Prompt as in lm-evaluation-harness: ``"{premise}\\nQuestion: {hypothesis} True or False?\\nAnswer:"``
with options ``" True"`` / ``" False"`` (hub labels 0=entailment, 1=not_entailment).
"""

from __future__ import annotations

from typing import Any

from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "rte"
LABELS = ["entailment", "not_entailment"]
OPTIONS = [" True", " False"]
SOURCE = HubSource(
    path="aps/super_glue",
    name="rte",
    fields="premise (str), hypothesis (str), label (0=entailment, 1=not_entailment; names accepted), idx (optional)",
    fixture="rte.jsonl",
)


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One RTE record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["label"], task=NAME, where=where, text=["premise", "hypothesis"])
    return MCItem(
        id=f"{NAME}-{record.get('idx', index)}",
        task=NAME,
        context=f"{record['premise'].strip()}\nQuestion: {record['hypothesis'].strip()} True or False?\nAnswer:",
        options=list(OPTIONS),
        label=parse_label(record["label"], LABELS, task=NAME, where=where),
        meta={"idx": record.get("idx", index)},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """RTE items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
