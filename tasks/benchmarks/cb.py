"""CommitmentBank (SuperGLUE): three-way entailment.

Prompt as in lm-evaluation-harness:
``"{premise}\\nQuestion: {hypothesis}. True, False, or Neither?\\nAnswer:"`` with options
``" True"`` / ``" False"`` / ``" Neither"`` (hub labels 0=entailment, 1=contradiction,
2=neutral).
"""

from __future__ import annotations

from typing import Any

from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "cb"
LABELS = ["entailment", "contradiction", "neutral"]
OPTIONS = [" True", " False", " Neither"]
SOURCE = HubSource(
    path="aps/super_glue",
    name="cb",
    fields="premise (str), hypothesis (str), label (0=entailment, 1=contradiction, 2=neutral; names accepted), idx (optional)",
    fixture="cb.jsonl",
)


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One CB record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["label"], task=NAME, where=where, text=["premise", "hypothesis"])
    hypothesis = record["hypothesis"].strip().rstrip(".")
    return MCItem(
        id=f"{NAME}-{record.get('idx', index)}",
        task=NAME,
        context=f"{record['premise'].strip()}\nQuestion: {hypothesis}. True, False, or Neither?\nAnswer:",
        options=list(OPTIONS),
        label=parse_label(record["label"], LABELS, task=NAME, where=where),
        meta={"idx": record.get("idx", index)},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """CB items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
