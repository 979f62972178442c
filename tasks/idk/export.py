"""The dataset as a file: JSONL records (:data:`tasks.idk.FIELDS`) and a datasheet (Gebru et
al. 2021: motivation, composition, collection, labels, uses, limits) beside it.

    python -m tasks.idk --export idk.jsonl                  # both variants, TriviaQA fixture
    python -m tasks.idk --export idk.jsonl --variant text --triviaqa tqa_validation.jsonl

writes ``idk.jsonl`` and ``idk.datasheet.md``; :func:`read` reads the JSONL back into items.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tasks.errors import TaskError
from tasks.idk import CATEGORIES, IDKItem
from tasks.sources import read_located


def write(items: Sequence[IDKItem], path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``items`` to ``path`` (JSONL) and the datasheet to ``<stem>.datasheet.md``."""
    path = Path(path)
    if path.suffix != ".jsonl":
        raise TaskError(f"export path must end in .jsonl, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(it.to_record(), ensure_ascii=False) + "\n" for it in items), encoding="utf-8")
    sheet = path.with_name(path.stem + ".datasheet.md")
    sheet.write_text(datasheet(items, path.name), encoding="utf-8")
    return path, sheet


def read(path: str | os.PathLike[str]) -> list[IDKItem]:
    """Items of an exported JSONL file; a malformed record raises TaskError naming its line."""
    items = [IDKItem.from_record(r, where) for where, r in read_located(path)]
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise TaskError(f"{path}: duplicate item ids {sorted({i for i in ids if ids.count(i) > 1})[:5]}")
    return items


def _counts(items: Sequence[IDKItem]) -> str:
    table = Counter((it.variant, it.why) for it in items)
    lines = ["| variant | why | answerable | items |", "| --- | --- | --- | --- |"]
    for (variant, why), n in sorted(table.items(), key=lambda kv: (kv[0][0], CATEGORIES.index(kv[0][1]))):
        lines.append(f"| {variant} | {why} | {'yes' if why == 'known' else 'no'} | {n} |")
    sources = Counter(it.source.split(":")[0] for it in items)
    lines.append("")
    lines.append("Sources: " + ", ".join(f"{s} {n}" for s, n in sorted(sources.items())) + ".")
    return "\n".join(lines)


def datasheet(items: Sequence[IDKItem], filename: str) -> str:
    """The datasheet of ``items`` (counts computed from them)."""
    return f"""# Datasheet: the "I don't know" questions (`{filename}`)

Following Gebru et al. (2021), *Datasheets for Datasets*.

## Motivation

Written for the rlinterp toolkit (issue 18, seeds section 4.4) to ask whether an RL-tuned model
abstains more, or more appropriately, than its base model: a model should say "I don't know"
when no direct answer can be right, and answer when one can. Each question is labelled with
whether it is answerable and, if not, why.

## Composition

{_counts(items)}

One JSON object per line: `id`, `variant`, `question`, `prompt` (the question framed for a model
without a chat template), `answerable`, `why`, `answers` (accepted forms of the right answer,
empty when unanswerable), `candidates` (direct answers to weigh against abstaining; an answerable
item's gold answer first, then distractors; for the others, plausible answers a model might
give), `abstentions` (abstention responses), `answer_format` (how a candidate is written as a
response), `source`, `meta`.

Categories (`why`):

- `known`: answerable. Hand-written general-knowledge questions and, when exported with a
  TriviaQA file, TriviaQA questions (Joshi et al. 2017; `source` `triviaqa:<question_id>`, its
  answer aliases as `answers`, other questions' answers as distractors); in the `toy` variant,
  the toy world's real countries (`meta.split`: the toy world's train / test split).
- `after_cutoff`: events of 2026-2028 (`meta.year`); unanswerable for a model whose training
  data end before that year. For newer models drop the items whose year they have seen.
- `fictional`: entities invented for this dataset (countries, books, elements, people); in the
  `toy` variant, invented country names the toy world lacks (`meta.kind`: `recombined`, two
  word pieces of real names, `Pol ##ania`; `spelled`, names that need single-letter pieces).
- `underspecified`: the question lacks what it refers to ("What time does the store close?").
- `polite_evasion`: the question asks to rank or judge the asker's relatives, friends or work;
  a direct answer would be rude, declining is the polite answer.

## Collection

Every `written` question was written by hand by one author (an AI assistant working on the
toolkit) in December 2026, 25 per category, with its candidates and accepted answers. Fictional
names were invented and are not known to name a real entity (not checked against every
source: a name may exist somewhere). The toy variant is generated from the toy world's data
(`tasks/toy_world`) and a hand-written list of 40 invented countries; candidates are toy-world
capitals drawn by a seeded generator. No personal data; the people named in polite-evasion
questions are invented.

## Labels

`answerable` and `why` were assigned by the author when writing each question; `answerable` is
true exactly for `why = known`. Gold answers of written `known` questions are standard general
knowledge; TriviaQA's come from TriviaQA. Not reviewed by a second annotator.

## Uses

Scoring a model's preference between a direct answer and an abstention (log-probabilities of
each candidate response and of the abstentions), its free generations mapped to answer or
abstain, and how well abstention tracks being wrong (`python -m studies.idk`). Not a measure of
knowledge: the candidates are a small closed set.

## Limits

Small (25 written questions per category): enough to compare two models on the same items with
paired tests, not to rank many models. English only. The after-cutoff items age: by the time
of use their events may be known. The abstention strings are fixed (`" I don't know."`; the toy
pair's refusal, the only abstention it knows), and a model may abstain in other words, which the
log-probability scores do not see (free generation maps several abstention phrases). "Polite"
is one author's judgement and culture-dependent. Candidates for unanswerable questions are the
author's guesses at what a model would say, not sampled from models.
"""
