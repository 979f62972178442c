"""The implicit reward of a base/chat pair: r(x, y) = beta * (log p_chat(y | x) - log p_base(y | x)).

For a policy tuned against a KL penalty to its reference (RLHF with coefficient beta, or DPO
with its beta), the tuned policy is ``p_chat(y|x) ∝ p_base(y|x) exp(r(x, y) / beta)``, so this
difference is the reward it was tuned on up to a per-prompt constant (Rafailov et al. 2023).
Every pair is therefore a reward model; DPO pairs (``zephyr-7b``, ``tulu2-7b``) in particular.
The toy pair was tuned with beta = 0.05 (``models/toy/README.md``): ``implicit:toy@0.05`` is on
the scale of its reward model.

``log p(y|x)`` is the summed continuation log-prob of :func:`probes.logprobs.continuation_logprobs`
(lm-evaluation-harness tokenisation). The two members load one after the other (never both in
memory), each scoring every pair.

Chat template (``chat_template``), decided as the other studies decide (``studies.benchmarks``,
``studies.ffn_capitals``): the chat member's template renders the prompt for *both* members,
so that both read the same tokens and the difference compares models, not formats. ``None``
(default): on when the chat member's tokenizer has a template. On: ``x`` is the user turn with
the assistant's generation prompt (:func:`probes.chat.chat_prompt`) and ``y`` is what the
template writes after it for the assistant turn ``response`` (its end-of-turn tokens
included: the policy's probability of stopping there is part of the response); recorded as
format ``chat``. Off: ``x`` is the prompt and ``y`` is ``" " + response``, format ``concat``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

from interp.errors import LoadError, PromptError
from probes.chat import chat_exchange, chat_prompt, has_chat_template
from probes.logprobs import Skipped, continuation_logprobs
from probes.readouts import LayerSpec, block_layers, label, resolve_layers
from probes.reward_inputs import check_not_rendered
from probes.reward import RewardScores, check_pairs

IMPLICIT = "implicit:"


def parse_implicit(spec: str) -> tuple[str, float]:
    """``"implicit:toy@0.05"`` -> ``("toy", 0.05)``; beta defaults to 1."""
    from interp.registry import PAIRS

    body = spec.removeprefix(IMPLICIT)
    pair, _, beta = body.partition("@")
    if pair not in PAIRS:
        raise LoadError(f"unknown pair {pair!r} in {spec!r}; implicit:PAIR takes a registered pair: "
                        f"{', '.join(PAIRS)} (optionally implicit:PAIR@BETA)")
    try:
        value = float(beta) if beta else 1.0
    except ValueError:
        raise LoadError(f"beta {beta!r} in {spec!r} is not a number; write e.g. implicit:{pair}@0.1") from None
    if not value > 0:
        raise LoadError(f"beta must be positive, got {value} in {spec!r}")
    return pair, value


def _pair(pair, load_kwargs: dict):
    from interp.loading import Pair, load_pair

    if isinstance(pair, Pair):
        if load_kwargs:
            raise LoadError("load options go to load_pair(...) when a Pair is given")
        return pair
    return load_pair(pair, **load_kwargs)


def chat_tokenizer(pair):
    """The chat member's tokenizer (its template renders prompts for both members)."""
    import transformers

    pair.check()
    source = pair.spec.source("chat")
    try:
        return transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise LoadError(f"could not load the tokenizer of {source!r} ({type(err).__name__}); check the path / "
                        "hub id, or pass chat_template=False") from None


def contexts_and_continuations(tokenizer, prompts: Sequence[str], responses: Sequence[str],
                               template: bool) -> tuple[list[str], list[str]]:
    """``(x, y)`` texts of each pair (see the module docstring)."""
    if not template:
        return list(prompts), [" " + r for r in responses]
    check_not_rendered(tokenizer, prompts, "the chat template (chat_template=None/True)", "chat_template=False")
    contexts, continuations = [], []
    for i, (p, r) in enumerate(zip(prompts, responses)):
        context, whole = chat_prompt(tokenizer, p), chat_exchange(tokenizer, p, r)
        if not whole.startswith(context):
            raise PromptError(f"pair {i}: the chat template renders the assistant turn differently from its generation "
                              f"prompt ({context[-30:]!r} is not a prefix of the conversation), so the response "
                              "cannot be cut out of it; pass chat_template=False")
        contexts.append(context)
        continuations.append(whole[len(context):])
    return contexts, continuations


