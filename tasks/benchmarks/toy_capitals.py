"""Toy-world capitals as 4-way multiple choice: the task the embedded ``toy`` pair can solve.

Context: a prompt of :func:`tasks.toy_world.prompts` (default ``"zero"``: ``"The capital of
Albania is"``); options: the capital and three other countries' capitals (distinct, drawn by
a generator seeded with ``(seed, subject)``), each with a leading space; the gold position is
random too. ``split`` is the toy world's (``"test"``: held-out facts, the default; ``"train"``;
``"all"``). The data ship with the repository, so ``data`` is ``None`` or ``"fixture"``.

Not in ``tasks.benchmarks.TASKS`` (whose loaders all follow the hub/file/fixture contract);
``studies.benchmarks`` adds it to the tasks it knows.
"""

from __future__ import annotations

import random

from tasks.errors import TaskError
from tasks.items import MCItem

NAME = "toy_capitals"


def load(
    split: str = "test",
    data: str | None = None,
    limit: int | None = None,
    style: str = "zero",
    n_options: int = 4,
    seed: int = 0,
) -> list[MCItem]:
    """Capital questions of the toy world as MC items (see the module docstring)."""
    from tasks.toy_world import load_facts, prompts

    if data not in (None, "fixture"):
        raise TaskError(f"task {NAME!r} reads the toy world shipped in tasks/toy_world; it takes no data file (got {data!r})")
    if split == "validation":  # the study's default split name for hub tasks
        split = "test"
    capitals = sorted({f["answer"] for f in load_facts(relation="capital")})
    items = []
    for record in prompts(style, split=split, relation="capital"):
        rng = random.Random(f"{seed}:{record['subject']}")
        options = rng.sample([c for c in capitals if c != record["answer"]], n_options - 1)
        label = rng.randrange(n_options)
        options.insert(label, record["answer"])
        items.append(MCItem(
            id=f"{NAME}-{style}-{record['subject']}",
            task=NAME,
            context=record["prompt"],
            options=[" " + o for o in options],
            label=label,
            category=record.get("split"),
            meta={"subject": record["subject"], "style": style, "choices": options},
        ))
        if limit is not None and len(items) >= limit:
            break
    return items
