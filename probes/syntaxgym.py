"""SyntaxGym items scored by region surprisal, at any readout.

An item (``tasks.benchmarks.syntaxgym.SyntaxGymItem``, used here through its methods only:
``conditions``, ``sentence``, ``region_spans``, ``metric``, ``evaluate``) is read once per
condition; each region's surprisal (:func:`probes.surprisal.region_surprisals`, bits, the
suite's ``metric``) feeds the suite's prediction formulas, under every readout: the final
logits and each block through a lens. An item whose longest condition does not fit the model
is a :class:`~probes.logprobs.Skipped` (a formula compares conditions, so no condition is
scored alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from interp.lens import Lens
from probes.logprobs import Skipped
from probes.readouts import Layer, LayerSpec, resolve_layers
from probes.surprisal import region_surprisals, text_surprisals


@dataclass
class ItemScore:
    """One item under each readout.

    Attributes:
        layers: the readouts (``None`` = final logits).
        regions: condition -> ``[readout][region]`` region surprisal (bits), regions in the
            condition's order.
        region_numbers: condition -> its region numbers, in order.
        predictions: ``[readout][prediction]`` whether each of the suite's formulas holds.
        n_tokens: condition -> tokens fed (the BOS / EOS prefix included).
        n_straddling: tokens (over all conditions) that cross a region boundary.
    """

    layers: list[Layer]
    regions: dict[str, list[list[float]]]
    region_numbers: dict[str, list[int]]
    predictions: list[list[bool]]
    n_tokens: dict[str, int]
    n_straddling: int

    def correct(self, layer: Layer = None) -> bool:
        """Every prediction holds at readout ``layer`` (the item's accuracy)."""
        return all(self.predictions[self.layers.index(layer)])


def score_items(lm, items: Sequence, layers: LayerSpec = None, batch_size: int = 8, lens: Lens | None = None,
                attach_punctuation: bool = False) -> list[ItemScore | Skipped]:
    """Region surprisals and prediction outcomes of each item under the readouts ``layers``.
    ``attach_punctuation``: how regions are joined (``SyntaxGymItem.sentence``; default
    SyntaxGym's single spaces)."""
    readouts = resolve_layers(lm, layers)
    texts = [(i, c, item.sentence(c, attach_punctuation)) for i, item in enumerate(items) for c in item.conditions]
    scored = text_surprisals(lm, [t for _, _, t in texts], readouts, batch_size, lens)
    by_item: dict[int, dict] = {}
    for (i, condition, _), s in zip(texts, scored):
        by_item.setdefault(i, {})[condition] = s
    out: list[ItemScore | Skipped] = []
    for i, item in enumerate(items):
        conditions = by_item[i]
        skipped = [f"condition {c!r}: {s.reason}" for c, s in conditions.items() if isinstance(s, Skipped)]
        if skipped:
            out.append(Skipped("; ".join(skipped), getattr(item, "id", None)))
            continue
        regions, numbers, straddling = {}, {}, 0
        for condition, s in conditions.items():
            spans = item.region_spans(condition, attach_punctuation)
            r = region_surprisals(s, [(a, b) for _, a, b in spans], item.metric)
            regions[condition] = r.values.tolist()
            numbers[condition] = [n for n, _, _ in spans]
            straddling += r.n_straddling
        predictions = []
        for k in range(len(readouts)):
            values = {(c, n): regions[c][k][j] for c in regions for j, n in enumerate(numbers[c])}
            predictions.append([bool(p) for p in item.evaluate(values)])
        out.append(ItemScore(readouts, regions, numbers, predictions,
                             {c: len(s.tokens) for c, s in conditions.items()}, straddling))
    return out
