"""Deferred unembedding: patched runs' last hidden states, unembedded in batches.

The unembedding matrix (``vocab x d_model``) is often the largest weight of a small model; a
forward per chunk would read it once per chunk. Deferring it to batches of many cells' last
hidden states reads it once per batch, and a ``TokenMetric`` needs only the columns it reads.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.devices import weights_of
from interp.errors import InterpError
from interp.patching.chunks import Cell
from interp.patching.inputs import scalar
from interp.patching.metrics import TokenMetric


VOCAB_BLOCK = 1024  # vocabulary rows per matmul of a plain unembedding


def unembed(lm, hidden: Float[Tensor, "rows d_model"]) -> Float[Tensor, "rows vocab"]:
    """The unembedding of ``hidden``. A plain ``nn.Linear`` is computed in blocks of
    ``VOCAB_BLOCK`` vocabulary rows, each written into its slice of the logits: the same dot
    products, and on CPU (measured with MKL, 50k x 256) faster than one matmul, whose output
    does not stay in cache."""
    with torch.no_grad(), weights_of(lm.unembed) as device:  # offloaded weights brought in (interp.devices)
        layer = lm.unembed
        if type(layer) is not nn.Linear or layer.weight.shape[0] <= VOCAB_BLOCK:
            return layer(hidden.unsqueeze(1))[:, 0].detach()
        weight, bias = layer.weight, layer.bias
        hidden = hidden.to(device=device, dtype=weight.dtype)
        out = torch.empty(hidden.shape[0], weight.shape[0], dtype=weight.dtype, device=weight.device)
        for start in range(0, weight.shape[0], VOCAB_BLOCK):
            end = min(start + VOCAB_BLOCK, weight.shape[0])
            if bias is None:
                torch.mm(hidden, weight[start:end].t(), out=out[:, start:end])
            else:
                torch.addmm(bias[start:end], hidden, weight[start:end].t(), out=out[:, start:end])
        return out


class DeferredUnembed:
    """Last hidden states of patched runs, unembedded and scored in batches of
    ``rows`` rows: one matmul over many cells reads the (large) unembedding matrix
    once instead of once per forward. With ``columns`` and a ``TokenMetric`` over a plain
    ``nn.Linear`` unembedding, only the metric's columns are computed. The entry ``None``
    stands for the corrupted run itself (``baseline``)."""

    def __init__(self, lm, metric, batch: int, out: Tensor, index: dict[Cell, int], columns: bool, rows: int):
        self.lm, self.metric, self.batch, self.out, self.index, self.rows = lm, metric, batch, out, index, rows
        self.baseline = torch.tensor(float("nan"))
        self.pending: list[tuple[Cell | None, Tensor]] = []
        self.weight = self.bias = None
        if columns and isinstance(metric, TokenMetric) and type(lm.unembed) is nn.Linear:
            vocab = lm.unembed.weight.shape[0]
            if metric.tokens[-1] >= vocab:
                raise InterpError(f"{metric.description} reads token {metric.tokens[-1]}, outside the vocabulary of {vocab}")
            with weights_of(lm.unembed) as device:  # the rows are copies: valid after the weights go back
                rows = torch.tensor(metric.tokens, device=device)
                self.weight = lm.unembed.weight.detach()[rows]
                self.bias = lm.unembed.bias.detach()[rows] if lm.unembed.bias is not None else None

    def add(self, cells: list[Cell | None], hidden: Float[Tensor, "rows d_model"]) -> None:
        batch = self.batch
        self.pending.extend((cell, hidden[i * batch:(i + 1) * batch]) for i, cell in enumerate(cells))
        if len(self.pending) * batch >= self.rows:
            self.flush()

    def flush(self) -> None:
        batch = self.batch
        while self.pending:
            part = self.pending[:max(1, self.rows // batch)]
            del self.pending[:len(part)]
            hidden = torch.cat([h for _, h in part])
            if self.weight is not None:
                with torch.no_grad():
                    logits = nn.functional.linear(hidden.to(self.weight.device, self.weight.dtype), self.weight, self.bias)
                score = self.metric.of_columns
            else:
                logits, score = unembed(self.lm, hidden), self.metric
            for i, (cell, _) in enumerate(part):
                value = scalar(score(logits[i * batch:(i + 1) * batch])).detach().float()
                if cell is None:
                    self.baseline = value
                else:
                    self.out[self.index[cell]] = value

