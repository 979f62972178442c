"""Output conventions shared by every study: run folder, resumable results, meta, shards.

A study writes into one folder, ``runs/<study>/<pair>/`` by default (:func:`run_dir`):

- ``results.jsonl``: one JSON object per line and per unit of work (an item under one
  condition), appended and flushed batch by batch by :class:`ResultsLog`. Every row carries
  *key fields* (e.g. model, prompt style, item id); a restarted run skips the keys already
  written, so an interrupted run resumes and loses nothing. A line cut short by a crash is
  dropped (and the file repaired) on the next start. When a key was written twice, the
  last row wins.
- ``summary.csv``, figures: computed from the rows alone (:func:`read_results`), so a resumed
  run gives the same summary as an uninterrupted one.
- ``meta.json``: :func:`write_meta` (study, options, seed, library versions, timings; one
  entry per invocation under ``invocations``).

Batches and exact resumption: numbers of a prompt can depend on the batch it ran in (by
~1e-7, through matmul shapes and padding). :func:`pending_chunks` therefore cuts the full,
ordered work list into fixed chunks and recomputes a chunk as a whole unless all its keys
are done, so every row comes from the same batch as in an uninterrupted run (with the same
``--batch-size``). With ``--limit`` the last chunk can be shorter; a later, longer run
recomputes it whole.

Shards: ``--shard i/n`` (:func:`parse_shard`, 1-based ``i``) keeps chunks ``c`` with
``c % n == i - 1`` and writes ``results.shard-i-of-n.jsonl``; :func:`read_results` merges
every ``results*.jsonl`` of the folder, so shards run anywhere and merge by copying their
files into one folder.

Usage sketch::

    out = run_dir("my_study", pair_name, args.out)
    log = ResultsLog(out / results_name(shard), key_fields=("model", "item"))
    for index, chunk in progress(pending_chunks(items, 32, key_of, log, shard), desc="base"):
        log.write([compute(row) for row in chunk])      # appended + flushed
    rows = read_results(out, key_fields=("model", "item"))
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from interp.errors import InterpError

Key = tuple


class StudyError(InterpError):
    """Bad input to a study (options, task files): the CLI prints it and exits with status 2."""


# -- folders and names ---------------------------------------------------------------------------
def run_cli(parse: Callable[[Sequence[str] | None], object], study: Callable[[object], int],
            argv: Sequence[str] | None = None) -> int:
    """A study's entry point: parse ``argv``, run, and turn bad input (unknown pair or task,
    missing data or weights: ``interp.InterpError`` or ``StudyError``) into a one-line
    ``error: ...`` on stderr and exit status 2 instead of a traceback."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parse(argv)
    from interp import InterpError

    try:
        return study(args)
    except (InterpError, StudyError) as err:  # InterpError covers interp.LoadError
        print(f"error: {err}", file=sys.stderr)
        return 2


def add_model_options(parser) -> None:
    """The model-loading options every study takes (passed on to ``interp.load``)."""
    parser.add_argument("--dtype", help="float32, bfloat16, float16, auto")
    parser.add_argument("--device", help="e.g. cpu, cuda")
    parser.add_argument("--device-map", help="accelerate device_map, e.g. auto")
    parser.add_argument("--quantization", choices=("4bit", "8bit"), help="bitsandbytes (CUDA only)")


def load_kwargs(args) -> dict:
    """``interp.load`` keyword arguments from the options of :func:`add_model_options`."""
    return {k: v for k, v in (("dtype", args.dtype), ("device", args.device), ("device_map", args.device_map),
                              ("quantization", args.quantization)) if v}


def run_dir(study: str, pair: str, out: str | os.PathLike[str] | None = None) -> Path:
    """``out`` if given, else ``runs/<study>/<pair>/`` (relative to the working directory); created."""
    path = Path(out) if out else Path("runs") / study / pair
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), as in ``--shard 2/4``."""

    index: int = 1
    count: int = 1

    def owns(self, chunk_index: int) -> bool:
        return chunk_index % self.count == self.index - 1

    @property
    def is_whole(self) -> bool:
        return self.count == 1


def parse_shard(text: str | None) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; ``None`` -> the whole run. Raises StudyError on bad input."""
    if text is None:
        return Shard()
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise StudyError(f"--shard must look like i/n with integers, e.g. 1/4; got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise StudyError(f"--shard i/n needs 1 <= i <= n, got {text!r}")
    return Shard(i, n)


def results_name(shard: Shard) -> str:
    """``results.jsonl``, or ``results.shard-i-of-n.jsonl`` for a shard."""
    return "results.jsonl" if shard.is_whole else f"results.shard-{shard.index}-of-{shard.count}.jsonl"


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
        self._done.update(row_key(r, self.key_fields) for r in rows)


def read_results(folder: str | os.PathLike[str], key_fields: Sequence[str]) -> list[dict]:
    """Every row of ``folder/results*.jsonl`` (shards merged), one per key (the last written
    wins), sorted by key so that anything computed from them is order-independent."""
    rows: dict[Key, dict] = {}
    for path in sorted(Path(folder).glob("results*.jsonl")):
        for row in _read_jsonl(path):
            rows[row_key(row, key_fields)] = row
    return [rows[k] for k in sorted(rows, key=lambda k: tuple((v is None, str(v)) for v in k))]


# -- work lists -----------------------------------------------------------------------------------
def chunked(items: Sequence, size: int) -> list[list]:
    if size < 1:
        raise StudyError(f"batch size must be >= 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def pending_chunks(
    items: Sequence, size: int, key_of: Callable[[object], Key], log: ResultsLog, shard: Shard = Shard()
) -> list[tuple[int, list]]:
    """``(chunk index, chunk)`` for each fixed chunk of ``items`` that this shard owns and that
    is not complete in ``log`` (a partly done chunk is recomputed whole; see module doc)."""
    out = []
    for index, chunk in enumerate(chunked(items, size)):
        if shard.owns(index) and not all(log.done(key_of(item)) for item in chunk):
            out.append((index, chunk))
    return out


def progress(iterable: Iterable, desc: str = "", total: int | None = None, disable: bool | None = None) -> Iterator:
    """A tqdm progress bar on stderr (off when ``disable``, or when stderr is not a terminal
    and ``disable`` is ``None``)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True))


# -- reproducibility ------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python, numpy (if installed) and torch."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy comes with torch/pandas
        pass


VERSIONED = ("torch", "transformers", "tokenizers", "accelerate", "bitsandbytes", "numpy", "pandas",
             "matplotlib", "jaxtyping", "tqdm")


def versions(packages: Sequence[str] = VERSIONED) -> dict[str, str | None]:
    """Python, platform and installed package versions (``None`` where not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_meta(folder: str | os.PathLike[str], *, study: str, options: dict, seed: int | None = None,
               timings: dict | None = None, **extra) -> Path:
    """Write ``folder/meta.json``: ``study``, ``seed``, ``options``, ``versions``, ``extra``
    fields (models, pair, ...), and append this invocation (time, options, timings) to the
    ``invocations`` list kept from earlier runs into the same folder."""
    path = Path(folder) / "meta.json"
    invocations = []
    if path.exists():
        try:
            invocations = json.loads(path.read_text()).get("invocations", [])
        except (json.JSONDecodeError, AttributeError):
            invocations = []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    invocations.append({"finished": now, "argv": sys.argv[1:], "options": options, "timings": timings or {}})
    meta = {"study": study, "seed": seed, "options": options, "versions": versions(),
            **extra, "timings": timings or {}, "invocations": invocations}
    path.write_text(json.dumps(jsonable(meta), indent=2, ensure_ascii=False) + "\n")
    return path
