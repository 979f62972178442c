"""``LM``: a loaded HF causal LM with the toolkit's one forward-pass API."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from interp.adapters import Arch, arch_for
from interp.cache import ActivationCache, Run
from interp.devices import execution_device
from interp.errors import PromptError, UnknownHook
from interp.forward import Forward, Pass, forward, torch_pass
from interp.hook_names import QKV_POINTS, HookPoint, parse, valid_points
from interp.hooks import WriteFn
from interp.interventions import as_callable
from interp.positions import Positions

# What ``LM.run`` takes as prompts. Signatures say ``Any``: ``LM._sequences`` checks the value at
# run time with a PromptError naming these types (a type checker would stop the check in tests).
Prompts = str | Sequence[str] | Tensor | Sequence[int] | Sequence[Sequence[int]] | Sequence[Tensor]
ACCEPTED = ("a str, a list of str, or token ids (an integer tensor [batch, seq] or [seq], a list of ints, "
            "or a list of such sequences)")
_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
# A reward model's own hook (``interp.reward``): its score head's output at every position.
SCORE_HOOK = "hook_score"


def _array_to_tensor(x):
    """A numpy (or other ``__array__``) array as a tensor; anything else unchanged."""
    if not isinstance(x, (Tensor, str, bytes, bytearray)) and hasattr(x, "__array__") and hasattr(x, "dtype"):
        try:
            return torch.as_tensor(x)
        except (TypeError, RuntimeError):  # object arrays and the like: reported as themselves
            return x
    return x


def _is_int(x) -> bool:
    if isinstance(x, Tensor):
        return x.ndim == 0 and x.dtype in _INT_DTYPES
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_ids(x) -> bool:
    """One prompt's token ids: a 1-D integer tensor or a sequence of ints (not text, not bytes)."""
    x = _array_to_tensor(x)
    if isinstance(x, Tensor):  # [seq], or [1, seq] as a tokenizer's return_tensors="pt" gives
        return (x.ndim == 1 or (x.ndim == 2 and x.shape[0] == 1)) and x.dtype in _INT_DTYPES
    if isinstance(x, (str, bytes, bytearray, Mapping)) or not isinstance(x, Sequence):
        return False
    return all(_is_int(t) for t in x)


def _describe(x) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    text = " ".join(repr(x).split())  # one line, whatever the type's repr
    return f"{type(x).__name__} {text[:40] + '...' if len(text) > 40 else text}"


