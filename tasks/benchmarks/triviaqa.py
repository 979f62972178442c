"""TriviaQA in two closed formats: multiple choice, and Kadavath et al.'s P(True).

TriviaQA is open-ended; both formats here turn it into a choice among continuations.

- ``triviaqa_mc`` (:func:`load`): ``"Question: {question}\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\n
  Answer:"`` with options ``" A"`` ... ``" D"``.  The distractors are other questions'
  answers (``answer.value``), drawn by a generator seeded with ``(seed, question_id)``, never
  equal to an alias of the gold answer after normalisation; the gold position is random too.
- ``triviaqa_ptrue`` (:func:`load_ptrue`): Kadavath et al. (2022)'s self-evaluation prompt,
  ``"Question: {question}\\nProposed Answer: {proposal}\\nIs the proposed answer:\\n (A) True\\n
  (B) False\\nThe proposed answer is:"`` with options ``" (A)"`` / ``" (B)"``; label 0 when the
  proposal matches a gold alias.  Proposals are the model's own samples when given
  (``proposals={question_id: [answers]}``), else one per question: the gold answer or another
  question's answer, by a seeded coin.  P(True) is then ``p(" (A)")`` renormalised over the
  two options.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from tasks.errors import TaskError
from tasks.items import MCItem
from tasks.sources import HubSource, located_records, require

NAME_MC = "triviaqa_mc"
NAME_PTRUE = "triviaqa_ptrue"
LETTERS = "ABCDEFGHIJ"
PTRUE_OPTIONS = [" (A)", " (B)"]
SOURCE = HubSource(
    path="mandarjoshi/trivia_qa",
    name="rc.nocontext",
    fields="question (str), question_id (str), answer (object with value (str) and aliases (list of str); a plain string is read as the value)",
    fixture="triviaqa.jsonl",
)


def normalize_answer(text: str) -> str:
    """SQuAD/TriviaQA normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _answer(record: dict[str, Any], where: str, task: str) -> tuple[str, list[str]]:
    require(record, ["answer"], task=task, where=where, text=["question"])
    answer = record["answer"]
    if isinstance(answer, str):
        value, aliases = answer, record.get("aliases", [])
    elif isinstance(answer, dict) and isinstance(answer.get("value"), str):
        value, aliases = answer["value"], answer.get("aliases", [])
    else:
        raise TaskError(f"task {task!r}, {where}: field 'answer' must be a string or an object with a string "
                        f"'value' (and 'aliases', a list of strings), got {answer!r:.60}")
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise TaskError(f"task {task!r}, {where}: 'aliases' must be a list of strings, got {aliases!r:.60}")
    return value, [value, *aliases]


def _qid(record: dict[str, Any], index: int) -> str:
    return str(record.get("question_id", index))


def is_correct(proposal: str, aliases: Sequence[str]) -> bool:
    """True if ``proposal`` equals one of ``aliases`` after :func:`normalize_answer`."""
    return normalize_answer(proposal) in {normalize_answer(a) for a in aliases}


def _distractors(pool: Sequence[str], aliases: Sequence[str], n: int, rng: random.Random) -> list[str]:
    gold = {normalize_answer(a) for a in aliases}
    seen: set[str] = set()
    candidates = []
    for value in pool:
        key = normalize_answer(value)
        if key and key not in gold and key not in seen:
            seen.add(key)
            candidates.append(value)
    if len(candidates) < n:
        raise TaskError(f"need {n} distractor answers, the pool has only {len(candidates)} distinct ones")
    return rng.sample(candidates, n)


def ptrue_prompt(question: str, proposal: str) -> str:
    """Kadavath et al.'s P(True) prompt for one proposed answer (ends before the option)."""
    return (
        f"Question: {question.strip()}\nProposed Answer: {proposal.strip()}\n"
        "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:"
    )


def load(
    split: str = "validation",
    data: str | None = None,
    limit: int | None = None,
    n_options: int = 4,
    seed: int = 0,
) -> list[MCItem]:
    """TriviaQA as ``n_options``-way multiple choice (distractors from the whole loaded set)."""
    if not 2 <= n_options <= len(LETTERS):
        raise TaskError(f"n_options must be in 2..{len(LETTERS)}, got {n_options}")
    located = located_records(NAME_MC, SOURCE, split, data)
    records = [r for _, r in located]
    answers = [_answer(r, where, NAME_MC) for where, r in located]
    pool = [value for value, _ in answers]
    items = []
    for i, (record, (value, aliases)) in enumerate(zip(records, answers)):
        qid = _qid(record, i)
        rng = random.Random(f"{seed}:{qid}")
        choices = _distractors(pool, aliases, n_options - 1, rng)
        label = rng.randrange(n_options)
        choices.insert(label, value)
        letters = LETTERS[:n_options]
        body = "".join(f"{x}. {c.strip()}\n" for x, c in zip(letters, choices))
        items.append(
            MCItem(
                id=f"{NAME_MC}-{qid}",
                task=NAME_MC,
                context=f"Question: {record['question'].strip()}\n{body}Answer:",
                options=[f" {x}" for x in letters],
                label=label,
                meta={"question_id": qid, "choices": choices, "aliases": aliases},
            )
        )
        if limit is not None and len(items) >= limit:
            break
    return items


def load_ptrue(
    split: str = "validation",
    data: str | None = None,
    limit: int | None = None,
    proposals: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> list[MCItem]:
    """TriviaQA in Kadavath et al.'s P(True) format (see the module docstring).

    With ``proposals``, every question id in it gets one item per proposal and questions
    without proposals are skipped; ``meta["proposal"]`` and ``meta["proposal_index"]`` say
    which answer an item evaluates.
    """
    located = located_records(NAME_PTRUE, SOURCE, split, data)
    records = [r for _, r in located]
    answers = [_answer(r, where, NAME_PTRUE) for where, r in located]
    pool = [value for value, _ in answers]
    items = []
    for i, (record, (value, aliases)) in enumerate(zip(records, answers)):
        qid = _qid(record, i)
        if proposals is not None:
            props = list(proposals.get(qid, []))
        else:
            rng = random.Random(f"{seed}:{qid}")
            props = [value if rng.random() < 0.5 else _distractors(pool, aliases, 1, rng)[0]]
        for j, proposal in enumerate(props):
            items.append(
                MCItem(
                    id=f"{NAME_PTRUE}-{qid}-{j}",
                    task=NAME_PTRUE,
                    context=ptrue_prompt(record["question"], proposal),
                    options=list(PTRUE_OPTIONS),
                    label=0 if is_correct(proposal, aliases) else 1,
                    meta={"question_id": qid, "proposal": proposal, "proposal_index": j, "aliases": aliases},
                )
            )
        if limit is not None and len(items) >= limit:
            return items[:limit]
    return items
