"""The BatchTopK crosscoder, Latent Scaling and the causal check (interp.dictionaries), against
planted dictionaries, hand-built crosscoders, a least-squares solver and HF runs."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.dictionaries import DictionaryError
from interp.dictionaries.causal import capture_residuals, patched_kl
from interp.dictionaries.contexts import top_contexts
from interp.dictionaries.crosscoder import (Crosscoder, CrosscoderConfig, evaluate, norm_classes,
                                            relative_norm_difference, stack_sources, train_crosscoder)
from interp.dictionaries.latent_scaling import latent_scaling
from tests.conftest import random_model

N_SHARED, N_CHAT, N_BASE = 24, 8, 8


def planted(n: int = 20000, d: int = 32, p: float = 0.06, seed: int = 0):
    """Tokens from a known sparse crosscoder dictionary: shared atoms (a base and a nearby chat
    direction), chat-only atoms (nothing in base), base-only atoms (nothing in chat); each fires
    with probability ``p`` at a magnitude in [1, 2]. Returns ``x [n, 2, d]``, atoms ``[atom, 2, d]``
    and their true classes."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(N_SHARED + N_CHAT + N_BASE, 2, d, generator=g)
    atoms[:N_SHARED, 1] = atoms[:N_SHARED, 0] + 0.3 * atoms[:N_SHARED, 1]
    atoms = atoms / atoms.norm(dim=-1, keepdim=True)
    atoms[N_SHARED:N_SHARED + N_CHAT, 0] = 0
    atoms[N_SHARED + N_CHAT:, 1] = 0
    codes = (torch.rand(n, len(atoms), generator=g) < p) * (1 + torch.rand(n, len(atoms), generator=g))
    truth = ["shared"] * N_SHARED + ["chat_only"] * N_CHAT + ["base_only"] * N_BASE
    return torch.einsum("na,asd->nsd", codes, atoms), atoms, truth


@pytest.fixture(scope="module")
def trained():
    x, atoms, truth = planted()
    config = CrosscoderConfig(d_model=32, dict_size=64, k=3, steps=1500, batch_size=256, lr=3e-3, dead_tokens=5000)
    model, history = train_crosscoder(x, config)
    return x, atoms, truth, model, history


def test_training_recovers_planted_atoms_and_their_classes(trained):
    x, atoms, truth, model, history = trained
    dec = (model.W_dec.detach() / model.scale[None, :, None]).flatten(1)    # model units, both members
    flat = atoms.flatten(1)
    cos = (flat / flat.norm(dim=1, keepdim=True)) @ (dec / dec.norm(dim=1, keepdim=True)).T
    best = cos.max(dim=1)
    assert (best.values > 0.9).float().mean() >= 0.9
    classes = norm_classes(relative_norm_difference(model.decoder_norms()))
    matched = [classes[j] for j in best.indices.tolist()]
    assert sum(m == t for m, t in zip(matched, truth)) >= 0.9 * len(truth)
    assert {t for m, t in zip(matched, truth) if m == "chat_only"} == {"chat_only"}   # no shared atom called chat-only
    metrics = evaluate(model, x)
    assert metrics["fvu_base"] < 0.05 and metrics["fvu_chat"] < 0.05
    assert 1.5 < metrics["l0"] < 4.5                     # inference threshold keeps about k latents per token
    assert history.rows[-1]["fvu"] < history.rows[0]["fvu"]