class LM:
    """A causal LM behind hook names. Build with ``LM.from_hf`` or ``interp.load``.

    The default is exact: no weight folding, centring or other processing, so
    ``lm.run(p).logits`` equals the HF model's own logits.
    """

    def __init__(self, model, tokenizer=None, name: str | None = None, capture_device=None):
        self.model = model.eval()
        # Where ``run`` returns captures and logits; ``None``: ``self.device`` (interp.devices).
        self.capture_device: torch.device | None = None if capture_device is None else torch.device(capture_device)
        self.tokenizer = tokenizer
        self.name = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
        self.arch: Arch = arch_for(model.config)
        config = model.config
        self.n_layers: int = int(config.num_hidden_layers)
        self.d_model: int = int(config.hidden_size)
        self.d_vocab: int = int(config.vocab_size)
        self.max_positions: int | None = getattr(config, "max_position_embeddings", None)
        self.parallel: bool = self.arch.is_parallel(config)
        self.n_heads: int = self.arch.n_heads(config)
        self.n_kv_heads: int = self.arch.n_kv_heads(config)  # < n_heads for grouped-query attention
        self.d_head: int = self.arch.d_head(config)
        # Padding needs a pad id; which one is irrelevant since the attention mask hides it.
        if self.tokenizer is not None and self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # The tokenizer warns once that a long text "will result in indexing errors"; it will not
        # here: LM.run raises PromptError past max_positions, and probes truncate or skip such
        # items and count them. Marking the warning as given keeps the console to our accounting.
        warned = getattr(self.tokenizer, "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True

    @classmethod
    def from_hf(cls, model, tokenizer=None, name: str | None = None, capture_device=None) -> "LM":
        """Wrap an already-loaded HF ``*ForCausalLM`` model (and its tokenizer), also one
        dispatched over devices by accelerate (``device_map``)."""
        return cls(model, tokenizer, name, capture_device)

    def __repr__(self) -> str:
        return f"LM({self.name!r}, {self.model.config.model_type}, layers={self.n_layers}, d_model={self.d_model})"

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device the embedding runs on (with a ``device_map``, its
        accelerate hook's execution device; its weights may be offloaded, ``meta``)."""
        return execution_device(self.model.get_submodule(self.arch.embed))

    @property
    def output_device(self) -> torch.device:
        """Where ``run`` returns captures and logits: ``capture_device``, else ``device``."""
        return self.capture_device or self.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def head_points(self) -> tuple[str, ...]:
        """The attention-head points this family's adapter row supports (``interp.hook_names``)."""
        return (QKV_POINTS if self.arch.has_qkv() else ()) + (("pattern", "z") if self.arch.attn_o else ())

    @property
    def final_norm(self) -> torch.nn.Module:
        return self.model.get_submodule(self.arch.final_norm)

    @property
    def unembed(self) -> torch.nn.Module:
        return self.model.get_submodule(self.arch.unembed)

    backend = "torch"  # how ``execute`` runs a forward ("nnsight": ``interp.nnsight_backend.NNsightLM``)
    # This process runs the model, so code may hook or swap its modules (not so on NDIF).
    local_modules = True

    def execute(self, plan: Pass) -> Forward:
        """Run one planned forward (``interp.forward``) with PyTorch hooks on ``self.model``."""
        return torch_pass(self, plan)

    # -- names -------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every full hook name of this model, in execution order."""
        globals_, points = valid_points(self.n_layers, self.parallel, self.arch.pos_embed is not None, self.head_points)
        names = [g for g in globals_ if g != "ln_final.hook_normalized"]
        for layer in range(self.n_layers):
            names += [HookPoint(layer, p).name for p in points]
        return names + ["ln_final.hook_normalized"]

    def resolve(self, name: str) -> list[HookPoint]:
        """Full or short hook name -> the points it selects (raises UnknownHook)."""
        try:
            return parse(name, self.n_layers, self.parallel, self.arch.pos_embed is not None, self.head_points)
        except UnknownHook as err:
            if name != SCORE_HOOK:
                raise
            valid = str(err).partition("; ")[2]
            raise UnknownHook(f"{name!r} is a reward model's hook (its score head's output), and this is a "
                              f"causal LM; load a reward model with interp.load_reward(...); {valid}") from None

    # -- tokens ------------------------------------------------------------------------
    def to_tokens(
        self, prompts: Any  # Prompts
    ) -> tuple[Int[Tensor, "batch seq"], Int[Tensor, "batch seq"], Int[Tensor, " batch"]]:
        """Left-padded ``(ids, attention_mask, lengths)`` for strings or token sequences."""
        seqs = self._sequences(prompts)
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        if int(lengths.min()) == 0:
            empty = [i for i, s in enumerate(seqs) if len(s) == 0]
            raise PromptError(f"prompts {empty} are empty (no tokens)")
        longest = int(lengths.max())
        if self.max_positions is not None and longest > self.max_positions:
            too_long = [i for i, s in enumerate(seqs) if len(s) > self.max_positions]
            raise PromptError(
                f"prompts {too_long[:10]} have up to {longest} tokens, longer than the model's "
                f"context of {self.max_positions}; shorten them or drop those items"
            )
        for s in seqs:
            if int(s.min()) < 0 or int(s.max()) >= self.d_vocab:
                raise PromptError(f"token ids must lie in 0..{self.d_vocab - 1}, got {int(s.min())}..{int(s.max())}")
        pad_id = self.pad_id
        ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, longest - len(s):] = s
            mask[i, longest - len(s):] = 1
        return ids, mask, lengths

    def _sequences(self, prompts: Any) -> list[Tensor]:
        """Each prompt as a 1-D tensor of token ids; a PromptError naming the accepted types otherwise."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = _array_to_tensor(prompts)
        if isinstance(prompts, Tensor):
            if prompts.ndim == 1:
                prompts = prompts.unsqueeze(0)
            if prompts.ndim != 2 or prompts.dtype not in _INT_DTYPES:
                raise PromptError(f"token prompts must be an integer tensor [batch, seq], got {prompts.dtype} {tuple(prompts.shape)}")
            return list(prompts.long())
        if isinstance(prompts, (bytes, bytearray, Mapping)) or not isinstance(prompts, Sequence):
            raise PromptError(f"prompts must be {ACCEPTED}; got {_describe(prompts)}")
        prompts = list(prompts)
        if not prompts:
            raise PromptError("the prompt list is empty; pass at least one prompt")
        if all(_is_int(p) for p in prompts):  # one prompt's ids, like a 1-D tensor
            prompts = [prompts]
        if all(isinstance(p, str) for p in prompts):
            empty = [i for i, p in enumerate(prompts) if not p]
            if empty:
                raise PromptError(f"prompts {empty[:10]} are empty strings; every prompt needs some text")
            if self.tokenizer is None:
                raise PromptError("string prompts need a tokenizer: LM.from_hf(model, tokenizer), or pass token ids")
            return [torch.tensor(self.tokenizer(p)["input_ids"], dtype=torch.long) for p in prompts]
        bad = [i for i, p in enumerate(prompts) if not (isinstance(p, str) or _is_ids(p))]
        if bad:
            raise PromptError(f"prompt {bad[0]} is {_describe(prompts[bad[0]])}; prompts must be {ACCEPTED}")
        if any(isinstance(p, str) for p in prompts):
            raise PromptError("mix of strings and token sequences; pass one kind")
        return [torch.as_tensor(_array_to_tensor(p), dtype=torch.long).flatten() for p in prompts]

    @property
    def pad_id(self) -> int:
        """The id padding columns hold (hidden by the attention mask; 0 without a tokenizer)."""
        if self.tokenizer is not None and self.tokenizer.pad_token_id is not None:
            return int(self.tokenizer.pad_token_id)
        return 0

    # -- the forward pass --------------------------------------------------------------
    def run(
        self,
        prompts: Any,  # Prompts, checked by _sequences with a clearer message
        capture: Sequence[str] | str = (),
        positions: Positions = None,
        interventions: Mapping[str, Any] | None = None,  # validated by as_callable, with a clearer message
        logits: bool = True,
        grad: bool = False,
        use_cache: bool = False,
    ) -> Run:
        """Run prompts once; capture hook points, write to them, return logits.

        Args:
            prompts: a string, a list of strings, or token ids (``[batch, seq]`` or ``[seq]``
                integer tensor, a list of ints for one prompt, or a list of sequences). Anything
                else (``None``, bytes, numbers, an empty string) raises ``PromptError``. Batches are left-padded with position ids and attention
                masks set so that each prompt's numbers equal those of running it alone, and
                position ``-1`` is every prompt's last real token.
            capture: full hook names, or short names meaning every layer (see
                ``interp.hook_names``; attention heads: ``blocks.{l}.attn.hook_{q,k,v,pattern,z}``,
                and a run with a pattern hook uses eager attention).
            positions: prompt-relative positions to keep (e.g. ``-1``); captures and logits
                are then ``[batch, len(positions), ...]`` and the unembedding is computed only
                there, so memory stays O(layers x d_model) per prompt.
            interventions: hook name (full or short) -> tensor / ``interp.replace`` /
                ``interp.add`` (at head hooks with ``heads=[...]``) / function of the
                activation. Captures see written values.
            logits: with ``False``, the forward stops after the deepest hook point asked
                for; ``run.logits`` is then ``None``.
            grad: keep the autograd graph (captures not detached).
            use_cache: keep the HF key/value cache of every position in ``run.past``, to
                continue from with ``run_continuation``.
        """
        points, writes = self._points(capture, interventions)
        ids, mask, lengths = self.to_tokens(prompts)
        out = forward(self, ids, mask, capture=points, writes=writes, positions=positions,
                      end="logits" if logits else "hooks", use_cache=use_cache, grad=grad,
                      capture_device=self.output_device)
        return Run(ids.to(self.output_device), mask.to(self.output_device), lengths, out.logits,
                   ActivationCache(out.captures, self.n_layers), out.columns, out.past)

    def run_continuation(
        self,
        past: Any,  # an HF Cache
        # [batch, past], [batch, seq] and [batch, seq] integer tensors, checked below with a clearer message
        past_mask: Any,
        ids: Any,
        mask: Any = None,
        capture: Sequence[str] | str = (),
        use_cache: bool = True,
    ) -> Run:
        """Run ``ids`` after the positions held by ``past`` (e.g. ``lm.run(..., use_cache=True).past``).

        Numbers equal those of running each row's real past tokens then its real ``ids`` alone
        (up to float rounding): the mask is ``past_mask`` then ``mask``, position ids continue
        from each row's real past tokens, so ``ids`` may be right-padded (``mask`` 0 there).
        The cache receives these positions (``run.past``). To branch one past into several
        continuations, expand it first (``past.reorder_cache(rows)``, ``past_mask[rows]``).

        Returns:
            a ``Run`` whose ``tokens``/``attention_mask`` are ``ids``/``mask``, ``lengths`` the
            real tokens of past and ``ids`` per row, logits and captures at every column of ``ids``.
        """
        ids, past_mask = torch.as_tensor(ids), torch.as_tensor(past_mask)
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask)
        if ids.ndim != 2 or ids.dtype not in _INT_DTYPES or mask.shape != ids.shape:
            raise PromptError(f"ids and mask must be integer tensors [batch, seq] of one shape, got "
                              f"{ids.dtype} {tuple(ids.shape)} and {tuple(mask.shape)}")
        if past_mask.ndim != 2 or past_mask.shape[0] != ids.shape[0] or past_mask.shape[1] != past.get_seq_length():
            raise PromptError(f"past_mask must be [batch={ids.shape[0]}, past={past.get_seq_length()}] "
                              f"(one row per continuation, one column per cached position), got {tuple(past_mask.shape)}")
        points, _ = self._points(capture, None)
        out = forward(self, ids.long(), mask.long(), past=past, past_mask=past_mask.long(), capture=points,
                      use_cache=use_cache, capture_device=self.output_device)
        lengths = past_mask.sum(-1).cpu() + mask.sum(-1).cpu()
        return Run(ids.to(self.output_device), mask.to(self.output_device), lengths, out.logits,
                   ActivationCache(out.captures, self.n_layers), None, out.past)

    def _points(self, capture, interventions) -> tuple[list[HookPoint], dict[HookPoint, WriteFn]]:
        """Hook names -> points to capture, and interventions -> point writes."""
        if isinstance(capture, str):
            capture = [capture]
        points = [p for name in capture for p in self.resolve(name)]
        writes = {}
        for name, value in (interventions or {}).items():
            for p in self.resolve(name):
                writes[p] = as_callable(value, name, p)
        return points, writes
