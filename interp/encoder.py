"""Encoder reward models (DeBERTa-v2/v3, as ``OpenAssistant/reward-model-deberta-v3-large-v2``).

An encoder classifier reads the whole text both ways and scores its first token (``[CLS]``)
through a pooler (dense + activation) and a linear classifier. It takes a pair encoding,
``tokenizer(question, answer)``: ``run`` accepts ``(question, answer)`` tuples for that.

Batches are right-padded (HF's default for encoders) with their attention mask: nothing
depends on where the padding sits, since every token attends to every real token, and the
scored token is column 0 of every row.

Hook names, TransformerLens-like, for a post-LayerNorm encoder:

* ``hook_embed``: the embedding layer's output (token embeddings after its LayerNorm and mask),
  which is what block 0 reads;
* ``blocks.{l}.hook_resid_pre``: the input of layer l;
* ``blocks.{l}.hook_resid_post``: the output of layer l, i.e. after its final LayerNorm
  (post-LN: there is no un-normalised residual stream between layers).

Positions (captures and ``interp.replace``/``interp.add`` positions) are prompt-relative as
everywhere: ``0`` is ``[CLS]``, ``-1`` each prompt's last real token (its final ``[SEP]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.adapters import EncoderArch, encoder_arch_for
from interp.cache import ActivationCache
from interp.devices import execution_device
from interp.errors import InterpError, PromptError, UnknownHook
from interp.hook_names import HookPoint
from interp.hooks import HookSession, StopForward
from interp.interventions import Write, as_callable
from interp.positions import Positions, columns
from interp.reward import RewardRun


BLOCK_POINTS = ("resid_pre", "resid_post")


class EncoderRewardModel:
    """An encoder sequence classifier behind hook names; ``run(...).scores`` ``[batch, n_labels]``."""

    def __init__(self, model, tokenizer=None, name: str | None = None):
        config = model.config
        self.arch: EncoderArch = encoder_arch_for(config)
        if getattr(model.get_submodule(self.arch.body).encoder, "conv", None) is not None:
            # DeBERTa's optional convolution rewrites layer 0's output after the layer returns.
            raise InterpError("DeBERTa with conv_kernel_size > 0 is not supported: its layer-0 output is "
                              "changed after the layer, so hook_resid_post would not be what layer 1 reads")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name or getattr(config, "_name_or_path", None) or type(model).__name__
        self.n_layers: int = len(model.get_submodule(self.arch.blocks))
        self.d_model: int = int(config.hidden_size)
        self.n_labels: int = int(config.num_labels)
        self.max_positions: int | None = getattr(config, "max_position_embeddings", None)

    def __repr__(self) -> str:
        return (f"EncoderRewardModel({self.name!r}, {self.model.config.model_type}, layers={self.n_layers}, "
                f"n_labels={self.n_labels})")

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's execution device (``interp.devices``; with
        a ``device_map`` its weights may be offloaded, ``meta``)."""
        return execution_device(self.model.get_input_embeddings())

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def unembed(self) -> torch.nn.Module:
        raise InterpError("an encoder reward model has no unembedding (it scores, it does not predict tokens); "
                          "use interp.lens.reward_lens(rm, resid)")

    # -- names -------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        return ["hook_embed"] + [HookPoint(layer, p).name for layer in range(self.n_layers) for p in BLOCK_POINTS]

    def resolve(self, name: str) -> list[HookPoint]:
        if name in BLOCK_POINTS:
            return [HookPoint(layer, name) for layer in range(self.n_layers)]
        if name == "hook_embed":
            return [HookPoint(None, name)]
        names = self.hook_names()
        if isinstance(name, str) and name in names:
            layer = int(name.split(".")[1])
            return [HookPoint(layer, name.split(".hook_")[1])]
        raise UnknownHook(f"unknown hook name {name!r} for an encoder; valid names: hook_embed, "
                          f"blocks.{{0..{self.n_layers - 1}}}.hook_{{{','.join(BLOCK_POINTS)}}}, "
                          f"or a short name for every layer: {', '.join(BLOCK_POINTS)}")

    # -- tokens ------------------------------------------------------------------------
    def to_tokens(self, prompts: Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Right-padded ``(ids, attention_mask, token_type_ids, lengths)``.

        ``prompts``: a str, a ``(question, answer)`` pair, a list of either, or token ids
        (a list of int lists, or an integer tensor ``[batch, seq]``)."""
        if isinstance(prompts, (str, tuple)) or (isinstance(prompts, Tensor) and prompts.ndim == 1):
            prompts = [prompts]
        if isinstance(prompts, Tensor):
            prompts = list(prompts)
        if not isinstance(prompts, Sequence) or isinstance(prompts, (bytes, Mapping)) or not prompts:
            raise PromptError("encoder prompts must be a str, a (question, answer) pair, a list of those, or token ids")
        encoded = []
        for p in prompts:
            if isinstance(p, str) or (isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p)):
                if self.tokenizer is None:
                    raise PromptError("text prompts need a tokenizer: EncoderRewardModel(model, tokenizer), "
                                      "or pass token ids")
                enc = self.tokenizer(*p) if isinstance(p, tuple) else self.tokenizer(p)
                ids = torch.tensor(enc["input_ids"], dtype=torch.long)
                types = torch.tensor(enc.get("token_type_ids") or [0] * len(ids), dtype=torch.long)
            else:
                try:
                    ids = torch.as_tensor(p, dtype=torch.long).flatten()
                except (TypeError, ValueError, RuntimeError):
                    raise PromptError(f"prompt {p!r:.40} is not text, a (question, answer) pair of str, "
                                      "or token ids") from None
                vocab = self.model.config.vocab_size
                if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
                    raise PromptError(f"token ids must lie in 0..{vocab - 1}, got {int(ids.min())}..{int(ids.max())}")
                types = torch.zeros_like(ids)
            if len(ids) == 0:
                raise PromptError("a prompt is empty (no tokens)")
            encoded.append((ids, types))
        lengths = torch.tensor([len(ids) for ids, _ in encoded], dtype=torch.long)
        longest = int(lengths.max())
        if self.max_positions is not None and longest > self.max_positions:
            raise PromptError(f"prompts have up to {longest} tokens, longer than the model's context of "
                              f"{self.max_positions}; shorten them or drop those items")
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        pad_id = 0 if pad_id is None else pad_id  # any id: the attention mask hides padding
        ids = torch.full((len(encoded), longest), pad_id, dtype=torch.long)
        types = torch.zeros((len(encoded), longest), dtype=torch.long)
        mask = torch.zeros((len(encoded), longest), dtype=torch.long)
        for i, (row, row_types) in enumerate(encoded):
            ids[i, :len(row)], types[i, :len(row)], mask[i, :len(row)] = row, row_types, 1
        return ids, mask, types, lengths

    # -- the forward pass --------------------------------------------------------------
    def run(
        self,
        prompts: Any,
        capture: Sequence[str] | str = (),
        positions: Positions = None,
        interventions: Mapping[str, Any] | None = None,
        logits: bool = True,
        grad: bool = False,
    ) -> RewardRun:
        """Run prompts once; capture and write hook points; ``run.scores`` ``[batch, n_labels]``.

        Arguments as ``LM.run``; ``logits=False`` stops after the deepest hook asked for
        (``scores`` is then ``None``). Captures are ``[batch, pos, d_model]`` in right-padded
        columns (all columns) or at the prompt-relative ``positions``."""
        if isinstance(capture, str):
            capture = [capture]
        points = [p for name in capture for p in self.resolve(name)]
        ids, mask, types, lengths = self.to_tokens(prompts)
        seq = ids.shape[1]
        pad = seq - lengths
        writes = {}
        for name, value in (interventions or {}).items():
            fn = _right_padded(value.apply, pad) if isinstance(value, Write) else as_callable(value, name)
            for p in self.resolve(name):
                writes[p] = fn
        stop_layer = None
        if not logits:
            asked = points + list(writes)
            if not asked:
                raise InterpError("logits=False with nothing to capture: the run would compute nothing")
            stop_layer = max(max((p.layer for p in asked if p.layer is not None), default=0), 0)
        cols = columns(positions, lengths, seq)
        if cols is not None:  # the left-padded columns of these positions, moved to right padding
            cols = cols - pad.unsqueeze(1)
        device = self.device
        ids, mask, types = ids.to(device), mask.to(device), types.to(device)
        session = HookSession(self.model, self.arch.session_arch(), points, writes, lengths.to(device),
                              cols, stop_layer, grad)
        scores = None
        with torch.set_grad_enabled(grad):
            hidden = None
            with session.attached():
                try:
                    hidden = self.model.get_submodule(self.arch.body)(
                        input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
                except StopForward:
                    pass
            if hidden is not None:
                scores = self._head(hidden[:, 0])
                if not grad:
                    scores = scores.detach()
        return RewardRun(ids, mask, lengths, None, ActivationCache(session.cache, self.n_layers), cols,
                         scores=scores, score_columns=torch.zeros(len(ids), dtype=torch.long, device=device))

    def _head(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_labels"]:
        # The pooler reads token 0 of [batch, pos, d]: give it each residual as a 1-token row.
        pooled = self.model.get_submodule(self.arch.pooler)(resid.to(self.dtype).reshape(-1, 1, self.d_model))
        return self.model.get_submodule(self.arch.classifier)(pooled).reshape(*resid.shape[:-1], self.n_labels)

    def reward_lens(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... n_labels"]:
        """Pooler then classifier on the first token's residual ``[..., d_model]``: on the last
        layer's ``resid_post`` at position 0 it is ``run.scores``."""
        if resid.shape[-1] != self.d_model:
            raise InterpError(f"reward_lens expects [..., d_model={self.d_model}], got {tuple(resid.shape)}")
        with torch.no_grad() if not resid.requires_grad else torch.enable_grad():
            return self._head(resid)


def _right_padded(apply, pad: Int[Tensor, " batch"]):
    """``Write.apply`` (which reads prompt-relative positions in left-padded columns) on a
    right-padded activation: roll each row to left padding, write, roll back."""

    def call(act: Tensor, lengths: Tensor) -> Tensor:
        seq = act.shape[1]
        shift = pad.to(act.device).unsqueeze(1)
        index = torch.arange(seq, device=act.device).unsqueeze(0)
        to_left = ((index - shift) % seq).unsqueeze(-1).expand(-1, -1, act.shape[-1])
        to_right = ((index + shift) % seq).unsqueeze(-1).expand(-1, -1, act.shape[-1])
        return apply(act.gather(1, to_left), lengths).gather(1, to_right)

    return call
