"""The study's items: facts (country -> capital), conditions (prompt style, context, chat
template), the prompts built from them, and the answer's first token."""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STYLES = ("zero", "one", "few")
N_SHOTS = {"zero": 0, "one": 1, "few": 3}
CONTEXTS = ("plain", "harmful", "benign")
CONTEXT_ALIASES = {"forbidden": ("harmful", "benign")}
SPLITS = ("test", "train", "all")


# -- facts and items ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    """One country -> capital fact. ``id`` keys result rows (the subject unless given)."""

    subject: str
    answer: str
    split: str = "test"
    id: str = ""


@dataclass(frozen=True)
class Condition:
    style: str
    context: str
    chat_template: bool

    @property
    def label(self) -> str:
        return f"{self.style}/{self.context}/{'chat' if self.chat_template else 'raw'}"


@dataclass(frozen=True)
class Item:
    condition: Condition
    fact: Fact
    prompt: str
    verb: str | None
    is_source: bool = False


def toy_facts() -> list[Fact]:
    from tasks.toy_world import load_facts

    return [Fact(f["subject"], f["answer"], f["split"], f["subject"]) for f in load_facts(relation="capital")]


def read_facts_file(path: str | os.PathLike[str]) -> list[Fact]:
    """Facts from a CSV (header row) or JSONL file with fields ``subject``, ``answer`` and
    optionally ``split`` and ``id``. Raises StudyError with the reason on a bad file."""
    from studies._common import StudyError

    path = Path(path)
    if not path.is_file():
        raise StudyError(f"--facts: no file at {str(path)!r}")
    records: list[dict] = []
    lines: list[int] = []  # each record's line in the file, for error messages
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise StudyError(f"--facts {path}:{number} is not valid JSON ({err.msg})") from None
                    if not isinstance(rec, dict):
                        raise StudyError(f"--facts {path}:{number} is not a JSON object")
                    records.append(rec)
                    lines.append(number)
        else:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in ("subject", "answer") if c not in (reader.fieldnames or [])]
                if missing:
                    raise StudyError(f"--facts {path}: missing column(s) {missing}; found {reader.fieldnames}; "
                                     "a CSV needs a header row with subject,answer[,split,id]")
                for rec in reader:
                    records.append(rec)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as err:
        raise StudyError(f"--facts {path}: not UTF-8 text ({err.reason})") from None
    if not records:
        raise StudyError(f"--facts {path}: no facts in the file (it is empty)")
    facts = []
    for index, (number, rec) in enumerate(zip(lines, records), 1):
        odd = [k for k in ("subject", "answer", "split", "id") if rec.get(k) is not None and not isinstance(rec[k], str)]
        if odd:  # str() would turn 5 or ["Paris"] into a "fact" silently
            raise StudyError(f"--facts {path}:{number}: record {index}: field {odd[0]!r} must be a string, "
                             f"got {type(rec[odd[0]]).__name__} {rec[odd[0]]!r:.60}")
        subject, answer = (rec.get("subject") or "").strip(), (rec.get("answer") or "").strip()
        if not subject or not answer:
            raise StudyError(f"--facts {path}:{number}: record {index} needs a non-empty subject and answer, got {rec}")
        split = str(rec.get("split") or "test").strip()
        facts.append(Fact(subject, answer, split, str(rec.get("id") or subject)))
    ids = [f.id for f in facts]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise StudyError(f"--facts {path}: duplicate ids/subjects {dup}; give an 'id' column")
    return facts


def select_facts(facts: list[Fact], split: str, limit: int | None, n_source: int) -> tuple[list[Fact], list[Fact]]:
    """(items, transplant sources). Items: facts of ``split`` (all if no fact has it), cut to
    ``limit``. Sources: the first ``n_source`` train facts, else the first items."""
    from studies._common import StudyError

    chosen = [f for f in facts if split == "all" or f.split == split] or facts
    if limit is not None:
        chosen = chosen[:limit]
    if not chosen:
        raise StudyError("no items to run (check --limit and --split)")
    train = [f for f in facts if f.split == "train" and " " not in f.answer]
    sources = (train or chosen)[:n_source]
    return chosen, sources


