"""Where a task's records come from: a local file, the ``datasets`` hub, or the fixture.

``located_records`` is the one entry point the loaders use (``load_records`` without the
locations).  Its contract:

- ``data=PATH``: read that file (``.jsonl``, ``.json`` holding a list or ``{"data": [...]}``,
  or ``.csv`` with a header row), with the hub's own field names;
- ``data="fixture"``: read the small set shipped in ``tasks/fixtures/``;
- ``data=None``: the hub dataset through ``datasets.load_dataset`` (imported only here),
  unless ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` is set.  Any failure becomes a
  :class:`MissingDatasetError` that says exactly how to pass the file instead.

The fixture is never a silent fallback.  A malformed record raises :class:`TaskError` naming
the file and line (``located_records`` pairs each record with where it came from) and the field.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import MissingDatasetError, TaskError

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURE = "fixture"
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HubSource:
    """A task's hub dataset and the record format a local file must follow.

    Attributes:
        path: hub dataset id (``"aps/super_glue"``).
        name: hub config name (``"boolq"``), or None.
        fields: the fields a local record needs, with their meaning, for error messages.
        fixture: file name under ``tasks/fixtures/``.
    """

    path: str
    name: str | None
    fields: str
    fixture: str


def hub_offline() -> bool:
    """True when the user told the HF libraries to stay offline."""
    return any(os.environ.get(v, "").lower() in _TRUE for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def how_to_provide(task: str, source: HubSource, split: str) -> str:
    """The instructions every missing-data error ends with."""
    config = f", config {source.name!r}" if source.name else ""
    return (
        f"Download the {split!r} split of the hub dataset {source.path!r}{config} on a machine "
        f"with internet and pass it with --data PATH (data=PATH in Python): a .jsonl file "
        f"(one JSON object per line), a .json list, or a .csv with a header row, using the "
        f"hub's field names: {source.fields}. "
        f"For a quick offline smoke test use --data fixture (the {source.fixture!r} set shipped "
        f"in tasks/fixtures/; a handful of hand-written items, not the benchmark)."
    )


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL, JSON or CSV file into a list of dict records."""
    return [record for _, record in read_located(path)]