def test_save_load_round_trip(trained, tmp_path):
    x, _, _, model, _ = trained
    model.save(tmp_path / "xc")
    again = Crosscoder.load(tmp_path / "xc")
    assert again.config == model.config
    assert torch.equal(again.encode(x[:64]), model.encode(x[:64]))
    assert torch.equal(again(x[:64]), model(x[:64]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DictionaryError, match="config.json"):
        Crosscoder.load(tmp_path / "empty")


def test_bad_input():
    with pytest.raises(DictionaryError, match="0 tokens"):
        stack_sources(torch.zeros(0, 8), torch.zeros(0, 8))
    with pytest.raises(DictionaryError, match="same width"):
        stack_sources(torch.zeros(4, 8), torch.zeros(4, 16))     # a pair of different widths
    with pytest.raises(DictionaryError, match="k=9 exceeds dict_size=8"):
        CrosscoderConfig(d_model=4, dict_size=8, k=9)
    model = Crosscoder(CrosscoderConfig(d_model=4, dict_size=8, k=2))
    with pytest.raises(DictionaryError, match=r"source=2, d_model=4"):
        model.encode(torch.zeros(3, 2, 5))
    with pytest.raises(DictionaryError, match="valid: 0..7"):
        top_contexts(torch.zeros(3, 8), torch.zeros(3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), [8])


# -- Latent Scaling ---------------------------------------------------------------------------------
def hand_crosscoder(d: int = 8) -> Crosscoder:
    """Four latents reading one coordinate each (scale 1, no biases, threshold 0): 0, 1 and 2
    read chat's e0, e1, e2 and decode into chat only; 3 reads base's e2 and decodes into base only."""
    model = Crosscoder(CrosscoderConfig(d_model=d, dict_size=4, k=4))
    with torch.no_grad():
        for p in (model.W_enc, model.W_dec, model.b_enc, model.b_dec):
            p.zero_()
        for j, (source, axis) in enumerate([(1, 0), (1, 1), (1, 2), (0, 2)]):
            model.W_enc[source, axis, j] = 1.0
            model.W_dec[j, source, axis] = 1.0
    return model


def constructed_case(n: int = 400, d: int = 8):
    """Chat holds concepts e0, e1, e2; base holds none of e0 (truly chat-only), half of e1 (a
    shared concept whose base decoder the crosscoder shrank to zero: Complete Shrinkage) and
    all of e2 (shared, but reconstructed in base by another latent: Latent Decoupling)."""
    g = torch.Generator().manual_seed(1)
    c = torch.rand(n, 3, generator=g) * (torch.rand(n, 3, generator=g) < 0.5)
    chat, base = torch.zeros(n, d), torch.zeros(n, d)
    chat[:, :3] = c
    base[:, 1], base[:, 2] = 0.5 * c[:, 1], c[:, 2]
    base += 0.01 * torch.randn(n, d, generator=g)
    return stack_sources(base, chat)


def test_latent_scaling_equals_least_squares():
    torch.manual_seed(0)
    model = Crosscoder(CrosscoderConfig(d_model=6, dict_size=10, k=3))
    with torch.no_grad():
        model.b_dec.normal_(0, 0.1)
        model.scale.copy_(torch.tensor([0.7, 1.3]))
    x = torch.randn(300, 2, 6)
    got = latent_scaling(model, x, batch_size=64)
    xs = x * model.scale[:, None]
    f = model.encode(x)
    recon = torch.einsum("nl,lsd->nsd", f, model.W_dec.detach())
    checked = 0
    for j in range(10):
        on = f[:, j] > 0
        if on.sum() < 3:
            continue
        d = model.W_dec.detach()[j, 1]
        column = (f[on, j, None] * d).reshape(-1, 1).double()          # b * f_j d stacked over tokens
        for s, member in ((0, "base"), (1, "chat")):
            own = f[on, j, None] * model.W_dec.detach()[j, s]
            targets = {"error": xs[on, s] - recon[on, s] - model.b_dec.detach()[s] + own, "recon": recon[on, s]}
            for name, y in targets.items():
                beta = torch.linalg.lstsq(column, y.reshape(-1, 1).double()).solution.item()
                assert getattr(got, f"beta_{name}_{member}")[j].item() == pytest.approx(beta, rel=1e-4, abs=1e-6)
        checked += 1
    assert checked >= 3


def test_latent_scaling_separates_truly_chat_only_from_artefacts():
    model = hand_crosscoder()
    x = constructed_case()
    classes = norm_classes(relative_norm_difference(model.decoder_norms()))
    assert classes == ["chat_only", "chat_only", "chat_only", "base_only"]     # the norms cannot tell them apart
    s = latent_scaling(model, x)
    assert abs(s.nu_epsilon[0]) < 0.05 and abs(s.nu_r[0]) < 0.05               # truly chat-only
    assert s.nu_epsilon[1] == pytest.approx(0.5, abs=0.05)                     # Complete Shrinkage
    assert s.nu_r[2] == pytest.approx(1.0, abs=0.05)                           # Latent Decoupling
    assert s.robust().tolist()[:3] == [True, False, False]


# -- the causal check -------------------------------------------------------------------------------
def perfect_crosscoder(d: int) -> Crosscoder:
    """A crosscoder that reconstructs every input exactly: per source and coordinate, one
    latent for the positive part and one for the negative part."""
    model = Crosscoder(CrosscoderConfig(d_model=d, dict_size=4 * d, k=4 * d))
    with torch.no_grad():
        for p in (model.W_enc, model.W_dec, model.b_enc, model.b_dec):
            p.zero_()
        for s in range(2):
            for i in range(d):
                for sign, block in ((1.0, 2 * s), (-1.0, 2 * s + 1)):
                    j = block * d + i
                    model.W_enc[s, i, j] = sign
                    model.W_dec[j, s, i] = sign
    return model


@pytest.fixture(scope="module")
def two_lms(tokenizer):
    return (interp.LM.from_hf(random_model("llama", 0), tokenizer, name="base"),
            interp.LM.from_hf(random_model("llama", 1), tokenizer, name="chat"))


def test_causal_check_perfect_reconstruction_gives_zero_kl(two_lms):
    base, chat = two_lms
    prompts = ["the capital of france is", "q : what is the capital of poland ? a :", "i plan"]
    model = perfect_crosscoder(chat.d_model)
    x = torch.randn(5, 2, chat.d_model)
    assert torch.allclose(model(x), x, atol=1e-6)
    resid = capture_residuals(base, prompts, model.config.layers, batch_size=2)
    everything = torch.ones(model.config.dict_size, dtype=torch.bool)
    got = patched_kl(chat, prompts, resid, model, {"base": None, "all": everything}, batch_size=2, bias={"all": True})
    assert got["all"]["kl_mean"] < 1e-6 and got["all"]["kl_last_mean"] < 1e-6
    assert got["base"]["kl_mean"] > 1e-3
    # the base-alone replacement equals a hand run: chat with base's activation written in, one prompt at a time
    hook = "blocks.0.hook_resid_post"
    hand = []
    for p, r in zip(prompts, resid):
        own = chat.run(p, capture=[hook])
        value = own.cache[hook].clone()
        value[0, 1:] = r[0, 1:]
        patched = chat.run(p, interventions={hook: value}).logits[0, 1:]
        logp, logq = own.logits[0, 1:].log_softmax(-1), patched.log_softmax(-1)
        hand.append((logp.exp() * (logp - logq)).sum(-1))
    assert got["base"]["kl_per_token"].tolist() == pytest.approx(torch.cat(hand).tolist(), rel=1e-4, abs=1e-6)


def test_batch_topk_mask_equals_one_topk_over_the_batch():
    from interp.dictionaries.crosscoder import batch_topk_mask

    g = torch.Generator().manual_seed(0)
    scores = torch.rand(64, 200, generator=g)
    scores[3] += 10     # one token holds more of the top entries than its row offers: the exact fallback
    for n in (1, 50, 640, 2000):
        want = torch.zeros(scores.numel(), dtype=torch.bool)
        want[scores.flatten().topk(n).indices] = True
        assert torch.equal(batch_topk_mask(scores, n), want.view_as(scores)), n
        assert torch.equal(batch_topk_mask(scores, n, per_row=7), want.view_as(scores)), n


def test_sparse_training_step_equals_the_dense_computation():
    """The training step's sparse losses and gradients against autograd through the dense
    encoder, BatchTopK mask and decoder (AuxK included: half the latents marked dead)."""
    from interp.dictionaries.crosscoder import sparse_losses

    torch.manual_seed(0)
    model = Crosscoder(CrosscoderConfig(d_model=12, dict_size=40, k=3, layers=(0, 1)))
    with torch.no_grad():
        model.b_dec.normal_(0, 0.3)
        model.b_enc.normal_(0, 0.1)
    xb = torch.randn(16, 4, 12)
    dead = torch.arange(40) % 2 == 0
    params = [model.W_enc, model.W_dec, model.b_enc, model.b_dec]

    loss, aux, *_ = sparse_losses(model, xb, 3, dead, aux_k=5)
    got = torch.autograd.grad(loss + 0.5 * aux, params)

    pre = model.pre_acts(xb)
    f = model.batch_topk(pre, 3)
    err = xb - model.decode(f, scaled=True)
    dense_loss = err.pow(2).sum(dim=(1, 2)).mean()
    dead_pre = pre * dead
    top = model._scores(dead_pre).topk(5, dim=-1).indices
    f_aux = torch.zeros_like(pre).scatter(-1, top, dead_pre.gather(-1, top))
    e_hat = model.decode(f_aux, scaled=True, bias=False)
    target = err.detach()
    dense_aux = (target - e_hat).pow(2).sum(dim=(1, 2)).mean() / target.pow(2).sum(dim=(1, 2)).mean()
    want = torch.autograd.grad(dense_loss + 0.5 * dense_aux, params)
    assert loss.item() == pytest.approx(dense_loss.item(), rel=1e-5) and aux.item() == pytest.approx(dense_aux.item(), rel=1e-5)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-6)


