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
