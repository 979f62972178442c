"""A BatchTopK crosscoder between a base and a chat model (Lindsey et al. 2024, "Sparse
crosscoders"; Minder, Dumas et al., NeurIPS 2025, "Robustly identifying concepts introduced
during chat fine-tuning using crosscoders").

One dictionary of ``dict_size`` latents over the activations of both models at the same
token: a shared encoder reads every *source* (a model at a layer: ``(base, l), (chat, l), ...``)
and each source has its own decoder, so latent ``j`` writes ``f_j d_j^{base,l}`` into base and
``f_j d_j^{chat,l}`` into chat::

    f = BatchTopK(relu(sum_s (x_s - b_dec_s) W_enc_s + b_enc))      x_hat_s = f W_dec_s + b_dec_s

BatchTopK (Bussmann et al. 2024): a batch of ``b`` tokens keeps its ``k * b`` largest scores
over the whole batch (a token may use more or fewer than ``k`` latents); the score of a latent is
its activation times the summed norm of its decoders, so the choice does not depend on how a
latent splits its scale between encoder and decoder. At inference a latent fires where its score
exceeds ``threshold``, a running mean of the smallest score kept per training batch (as
dictionary-learning's BatchTopK trainers). AuxK (Gao et al. 2024): latents that fired on none of
the last ``dead_tokens`` tokens reconstruct the residual error with their top ``aux_k`` scores,
weighted ``aux_alpha``, so they get gradient and revive.

Activations enter scaled per source so that their mean squared norm is ``d_model``
(``scale``; Anthropic's normalisation), which lets one learning rate serve any model; decoders
and reconstructions are in that scaled space, :meth:`Crosscoder.decode` returns model units.

Decoder-norm classes (:func:`norm_classes`): ``Delta = (|d^chat| - |d^base|) / (2 max(...)) + 1/2``
is 0 for a latent only base decodes, 1 for one only chat decodes (Minder et al.'s relative
norm difference, there for one layer; here ``|d^m|`` is the norm over the chosen layers).
Their thresholds: ``chat_only`` for Delta >= 0.9, ``base_only`` for Delta <= 0.1, ``shared``
for 0.4 <= Delta <= 0.6; the latents in between are ``other``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.dictionaries.errors import DictionaryError

MEMBERS = ("base", "chat")
# Minder et al.'s thresholds on the relative decoder-norm difference Delta.
CHAT_ONLY, BASE_ONLY, SHARED = 0.9, 0.1, (0.4, 0.6)
CLASSES = ("shared", "base_only", "chat_only", "other")


@dataclass(frozen=True)
class CrosscoderConfig:
    """Architecture and training settings; saved with the weights.

    ``layers``: the model layers the sources come from (one crosscoder over all of them);
    ``k``: mean active latents per token (BatchTopK); ``dead_tokens``: a latent silent this many
    tokens counts as dead (AuxK); ``aux_k``: latents AuxK may use per token (default
    ``d_model // 2``, Gao et al.'s choice); ``threshold_momentum``: of the running threshold.
    """

    d_model: int
    dict_size: int
    k: int
    layers: tuple[int, ...] = (0,)
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3
    aux_k: int | None = None
    aux_alpha: float = 1 / 32
    dead_tokens: int = 100_000
    threshold_momentum: float = 0.99
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
        bad = [name for name in ("d_model", "dict_size", "k", "steps", "batch_size") if getattr(self, name) < 1]
        if bad:
            raise DictionaryError(f"crosscoder {bad[0]} must be >= 1, got {getattr(self, bad[0])}")
        if self.k > self.dict_size:
            raise DictionaryError(f"crosscoder k={self.k} exceeds dict_size={self.dict_size}; choose k <= dict_size")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise DictionaryError(f"crosscoder layers must be distinct and at least one, got {list(self.layers)}")

    @property
    def sources(self) -> tuple[tuple[str, int], ...]:
        """``(member, layer)`` of every source, in the order of the source axis."""
        return tuple((m, layer) for m in MEMBERS for layer in self.layers)


class Crosscoder(nn.Module):
    """Encoder, per-source decoders, and the inference threshold; see the module docstring."""

    def __init__(self, config: CrosscoderConfig):
        super().__init__()
        self.config = config
        n_src, d, n = len(config.sources), config.d_model, config.dict_size
        g = torch.Generator().manual_seed(config.seed)
        # Decoder rows of random direction and norm 0.1 per source; the encoder starts as their
        # transpose (Gao et al.'s and Anthropic's initialisation), so training starts near a
        # tied autoencoder whose latents all fire.
        dec = torch.randn(n, n_src, d, generator=g)
        dec = 0.1 * dec / dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(dec)                                        # [latent, source, d]
        self.W_enc = nn.Parameter(dec.permute(1, 2, 0).clone())                # [source, d, latent]
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.Parameter(torch.zeros(n_src, d))
        self.register_buffer("scale", torch.ones(n_src))                     # model units -> scaled
        self.register_buffer("threshold", torch.tensor(0.0))

    # -- shapes -------------------------------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        want = (len(self.config.sources), self.config.d_model)
        if x.ndim != 3 or tuple(x.shape[1:]) != want:
            raise DictionaryError(f"crosscoder input must be [batch, source={want[0]}, d_model={want[1]}] "
                                  f"(sources {list(self.config.sources)}), got {list(x.shape)}")

    def decoder_norms(self) -> Float[Tensor, "latent member"]:
        """``|d_j^m|`` per member, the norm over that member's layers (scaled space)."""
        n_layers = len(self.config.layers)
        per_source = self.W_dec.detach().norm(dim=-1)                         # [latent, source]
        return per_source.view(-1, len(MEMBERS), n_layers).pow(2).sum(-1).sqrt()

    # -- forward ------------------------------------------------------------------------------
    def pre_acts(self, x_scaled: Float[Tensor, "batch source d"]) -> Float[Tensor, "batch latent"]:
        return self._pre(x_scaled)

    def _pre(self, x_scaled):  # (unannotated: the training loop calls it every step, unchecked)
        b, n_src, d = x_scaled.shape
        w = self.W_enc.reshape(n_src * d, -1)
        # (x - b_dec) W + b_enc with b_dec folded into the bias: the input needs no gradient, so
        # the backward skips a [batch, source*d] product and b_dec's gradient is one vector's
        bias = self.b_enc - self.b_dec.reshape(1, -1) @ w
        return torch.relu(torch.addmm(bias, x_scaled.reshape(b, n_src * d), w))

    def _scores(self, pre):
        return pre * self.W_dec.norm(dim=-1).sum(-1)

    def encode(self, x: Float[Tensor, "batch source d"], *, scaled: bool = False) -> Float[Tensor, "batch latent"]:
        """Latent activations at inference (a latent fires where its score exceeds ``threshold``);
        ``x`` in model units unless ``scaled``."""
        self._check(x)
        xs = x if scaled else x * self.scale[:, None]
        pre = self.pre_acts(xs)
        return pre * (self._scores(pre) > self.threshold)

    def decode(self, f: Float[Tensor, "batch latent"], *, scaled: bool = False,
               bias: bool = True) -> Float[Tensor, "batch source d"]:
        """Every source's reconstruction from latents ``f`` (model units unless ``scaled``;
        ``bias=False`` leaves out ``b_dec``, for the contribution of a subset of latents)."""
        out = self._dec(f)
        if bias:
            out = out + self.b_dec
        return out if scaled else out / self.scale[:, None]

    def forward(self, x: Float[Tensor, "batch source d"]) -> Float[Tensor, "batch source d"]:
        return self.decode(self.encode(x))

    def _dec(self, f):
        return (f @ self.W_dec.reshape(f.shape[-1], -1)).view(f.shape[0], *self.W_dec.shape[1:])

    def batch_topk(self, pre, k: int):
        """Keep the ``k * batch`` largest scores of the batch (training-time sparsity)."""
        with torch.no_grad():
            keep = batch_topk_mask(self._scores(pre), k * pre.shape[0])
        return pre * keep

    # -- save / load --------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """``config.json`` and ``crosscoder.safetensors`` in ``folder``."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"kind": "crosscoder", **asdict(self.config)}, indent=2) + "\n",
                                            encoding="utf-8")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(folder / "crosscoder.safetensors"))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Crosscoder":
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DictionaryError(f"{folder} holds no readable crosscoder config.json ({err})") from None
        if raw.pop("kind", None) != "crosscoder":
            raise DictionaryError(f"{folder}/config.json is not a crosscoder's (kind 'crosscoder')")
        raw["layers"] = tuple(raw.get("layers", (0,)))  # (JSON has lists)
        try:
            config = CrosscoderConfig(**raw)
        except TypeError as err:
            raise DictionaryError(f"{folder}/config.json does not describe a crosscoder of this version ({err})") from None
        model = cls(config)
        model.load_state_dict(load_file(str(folder / "crosscoder.safetensors")))
        return model


