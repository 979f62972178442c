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
~1e-7, through matmul shapes and padding). The full, ordered work list is therefore cut into
fixed chunks (:func:`chunked`) and a chunk is recomputed as a whole unless all its keys are done
(:func:`pending`), so every row comes from the same batch as in an uninterrupted run (with the
same ``--batch-size``).

Run identity: a folder holds the rows of one run only. ``fingerprint.json`` (written before the
first row, so an interrupted run has it) records everything that decides the rows
(:func:`run_fingerprint`): the study, each model's identity (``interp.identity``), the options
the study declares as row-deciding (its ``ROW_OPTIONS``; the others, its ``OTHER_OPTIONS``,
only change where and how fast it runs, or the summary), the seed, the torch / transformers /
tokenizers versions (major.minor) and a digest of the work list (items, prompts). A run into a
folder with rows of another fingerprint, or of another study, stops with an error naming what
differs (:func:`open_run`); ``--overwrite`` deletes the study's previous files there first.

Shards: ``--shard i/n`` (:func:`parse_shard`, 1-based ``i``) takes the i-th of n contiguous,
near-equal parts of the study's whole work list, every model's every chunk in run order
(:func:`shard_plan`), so shard 1 of 2 does the base model and shard 2 the chat model. A shard
writes ``results.shard-i-of-n.jsonl`` and ``fingerprint.shard-i-of-n.json`` and no summary;
:func:`read_results` merges every ``results*.jsonl`` of the folder, so shards run anywhere and
merge by copying both files of each shard into one folder, where ``--summary-only`` checks
their fingerprints agree and every shard is there, and writes the summary.

Usage sketch::

    out = run_dir("my_study", pair, args.out)
    chunks = chunked(work, args.batch_size)
    open_run(out, "my_study", run_fingerprint("my_study", pair, row_options(args, ROW_OPTIONS), args.seed, work),
             shard, overwrite=args.overwrite, summary_only=args.summary_only)
    log = ResultsLog(out / results_name(shard), key_fields=("model", "item"))
    plan = shard_plan(len(chunks), shard)
    for member, lm in load_members(pair, [m for m in plan if plan[m]]):
        for index, chunk in progress(pending(chunks, key_of(member), log, plan[member]), desc=member):
            log.write([compute(lm, row) for row in chunk])      # appended + flushed
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


def add_run_options(parser) -> None:
    """The run-folder options every study takes: ``--out``, ``--overwrite``, ``--shard``, ``--summary-only``."""
    parser.add_argument("--out", help="output folder (default runs/<study>/<pair>/; for --base/--chat "
                                      "runs/<study>/custom-<base>-vs-<chat>-<hash>/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete this study's previous files in the folder (every shard's) first, to start "
                             "afresh with other options or models")
    parser.add_argument("--shard", help="i/n: run the i-th of n near-equal parts of the work "
                                        "(results.shard-i-of-n.jsonl; no summary, see --summary-only)")
    parser.add_argument("--summary-only", action="store_true",
                        help="rebuild the summary and figures from the folder's results*.jsonl (merged shards), "
                             "given the options of the run")


def _slug(source: str) -> str:
    name = Path(str(source).rstrip("/\\")).name or "model"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:40]


def _where(source: str) -> str:
    """A local folder's absolute path, or the hub id as given."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() or source.startswith((".", "/", "~")) else source


def pair_folder_name(pair) -> str:
    """``pair.name`` for a registry pair; for a custom (``--base/--chat``) pair a name from both
    models and a hash of where they are: ``custom-<base>-vs-<chat>-<hash8>``."""
    spec = pair.spec
    if spec.name != "custom":
        return spec.name
    from interp.identity import digest

    base, chat = spec.source("base"), spec.source("chat")
    return f"custom-{_slug(base)}-vs-{_slug(chat)}-{digest([_where(base), _where(chat)])[:8]}"


def run_dir(study: str, pair, out: str | os.PathLike[str] | None = None) -> Path:
    """``out`` if given, else ``runs/<study>/<pair folder name>/`` (:func:`pair_folder_name`;
    ``pair`` may also be a plain name), relative to the working directory; created."""
    name = pair if isinstance(pair, str) else pair_folder_name(pair)
    path = Path(out) if out else Path("runs") / study / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), as in ``--shard 2/4``."""

    index: int = 1
    count: int = 1

    def bounds(self, n_units: int) -> tuple[int, int]:
        """``[start, stop)`` of this shard's contiguous part of ``n_units``; parts differ in size by at most one."""
        return (self.index - 1) * n_units // self.count, self.index * n_units // self.count

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def label(self) -> str:
        return f"shard {self.index} of {self.count}"


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


