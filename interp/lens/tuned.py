"""The tuned lens (Belrose et al. 2023): an affine translator per layer, then the logit lens.

Block ``l``'s ``resid_post`` ``h`` is decoded as ``logit_lens(h + W_l h + b_l)``. ``W`` and
``b`` start at zero, so an untrained tuned lens *is* the logit lens; training minimises
``KL(final distribution || lens distribution)`` at every layer but the last (whose
``resid_post`` the logit lens already decodes exactly, so its translator stays the identity).

Saved as ``config.json`` (the model's identity, including a hash of its final norm and
unembedding) and ``translators.safetensors``; :meth:`TunedLens.load` refuses a model whose
final norm or unembedding differ from the one the lens was trained on. A loaded lens's
``sha256`` (:func:`lens_sha256`, a hash of both files) identifies the lens itself: it changes
when the lens is retrained, so a study records it with the rows it decoded.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.devices import weights_of
from interp.errors import InterpError
from interp.lens.objects import logit_lens

CONFIG = "config.json"
WEIGHTS = "translators.safetensors"


def lens_sha256(folder) -> str:
    """sha256 of a saved tuned lens (its ``config.json``, then its translators): the lens's
    identity, computed from the files without loading a model."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
    return h.hexdigest()


def readout_hash(lm) -> str:
    """sha256 of the final norm's and unembedding's parameters: what a lens decodes through."""
    h = hashlib.sha256()
    for module in (lm.final_norm, lm.unembed):
        with weights_of(module):  # offloaded weights are meta tensors until brought in
            state = sorted(module.state_dict().items())
        for name, t in state:
            h.update(name.encode())
            h.update(t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class TunedLensConfig:
    """The identity of the model a tuned lens belongs to."""

    model: str
    d_model: int
    n_layers: int
    vocab: int
    readout_sha256: str

    @classmethod
    def of(cls, lm) -> TunedLensConfig:
        return cls(str(lm.name), int(lm.d_model), int(lm.n_layers), int(lm.d_vocab), readout_hash(lm))


class TunedLens(nn.Module):
    """One affine translator per block (``W [layer, d_model, d_model]``, ``b [layer, d_model]``)."""

    def __init__(self, lm, config: TunedLensConfig | None = None):
        super().__init__()
        self.config = config or TunedLensConfig.of(lm)
        self._lm = [lm]  # a list: the model is not a submodule (not saved, not trained)
        self.sha256: str | None = None  # lens_sha256 of the files it was loaded from (None: not loaded)
        d, n = self.config.d_model, self.config.n_layers
        # Frozen unless being trained (train_tuned_lens unfreezes it), so that probes can turn its
        # readouts into numpy arrays like the logit lens's.
        self.weight = nn.Parameter(torch.zeros(n, d, d, device=lm.device), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n, d, device=lm.device), requires_grad=False)

    @property
    def lm(self):
        return self._lm[0]

    def translate(self, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... d_model"]:
        if not 0 <= layer < self.config.n_layers:
            raise InterpError(f"layer {layer} out of range; the tuned lens has layers 0..{self.config.n_layers - 1}")
        resid = resid.to(self.weight.dtype)
        return resid + resid @ self.weight[layer].T + self.bias[layer]

    def decode(self, resid: Float[Tensor, "... d_model"], layer: int) -> Float[Tensor, "... vocab"]:
        if resid.shape[-1] != self.config.d_model:
            raise InterpError(f"TunedLens expects [..., d_model={self.config.d_model}], got {tuple(resid.shape)}")
        return logit_lens(self.lm, self.translate(resid, layer))

    def forward(self, resid: Tensor, layer: int) -> Tensor:
        return self.decode(resid, layer)

    def save(self, folder) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_file({"weight": self.weight.detach().contiguous(), "bias": self.bias.detach().contiguous()},
                  str(folder / WEIGHTS))
        return folder

    @classmethod
    def load(cls, folder, lm) -> TunedLens:
        """The lens saved in ``folder``, for ``lm``; an error if ``lm``'s readout is not the one
        it was trained on."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            raise InterpError(f"no tuned lens at {folder}: it needs {CONFIG} and {WEIGHTS} (write them with lens.save)")
        config = TunedLensConfig(**json.loads((folder / CONFIG).read_text()))
        mine = TunedLensConfig.of(lm)
        shape = ("d_model", "n_layers", "vocab")
        if any(getattr(config, k) != getattr(mine, k) for k in shape):
            raise InterpError(f"tuned lens at {folder} is for {config.model!r} "
                              f"({', '.join(f'{k}={getattr(config, k)}' for k in shape)}), not {mine.model!r} "
                              f"({', '.join(f'{k}={getattr(mine, k)}' for k in shape)})")
        if config.readout_sha256 != mine.readout_sha256:
            raise InterpError(f"tuned lens at {folder} was trained on {config.model!r}, whose final norm and "
                              f"unembedding differ from {mine.model!r}'s; retrain it with interp.lens.train_tuned_lens")
        lens = cls(lm, config)
        weights = load_file(str(folder / WEIGHTS))
        with torch.no_grad():
            lens.weight.copy_(weights["weight"])
            lens.bias.copy_(weights["bias"])
        lens.sha256 = lens_sha256(folder)
        return lens


def _kl(final_logp: Tensor, logits: Tensor) -> Tensor:
    """Mean over positions of ``KL(final || lens)``, in nats."""
    logp = logits.float().log_softmax(-1)
    return (final_logp.exp() * (final_logp - logp)).sum(-1).mean()


def lens_kl(lm, lens, texts: Sequence[str], batch_size: int = 16) -> Tensor:
    """``KL(final || lens)`` per layer ``[n_layers]``, averaged over every real token of ``texts``."""
    total, count = torch.zeros(lm.n_layers), 0
    for start in range(0, len(texts), batch_size):
        resid, final_logp = _residuals(lm, texts[start:start + batch_size])
        with torch.no_grad():
            for layer in range(lm.n_layers):
                total[layer] += _kl(final_logp, lens.decode(resid[layer], layer)) * resid.shape[1]
        count += resid.shape[1]
    return total / count


def _residuals(lm, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Every block's ``resid_post`` ``[layer, token, d_model]`` and the final log-probs
    ``[token, vocab]`` at the real (non-padding) tokens of ``texts``."""
    with torch.no_grad():
        run = lm.run(list(texts), capture="resid_post")
    resid = run.cache.stack("resid_post")  # [layer, batch, pos, d_model]
    mask = getattr(run, "attention_mask", None)
    if mask is None:
        mask = torch.ones(resid.shape[1:3], dtype=torch.bool)
    mask = mask.bool().to(resid.device)
    return resid[:, mask].float(), run.logits[mask].float().log_softmax(-1)


def train_tuned_lens(
    lm, texts: Sequence[str], *, steps: int = 200, lr: float = 1e-3, batch_size: int = 16, seed: int = 0,
    progress: bool = False,
) -> TunedLens:
    """Fit a :class:`TunedLens` for ``lm`` on ``texts``: Adam on the summed per-layer
    ``KL(final || lens)`` over batches of ``batch_size`` texts drawn with ``seed``."""
    texts = list(texts)
    if not texts:
        raise InterpError("train_tuned_lens needs at least one text")
    if steps < 0 or batch_size < 1:
        raise InterpError(f"train_tuned_lens needs steps >= 0 and batch_size >= 1, got steps={steps}, batch_size={batch_size}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    lens = TunedLens(lm).requires_grad_(True)
    opt = torch.optim.Adam(lens.parameters(), lr=lr)
    for step in range(steps):
        resid, final_logp = _residuals(lm, rng.sample(texts, min(batch_size, len(texts))))
        # The last block's resid_post is decoded exactly by the logit lens: leave it the identity.
        loss = sum(_kl(final_logp, lens.decode(resid[layer], layer)) for layer in range(lm.n_layers - 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and (step % 50 == 0 or step == steps - 1):
            print(f"step {step}: summed KL {loss.detach().item():.4f}")
    return lens.requires_grad_(False)
