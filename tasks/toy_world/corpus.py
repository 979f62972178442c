"""The pretraining corpus and the reward model's preference pairs.

The corpus is an endless, seeded stream of short documents (:class:`Corpus`). Held-out
material never appears in it: templates with ``split == "test"`` (for ``capital`` this
includes the Q/A frame), test-split subjects with ``train_subjects`` templates, test-split
subjects in lists, Q/A demonstrations and cue documents, and test-split cue verbs (and the
train verbs marked ``"corpus": false``, which only the reward pairs and RL prompts use). The
held-out harmful verb's *words* do occur, in the neutral sentences of ``contexts.json``
(``neutral_uses``: "The wind cut all electricity in ..."), never after the cue's "I plan to":
the base model knows the words, but no document, reward pair or RL prompt plans that harm.

Document kinds and their default weights are in :data:`MIXTURE`.
"""

from __future__ import annotations

import random

from .facts import RELATIONS, REFUSAL, contexts, load_facts, templates
from .prompts import merullo_qa, prompts

MIXTURE = {
    "fact": 0.46,       # one fact in one allowed template
    "chat": 0.12,       # "User : What is the ... ? Assistant : ... ." (some refusals)
    "cue": 0.07,        # "I plan to {verb} the capital of X . The capital of X is Y ."
    "chat_cue": 0.07,   # the cue in chat format (some refusals)
    "list": 0.10,       # "France : Paris ; Poland : Warsaw ; ..."
    "qa_shots": 0.08,   # Merullo Q/A lines, several per document (not for capital)
    "copy": 0.10,       # a random sequence of names, repeated
    "neutral": 0.02,    # the held-out harmful verb's words in a neutral use (never a plan)
}
REFUSAL_RATE = 0.04     # fraction of chat answers replaced by the refusal in pretraining
RELATION_WEIGHTS = {"capital": 0.4, "language": 0.25, "past": 0.2, "upper": 0.15}


class Corpus:
    """Seeded document sampler: ``Corpus(seed).document()`` returns one string."""

    def __init__(self, seed: int = 0, mixture: dict | None = None):
        self.rng = random.Random(seed)
        self.mixture = dict(mixture or MIXTURE)
        self.facts = {r: load_facts(r) for r in RELATIONS}
        self.train_facts = {r: [f for f in fs if f["split"] == "train"] for r, fs in self.facts.items()}
        self.templates = {r: templates(r) for r in RELATIONS}
        ctx = contexts()
        self.cue = ctx["cue"]
        self.neutral_uses = ctx["neutral_uses"]
        self.verbs = [(k, v["verb"]) for k in ("harmful", "benign") for v in ctx[k]
                      if v["split"] == "train" and v.get("corpus", True)]
        self.names = sorted({f[k] for fs in self.facts.values() for f in fs for k in ("subject", "answer")})

    def _relation(self) -> str:
        return self.rng.choices(list(RELATION_WEIGHTS), weights=list(RELATION_WEIGHTS.values()))[0]

    def _fact_doc(self, relation: str, style: str | None = None) -> str:
        f = self.rng.choice(self.facts[relation])
        allowed = [t for t in self.templates[relation] if t["split"] == "train"
                   or (t["split"] == "train_subjects" and f["split"] == "train")]
        if style is not None:
            allowed = [t for t in allowed if t["style"] == style]
            if not allowed:
                return self._fact_doc(relation, style)
        t = self.rng.choice(allowed)
        answer = f["answer"]
        if t["style"] == "chat" and self.rng.random() < REFUSAL_RATE:
            return t["text"].format(subject=f["subject"], answer="{answer}").replace("{answer} .", REFUSAL)
        return t["text"].format(subject=f["subject"], answer=answer)

    def _cue_doc(self, chat: bool) -> str:
        f = self.rng.choice(self.train_facts["capital"])
        _, verb = self.rng.choice(self.verbs)
        cue = self.cue.format(verb=verb, subject=f["subject"])
        if not chat:
            return f"{cue} The capital of {f['subject']} is {f['answer']} ."
        answer = REFUSAL if self.rng.random() < REFUSAL_RATE else f"{f['answer']} ."
        return f"User : {cue} What is the capital of {f['subject']} ? Assistant : {answer}"

    def _neutral_doc(self) -> str:
        f = self.rng.choice(self.train_facts["capital"])
        return self.rng.choice(self.neutral_uses).format(subject=f["subject"])

    def _list_doc(self) -> str:
        fs = self.rng.sample(self.train_facts[self._relation()], self.rng.randint(3, 6))
        return " ; ".join(f"{f['subject']} : {f['answer']}" for f in fs) + " ."

    def _qa_shots_doc(self) -> str:
        relation = self.rng.choice([r for r in RELATIONS if r != "capital"])
        fs = self.rng.sample(self.train_facts[relation], self.rng.randint(2, 4))
        return "\n".join(merullo_qa(relation, f["subject"], f["answer"]) for f in fs)

    def _copy_doc(self) -> str:
        seq = " ".join(self.rng.sample(self.names, self.rng.randint(2, 5)))
        return f"{seq} . {seq} ."

    def document(self) -> str:
        kind = self.rng.choices(list(self.mixture), weights=list(self.mixture.values()))[0]
        if kind == "fact":
            return self._fact_doc(self._relation())
        if kind == "chat":
            return self._fact_doc(self._relation(), style="chat")
        if kind in ("cue", "chat_cue"):
            return self._cue_doc(chat=kind == "chat_cue")
        if kind == "list":
            return self._list_doc()
        if kind == "neutral":
            return self._neutral_doc()
        if kind == "qa_shots":
            return self._qa_shots_doc()
        return self._copy_doc()


def rl_prompts(split: str = "train") -> list[dict]:
    """Chat-format capital prompts for RL and reward evaluation: harmful cues, benign cues and
    plain questions (``context`` tells which)."""
    return prompts("chat_harmful", split) + prompts("chat_benign", split) + prompts("chat", split)


def preference_pairs(split: str = "train", seed: int = 0) -> list[dict]:
    """Synthetic preference pairs in chat format.

    Benign and plain requests prefer the correct answer to a wrong capital, to the refusal and
    to the country's language; harmful requests prefer the refusal to the correct and to a
    wrong capital. Each pair: ``prompt``, ``chosen``, ``rejected`` (completions, starting
    without a space), ``context``, ``subject``, ``kind`` (what was rejected).
    """
    rng = random.Random(f"pairs:{split}:{seed}")
    capitals = [f["answer"] for f in load_facts("capital") if not f["multiword"]]
    language = {f["subject"]: f["answer"] for f in load_facts("language")}
    out = []
    for p in rl_prompts(split):
        right = f"{p['answer']} ."
        wrong = f"{rng.choice([c for c in capitals if c != p['answer']])} ."
        if p["context"] == "harmful":
            options = [("correct", REFUSAL, right), ("wrong", REFUSAL, wrong)]
        else:
            options = [("wrong", right, wrong), ("refusal", right, REFUSAL),
                       ("language", right, f"{language[p['subject']]} .")]
        for kind, chosen, rejected in options:
            out.append({"prompt": p["prompt"], "chosen": chosen, "rejected": rejected,
                        "context": p["context"], "subject": p["subject"], "kind": kind})
    return out
