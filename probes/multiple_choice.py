"""Multiple-choice scoring of :class:`tasks.items.MCItem` by continuation log-likelihood.

    scores = score_items(lm, items, layers="all")       # one forward pair per batch of items
    scores[0].acc(), scores[0].acc_norm(), scores[0].probs(layer=5)

Each option is scored as the continuation of the item's context (lm-evaluation-harness
tokenisation, :func:`probes.logprobs.encode_pair`). Metrics, as lm-evaluation-harness:

- ``acc``: the option with the largest summed log-prob is the label;
- ``acc_norm``: the same after dividing each sum by the option's length in characters
  (:func:`option_length`: without the one leading space that lm-evaluation-harness keeps
  in its ``target_delimiter``);
- ``probs``: softmax over the options' summed log-probs (the model's distribution over the
  options); for Kadavath et al.'s P(True) items, ``p_true() = probs()[0]``, i.e.
  ``p(" (A)")`` renormalised over the two options.

Partial scoring (items with a ``continuation``, :class:`tasks.items.MCItem`; WinoGrande, WSC):
each option ``j`` is a context of its own, ``context + option_j``, and the shared continuation is
scored after it (lm-evaluation-harness's ``multiple_input``: one ``(context_j, continuation)``
loglikelihood request per option, tokenised each as :func:`probes.logprobs.encode_pair`). The
contexts' common token prefix runs once, each context's remaining tokens are its option's
*lead* in the packed row (:mod:`probes.shared_context`), and only the continuation's tokens are
summed. ``n_tokens`` counts continuation tokens and ``n_chars`` is the continuation's length
for every option, so ``acc_norm`` equals ``acc`` (the options share what is scored). A context
sharing no token with the others (a tokenizer without BOS, an option starting the text) runs
as its own row.

Ties go to the first option (``argmax``). ``method="kv"`` (default) runs each context once,
its options packed after it in the same forward (:mod:`probes.shared_context`); ``"naive"``
runs every ``context + option`` on its own. Both give the same numbers. As in
lm-evaluation-harness, an option's last token is predicted but not fed.

Items longer than the model (``len(context) + len(longest option) - 1 > lm.max_positions``,
lm-evaluation-harness's rule): ``truncate="left"`` cuts the context's first tokens until the
longest option fits (one shared context for all options, so they stay comparable;
lm-evaluation-harness cuts each option's input on its own, which differs only when options
have different lengths), ``"skip"`` puts a :class:`probes.logprobs.Skipped` in the item's place,
``"error"`` (default) raises ``PromptError``. ``MCScore.n_truncated`` counts the tokens cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float, Int

from interp.errors import InterpError, PromptError, UnknownHook
from interp.lens import Lens, resolve_lens
from probes.logprobs import Skipped, Truncate, encode_pair, fit_context, naive_pair_logprobs
from probes.readouts import Layer, LayerSpec, resolve_layers
from probes.answer_mass import AnswerMass
from probes.shared_context import shared_context_scores

METHODS = ("kv", "naive")


def option_length(option: str) -> int:
    """Characters of an option for ``acc_norm``: its length without one leading space."""
    return len(option[1:] if option.startswith(" ") else option)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


@dataclass
class MCScore:
    """One item's option log-likelihoods under each readout.

    Attributes:
        item_id: the item's id.
        label: index of the correct option.
        layers: readouts (``None`` = final logits, ``l`` = block ``l`` through the lens, by default the logit lens).
        logprobs: ``[readout, option]`` summed log-prob of each option.
        token_logprobs: per option, ``[readout, n_tokens]`` log-prob of each token.
        greedy: ``[readout, option]`` whether every token of the option is the argmax.
        n_tokens: ``[option]`` tokens per option.
        n_chars: ``[option]`` :func:`option_length` of each option.
        n_truncated: context tokens cut from the left to fit the model (``truncate="left"``).
        answer: where the final readout's probability goes at the answer position
            (:class:`probes.answer_mass.AnswerMass`); ``None`` under ``method="naive"``,
            which never runs the context alone, and for partial items, whose options are
            not all predicted at one position.
    """

    item_id: str
    label: int
    layers: list[Layer]
    logprobs: Float[np.ndarray, "readout option"]
    token_logprobs: list[Float[np.ndarray, "readout n_tokens"]]
    greedy: Bool[np.ndarray, "readout option"]
    n_tokens: Int[np.ndarray, " option"]
    n_chars: Int[np.ndarray, " option"]
    n_truncated: int = 0
    answer: AnswerMass | None = None

    def row(self, layer: Layer = None) -> int:
        try:
            return self.layers.index(layer)
        except ValueError:
            raise UnknownHook(f"readout {layer!r} was not scored; scored: {self.layers}") from None

    def loglik(self, layer: Layer = None) -> Float[np.ndarray, " option"]:
        return self.logprobs[self.row(layer)]

    def pred(self, layer: Layer = None) -> int:
        return int(np.argmax(self.loglik(layer)))

    def pred_norm(self, layer: Layer = None) -> int:
        return int(np.argmax(self.loglik(layer) / self.n_chars))

    def acc(self, layer: Layer = None) -> bool:
        return self.pred(layer) == self.label

    def acc_norm(self, layer: Layer = None) -> bool:
        return self.pred_norm(layer) == self.label

    def probs(self, layer: Layer = None) -> Float[np.ndarray, " option"]:
        """Softmax over the options' summed log-probs."""
        return _softmax(self.loglik(layer))

    def p_true(self, layer: Layer = None) -> float:
        """P(True) of a two-option ``(A) True / (B) False`` item: option 0's renormalised probability."""
        if len(self.n_chars) != 2:
            raise InterpError(f"p_true needs a two-option item, {self.item_id!r} has {len(self.n_chars)}")
        return float(self.probs(layer)[0])


