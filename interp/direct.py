"""Direct logit attribution: what each residual component writes straight into a logit.

The residual at the last block is a sum of components (the embedding, every attention and
FFN update). The output logits are ``unembed(norm(x))``; the norm is not linear, but with its
scale frozen at the final residual ``x`` it is:

    LayerNorm:  norm(c) ~ g * (c - mean(c)) / sqrt(var(x) + eps)      (+ b, once)
    RMSNorm:    norm(c) ~ g * c / sqrt(mean(x^2) + eps)

So component ``c``'s direct contribution to ``logit[t] - mean(logit)`` is
``norm(c) . (W_U[t] - mean_v W_U[v])``. Measuring against the mean logit removes what every
token gains alike. When the components sum to ``x``, the contributions plus ``bias`` (the
norm's and the unembedding's biases; 0 for Llama-style models) add up exactly to the
model's own ``logit[t] - mean(logit)``.

    run = lm.run(prompts, capture=["blocks.0.hook_resid_pre", "attn_out", "mlp_out", "resid_post"], positions=-1)
    comps = torch.cat([run.cache["blocks.0.hook_resid_pre"][:, 0][None],
                       run.cache.stack("attn_out")[:, :, 0], run.cache.stack("mlp_out")[:, :, 0]])
    dla = direct_logit_attribution(lm, run.cache.stack("resid_post")[-1, :, 0], comps, answer_ids)
    dla.contributions                   # [1 + 2 * layer, batch]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.adapters import Norm
from interp.devices import weights_of
from interp.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class NormLinearisation:
    """The parameters of a final norm that direct attribution needs.

    Attributes:
        centre: whether the norm subtracts the mean (LayerNorm) or not (RMSNorm).
        eps: the epsilon inside the square root.
        weight: the elementwise gain ``[d_model]``, or ``None`` when the norm has none.
        bias: the elementwise bias ``[d_model]``, or ``None`` (RMSNorm, or no bias).
    """

    centre: bool
    eps: float
    weight: Tensor | None
    bias: Tensor | None


def linearise_norm(norm: torch.nn.Module, kind: Norm) -> NormLinearisation:
    """The linearisation parameters of ``norm``, read as the adapter row's ``kind`` says
    (``lm.arch.norm``: which attributes hold eps, weight and bias). Raises
    ``UnsupportedArchitecture`` when the module lacks one of them."""
    names = {"eps": kind.eps, "weight": kind.weight, "bias": kind.bias}
    missing = [attr for attr in names.values() if attr is not None and not hasattr(norm, attr)]
    if missing:
        raise UnsupportedArchitecture(
            f"direct logit attribution: the final norm has no attribute {missing[0]!r} that the "
            f"adapter row's norm ({kind}) names; fix the row's norm in interp.adapters "
            "(LAYERNORM: eps, weight, bias; RMSNORM: variance_epsilon, weight)"
        )
    weight = getattr(norm, kind.weight) if kind.weight is not None else None
    bias = getattr(norm, kind.bias) if kind.bias is not None else None
    return NormLinearisation(kind.centre, float(getattr(norm, kind.eps)), weight, bias)


@dataclass
class DirectAttribution:
    """What ``direct_logit_attribution`` returns.

    Attributes:
        contributions: each component's direct contribution to ``logit[target] - mean(logit)``
            ``[component, batch]``.
        bias: the part no component writes, from the norm's bias and the unembedding's bias
            ``[batch]`` (0 when neither has one).
    """

    contributions: Float[Tensor, "component batch"]
    bias: Float[Tensor, " batch"]


def direct_logit_attribution(
    lm,
    final_resid: Float[Tensor, "batch d_model"],
    components: Float[Tensor, "component batch d_model"],
    targets: Int[Tensor, " batch"],
) -> DirectAttribution:
    """Direct contribution of each component to ``logit[target] - mean(logit)``.

    Args:
        lm: an ``interp.LM`` (its ``final_norm`` and ``unembed`` are used).
        final_resid: the last block's ``resid_post`` at one position; the final norm is
            linearised there (its scale ``1/std`` or ``1/rms`` frozen).
        components: updates to attribute, e.g. the embedding and every attention and FFN
            update at that position.
        targets: one token id per prompt.

    Returns:
        ``DirectAttribution``; computed in float32. ``contributions.sum(0) + bias`` equals the
        output's ``logit[target] - mean(logit)`` when the components sum to ``final_resid``.
    """
    with weights_of(lm.final_norm), weights_of(lm.unembed) as device:  # offloaded weights brought in
        result = _attribution(lm, final_resid.to(device), components.to(device), torch.as_tensor(targets).to(device))
    return DirectAttribution(*(t.to(final_resid.device) for t in result))


def _attribution(lm, final_resid: Tensor, components: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``direct_logit_attribution``'s ``(contributions, bias)``, all on the unembedding's device."""
    lin = linearise_norm(lm.final_norm, lm.arch.norm)
    x = final_resid.float()
    w_u = lm.unembed.weight.float()  # [vocab, d_model]
    direction = w_u[targets] - w_u.mean(0)  # [batch, d_model]
    comps = components.float()
    if lin.centre:
        scale = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + lin.eps)
        comps = comps - comps.mean(-1, keepdim=True)
    else:
        scale = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + lin.eps)
    gain = lin.weight.float().to(x.device) if lin.weight is not None else 1.0
    contributions = ((gain * comps / scale) * direction).sum(-1)
    bias = x.new_zeros(x.shape[0])
    if lin.bias is not None:
        bias = bias + (direction * lin.bias.float().to(x.device)).sum(-1)
    u_bias = getattr(lm.unembed, "bias", None)
    if u_bias is not None:
        bias = bias + u_bias.float()[targets] - u_bias.float().mean()
    return contributions, bias
