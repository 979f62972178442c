"""Reward models: HF sequence classifiers behind the same hook API as causal LMs.

A decoder reward model (``LlamaForSequenceClassification`` and the like) is the causal LM's
body with a linear *score head* ``[d_model -> n_labels]`` in place of the unembedding, read at
one token per sequence. ``RewardLM`` wraps it: the same hook names, captures, interventions
and positions as ``LM`` (the body's modules sit at the same paths as in ``*ForCausalLM``), and
``run.scores`` is ``[batch, n_labels]``.

Which token is scored follows HF exactly: the rightmost token whose id is not the config's
``pad_token_id`` (so a trailing eos that doubles as the pad token is skipped, as HF skips it),
or the last token when the config has no pad id. That is what HF computes for each prompt
run alone, so a left-padded batch gives every prompt its own score.

The *reward lens* ``reward_lens(lm, resid)`` is the score head after the final norm, on any
residual: on the last block's ``resid_post`` at the scored token it is ``run.scores``.
Encoder reward models (DeBERTa-v2/v3) are in ``interp.encoder``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.adapters import ARCHITECTURES, classifier_kind
from interp.cache import ActivationCache, Run, describe
from interp.errors import InterpError, LoadError, UnsupportedArchitecture
from interp.forward import forward
from interp.hook_names import HookPoint
from interp.model import LM, SCORE_HOOK
from interp.positions import Positions

HEADS = ("causal", "classifier")


def head_of(config, head: str | None) -> str:
    """``head`` checked, or (``None``) read from the config: ``classifier`` when its
    ``architectures`` name a ``*ForSequenceClassification``, else ``causal``."""
    if head is None:
        names = getattr(config, "architectures", None) or ()
        return "classifier" if any(str(a).endswith("ForSequenceClassification") for a in names) else "causal"
    if head not in HEADS:
        raise LoadError(f"unknown head {head!r}; valid: {', '.join(HEADS)} (or None: from the config's architectures)")
    names = getattr(config, "architectures", None)
    if names and head_of(config, None) != head:
        # The other head's weights are not in the checkpoint: HF would initialise them at random.
        raise LoadError(f"head={head!r} does not fit this checkpoint ({', '.join(names)}): its {head} head "
                        f"would be random weights; use head={head_of(config, None)!r} or head=None")
    return head


def wrap(model, tokenizer=None, name: str | None = None):
    """The reward-model wrapper for a loaded HF sequence classifier (decoder or encoder)."""
    from interp.encoder import EncoderRewardModel

    if classifier_kind(model.config) == "encoder":
        return EncoderRewardModel(model, tokenizer, name)
    return RewardLM(model, tokenizer, name)


class RewardRun(Run):
    """A ``Run`` of a reward model: ``scores`` ``[batch, n_labels]`` (``None`` when
    ``logits=False`` stopped early), and ``score_columns`` ``[batch]``, the padded column
    each score was read at. ``logits`` is ``None``: there is no unembedding."""

    def __init__(self, *args, scores: Tensor | None, score_columns: Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self._scores = scores
        self.score_columns = score_columns

    @property
    def scores(self) -> Float[Tensor, "batch n_labels"] | None:
        return self._scores

    def __repr__(self) -> str:
        return super().__repr__().replace("Run(", f"RewardRun(scores={describe(self._scores)}, ", 1)


class RewardLM(LM):
    """A decoder sequence classifier (reward model) with the ``LM`` hook API.

    ``lm.run(...)`` takes the arguments of ``LM.run`` and returns a ``RewardRun``; the score is
    read as HF reads it (see the module docstring). ``lm.score_head`` is the linear head.
    """

    def __init__(self, model, tokenizer=None, name: str | None = None):
        if classifier_kind(model.config) != "decoder":  # a supported encoder
            decoders = [t for t, row in ARCHITECTURES.items() if row.score]
            raise UnsupportedArchitecture(f"RewardLM takes decoder classifiers ({', '.join(sorted(decoders))}); "
                                          f"wrap a {model.config.model_type!r} encoder with interp.reward.wrap")
        super().__init__(model, tokenizer, name)
        # The row's ``unembed`` is the score head: the one forward path stops at its input (see run).
        self.arch = replace(self.arch, unembed=self.arch.score)
        self.n_labels: int = int(model.config.num_labels)

    def __repr__(self) -> str:
        return (f"RewardLM({self.name!r}, {self.model.config.model_type}, layers={self.n_layers}, "
                f"n_labels={self.n_labels})")

    def hook_names(self) -> list[str]:
        """The causal LM's hook names, then ``hook_score``: the score head's output
        ``[batch, pos, n_labels]`` at every position (the reward each prefix would get)."""
        return super().hook_names() + [SCORE_HOOK]

    def resolve(self, name: str) -> list[HookPoint]:
        if name == SCORE_HOOK:
            return [HookPoint(None, SCORE_HOOK)]
        return super().resolve(name)

    @property
    def score_head(self) -> torch.nn.Module:
        return self.model.get_submodule(self.arch.unembed)

    @property
    def unembed(self) -> torch.nn.Module:
        raise InterpError("a reward model has no unembedding (its head scores, it does not predict tokens); "
                          "use interp.lens.reward_lens(lm, resid), or load the causal LM for a logit lens")

    def score_columns(self, ids: Int[Tensor, "batch seq"], mask: Int[Tensor, "batch seq"]) -> Int[Tensor, " batch"]:
        """The padded column HF reads each prompt's score at (left padding)."""
        pad_id = self.model.config.get_text_config().pad_token_id
        seq = ids.shape[1]
        if pad_id is None:  # HF: the last token (it refuses batches, but alone this is it)
            return torch.full((ids.shape[0],), seq - 1, dtype=torch.long, device=ids.device)
        readable = (ids != pad_id) & mask.bool()
        index = torch.arange(seq, device=ids.device)
        last = (index * readable).argmax(-1)
        first_real = seq - mask.sum(-1)  # HF alone on an all-pad prompt reads its first token
        return torch.where(readable.any(-1), last, first_real)

    def run(
        self,
        prompts: Any,
        capture: Sequence[str] | str = (),
        positions: Positions = None,
        interventions: Mapping[str, Any] | None = None,
        logits: bool = True,
        grad: bool = False,
    ) -> RewardRun:
        """As ``LM.run``; ``run.scores`` replaces ``run.logits`` (``logits=False`` stops early
        and leaves ``scores`` ``None``). ``positions`` choose what is captured; the score is
        read at its own token whatever they are."""
        points, writes = self._points(capture, interventions)
        # hook_score is not a module of the body: computed below from the final hidden state
        score_point = HookPoint(None, SCORE_HOOK)
        capture_score = score_point in points
        points = [p for p in points if p != score_point]
        write_score = writes.pop(score_point, None)
        wants_final = logits or capture_score or write_score is not None or any(
            p.point == "ln_final.hook_normalized" for p in points + list(writes))
        if not wants_final and not points and not writes:
            raise InterpError("logits=False with nothing to capture: the run would compute nothing")
        ids, mask, lengths = self.to_tokens(prompts)
        device = self.device
        score_cols = self.score_columns(ids.to(device), mask.to(device))
        # The one forward path, stopped at the score head's input: HF's own pooling cannot take
        # kept positions and refuses batches without a pad id; the score is read below, as HF reads it.
        out = forward(self, ids, mask, capture=points, writes=writes, positions=positions,
                      end="unembed" if wants_final else "hooks", hidden_at_all=True, grad=grad)
        captures, hidden, cols, scores = out.captures, out.hidden, out.columns, None
        with torch.set_grad_enabled(grad):
            if hidden is not None:
                rows = torch.arange(hidden.shape[0], device=hidden.device)
                if capture_score or write_score is not None:
                    per_position = self.score_head(hidden)  # [batch, seq, n_labels]
                    if write_score is not None:
                        per_position = write_score(per_position, lengths.to(device))
                    if capture_score:
                        kept = per_position if cols is None else per_position[rows.unsqueeze(1), cols.to(device)]
                        captures[SCORE_HOOK] = kept.clone() if grad else kept.detach().clone()
                    scores = per_position[rows, score_cols]
                else:
                    scores = self.score_head(hidden[rows, score_cols])
                if not grad:
                    scores = scores.detach()
        return RewardRun(ids.to(device), mask.to(device), lengths, None, ActivationCache(captures, self.n_layers), cols,
                         scores=scores, score_columns=score_cols)

    def reward_lens(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_labels"]:
        """Final norm then score head, on any residual ``[..., d_model]``."""
        if resid.shape[-1] != self.d_model:
            raise InterpError(f"reward_lens expects [..., d_model={self.d_model}], got {tuple(resid.shape)}")
        with torch.no_grad() if not resid.requires_grad else torch.enable_grad():
            return self.score_head(self.final_norm(resid.to(self.dtype)))


def load_reward(name_or_path: str, **load_kwargs):
    """Load a reward model (registry name like ``toy/reward``, hub id, or folder): a
    ``RewardLM`` for decoder classifiers, an ``EncoderRewardModel`` for DeBERTa-v2/v3.
    Takes ``interp.load``'s options."""
    from interp.loading import load

    return load(name_or_path, head="classifier", **load_kwargs)
