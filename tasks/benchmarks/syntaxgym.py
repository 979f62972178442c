"""SyntaxGym test suites: minimal-pair conditions scored by region surprisal.

A suite (its JSON format: ``meta``, ``region_meta``, ``items`` with ``conditions`` of
``regions``, and ``predictions`` with ``formula`` strings) does not fit the one-context
:class:`~tasks.items.MCItem`: the conditions of an item differ before the critical region.
So each suite item becomes a :class:`SyntaxGymItem`:

- ``conditions[name]`` is the ordered tuple of ``(region_number, content)`` pairs;
- ``sentence(name)`` is the string a model reads: non-empty region contents joined by single
  spaces (as SyntaxGym does); ``region_spans(name)`` gives each region's character span in
  it (empty regions get a zero-width span at their position);
- a scorer (:mod:`probes.syntaxgym`) computes the surprisal of every region (the sum over
  its tokens, under ``meta.metric``; tokens are assigned to a region by their characters, a
  token's leading space belongs to the region after it: :mod:`probes.surprisal`) and passes
  ``{(condition, region_number): value}`` to ``item.evaluate``, which returns one bool per
  prediction;
- ``circuit`` is the suite's class in Hu et al. (2020) (:data:`CIRCUITS`, or ``meta.circuit``).

Prediction formulas follow SyntaxGym's grammar: region references ``(6;%match%)`` (``*``
for the whole sentence), numbers, unary minus, ``+ -``, comparisons ``< > =`` (and ``<= >=``;
``=`` is ``isclose`` with SyntaxGym's tolerances rtol 1e-5, atol 1e-3), ``&``, ``|``, and
grouping with ``( )`` or ``[ ]``.  Unknown conditions or regions raise at load time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.errors import TaskError
from tasks.sources import FIXTURE, FIXTURE_DIR, HubSource, MissingDatasetError, hub_offline, how_to_provide

NAME = "syntaxgym"
EQUALITY_RTOL = 1e-5
EQUALITY_ATOL = 1e-3
SOURCE = HubSource(
    path="cpllab/syntaxgym",
    name="all",
    fields=(
        "a SyntaxGym suite .json (or a folder of them) with meta.name, region_meta, "
        "predictions[].formula and items[].item_number / conditions[].condition_name / "
        "conditions[].regions[].region_number / .content"
    ),
    fixture="syntaxgym",  # a folder of suites
)

# SyntaxGym's circuits (Hu et al. 2020, "A Systematic Assessment of Syntactic Generalization in
# Neural Language Models", Table 2), by suite-name prefix; a suite's meta.circuit overrides it.
CIRCUITS = (
    ("number_", "Agreement"),
    ("center_embed", "Center Embedding"),
    ("mvrr", "Garden-Path Effects"),
    ("npz_", "Garden-Path Effects"),
    ("subordination", "Gross Syntactic State"),
    ("npi_", "Licensing"),
    ("reflexive_", "Licensing"),
    ("cleft", "Long-Distance Dependencies"),
    ("fgd", "Long-Distance Dependencies"),
)
UNKNOWN_CIRCUIT = "unclassified"
METRICS = ("sum", "mean", "median", "range", "max", "min", "first", "last")  # SyntaxGym's region metrics


def circuit_of(name: str, meta: Mapping[str, Any] | None = None) -> str:
    """The circuit of suite ``name``: ``meta["circuit"]`` if given, else by :data:`CIRCUITS`
    prefix, else :data:`UNKNOWN_CIRCUIT`."""
    if meta and meta.get("circuit"):
        return str(meta["circuit"])
    return next((circuit for prefix, circuit in CIRCUITS if name.startswith(prefix)), UNKNOWN_CIRCUIT)


_TOKEN = re.compile(
    r"\s*(?:(?P<region>\((?:\d+|\*);%[\w\-]+%\))|(?P<number>\d+\.?\d*|\.\d+)|(?P<op><=|>=|[<>=+\-&|()\[\]]))"
)
_REGION = re.compile(r"\((\d+|\*);%([\w\-]+)%\)")
_CLOSE = {"(": ")", "[": "]"}
# Region starts that attach to the region before them under attach_punctuation (English orthography).
ATTACHING = (".", ",", ";", ":", "!", "?", ")", "'s", "'", "n't")


class FormulaError(TaskError):
    """A prediction formula that does not parse."""


def _tokenize(formula: str) -> list[tuple[str, str, int]]:
    """``(kind, text, position)`` of each token of ``formula``."""
    tokens, pos = [], 0
    stripped = formula.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if m is None:
            pos += len(stripped[pos:]) - len(stripped[pos:].lstrip())  # point at the character, not the space before
            raise FormulaError(f"cannot parse {formula!r} at position {pos}: {stripped[pos:pos + 20]!r} (expected a "
                               "region like (6;%condition%), a number, an operator + - < > = <= >= & | or a bracket)")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent: or > and > comparison > sum > unary > atom."""

    def __init__(self, formula: str) -> None:
        self.formula = formula
        self.tokens = _tokenize(formula)
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise FormulaError(f"unexpected end of {self.formula!r} (an operand or a closing bracket is missing)")
        self.i += 1
        return self.tokens[self.i - 1][:2]

    def where(self, back: int = 0) -> str:
        """``"at position N"`` of the token ``back`` steps before the next one."""
        i = self.i - back
        return f"at position {self.tokens[i][2]}" if 0 <= i < len(self.tokens) else "at the end"

    def parse(self) -> tuple:
        tree = self.or_()
        if self.i != len(self.tokens):
            raise FormulaError(f"trailing {self.peek()!r} {self.where()} of {self.formula!r}")
        return tree

    def _chain(self, ops: tuple[str, ...], sub) -> tuple:
        tree = sub()
        while self.peek() in ops:
            tree = (self.take()[1], tree, sub())
        return tree

    def or_(self) -> tuple:
        return self._chain(("|",), self.and_)

    def and_(self) -> tuple:
        return self._chain(("&",), self.cmp)

    def cmp(self) -> tuple:
        tree = self.sum()
        if self.peek() in ("<", ">", "=", "<=", ">="):
            tree = (self.take()[1], tree, self.sum())
        return tree

    def sum(self) -> tuple:
        return self._chain(("+", "-"), self.unary)

    def unary(self) -> tuple:
        if self.peek() == "-":
            self.take()
            return ("neg", self.unary())
        return self.atom()

    def atom(self) -> tuple:
        kind, text = self.take()
        if kind == "region":
            region, condition = _REGION.fullmatch(text).groups()
            return ("region", condition, region if region == "*" else int(region))
        if kind == "number":
            return ("number", float(text))
        if text in _CLOSE:
            tree = self.or_()
            if self.i >= len(self.tokens):
                raise FormulaError(f"unbalanced {text!r}: no {_CLOSE[text]!r} before the end of {self.formula!r}")
            got = self.take()[1]
            if got != _CLOSE[text]:
                raise FormulaError(f"unbalanced {text!r}: {got!r} {self.where(1)} of {self.formula!r} where "
                                   f"{_CLOSE[text]!r} was expected")
            return tree
        raise FormulaError(f"unexpected {text!r} {self.where(1)} of {self.formula!r} (expected a region, a number or "
                           "an opening bracket)")


