"""Where a task's records come from: a local file, the ``datasets`` hub, or the fixture.

``load_records`` is the one entry point the loaders use.  Its contract:

- ``data=PATH``: read that file (``.jsonl``, ``.json`` holding a list or ``{"data": [...]}``,
  or ``.csv`` with a header row), with the hub's own field names;
- ``data="fixture"``: read the small set shipped in ``tasks/fixtures/``;
- ``data=None``: the hub dataset through ``datasets.load_dataset`` (imported only here),
  unless ``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE`` is set.  Any failure becomes a
  :class:`MissingDatasetError` that says exactly how to pass the file instead.

The fixture is never a silent fallback.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURE_DIR = Path(__file__).parent / "fixtures"
FIXTURE = "fixture"
_TRUE = {"1", "true", "yes", "on"}


class MissingDatasetError(FileNotFoundError):
    """A task's data is neither a local file nor reachable on the hub."""


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
    path = Path(path)
    if not path.is_file():
        raise MissingDatasetError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix == ".json":
        with path.open(encoding="utf-8") as f:
            obj = json.load(f)
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            obj = obj["data"]
        if not isinstance(obj, list):
            raise ValueError(f"{path}: expected a JSON list of records or {{'data': [...]}}")
        return obj
    if suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    raise ValueError(f"{path}: unsupported extension {suffix!r}; use .jsonl, .json, .csv or .tsv")


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
    else:
        records = read_records(path)
    return records[:limit] if limit is not None else records


def parse_label(value: Any, names: Sequence[str], *, task: str, where: str) -> int:
    """Turn a label given as int, bool, digit string or class name into an index.

    Raises ValueError for a hidden label (``-1``, as in GLUE/SuperGLUE test splits) or a
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
        raise ValueError(f"task {task!r}, {where}: cannot read label {value!r}; expected one of {list(names)} or 0..{len(names) - 1}")
    if index == -1:
        raise ValueError(
            f"task {task!r}, {where}: label is -1 (hidden, as in a test split); use a split with labels"
        )
    if not 0 <= index < len(names):
        raise ValueError(f"task {task!r}, {where}: label {index} out of range 0..{len(names) - 1}")
    return index


def require(record: dict[str, Any], fields: Sequence[str], *, task: str, where: str) -> None:
    """Raise a KeyError naming the missing fields and the ones the record has."""
    missing = [f for f in fields if f not in record]
    if missing:
        raise KeyError(
            f"task {task!r}, {where}: missing field(s) {missing}; record has {sorted(record)}"
        )
