"""The causal check of Minder, Dumas et al.: do a crosscoder's chat-specific latents carry what
chat does differently?

On chat prompts, chat's residual stream at the crosscoder's layers is replaced by base's
activation on the same tokens plus the decoded difference of a set ``S`` of latents,

    x = h^base + sum_{j in S} f_j (d_j^chat - d_j^base)        (f from the crosscoder on both models' activations)

and the KL divergence ``KL(chat || patched)`` of the next-token distributions is measured at
every token of the prompt (after ``skip_first`` tokens, see below). ``S`` empty is base's
activation alone (the upper reference); if the chat-specific latents explain the difference,
adding them brings the KL down. With ``bias=True`` the decoders' bias difference is added too,
so ``S`` = every latent gives ``h^base + x_hat^chat - x_hat^base``: exactly ``h^chat`` (KL 0)
for a crosscoder that reconstructs perfectly.

The two models never sit in memory together: :func:`capture_residuals` runs one model and
keeps its activations, :func:`patched_kl` then runs chat with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.dictionaries.crosscoder import Crosscoder
from interp.dictionaries.errors import DictionaryError

HOOK = "blocks.{layer}.hook_resid_post"


@torch.no_grad()
def capture_residuals(lm, prompts: Sequence[str], layers: Sequence[int], *, batch_size: int = 16,
                      hook: str = HOOK) -> list[Float[Tensor, "layer seq d"]]:
    """Each prompt's activations at ``layers`` (its real tokens only, in order)."""
    out = []
    names = [hook.format(layer=layer) for layer in layers]
    for i in range(0, len(prompts), batch_size):
        run = lm.run(list(prompts[i:i + batch_size]), capture=names, logits=False)
        stacked = torch.stack([run.cache[n] for n in names], dim=1)          # [batch, layer, seq, d]
        for b in range(stacked.shape[0]):
            keep = run.attention_mask[b].bool()
            out.append(stacked[b][:, keep].float().cpu())
    return out


def _kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    logp, logq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return (logp.exp() * (logp - logq)).sum(-1)


@torch.no_grad()
def patched_kl(chat_lm, prompts: Sequence[str], base_resid: Sequence[Tensor], crosscoder: Crosscoder,
               latent_sets: Mapping[str, Tensor | None], *, batch_size: int = 16, skip_first: int = 1,
               bias: Mapping[str, bool] | None = None, hook: str = HOOK) -> dict[str, dict]:
    """``{set name: {"kl_mean", "kl_per_token" (a tensor), "n_tokens", "kl_last_mean", "kl_last"}}``:
    the KL at every scored token, and at each prompt's last token (where a chat model decides
    to answer or refuse).

    ``latent_sets``: name -> bool mask ``[latent]`` of ``S`` (``None``: no latent, base's
    activation alone). ``base_resid``: :func:`capture_residuals` of base on the same prompts at
    ``crosscoder.config.layers``. ``skip_first``: leading tokens left as chat's own and out of
    the mean (1: the BOS token, whose activation dwarfs the others and which dictionaries are
    trained without). ``bias``: name -> add the decoder-bias difference (default: no).
    """
    layers = crosscoder.config.layers
    if len(base_resid) != len(prompts):
        raise DictionaryError(f"base_resid has {len(base_resid)} prompts' activations, prompts {len(prompts)}")
    for name, mask in latent_sets.items():
        if mask is not None and tuple(mask.shape) != (crosscoder.config.dict_size,):
            raise DictionaryError(f"latent set {name!r} must be a bool mask of {crosscoder.config.dict_size} latents, "
                                  f"got shape {list(mask.shape)}")
    bias = dict(bias or {})
    names = [hook.format(layer=layer) for layer in layers]
    n_layers = len(layers)
    kls: dict[str, list[Tensor]] = {name: [] for name in latent_sets}
    last: dict[str, list[Tensor]] = {name: [] for name in latent_sets}
    for i in range(0, len(prompts), batch_size):
        batch = list(prompts[i:i + batch_size])
        clean = chat_lm.run(batch, capture=names)
        chat_acts = torch.stack([clean.cache[n] for n in names], dim=1).float()   # [batch, layer, seq, d]
        mask = clean.attention_mask.bool()
        # the tokens of the batch, flattened, as the crosscoder's [n, source, d]
        rows, cols = [], []
        for b in range(len(batch)):
            real = mask[b].nonzero().flatten()[skip_first:]
            rows.append(torch.full_like(real, b))
            cols.append(real)
        rows, cols = torch.cat(rows), torch.cat(cols)
        base_tok = torch.cat([base_resid[i + b][:, skip_first:] for b in range(len(batch))], dim=1)   # [layer, n, d]
        if base_tok.shape[1] != rows.numel():
            raise DictionaryError("base_resid does not hold the prompts' tokens (another tokenizer or other prompts?)")
        chat_tok = chat_acts[rows, :, cols]                                        # [n, layer, d]
        x = torch.cat([base_tok.transpose(0, 1).to(chat_tok), chat_tok], dim=1)   # [n, source, d]
        f = crosscoder.encode(x)
        for name, chosen in latent_sets.items():
            value = chat_acts.clone()
            delta = torch.zeros_like(chat_tok)
            if chosen is not None:
                dec = crosscoder.decode(f * chosen.to(f), bias=bias.get(name, False))   # [n, source, d]
                delta = dec[:, n_layers:] - dec[:, :n_layers]
            value[rows, :, cols] = x[:, :n_layers] + delta
            writes = {n: value[:, li].to(chat_lm.dtype) for li, n in enumerate(names)}
            patched = chat_lm.run(batch, interventions=writes)
            kls[name].append(_kl(clean.logits[rows, cols], patched.logits[rows, cols]).float().cpu())
            last[name].append(_kl(clean.logits[:, -1], patched.logits[:, -1]).float().cpu())  # (left-padded)
    out = {}
    for name, parts in kls.items():
        per = torch.cat(parts) if parts else torch.zeros(0)
        at_last = torch.cat(last[name]) if last[name] else torch.zeros(0)
        out[name] = {"kl_mean": float(per.mean()) if per.numel() else float("nan"), "kl_per_token": per,
                     "n_tokens": int(per.numel()), "kl_last_mean": float(at_last.mean()) if at_last.numel() else float("nan"),
                     "kl_last": at_last}
    return out
