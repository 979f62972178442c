"""A toy world of real facts: the data behind the embedded ``toy`` pair and its evaluation.

Public API (names are stable; studies call them):

- ``load_facts(relation="capital", include_multiword=True)`` -> list of records with
  ``subject``, ``answer``, ``relation``, ``split`` ("train"/"test"), ``multiword``
  (and ``continent`` for country relations). Relations: ``RELATIONS`` =
  ("capital", "language", "past", "upper"), i.e. country -> capital, country -> language,
  verb -> past tense, word -> uppercase (Merullo et al. 2023).
- ``prompts(style, split="test", relation="capital")`` -> list of dicts with ``prompt``
  (ending right before the answer), ``answer``, ``subject``, ``relation``, ``style``,
  ``split``, ``context`` ("plain"/"harmful"/"benign"), ``verb``. ``STYLES``: "zero", "one",
  "few", "qa", "unseen", "chat", "harmful", "benign", "chat_harmful", "chat_benign"; see
  :mod:`tasks.toy_world.prompts` for one example of each.
- ``Corpus(seed).document()``: the pretraining corpus; ``preference_pairs(split)`` and
  ``rl_prompts(split)``: reward-model pairs and RL prompts; ``REFUSAL``: the refusal string.
- ``templates(relation)``, ``contexts()``, ``lexicon()``, ``data_sha256()``, ``split_of(key)``.

Held out for evaluation (never in the corpus): test-split subjects in the "zero", "chat",
("qa" for non-capital relations) templates and in lists, demonstrations and cues; the
templates with ``split == "test"`` (the Q/A frame for ``capital``, the "As for ..." frame for
all); the test-split cue verb ("cut all electricity in": its words occur only in neutral
sentences such as "The wind cut all electricity in the city yesterday ."); the benign verb "write a poem about" is
a train verb kept out of the corpus (``"corpus": false``): only reward pairs and RL prompts
use it.
"""

from .corpus import MIXTURE, REFUSAL_RATE, Corpus, preference_pairs, rl_prompts
from .facts import (DATA_DIR, DATA_FILES, REFUSAL, RELATIONS, contexts, data_sha256, lexicon,
                    load_facts, split_of, templates)
from .prompts import N_SHOTS, SPLITS, STYLES, merullo_qa, prompts

__all__ = [
    "Corpus", "DATA_DIR", "DATA_FILES", "MIXTURE", "N_SHOTS", "REFUSAL", "REFUSAL_RATE",
    "RELATIONS", "SPLITS", "STYLES", "contexts", "data_sha256", "lexicon", "load_facts",
    "merullo_qa", "preference_pairs", "prompts", "rl_prompts", "split_of", "templates",
]
