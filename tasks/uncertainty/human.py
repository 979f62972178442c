"""A reader for the human data of Herbstritt & Franke (``mic-he/ProbExp-HOU``), in the
authors' CSV formats. The data are not shipped (their licence is not stated); a synthetic
fixture in the same formats is (:data:`FIXTURES`, each file's first line says it is synthetic).

Formats, told apart by their columns (the authors' file names in brackets):

- production trials (``R/2.complex expressions/clean_production_data.csv``, and the simple
  experiment's file of the same name): one row per trial, ``access``, ``observation`` and the
  chosen expression in ``answer.full`` (complex: ``"is_probably likely"``, with "probable"
  already folded into "likely") or ``answer`` (simple: ``"probablyNot"``);
- production aggregate (``complex_production_cis.csv``): ``value`` (the context code, ``42`` =
  4 seen, 2 red), ``message``, ``mean`` (bootstrapped percentage of choices; ``ci.low``,
  ``ci.high`` are not read);
- interpretation trials (``clean_interpretation_data.csv``): ``kind``, ``expression``,
  ``state``; the rows of kind ``f`` (guess the number of red balls in the urn) are read, the
  others (kind ``c``, guess what the speaker saw) counted as ignored;
- interpretation aggregate (``complex_interpretation_state_cis.csv``): ``expression``,
  ``state`` (0..10), ``mean`` (percentage).

Trial files give counts (so the log-likelihood of the human choices); aggregate files give
proportions only. The expression set (simple or complex) follows from the codes. Lines
starting with ``#`` before the header are skipped (the fixtures' synthetic-data notes).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tasks.errors import MissingDatasetError, TaskError
from tasks.uncertainty.paradigm import SETS, STATES, check_context, codes, decode_value

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURES = tuple(FIXTURE_DIR / name for name in (
    "synthetic_hf2016_complex_clean_production_data.csv",
    "synthetic_hf2016_simple_clean_production_data.csv",
    "synthetic_hf2016_complex_clean_interpretation_data.csv",
))

# format -> (kind, required columns; a tuple inside is "one of", and the authors' file name)
FORMATS = {
    "production trials": ("production", ("access", "observation", ("answer.full", "answer")),
                          "clean_production_data.csv"),
    "production aggregate": ("production", ("value", "message", "mean"), "complex_production_cis.csv"),
    "interpretation trials": ("interpretation", ("kind", "expression", "state"), "clean_interpretation_data.csv"),
    "interpretation aggregate": ("interpretation", ("expression", "state", "mean"),
                                 "complex_interpretation_state_cis.csv"),
}


@dataclass
class HumanData:
    """One file's human distributions.

    Attributes:
        kind: ``"production"`` (key: ``(access, observation)``, options: the set's codes) or
            ``"interpretation"`` (key: an expression code, options: states 0..10).
        set: ``"simple"`` or ``"complex"``.
        path, format: where it was read from and which of :data:`FORMATS` it is in.
        options: the option labels the arrays are indexed by.
        probs: key -> ``[option]`` proportions (sum 1).
        counts: key -> ``[option]`` choice counts (trial files), or ``None`` (aggregates).
        n_rows: data rows read; n_ignored: rows not used (interpretation trials of kind ``c``).
    """

    kind: str
    set: str
    path: str
    format: str
    options: tuple[str, ...]
    probs: dict = field(default_factory=dict)
    counts: dict | None = None
    n_rows: int = 0
    n_ignored: int = 0


def _spell(required) -> str:
    return ", ".join(" or ".join(c) if isinstance(c, tuple) else c for c in required)


def _format_of(path: str, header: list[str]) -> str:
    """The format whose required columns the header has; TaskError naming what is missing."""
    have = set(header)

    def present(col):
        return any(c in have for c in col) if isinstance(col, tuple) else col in have

    scores = {name: sum(present(c) for c in req) for name, (_, req, _) in FORMATS.items()}
    best = max(scores, key=lambda n: (scores[n], -list(FORMATS).index(n)))
    kind, req, authors = FORMATS[best]
    if scores[best] == len(req):
        return best
    expected = "; ".join(f"{name} ({_spell(r)}; as in {a})" for name, (_, r, a) in FORMATS.items())
    if scores[best] <= 1:
        raise TaskError(f"{path}: columns {header} match no human-data format; expected one of: {expected}")
    missing = [c for c in req if not present(c)]
    raise TaskError(f"{path}: looks like {best} ({authors}) but lacks column(s) {_spell(missing)}; "
                    f"expected columns: {_spell(req)}")


def _int(text: str, column: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise TaskError(f"{where}: column {column!r} must be a number, got {text!r}") from None
    if value != int(value):
        raise TaskError(f"{where}: column {column!r} must be a whole number, got {text!r}")
    return int(value)


def _float(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TaskError(f"{where}: column {column!r} must be a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0:
        raise TaskError(f"{where}: column {column!r} must be a finite number >= 0, got {text!r}")
    return value


def _set_of(found: set[str], path: str) -> str:
    for name in SETS:
        if found <= set(codes(name)):
            return name
    valid = "; ".join(f"{n}: {', '.join(codes(n))}" for n in SETS)
    unknown = sorted(found - set(codes("simple")) - set(codes("complex")))
    mixed = f"unknown {unknown}" if unknown else "codes of both sets in one file"
    raise TaskError(f"{path}: expressions {mixed}; valid codes are {valid}")


def read_human_data(path: str | Path) -> HumanData:
    """Read one human-data file in any of :data:`FORMATS` (module doc)."""
    path = Path(path)
    if not path.is_file():
        raise MissingDatasetError(f"human data file {str(path)!r} not found")
    lines = path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    skip = 0
    while skip < len(lines) and lines[skip].startswith("#"):
        skip += 1
    rows = list(csv.reader(io.StringIO("".join(lines[skip:]))))
    if not rows:
        raise TaskError(f"{path}: no header line")
    header, body = rows[0], [r for r in rows[1:] if any(cell.strip() for cell in r)]
    fmt = _format_of(str(path), header)
    kind = FORMATS[fmt][0]
    records = []
    for n, cells in enumerate(rows[1:], start=skip + 2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise TaskError(f"{path}, line {n}: {len(cells)} fields, the header has {len(header)}")
        records.append((f"{path}, line {n}", dict(zip(header, cells))))
    if not records:
        raise TaskError(f"{path}: no data rows")
    pairs, ignored = _pairs(fmt, records, header)  # [(key, option, weight)]
    set_name = _set_of({p[0] if kind == "interpretation" else p[1] for p in pairs}, str(path))
    options = codes(set_name) if kind == "production" else tuple(str(s) for s in STATES)
    table: dict = {}
    for key, option, weight in pairs:
        table.setdefault(key, np.zeros(len(options)))[options.index(option)] += weight
    for key, v in table.items():
        if v.sum() <= 0:
            raise TaskError(f"{path}: context {key!r} has no choices (its percentages sum to 0)")
    aggregate = fmt.endswith("aggregate")
    return HumanData(kind, set_name, str(path), fmt, options, probs={k: v / v.sum() for k, v in table.items()},
                     counts=None if aggregate else table, n_rows=len(body), n_ignored=ignored)


def _pairs(fmt: str, records: list[tuple[str, dict]], header: list[str]) -> tuple[list, int]:
    out, ignored = [], 0
    for where, r in records:
        if fmt == "production trials":
            a, o = _int(r["access"], "access", where), _int(r["observation"], "observation", where)
            check_context(a, o, f"{where}: ")
            out.append(((a, o), r["answer.full" if "answer.full" in header else "answer"].strip(), 1.0))
        elif fmt == "production aggregate":
            out.append((decode_value(_int(r["value"], "value", where), f"{where}: "), r["message"].strip(),
                        _float(r["mean"], "mean", where)))
        else:
            if fmt == "interpretation trials" and r["kind"].strip() != "f":
                ignored += 1
                continue
            state = _int(r["state"], "state", where)
            if state not in STATES:
                raise TaskError(f"{where}: state {state} is not a number of red balls 0..{STATES[-1]}")
            weight = 1.0 if fmt == "interpretation trials" else _float(r["mean"], "mean", where)
            out.append((r["expression"].strip(), str(state), weight))
    return out, ignored
