"""The common item format and the few-shot prompt builder.

An :class:`MCItem` is one multiple-choice question scored by continuation log-probability:
the model reads ``context`` and each entry of ``options`` is scored as its continuation.
Options carry their own leading separator (``" yes"``), so ``context + option`` is exactly
the scored string.

An item with a ``continuation`` is scored *partially* (Trinh & Le 2018, as lm-evaluation-harness
scores WinoGrande and WSC273): each option is substituted into the text, ``context + option``
is read, and only the shared ``continuation`` after it is scored, so the options compete on how
well the rest of the sentence follows from them, not on their own probability.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tasks.errors import TaskError

FEWSHOT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice item.

    Attributes:
        id: unique within its task (``"boolq-12"``).
        task: registry name of the task (``"boolq"``).
        context: prompt text up to where the options continue it.
        options: continuations, each starting with the separator it needs (``" yes"``).
        label: index of the correct option.  Regression tasks (STS-B) bucket their target
            into an option and keep the raw target in ``meta["score"]``.
        category: optional grouping (MMLU subject, ImpPres trigger), used for balanced
            few-shot sampling and per-category results.
        continuation: for partial scoring (module doc), the text after the option, shared by
            every option and the only text scored (``" is too large."``); ``None`` (default):
            the options themselves are scored. A partial item's context may be empty (the
            option starts the sentence).
        meta: anything else the source provides (raw fields, the preamble, ...).  A
            ``meta["preamble"]`` that ``context`` starts with (MMLU's subject header) is
            written once, at the top, by :func:`build_fewshot`.

    Raises TaskError on a non-string or empty context, fewer than two options, an empty or duplicate
    option, or a label out of range.  Instances are immutable but not hashable (the list
    and dict fields are not).
    """

    id: str
    task: str
    context: str
    options: list[str]
    label: int
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    continuation: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.context, str):
            raise TaskError(f"item {self.id!r}: context must be a string, got {type(self.context).__name__}")
        if not isinstance(self.options, list) or not all(isinstance(o, str) for o in self.options):
            raise TaskError(f"item {self.id!r}: options must be a list of strings, got {self.options!r:.80}")
        if self.continuation is not None and (not isinstance(self.continuation, str) or not self.continuation.strip()):
            raise TaskError(f"item {self.id!r}: a partial item's continuation must be non-empty text, "
                            f"got {self.continuation!r:.60}")
        if not self.context.strip() and self.continuation is None:
            raise TaskError(f"item {self.id!r}: empty context")
        if len(self.options) < 2:
            raise TaskError(f"item {self.id!r}: needs at least two options, got {self.options!r}")
        if any(not o.strip() for o in self.options):
            raise TaskError(f"item {self.id!r}: empty option in {self.options!r}")
        if len(set(self.options)) != len(self.options):
            raise TaskError(f"item {self.id!r}: duplicate options in {self.options!r}")
        if not isinstance(self.label, int) or isinstance(self.label, bool):
            raise TaskError(f"item {self.id!r}: label must be an int, got {self.label!r}")
        if not 0 <= self.label < len(self.options):
            raise TaskError(
                f"item {self.id!r}: label {self.label} out of range for {len(self.options)} options"
            )

    @property
    def answer(self) -> str:
        """The correct option."""
        return self.options[self.label]

    @property
    def partial(self) -> bool:
        """Whether the item is scored partially (it has a shared ``continuation``)."""
        return self.continuation is not None

    def solved(self) -> str:
        """The context followed by its correct option, and by the continuation of a partial
        item (a few-shot demonstration)."""
        return self.context + self.answer + (self.continuation or "")


@dataclass(frozen=True)
class GenItem:
    """One free-generation item: the model continues ``context`` greedily and its answer is
    compared with ``answers`` (CoQA).

    Attributes:
        id, task, category, meta: as :class:`MCItem`.
        context: the prompt, ending where the answer starts (``"...\n\nA:"``).
        answers: the gold answers (at least one; the first is the demonstration answer).
        messages: the same prompt as chat turns (``{"role", "content"}`` dicts ending with a
            user turn), rendered through the chat template when one is used, so that a dialogue
            history becomes the conversation's earlier turns; ``None``: the context is one user turn.
    """

    id: str
    task: str
    context: str
    answers: list[str]
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.context, str) or not self.context.strip():
            raise TaskError(f"item {self.id!r}: context must be non-empty text")
        if not isinstance(self.answers, list) or not self.answers or not all(isinstance(a, str) for a in self.answers):
            raise TaskError(f"item {self.id!r}: answers must be a non-empty list of strings, got {self.answers!r:.80}")
        if self.messages is not None and (not self.messages or self.messages[-1].get("role") != "user"):
            raise TaskError(f"item {self.id!r}: messages must end with a user turn")

    @property
    def answer(self) -> str:
        """The demonstration answer (the first gold answer)."""
        return self.answers[0]

    def solved(self) -> str:
        """The context followed by its answer (a few-shot demonstration)."""
        return f"{self.context} {self.answer.strip()}"


def _strip_preamble(item: MCItem) -> str:
    preamble = item.meta.get("preamble")
    if preamble and item.context.startswith(preamble):
        return item.context[len(preamble) :]
    return item.context


def _group_key(item: MCItem, balanced_by: str) -> str:
    return str(item.category) if balanced_by == "category" else str(getattr(item, "label", None))


def _same_question(a, b) -> bool:
    return a.context == b.context and getattr(a, "options", None) == getattr(b, "options", None)