def _evaluate(tree: tuple, surprisals: Mapping[tuple[str, int], float]) -> float | bool:
    op = tree[0]
    if op == "number":
        return tree[1]
    if op == "region":
        _, condition, region = tree
        if region == "*":
            values = [v for (c, _), v in surprisals.items() if c == condition]
            if not values:
                raise TaskError(f"no surprisals for condition {condition!r}")
            return math.fsum(values)
        if (condition, region) not in surprisals:
            raise TaskError(f"no surprisal for region {region} of condition {condition!r}")
        return surprisals[condition, region]
    if op == "neg":
        return -_evaluate(tree[1], surprisals)
    a, b = _evaluate(tree[1], surprisals), _evaluate(tree[2], surprisals)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    if op == ">=":
        return a >= b
    if op == "=":
        return math.isclose(a, b, rel_tol=EQUALITY_RTOL, abs_tol=EQUALITY_ATOL)
    if op == "&":
        return bool(a) and bool(b)
    if op == "|":
        return bool(a) or bool(b)
    raise FormulaError(f"unknown operator {op!r}")


def _references(tree: tuple) -> set[tuple[str, int | str]]:
    if tree[0] == "region":
        return {(tree[1], tree[2])}
    return set().union(*(_references(t) for t in tree[1:] if isinstance(t, tuple)))


