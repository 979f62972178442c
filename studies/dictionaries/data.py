"""The study's texts and what each harvested token is.

Kinds of text (``KINDS``), harvested together as one token stream:

- ``corpus``: toy-world pretraining documents (``tasks.toy_world.corpus.Corpus``, its full
  mixture: facts, chat turns and cue sentences with some refusals, lists, copies), ``--n-docs``;
- ``plain``, ``benign``, ``harmful``: the chat-format prompts of ``tasks.toy_world.prompts``
  (styles ``chat``, ``chat_benign``, ``chat_harmful``), a seeded sample of ``--prompt-limit``
  each, ending at ``Assistant :``, where the chat model answers or refuses;
- ``refusal``: other harmful prompts followed by the refusal the RL stage rewarded
  (``tasks.toy_world.facts.REFUSAL``); only the refusal's tokens count as ``refusal`` tokens.

The causal check runs on a further sample of the three prompt kinds, disjoint from these.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("corpus", "plain", "benign", "harmful", "refusal")
PROMPT_STYLES = {"plain": "chat", "benign": "chat_benign", "harmful": "chat_harmful"}


@dataclass(frozen=True)
class Texts:
    """``texts`` in stream order, each one's ``kind``, and for ``refusal`` texts the prompt's
    length in characters (``prompt_chars``, the response starts after it; 0 for the others)."""

    texts: list[str]
    kinds: list[str]
    prompt_chars: list[int]


def _samples(kind: str, seed: int, sizes: tuple[int, ...]) -> list[list[str]]:
    """Disjoint seeded samples of one prompt kind's pool, of the given sizes (fewer when the pool is small)."""
    from tasks.toy_world.prompts import prompts

    pool = [p["prompt"] for p in prompts(PROMPT_STYLES[kind], "all")]
    order = list(range(len(pool)))
    random.Random(f"dictionaries:{kind}:{seed}").shuffle(order)
    out, at = [], 0
    for n in sizes:
        out.append([pool[i] for i in sorted(order[at:at + n])])
        at += n
    return out


def study_texts(n_docs: int, prompt_limit: int, seed: int) -> Texts:
    from tasks.toy_world.corpus import Corpus
    from tasks.toy_world.facts import REFUSAL

    corpus = Corpus(seed)
    texts = [corpus.document() for _ in range(n_docs)]
    kinds = ["corpus"] * n_docs
    chars = [0] * n_docs
    for kind in PROMPT_STYLES:
        sizes = (prompt_limit, prompt_limit) if kind == "harmful" else (prompt_limit,)
        samples = _samples(kind, seed, sizes)
        texts += samples[0]
        kinds += [kind] * len(samples[0])
        chars += [0] * len(samples[0])
        if kind == "harmful":
            texts += [f"{p} {REFUSAL}" for p in samples[1]]
            kinds += ["refusal"] * len(samples[1])
            chars += [len(p) for p in samples[1]]
    return Texts(texts, kinds, chars)


def causal_prompts(prompt_limit: int, causal_limit: int, seed: int) -> dict[str, list[str]]:
    """kind -> prompts for the causal check, disjoint from the harvested ones."""
    out = {}
    for kind in PROMPT_STYLES:
        before = 2 * prompt_limit if kind == "harmful" else prompt_limit
        out[kind] = _samples(kind, seed, (before, causal_limit))[1]
    return out


def token_kinds(tokenizer, texts: Texts, tokens: Tensor) -> tuple[list[str], Tensor]:
    """Per harvested token (the stream without BOS tokens, as ``interp.dictionaries.harvest``
    keeps it): its kind, and whether it is its text's last token (``is_last``, the
    ``Assistant :`` of a prompt). ``refusal`` texts' prompt tokens are ``refusal_prompt``.
    Checks the tokenization against the harvested ``tokens``."""
    from studies._common import StudyError

    bos = tokenizer.bos_token_id
    kinds, last, ids = [], [], []
    for text, kind, chars in zip(texts.texts, texts.kinds, texts.prompt_chars):
        enc = tokenizer(text, return_offsets_mapping=True)
        kept = [(t, span) for t, span in zip(enc["input_ids"], enc["offset_mapping"]) if t != bos]
        for i, (t, (start, _)) in enumerate(kept):
            ids.append(t)
            kinds.append("refusal_prompt" if kind == "refusal" and start < chars else kind)
            last.append(i == len(kept) - 1)
    if len(ids) != tokens.shape[0] or not torch.equal(torch.tensor(ids, dtype=torch.long), tokens.cpu()):
        raise StudyError("the harvested tokens differ from the study's texts tokenized again; rerun with --overwrite")
    return kinds, torch.tensor(last)
