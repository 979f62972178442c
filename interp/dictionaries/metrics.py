"""How good an MLSAE is, and where its latents live.

* **FVU per layer**: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` over the evaluated tokens,
  in the residual's own units (the mean is each layer's mean vector; tim-lawson/mlsae divides
  by the variance of all components pooled, which also counts the spread of the mean vector's
  components).
* **L0 per layer**: latents firing (value > 0) per token at that layer (at most ``k``).
* **Dead fraction**: latents that fire on no evaluated (token, layer).
* **Splice-back loss change** (:func:`splice_delta`): next-token cross-entropy when block
  ``l``'s residual is replaced by its reconstruction (``interp``'s intervention API, at the
  kept positions only), minus the clean loss.
* **Layer distribution** (Lawson et al. sec. 4): for a token ``t`` where latent ``f`` fires,
  ``p_l = a_l / sum_l' a_l'`` over layers. *Within one token*: the variance of the layer under
  ``p`` (small: a latent fires at one or two adjacent layers of a token). *Over tokens*: the
  variance of the layer under ``p`` averaged over the tokens where ``f`` fires (larger when the
  latent fires at different layers for different tokens). ``mean_layer`` is the latter
  distribution's mean, in block indices. Unlike mlsae's ``variances.py``, averages run over
  the tokens where the latent fires (not all tokens) and over latents that fire at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.dictionaries.errors import DictionaryError
from interp.dictionaries.harvest import Activations, PairActivations, _kept, bos_id, token_windows
from interp.dictionaries.mlsae import MLSAE, Source, batches
from interp.model import LM


@dataclass
class Evaluation:
    """An MLSAE on one stream of activations (module doc for each statistic).

    Attributes:
        layers: block indices of the layer axis; n_tokens: tokens evaluated.
        fvu, l0: per layer ``[layer]``.
        frequency: per latent, the fraction of (token, layer) inputs where it fires ``[n_latents]``.
        active_tokens: per latent, tokens where it fires at some layer ``[n_latents]``.
        layer_dist: per latent, its layer distribution averaged over those tokens ``[n_latents, layer]``.
        var_within: per latent, the mean over those tokens of the layer's variance within the token.
    """

    layers: tuple[int, ...]
    n_tokens: int
    fvu: Float[Tensor, " layer"]
    l0: Float[Tensor, " layer"]
    frequency: Float[Tensor, " n_latents"]
    active_tokens: Int[Tensor, " n_latents"]
    layer_dist: Float[Tensor, "n_latents layer"]
    var_within: Float[Tensor, " n_latents"]

    @property
    def alive(self) -> Tensor:
        return self.active_tokens > 0

    @property
    def dead_fraction(self) -> float:
        return float((~self.alive).float().mean())

    @property
    def mean_layer(self) -> Float[Tensor, " n_latents"]:
        """Each latent's mean block index over the tokens where it fires (NaN if it never does)."""
        ell = torch.tensor(self.layers, dtype=torch.float64)
        out = (self.layer_dist * ell).sum(-1)
        return torch.where(self.alive, out, torch.nan)

    @property
    def var_over_tokens(self) -> Float[Tensor, " n_latents"]:
        ell = torch.tensor(self.layers, dtype=torch.float64)
        var = (self.layer_dist * ell ** 2).sum(-1) - ((self.layer_dist * ell).sum(-1)) ** 2
        return torch.where(self.alive, var.clamp_min(0), torch.nan)

    def summary(self) -> dict[str, float | int]:
        alive = self.alive
        within = float(self.var_within[alive].mean()) if alive.any() else float("nan")
        over = float(self.var_over_tokens[alive].mean()) if alive.any() else float("nan")
        return {"n_tokens": self.n_tokens, "fvu": float(self.fvu.mean()), "l0": float(self.l0.mean()),
                "dead_fraction": self.dead_fraction, "var_layer_within_token": within,
                "var_layer_over_tokens": over, "var_ratio_within_over": within / over if over > 0 else float("nan")}