@dataclass(frozen=True)
class Prediction:
    """One parsed SyntaxGym prediction formula; call it on region surprisals to get a bool."""

    formula: str
    tree: tuple = field(repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "tree", _Parser(self.formula).parse())

    @property
    def references(self) -> set[tuple[str, int | str]]:
        """The ``(condition, region_number or "*")`` pairs the formula reads."""
        return _references(self.tree)

    def __call__(self, surprisals: Mapping[tuple[str, int], float]) -> bool:
        result = _evaluate(self.tree, surprisals)
        if not isinstance(result, bool):
            raise FormulaError(f"{self.formula!r} is not a comparison (evaluates to {result!r})")
        return result


@dataclass(frozen=True)
class SyntaxGymItem:
    """One suite item: the same sentence frame under several conditions.

    Attributes:
        id: ``"syntaxgym-{suite}-{item_number}"``.
        task: ``"syntaxgym"``.
        suite: ``meta.name`` of the suite.
        item_number: the suite's item number.
        conditions: condition name -> ordered ``(region_number, content)`` pairs.
        predictions: the suite's parsed predictions (shared by all its items).
        region_names: ``region_meta`` in region order.
        metric: how token surprisals aggregate over a region (SyntaxGym's ``meta.metric``,
            almost always ``"sum"``).
        circuit: the suite's circuit (:func:`circuit_of`).
    """

    id: str
    task: str
    suite: str
    item_number: int
    conditions: dict[str, tuple[tuple[int, str], ...]]
    predictions: tuple[Prediction, ...]
    region_names: tuple[str, ...] = ()
    metric: str = "sum"
    circuit: str = UNKNOWN_CIRCUIT

    def __post_init__(self) -> None:
        for prediction in self.predictions:
            for condition, region in sorted(prediction.references, key=str):
                if condition not in self.conditions:
                    raise TaskError(
                        f"{self.id}: prediction {prediction.formula!r} names condition {condition!r}; "
                        f"conditions are {sorted(self.conditions)}"
                    )
                numbers = [n for n, _ in self.conditions[condition]]
                if region != "*" and region not in numbers:
                    raise TaskError(
                        f"{self.id}: prediction {prediction.formula!r} names region {region} of "
                        f"{condition!r}, which has regions {numbers}"
                    )

    def sentence(self, condition: str, attach_punctuation: bool = False) -> str:
        """The text of ``condition``: non-empty region contents joined by single spaces (SyntaxGym's
        convention); with ``attach_punctuation``, a region that starts with punctuation
        (:data:`ATTACHING`, e.g. ``.`` ``,`` ``'s``) follows the region before it without a space."""
        text = ""
        for (_, start, _), (_, content) in zip(self.region_spans(condition, attach_punctuation),
                                               self.conditions[condition]):
            text += " " * (start - len(text)) + content.strip()
        return text

    def region_spans(self, condition: str, attach_punctuation: bool = False) -> list[tuple[int, int, int]]:
        """``(region_number, start, end)`` character spans of each region in :meth:`sentence`
        (same ``attach_punctuation``); an empty region gets a zero-width span where it would be."""
        spans, pos = [], 0
        for number, content in self.conditions[condition]:
            content = content.strip()
            if not content:
                spans.append((number, pos, pos))
                continue
            if pos > 0 and not (attach_punctuation and content.startswith(ATTACHING)):
                pos += 1  # the joining space
            spans.append((number, pos, pos + len(content)))
            pos += len(content)
        return spans

    def evaluate(self, surprisals: Mapping[tuple[str, int], float]) -> list[bool]:
        """One bool per prediction, from ``{(condition, region_number): surprisal}``."""
        return [p(surprisals) for p in self.predictions]


def _conditions_from_suite_item(item: dict[str, Any]) -> dict[str, tuple[tuple[int, str], ...]]:
    conditions = item["conditions"]
    if isinstance(conditions, list):  # suite JSON
        return {
            c["condition_name"]: tuple((int(r["region_number"]), r["content"]) for r in c["regions"])
            for c in conditions
        }
    # the hub's columnar layout: {"condition_name": [...], "regions": [{"region_number": [...], "content": [...]}]}
    return {
        name: tuple((int(n), str(t)) for n, t in zip(regions["region_number"], regions["content"]))
        for name, regions in zip(conditions["condition_name"], conditions["regions"])
    }


