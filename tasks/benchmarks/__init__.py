"""The benchmark registry: task name -> loader.

Every loader has the signature ``load(split=..., data=None, limit=None, **options)`` and
returns a list of :class:`tasks.items.MCItem`, except ``syntaxgym`` which returns
:class:`tasks.benchmarks.syntaxgym.SyntaxGymItem` (region-surprisal minimal pairs) and ``coqa``
which returns :class:`tasks.items.GenItem` (answered by free generation). ``wsc`` and
``winogrande`` items are scored partially (``MCItem.continuation``).
``data`` is a local file (hub field names), ``"fixture"`` for the shipped example set, or
None for the hub; see :mod:`tasks.sources`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.benchmarks import (
    boolq,
    cb,
    cola,
    copa,
    coqa,
    grice,
    implicature,
    imppres,
    mmlu,
    rte,
    stsb,
    syntaxgym,
    triviaqa,
    wic,
    winogrande,
    wsc,
)
from tasks.errors import TaskError

TASKS: dict[str, Callable[..., list[Any]]] = {
    "boolq": boolq.load,
    "cb": cb.load,
    "copa": copa.load,
    "rte": rte.load,
    "wic": wic.load,
    "cola": cola.load,
    "stsb": stsb.load,
    "mmlu": mmlu.load,
    "triviaqa_mc": triviaqa.load,
    "triviaqa_ptrue": triviaqa.load_ptrue,
    "syntaxgym": syntaxgym.load,
    "imppres": imppres.load,
    "implicature": implicature.load,
    "wsc": wsc.load,
    "winogrande": winogrande.load,
    "coqa": coqa.load,
    "grice": grice.load,
}


def load_task(name: str, data: str | None = None, limit: int | None = None, **options: Any) -> list[Any]:
    """Load task ``name`` (see :data:`TASKS`); ``options`` go to its loader (``split``, ...)."""
    if name not in TASKS:
        raise TaskError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](data=data, limit=limit, **options)