def implicit_reward_scores(pair, prompts: Sequence[str], responses: Sequence[str], *, beta: float = 1.0,
                           chat_template: bool | None = None, layers: LayerSpec = None, batch_size: int = 8,
                           truncate: str = "error", progress: bool = False, name: str | None = None,
                           **load_kwargs) -> RewardScores:
    """Implicit rewards of the pairs, with ``by_layer`` (the logit lens of both members at each
    block) when ``layers`` is given. ``pair``: a registry name or an ``interp.Pair``;
    ``truncate``: as :func:`probes.logprobs.continuation_logprobs` (``left`` cuts context tokens,
    ``skip`` leaves NaN)."""
    check_pairs(prompts, responses)
    if not beta > 0:
        raise PromptError(f"beta must be positive, got {beta}")
    pair = _pair(pair, load_kwargs)
    tok = chat_tokenizer(pair)
    template = has_chat_template(tok) if chat_template is None else bool(chat_template)
    if template and not has_chat_template(tok):
        raise PromptError(f"chat_template=True but the chat member of pair {pair.name!r} has no chat template; "
                          "pass chat_template=False (or None: use it when there is one)")
    contexts, continuations = contexts_and_continuations(tok, prompts, responses, template)
    sums: dict[str, dict] = {}
    cut: set[int] = set()
    skipped: set[int] = set()
    readouts: list = [None]
    # Not wrapped in a progress bar: its iterator would hold the first member while the second loads.
    for member, lm in pair:
        readouts = resolve_layers(lm, layers) if layers is not None else [None]
        computed = [None, *block_layers(readouts)]  # the output reward comes with every run
        scored = continuation_logprobs(lm, contexts, continuations, layers=computed, batch_size=batch_size,
                                       truncate=truncate)
        del lm  # before the next member loads: one model in memory at a time
        sums[member] = {layer: np.array([np.nan if isinstance(s, Skipped) else s.sum(layer) for s in scored])
                        for layer in computed}
        skipped |= {i for i, s in enumerate(scored) if isinstance(s, Skipped)}
        cut |= {i for i, s in enumerate(scored) if not isinstance(s, Skipped) and s.n_truncated}
        if progress:
            print(f"implicit reward {pair.name}: {member} scored {len(scored)} pairs", file=sys.stderr, flush=True)
    rewards = {layer: beta * (sums["chat"][layer] - sums["base"][layer]) for layer in sums["chat"]}
    return RewardScores(
        scores=rewards[None], by_layer={label(layer): rewards[layer] for layer in readouts} if layers is not None else {},
        format="chat" if template else "concat", model=name or f"{IMPLICIT}{pair.name}",
        n_truncated=len(cut - skipped), n_skipped=len(skipped))


def implicit_reward(pair, prompts: Sequence[str], responses: Sequence[str], *, beta: float = 1.0,
                    chat_template: bool | None = None, batch_size: int = 8, truncate: str = "error",
                    **load_kwargs) -> Float[np.ndarray, " n"]:
    """``[n]`` implicit rewards ``beta * (log p_chat(y|x) - log p_base(y|x))`` of the pairs
    (see the module docstring; :func:`implicit_reward_scores` for layers and counts)."""
    return implicit_reward_scores(pair, prompts, responses, beta=beta, chat_template=chat_template,
                                  batch_size=batch_size, truncate=truncate, **load_kwargs).scores


class ImplicitScorer:
    """``load_scorer("implicit:PAIR")``: a pair's implicit reward behind the scorer interface.
    Each ``score`` call loads the two members in turn (never both)."""

    def __init__(self, pair, *, beta: float = 1.0, chat_template: bool | None = None, name: str | None = None,
                 **load_kwargs):
        if not beta > 0:
            raise PromptError(f"beta must be positive, got {beta}")
        self.pair = _pair(pair, load_kwargs)
        self.beta = beta
        self.chat_template = chat_template
        self.name = name or f"{IMPLICIT}{self.pair.name}"
        template = has_chat_template(chat_tokenizer(self.pair)) if chat_template is None else chat_template
        self.format = "chat" if template else "concat"

    def identity(self) -> dict:
        """What decides this scorer's numbers: name, beta, format and both members' identities."""
        from interp.identity import model_identity

        return {"scorer": self.name, "kind": "implicit", "beta": self.beta, "format": self.format,
                **{member: model_identity(self.pair.spec.source(member)) for member in ("base", "chat")}}

    def __repr__(self) -> str:
        return f"ImplicitScorer({self.name!r}, beta={self.beta}, format={self.format!r})"

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, layers: LayerSpec = None,
              batch_size: int = 8, progress: bool = False, truncate: str = "error") -> RewardScores:
        return implicit_reward_scores(self.pair, prompts, responses, beta=self.beta,
                                      chat_template=self.format == "chat", layers=layers, batch_size=batch_size,
                                      truncate=truncate, progress=progress, name=self.name)