def item_pairs(tokenizer, item) -> tuple[list[int], list[list[int]]]:
    """``(context tokens, each option's tokens)`` of an item (the context is shared: its
    tokens do not depend on the option, since only its trailing whitespace can move)."""
    encoded = [encode_pair(tokenizer, item.context, option) for option in item.options]
    ctx = encoded[0][0]
    if any(c != ctx for c, _ in encoded):
        raise PromptError(f"item {item.id!r}: options tokenise the context differently")
    return ctx, [cont for _, cont in encoded]


def fit_item(lm, item, truncate: Truncate = "error") -> tuple[list[int], list[list[int]], int] | Skipped:
    """``(context tokens fed, each option's tokens, context tokens cut)`` of an item under
    ``truncate`` (see the module doc), or a :class:`Skipped` naming the item and why. Partial
    items: :func:`fit_partial_item`."""
    if getattr(item, "continuation", None) is not None:
        raise PromptError(f"item {item.id!r} is scored partially (it has a continuation): use fit_partial_item")
    ctx, opts = item_pairs(lm.tokenizer, item)
    fit = fit_context(ctx, max(len(o) for o in opts), lm.max_positions, truncate, f"item {item.id!r}")
    if isinstance(fit, Skipped):
        return Skipped(fit.reason, item.id)
    return fit[0], opts, fit[1]


Row = tuple[list[int], list[list[int]], list[list[int]]]  # (context fed, scored tokens, leads) per option of the row


def partial_pairs(tokenizer, item) -> list[tuple[list[int], list[int]]]:
    """Per option, ``(tokens of context + option, tokens of the shared continuation after it)``."""
    return [encode_pair(tokenizer, item.context + option, item.continuation) for option in item.options]


def fit_partial_item(lm, item, truncate: Truncate = "error") -> tuple[list[Row], int] | Skipped:
    """The rows a partial item runs as, and the context tokens cut (module doc): one row whose
    context is the options' contexts' common token prefix, each option's lead the rest of its
    context; or, when they share no token, one row per option. ``truncate`` cuts each row's
    context from the left so that its longest lead + continuation fits."""
    pairs = partial_pairs(lm.tokenizer, item)
    ctxs = [c for c, _ in pairs]
    common = 0
    while all(len(c) > common for c in ctxs) and len({c[common] for c in ctxs}) == 1:
        common += 1
    if common:
        layout = [(ctxs[0][:common], [cont for _, cont in pairs], [c[common:] for c in ctxs])]
    else:
        layout = [(c, [cont], [[]]) for c, cont in pairs]
    rows, cut = [], 0
    for ctx, scored, leads in layout:
        longest = max(len(lead) + len(s) for lead, s in zip(leads, scored))
        fit = fit_context(ctx, longest, lm.max_positions, truncate, f"item {item.id!r}")
        if isinstance(fit, Skipped):
            return Skipped(fit.reason, item.id)
        rows.append((fit[0], scored, leads))
        cut = max(cut, fit[1])
    return rows, cut