def batch_topk_mask(scores: Tensor, n: int, per_row: int | None = None) -> Tensor:
    """Bool mask of the ``n`` largest entries of ``scores [batch, latent]`` (ties broken by
    ``topk``). One ``topk`` over the whole batch is the slow part of a training step; the top
    ``n`` can come only from each row's top ``per_row`` (default ``4 n / batch``), unless a row
    had all of those kept, when the whole batch is searched again (exact either way)."""
    b, width = scores.shape
    n = min(n, scores.numel())
    per_row = min(width, per_row or max(1, 4 * -(-n // b)))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if per_row < width and per_row * b >= n:
        cand = scores.topk(per_row, dim=-1, sorted=False)
        pick = cand.values.flatten().topk(n, sorted=False).indices
        chosen = torch.zeros(b * per_row, dtype=torch.bool)
        chosen[pick] = True
        chosen = chosen.view(b, per_row)
        if not chosen.all(-1).any():  # no row may hold more of the top n than it offered
            mask.scatter_(-1, cand.indices, chosen)
            return mask
    mask.view(-1)[scores.flatten().topk(n, sorted=False).indices] = True
    return mask


# -- data -------------------------------------------------------------------------------------------
def stack_sources(base: Tensor, chat: Tensor) -> Float[Tensor, "n source d"]:
    """``[n, d]`` or ``[n, layer, d]`` activations of each model at the same tokens -> the
    crosscoder's ``[n, source, d]`` (base's layers, then chat's)."""
    if base.ndim == 2:
        base, chat = base[:, None], chat[:, None]
    if base.ndim != 3 or base.shape != chat.shape:
        raise DictionaryError(f"base and chat activations must have one shape [n, d] or [n, layer, d] "
                              f"(same tokens, same width), got {list(base.shape)} and {list(chat.shape)}")
    if base.shape[0] == 0:
        raise DictionaryError("no activations (0 tokens): give a non-empty corpus")
    return torch.cat([base, chat], dim=1).float()


def source_scales(x: Float[Tensor, "n source d"]) -> Float[Tensor, " source"]:
    """Per-source factors making the mean squared norm ``d_model``."""
    msq = x.pow(2).sum(-1).mean(0)
    return (x.shape[-1] / msq.clamp_min(1e-12)).sqrt()


def _batches(n: int, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Index batches of shuffled epochs, endlessly."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield order[i:i + batch_size]


def _bag_decode(model: Crosscoder, cols: Tensor, vals: Tensor, offsets: Tensor | None = None) -> Tensor:
    """``sum_j f_j d_j`` per token from its chosen latents ``cols`` and values ``vals`` (flat with
    ``offsets`` per token, or ``[b, n]`` each), without the bias: ``[b, source*d]``."""
    return torch.nn.functional.embedding_bag(cols, model.W_dec.reshape(model.config.dict_size, -1), offsets,
                                             mode="sum", per_sample_weights=vals)


def sparse_losses(model: Crosscoder, xb: Tensor, k: int, dead: Tensor, aux_k: int):
    """One step's reconstruction loss and AuxK loss. The encoder runs dense; the decoder reads
    only the chosen (token, latent) entries through ``embedding_bag``: with ``k`` of
    ``dict_size`` latents per token the dense decoder and its two backward products are mostly
    multiplications by zero. The gradients equal the dense computation's (a test checks).
    Returns ``(loss, aux, rows, cols, vals)``: the chosen entries and their values (detached)."""
    b = xb.shape[0]
    pre = model._pre(xb)
    with torch.no_grad():
        rows, cols = batch_topk_mask(model._scores(pre), k * b).nonzero(as_tuple=True)   # row-major
        offsets = torch.zeros(b, dtype=torch.long)
        offsets[1:] = torch.bincount(rows, minlength=b).cumsum(0)[:-1]
    vals = pre[rows, cols]
    recon = _bag_decode(model, cols, vals, offsets) + model.b_dec.reshape(1, -1)
    err = xb.reshape(b, -1) - recon
    loss = err.pow(2).sum(-1).mean()
    aux = torch.zeros(())
    if dead.any():
        # AuxK: the dead latents' top scores reconstruct what the live ones missed.
        n_aux = min(aux_k, int(dead.sum()))
        with torch.no_grad():
            top = model._scores(pre * dead).topk(n_aux, dim=-1).indices      # [b, n_aux]
        e_hat = _bag_decode(model, top, (pre * dead).gather(-1, top))
        target = err.detach()
        aux = (target - e_hat).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean().clamp_min(1e-12)
        aux = torch.nan_to_num(aux, nan=0.0)
    return loss, aux, rows, cols, vals.detach()


@dataclass
class TrainHistory:
    """Per logged step: ``step``, ``loss`` (summed squared error per token, scaled space),
    ``fvu`` (fraction of variance unexplained, all sources), ``aux`` (AuxK loss), ``dead``
    (fraction of latents silent for ``dead_tokens``), ``l0`` (mean active latents per token)."""

    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps_per_second: float = 0.0  # over the steps after the first (its allocations are warm-up)


def train_crosscoder(x: Float[Tensor, "n source d"], config: CrosscoderConfig, *, log_every: int = 50,
                     progress: Callable[[Iterator], Iterator] | None = None) -> tuple[Crosscoder, TrainHistory]:
    """Train a crosscoder on ``x`` (:func:`stack_sources`); returns it and its history.

    Adam over ``config.steps`` batches of shuffled tokens; after each step decoder gradients
    are not projected (decoder norms carry the model-specificity the classes read)."""
    if x.ndim != 3 or x.shape[1] != len(config.sources) or x.shape[2] != config.d_model:
        raise DictionaryError(f"training data must be [n, source={len(config.sources)}, d_model={config.d_model}], "
                              f"got {list(x.shape)}")
    if x.shape[0] == 0:
        raise DictionaryError("no activations (0 tokens): give a non-empty corpus")
    torch.manual_seed(config.seed)
    model = Crosscoder(config)
    scale = source_scales(x)
    model.scale.copy_(scale)
    xs = x * scale[:, None]
    with torch.no_grad():  # b_dec at the mean: the encoder then reads deviations from it
        model.b_dec.copy_(xs.mean(0))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    # Linear decay over the last fifth (as dictionary-learning's trainers) steadies the end.
    decay_from = int(0.8 * config.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s < decay_from else max(0.0, (config.steps - s) / max(1, config.steps - decay_from)))
    aux_k = config.aux_k or max(1, config.d_model // 2)
    since_fired = torch.zeros(config.dict_size, dtype=torch.long)
    total_var = (xs - xs.mean(0)).pow(2).sum(dim=(1, 2)).mean()
    history = TrainHistory()
    steps = range(config.steps)
    started = time.perf_counter()
    batches = _batches(x.shape[0], min(config.batch_size, x.shape[0]), config.seed)
    for step in (progress(steps) if progress else steps):
        xb = xs[next(batches)]
        dead = since_fired >= config.dead_tokens
        loss, aux, rows, cols, vals = sparse_losses(model, xb, config.k, dead, aux_k)
        with torch.no_grad():
            fired = torch.zeros(config.dict_size, dtype=torch.bool)
            fired[cols[vals > 0]] = True
            since_fired += xb.shape[0]
            since_fired[fired] = 0
            live = vals > 0
            kept_min = (vals[live] * model.W_dec.norm(dim=-1).sum(-1)[cols[live]]).min() if live.any() else model.threshold
            m = config.threshold_momentum
            model.threshold.copy_(kept_min if step == 0 else m * model.threshold + (1 - m) * kept_min)
        opt.zero_grad(set_to_none=True)
        (loss + config.aux_alpha * aux).backward()
        opt.step()
        sched.step()
        if step == 0:
            after_first = time.perf_counter()
        if step % log_every == 0 or step == config.steps - 1:
            history.rows.append({"step": step, "loss": float(loss.detach()), "fvu": float(loss.detach() / total_var),
                                 "aux": float(aux.detach()),
                                 "dead": float(dead.float().mean()), "l0": float(live.sum()) / xb.shape[0]})
    history.seconds = time.perf_counter() - started
    if config.steps > 1:
        history.steps_per_second = (config.steps - 1) / max(time.perf_counter() - after_first, 1e-9)
    else:
        history.steps_per_second = 1 / max(history.seconds, 1e-9)
    model.eval()
    return model, history


# -- classes ----------------------------------------------------------------------------------------
def relative_norm_difference(norms: Float[Tensor, "latent member"]) -> Float[Tensor, " latent"]:
    """Delta = ((|d^chat| - |d^base|) / max(|d^base|, |d^chat|) + 1) / 2, in [0, 1]."""
    base, chat = norms[:, 0], norms[:, 1]
    return 0.5 * ((chat - base) / torch.maximum(base, chat).clamp_min(1e-12) + 1)


def norm_classes(delta: Float[Tensor, " latent"]) -> list[str]:
    """``chat_only`` / ``base_only`` / ``shared`` / ``other`` by Minder et al.'s thresholds."""
    out = []
    for v in delta.tolist():
        if v >= CHAT_ONLY:
            out.append("chat_only")
        elif v <= BASE_ONLY:
            out.append("base_only")
        elif SHARED[0] <= v <= SHARED[1]:
            out.append("shared")
        else:
            out.append("other")
    return out


@torch.no_grad()
def evaluate(model: Crosscoder, x: Float[Tensor, "n source d"], batch_size: int = 4096) -> dict:
    """Inference metrics on ``x``: FVU per member, mean L0, fraction of latents that never fire,
    and each latent's firing frequency (``freq``, a tensor)."""
    sse = torch.zeros(len(model.config.sources))
    fired = torch.zeros(model.config.dict_size)
    l0 = 0.0
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].float()
        f = model.encode(xb)
        sse += (xb - model.decode(f)).mul(model.scale[:, None]).pow(2).sum(dim=(0, 2))
        fired += (f > 0).sum(0)
        l0 += float((f > 0).sum())
    xs = x.float() * model.scale[:, None]
    var = (xs - xs.mean(0)).pow(2).sum(dim=(0, 2))
    per_member = {m: float(sse[i * len(model.config.layers):(i + 1) * len(model.config.layers)].sum()
                           / var[i * len(model.config.layers):(i + 1) * len(model.config.layers)].sum())
                  for i, m in enumerate(MEMBERS)}
    return {"fvu_base": per_member["base"], "fvu_chat": per_member["chat"], "l0": l0 / x.shape[0],
            "dead_fraction": float((fired == 0).float().mean()), "freq": fired / x.shape[0]}
