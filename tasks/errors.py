"""Errors for bad task data or options: each names the file, line and field, and what is valid.

``tasks`` imports nothing else of ours; ``interp.errors`` is the one exception, a leaf module
(it imports nothing), so that every error of the toolkit is an ``interp.InterpError`` and a
study's CLI prints it as one line (``studies._common.run_cli``).
"""

from __future__ import annotations

from interp.errors import InterpError


class TaskError(InterpError):
    """A task's data or options are unusable: a malformed record, an unknown task, style,
    split or relation, too few items for a few-shot prompt."""


class MissingDatasetError(TaskError, FileNotFoundError):
    """A task's data is neither a local file nor reachable on the hub."""
