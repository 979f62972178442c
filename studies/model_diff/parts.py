"""What a part of the model-diff study is, and what it gets to run with.

The study runs its parts in order (``cli.PARTS``; ``--parts`` picks some). A part is a
:class:`Part`: its options (added to the parser), which of them decide its rows (the run's
fingerprint), a ``run`` that appends its missing rows to the shared results log, and
``tables`` / ``summary`` / ``figures`` computed from its rows alone. Every row carries the key
fields ``part`` (the part's name) and ``key`` (unique within the part), so one resumable
``results.jsonl`` holds all parts' rows and a part resumes by skipping the keys it finds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

KEY_FIELDS = ("part", "key")


@dataclass
class Context:
    """What a part's ``run`` gets: the parsed ``args``, the ``interp.Pair``, the run folder
    ``out``, the results ``log`` (``studies._results.ResultsLog``), the ``lens``
    (``studies._lens.LensChoice``), a ``timings`` dict to add seconds to, and the ``shard``
    (``studies._shards.Shard``; not whole only for parts with ``shards``)."""

    args: object
    pair: object
    out: Path
    log: object
    lens: object
    timings: dict = field(default_factory=dict)
    shard: object = None


@dataclass(frozen=True)
class Part:
    """One part of the study.

    Attributes:
        name: its ``--parts`` name and every row's ``part`` field.
        add_options: adds its options to the argparse parser.
        row_options: the option names (argparse ``dest``) that decide its rows.
        run: appends its missing rows to ``ctx.log`` (loads models only if rows are missing).
        tables: ``(rows, out) -> paths`` of the CSV tables written from its rows.
        summary: ``rows -> summary rows`` (``part``, ``group``, ``layer``, ``metric``, ``value``).
        figures: ``(rows, out) -> paths`` of its figures.
        work: ``args -> a JSON-able description of its work list`` (texts, prompts) for the
            run's fingerprint, or ``None``.
        outputs: the files its ``tables`` write (``--overwrite`` deletes them; figures are
            named in ``meta.json``).
        folders: subfolders of the run folder it keeps caches in (``--overwrite`` deletes them).
        opt_in: left out of the default ``--parts`` (runs only when named, or with ``all``).
        shards: its ``run`` computes only ``ctx.shard``'s part of its work under ``--shard``
            (the others refuse ``--shard``).
    """

    name: str
    add_options: Callable
    row_options: tuple[str, ...]
    run: Callable
    tables: Callable
    summary: Callable
    figures: Callable
    work: Callable = lambda args: None
    outputs: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    opt_in: bool = False
    shards: bool = False
