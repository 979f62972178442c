"""Latent Scaling (Minder, Dumas et al., NeurIPS 2025): is a "chat-only" latent really absent
from base, or an artefact of the sparsity penalty?

A crosscoder may call a latent chat-only (its base decoder near zero) when base holds the
concept too: *Complete Shrinkage* (base's share was small, so the penalty zeroed its decoder and
the concept sits in base's reconstruction error) or *Latent Decoupling* (base's share is
reconstructed by other latents). Latent Scaling measures how much of the latent's chat
direction ``d = d_j^chat`` each model's activations hold, by the least-squares scale

    beta_j(y) = argmin_b sum_i |b f_j(x_i) d - y_i|^2 = sum_i f_j(x_i) <d, y_i> / (|d|^2 sum_i f_j(x_i)^2)

(a sum over tokens; only tokens where the latent fires count) for two targets per model m:

* error ``y = x^m - x_hat^m + f_j d_j^m``: the activation minus every *other* latent's share
  (and the decoder bias): what latent j would have to explain in m;
* reconstruction ``y = sum_k f_k d_k^m``: what the dictionary (every latent, biases left out)
  writes into m.

``nu_epsilon = beta^eps_base / beta^eps_chat`` is large under Complete Shrinkage and
``nu_r = beta^r_base / beta^r_chat`` under Latent Decoupling; a truly chat-only latent has both
near 0, a shared one near the ratio of its base and chat norms. Work is in the crosscoder's
scaled space (both models' activations at the same mean squared norm), so the ratios compare
like with like. The paper ranks chat-only latents by these ratios; the cut-offs here
(:data:`NU_EPSILON_MAX`, :data:`NU_R_MAX`) are this toolkit's defaults, chosen on the planted
test, and are options of the study.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.dictionaries.crosscoder import MEMBERS, Crosscoder
from interp.dictionaries.errors import DictionaryError

NU_EPSILON_MAX = 0.2
NU_R_MAX = 0.5


@dataclass(frozen=True)
class LatentScaling:
    """Per latent (tensors ``[latent]``): the four betas, the two ratios, and how many tokens
    the latent fired on (``n_active``; betas of a latent that never fired are NaN)."""

    beta_error_base: Tensor
    beta_error_chat: Tensor
    beta_recon_base: Tensor
    beta_recon_chat: Tensor
    n_active: Tensor

    @property
    def nu_epsilon(self) -> Tensor:
        return self.beta_error_base / self.beta_error_chat

    @property
    def nu_r(self) -> Tensor:
        return self.beta_recon_base / self.beta_recon_chat

    def robust(self, nu_epsilon_max: float = NU_EPSILON_MAX, nu_r_max: float = NU_R_MAX) -> Tensor:
        """Bool ``[latent]``: both ratios below their cut-offs (NaN counts as not robust)."""
        return (self.nu_epsilon < nu_epsilon_max) & (self.nu_r < nu_r_max)

    def columns(self) -> dict[str, list[float]]:
        """Columns for a latents table."""
        return {"beta_error_base": self.beta_error_base.tolist(), "beta_error_chat": self.beta_error_chat.tolist(),
                "beta_recon_base": self.beta_recon_base.tolist(), "beta_recon_chat": self.beta_recon_chat.tolist(),
                "nu_epsilon": self.nu_epsilon.tolist(), "nu_r": self.nu_r.tolist()}


def _member_slice(model: Crosscoder, member: str) -> slice:
    n = len(model.config.layers)
    i = MEMBERS.index(member)
    return slice(i * n, (i + 1) * n)


@torch.no_grad()
def latent_scaling(model: Crosscoder, x: Float[Tensor, "n source d"], batch_size: int = 4096) -> LatentScaling:
    """The betas of every latent over the tokens ``x`` (model units, as for ``model.encode``)."""
    model._check(x)
    if x.shape[0] == 0:
        raise DictionaryError("latent scaling needs activations of at least one token")
    chat = _member_slice(model, "chat")
    d = model.W_dec[:, chat].flatten(1)                                  # [latent, layers*d]: chat direction
    d_sq = d.pow(2).sum(-1)
    num = {(t, m): torch.zeros(model.config.dict_size, dtype=torch.float64)
           for t in ("error", "recon") for m in MEMBERS}
    den = torch.zeros(model.config.dict_size, dtype=torch.float64)
    n_active = torch.zeros(model.config.dict_size, dtype=torch.long)
    for i in range(0, x.shape[0], batch_size):
        xs = x[i:i + batch_size].float() * model.scale[:, None]
        f = model.encode(xs, scaled=True)                                # [b, latent]
        recon = model.decode(f, scaled=True, bias=False)                 # [b, source, d]
        for m in MEMBERS:
            sl = _member_slice(model, m)
            own = (model.W_dec[:, sl].flatten(1) * d).sum(-1)            # <d_j^chat, d_j^m>
            err = (xs[:, sl] - recon[:, sl] - model.b_dec[sl]).flatten(1)
            # <d_j, y_ij> for every token and latent at once; the error target adds back j's own share.
            proj_err = err @ d.T + f * own
            proj_rec = recon[:, sl].flatten(1) @ d.T
            num["error", m] += (f * proj_err).sum(0).double()
            num["recon", m] += (f * proj_rec).sum(0).double()
        den += f.pow(2).sum(0).double()
        n_active += (f > 0).sum(0)
    den = den * d_sq.double()
    beta = {key: (v / den).float() for key, v in num.items()}  # 0/0 = NaN for a latent that never fired
    return LatentScaling(beta["error", "base"], beta["error", "chat"], beta["recon", "base"], beta["recon", "chat"],
                         n_active)
