"""Lenses as objects: the tuned lens is the logit lens at init, survives save/load, refuses a
model with another readout, beats the logit lens on held-out toy text (the shipped lenses),
and every probe that takes a layer takes a lens."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.errors import InterpError
from interp.lens import LogitLens, TunedLens, logit_lens, train_tuned_lens

TEXTS = ["The capital of France is Paris .", "User : What is the capital of Poland ? Assistant : Warsaw .",
         "France : Paris ; Spain : Madrid ."]


@pytest.fixture(scope="module")
def toy():
    return interp.load("toy/base")


@pytest.fixture(scope="module")
def resids(toy):
    return toy.run(TEXTS, capture="resid_post").cache.stack("resid_post")


def test_identity_at_init_is_the_logit_lens_exactly(toy, resids):
    lens = TunedLens(toy)
    for layer in range(toy.n_layers):
        assert torch.equal(lens.decode(resids[layer], layer), logit_lens(toy, resids[layer]))
        assert torch.equal(LogitLens(toy).decode(resids[layer], layer), logit_lens(toy, resids[layer]))


def test_training_moves_the_lens_off_the_identity_but_not_the_last_layer(toy):
    lens = train_tuned_lens(toy, TEXTS, steps=3, lr=1e-2, batch_size=2, seed=0)
    assert lens.weight[:-1].abs().sum() > 0
    assert torch.equal(lens.weight[-1], torch.zeros_like(lens.weight[-1]))


def test_save_load_round_trip(toy, resids, tmp_path):
    lens = train_tuned_lens(toy, TEXTS, steps=2, lr=1e-2, batch_size=2, seed=0)
    back = TunedLens.load(lens.save(tmp_path / "lens"), toy)
    assert back.config == lens.config
    for layer in range(toy.n_layers):
        assert torch.equal(back.decode(resids[layer], layer), lens.decode(resids[layer], layer))


def test_load_refuses_another_unembedding(toy, tmp_path):
    TunedLens(toy).save(tmp_path / "lens")
    other = interp.load("toy/chat")  # same shapes, another final norm and unembedding
    with pytest.raises(InterpError, match="final norm and unembedding differ"):
        TunedLens.load(tmp_path / "lens", other)
    with pytest.raises(InterpError, match="no tuned lens"):
        TunedLens.load(tmp_path / "missing", toy)


@pytest.mark.parametrize("member", ["base", "chat"])
def test_shipped_lens_beats_the_logit_lens_on_heldout_text(member):
    from interp.lens.tuned import lens_kl
    from toy_pair import tuned_lens as shipped

    lm = interp.load(f"toy/{member}")
    held = shipped.heldout_texts(32)
    assert not set(held) & set(shipped.train_texts())
    tuned, logit = lens_kl(lm, shipped.load(lm, member), held), lens_kl(lm, LogitLens(lm), held)
    assert (tuned[:-1] < logit[:-1]).all(), (tuned, logit)
    torch.testing.assert_close(tuned[-1], logit[-1], rtol=0, atol=1e-6)  # the last layer stays the identity


def _today_logprobs(lm, item):
    """Per option, per readout (final, then each block through the logit lens), the summed log-prob
    of its tokens from one plain run of context + option: what score_items computed before lenses."""
    from probes.multiple_choice import fit_item

    ctx, opts, _ = fit_item(lm, item)
    rows = []
    for opt in opts:
        run = lm.run([ctx + opt[:-1]], capture="resid_post")
        cols = slice(len(ctx) - 1, len(ctx) + len(opt) - 1)
        tgt = torch.tensor(opt)
        readouts = [run.logits[0, cols]] + [logit_lens(lm, r[0, cols]) for r in run.cache.stack("resid_post")]
        rows.append([float(l.float().log_softmax(-1)[torch.arange(len(opt)), tgt].sum()) for l in readouts])
    return torch.tensor(rows).T  # [readout, option]


def test_score_items_under_both_lenses(toy):
    from probes.multiple_choice import score_items
    from tasks.items import MCItem
    from toy_pair import tuned_lens as shipped

    items = [MCItem("a", "t", "The capital of France is", [" Paris .", " Warsaw .", " Madrid"], 0),
             MCItem("b", "t", "User : What is the capital of Poland ? Assistant :", [" Warsaw", " Rome ."], 0)]
    default = score_items(toy, items, layers="all")
    logit = score_items(toy, items, layers="all", lens=LogitLens(toy))
    tuned = score_items(toy, items, layers="all", lens=shipped.load(toy, "base"))
    naive = score_items(toy, items, layers="all", lens=shipped.load(toy, "base"), method="naive")
    for item, d, l, t, n in zip(items, default, logit, tuned, naive):
        assert d.layers == [None, *range(toy.n_layers)]
        assert (d.logprobs == l.logprobs).all()
        torch.testing.assert_close(torch.tensor(d.logprobs), _today_logprobs(toy, item).double(), rtol=0, atol=1e-4)
        assert (t.loglik(None) == d.loglik(None)).all()  # the final readout is the model's, under any lens
        assert not (t.loglik(0) == d.loglik(0)).any()  # block readouts go through the lens
        torch.testing.assert_close(torch.tensor(t.logprobs), torch.tensor(n.logprobs), rtol=0, atol=1e-4)


def test_a_lens_that_is_not_one_is_refused(toy):
    from probes.multiple_choice import score_items
    from tasks.items import MCItem

    with pytest.raises(InterpError, match="lens must be None"):
        score_items(toy, [MCItem("a", "t", "The capital of France is", [" Paris", " Rome"], 0)], layers=0, lens="tuned")


def test_layer_readouts_take_a_lens(toy, resids):
    from interp.ablation import ablate, ablate_each_layer
    from interp.lens import decode_layers, readout
    from interp.transplant import transplant
    from toy_pair import tuned_lens as shipped

    tuned = shipped.load(toy, "base")
    logit, through = readout(toy, resids, k=3), readout(toy, resids, k=3, lens=tuned)
    assert torch.equal(through.top_ids[-1], logit.top_ids[-1])  # the last layer: identity translator
    for layer in range(toy.n_layers):
        expected = tuned.decode(resids[layer], layer).float().log_softmax(-1).topk(3, dim=-1).indices
        assert torch.equal(through.top_ids[layer], expected)
    assert not torch.equal(through.top_probs[0], logit.top_probs[0])
    last = decode_layers(toy, TEXTS, k=3, lens=tuned)
    torch.testing.assert_close(last.top_probs, through.top_probs[:, :, -1:], rtol=0, atol=1e-5)  # left padding: -1 = last
    vector = torch.randn(toy.d_model)
    a, b = transplant(toy, TEXTS[:1], vector, layer=2), transplant(toy, TEXTS[:1], vector, layer=2, lens=tuned)
    assert torch.equal(a.final.top_ids, b.final.top_ids) and not torch.equal(a.layers.top_probs, b.layers.top_probs)
    one, each = ablate(toy, TEXTS, layer=1, lens=tuned), ablate_each_layer(toy, TEXTS, lens=tuned)
    torch.testing.assert_close(one.top_probs, each.top_probs[1], rtol=0, atol=1e-5)
    assert not torch.equal(one.top_probs, ablate(toy, TEXTS, layer=1).top_probs)


def test_retrain_script_writes_loadable_lenses(tmp_path, capsys):
    from toy_pair import tuned_lens as shipped

    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        shipped.main(["--out", str(tmp_path), "--steps", "2", "--batch-size", "4"])
    finally:  # main() turns it on for reproducible lenses
        torch.use_deterministic_algorithms(deterministic)
    for member in shipped.MEMBERS:
        lm = interp.load(f"toy/{member}")
        lens = TunedLens.load(tmp_path / member, lm)
        assert lens.config.model == f"toy/{member}" and lens.weight[:-1].abs().sum() > 0
    assert "saved to" in capsys.readouterr().out


def _single_run_logprobs(lm, ctx: list[int], cont: list[int], lens) -> torch.Tensor:
    """Oracle: one plain run of ``ctx + cont[:-1]``; per readout (final, then each block
    decoded by ``lens.decode``), the log-prob of each continuation token ``[readout, n_tokens]``."""
    run = lm.run(torch.tensor([ctx + cont[:-1]]), capture="resid_post")
    cols = slice(len(ctx) - 1, len(ctx) + len(cont) - 1)
    readouts = [run.logits[0, cols]] + [lens.decode(r[0, cols], layer)
                                        for layer, r in enumerate(run.cache.stack("resid_post"))]
    tgt = torch.tensor(cont)
    return torch.stack([l.float().log_softmax(-1)[torch.arange(len(cont)), tgt] for l in readouts])


@pytest.mark.parametrize("probe", ["continuation_logprobs", "shared_context_logprobs"])
def test_token_logprob_probes_under_both_lenses(toy, probe):
    """Every probe that scores continuations by layer: blocks through the given lens (each
    against a single plain run decoded by that lens), the final readout identical under both."""
    from probes.logprobs import continuation_logprobs, encode_pair
    from probes.shared_context import shared_context_logprobs
    from toy_pair import tuned_lens as shipped

    contexts, conts = ["The capital of France is", "User : What is the capital of Poland ? Assistant :"], \
        [" Paris .", " Warsaw"]
    tuned, logit = shipped.load(toy, "base"), LogitLens(toy)
    layers = [None, *range(toy.n_layers)]
    got = {}
    for name, lens in (("logit", logit), ("tuned", tuned)):
        if probe == "continuation_logprobs":
            got[name] = [s.token_logprobs for s in continuation_logprobs(toy, contexts, conts, layers="all", lens=lens)]
        else:
            groups = [(ctx, [cont]) for ctx, cont in (encode_pair(toy.tokenizer, c, x) for c, x in zip(contexts, conts))]
            got[name] = [opts[0][0] for opts in shared_context_logprobs(toy, groups, layers, lens=lens)]
    for i, (c, x) in enumerate(zip(contexts, conts)):
        ctx, cont = encode_pair(toy.tokenizer, c, x)
        for name, lens in (("logit", logit), ("tuned", tuned)):
            torch.testing.assert_close(got[name][i], _single_run_logprobs(toy, ctx, cont, lens), rtol=0, atol=1e-4)
        assert torch.equal(got["logit"][i][0], got["tuned"][i][0])  # the final readout: the model's
        assert not torch.allclose(got["logit"][i][1:-1], got["tuned"][i][1:-1], atol=1e-3)
