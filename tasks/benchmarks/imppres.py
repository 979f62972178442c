"""ImpPres (Jeretič et al., 2020): presupposition and scalar-implicature NLI.

Scored like CB, three-way: ``"{premise}\\nQuestion: {hypothesis}. True, False, or
Neither?\\nAnswer:"`` with options in the hub's label order, ``" True"`` (0=entailment),
``" Neither"`` (1=neutral), ``" False"`` (2=contradiction).

Presupposition records carry ``gold_label``; implicature records carry two golds,
``gold_label_log`` (logical reading) and ``gold_label_prag`` (pragmatic reading).  ``reading``
chooses which one is the label (default ``"pragmatic"``); both stay in ``meta``.
``category`` is the sub-dataset's trigger field (``trigger`` or ``item_type``).

On the hub each sub-dataset is a config (``presupposition_all_n_presupposition``,
``implicature_connectives``, ...) whose only split is the sub-dataset name; pass the config
as ``subset``.  ``split`` is ignored on the hub path.
"""

from __future__ import annotations

from typing import Any, Literal

from tasks.errors import TaskError
from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "imppres"
LABELS = ["entailment", "neutral", "contradiction"]
OPTIONS = [" True", " Neither", " False"]
DEFAULT_SUBSET = "presupposition_all_n_presupposition"
FIELDS = (
    "premise (str), hypothesis (str), and gold_label (presuppositions) or gold_label_log and "
    "gold_label_prag (implicatures), each 0=entailment, 1=neutral, 2=contradiction (names accepted); "
    "trigger / item_type (optional)"
)


def source(subset: str = DEFAULT_SUBSET) -> HubSource:
    """The hub source of one ImpPres sub-dataset."""
    return HubSource(path="facebook/imppres", name=subset, fields=FIELDS, fixture="imppres.jsonl")


def to_item(record: dict[str, Any], index: int, reading: Literal["pragmatic", "logical"] = "pragmatic", where: str | None = None) -> MCItem:
    """One ImpPres record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, [], task=NAME, where=where, text=["premise", "hypothesis"])
    if "gold_label" in record:
        key, kind = "gold_label", "presupposition"
    elif reading in ("pragmatic", "logical"):
        key, kind = ("gold_label_prag" if reading == "pragmatic" else "gold_label_log"), "implicature"
        require(record, [key], task=NAME, where=where)
    else:
        raise TaskError(f"reading must be 'pragmatic' or 'logical', got {reading!r}")
    golds = {
        k: parse_label(record[k], LABELS, task=NAME, where=where)
        for k in ("gold_label", "gold_label_log", "gold_label_prag")
        if k in record
    }
    hypothesis = record["hypothesis"].strip().rstrip(".")
    uid = record.get("pairID", record.get("UID", index))
    return MCItem(
        id=f"{NAME}-{uid}-{index}",
        task=NAME,
        context=f"{record['premise'].strip()}\nQuestion: {hypothesis}. True, False, or Neither?\nAnswer:",
        options=list(OPTIONS),
        label=golds[key],
        category=record.get("trigger") or record.get("item_type"),
        meta={"kind": kind, **golds, "uid": uid},
    )


def load(
    split: str = "validation",
    data: str | None = None,
    limit: int | None = None,
    subset: str = DEFAULT_SUBSET,
    reading: Literal["pragmatic", "logical"] = "pragmatic",
) -> list[MCItem]:
    """ImpPres items from ``data`` (file path or ``"fixture"``) or hub config ``subset``."""
    hub_split = subset.split("_", 1)[1] if data is None else split
    records = located_records(NAME, source(subset), hub_split, data, limit)
    return [to_item(r, i, reading, w) for i, (w, r) in enumerate(records)]