# -- prompts --------------------------------------------------------------------------------------
def question(subject: str) -> str:
    return f"What is the capital of {subject}?"


def qa_line(subject: str, answer: str | None = None) -> str:
    """Merullo et al.'s format, ``Q: What is the capital of Poland? A:`` (+ `` answer``)."""
    line = f"Q: {question(subject)} A:"
    return line if answer is None else f"{line} {answer}"


def demonstrations(fact: Fact, pool: Sequence[Fact], style: str, seed: int = 0) -> list[Fact]:
    """The style's demonstrations for ``fact``: the toy world's rule (seed 0 reproduces
    ``tasks.toy_world.prompts`` exactly), other seeds draw other demonstrations."""
    n = N_SHOTS[style]
    if n == 0:
        return []
    rng = random.Random(f"{style}:capital:{fact.subject}" if seed == 0 else f"{seed}:{style}:capital:{fact.subject}")
    candidates = [d for d in pool if d.subject != fact.subject]
    return rng.sample(candidates, min(n, len(candidates)))


def cue_verbs(context: str) -> list[str]:
    """The toy world's harmful / benign cue verbs (plain English, used for any facts)."""
    from tasks.toy_world import contexts

    return [v["verb"] for v in contexts()[context]]


def cue(verb: str, subject: str) -> str:
    from tasks.toy_world import contexts

    return contexts()["cue"].format(verb=verb, subject=subject)


def build_prompt(cond: Condition, fact: Fact, demos: Sequence[Fact], verb: str | None, template_tokenizer=None) -> str:
    """The prompt text, ending right before the answer (no trailing space).

    Raw text: zero-shot ``The capital of X is``; one/few-shot Q/A lines; a cue sentence goes
    right before the final question. Chat template: demonstrations become earlier user /
    assistant turns, the (cued) question the last user turn, with the generation prompt.
    """
    lead = f"{cue(verb, fact.subject)} " if verb else ""
    if cond.chat_template:
        messages = []
        for d in demos:
            messages += [{"role": "user", "content": question(d.subject)}, {"role": "assistant", "content": d.answer}]
        messages.append({"role": "user", "content": lead + question(fact.subject)})
        text = template_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = template_tokenizer.bos_token
        if bos and text.startswith(bos) and _adds_bos(template_tokenizer):
            text = text[len(bos):]  # the tokenizer adds it again
        return text.rstrip()
    if cond.style == "zero":
        return f"{lead}The capital of {fact.subject} is"
    lines = [qa_line(d.subject, d.answer) for d in demos] + [lead + qa_line(fact.subject)]
    return "\n".join(lines)


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def make_items(conditions: Sequence[Condition], items: list[Fact], sources: list[Fact], pool: list[Fact],
               template_tokenizer, seed: int) -> dict[Condition, tuple[list[Item], list[Item]]]:
    """condition -> (items, source items). Cued items get verb ``i % n_verbs`` of the context."""
    source_ids = {f.id for f in sources}
    out = {}
    for cond in conditions:
        verbs = cue_verbs(cond.context) if cond.context != "plain" else None

        def item(i: int, fact: Fact, is_source: bool = False) -> Item:
            verb = verbs[i % len(verbs)] if verbs else None
            prompt = build_prompt(cond, fact, demonstrations(fact, pool, cond.style, seed), verb, template_tokenizer)
            return Item(cond, fact, prompt, verb, is_source)

        out[cond] = ([item(i, f, f.id in source_ids) for i, f in enumerate(items)],
                     [item(i, f) for i, f in enumerate(sources)])
    return out


# -- tokens ---------------------------------------------------------------------------------------
def continuation_tokens(tokenizer, prompt: str, continuation: str) -> list[int]:
    """Token ids of ``" " + continuation`` after ``prompt``: the tokens of ``prompt + " " +
    continuation`` past the longest common prefix with the prompt's tokens."""
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + " " + continuation)["input_ids"]
    n = 0
    while n < min(len(p), len(full)) and p[n] == full[n]:
        n += 1
    rest = full[n:]
    eos = tokenizer.eos_token_id
    return [t for t in rest if t != eos] or full[-1:]


