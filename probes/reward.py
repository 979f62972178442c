"""Reward scoring of (prompt, response) pairs: a zero-layer probe of a reward model.

    scorer = load_scorer("toy")                     # or "oasst-deberta-v3-large-v2", "implicit:toy", a path
    out = scorer.score(prompts, responses, layers="all")
    out.scores                                      # [n] reward at the output, in input order
    out.by_layer["3"]                               # [n] the reward lens at block 3

A scorer reads each pair in the format its model was trained with (:mod:`probes.reward_inputs`:
``pair``, ``chat``, ``concat``; ``auto`` picks it). Pairs are scored in batches sorted by
length (longest first), so that a batch pads little; each score equals the model run on that
pair alone (left padding for decoders, right padding for encoders: ``interp.reward``,
``interp.encoder``), and is written back in input order.

``layers`` (as every probe, :func:`probes.readouts.resolve_layers`): the reward lens
(``interp.lens.reward_lens``: final norm then score head for decoders, pooler then classifier
for encoders) on block ``l``'s ``resid_post`` at the scored token; at the last block it is the
output score. ``by_layer`` is keyed by :func:`probes.readouts.label` (``"final"``, ``"0"``, ...).

``load_scorer`` also gives the implicit reward of a pair, ``implicit:PAIR``
(:mod:`probes.implicit_reward`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from jaxtyping import Float

from interp.errors import LoadError, PromptError
from interp.lens import reward_lens
from probes.readouts import LayerSpec, block_layers, label, resolve_layers
from probes.reward_inputs import (FORMATS, TRUNCATE, Format, Truncate, check_not_rendered, fit, is_encoder, resolve_format,
                                  token_ids)
from probes.reward_models import DEFAULT_REWARD, REWARD_MODELS, RewardModelSpec, get_reward_model

__all__ = ["DEFAULT_REWARD", "FORMATS", "REWARD_MODELS", "TRUNCATE", "Format", "ModelScorer", "RewardModelSpec",
           "RewardScorer", "RewardScores", "check_spec", "implicit_reward", "load_scorer", "parse_specs",
           "scorer_from_model"]


@dataclass(frozen=True)
class RewardScores:
    """Rewards of n (prompt, response) pairs, in input order.

    Attributes:
        scores: ``[n]`` reward at the output (NaN for a skipped pair).
        by_layer: ``label(layer) -> [n]`` reward-lens scores (for an implicit reward, the
            logit lens of both members); ``{}`` unless ``layers`` was given.
        format: the input format used (``pair``, ``chat``, ``concat``).
        model: the scorer's name.
        n_truncated: pairs whose prompt was cut to fit (``truncate="left"``).
        n_skipped: pairs left unscored (``truncate="skip"``).
    """

    scores: Float[np.ndarray, " n"]
    by_layer: dict[str, Float[np.ndarray, " n"]]
    format: str
    model: str
    n_truncated: int
    n_skipped: int = 0


class RewardScorer(Protocol):
    name: str
    format: str

    def identity(self) -> dict: ...

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, layers: LayerSpec = None,
              batch_size: int = 16, progress: bool = False, truncate: Truncate = "error") -> RewardScores: ...


def check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if isinstance(prompts, str) or isinstance(responses, str):
        raise PromptError("prompts and responses must be lists of str (one per pair), not a single str")
    if len(prompts) != len(responses):
        raise PromptError(f"{len(prompts)} prompts but {len(responses)} responses: give one response per prompt "
                          "(repeat a prompt for each of its responses)")
    for what, texts in (("prompt", prompts), ("response", responses)):
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise PromptError(f"{what} {bad} is a {type(texts[bad]).__name__}, not a str")


def _bar(iterable, total: int, desc: str, progress: bool):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class ModelScorer:
    """A loaded reward model (``interp.RewardLM`` or ``interp.encoder.EncoderRewardModel``)
    scoring (prompt, response) pairs.

    ``format``: see :mod:`probes.reward_inputs` (``auto``: ``trained_format``, the registry's,
    else the kind's default). ``label``: which output column is the reward (``None``: the only
    one; a model with several labels must be told)."""

    def __init__(self, rm, *, format: Format = "auto", label: int | None = None, name: str | None = None,
                 trained_format: str | None = None, source: str | None = None):
        if not hasattr(rm, "reward_lens"):
            raise LoadError(f"{getattr(rm, 'name', rm)!r} is a causal LM, not a reward model; score a pair's "
                            "implicit reward with load_scorer('implicit:PAIR')")
        self.rm = rm
        self.name = name or rm.name
        self.source = source  # what load_scorer loaded (a folder or hub id), for identity()
        self.format = resolve_format(rm, format, trained_format)
        if label is None:
            if rm.n_labels != 1:
                raise PromptError(f"reward model {self.name!r} has {rm.n_labels} output labels; pass label=0.."
                                  f"{rm.n_labels - 1} to say which one is the reward")
            label = 0
        if not 0 <= label < rm.n_labels:
            raise PromptError(f"label {label} out of range; {self.name!r} has labels 0..{rm.n_labels - 1}")
        self.label = label

    def identity(self) -> dict:
        """What decides this scorer's numbers (for a run's fingerprint): name, format, label and
        the model's ``interp.identity.model_identity`` (``None`` for a model given in memory)."""
        from interp.identity import model_identity

        return {"scorer": self.name, "kind": "model", "format": self.format, "label": self.label,
                "model": model_identity(self.source) if self.source else None}

    def __repr__(self) -> str:
        return f"ModelScorer({self.name!r}, format={self.format!r}, label={self.label}, {self.rm!r})"

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, layers: LayerSpec = None,
              batch_size: int = 16, progress: bool = False, truncate: Truncate = "error") -> RewardScores:
        """Rewards of ``responses[i]`` to ``prompts[i]``, batched by length; see the module docstring."""
        check_pairs(prompts, responses)
        if batch_size < 1:
            raise PromptError(f"batch_size must be >= 1, got {batch_size}")
        readouts = resolve_layers(self.rm, layers) if layers is not None else [None]
        tok = self.rm.tokenizer
        if self.format == "chat":
            check_not_rendered(tok, prompts)
        fitted = [fit(tok, self.format, p, r, self.rm.max_positions, truncate, f"pair {i}")
                  for i, (p, r) in enumerate(zip(prompts, responses))]
        todo = sorted((i for i, f in enumerate(fitted) if f is not None), key=lambda i: -fitted[i].n_tokens)
        computed = [None, *block_layers(readouts)]  # the output score comes with every run
        values = {layer: np.full(len(prompts), np.nan) for layer in computed}
        batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
        for batch in _bar(batches, len(batches), f"reward {self.name}", progress):
            for layer, v in self._batch([fitted[i].rendered for i in batch], computed).items():
                values[layer][batch] = v
        return RewardScores(
            scores=values[None],
            by_layer={label(layer): values[layer] for layer in readouts} if layers is not None else {},
            format=self.format, model=self.name,
            n_truncated=sum(1 for f in fitted if f is not None and f.words_cut),
            n_skipped=sum(1 for f in fitted if f is None))

    def _batch(self, rendered: list, readouts: list) -> dict:
        """``readout -> [batch]`` rewards of one batch of rendered inputs."""
        rm, blocks = self.rm, block_layers(readouts)
        capture = [f"blocks.{layer}.hook_resid_post" for layer in blocks]
        if is_encoder(rm):  # the encoder tokenises itself (token types); it scores column 0
            items, positions = rendered, ([0] if blocks else None)
        else:
            items = [token_ids(rm.tokenizer, r) for r in rendered]
            positions = None
        pick = None
        if blocks and not is_encoder(rm):
            # Capture only the scored token: it is a fixed offset from each row's end (trailing
            # pad-id tokens are skipped, as HF skips them), so a few prompt-relative positions do.
            ids, mask, lengths = rm.to_tokens(items)
            cols = rm.score_columns(ids, mask)
            back = [int(c) - ids.shape[1] for c in cols]  # negative, prompt-relative
            wanted = sorted(set(back))
            if -wanted[0] <= int(lengths.min()):
                positions, pick = wanted, [wanted.index(b) for b in back]
            else:  # an offset reaches past a short row: keep every column, index by score column
                pick = [int(c) for c in cols]
        with torch.no_grad():
            run = rm.run(items, capture=capture, positions=positions)
        rows = torch.arange(len(items))
        out = {None: run.scores[:, self.label].float().cpu().numpy().astype(np.float64)}
        for layer in blocks:
            resid = run.cache[f"blocks.{layer}.hook_resid_post"]
            at = resid[:, 0] if is_encoder(rm) else resid[rows, torch.tensor(pick)]
            out[layer] = reward_lens(rm, at)[:, self.label].float().cpu().numpy().astype(np.float64)
        return out


