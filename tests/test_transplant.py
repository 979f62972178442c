"""Vector transplant and ablation (interp.transplant) against hand-built runs and identities."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.lens import logit_lens
from interp.transplant import ablate, ablate_each_layer, transplant, transplant_each_layer, updates
from tests.conftest import PROMPTS

ATOL = 1e-5


def targets_for(lm, words=("paris", "warsaw")) -> torch.Tensor:
    ids = [lm.tokenizer.convert_tokens_to_ids(w) for w in words]
    return torch.tensor([ids] * len(PROMPTS))


def clean_last_logits(lm) -> torch.Tensor:
    return lm.run(PROMPTS, positions=-1).logits[:, 0]


def run_with_torch_hook(lm, module_path: str, edit) -> torch.Tensor:
    """Last-position logits with a plain PyTorch forward hook ``edit(output) -> output``."""
    module = lm.model.get_submodule(module_path)

    def hook(mod, args, output):
        if isinstance(output, tuple):
            return (edit(output[0]),) + tuple(output[1:])
        return edit(output)

    handle = module.register_forward_hook(hook)
    try:
        return lm.run(PROMPTS, positions=-1).logits[:, 0]
    finally:
        handle.remove()


def mlp_path(lm, layer: int) -> str:
    return f"{lm.arch.blocks}.{layer}.{lm.arch.mlp}"


def test_updates_are_the_captured_hook_at_the_position(lm):
    run = lm.run(PROMPTS, capture=["mlp_out"])
    got = updates(lm, PROMPTS)
    assert got.shape == (lm.n_layers, len(PROMPTS), lm.d_model)
    torch.testing.assert_close(got, run.cache.stack("mlp_out")[:, :, -1], rtol=0, atol=0)
    first = updates(lm, PROMPTS, hook="attn_out", position=0)
    lengths = torch.tensor([len(lm.tokenizer(p)["input_ids"]) for p in PROMPTS])
    cols = run.tokens.shape[1] - lengths
    full = lm.run(PROMPTS, capture=["attn_out"]).cache.stack("attn_out")
    torch.testing.assert_close(first, full[:, torch.arange(len(PROMPTS)), cols], rtol=0, atol=0)


@pytest.mark.parametrize("layer", [0, 2])
def test_replacing_an_update_by_itself_changes_nothing(lm, layer):
    own = updates(lm, PROMPTS)[layer]  # [batch, d_model], one per target
    res = transplant(lm, PROMPTS, own, layer, mode="replace", targets_ids=targets_for(lm))
    clean = clean_last_logits(lm)
    torch.testing.assert_close(res.final.logits, clean, rtol=0, atol=ATOL)
    lens = interp.lens.decode_layers(lm, PROMPTS, targets=targets_for(lm))
    assert torch.equal(res.layers.top_ids, lens.top_ids)
    torch.testing.assert_close(res.layers.target_prob, lens.target_prob, rtol=0, atol=ATOL)


def test_adding_zero_changes_nothing(lm):
    res = transplant(lm, PROMPTS, torch.zeros(lm.d_model), 1)
    torch.testing.assert_close(res.final.logits, clean_last_logits(lm), rtol=0, atol=ATOL)


@pytest.mark.parametrize("per_target", [False, True])
def test_add_equals_a_plain_torch_hook(lm, per_target):
    torch.manual_seed(1)
    layer = 1
    vector = 3 * torch.randn(len(PROMPTS), lm.d_model) if per_target else 3 * torch.randn(lm.d_model)

    def edit(out):  # left-padded batch: column -1 is every prompt's last token
        out = out.clone()
        out[:, -1] += vector
        return out

    expected = run_with_torch_hook(lm, mlp_path(lm, layer), edit)
    res = transplant(lm, PROMPTS, vector, layer, targets_ids=targets_for(lm), k=4)
    torch.testing.assert_close(res.final.logits, expected, rtol=0, atol=ATOL)
    assert (res.final.logits - clean_last_logits(lm)).abs().max() > 1e-2  # the write did something
    # The readouts are reductions of those logits.
    assert res.final.top_ids.shape == res.final.top_probs.shape == (len(PROMPTS), 4)
    assert torch.equal(res.final.top_ids, expected.topk(4, dim=-1).indices)
    torch.testing.assert_close(res.final.target_prob, expected.softmax(-1).gather(-1, targets_for(lm)))
    assert res.final.target_rank.shape == (len(PROMPTS), 2)
    # Layer readout: unchanged below the written layer, the final logits at the last layer.
    clean = interp.lens.decode_layers(lm, PROMPTS, targets=targets_for(lm), k=4)
    assert res.layers.top_ids.shape == (lm.n_layers, len(PROMPTS), 1, 4)
    torch.testing.assert_close(res.layers.top_probs[:layer], clean.top_probs[:layer], rtol=0, atol=ATOL)
    assert not torch.allclose(res.layers.top_probs[layer], clean.top_probs[layer])
    assert torch.equal(res.layers.top_ids[-1, :, 0], res.final.top_ids)
    torch.testing.assert_close(res.layers.target_prob[-1, :, 0], res.final.target_prob, rtol=0, atol=ATOL)


def test_add_at_a_middle_position_and_replace_mode(lm):
    layer, position = 0, 1
    vector = torch.randn(lm.d_model)
    lengths = torch.tensor([len(lm.tokenizer(p)["input_ids"]) for p in PROMPTS])
    cols = int(lengths.max()) - lengths + position

    def edit_add(out):
        out = out.clone()
        out[torch.arange(len(PROMPTS)), cols] += vector
        return out

    def edit_replace(out):
        out = out.clone()
        out[torch.arange(len(PROMPTS)), cols] = vector
        return out

    for mode, edit in (("add", edit_add), ("replace", edit_replace)):
        expected = run_with_torch_hook(lm, mlp_path(lm, layer), edit)
        res = transplant(lm, PROMPTS, vector, layer, mode=mode, position=position)
        torch.testing.assert_close(res.final.logits, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_ablate_without_propagation_is_the_lens_of_resid_post_minus_update(lm, layer):
    run = lm.run(PROMPTS, capture=["resid_post", "mlp_out"], positions=-1)
    by_hand = logit_lens(lm, run.cache.stack("resid_post")[layer, :, 0] - run.cache.stack("mlp_out")[layer, :, 0])
    got = ablate(lm, PROMPTS, layer, targets_ids=targets_for(lm))
    torch.testing.assert_close(got.logits, by_hand, rtol=0, atol=ATOL)
    torch.testing.assert_close(got.target_prob, by_hand.softmax(-1).gather(-1, targets_for(lm)))
    if lm.parallel:
        with pytest.raises(interp.UnknownHook, match="resid_mid"):
            lm.run(PROMPTS, capture=["resid_mid"])
    else:  # resid_post - mlp_out == resid_mid (up to one float rounding)
        mid = lm.run(PROMPTS, capture=["resid_mid"], positions=-1).cache.stack("resid_mid")[layer, :, 0]
        torch.testing.assert_close(got.logits, logit_lens(lm, mid), rtol=0, atol=ATOL)


def test_ablate_with_propagation(lm):
    last = lm.n_layers - 1
    # At the last layer nothing downstream reads the update: both views agree ...
    prop = ablate(lm, PROMPTS, last, propagate=True, targets_ids=targets_for(lm))
    flat = ablate(lm, PROMPTS, last, propagate=False, targets_ids=targets_for(lm))
    torch.testing.assert_close(prop.logits, flat.logits, rtol=0, atol=ATOL)
    if not lm.parallel:  # ... and equal the lens of resid_mid.
        mid = lm.run(PROMPTS, capture=["resid_mid"], positions=-1).cache.stack("resid_mid")[last, :, 0]
        torch.testing.assert_close(prop.logits, logit_lens(lm, mid), rtol=0, atol=ATOL)

    # Earlier, later layers see the change: equals zeroing with a plain hook, not the flat view.
    def zero_last(out):
        out = out.clone()
        out[:, -1] = 0
        return out

    expected = run_with_torch_hook(lm, mlp_path(lm, 0), zero_last)
    early = ablate(lm, PROMPTS, 0, propagate=True)
    torch.testing.assert_close(early.logits, expected, rtol=0, atol=ATOL)
    assert (early.logits - ablate(lm, PROMPTS, 0).logits).abs().max() > 1e-3


@pytest.mark.parametrize("hook", ["mlp_out", "attn_out"])
@pytest.mark.parametrize("layers_per_chunk", [1, 2, None])
def test_ablate_each_layer_equals_looping_ablate(lm, hook, layers_per_chunk, monkeypatch):
    if layers_per_chunk is not None:  # decode 1 or 2 layers per unembedding call (3 layers)
        monkeypatch.setattr(interp.lens, "DECODE_BUDGET", layers_per_chunk * len(PROMPTS) * lm.d_vocab)
    targets = targets_for(lm)
    each = ablate_each_layer(lm, PROMPTS, hook=hook, targets_ids=targets, k=3)
    assert each.top_ids.shape == (lm.n_layers, len(PROMPTS), 3)
    assert each.target_rank.shape == (lm.n_layers, len(PROMPTS), 2)
    assert each.logits is None
    for layer in range(lm.n_layers):
        one = ablate(lm, PROMPTS, layer, hook=hook, targets_ids=targets, k=3)
        assert torch.equal(each.top_ids[layer], one.top_ids)
        assert torch.equal(each.target_rank[layer], one.target_rank)
        torch.testing.assert_close(each.top_probs[layer], one.top_probs, rtol=0, atol=1e-6)
        torch.testing.assert_close(each.target_prob[layer], one.target_prob, rtol=0, atol=1e-6)
        torch.testing.assert_close(each.entropy[layer], one.entropy, rtol=0, atol=1e-5)


@pytest.mark.parametrize("hook", ["mlp_out", "attn_out"])
@pytest.mark.parametrize("position", [-1, 1])
def test_ablate_each_layer_with_propagation_equals_looping_ablate(lm, hook, position):
    targets = targets_for(lm)
    each = ablate_each_layer(lm, PROMPTS, hook=hook, targets_ids=targets, k=3, position=position, propagate=True)
    assert each.top_ids.shape == (lm.n_layers, len(PROMPTS), 3) and each.logits is None
    for layer in range(lm.n_layers):
        one = ablate(lm, PROMPTS, layer, hook=hook, targets_ids=targets, k=3, position=position, propagate=True)
        assert torch.equal(each.top_ids[layer], one.top_ids)
        assert torch.equal(each.target_rank[layer], one.target_rank)
        torch.testing.assert_close(each.top_probs[layer], one.top_probs, rtol=0, atol=1e-6)
        torch.testing.assert_close(each.target_prob[layer], one.target_prob, rtol=0, atol=1e-6)
    flat = ablate_each_layer(lm, PROMPTS, hook=hook, targets_ids=targets, k=3, position=position)
    if hook == "mlp_out":  # nothing reads the last FFN update: both views agree at the last layer
        torch.testing.assert_close(each.target_prob[-1], flat.target_prob[-1], rtol=0, atol=1e-6)
    assert not torch.allclose(each.top_probs[0], flat.top_probs[0])  # earlier, later layers see the change


@pytest.mark.parametrize("per_target", [False, True])
@pytest.mark.parametrize("hook, position", [("mlp_out", -1), ("attn_out", -1), ("mlp_out", 1)])
def test_transplant_each_layer_equals_looping_transplant(lm, per_target, hook, position):
    torch.manual_seed(2)
    shape = (lm.n_layers, len(PROMPTS), lm.d_model) if per_target else (lm.n_layers, lm.d_model)
    vectors = 3 * torch.randn(shape)
    targets = targets_for(lm)
    each = transplant_each_layer(lm, PROMPTS, vectors, hook=hook, position=position, targets_ids=targets, k=3)
    assert each.layers.top_ids.shape == (lm.n_layers, len(PROMPTS), 3)
    assert each.baseline.target_rank.shape == (len(PROMPTS), 2) and each.layers.logits is None
    for layer in range(lm.n_layers):
        ref = transplant(lm, PROMPTS, vectors[layer], layer, hook=hook, position=position, targets_ids=targets, k=3)
        assert torch.equal(each.layers.target_rank[layer], ref.final.target_rank)
        assert torch.equal(each.layers.top_ids[layer], ref.final.top_ids)
        torch.testing.assert_close(each.layers.target_prob[layer], ref.final.target_prob, rtol=0, atol=1e-6)
    plain = clean_last_logits(lm)
    assert torch.equal(each.baseline.top_ids[:, 0], plain.argmax(-1))
    torch.testing.assert_close(each.baseline.target_prob, plain.softmax(-1).gather(-1, targets), rtol=0, atol=1e-6)
    assert not torch.equal(each.layers.top_probs, each.baseline.top_probs.expand(lm.n_layers, -1, -1))  # it acts


def test_bad_input_names_the_valid_choices(lm_of):
    lm = lm_of("gpt2")
    with pytest.raises(interp.InterpError, match=r"\[d_model=64\] or \[batch=3, d_model=64\]"):
        transplant(lm, PROMPTS, torch.zeros(65), 0)
    with pytest.raises(interp.InterpError, match=r"\[batch=3, d_model=64\]"):
        transplant(lm, PROMPTS, torch.zeros(2, 64), 0)
    for bad_layer in (3, -1):
        with pytest.raises(interp.UnknownHook, match=r"valid layers are 0\.\.2"):
            transplant(lm, PROMPTS, torch.zeros(64), bad_layer)
        with pytest.raises(interp.UnknownHook, match=r"valid layers are 0\.\.2"):
            ablate(lm, PROMPTS, bad_layer)
    with pytest.raises(interp.UnknownHook, match="attn_out, mlp_out"):
        ablate(lm, PROMPTS, 0, hook="resid_post")
    with pytest.raises(interp.UnknownHook, match="mlp_out"):
        updates(lm, PROMPTS, hook="mlp")
    with pytest.raises(interp.InterpError, match="add, replace"):
        transplant(lm, PROMPTS, torch.zeros(64), 0, mode="subtract")
    with pytest.raises(interp.InterpError, match=r"targets_ids must be \[batch=3"):
        ablate(lm, PROMPTS, 0, targets_ids=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(interp.UnknownHook, match="no resid_mid"):
        transplant(lm_of("gptj"), PROMPTS, torch.zeros(64), 0, hook="resid_mid")
    with pytest.raises(interp.InterpError, match=r"\[layer=3, d_model=64\] or \[layer=3, batch=3, d_model=64\]"):
        transplant_each_layer(lm, PROMPTS, torch.zeros(2, 64))
    with pytest.raises(interp.InterpError, match=r"\[layer=3, batch=3, d_model=64\]"):
        transplant_each_layer(lm, PROMPTS, torch.zeros(3, 2, 64))
    with pytest.raises(interp.UnknownHook, match="attn_out, mlp_out"):
        ablate_each_layer(lm, PROMPTS, hook="resid_post", propagate=True)
