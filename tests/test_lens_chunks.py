"""The chunked lens readout equals a materialised float64 log-softmax, whatever the chunks."""

import pytest
import torch

import interp
from interp.lens import TunedLens, logit_lens, readout, reduce_logits

PROMPTS = ["the capital of france is", "one two three four five six", "q : a b"]


def oracle(logits: torch.Tensor, targets: torch.Tensor, k: int) -> dict:
    """Every field from ``[..., vocab]`` logits in float64, the naive way."""
    logits = logits.double()
    logp = logits.log_softmax(-1)
    top = logp.topk(k, dim=-1)
    t = targets.expand(*logits.shape[:-1], -1)
    return {"top_ids": top.indices, "top_probs": top.values.exp(), "entropy": -(logp.exp() * logp).sum(-1),
            "target_rank": (logits.unsqueeze(-2) > logits.gather(-1, t).unsqueeze(-1)).sum(-1),
            "target_prob": logp.gather(-1, t).exp()}


def assert_matches(got, want: dict) -> None:
    for field in ("top_ids", "target_rank"):
        assert torch.equal(getattr(got, field) if not isinstance(got, dict) else got[field], want[field]), field
    for field in ("top_probs", "entropy", "target_prob"):
        value = getattr(got, field) if not isinstance(got, dict) else got[field]
        torch.testing.assert_close(value.double(), want[field], atol=1e-5, rtol=0)


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 1000])  # 7 divides neither a layer's rows nor all
def test_logit_lens_readout_equals_the_naive_float64_readout(lm, rows_per_chunk, monkeypatch):
    monkeypatch.setattr(interp.lens, "DECODE_BUDGET", rows_per_chunk * lm.d_vocab)
    resids = lm.run(PROMPTS, capture=["resid_post"], positions=[0, 2, -2, -1]).cache.stack("resid_post")
    targets = torch.tensor([[5, 6], [7, 8], [9, 10]])
    got = readout(lm, resids, targets=targets, k=4)
    want = oracle(logit_lens(lm, resids), targets[None, :, None, :], 4)
    assert_matches(got, want)


def test_tuned_lens_readout_equals_its_decode(lm, monkeypatch):
    monkeypatch.setattr(interp.lens, "DECODE_BUDGET", 5 * lm.d_vocab)
    lens = TunedLens(lm)
    with torch.no_grad():  # a translator that is not the identity, different per layer
        lens.weight.add_(0.05 * torch.randn(lens.weight.shape, generator=torch.Generator().manual_seed(0)))
    resids = lm.run(PROMPTS, capture=["resid_post"], positions=[-3, -1]).cache.stack("resid_post")
    targets = torch.tensor([[1, 2], [3, 4], [5, 6]])
    got = readout(lm, resids, targets=targets, k=3, lens=lens)
    with torch.no_grad():
        logits = torch.stack([lens.decode(r, layer) for layer, r in enumerate(resids)])
    assert_matches(got, oracle(logits, targets[None, :, None, :], 3))


def test_reduce_logits_in_chunks_leaves_its_input_alone(monkeypatch):
    monkeypatch.setattr(interp.lens, "DECODE_BUDGET", 3 * 50)
    logits = torch.randn(2, 5, 50, generator=torch.Generator().manual_seed(0)) * 4
    before = logits.clone()
    targets = torch.tensor([[3, 40]]).expand(2, 5, 2)
    got = dict(zip(("top_ids", "top_probs", "entropy", "target_rank", "target_prob"), reduce_logits(logits, targets, 2)))
    assert torch.equal(logits, before)
    assert_matches(got, oracle(logits, targets, 2))