@torch.no_grad()
def evaluate(model: MLSAE, acts: Source, member: str = "base", *, batch_size: int = 1024) -> Evaluation:
    """The statistics of ``model`` on ``member``'s activations (``"base"``, ``"chat"``; ignored
    for one model's ``Activations`` or a tensor ``[n, layer, d_model]``)."""
    if member == "both":
        raise DictionaryError("evaluate one member at a time: member must be 'base' or 'chat'")
    n_layers, n_lat = len(model.layers), model.n_latents
    ell = torch.tensor(model.layers, dtype=torch.float64).view(1, -1, 1)
    sse = torch.zeros(n_layers, dtype=torch.float64)
    sx = torch.zeros(n_layers, model.d_model, dtype=torch.float64)
    sxx = torch.zeros(n_layers, dtype=torch.float64)
    fired_inputs = torch.zeros(n_lat, dtype=torch.float64)
    l0 = torch.zeros(n_layers, dtype=torch.float64)
    p_sum = torch.zeros(n_lat, n_layers, dtype=torch.float64)
    active = torch.zeros(n_lat, dtype=torch.long)
    within = torch.zeros(n_lat, dtype=torch.float64)
    n = 0
    for x in batches(acts, member, batch_size, shuffle=False, seed=0):
        out = model(x)
        x64 = x.double()
        sse += (out.recon.double() - x64).pow(2).sum((0, 2))
        sx += x64.sum(0)
        sxx += x64.pow(2).sum((0, 2))
        l0 += (out.topk.values > 0).sum((0, 2)).double()
        a = model.sae.dense(out.topk).double()  # [b, layer, n_latents]
        fired_inputs += (a > 0).sum((0, 1)).double()
        mass = a.sum(1, keepdim=True)  # [b, 1, n_latents]
        on = mass[:, 0] > 0
        p = torch.where(mass > 0, a / mass.clamp_min(1e-30), 0.0)
        mean = (p * ell).sum(1)
        var = ((p * ell ** 2).sum(1) - mean ** 2).clamp_min(0)
        p_sum += p.sum(0).T
        active += on.sum(0)
        within += torch.where(on, var, 0.0).sum(0)
        n += x.shape[0]
    if n == 0:
        raise DictionaryError("no activations to evaluate (the stream is empty)")
    total_var = sxx - sx.pow(2).sum(-1) / n
    denom = active.clamp_min(1).double()
    return Evaluation(model.layers, n, (sse / total_var).float(), (l0 / n).float(),
                      (fired_inputs / (n * n_layers)).float(), active,
                      p_sum / denom.unsqueeze(1), within / denom)


# -- splicing reconstructions back into the model ----------------------------------------------
Reconstruct = Callable[[Tensor, int], Tensor]


@torch.no_grad()
def splice_delta(lm: LM, texts: Sequence[str], reconstruct: Reconstruct | MLSAE, layers: Sequence[int], *,
                 hook: str = "resid_post", seq_len: int = 128, batch_size: int = 8,
                 max_windows: int | None = None) -> dict[int, dict[str, float]]:
    """Next-token loss with block ``l``'s residual replaced by ``reconstruct(x, l)`` at the
    kept positions (harvest's: real tokens but BOS), for each ``l`` in ``layers``.

    The loss is the mean cross-entropy of every kept token given the tokens before it in its
    window (the same windows as ``harvest``, the first ``max_windows`` of them). Returns
    ``{layer: {"loss_clean", "loss_spliced", "delta"}}``.
    """
    if isinstance(reconstruct, MLSAE):
        reconstruct = reconstruct.reconstruct
    windows = token_windows(lm, texts, seq_len)[:max_windows]
    bos = bos_id(lm)
    bad = [layer for layer in layers if not 0 <= layer < lm.n_layers]
    if bad:
        raise DictionaryError(f"layers {bad} out of range for {lm.name!r}; valid: 0..{lm.n_layers - 1}")
    totals = {layer: 0.0 for layer in layers}
    clean_total, count = 0.0, 0
    for lo in range(0, len(windows), batch_size):
        batch = windows[lo:lo + batch_size]
        ids, mask, _ = lm.to_tokens(batch)
        keep = _kept(ids, mask, bos).to(lm.device)
        target = torch.zeros_like(keep)
        target[:, :-1] = keep[:, 1:]  # column c predicts the token at c + 1
        next_ids = ids.to(lm.device).roll(-1, 1)

        def loss_of(logits: Tensor) -> float:
            return float(torch.nn.functional.cross_entropy(logits[target].float(), next_ids[target], reduction="sum"))

        clean_total += loss_of(lm.run(batch).logits)
        count += int(target.sum())
        for layer in layers:
            def write(act: Tensor, layer=layer) -> Tensor:
                out = act.clone()
                out[keep] = reconstruct(act[keep], layer).to(act.dtype)
                return out
            totals[layer] += loss_of(lm.run(batch, interventions={f"blocks.{layer}.hook_{hook}": write}).logits)
    clean = clean_total / count
    return {layer: {"loss_clean": clean, "loss_spliced": totals[layer] / count, "delta": totals[layer] / count - clean}
            for layer in layers}