def _fit(lm, item, truncate: Truncate) -> tuple[list[Row], int] | Skipped:
    """Any item as the rows it runs as (a plain item: one row, no leads)."""
    if getattr(item, "continuation", None) is not None:
        return fit_partial_item(lm, item, truncate)
    fit = fit_item(lm, item, truncate)
    if isinstance(fit, Skipped):
        return fit
    ctx, opts, cut = fit
    return [(ctx, opts, [[] for _ in opts])], cut


def score_items(
    lm, items: Sequence, layers: LayerSpec = None, method: str = "kv", batch_size: int = 4,
    truncate: Truncate = "error", lens: Lens | None = None,
) -> list[MCScore | Skipped]:
    """Score every option of every item under the readouts ``layers``; one entry per item,
    a :class:`probes.logprobs.Skipped` for an item not scored (``truncate``, module doc).

    ``batch_size`` is items per forward (``"kv"``: contexts; ``"naive"``: items, i.e.
    ``batch_size x n_options`` sequences). ``lens`` decodes the block readouts (default: the
    logit lens; e.g. ``interp.lens.TunedLens.load(folder, lm)``); the final readout is the same
    under every lens.
    """
    if method not in METHODS:
        raise InterpError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if lm.tokenizer is None:
        raise PromptError("score_items needs the model's tokenizer (LM.from_hf(model, tokenizer))")
    if method == "kv" and not lm.local_modules:
        # NDIF keeps no cache for us and need not take packed rows: each option alone, same numbers.
        method = "naive"
    readouts = resolve_layers(lm, layers)
    fits = [_fit(lm, item, truncate) for item in items]
    kept = [i for i, f in enumerate(fits) if not isinstance(f, Skipped)]
    scores = dict(zip(kept, _score_fitted(lm, [items[i] for i in kept], [fits[i] for i in kept], readouts,
                                          method, batch_size, resolve_lens(lm, lens))))
    return [scores.get(i, fit) for i, fit in enumerate(fits)]


def _score_fitted(
    lm, items: Sequence, fits: list, readouts: list[Layer], method: str, batch_size: int, lens: Lens
) -> list[MCScore]:
    if not items:
        return []
    rows = [row for item_rows, _ in fits for row in item_rows]
    row_masses: list[AnswerMass | None] = [None] * len(rows)
    if method == "kv":
        scored, row_masses = shared_context_scores(lm, [(ctx, opts) for ctx, opts, _ in rows], readouts, batch_size,
                                                   lens, leads=[leads for _, _, leads in rows])
        flat = iter(opt for per_row in scored for opt in per_row)
    else:
        flat_pairs = [(ctx + lead, opt) for ctx, opts, leads in rows for lead, opt in zip(leads, opts)]
        flat = iter(naive_pair_logprobs(lm, flat_pairs, readouts, batch_size * max(len(i.options) for i in items), lens))
    out, masses = [], iter(row_masses)
    for item, (item_rows, n_cut) in zip(items, fits):
        item_masses = [next(masses) for _ in item_rows]
        per_option = [next(flat) for _, opts, _ in item_rows for _ in opts]
        opts = [o for _, row_opts, _ in item_rows for o in row_opts]
        token_lp = [lp.numpy().astype(np.float64) for lp, _ in per_option]
        out.append(MCScore(
            item_id=item.id,
            label=item.label,
            layers=readouts,
            logprobs=np.stack([t.sum(-1) for t in token_lp], axis=1),
            token_logprobs=token_lp,
            greedy=np.stack([g.all(-1).numpy() for _, g in per_option], axis=1),
            n_tokens=np.array([len(o) for o in opts]),
            n_chars=np.array([option_length(item.continuation) if getattr(item, "continuation", None) is not None
                              else option_length(o) for o in item.options]),
            n_truncated=n_cut,
            answer=item_masses[0] if len(item_masses) == 1 else None,
        ))
    return out
