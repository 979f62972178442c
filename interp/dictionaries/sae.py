"""A TopK sparse autoencoder (Gao et al. 2024) with the AuxK loss for dead latents, and its
training step. ``interp.dictionaries.mlsae`` builds the multi-layer SAE on it.

Why our own code: ``sae-lens`` (6.x) pins TransformerLens < 4 and ``dictionary-learning``
(0.1.0 on PyPI) pins nnsight < 0.4, both older than the toolkit's; neither trains one SAE on
several layers with the layer as a batch dimension (the MLSAE), and both bring their own
activation stores, whereas ours reads ``interp.dictionaries.harvest``. The SAE itself is a
hundred lines, so it is written here and tested against planted dictionaries.

The model: ``z = TopK(ReLU((x - b_dec) W_enc + b_enc))`` keeps the ``k`` largest pre-activations
(``ReLU`` after the selection, as the reference implementations), ``x_hat = z W_dec + b_dec``;
decoder rows have unit norm (renormalised after every step, and the gradient component along
each row removed before it, so Adam's step does not fight the renormalisation). The decode reads
only the ``k`` chosen rows (``embedding_bag``), so its cost is ``k x d`` per input, not ``n x d``.

AuxK (Gao et al. 2024, sec. A.2): a latent that has not fired for ``dead_after`` inputs is
*dead*; the ``auxk`` largest pre-activations among dead latents reconstruct the main
reconstruction's error ``e = x - x_hat`` (detached), and ``auxk_coef x ||e - e_hat||^2 /
||e - mean(e)||^2`` is added to the loss. Without it a dead latent gets no gradient at all
(it is never among the top k), so it stays dead.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from interp.dictionaries.errors import DictionaryError

STANDARDIZE = ("layer", "token", "none")


@dataclass(frozen=True)
class SAEConfig:
    """What a dictionary is and how it is trained.

    Attributes:
        n_latents: dictionary size; k: latents kept per input (the L0 of TopK).
        auxk: dead latents used by the AuxK loss (``None``: ``d_model // 2``, as Gao et al.; 0: off).
        auxk_coef: its weight (1/32, as Gao et al. and mlsae).
        dead_after: inputs without firing after which a latent counts as dead (an MLSAE input is
            one token at one layer).
        lr, steps, batch_size, seed: Adam's learning rate, training steps, tokens per step, seed.
        standardize: the MLSAE's input standardisation: ``"layer"`` (each layer's mean vector
            and one scale per layer, fitted on the first training batches: every layer counts
            alike although the residual norm grows with depth), ``"token"`` (each vector to zero
            mean and unit variance over its components, as tim-lawson/mlsae), or ``"none"``.
    """

    n_latents: int = 1024
    k: int = 16
    auxk: int | None = None
    auxk_coef: float = 1 / 32
    dead_after: int = 200_000
    lr: float = 1e-3
    steps: int = 1000
    batch_size: int = 1024
    seed: int = 0
    standardize: str = "layer"

    def __post_init__(self):
        for name in ("n_latents", "k", "steps", "batch_size", "dead_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise DictionaryError(f"{name} must be an integer >= 1, got {value!r}")
        if self.k > self.n_latents:
            raise DictionaryError(f"k={self.k} exceeds n_latents={self.n_latents}; valid: 1..{self.n_latents}")
        if self.auxk is not None and (not isinstance(self.auxk, int) or self.auxk < 0):
            raise DictionaryError(f"auxk must be None (d_model // 2), 0 (off) or a positive integer, got {self.auxk!r}")
        if self.standardize not in STANDARDIZE:
            raise DictionaryError(f"unknown standardize {self.standardize!r}; valid: {', '.join(STANDARDIZE)}")
        if not self.lr > 0:
            raise DictionaryError(f"lr must be > 0, got {self.lr!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "SAEConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DictionaryError(f"unknown config fields {unknown}; valid: {', '.join(sorted(known))}")
        return cls(**d)


class TopK(NamedTuple):
    """The chosen latents of each input: ``values`` (after ReLU) and ``indices``, ``[..., k]``."""

    values: Float[Tensor, "... k"]
    indices: Int[Tensor, "... k"]


class SAEOutput(NamedTuple):
    """``recon``: the reconstruction; ``topk``: the chosen latents; ``pre``: all pre-activations."""

    recon: Float[Tensor, "m d_model"]
    topk: TopK
    pre: Float[Tensor, "m n_latents"]


class TopKSAE(nn.Module):
    """A TopK SAE over ``d_model``-dimensional inputs (module doc)."""

    def __init__(self, d_model: int, config: SAEConfig):
        super().__init__()
        self.d_model, self.config = d_model, config
        n = config.n_latents
        gen = torch.Generator().manual_seed(config.seed)
        dec = torch.randn(n, d_model, generator=gen)
        dec = dec / dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(dec)
        self.W_enc = nn.Parameter(dec.T.clone())  # tied at the start (Gao et al.)
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.Parameter(torch.zeros(d_model))
        # Inputs since each latent last fired: AuxK's notion of dead.
        self.register_buffer("since_fired", torch.zeros(n, dtype=torch.long))

    @property
    def auxk(self) -> int:
        return self.d_model // 2 if self.config.auxk is None else self.config.auxk

    def pre(self, x: Float[Tensor, "m d_model"]) -> Float[Tensor, "m n_latents"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def select(self, pre: Float[Tensor, "m n_latents"], k: int | None = None) -> TopK:
        values, indices = pre.topk(k or self.config.k, dim=-1, sorted=False)
        return TopK(values.relu(), indices)

    def decode(self, topk: TopK, bias: bool = True) -> Float[Tensor, "m d_model"]:
        """``sum_i values_i W_dec[indices_i] (+ b_dec)``, reading only the chosen rows."""
        shape = topk.indices.shape
        flat = F.embedding_bag(topk.indices.reshape(-1, shape[-1]), self.W_dec,
                               per_sample_weights=topk.values.reshape(-1, shape[-1]), mode="sum")
        out = flat.reshape(*shape[:-1], self.d_model)
        return out + self.b_dec if bias else out

    def forward(self, x: Float[Tensor, "m d_model"]) -> SAEOutput:
        pre = self.pre(x)
        topk = self.select(pre)
        return SAEOutput(self.decode(topk), topk, pre)

    def dense(self, topk: TopK) -> Float[Tensor, "... n_latents"]:
        """The latents as a dense ``[..., n_latents]`` tensor (zeros off the top k)."""
        z = topk.values.new_zeros(*topk.values.shape[:-1], self.config.n_latents)
        return z.scatter(-1, topk.indices, topk.values)

    def encode(self, x: Float[Tensor, "m d_model"]) -> Float[Tensor, "m n_latents"]:
        return self.dense(self.select(self.pre(x)))

    # -- training ------------------------------------------------------------------------------
    def loss(self, x: Float[Tensor, "m d_model"]) -> tuple[Tensor, dict[str, float]]:
        """The training loss on one batch (normalised MSE + AuxK), updating ``since_fired``."""
        out = self(x)
        err = out.recon - x
        variance = (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        mse = err.pow(2).sum(-1).mean() / variance  # the batch's FVU
        dead = self.since_fired >= self.config.dead_after
        with torch.no_grad():
            fired = torch.zeros_like(dead)
            fired[out.topk.indices[out.topk.values > 0]] = True
            self.since_fired += x.shape[0]
            self.since_fired[fired] = 0
        aux = torch.zeros((), device=x.device)
        n_dead = int(dead.sum())
        if self.auxk > 0 and n_dead > 0:
            masked = out.pre.masked_fill(~dead, float("-inf"))
            aux_topk = self.select(masked, min(self.auxk, n_dead))
            e = (x - out.recon).detach()
            e_hat = self.decode(aux_topk, bias=False)
            aux = (e_hat - e).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        loss = mse + self.config.auxk_coef * aux
        return loss, {"loss": loss.item(), "fvu": mse.item(), "auxk": aux.item(), "dead_fraction": n_dead / len(dead)}

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove the gradient's component along each (unit) decoder row."""
        if self.W_dec.grad is not None:
            g = self.W_dec.grad
            g -= (g * self.W_dec).sum(-1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def optimizer(model: nn.Module, config: SAEConfig) -> torch.optim.Optimizer:
    # eps far below Adam's default: SAE gradients are tiny per parameter (mlsae and Gao et al. use 6.25e-10).
    return torch.optim.Adam(model.parameters(), lr=config.lr, eps=6.25e-10)


def train_step(sae: TopKSAE, opt: torch.optim.Optimizer, x: Float[Tensor, "m d_model"]) -> dict[str, float]:
    loss, logs = sae.loss(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    sae.project_decoder_grad()
    opt.step()
    sae.normalize_decoder()
    return logs


def train_sae(x: Float[Tensor, "n d_model"], config: SAEConfig, *, sae: TopKSAE | None = None,
              log_every: int = 50) -> tuple[TopKSAE, list[dict]]:
    """Train a TopK SAE on rows of ``x`` (shuffled each epoch), or continue ``sae``; returns the
    SAE and its history (one dict per ``log_every`` steps)."""
    if x.ndim != 2 or x.shape[0] == 0:
        raise DictionaryError(f"x must be a non-empty [n, d_model] tensor, got shape {tuple(x.shape)}")
    sae = sae or TopKSAE(x.shape[1], config)
    opt = optimizer(sae, config)
    history = []
    for step, batch in enumerate(_row_batches(x.float(), config.batch_size, config.steps, config.seed)):
        logs = train_step(sae, opt, batch)
        if step % log_every == 0 or step == config.steps - 1:
            history.append({"step": step, **logs})
    return sae.eval(), history


def _row_batches(x: Tensor, batch_size: int, steps: int, seed: int):
    """``steps`` batches of rows, a fresh permutation per pass over ``x``."""
    gen = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        perm = torch.randperm(x.shape[0], generator=gen)
        for lo in range(0, x.shape[0] - min(batch_size, x.shape[0]) + 1, batch_size):
            yield x[perm[lo:lo + batch_size]]
            done += 1
            if done == steps:
                return


# -- saving ------------------------------------------------------------------------------------
def save_module(module: nn.Module, folder: Path, meta: dict) -> None:
    """``config.json`` (``meta``) and ``weights.safetensors`` (every parameter and buffer)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(folder / "weights.safetensors"))
    (folder / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def read_folder(folder: Path, kind: str) -> tuple[dict, dict[str, Tensor]]:
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "weights.safetensors").is_file():
        raise DictionaryError(f"no saved dictionary in {str(folder)!r}: expected config.json and weights.safetensors")
    meta = json.loads((folder / "config.json").read_text())
    if meta.get("kind") != kind:
        raise DictionaryError(f"{str(folder)!r} holds a {meta.get('kind')!r} dictionary, not a {kind!r}")
    return meta, load_file(str(folder / "weights.safetensors"))


def sae_meta(sae: TopKSAE, kind: str, **extra) -> dict:
    return {"kind": kind, "format": 1, "d_model": sae.d_model, "config": asdict(sae.config), **extra}


def planted(n: int, d_model: int, n_atoms: int, k: int, *, seed: int = 0, noise: float = 0.0
            ) -> tuple[Float[Tensor, "n d_model"], Float[Tensor, "n_atoms d_model"]]:
    """Synthetic data from a known dictionary: ``n_atoms`` random unit atoms, each row the sum of
    ``k`` distinct atoms with coefficients uniform in [0.5, 1.5] (plus Gaussian ``noise``)."""
    gen = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d_model, generator=gen)
    atoms = atoms / atoms.norm(dim=-1, keepdim=True)
    which = torch.rand(n, n_atoms, generator=gen).argsort(-1)[:, :k]
    coef = 0.5 + torch.rand(n, k, generator=gen)
    x = torch.einsum("nk,nkd->nd", coef, atoms[which])
    return x + noise * torch.randn(n, d_model, generator=gen), atoms


def recovered(atoms: Float[Tensor, "a d_model"], decoder: Float[Tensor, "n d_model"], threshold: float = 0.9) -> float:
    """Fraction of ``atoms`` whose best-matching decoder row has cosine > ``threshold``."""
    a = atoms / atoms.norm(dim=-1, keepdim=True)
    w = decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return float(((a @ w.T).max(-1).values > threshold).float().mean())


__all__ = ["SAEConfig", "SAEOutput", "TopK", "TopKSAE", "planted", "recovered", "train_sae", "train_step"]