def suite_items(suite: dict[str, Any], limit: int | None = None) -> list[SyntaxGymItem]:
    """The items of one suite dict (SyntaxGym JSON format)."""
    for key in ("meta", "predictions", "items"):
        if key not in suite:
            raise TaskError(f"SyntaxGym suite lacks {key!r}; expected keys meta, region_meta, predictions, items")
    name = suite["meta"]["name"]
    predictions = tuple(
        Prediction(p["formula"] if isinstance(p, dict) else p) for p in suite["predictions"]
    )
    region_meta = suite.get("region_meta", {})
    region_names = tuple(region_meta[k] for k in sorted(region_meta, key=int))
    items = [
        SyntaxGymItem(
            id=f"{NAME}-{name}-{item['item_number']}",
            task=NAME,
            suite=name,
            item_number=int(item["item_number"]),
            conditions=_conditions_from_suite_item(item),
            predictions=predictions,
            region_names=region_names,
            metric=suite["meta"].get("metric", "sum"),
            circuit=circuit_of(name, suite["meta"]),
        )
        for item in suite["items"]
    ]
    if not predictions:
        raise TaskError(f"suite {name!r} has no predictions: nothing to evaluate")
    metric = items[0].metric if items else "sum"
    if metric not in METRICS:
        raise TaskError(f"suite {name!r}: unknown meta.metric {metric!r}; SyntaxGym's metrics are {', '.join(METRICS)}")
    return items[:limit] if limit is not None else items


def _hub_items(suite: str, split: str) -> list[SyntaxGymItem]:
    import datasets  # lazy: only the hub path needs it

    items = []
    for record in datasets.load_dataset(SOURCE.path, suite, split=split):
        predictions = tuple(Prediction(p if isinstance(p, str) else p["formula"]) for p in record["predictions"])
        name = record.get("suite_name", suite)
        items.append(
            SyntaxGymItem(
                id=f"{NAME}-{name}-{record['item_number']}",
                task=NAME,
                suite=name,
                item_number=int(record["item_number"]),
                conditions=_conditions_from_suite_item(record),
                predictions=predictions,
                circuit=circuit_of(name),
            )
        )
    return items


def load(
    split: str = "test", data: str | None = None, limit: int | None = None, suite: str = "all"
) -> list[SyntaxGymItem]:
    """Suite items from ``data`` (a suite JSON, a folder of them, or ``"fixture"``) or the hub.

    On the hub (``cpllab/syntaxgym``, a script dataset that recent ``datasets`` versions may
    refuse to run), ``suite`` is the config name and the split is ``test``.
    """
    if data is None:
        if hub_offline():
            raise MissingDatasetError(f"task {NAME!r}: no --data given and the hub is disabled. " + how_to_provide(NAME, SOURCE, split))
        try:
            items = _hub_items(suite, split)
        except Exception as exc:
            raise MissingDatasetError(
                f"task {NAME!r}: could not load {SOURCE.path!r} from the hub ({type(exc).__name__}: {exc}). "
                + how_to_provide(NAME, SOURCE, split)
            ) from exc
        return items[:limit] if limit is not None else items
    path = FIXTURE_DIR / SOURCE.fixture if str(data) == FIXTURE else Path(data)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
    elif path.is_file():
        files = [path]
    else:
        raise MissingDatasetError(f"task {NAME!r}: {str(path)!r} does not exist. " + how_to_provide(NAME, SOURCE, split))
    items, seen = [], {}
    for file in files:
        try:
            with file.open(encoding="utf-8") as f:
                suite = suite_items(json.load(f))
            name = suite[0].suite if suite else None
            if name in seen:
                raise TaskError(f"suite name {name!r} is also the name of {seen[name]}; suite names must be unique")
            seen[name] = file
            items.extend(suite)
        except TaskError as err:
            raise TaskError(f"task {NAME!r}, {file}: {err}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            # a suite whose structure differs from SyntaxGym's JSON format (fields missing or of another type)
            raise TaskError(f"task {NAME!r}, {file}: not a SyntaxGym suite ({type(err).__name__}: {err}); expected "
                            "keys meta, region_meta, predictions, items as in the SyntaxGym JSON format") from None
    return items[:limit] if limit is not None else items
