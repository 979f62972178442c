"""Reward-model tasks: a prompt with a better and a worse response, in one or more formats.

The reward-collapse study (seed section 4.3) scores both responses of every pair with a reward
model. *Closed-ended* tasks have a correct and an incorrect answer, written in several response
formats (``0/1``, ``yes/no``, ``true/false``, a sentence); *open-ended* tasks have a preferred and
a rejected answer (one format, ``text``).

    from tasks.reward_pairs import load_pairs
    items = load_pairs("toy_closed", formats=["yes/no", "sentence"])
    items[0].prompt, items[0].chosen, items[0].rejected

Tasks (:data:`TASKS`): ``boolq`` (SuperGLUE BoolQ: passage + question), ``hh_pairwise``
(``AlekseyKorshuk/hh-rlhf-pairwise``), and two offline toy-world tasks in the toy pair's own
language, ``toy_closed`` (capital and past-tense facts) and ``toy_open`` (benign requests: a
helpful answer vs a refusal or an off-topic one), on the countries and verbs of the toy reward
model's training split, and the same on the held-out split (``toy_closed_heldout``,
``toy_open_heldout``). ``data`` as every task loader: a file, ``"fixture"``
or ``None`` for the hub (:mod:`tasks.sources`); the toy tasks read the toy world and take none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from tasks.errors import TaskError
from tasks.reward_pairs import closed, open_ended
from tasks.reward_pairs.items import OPEN_FORMAT, PairItem, select_formats

__all__ = ["OPEN_FORMAT", "PairItem", "TASKS", "TaskSpec", "load_pairs", "select_formats"]


@dataclass(frozen=True)
class TaskSpec:
    """A reward-pair task: ``kind`` (``closed`` / ``open``), its ``formats`` (the first is the
    default order), its loader, and whether it reads external data (``needs_data``: the hub or a
    file; else it builds its items from the toy world)."""

    name: str
    kind: str
    formats: tuple[str, ...]
    load: Callable[..., list[PairItem]]
    needs_data: bool


TASKS: dict[str, TaskSpec] = {
    "toy_closed": TaskSpec("toy_closed", "closed", closed.TOY_FORMATS, closed.load_toy, False),
    "toy_closed_heldout": TaskSpec("toy_closed_heldout", "closed", closed.TOY_FORMATS,
                                   partial(closed.load_toy, split="test", task="toy_closed_heldout"), False),
    "toy_open": TaskSpec("toy_open", "open", (OPEN_FORMAT,), open_ended.load_toy, False),
    "toy_open_heldout": TaskSpec("toy_open_heldout", "open", (OPEN_FORMAT,),
                                 partial(open_ended.load_toy, split="test", task="toy_open_heldout"), False),
    "boolq": TaskSpec("boolq", "closed", closed.BOOLQ_FORMATS, closed.load_boolq, True),
    "hh_pairwise": TaskSpec("hh_pairwise", "open", (OPEN_FORMAT,), open_ended.load_hh, True),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TaskError(f"unknown reward-pair task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name]


def load_pairs(name: str, data: str | None = "fixture", limit: int | None = None,
               formats: Sequence[str] | None = None) -> list[PairItem]:
    """Items of task ``name`` in ``formats`` (default all of the task's), item-major: every
    format of item 0, then item 1, ... A format the task does not have raises TaskError naming
    its formats."""
    spec = get_task(name)
    chosen = select_formats(name, spec.formats, formats)
    if not spec.needs_data and data not in (None, "fixture"):
        raise TaskError(f"task {name!r} is built from the toy world and reads no data file; drop its --data")
    kwargs = {"data": data} if spec.needs_data else {}
    return spec.load(limit=limit, formats=chosen, **kwargs)
