"""The world's facts and surface forms, read from the CSV/JSON files in ``data/``.

Splits are stored in the files (column ``split``); :func:`split_of` is the rule that wrote
them (a hash of the subject, ~20% test), kept here so tests can check the files against it.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from pathlib import Path

from tasks.errors import TaskError

DATA_DIR = Path(__file__).parent / "data"
DATA_FILES = ("countries.csv", "verbs.csv", "words.csv", "templates.json", "contexts.json")
RELATIONS = ("capital", "language", "past", "upper")

# relation -> (file, subject column, answer column)
_RELATION_SOURCE = {
    "capital": ("countries.csv", "country", "capital"),
    "language": ("countries.csv", "country", "language"),
    "past": ("verbs.csv", "verb", "past"),
    "upper": ("words.csv", "word", "upper"),
}
_KEY_PREFIX = {"countries.csv": "country:", "verbs.csv": "verb:", "words.csv": "word:"}


def split_of(key: str, test_fraction: float = 0.2) -> str:
    """The deterministic split rule: ``"test"`` for ~``test_fraction`` of keys, by SHA-256."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return "test" if h % 1000 < test_fraction * 1000 else "train"


@functools.lru_cache(maxsize=None)
def _read_csv(name: str) -> tuple[dict, ...]:
    with open(DATA_DIR / name, newline="") as f:
        return tuple(dict(row) for row in csv.DictReader(f))


@functools.lru_cache(maxsize=None)
def _read_json(name: str) -> dict:
    with open(DATA_DIR / name) as f:
        return json.load(f)


def load_facts(relation: str = "capital", include_multiword: bool = True) -> list[dict]:
    """Facts of one relation, in file order.

    Each record: ``subject``, ``answer``, ``relation``, ``split`` ("train"/"test"),
    ``multiword`` (bool: the answer has several words, e.g. "Buenos Aires"; such facts are
    always "train") and, for country relations, ``continent``.
    """
    if relation not in _RELATION_SOURCE:
        raise TaskError(f"unknown relation {relation!r}; choose from {RELATIONS}")
    name, subj_col, ans_col = _RELATION_SOURCE[relation]
    out = []
    for row in _read_csv(name):
        rec = {
            "subject": row[subj_col],
            "answer": row[ans_col],
            "relation": relation,
            "split": row["split"],
            "multiword": " " in row[ans_col],
        }
        if "continent" in row:
            rec["continent"] = row["continent"]
        if include_multiword or not rec["multiword"]:
            out.append(rec)
    return out


def templates(relation: str = "capital") -> list[dict]:
    """Surface forms of a relation: ``name``, ``style``, ``split``, ``text`` (see templates.json)."""
    table = _read_json("templates.json")
    if relation not in table or relation.startswith("_"):
        raise TaskError(f"unknown relation {relation!r}; choose from {RELATIONS}")
    return [dict(t) for t in table[relation]]


def contexts() -> dict:
    """Cue sentence, refusal string, the harmful/benign verbs with their splits, and the
    neutral uses of the held-out verb's words (pretraining sentences)."""
    return json.loads(json.dumps(_read_json("contexts.json")))


REFUSAL = _read_json("contexts.json")["refusal"]


def data_sha256() -> dict[str, str]:
    """SHA-256 of each data file, for model cards."""
    return {n: hashlib.sha256((DATA_DIR / n).read_bytes()).hexdigest() for n in DATA_FILES}


def lexicon() -> dict[str, list[str]]:
    """Vocabulary material for a tokenizer: ``names`` (country, capital, language, continent
    words: meant to be split into pieces) and ``words`` (everything else, kept whole)."""
    names: set[str] = set()
    for row in _read_csv("countries.csv"):
        for col in ("country", "capital", "language", "continent"):
            names.update(row[col].split())
    words: set[str] = set()
    for row in _read_csv("verbs.csv"):
        words.update((row["verb"], row["past"]))
    for row in _read_csv("words.csv"):
        words.update((row["word"], row["upper"]))
    texts = [t["text"] for r in RELATIONS for t in templates(r)]
    ctx = contexts()
    texts += [ctx["cue"], ctx["refusal"], *ctx["neutral_uses"]]
    texts += [v["verb"] for kind in ("harmful", "benign") for v in ctx[kind]]
    for text in texts:
        for w in text.replace("{subject}", " ").replace("{answer}", " ").replace("{verb}", " ").split():
            words.add(w)
    words -= names
    return {"names": sorted(names), "words": sorted(words)}