# -- the rows a study writes -------------------------------------------------------------------
def mlsae_report(model: MLSAE, acts: PairActivations | Activations | Tensor, *, batch_size: int = 1024,
                 splice: dict[str, dict[int, dict[str, float]]] | None = None, moved_at: float = 0.5,
                 min_tokens: int = 10) -> list[dict]:
    """Tidy rows describing ``model`` on each member's activations.

    Rows have a ``kind``:
      * ``"layer"``: ``member``, ``layer``, ``fvu``, ``l0`` (and ``loss_clean``, ``loss_spliced``,
        ``loss_delta`` where ``splice[member][layer]`` from :func:`splice_delta` is given);
      * ``"summary"``: ``member`` and :meth:`Evaluation.summary`;
      * ``"latent"``: ``latent`` and per member ``frequency_{m}``, ``active_tokens_{m}``,
        ``mean_layer_{m}``, ``var_over_tokens_{m}``, ``var_within_{m}``; for a pair also
        ``layer_shift`` (chat's mean layer minus base's) and ``moved``: the latent fires on at
        least ``min_tokens`` tokens of each member and its mean layer moves by ``moved_at``
        blocks or more.
    """
    members = ("base", "chat") if isinstance(acts, PairActivations) else ("model",)
    evals = {m: evaluate(model, acts, m, batch_size=batch_size) for m in members}
    rows: list[dict] = []
    for m, ev in evals.items():
        for j, layer in enumerate(ev.layers):
            row = {"kind": "layer", "member": m, "layer": layer, "fvu": float(ev.fvu[j]), "l0": float(ev.l0[j])}
            spliced = (splice or {}).get(m, {}).get(layer)
            if spliced is not None:
                row.update(loss_clean=spliced["loss_clean"], loss_spliced=spliced["loss_spliced"],
                           loss_delta=spliced["delta"])
            rows.append(row)
        rows.append({"kind": "summary", "member": m, **ev.summary()})
    per = {m: (ev.frequency.tolist(), ev.active_tokens.tolist(), ev.mean_layer.tolist(), ev.var_over_tokens.tolist(),
               ev.var_within.tolist()) for m, ev in evals.items()}
    for f in range(model.n_latents):
        row: dict = {"kind": "latent", "latent": f}
        for m, (freq, act, mean, over, within) in per.items():
            row.update({f"frequency_{m}": freq[f], f"active_tokens_{m}": act[f], f"mean_layer_{m}": mean[f],
                        f"var_over_tokens_{m}": over[f], f"var_within_{m}": within[f] if act[f] else float("nan")})
        if len(members) == 2:
            shift = row["mean_layer_chat"] - row["mean_layer_base"]
            row["layer_shift"] = shift
            row["moved"] = bool(min(row["active_tokens_base"], row["active_tokens_chat"]) >= min_tokens
                                and abs(shift) >= moved_at)
        rows.append(row)
    return rows
