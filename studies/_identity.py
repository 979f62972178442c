"""Run identity: what made a folder's rows (``fingerprint*.json``), checked before a run adds
to them, and what each invocation did (``meta.json``).

A folder holds the rows of one run only. ``fingerprint.json`` (written before the first row,
so an interrupted run has it) records everything that decides the rows
(:func:`run_fingerprint`): the study, each model's identity (``interp.identity``), the options
the study declares as row-deciding (its ``ROW_OPTIONS``; the others, its ``OTHER_OPTIONS``,
only change where and how fast it runs, or the summary), the seed, the torch / transformers /
tokenizers versions (major.minor) and a digest of the work list (items, prompts). A run into a
folder with rows of another fingerprint, or of another study, stops with an error naming what
differs (:func:`open_run`); ``--overwrite`` deletes the study's previous files there first.
With ``--summary-only`` it also checks that some rows and every shard's rows are there.

``meta.json``: :func:`write_meta` (study, options, seed, library versions, timings; one entry
per invocation under ``invocations``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from studies._common import StudyError
from studies._results import ResultsLog, jsonable
from studies._shards import MEMBERS, Shard, fingerprint_name


# -- versions -------------------------------------------------------------------------------------
VERSIONED = ("torch", "transformers", "tokenizers", "accelerate", "bitsandbytes", "nnsight", "numpy", "pandas",
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
    out = {"study": study, "models": {m: model_identity(pair.spec.source(m)) for m in MEMBERS},
           "options": jsonable(options), "seed": seed,
           "versions": {name: _major_minor(installed[name]) for name in FINGERPRINT_VERSIONS},
           "work": None if work is None else digest(_plain(work))}
    backend = backend_of(pair)
    if backend != "torch":  # absent for torch, so the folders of earlier runs still match
        out["backend"] = backend
    return out


def backend_of(pair) -> str:
    """``"torch"``, ``"nnsight"``, ``"nnsight on NDIF"`` or ``"nnsight (NDIF dry run)"``: how the
    pair's forwards run (NDIF's numbers are its GPUs', so they decide the rows)."""
    kwargs = getattr(pair, "load_kwargs", {}) or {}
    backend = kwargs.get("backend", "torch")
    remote = kwargs.get("remote", False)
    return backend + {False: "", True: " on NDIF", "local": " (NDIF dry run)"}[remote]


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
    if old.get("backend", "torch") != new.get("backend", "torch"):
        out.append(f"backend {old.get('backend', 'torch')} -> {new.get('backend', 'torch')}")
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


# -- meta -----------------------------------------------------------------------------------------
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


def write_study_meta(folder: str | os.PathLike[str], args, pair, *, study: str, timings: dict | None = None,
                     **extra) -> Path:
    """:func:`write_meta` with what every pair study records: its options (tuples as lists), seed,
    the pair's spec, each member's source and the load options (``studies._common.load_kwargs``);
    ``extra`` adds fields (or replaces these)."""
    from dataclasses import asdict

    from interp.registry import MEMBERS as PAIR_MEMBERS
    from studies._common import load_kwargs

    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    common = {"pair": asdict(pair.spec), "models": {m: pair.spec.source(m) for m in PAIR_MEMBERS},
              "load_options": load_kwargs(args)}
    return write_meta(folder, study=study, options=options, seed=getattr(args, "seed", None), timings=timings,
                      **{**common, **extra})
