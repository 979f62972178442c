"""CoQA (Reddy et al. 2019): conversational question answering by free generation, scored with
the official script's exact match and F1.

One item per question turn: the story, the conversation so far with its gold answers, and the
question, in lm-evaluation-harness's prompt, ``"{story}\\n\\nQ: {q1}\\n\\nA: {a1}\\n\\n...Q: {qi}\\n\\nA:"``
(the harness asks only each story's last turn; here every turn is an item). The model answers
greedily (:mod:`probes.generation`); the answer is its first line, stripped (the harness's
``process_results``). With a chat template the same dialogue is rendered as chat turns (the story
and the first question as the first user turn, each earlier gold answer an assistant turn:
:attr:`tasks.items.GenItem.messages`).

Scores (the official CoQA evaluation script, ``CoQAEvaluator``): answers are normalised by
:func:`normalize_answer` (lower case, punctuation removed, the articles a/an/the removed,
whitespace collapsed); ``exact`` is 1 when the normalised strings are equal; ``f1`` is the
harmonic mean of token precision and recall over the normalised words (1 when both are empty, 0
when only one is). A turn's gold answers are the main answer and every additional answer (the
three extra annotations of the dev set; duplicates kept, as the script keeps them): with one gold
the score is that gold's, with ``n > 1`` golds it is the mean over ``i`` of the best score against
the ``n - 1`` golds other than gold ``i`` (:func:`turn_scores`), so a prediction matching one of
four golds scores 0.75 exact, not 1.

Data: the official JSON files (``coqa-dev-v1.0.json``): ``{"version": ..., "data": [stories]}``,
each story ``id``, ``source``, ``story``, ``questions`` (``input_text``, ``turn_id``), ``answers``
(``input_text``, ``span_text``, ``span_start``, ``span_end``, ``turn_id``) and
``additional_answers`` (``{"0": [answers], "1": ..., "2": ...}``); the hub's EleutherAI/coqa (the
same fields, as columns: ``questions: {"input_text": [...], ...}``) and stanfordnlp/coqa
(``questions`` a list of strings, ``answers: {"input_text": [...]}``) are read too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tasks.benchmarks.triviaqa import normalize_answer  # SQuAD's normalisation, which CoQA's script uses unchanged
from tasks.errors import TaskError
from tasks.items import GenItem
from tasks.sources import HubSource, located_records, require

NAME = "coqa"
SOURCE = HubSource(
    path="EleutherAI/coqa",
    name=None,
    fields="id, source (optional), story (str), questions (list of {input_text, turn_id}, or columns "
           "{input_text: [...]}, or a list of strings), answers (the same shapes, input_text is the answer), "
           "additional_answers (optional: {key: answers in the same shape})",
    fixture="coqa.json",
)
STOP = ("\n\n", "\nQ:")


def get_tokens(text: str) -> list[str]:
    """The normalised words of ``text`` (none for an empty string)."""
    return normalize_answer(text).split() if text else []


def exact(gold: str, pred: str) -> int:
    """1 when the normalised strings are equal."""
    return int(normalize_answer(gold) == normalize_answer(pred))


def f1(gold: str, pred: str) -> float:
    """Token F1 of the normalised words; 1 when both are empty, 0 when one is."""
    gold_toks, pred_toks = get_tokens(gold), get_tokens(pred)
    if not gold_toks or not pred_toks:
        return float(gold_toks == pred_toks)
    same = sum((Counter(gold_toks) & Counter(pred_toks)).values())
    if not same:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def turn_scores(golds: Sequence[str], pred: str) -> tuple[float, float]:
    """``(exact, f1)`` of one turn, as the official script's ``_compute_turn_score`` (module doc)."""
    golds = list(golds)
    if not golds:
        raise TaskError("a CoQA turn needs at least one gold answer")
    if len(golds) == 1:
        return float(exact(golds[0], pred)), f1(golds[0], pred)
    rest = [golds[:i] + golds[i + 1:] for i in range(len(golds))]
    return (sum(max(exact(g, pred) for g in r) for r in rest) / len(golds),
            sum(max(f1(g, pred) for g in r) for r in rest) / len(golds))


def answer_of(generation: str) -> str:
    """The answer in a generation: its first line, stripped (lm-evaluation-harness)."""
    return generation.strip().split("\n")[0]


def _texts(value: Any, name: str, where: str) -> list[str]:
    """``input_text`` of each turn, whichever of the three shapes (module doc) ``value`` has."""
    if isinstance(value, dict) and isinstance(value.get("input_text"), list):
        value = value["input_text"]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        if not all(isinstance(v.get("input_text"), str) for v in value):
            raise TaskError(f"task {NAME!r}, {where}: every entry of {name!r} needs an 'input_text' string")
        value = [v["input_text"] for v in value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TaskError(f"task {NAME!r}, {where}: {name!r} must be a list of turns with 'input_text' (or of strings), "
                        f"got {value!r:.60}")
    return value


def _golds(record: dict[str, Any], n: int, where: str) -> list[list[str]]:
    answers = _texts(record["answers"], "answers", where)
    extra = record.get("additional_answers") or {}
    if not isinstance(extra, dict):
        raise TaskError(f"task {NAME!r}, {where}: 'additional_answers' must be an object of answer lists, got {extra!r:.60}")
    sets = [answers] + [_texts(v, f"additional_answers[{k!r}]", where) for k, v in extra.items()]
    if any(len(s) != n for s in sets):
        raise TaskError(f"task {NAME!r}, {where}: {n} questions but answer lists of lengths {[len(s) for s in sets]}")
    return [[s[t] for s in sets] for t in range(n)]


def story_items(record: dict[str, Any], index: int, where: str | None = None) -> list[GenItem]:
    """One item per question of a story (module doc)."""
    where = where or f"record {index}"
    require(record, ["questions", "answers"], task=NAME, where=where, text=["story"])
    questions = _texts(record["questions"], "questions", where)
    golds = _golds(record, len(questions), where)
    story, sid = record["story"].strip(), record.get("id", index)
    items = []
    for t, question in enumerate(questions):
        history = [(q.strip(), gold[0].strip()) for q, gold in zip(questions[:t], golds[:t])]
        context = f"{story}\n\n" + "".join(f"Q: {q}\n\nA: {a}\n\n" for q, a in history) + f"Q: {question.strip()}\n\nA:"
        messages = []
        for j, (q, a) in enumerate(history):
            messages += [{"role": "user", "content": (f"{story}\n\n" if j == 0 else "") + q},
                         {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": ("" if history else f"{story}\n\n") + question.strip()})
        items.append(GenItem(id=f"{NAME}-{sid}-{t + 1}", task=NAME, context=context, answers=golds[t],
                             category=record.get("source"), meta={"story_id": sid, "turn_id": t + 1},
                             messages=messages))
    return items


def load(split: str = "validation", data: str | None = None, limit: int | None = None) -> list[GenItem]:
    """CoQA turns from ``data`` (file path or ``"fixture"``) or the hub; ``limit`` counts turns."""
    items = [it for i, (w, r) in enumerate(located_records(NAME, SOURCE, split, data)) for it in story_items(r, i, w)]
    return items[:limit] if limit is not None else items
