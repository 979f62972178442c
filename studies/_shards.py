"""Work lists, chunks and shards: which part of a study's work a run (or a shard) computes.

Batches and exact resumption: numbers of a prompt can depend on the batch it ran in (by
~1e-7, through matmul shapes and padding). The full, ordered work list is therefore cut into
fixed chunks (:func:`chunked`) and a chunk is recomputed as a whole unless all its keys are done
(:func:`pending`), so every row comes from the same batch as in an uninterrupted run (with the
same ``--batch-size``).

Shards: ``--shard i/n`` (:func:`parse_shard`, 1-based ``i``) takes the i-th of n contiguous,
near-equal parts of the study's whole work list, every model's every chunk in run order
(:func:`shard_plan`), so shard 1 of 2 does the base model and shard 2 the chat model. A shard
writes ``results.shard-i-of-n.jsonl`` and ``fingerprint.shard-i-of-n.json`` (:func:`results_name`,
:func:`fingerprint_name`) and no summary; ``studies._results.read_results`` merges every
``results*.jsonl`` of the folder, so shards run anywhere and merge by copying both files of each
shard into one folder, where ``--summary-only`` checks their fingerprints agree and every shard
is there (``studies._identity.open_run``), and writes the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from studies._common import StudyError
from studies._results import Key, ResultsLog


# -- shards and their files -----------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), as in ``--shard 2/4``."""

    index: int = 1
    count: int = 1

    def bounds(self, n_units: int) -> tuple[int, int]:
        """``[start, stop)`` of this shard's contiguous part of ``n_units``; parts differ in size by at most one."""
        return (self.index - 1) * n_units // self.count, self.index * n_units // self.count

    @property
    def is_whole(self) -> bool:
        return self.count == 1

    @property
    def label(self) -> str:
        return f"shard {self.index} of {self.count}"


def parse_shard(text: str | None) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; ``None`` -> the whole run. Raises StudyError on bad input."""
    if text is None:
        return Shard()
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise StudyError(f"--shard must look like i/n with integers, e.g. 1/4; got {text!r}") from None
    if not (n >= 1 and 1 <= i <= n):
        raise StudyError(f"--shard i/n needs 1 <= i <= n, got {text!r}")
    return Shard(i, n)


def results_name(shard: Shard, stem: str = "results", suffix: str = ".jsonl") -> str:
    """``results.jsonl``, or ``results.shard-i-of-n.jsonl`` for a shard (other ``stem``/``suffix``
    name the shard's other files the same way)."""
    return f"{stem}{suffix}" if shard.is_whole else f"{stem}.shard-{shard.index}-of-{shard.count}{suffix}"


def fingerprint_name(shard: Shard) -> str:
    """``fingerprint.json``, or ``fingerprint.shard-i-of-n.json``: beside its results file."""
    return results_name(shard, "fingerprint", ".json")


# -- work lists -----------------------------------------------------------------------------------
def chunked(items: Sequence, size: int) -> list[list]:
    if size < 1:
        raise StudyError(f"batch size must be >= 1, got {size}")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def pending(chunks: Sequence[Sequence], key_of: Callable[[object], Key], log: ResultsLog,
            owned: Iterable[int] | None = None) -> list[tuple[int, list]]:
    """``(chunk index, chunk)`` for each chunk in ``owned`` (default all) not complete in ``log``
    (a partly done chunk is recomputed whole; see module doc)."""
    indices = range(len(chunks)) if owned is None else owned
    return [(i, list(chunks[i])) for i in indices if not all(log.done(key_of(item)) for item in chunks[i])]


def pending_chunks(
    items: Sequence, size: int, key_of: Callable[[object], Key], log: ResultsLog, shard: Shard = Shard()
) -> list[tuple[int, list]]:
    """:func:`pending` chunks of ``size`` of one work list, this shard's contiguous part of them."""
    chunks = chunked(items, size)
    return pending(chunks, key_of, log, range(*shard.bounds(len(chunks))))


MEMBERS = ("base", "chat")  # interp.registry.MEMBERS, in the order a pair loads them


def shard_plan(n_chunks: int, shard: Shard, members: Sequence[str] = MEMBERS) -> dict[str, list[int]]:
    """member -> the indices of its chunks this shard runs. The whole work list is every
    member's ``n_chunks`` chunks, member by member (the order a run loads the models); a shard
    is the i-th of n contiguous parts of it whose sizes differ by at most one, so a shard loads
    as few models as it can."""
    units = [(m, c) for m in members for c in range(n_chunks)]
    start, stop = shard.bounds(len(units))
    plan: dict[str, list[int]] = {m: [] for m in members}
    for member, chunk in units[start:stop]:
        plan[member].append(chunk)
    return plan


def describe_plan(plan: dict[str, list[int]], n_chunks: int, shard: Shard) -> str:
    """``shard 1 of 2: 3 of 6 chunks of the whole run (base 3, chat 0)``."""
    mine = sum(len(v) for v in plan.values())
    parts = ", ".join(f"{m} {len(v)}" for m, v in plan.items())
    return f"{shard.label}: {mine} of {n_chunks * len(plan)} chunks of the whole run ({parts})"


def load_members(pair, needed: Iterable[str]) -> Iterator[tuple[str, object]]:
    """``(member, lm)`` for the members in ``needed``, one in memory at a time: through the
    pair (which checks the two share a tokenizer) when both are needed, else just the one."""
    needed = set(needed)
    if needed >= set(MEMBERS):
        yield from pair
        return
    for member in MEMBERS:
        if member in needed:
            lm = pair.load(member)
            yield member, lm
            del lm



def pending_by_member(chunks: Sequence[Sequence], key_of: Callable[[str], Callable[[object], Key]], log: ResultsLog,
                      shard: Shard) -> dict[str, list[tuple[int, list]]]:
    """member -> its :func:`pending` chunks in this shard's part of the whole work list
    (:func:`shard_plan`; ``chunks`` are every member's, ``key_of(member)`` their row keys). A
    shard first prints which part it runs (:func:`describe_plan`)."""
    plan = shard_plan(len(chunks), shard)
    if not shard.is_whole:
        print(describe_plan(plan, len(chunks), shard))
    return {member: pending(chunks, key_of(member), log, owned) for member, owned in plan.items()}