def build_fewshot(
    items_pool: Sequence[MCItem | GenItem],
    item: MCItem | GenItem,
    k: int,
    seed: int,
    balanced_by: Literal["category", "label"] | None = None,
    separator: str = FEWSHOT_SEPARATOR,
) -> MCItem | GenItem:
    """Return ``item`` (an :class:`MCItem` or :class:`GenItem`) with ``k`` solved examples from
    ``items_pool`` prepended.

    Examples are drawn without replacement by a generator seeded with ``(seed, item.id)``,
    so each item gets its own reproducible draw.  The item itself (same id, or the same
    context and options) is never drawn.  ``balanced_by="category"`` or ``"label"`` draws
    round-robin over the groups (in a seeded order), so group counts differ by at most one
    where the pool allows.  A shared preamble (``meta["preamble"]``, e.g. MMLU's header)
    is written once at the top.  The returned item records ``meta["fewshot_ids"]``.

    Raises TaskError if the pool (without the item) has fewer than ``k`` items, or on an
    unknown ``balanced_by``.
    """
    if k < 0:
        raise TaskError(f"k must be >= 0, got {k}")
    if balanced_by not in (None, "category", "label"):
        raise TaskError(f"balanced_by must be None, 'category' or 'label', got {balanced_by!r}")
    if k == 0:
        return dataclasses.replace(item, meta={**item.meta, "fewshot_ids": [], "k": 0})
    candidates = _candidates(items_pool, item)
    if len(candidates) < k:
        raise TaskError(
            f"few-shot pool has {len(candidates)} items besides {item.id!r}, need k={k}"
        )
    rng = random.Random(f"{seed}:{item.id}")
    if balanced_by is None:
        chosen = rng.sample(candidates, k)
    else:
        groups: dict[str, list[MCItem]] = defaultdict(list)
        for x in candidates:
            groups[_group_key(x, balanced_by)].append(x)
        order = sorted(groups)
        rng.shuffle(order)
        for key in order:
            rng.shuffle(groups[key])
        chosen = []
        while len(chosen) < k:
            for key in order:
                if groups[key] and len(chosen) < k:
                    chosen.append(groups[key].pop())
        rng.shuffle(chosen)
    return _with_demos(item, chosen, separator)


def _candidates(pool: Sequence[MCItem | GenItem], item: MCItem | GenItem) -> list[MCItem | GenItem]:
    """The pool without the item itself (same id, or the same context and options)."""
    return [x for x in pool if x.id != item.id and not _same_question(x, item)]


def _with_demos(item: MCItem, chosen: Sequence[MCItem], separator: str) -> MCItem:
    """``item`` with the solved ``chosen`` prepended (its preamble, if any, once at the top)."""
    preamble = item.meta.get("preamble") or ""
    if not item.context.startswith(preamble):
        preamble = ""
    demos = [_strip_preamble(x) + x.solved()[len(x.context):] for x in chosen]
    context = preamble + separator.join([*demos, _strip_preamble(item)])
    return dataclasses.replace(
        item,
        context=context,
        meta={**item.meta, "fewshot_ids": [x.id for x in chosen], "k": len(chosen)},
    )


@dataclass(frozen=True)
class DemoSource:
    """Where some of an item's demonstrations come from: ``count`` solved items of ``task``
    (only its ``category`` when given), e.g. ``DemoSource("mmlu", 2, "astronomy")``."""

    task: str
    count: int
    category: str | None = None

    def __str__(self) -> str:
        return f"{self.task}{'' if self.category is None else ':' + self.category}={self.count}"


def build_mixed_fewshot(
    item: MCItem,
    sources: Sequence[DemoSource],
    pools: dict[str, Sequence[MCItem]],
    seed: int,
    separator: str = FEWSHOT_SEPARATOR,
) -> MCItem:
    """Return ``item`` with demonstrations drawn from several tasks or categories.

    For each source in order, ``count`` items of ``pools[source.task]`` (of its category, if
    given; never the item itself) are drawn without replacement by a generator seeded with
    ``(seed, item.id)``; all drawn demonstrations are then shuffled by the same generator, so
    the composition is fixed and the order is not. Each demonstration keeps its own task's
    format. ``meta["fewshot_ids"]`` lists them in prompt order, ``meta["demos_from"]`` the
    sources. Raises TaskError on an unknown task or category or a source with too few items.
    """
    rng = random.Random(f"{seed}:{item.id}:mixed")
    chosen: list[MCItem] = []
    for source in sources:
        if source.count < 1:
            raise TaskError(f"demonstration source {source}: the count must be >= 1")
        if source.task not in pools:
            raise TaskError(f"demonstration source {source}: unknown task; loaded: {', '.join(sorted(pools))}")
        pool = _candidates(pools[source.task], item)
        if source.category is not None:
            categories = sorted({str(x.category) for x in pools[source.task] if x.category is not None})
            if source.category not in categories:
                raise TaskError(f"demonstration source {source}: task {source.task!r} has no category "
                                f"{source.category!r}; its categories: {', '.join(categories) or 'none'}")
            pool = [x for x in pool if x.category == source.category]
        pool = [x for x in pool if all(x.id != c.id for c in chosen)]
        if len(pool) < source.count:
            raise TaskError(f"demonstration source {source}: only {len(pool)} items to draw from for {item.id!r}")
        chosen += rng.sample(pool, source.count)
    rng.shuffle(chosen)
    out = _with_demos(item, chosen, separator)
    return dataclasses.replace(out, meta={**out.meta, "demos_from": [str(s) for s in sources]})
