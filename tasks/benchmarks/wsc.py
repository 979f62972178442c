"""SuperGLUE WSC (the Winograd Schema Challenge, ``wsc.fixed``): which noun phrase a pronoun
refers to, scored partially, as lm-evaluation-harness scores WSC273 (Trinh & Le 2018).

SuperGLUE gives one record per (candidate, pronoun): ``text``, the candidate ``span1_text`` at
word ``span1_index``, the pronoun ``span2_text`` at word ``span2_index`` (words are the text
split on spaces) and ``label`` (the pronoun refers to the candidate). Records of the same text
and pronoun are one item: each candidate replaces the pronoun, the text up to and with the
candidate is read, and only the rest of the text after the pronoun (shared by every candidate)
is scored; the candidate of the record labelled true is the answer. Options are in the order
the candidates appear in the text (``span1_index``). A pronoun whose loaded
records name fewer than two candidates, or not exactly one correct one, makes no item; the
loader says how many records that leaves unused (``load`` prints it to stderr).

The substituted candidate gets a capital first letter where the pronoun had one at the text's
or a sentence's start, a lower-case article (``the``, ``a``, ``an``) elsewhere, and ``'s`` where
the pronoun is possessive (``his``, ``its``, ``their``; ``her`` is read as an object).
"""

from __future__ import annotations

import sys
from typing import Any

from tasks.errors import TaskError
from tasks.items import MCItem
from tasks.sources import HubSource, located_records, parse_label, require

NAME = "wsc"
SOURCE = HubSource(
    path="aps/super_glue",
    name="wsc.fixed",
    fields="text (str), span1_index (int, word index of the candidate), span1_text (str), span2_index (int, "
           "word index of the pronoun), span2_text (str), label (1/true: the pronoun refers to the candidate), "
           "idx (optional); words are the text split on spaces. The official SuperGLUE WSC.zip files nest the "
           "four span fields in 'target' (read as well)",
    fixture="wsc.jsonl",
)
POSSESSIVE = {"his", "its", "their"}
ARTICLES = {"the", "a", "an"}


def _pronoun_offset(record: dict[str, Any], where: str) -> int:
    words = record["text"].split(" ")
    index = record["span2_index"]
    if not 0 <= index < len(words):
        raise TaskError(f"task {NAME!r}, {where}: span2_index must be a word index in 0..{len(words) - 1}, got {index!r}")
    offset = sum(len(w) + 1 for w in words[:index])
    if not record["text"][offset:].lower().startswith(record["span2_text"].lower()):
        raise TaskError(f"task {NAME!r}, {where}: word {index} of the text is {words[index]!r}, not the pronoun "
                        f"span2_text {record['span2_text']!r}")
    return offset


def substitute(candidate: str, pronoun: str, before: str) -> str:
    """``candidate`` written where ``pronoun`` stood, after the text ``before`` (module doc)."""
    candidate = candidate.strip()
    starts_sentence = not before.strip() or before.rstrip()[-1] in ".!?"
    first, _, rest = candidate.partition(" ")
    if starts_sentence and pronoun[:1].isupper():
        candidate = candidate[:1].upper() + candidate[1:]
    elif first.lower() in ARTICLES:
        candidate = first.lower() + (" " + rest if rest else "")
    if pronoun.lower() in POSSESSIVE:
        candidate += "'s"
    return candidate


def items_from_records(located: list[tuple[str, dict[str, Any]]]) -> tuple[list[MCItem], int]:
    """The items of ``(where, record)`` pairs (module doc) and the number of records that made none."""
    groups: dict[tuple[str, int], list[tuple[str, dict[str, Any]]]] = {}
    for where, record in located:
        if isinstance(record.get("target"), dict):  # the official SuperGLUE files nest the spans
            record = {**record, **record["target"]}
        require(record, ["span1_index", "span2_index", "label"], task=NAME, where=where,
                text=["text", "span1_text", "span2_text"])
        for field in ("span1_index", "span2_index"):
            if not isinstance(record[field], int) or isinstance(record[field], bool):
                raise TaskError(f"task {NAME!r}, {where}: {field} must be a word index (int), got {record[field]!r}")
        groups.setdefault((record["text"], record["span2_index"]), []).append((where, record))
    items, unused = [], 0
    for (text, _), members in groups.items():
        candidates: dict[str, bool] = {}  # in the order of the text
        for where, record in sorted(members, key=lambda m: m[1]["span1_index"]):
            true = parse_label(record["label"], ["False", "True"], task=NAME, where=where) == 1
            key = record["span1_text"].strip()
            candidates[key] = candidates.get(key, False) or true
        if len(candidates) < 2 or sum(candidates.values()) != 1:
            unused += len(members)
            continue
        where, first = members[0]
        offset = _pronoun_offset(first, where)
        pronoun = text[offset:offset + len(first["span2_text"])]
        before, after = text[:offset], text[offset + len(pronoun):].rstrip()
        if not after.strip():
            unused += len(members)
            continue
        context = before.rstrip()
        sep = before[len(context):]
        names = list(candidates)
        label = [candidates[n] for n in names].index(True)
        answer_record = next(r for _, r in members if r["span1_text"].strip() == names[label])
        items.append(MCItem(
            id=f"{NAME}-{answer_record.get('idx', len(items))}",
            task=NAME,
            context=context,
            options=[sep + substitute(n, pronoun, before) for n in names],
            label=label,
            meta={"pronoun": pronoun, "candidates": names,
                  "idx": [r.get("idx") for _, r in members]},
            continuation=after,
        ))
    return items, unused


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[MCItem]:
    """WSC items from ``data`` (file path or ``"fixture"``) or the hub; ``limit`` counts items."""
    located = located_records(NAME, SOURCE, split, data)
    items, unused = items_from_records(located)
    if unused:
        print(f"note: task {NAME!r}: {unused} of {len(located)} records make no item (their pronoun has fewer than "
              "two candidates, or not exactly one correct one, among the loaded records)", file=sys.stderr)
    return items[:limit] if limit is not None else items