def scorer_from_model(rm, *, format: Format = "auto", label: int | None = None, name: str | None = None) -> ModelScorer:
    """A scorer over an already loaded reward model (e.g. ``interp.reward.wrap(model, tokenizer)``)."""
    return ModelScorer(rm, format=format, label=label, name=name)


def _refuse_causal(source: str, spec: str) -> None:
    """Raise a LoadError pointing at ``implicit:PAIR`` if ``source`` is a causal LM checkpoint."""
    from transformers import AutoConfig

    from interp.registry import PAIRS, resolve
    from interp.reward import head_of

    try:
        config = AutoConfig.from_pretrained(resolve(source))
    except (OSError, ValueError):
        return  # interp.load explains a missing or unreadable checkpoint
    if head_of(config, None) == "causal":
        names = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise LoadError(f"{spec!r} is a causal LM ({names}), not a reward model (a *ForSequenceClassification); "
                        f"for a pair's implicit reward use implicit:PAIR (pairs: {', '.join(PAIRS)}); "
                        f"reward models: {', '.join(REWARD_MODELS)}")


def check_spec(spec: str | None) -> str:
    """Raise now (before any model loads) if ``spec`` cannot name a reward scorer: an unknown
    registry name, a bad ``implicit:PAIR[@BETA]``, a causal LM checkpoint. Returns the spec
    (``None`` -> the default)."""
    spec = DEFAULT_REWARD if spec is None else spec
    if not isinstance(spec, str) or not spec:
        raise LoadError(f"a reward spec is a registry name ({', '.join(REWARD_MODELS)}), implicit:PAIR, or a "
                        f"folder / hub id; got {spec!r}")
    if spec.startswith("implicit:"):
        from probes.implicit_reward import parse_implicit

        parse_implicit(spec)
        return spec
    entry = REWARD_MODELS.get(spec)
    if entry is None and "/" not in spec and not os.path.exists(spec):
        get_reward_model(spec)  # raises, listing the registry
    _refuse_causal(entry.source if entry else spec, spec)
    return spec


