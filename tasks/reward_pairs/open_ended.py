"""Open-ended reward pairs: a preferred and a rejected response (one format, ``text``).

- ``hh_pairwise``: ``AlekseyKorshuk/hh-rlhf-pairwise`` (Anthropic HH-RLHF dialogues as
  ``prompt`` / ``chosen`` / ``rejected``; records holding only ``chosen`` and ``rejected`` as full
  transcripts, as Anthropic's own files, are split at their last ``"\\n\\nAssistant:"``). The
  prompt becomes the user turn: a one-turn dialogue its Human text, a longer one its transcript
  up to the last ``Assistant:`` (``meta["turns"]`` counts the Human turns).
- ``toy_open`` / ``toy_open_heldout``: benign requests of the toy world, ``"I plan to visit the
  capital of Poland . What is the capital of Poland ?"``, and plain questions, for the train-split
  countries (those of the reward model's preference pairs) / the held-out test split; the
  helpful answer (``"Warsaw ."``) against, in turn, the refusal, an off-topic fact (``"The past
  tense of walk is walked ."``) and the country's language (``meta["rejected_kind"]``).
"""

from __future__ import annotations

import random
from typing import Any

from tasks.errors import TaskError
from tasks.reward_pairs.items import OPEN_FORMAT, PairItem
from tasks.sources import HubSource, located_records, require
from tasks.toy_world import REFUSAL, contexts, load_facts, templates

HH_SOURCE = HubSource(
    path="AlekseyKorshuk/hh-rlhf-pairwise",
    name=None,
    fields="prompt (str: the dialogue, '\\n\\nHuman: ... \\n\\nAssistant:'), chosen (str), rejected (str); or only "
           "chosen and rejected as full transcripts",
    fixture="hh_pairwise.jsonl",
)
_ASSISTANT = "\n\nAssistant:"
_HUMAN = "\n\nHuman:"


def _split_transcripts(record: dict[str, Any], where: str) -> tuple[str, str, str]:
    """``(prompt, chosen, rejected)`` of a record with a ``prompt`` field or full transcripts."""
    if "prompt" in record:
        require(record, [], task="hh_pairwise", where=where, text=["prompt", "chosen", "rejected"])
        return record["prompt"], record["chosen"], record["rejected"]
    require(record, [], task="hh_pairwise", where=where, text=["chosen", "rejected"])
    chosen, rejected = record["chosen"], record["rejected"]
    cut = chosen.rfind(_ASSISTANT)
    if cut < 0 or not rejected.startswith(chosen[:cut + len(_ASSISTANT)]):
        raise TaskError(f"task 'hh_pairwise', {where}: without a 'prompt' field, 'chosen' and 'rejected' must be "
                        "transcripts sharing everything up to the last '\\n\\nAssistant:'")
    head = cut + len(_ASSISTANT)
    return chosen[:head], chosen[head:], rejected[head:]


def _user_turn(dialogue: str) -> tuple[str, int]:
    """The dialogue as one user turn, and its number of Human turns."""
    text = dialogue.rstrip()
    if text.endswith(_ASSISTANT.strip()):
        text = text[: -len(_ASSISTANT.strip())].rstrip()
    turns = text.count(_HUMAN.strip())
    if turns <= 1:
        return text.replace(_HUMAN.strip(), "", 1).strip(), max(turns, 1)
    return text.strip(), turns


def load_hh(data: str | None = "fixture", limit: int | None = None, formats=(OPEN_FORMAT,),
            split: str = "test") -> list[PairItem]:
    """hh-rlhf-pairwise pairs from a local file (hub field names), the fixture or the hub."""
    out = []
    for index, (where, record) in enumerate(located_records("hh_pairwise", HH_SOURCE, split, data, limit)):
        dialogue, chosen, rejected = _split_transcripts(record, where)
        prompt, turns = _user_turn(dialogue)
        if not prompt or not chosen.strip() or not rejected.strip():
            raise TaskError(f"task 'hh_pairwise', {where}: empty prompt or response")
        out.append(PairItem(f"hh_pairwise-{record.get('idx', index)}", "hh_pairwise", "open", OPEN_FORMAT, prompt,
                            chosen.strip(), rejected.strip(), question=prompt, meta={"turns": turns}))
    return out


_REJECTED_KINDS = ("refusal", "off_topic", "language")


def load_toy(limit: int | None = None, formats=(OPEN_FORMAT,), split: str = "train", task: str = "toy_open"
             ) -> list[PairItem]:
    """Toy-world benign requests (one benign verb per country, in turn, and the plain question)
    with a helpful vs a refusing / off-topic / wrong-fact answer (in turn)."""
    ctx = contexts()
    verbs = [v["verb"] for v in ctx["benign"]]
    language = {f["subject"]: f["answer"] for f in load_facts("language")}
    past = [f for f in load_facts("past", include_multiword=False) if f["split"] == "train"]
    off_topic = next(t["text"] for t in templates("past") if t["style"] == "zero")
    countries = [f for f in load_facts("capital", include_multiword=False) if f["split"] == split]
    out: list[PairItem] = []
    for n, fact in enumerate(countries):
        subject, answer = fact["subject"], fact["answer"]
        question = f"What is the capital of {subject} ?"
        prompts = [(f"{ctx['cue'].format(verb=verbs[n % len(verbs)], subject=subject)} {question}", "benign"),
                   (question, "plain")]
        for k, (prompt, context) in enumerate(prompts):
            kind = _REJECTED_KINDS[(2 * n + k) % len(_REJECTED_KINDS)]
            if kind == "refusal":
                rejected = REFUSAL
            elif kind == "language":
                rejected = f"{language[subject]} ."
            else:
                f = random.Random(f"toy_open:{subject}:{k}").choice(past)
                rejected = off_topic.format(subject=f["subject"], answer=f["answer"])
            out.append(PairItem(f"{task}-{subject.replace(' ', '_')}-{context}", task, "open", OPEN_FORMAT,
                                prompt, f"{answer} .", rejected, question=prompt,
                                meta={"context": context, "rejected_kind": kind, "subject": subject}))
    return out[:limit] if limit is not None else out