def results_name(shard: Shard, stem: str = "results", suffix: str = ".jsonl") -> str:
    """``results.jsonl``, or ``results.shard-i-of-n.jsonl`` for a shard (other ``stem``/``suffix``
    name the shard's other files the same way)."""
    return f"{stem}{suffix}" if shard.is_whole else f"{stem}.shard-{shard.index}-of-{shard.count}{suffix}"


def fingerprint_name(shard: Shard) -> str:
    """``fingerprint.json``, or ``fingerprint.shard-i-of-n.json``: beside its results file."""
    return results_name(shard, "fingerprint", ".json")


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


# -- work lists -----------------------------------------------------------------------------------
def chunked(items: Sequence, size: int) -> list[list]:
    if size < 1:
        raise StudyError(f"batch size must be >= 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def pending(chunks: Sequence[Sequence], key_of: Callable[[object], Key], log: ResultsLog,
            owned: Iterable[int] | None = None) -> list[tuple[int, list]]:
    """``(chunk index, chunk)`` for each chunk in ``owned`` (default all) not complete in ``log``
    (a partly done chunk is recomputed whole; see module doc)."""
    indices = range(len(chunks)) if owned is None else owned
    return [(i, list(chunks[i])) for i in indices if not all(log.done(key_of(item)) for item in chunks[i])]


def pending_chunks(
    items: Sequence, size: int, key_of: Callable[[object], Key], log: ResultsLog, shard: Shard = Shard()
) -> list[tuple[int, list]]:
    """:func:`pending` chunks of ``size`` of one work list, this shard's contiguous part of them."""
    chunks = chunked(items, size)
    return pending(chunks, key_of, log, range(*shard.bounds(len(chunks))))


MEMBERS = ("base", "chat")  # interp.registry.MEMBERS, in the order a pair loads them


def shard_plan(n_chunks: int, shard: Shard, members: Sequence[str] = MEMBERS) -> dict[str, list[int]]:
    """member -> the indices of its chunks this shard runs. The whole work list is every
    member's ``n_chunks`` chunks, member by member (the order a run loads the models); a shard
    is the i-th of n contiguous parts of it whose sizes differ by at most one, so a shard loads
    as few models as it can."""
    units = [(m, c) for m in members for c in range(n_chunks)]
    start, stop = shard.bounds(len(units))
    plan: dict[str, list[int]] = {m: [] for m in members}
    for member, chunk in units[start:stop]:
        plan[member].append(chunk)
    return plan


def describe_plan(plan: dict[str, list[int]], n_chunks: int, shard: Shard) -> str:
    """``shard 1 of 2: 3 of 6 chunks of the whole run (base 3, chat 0)``."""
    mine = sum(len(v) for v in plan.values())
    parts = ", ".join(f"{m} {len(v)}" for m, v in plan.items())
    return f"{shard.label}: {mine} of {n_chunks * len(plan)} chunks of the whole run ({parts})"


def load_members(pair, needed: Iterable[str]) -> Iterator[tuple[str, object]]:
    """``(member, lm)`` for the members in ``needed``, one in memory at a time: through the
    pair (which checks the two share a tokenizer) when both are needed, else just the one."""
    needed = set(needed)
    if needed >= set(MEMBERS):
        yield from pair
        return
    for member in MEMBERS:
        if member in needed:
            lm = pair.load(member)
            yield member, lm
            del lm


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


# -- run identity ---------------------------------------------------------------------------------
FINGERPRINT_VERSIONS = ("torch", "transformers", "tokenizers")  # their major.minor decides rows


def _major_minor(version: str | None) -> str | None:
    return None if version is None else ".".join(version.split(".")[:2])


