"""Conversational implicatures, binary, in the format of Ruis et al. (2022) (LUDWIG).

Each record is an utterance, an indirect response, and the implied answer (``"yes"`` or
``"no"``).  Prompt: the paper's first template,
``'Esther asked "{utterance}" and Juan responded "{response}", which means'`` with options
``" no"`` / ``" yes"`` (label 1 = yes).  On the hub, configs are ``0-shot``, ``1-shot``, ...;
this loader reads the zero-shot records and leaves few-shot prompts to
:func:`tasks.items.build_fewshot`.
"""

from __future__ import annotations

from typing import Any

from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "implicature"
OPTIONS = [" no", " yes"]
SOURCE = HubSource(
    path="UCL-DARK/ludwig",
    name="0-shot",
    fields="utterance (str), response (str), implicature ('yes' or 'no', case and final period ignored)",
    fixture="implicature.jsonl",
)


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One implicature record as an :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["implicature"], task=NAME, where=where, text=["utterance", "response"])
    implied = str(record["implicature"]).strip().lower().rstrip(".")
    return MCItem(
        id=f"{NAME}-{record.get('id', index)}",
        task=NAME,
        context=f'Esther asked "{record["utterance"].strip()}" and Juan responded "{record["response"].strip()}", which means',
        options=list(OPTIONS),
        label=parse_label(implied, ["no", "yes"], task=NAME, where=where),
        meta={"id": record.get("id", index)},
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """Implicature items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
