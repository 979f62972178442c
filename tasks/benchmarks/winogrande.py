"""WinoGrande (Sakaguchi et al. 2020): fill the blank ``_`` of a sentence with one of two options.

Scored partially, as lm-evaluation-harness scores it (Trinh & Le 2018): each option replaces
the blank, the text before the blank plus the option is read, and only the rest of the sentence
after the blank (shared by both options) is scored (:class:`tasks.items.MCItem` with a
``continuation``; :mod:`probes.multiple_choice`). The item's ``context`` is the text before the
blank without its trailing whitespace, which leads each option (``" the trophy"``), so that
``context + option`` is the sentence up to and with the option.

The continuation is the sentence after the blank, as written (trailing whitespace stripped):
``" is too large."``, or ``"'s car was red."`` after a blank that takes a possessive. (The
harness joins it with one space whatever follows, ``" 's car was red."``; the text's own
spacing is kept here.)
"""

from __future__ import annotations

from typing import Any

from tasks.errors import TaskError
from tasks.items import MCItem
from tasks.sources import HubSource, located_records, require

NAME = "winogrande"
SOURCE = HubSource(
    path="allenai/winogrande",
    name="winogrande_xl",
    fields="sentence (str with one '_' for the blank), option1 (str), option2 (str), answer ('1' or '2'), "
           "qID (optional; the official dev.jsonl's fields are the same)",
    fixture="winogrande.jsonl",
)


def split_blank(sentence: str, *, task: str, where: str) -> tuple[str, str, str]:
    """``(context, separator, continuation)`` around the one ``_`` of ``sentence``: the text before
    the blank without its trailing whitespace, that whitespace (it leads each option), and the text
    after the blank without trailing whitespace."""
    if sentence.count("_") != 1:
        raise TaskError(f"task {task!r}, {where}: the sentence must have exactly one '_' (the blank), "
                        f"it has {sentence.count('_')}: {sentence!r:.80}")
    before, after = sentence.split("_")
    context = before.rstrip()
    continuation = after.rstrip()
    if not continuation.strip():
        raise TaskError(f"task {task!r}, {where}: nothing follows the blank, so partial scoring has nothing "
                        f"to score: {sentence!r:.80}")
    return context, before[len(context):], continuation


def to_item(record: dict[str, Any], index: int, where: str | None = None) -> MCItem:
    """One WinoGrande record as a partially scored :class:`MCItem`."""
    where = where or f"record {index}"
    require(record, ["answer"], task=NAME, where=where, text=["sentence", "option1", "option2"])
    answer = str(record["answer"]).strip()
    if answer not in ("1", "2"):
        hidden = " (hidden, as in the test split; use a split with answers)" if answer == "" else ""
        raise TaskError(f"task {NAME!r}, {where}: answer must be '1' or '2', got {record['answer']!r}{hidden}")
    context, sep, continuation = split_blank(record["sentence"], task=NAME, where=where)
    qid = record.get("qID", index)
    return MCItem(
        id=f"{NAME}-{qid}",
        task=NAME,
        context=context,
        options=[sep + record["option1"].strip(), sep + record["option2"].strip()],
        label=int(answer) - 1,
        meta={"qID": qid},
        continuation=continuation,
    )


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """WinoGrande items from ``data`` (file path or ``"fixture"``) or the hub."""
    return [to_item(r, i, w) for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data, limit))]