def _plain(obj):
    """A JSON-able form of work items (dataclasses, tuples, paths) for a digest."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return jsonable(obj) if hasattr(obj, "tolist") or isinstance(obj, (Path, float)) else obj


def row_options(args, names: Sequence[str]) -> dict:
    """``{name: value}`` of the row-deciding options ``names`` (tuples as lists)."""
    return {name: _plain(getattr(args, name)) for name in names}


def run_fingerprint(study: str, pair, options: dict, seed: int | None, work=None) -> dict:
    """Everything that decides a run's rows: study, each model's identity (by member, so
    swapped models differ), the row-deciding ``options``, the seed, library versions and a
    digest of the work list (``work``: items / prompts in run order)."""
    from interp.identity import digest, model_identity

    installed = versions(FINGERPRINT_VERSIONS)
    return {"study": study, "models": {m: model_identity(pair.spec.source(m)) for m in MEMBERS},
            "options": jsonable(options), "seed": seed,
            "versions": {name: _major_minor(installed[name]) for name in FINGERPRINT_VERSIONS},
            "work": None if work is None else digest(_plain(work))}


def _differences(old: dict, new: dict) -> list[str]:
    """``["seed 0 -> 1", "limit None -> 3", "base model /a #12 -> /b #34"]``."""
    from interp.identity import describe

    out = []
    for member in sorted(set(old.get("models", {})) | set(new.get("models", {}))):
        a, b = old.get("models", {}).get(member), new.get("models", {}).get(member)
        if a != b:
            changed = ""
            if a and b and a.get("path") and a.get("path") == b.get("path") and a.get("files") and b.get("files"):
                names = sorted(n for n in set(a["files"]) | set(b["files"]) if a["files"].get(n) != b["files"].get(n))
                changed = f" ({', '.join(names)} changed)"
            out.append(f"{member} model {describe(a) if a else None} -> {describe(b) if b else None}{changed}")
    for name in sorted(set(old.get("options", {})) | set(new.get("options", {}))):
        a, b = old.get("options", {}).get(name, "(unset)"), new.get("options", {}).get(name, "(unset)")
        if a != b:
            out.append(f"{name.replace('_', '-')} {a} -> {b}")
    if old.get("seed") != new.get("seed"):
        out.append(f"seed {old.get('seed')} -> {new.get('seed')}")
    for name in sorted(set(old.get("versions", {})) | set(new.get("versions", {}))):
        a, b = old.get("versions", {}).get(name), new.get("versions", {}).get(name)
        if a != b:
            out.append(f"{name} {a} -> {b}")
    if old.get("work") != new.get("work") and not out:  # (other differences explain it)
        out.append(f"work list (items, prompts; the data or the code that builds them) #{old.get('work')} -> "
                   f"#{new.get('work')}")
    return out or ["(unreadable fingerprint)"]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _has_rows(path: Path) -> bool:
    return path.exists() and any(line.strip() for line in path.read_text(encoding="utf-8").splitlines())


def _sidecar(results: Path) -> Path:
    """``results.shard-1-of-2.jsonl`` -> ``fingerprint.shard-1-of-2.json``."""
    return results.with_name("fingerprint" + results.name[len("results"):-len(".jsonl")] + ".json")


def _shard_of(results: Path) -> Shard | None:
    """The shard a results file belongs to (``None`` for the whole run's ``results.jsonl``)."""
    middle = results.name[len("results"):-len(".jsonl")]
    if not middle:
        return None
    try:
        i, n = middle.removeprefix(".shard-").split("-of-")
        return Shard(int(i), int(n))
    except ValueError:
        return None


def study_files(folder: Path, outputs: Iterable[str] = ()) -> list[Path]:
    """The files a study wrote into ``folder``: results, fingerprints, meta, the ``outputs``
    it names (tables) and those ``meta.json`` lists (figures)."""
    names = set(outputs)
    for meta in folder.glob("meta*.json"):
        names.update(str(n) for n in (_read_json(meta) or {}).get("outputs", []))
    found = [*folder.glob("results*.jsonl"), *folder.glob("fingerprint*.json"), *folder.glob("meta*.json")]
    found += [folder / n for n in names if "/" not in n and "\\" not in n and (folder / n).is_file()]
    return sorted(set(found))


def open_run(out: Path, study: str, fingerprint: dict, shard: Shard = Shard(), *, overwrite: bool = False,
             summary_only: bool = False, outputs: Sequence[str] = ()) -> None:
    """Check that ``out`` may take (or, with ``summary_only``, summarise) rows of this
    ``fingerprint``, and record it (``fingerprint*.json``) before any row is written.

    Raises StudyError (one line: what differs and how to proceed) when the folder holds
    another study's results, rows without a fingerprint, or rows of another fingerprint;
    with ``summary_only`` also when it holds no rows or misses a shard. ``overwrite`` first
    deletes the study's own files there (:func:`study_files`, ``outputs`` = its tables)."""
    out = Path(out)
    if overwrite and summary_only:
        raise StudyError("--overwrite deletes the results --summary-only would summarise; give one of them")
    results = sorted(p for p in out.glob("results*.jsonl") if _has_rows(p))
    records = {p: _read_json(_sidecar(p)) for p in results}
    studies = {r.get("study") for r in records.values() if r} | {(_read_json(out / "meta.json") or {}).get("study")}
    other = sorted(str(s) for s in studies - {None, study})
    if other:
        raise StudyError(f"{out} holds results of study {other[0]!r}, not {study!r}; use another --out folder")
    if overwrite:
        for path in study_files(out, outputs):
            path.unlink()
        results, records = [], {}
    for path, record in records.items():
        if record is None or "fingerprint" not in record:
            raise StudyError(f"{path} has no {_sidecar(path).name} saying how its rows were made (written before run "
                             "fingerprints, or copied without it); use a new --out folder or --overwrite")
        if record["fingerprint"] != fingerprint:
            how = ("run --summary-only with the options of that run (see its fingerprint.json)" if summary_only
                   else "use a new --out folder or --overwrite")
            raise StudyError(f"{out} ({path.name}) was made with different settings: "
                             f"{', '.join(_differences(record['fingerprint'], fingerprint))}; {how}")
    if summary_only:
        _check_complete(out, records)
        return
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = {"study": study, "shard": None if shard.is_whole else f"{shard.index}/{shard.count}",
              "started": now, "finished": None, "argv": sys.argv[1:], "fingerprint": fingerprint}
    _write_json(out / fingerprint_name(shard), record)


def _check_complete(out: Path, records: dict[Path, dict]) -> None:
    """For ``--summary-only``: some rows, and every shard of a sharded run (unfinished ones are noted)."""
    if not records:
        raise StudyError(f"no results in {out} (results*.jsonl); run the study without --summary-only first")
    shards = {p: _shard_of(p) for p in records}
    if any(s is None for s in shards.values()):
        present = None  # the whole run's results.jsonl is there
    else:
        counts = {s.count for s in shards.values()}
        have = {(s.index, s.count) for s in shards.values()}
        missing = {n: [i for i in range(1, n + 1) if (i, n) not in have] for n in counts}
        if all(missing[n] for n in counts):
            n = min(counts, key=lambda c: len(missing[c]))
            raise StudyError(f"{out} has no rows of {', '.join(f'shard {i} of {n}' for i in missing[n])}: run them, "
                             "or copy each shard's results.shard-i-of-n.jsonl and fingerprint.shard-i-of-n.json "
                             "into this folder, then --summary-only")
        present = counts
    unfinished = [p.name for p, r in records.items() if not r.get("finished")]
    if unfinished:
        print(f"note: {', '.join(unfinished)} did not finish (interrupted, or still running); the summary covers "
              "the rows written so far" + ("" if present is None else "; rerun that shard to complete it"),
              file=sys.stderr)


def finish_run(out: Path, shard: Shard, **info) -> None:
    """Mark this run's (or shard's) fingerprint record finished, with ``info`` (timings, rows)."""
    path = Path(out) / fingerprint_name(shard)
    record = _read_json(path) or {}
    record.update(finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **jsonable(info))
    _write_json(path, record)


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old or the new file, whole)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(jsonable(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def report_shard(out: Path, shard: Shard, log: ResultsLog, n_written: int) -> None:
    """A shard's console lines instead of a summary: what it wrote and how to merge."""
    print(f"{shard.label}: wrote {n_written} new rows ({log.n_resumed} resumed) to {log.path}. No summary: a shard "
          f"holds part of the run. When all {shard.count} shards have finished, with each shard's "
          f"results.shard-i-of-{shard.count}.jsonl and fingerprint.shard-i-of-{shard.count}.json in {out}, run the "
          "same command with --summary-only instead of --shard.")


def write_meta(folder: str | os.PathLike[str], *, study: str, options: dict, seed: int | None = None,
               timings: dict | None = None, **extra) -> Path:
    """Write ``folder/meta.json``: ``study``, ``seed``, ``options``, ``versions``, ``extra``
    fields (models, pair, fingerprint, outputs = the files written besides results and meta,
    ...), and append this invocation (time, options, timings) to the ``invocations`` list kept
    from earlier runs into the same folder."""
    path = Path(folder) / "meta.json"
    previous = _read_json(path) or {}
    invocations = previous.get("invocations", [])
    if "outputs" in extra:  # keep naming files earlier invocations wrote (figures), for --overwrite
        extra["outputs"] = list(dict.fromkeys([*extra["outputs"], *previous.get("outputs", [])]))
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    invocations.append({"finished": now, "argv": sys.argv[1:], "options": options, "timings": timings or {}})
    meta = {"study": study, "seed": seed, "options": options, "versions": versions(),
            **extra, "timings": timings or {}, "invocations": invocations}
    _write_json(path, meta)
    return path
