"""WiC (SuperGLUE): is a word used with the same sense in two sentences?

Prompt as in lm-evaluation-harness:
``"Sentence 1: {sentence1}\\nSentence 2: {sentence2}\\nQuestion: Is the word '{word}' used in
the same way in the two sentences above?\\nAnswer:"`` with options ``" no"`` / ``" yes"``.
"""

from __future__ import annotations

from typing import Any

from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "wic"
OPTIONS = [" no", " yes"]
SOURCE = HubSource(
    path="aps/super_glue",
    name="wic",
    fields="word (str), sentence1 (str), sentence2 (str), label (0=different sense, 1=same; bools accepted), start1/end1/start2/end2 and idx (optional)",
    fixture="wic.jsonl",
)


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One WiC record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["label"], task=NAME, where=where, text=["word", "sentence1", "sentence2"])
    return MCItem(
        id=f"{NAME}-{record.get('idx', index)}",
        task=NAME,
        context=(
            f"Sentence 1: {record['sentence1'].strip()}\nSentence 2: {record['sentence2'].strip()}\n"
            f"Question: Is the word '{record['word']}' used in the same way in the two sentences above?\nAnswer:"
        ),
        options=list(OPTIONS),
        label=parse_label(record["label"], ["False", "True"], task=NAME, where=where),
        meta={"idx": record.get("idx", index), "word": record["word"]},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """WiC items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