def test_top_contexts_stay_in_their_window_and_rank_by_activation(tmp_path):
    from figures.dashboard import write_dashboard

    # two windows of 5 tokens: ids 0..9, latent 0 peaks at token 7 (window 1), then 2 (window 0)
    where = torch.tensor([[0, p] for p in range(1, 6)] + [[1, p] for p in range(1, 6)])
    tokens = torch.arange(10)
    f = torch.zeros(10, 2)
    f[[2, 3, 7, 8], 0] = torch.tensor([3.0, 2.5, 4.0, 1.0])
    got = top_contexts(f, tokens, where, [0, 1], k=5, before=3, after=1)
    assert [c.index for c in got[0]] == [7, 2] and got[1] == []          # one per window; latent 1 never fires
    first = got[0][0]
    assert first.token_ids == [5, 6, 7, 8] and first.token_ids[first.target] == 7 and first.acts[-1] == 1.0
    assert got[0][1].token_ids == [0, 1, 2, 3]                            # cut at the window's start
    md, page = write_dashboard(got, str, tmp_path / "dash", {0: {"class": "chat_only"}})
    text = md.read_text()
    assert "**7** [4.00]" in text and "(never fires on this corpus)" in text and "class chat_only" in text
    assert "span class='t top'" in page.read_text()
