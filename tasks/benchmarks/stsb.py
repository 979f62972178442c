"""STS-B (GLUE): semantic similarity on a 0-5 scale, scored as a six-way choice.

lm-evaluation-harness has no STS-B prompt, so ours follows its GLUE style:
``"Sentence 1: {sentence1}\\nSentence 2: {sentence2}\\nQuestion: On a scale from 0 to 5, how
similar are the two sentences in meaning?\\nAnswer:"`` with options ``" 0"`` ... ``" 5"``.

The regression target is kept exactly in ``meta["score"]`` (float in [0, 5]); ``label`` is
that score rounded half up to the nearest integer, so accuracy is a bucketed metric.  For the
usual STS-B metric, take the expected score ``sum_k k * p(option k)`` from the option
probabilities and correlate it (Pearson/Spearman) with ``meta["score"]``.
"""

from __future__ import annotations

import math
from typing import Any

from tasks.errors import TaskError
from tasks.items import MCItem
from tasks.sources import HubSource, located_records, require

NAME = "stsb"
OPTIONS = [f" {k}" for k in range(6)]
SOURCE = HubSource(
    path="nyu-mll/glue",
    name="stsb",
    fields="sentence1 (str), sentence2 (str), label (float similarity in [0, 5]), idx (optional)",
    fixture="stsb.jsonl",
)


def bucket(score: float) -> int:
    """The option index of a similarity score: rounded half up, clipped to 0..5."""
    return min(5, max(0, math.floor(score + 0.5)))


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One STS-B record as an :class:`MCItem` (raw score in ``meta["score"]``)."""
    where = where or f"record {index}"
    require(record, ["label"], task=NAME, where=where, text=["sentence1", "sentence2"])
    try:
        score = float(record["label"])
    except (TypeError, ValueError):
        raise TaskError(f"task {NAME!r}, {where}: label must be a number in [0, 5], got {record['label']!r:.60}") from None
    if not 0.0 <= score <= 5.0:
        raise TaskError(
            f"task {NAME!r}, {where}: similarity {score} outside [0, 5] (test splits hide labels as -1)"
        )
    return MCItem(
        id=f"{NAME}-{record.get('idx', index)}",
        task=NAME,
        context=(
            f"Sentence 1: {record['sentence1'].strip()}\nSentence 2: {record['sentence2'].strip()}\n"
            "Question: On a scale from 0 to 5, how similar are the two sentences in meaning?\nAnswer:"
        ),
        options=list(OPTIONS),
        label=bucket(score),
        meta={"idx": record.get("idx", index), "score": score},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """STS-B items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
