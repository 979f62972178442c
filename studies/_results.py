"""Resumable results: one JSONL file of rows per run (or shard), appended batch by batch and
read back merged.

- ``results.jsonl``: one JSON object per line and per unit of work (an item under one
  condition), appended and flushed batch by batch by :class:`ResultsLog`. Every row carries
  *key fields* (e.g. model, prompt style, item id); a restarted run skips the keys already
  written, so an interrupted run resumes and loses nothing (which chunks it recomputes:
  :mod:`studies._shards`). A line cut short by a crash is dropped (and the file repaired) on
  the next start. When a key was written twice, the last row wins.
- ``summary.csv``, figures: computed from the rows alone (:func:`read_results`, every
  ``results*.jsonl`` of the folder, shards merged), so a resumed run gives the same summary as
  an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from studies._common import StudyError

Key = tuple


# -- JSON -----------------------------------------------------------------------------------------
def jsonable(obj):
    """Convert numpy / torch scalars and arrays, tuples and paths to plain JSON values; NaN -> None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch arrays and scalars
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def row_key(row: dict, key_fields: Sequence[str]) -> Key:
    try:
        return tuple(row[f] for f in key_fields)
    except KeyError as err:
        raise StudyError(f"a results row lacks the key field {err.args[0]!r}; key fields: {list(key_fields)}") from None


def _read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Rows of a JSONL file. A last line cut short by a crash is dropped (and cut off the file
    if ``repair``); a malformed line elsewhere raises StudyError naming it."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            is_last = number == len(lines) or all(not rest.strip() for rest in lines[number:])
            if not is_last:
                raise StudyError(f"{path}:{number} is not valid JSON; fix or delete that line") from None
            if repair:  # cut the file back to the end of the last complete line
                with open(path, "r+b") as f:
                    f.truncate(data.rstrip().rfind(b"\n") + 1)
    return rows


class ResultsLog:
    """An append-only JSONL file of result rows, keyed by ``key_fields``.

    Opening it reads the rows already there (dropping a truncated last line), so
    ``done(key)`` tells what a previous, interrupted run finished. ``write(rows)`` appends a
    batch and flushes it to disk before returning.
    """

    def __init__(self, path: str | os.PathLike[str], key_fields: Sequence[str]):
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._done: set[Key] = {row_key(r, self.key_fields) for r in _read_jsonl(self.path, repair=True)}
        self.n_resumed = len(self._done)
        self.n_written = 0

    def done(self, key: Key) -> bool:
        return tuple(key) in self._done

    def write(self, rows: Iterable[dict]) -> None:
        rows = list(rows)
        if not rows:
            return
        text = "".join(json.dumps(jsonable(r), ensure_ascii=False, allow_nan=False) + "\n" for r in rows)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.n_written += len(rows)
        self._done.update(row_key(r, self.key_fields) for r in rows)


def read_results(folder: str | os.PathLike[str], key_fields: Sequence[str]) -> list[dict]:
    """Every row of ``folder/results*.jsonl`` (shards merged), one per key (the last written
    wins), sorted by key so that anything computed from them is order-independent."""
    rows: dict[Key, dict] = {}
    for path in sorted(Path(folder).glob("results*.jsonl")):
        for row in _read_jsonl(path):
            rows[row_key(row, key_fields)] = row
    return [rows[k] for k in sorted(rows, key=lambda k: tuple((v is None, str(v)) for v in k))]
