"""The multi-layer SAE (Lawson et al., ICLR 2025; tim-lawson/mlsae): one TopK SAE trained on the
residual stream of every harvested layer, the layer being one more batch dimension.

An input ``[batch, layer, d_model]`` is standardised per layer (``SAEConfig.standardize``), its
``batch x layer`` vectors go through one ``TopKSAE`` (``interp.dictionaries.sae``), and the
reconstructions are mapped back to each layer's scale. A latent can therefore fire at any layer;
``interp.dictionaries.metrics`` measures at which.

    model, history = train_mlsae(acts, SAEConfig(n_latents=1024, k=16), member="both")
    model.reconstruct(acts.base(3), layer=3)      # [n, d_model], in the residual's own units
    model.save(folder); MLSAE.load(folder)

``member``: ``"base"`` or ``"chat"`` trains on that member's activations, ``"both"`` on both
streams together (half of each batch from each, the same tokens), which gives one latent space in
which base and chat tokens can be compared (``mlsae_report``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from interp.dictionaries.errors import DictionaryError
from interp.dictionaries.harvest import Activations, PairActivations
from interp.dictionaries.sae import SAEConfig, TopK, TopKSAE, optimizer, read_folder, sae_meta, save_module, train_step

MEMBERS = ("base", "chat", "both")
FIT_TOKENS = 8192  # tokens whose statistics fix the "layer" standardisation
EPS = 1e-5


class MLSAEOutput(NamedTuple):
    """``recon``: reconstruction in the input's units; ``topk``: the chosen latents per (token, layer)."""

    recon: Float[Tensor, "batch layer d_model"]
    topk: TopK


class MLSAE(nn.Module):
    """One TopK SAE over the residuals of ``layers`` (module doc)."""

    def __init__(self, layers: Sequence[int], d_model: int, config: SAEConfig):
        super().__init__()
        self.layers = tuple(int(layer) for layer in layers)
        self.config = config
        self.sae = TopKSAE(d_model, config)
        # "layer" standardisation: x -> (x - mean[l]) / scale[l], fitted by fit_standardization.
        self.register_buffer("mean", torch.zeros(len(self.layers), d_model))
        self.register_buffer("scale", torch.ones(len(self.layers)))

    @property
    def d_model(self) -> int:
        return self.sae.d_model

    @property
    def n_latents(self) -> int:
        return self.config.n_latents

    def __repr__(self) -> str:
        c = self.config
        return f"MLSAE(layers={list(self.layers)}, d_model={self.d_model}, n_latents={c.n_latents}, k={c.k}, standardize={c.standardize!r})"

    # -- standardisation -----------------------------------------------------------------------
    @torch.no_grad()
    def fit_standardization(self, x: Float[Tensor, "batch layer d_model"]) -> None:
        """Each layer's mean vector, and a scale making its mean squared norm ``d_model``."""
        self._check(x)
        mean = x.float().mean(0)
        self.mean.copy_(mean)
        self.scale.copy_(((x.float() - mean).pow(2).sum(-1).mean(0) / self.d_model).sqrt().clamp_min(EPS))

    def standardize(self, x: Tensor, idx: slice | int = slice(None)) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``(x_std, (shift, scale))`` with ``x = x_std * scale + shift``; ``x`` is
        ``[..., layer, d_model]`` (or ``[..., d_model]`` for one layer ``idx``)."""
        mode = self.config.standardize
        if mode == "layer":
            shift, scale = self.mean[idx], self.scale[idx].unsqueeze(-1)
        elif mode == "token":
            shift = x.mean(-1, keepdim=True)
            scale = (x - shift).std(-1, keepdim=True) + EPS
        else:
            shift, scale = x.new_zeros(()), x.new_ones(())
        return (x - shift) / scale, (shift, scale)

    # -- the forward pass ----------------------------------------------------------------------
    def forward(self, x: Float[Tensor, "batch layer d_model"]) -> MLSAEOutput:
        self._check(x)
        xs, (shift, scale) = self.standardize(x.float())
        out = self.sae(xs.reshape(-1, self.d_model))
        recon = out.recon.reshape(xs.shape) * scale + shift
        b, n_layers = x.shape[:2]
        topk = TopK(out.topk.values.reshape(b, n_layers, -1), out.topk.indices.reshape(b, n_layers, -1))
        return MLSAEOutput(recon, topk)

    def latents(self, x: Float[Tensor, "batch layer d_model"]) -> Float[Tensor, "batch layer n_latents"]:
        """Dense latent activations at each (token, layer)."""
        return self.sae.dense(self(x).topk)

    def reconstruct(self, x: Float[Tensor, "m d_model"], layer: int) -> Float[Tensor, "m d_model"]:
        """Block ``layer``'s residual ``x`` through the dictionary, in its own units."""
        if layer not in self.layers:
            raise DictionaryError(f"this MLSAE was trained on layers {list(self.layers)}, not {layer}")
        xs, (shift, scale) = self.standardize(x.float(), self.layers.index(layer))
        return (self.sae(xs).recon * scale + shift).to(x.dtype)

    def loss(self, x: Float[Tensor, "batch layer d_model"]) -> tuple[Tensor, dict[str, float]]:
        xs, _ = self.standardize(x.float())
        return self.sae.loss(xs.reshape(-1, self.d_model))

    def _check(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1:] != (len(self.layers), self.d_model):
            raise DictionaryError(f"MLSAE input must be [batch, layer={len(self.layers)}, d_model={self.d_model}], "
                                  f"got {tuple(x.shape)}")

    # -- saving --------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        """``config.json`` (config, layers, width) and ``weights.safetensors``."""
        save_module(self, folder, sae_meta(self.sae, "mlsae", layers=list(self.layers)))

    @classmethod
    def load(cls, folder: Path) -> "MLSAE":
        meta, state = read_folder(folder, "mlsae")
        model = cls(meta["layers"], meta["d_model"], SAEConfig.from_dict(meta["config"]))
        model.load_state_dict(state)
        return model.eval()


