"""The item of a reward-pair task, and format selection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.errors import TaskError

OPEN_FORMAT = "text"  # the one format of an open-ended task: the responses as written


@dataclass(frozen=True)
class PairItem:
    """One prompt with a better and a worse response, in one format.

    Attributes:
        id: the item's id within its task, shared by its formats (``"boolq-3"``).
        task: registry name (``"boolq"``).
        kind: ``"closed"`` (correct vs incorrect answer) or ``"open"`` (preferred vs rejected).
        format: the response format (``"yes/no"``, ...; ``"text"`` for open tasks).
        prompt: the user turn the responses answer.
        chosen: the correct (closed) or preferred (open) response.
        rejected: the incorrect or rejected response.
        question: the prompt a model is sampled on for this item (the same for all its formats;
            for the toy world's yes/no prompts, the open question they verify).
        reference: what a correct sample says, for annotators (closed tasks), else ``None``.
        meta: anything else (the label, the kind of rejected answer, ...).
    """

    id: str
    task: str
    kind: str
    format: str
    prompt: str
    chosen: str
    rejected: str
    question: str
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def select_formats(task: str, available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """``wanted`` (default all ``available``), checked: an unknown one raises TaskError listing the task's formats."""
    if wanted is None:
        return list(available)
    bad = [f for f in wanted if f not in available]
    if bad:
        raise TaskError(f"task {task!r} has no response format {bad[0]!r}; its formats: {', '.join(available)}")
    if not wanted:
        raise TaskError(f"task {task!r}: no format selected; its formats: {', '.join(available)}")
    return list(dict.fromkeys(wanted))
