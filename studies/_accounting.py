"""Every item accounted for: how many items each group of result rows had, scored, skipped
(and why) and truncated, as summary columns and console notes.

A result row is *skipped* when its ``skipped`` field holds a reason (e.g. "longer than the
model's 128 positions (--truncate skip)"), and *truncated* when its ``truncated`` field (context
tokens cut from the left to fit the model) is above 0. Studies put :data:`COLUMNS` into every
``summary.csv`` row of a group and print :func:`notes` for the groups that lost or cut items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

COLUMNS = ("n_items", "n_scored", "n_skipped", "skip_reason", "n_truncated")


def count(rows: Sequence[dict]) -> dict:
    """:data:`COLUMNS` of one group of rows; ``skip_reason`` joins distinct reasons with "; "
    (empty when nothing was skipped)."""
    reasons = [r["skipped"] for r in rows if r.get("skipped")]
    return {"n_items": len(rows), "n_scored": len(rows) - len(reasons), "n_skipped": len(reasons),
            "skip_reason": "; ".join(dict.fromkeys(reasons)),
            "n_truncated": sum(1 for r in rows if not r.get("skipped") and (r.get("truncated") or 0) > 0)}


def by_group(rows: Sequence[dict], keys: Sequence[str]) -> dict[tuple, dict]:
    """Group key (values of ``keys``, in order of first appearance) -> :func:`count`."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return {key: count(g) for key, g in groups.items()}


def notes(counts: dict[tuple, dict], label: Callable[[tuple], str], member_index: int = 0) -> list[str]:
    """Console lines naming each group that lost (or left-truncated) items, e.g.
    ``boolq 0-shot raw (base, chat): 12 of 12 items skipped: longer than the model's 128
    positions (--truncate skip)``. Groups that differ only by the model (position
    ``member_index`` of the key) and have the same counts share one line."""
    merged: dict[tuple, list[str]] = {}
    for key, c in counts.items():
        rest = key[:member_index] + key[member_index + 1:]
        merged.setdefault((rest, c["n_items"], c["n_skipped"], c["skip_reason"], c["n_truncated"]), []).append(
            str(key[member_index]))
    lines = []
    for (rest, n_items, n_skipped, reason, n_truncated), members in merged.items():
        where = f"{label(rest)} ({', '.join(members)})"
        if n_skipped:
            nothing = ", nothing scored" if n_skipped == n_items else ""
            lines.append(f"{where}: {n_skipped} of {n_items} items skipped{nothing}: {reason}")
        if n_truncated:
            lines.append(f"{where}: {n_truncated} of {n_items} items left-truncated to fit the model (--truncate left)")
    return lines