# -- training ----------------------------------------------------------------------------------
Source = PairActivations | Activations | Tensor


def _layers_of(acts: Source, layers: Sequence[int] | None) -> tuple[int, ...]:
    if isinstance(acts, Tensor):
        return tuple(layers) if layers is not None else tuple(range(acts.shape[1]))
    return acts.layers


def batches(acts: Source, member: str, batch_size: int, *, shuffle: bool, seed: int,
            drop_last: bool = False) -> Iterator[Float[Tensor, "batch layer d_model"]]:
    """One pass of ``[batch, layer, d_model]`` batches of ``member`` (``"both"``: half of each
    batch from each member, at the same tokens)."""
    if member not in MEMBERS and not isinstance(acts, (Activations, Tensor)):
        raise DictionaryError(f"unknown member {member!r}; valid: {', '.join(MEMBERS)}")
    if isinstance(acts, Tensor):
        if acts.ndim != 3 or acts.shape[0] == 0:
            raise DictionaryError(f"activations must be a non-empty [n, layer, d_model] tensor, got {tuple(acts.shape)}")
        order = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(acts.shape[0])
        stop = acts.shape[0] - acts.shape[0] % batch_size if drop_last else acts.shape[0]
        for lo in range(0, stop, batch_size):
            yield acts[order[lo:lo + batch_size]].float()
        return
    if isinstance(acts, Activations):
        for b in acts.batches(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last):
            yield b["acts"].float()
        return
    if member == "both":
        if acts.member("base").d_model != acts.member("chat").d_model:
            raise DictionaryError(f"member='both' needs one width, but base has d_model={acts.member('base').d_model} "
                                  f"and chat {acts.member('chat').d_model}; train on 'base' or 'chat'")
        for b in acts.batches(max(1, batch_size // 2), shuffle=shuffle, seed=seed, drop_last=drop_last):
            yield torch.cat([b["base"], b["chat"]]).float()
        return
    for b in acts.member(member).batches(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last):
        yield b["acts"].float()


def _endless(acts: Source, member: str, config: SAEConfig) -> Iterator[Tensor]:
    """Shuffled full batches, a new permutation (seed) each pass."""
    for epoch in count():
        empty = True
        for b in batches(acts, member, config.batch_size, shuffle=True, seed=config.seed + epoch, drop_last=True):
            empty = False
            yield b
        if empty:  # fewer tokens than one batch: use what there is
            yield from batches(acts, member, config.batch_size, shuffle=True, seed=config.seed + epoch)


def train_mlsae(acts: Source, config: SAEConfig, *, member: str = "base", layers: Sequence[int] | None = None,
                log_every: int = 50, progress: bool = False) -> tuple[MLSAE, list[dict]]:
    """Train an MLSAE on harvested activations.

    Args:
        acts: ``PairActivations`` (pick ``member``), one model's ``Activations``, or a tensor
            ``[n, layer, d_model]`` (``layers`` names its layer axis; default ``0..layer-1``).
        config: ``SAEConfig``; ``config.steps`` steps of ``config.batch_size`` tokens (each at
            every layer).
        member: ``"base"``, ``"chat"`` or ``"both"`` (for ``PairActivations``).

    Returns:
        the model (eval mode) and its history: one dict per ``log_every`` steps (``step``,
        ``loss``, ``fvu`` of the batch in standardised units, ``auxk``, ``dead_fraction``).
    """
    if isinstance(acts, PairActivations) and member not in MEMBERS:
        raise DictionaryError(f"unknown member {member!r}; valid: {', '.join(MEMBERS)}")
    if isinstance(acts, Tensor) and (acts.ndim != 3 or acts.shape[0] == 0):
        raise DictionaryError(f"activations must be a non-empty [n, layer, d_model] tensor, got {tuple(acts.shape)}")
    if not isinstance(acts, (PairActivations, Activations, Tensor)):
        raise DictionaryError(f"acts must be PairActivations, Activations or a [n, layer, d_model] tensor, "
                              f"got {type(acts).__name__}")
    layer_ids = _layers_of(acts, layers)
    d_model = acts.shape[2] if isinstance(acts, Tensor) else (
        acts.d_model if isinstance(acts, Activations) else acts.member("base" if member == "both" else member).d_model)
    torch.manual_seed(config.seed)
    model = MLSAE(layer_ids, d_model, config)
    first, seen = [], 0  # up to FIT_TOKENS tokens of one shuffled pass fix the standardisation
    for x in batches(acts, member, config.batch_size, shuffle=True, seed=config.seed):
        first.append(x)
        seen += x.shape[0]
        if seen >= FIT_TOKENS:
            break
    sample = torch.cat(first)
    model.fit_standardization(sample)
    with torch.no_grad():  # start the decoder bias at the data's mean, in standardised units
        model.sae.b_dec.copy_(model.standardize(sample)[0].reshape(-1, d_model).mean(0))
    opt = optimizer(model.sae, config)
    history = []
    model.train()
    stream = _endless(acts, member, config)
    for step, x in enumerate(tqdm(stream, total=config.steps, desc="mlsae", disable=not progress, leave=False)):
        if step == config.steps:
            break
        xs, _ = model.standardize(x)
        logs = train_step(model.sae, opt, xs.reshape(-1, d_model))
        if step % log_every == 0 or step == config.steps - 1:
            history.append({"step": step, **logs})
    return model.eval(), history
