"""The urn paradigm of Herbstritt & Franke (2016, 2019) and its expressions of uncertainty.

An urn holds :data:`N_BALLS` balls, some red. A speaker draws ``access`` of them (one of
:data:`ACCESS`) and sees ``observation`` red ones (``0..access``), then says how likely it is
that a ball drawn next is red. A *context* is one ``(access, observation)`` pair:
:func:`contexts` lists every pair of the paradigm (28); the human production experiments used
15 of them (:data:`EXPERIMENT_CONTEXTS`).

Expressions carry the codes of the authors' data files (``mic-he/ProbExp-HOU``):

- ``simple``: ``certainly``, ``certainlyNot``, ``probably``, ``probablyNot``, ``possibly``
  (their simple-expression experiment: five messages, "possibly not" was not offered);
- ``complex``: a modifier (``is``, ``is_certainly``, ``is_probably``, ``might_be``) times an
  adjective (``likely``, ``possible``, ``unlikely``), coded ``"<modifier> <adjective>"``, e.g.
  ``"is_probably likely"``; their production files fold "probable" into "likely" (column
  ``answer3``), and so do we.

Context codes (``value`` in their CSVs): ``10 * access + observation`` (``42`` = 4 seen, 2 red),
``access 10`` as ``100 + observation`` (``107``), and ``<10, 10>`` as ``1010`` (``110`` in some
raw files): :func:`decode_value` reads all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.errors import TaskError

N_BALLS = 10
ACCESS = (2, 4, 8, 10)
STATES = tuple(range(N_BALLS + 1))  # red balls in the urn: the interpretation's answer options
EXPERIMENT_CONTEXTS = ((2, 0), (2, 2), (4, 1), (4, 2), (4, 3), (8, 0), (8, 2), (8, 4), (8, 6), (8, 8),
                       (10, 2), (10, 3), (10, 5), (10, 7), (10, 8))


@dataclass(frozen=True)
class Expression:
    """One expression: its ``code`` in the human data, the ``phrase`` a speaker says after
    "The next ball" (simple) or "It" (complex), and the ``sentence`` a listener hears."""

    code: str
    phrase: str
    sentence: str


def _simple(code: str, phrase: str) -> Expression:
    return Expression(code, phrase, f"The next ball will {phrase}.")


def _complex(modifier: str, adjective: str) -> Expression:
    phrase = f"{modifier.replace('_', ' ')} {adjective}"
    return Expression(f"{modifier} {adjective}", phrase, f"It {phrase} that the next ball is red.")


MODIFIERS = ("is", "is_certainly", "is_probably", "might_be")
ADJECTIVES = ("likely", "possible", "unlikely")
EXPRESSIONS: dict[str, tuple[Expression, ...]] = {
    "simple": (_simple("certainly", "certainly be red"), _simple("probably", "probably be red"),
               _simple("possibly", "possibly be red"), _simple("probablyNot", "probably not be red"),
               _simple("certainlyNot", "certainly not be red")),
    "complex": tuple(_complex(m, a) for m in MODIFIERS for a in ADJECTIVES),
}
SETS = tuple(EXPRESSIONS)


def expressions(set_name: str) -> tuple[Expression, ...]:
    """The expressions of ``set_name`` (one of :data:`SETS`), in a fixed order."""
    if set_name not in EXPRESSIONS:
        raise TaskError(f"unknown expression set {set_name!r}; valid: {', '.join(SETS)}")
    return EXPRESSIONS[set_name]


def codes(set_name: str) -> tuple[str, ...]:
    return tuple(e.code for e in expressions(set_name))


def contexts(access: tuple[int, ...] = ACCESS) -> list[tuple[int, int]]:
    """Every ``(access, observation)`` pair of the paradigm for the given access levels."""
    bad = [a for a in access if a not in ACCESS]
    if bad:
        raise TaskError(f"access {bad[0]} is not in the paradigm; valid: {', '.join(map(str, ACCESS))}")
    return [(a, o) for a in access for o in range(a + 1)]


def check_context(access: int, observation: int, where: str = "") -> None:
    if access not in ACCESS or not 0 <= observation <= access:
        raise TaskError(f"{where}access {access}, observation {observation} is no context of the paradigm: access is "
                        f"one of {', '.join(map(str, ACCESS))} and observation 0..access")


def decode_value(value: int, where: str = "") -> tuple[int, int]:
    """The authors' context code -> ``(access, observation)`` (module doc); TaskError if no context."""
    if value in (1010, 110):
        pair = (10, 10)
    elif value >= 100:
        pair = (10, value - 100)
    else:
        pair = divmod(value, 10)
    check_context(*pair, where=f"{where}value {value}: ")
    return pair


def encode_value(access: int, observation: int) -> int:
    """``(access, observation)`` -> the authors' code (``(10, 10)`` -> 1010)."""
    check_context(access, observation)
    return 1010 if (access, observation) == (10, 10) else 10 * access + observation


def context_id(access: int, observation: int) -> str:
    """``"a4o2"``: a readable, unambiguous id of a context."""
    return f"a{access}o{observation}"


def rule_expression(set_name: str, access: int, observation: int) -> str:
    """The code a fixed proportion rule picks for a context: the answer of few-shot
    demonstrations, which teach the format (and, inevitably, this rule; see the study's doc)."""
    share = observation / access
    if set_name == "simple":
        cuts = ((0.0, "certainlyNot"), (0.4, "probablyNot"), (0.6, "possibly"), (0.999, "probably"))
        default = "certainly"
    else:
        cuts = ((0.0, "is_certainly unlikely"), (0.4, "is unlikely"), (0.6, "is possible"), (0.999, "is likely"))
        default = "is_certainly likely"
    expressions(set_name)
    return next((code for cut, code in cuts if share <= cut), default)


# The number of red balls a listener following the same rule would guess from an expression.
RULE_STATE = {"certainly": 10, "probably": 7, "possibly": 5, "probablyNot": 3, "certainlyNot": 0,
              "is likely": 7, "is possible": 5, "is unlikely": 3, "is_certainly likely": 9, "is_certainly possible": 6,
              "is_certainly unlikely": 1, "is_probably likely": 7, "is_probably possible": 5,
              "is_probably unlikely": 3, "might_be likely": 6, "might_be possible": 5, "might_be unlikely": 4}