def read_located(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for each record of a JSONL, JSON or CSV file; ``where`` names the
    file and line (``"boolq.jsonl line 3"``) for error messages. Raises TaskError on a line
    that is not a JSON object, or an unsupported file type."""
    path = Path(path)
    if not path.is_file():
        raise MissingDatasetError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path)
        if suffix == ".json":
            with path.open(encoding="utf-8") as f:
                try:
                    obj = json.load(f)
                except json.JSONDecodeError as err:
                    raise TaskError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                obj = obj["data"]
            if not isinstance(obj, list):
                raise TaskError(f"{path}: expected a JSON list of records or {{'data': [...]}}, got {type(obj).__name__}")
            return [(_check_object(r, f"{path} record {i}"), r) for i, r in enumerate(obj)]
        if suffix in (".csv", ".tsv"):
            with path.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
                return [(f"{path} line {reader.line_num}", row) for row in reader]
    except UnicodeDecodeError as err:
        raise TaskError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    raise TaskError(f"{path}: unsupported extension {suffix!r}; use .jsonl, .json, .csv or .tsv")


def _read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(f"{where}: not valid JSON ({err.msg})") from None
            out.append((_check_object(record, where), record))
    return out


def _check_object(record: Any, where: str) -> str:
    if not isinstance(record, dict):
        raise TaskError(f"{where}: a record must be a JSON object with named fields, got {type(record).__name__}")
    return where


def load_hub(source: HubSource, split: str) -> list[dict[str, Any]]:
    """Load ``split`` of the hub dataset (needs ``datasets`` and a network)."""
    import datasets  # lazy: only the hub path needs it

    ds = datasets.load_dataset(source.path, source.name, split=split)
    return [dict(r) for r in ds]


def resolve_source(
    task: str, source: HubSource, split: str, data: str | os.PathLike[str] | None
) -> tuple[str, Path | None]:
    """Classify ``data`` as ``("fixture", path)``, ``("file", path)`` or ``("hub", None)``."""
    if data is None:
        return "hub", None
    if str(data) == FIXTURE:
        return "fixture", FIXTURE_DIR / source.fixture
    path = Path(data)
    if not path.is_file():
        raise MissingDatasetError(
            f"task {task!r}: data file {str(path)!r} does not exist. "
            + how_to_provide(task, source, split)
        )
    return "file", path


def load_records(
    task: str,
    source: HubSource,
    split: str = "validation",
    data: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Records of ``task`` from a file, the fixture, or the hub (see module docstring)."""
    return [record for _, record in located_records(task, source, split, data, limit)]


def located_records(
    task: str,
    source: HubSource,
    split: str = "validation",
    data: str | os.PathLike[str] | None = None,
    limit: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """``(where, record)`` pairs, as :func:`load_records`; ``where`` says which file and line
    (or which hub record) a record came from, for the loaders' error messages."""
    kind, path = resolve_source(task, source, split, data)
    if kind == "hub":
        if hub_offline():
            raise MissingDatasetError(
                f"task {task!r}: no --data given and the hub is disabled "
                f"(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set). " + how_to_provide(task, source, split)
            )
        try:
            records = load_hub(source, split)
        except Exception as exc:  # offline, missing package, gated dataset: all need the file
            raise MissingDatasetError(
                f"task {task!r}: could not load {source.path!r} from the hub "
                f"({type(exc).__name__}: {exc}). " + how_to_provide(task, source, split)
            ) from exc
        located = [(f"hub {source.path} {split} record {i}", r) for i, r in enumerate(records)]
    else:
        try:
            located = read_located(path)
        except MissingDatasetError:
            raise
        except TaskError as err:
            raise TaskError(f"task {task!r}, {err}") from None
    return located[:limit] if limit is not None else located


def parse_label(value: Any, names: Sequence[str], *, task: str, where: str) -> int:
    """Turn a label given as int, bool, digit string or class name into an index.

    Raises TaskError for a hidden label (``-1``, as in GLUE/SuperGLUE test splits) or a
    value that is none of these.
    """
    if isinstance(value, bool):
        index = int(value)
    elif isinstance(value, int):
        index = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        index = int(value.strip())
    elif isinstance(value, str) and value.strip().lower() in [n.lower() for n in names]:
        index = [n.lower() for n in names].index(value.strip().lower())
    elif isinstance(value, str) and value.strip().lower() in ("true", "false"):
        index = int(value.strip().lower() == "true")
    else:
        raise TaskError(f"task {task!r}, {where}: cannot read label {value!r}; expected one of {list(names)} or 0..{len(names) - 1}")
    if index == -1:
        raise TaskError(
            f"task {task!r}, {where}: label is -1 (hidden, as in a test split); use a split with labels"
        )
    if not 0 <= index < len(names):
        raise TaskError(f"task {task!r}, {where}: label {index} out of range 0..{len(names) - 1}")
    return index


def require(record: dict[str, Any], fields: Sequence[str], *, task: str, where: str,
            text: Sequence[str] = ()) -> None:
    """Raise a TaskError naming the missing fields and the ones the record has, or the first
    field of ``text`` whose value is not a string (a number or list where text belongs would
    otherwise fail deep in a loader, or be scored as its ``str()``)."""
    missing = [f for f in dict.fromkeys((*fields, *text)) if f not in record]
    if missing:
        raise TaskError(f"task {task!r}, {where}: missing field(s) {missing}; record has {sorted(record)}")
    for name in text:
        if not isinstance(record[name], str):
            raise TaskError(f"task {task!r}, {where}: field {name!r} must be a string, "
                            f"got {type(record[name]).__name__} {record[name]!r:.60}")