def parse_specs(text: str) -> list[str]:
    """``--reward toy,implicit:toy@0.05,PATH`` -> the checked specs, in order, without repeats."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise LoadError(f"--reward names no reward model; give e.g. {DEFAULT_REWARD} or implicit:toy")
    return [check_spec(s) for s in dict.fromkeys(specs)]


def load_scorer(spec: str | None = None, *, format: Format = "auto", label: int | None = None,
                beta: float | None = None, chat_template: bool | None = None, **load_kwargs) -> RewardScorer:
    """A reward scorer from ``spec``:

    - a registry name (:data:`REWARD_MODELS`; ``None``: ``toy``), read in its trained format;
    - ``implicit:PAIR`` or ``implicit:PAIR@BETA``: the implicit reward of a registered pair
      (``beta`` / ``chat_template``: :func:`probes.implicit_reward.implicit_reward`);
    - a folder or hub id of a sequence classifier (``owner/name``).

    ``load_kwargs`` go to ``interp.load`` (``dtype``, ``device``, ...). A causal LM raises,
    pointing at ``implicit:PAIR``; an unknown name lists the registry.
    """
    spec = check_spec(spec)
    if spec.startswith("implicit:"):
        from probes.implicit_reward import ImplicitScorer, parse_implicit

        pair, spec_beta = parse_implicit(spec)
        if format not in ("auto", "chat", "concat"):
            raise PromptError(f"format {format!r} is not one of an implicit reward; valid: auto, chat, concat "
                              "(or chat_template=True/False)")
        if format != "auto":
            chat_template = format == "chat" if chat_template is None else chat_template
        return ImplicitScorer(pair, beta=beta if beta is not None else spec_beta, chat_template=chat_template,
                              name=spec, **load_kwargs)
    entry: RewardModelSpec | None = REWARD_MODELS.get(spec)
    source = entry.source if entry else spec
    from interp.reward import load_reward

    rm = load_reward(source, **load_kwargs)
    return ModelScorer(rm, format=format, label=label, name=spec, trained_format=entry.format if entry else None,
                       source=source)


def implicit_reward(*args, **kwargs):
    """See :func:`probes.implicit_reward.implicit_reward` (re-exported here)."""
    from probes.implicit_reward import implicit_reward as implicit

    return implicit(*args, **kwargs)
