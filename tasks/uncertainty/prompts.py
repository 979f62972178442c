"""The urn contexts as text: several wordings per context, as multiple-choice items.

*Production* (:func:`production_items`): a context ``(access, observation)`` told in one of
:data:`PRODUCTION_WORDINGS`, ending where the speaker's expression begins ("... The next ball
will" for the simple set, "... It" for the complex one); the options are the expressions'
phrases (:mod:`tasks.uncertainty.paradigm`), so the model's distribution over the options is
its choice of expression.

*Interpretation* (:func:`interpretation_items`): a speaker's sentence (``"It is probably likely
that the next ball is red."``) told in one of :data:`INTERPRETATION_WORDINGS`, ending where the
number of red balls in the urn follows; the options are `` 0`` .. `` 10``.

Items are :class:`tasks.items.MCItem`; ``label`` is the answer of a fixed proportion rule
(:func:`tasks.uncertainty.paradigm.rule_expression`, ``RULE_STATE``), used only as the answer of
few-shot demonstrations (:func:`with_shots`): there is no correct expression. ``meta`` holds
``kind``, ``set``, ``wording``, ``codes`` (one per option) and the context (``access``,
``observation``) or the ``expression``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.errors import TaskError
from tasks.items import MCItem, build_fewshot
from tasks.uncertainty.paradigm import (ACCESS, N_BALLS, RULE_STATE, STATES, context_id, contexts, expressions,
                                        rule_expression)

KINDS = ("production", "interpretation")
_LEAD = {"simple": "The next ball will", "complex": "It"}


def _were(n: int) -> str:
    return "was" if n == 1 else "were"


# Each wording: a function of (access, observation) to the text before the speaker's lead-in.
PRODUCTION_WORDINGS = (
    lambda a, o: (f"An urn holds {N_BALLS} balls. Some of them are red. You draw {a} of the balls and see that {o} "
                  f"of them {_were(o)} red. You say how likely it is that the next ball drawn is red:"),
    lambda a, o: (f"Alice looks at {a} of the {N_BALLS} balls in an urn. {o} of the balls she saw {_were(o)} red. "
                  "Asked whether the next ball from the urn is red, she says:"),
    lambda a, o: f"Q: {o} of {a} balls drawn from an urn of {N_BALLS} {_were(o)} red. Is the next ball red?\nA:",
)
INTERPRETATION_WORDINGS = (
    lambda s: (f"An urn holds {N_BALLS} balls. Some of them are red. Someone who drew some of the balls says: "
               f"\"{s}\" How many of the {N_BALLS} balls are red? Answer:"),
    lambda s: f"Alice looked at some of the {N_BALLS} balls in an urn and said: \"{s}\" The number of red balls is",
    lambda s: f"Q: Bob saw a few balls of an urn of {N_BALLS} and said \"{s}\" How many red balls are in the urn?\nA:",
)


def _wordings(n: int | None, available: Sequence) -> range:
    if n is None:
        return range(len(available))
    if not 1 <= n <= len(available):
        raise TaskError(f"wordings must be 1..{len(available)}, got {n}")
    return range(n)


def production_items(set_name: str, n_wordings: int | None = None, access: tuple[int, ...] = ACCESS) -> list[MCItem]:
    """One item per context x wording (the first ``n_wordings``, default all)."""
    exprs = expressions(set_name)
    items = []
    for w in _wordings(n_wordings, PRODUCTION_WORDINGS):
        for a, o in contexts(access):
            rule = rule_expression(set_name, a, o)
            items.append(MCItem(
                id=f"production-{set_name}-{context_id(a, o)}-w{w}", task="uncertainty_production",
                context=f"{PRODUCTION_WORDINGS[w](a, o)} {_LEAD[set_name]}",
                options=[f" {e.phrase}" for e in exprs], label=[e.code for e in exprs].index(rule),
                category=f"w{w}",
                meta={"kind": "production", "set": set_name, "wording": w, "access": a, "observation": o,
                      "codes": [e.code for e in exprs]}))
    return items


def interpretation_items(set_name: str, n_wordings: int | None = None) -> list[MCItem]:
    """One item per expression x wording; options `` 0`` .. `` 10`` red balls."""
    items = []
    for w in _wordings(n_wordings, INTERPRETATION_WORDINGS):
        for e in expressions(set_name):
            items.append(MCItem(
                id=f"interpretation-{set_name}-{e.code.replace(' ', '+')}-w{w}", task="uncertainty_interpretation",
                context=INTERPRETATION_WORDINGS[w](e.sentence), options=[f" {s}" for s in STATES],
                label=RULE_STATE[e.code], category=f"w{w}",
                meta={"kind": "interpretation", "set": set_name, "wording": w, "expression": e.code,
                      "codes": [str(s) for s in STATES]}))
    return items


def items(kind: str, set_name: str, n_wordings: int | None = None) -> list[MCItem]:
    if kind not in KINDS:
        raise TaskError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    return production_items(set_name, n_wordings) if kind == "production" else interpretation_items(set_name, n_wordings)


def with_shots(pool: Sequence[MCItem], item: MCItem, k: int, seed: int) -> MCItem:
    """``item`` after ``k`` solved demonstrations (rule answers) of the same kind, set and
    wording, other contexts; drawn by :func:`tasks.items.build_fewshot` (seeded per item)."""
    same = [x for x in pool if x.meta["kind"] == item.meta["kind"] and x.meta["set"] == item.meta["set"]
            and x.meta["wording"] == item.meta["wording"]]
    return build_fewshot(same, item, k, seed)
