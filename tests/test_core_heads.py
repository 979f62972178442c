"""Attention-head hooks (``blocks.{l}.attn.hook_q/k/v/pattern/z``) on every family: how they fit
together (z is pattern @ v, and z through the output projection is attn_out), per-head writes,
positions and padding, eager attention for patterns, and errors. TransformerLens agreement is
in ``tests/test_oracles.py``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import interp
from interp.errors import InterpError, NoHeadHooks, UnknownHook, UnsupportedArchitecture
from tests.conftest import PROMPTS

# HF's own module names of each family's attention output projection, independent of interp.adapters.
OUT_PROJ = {"gpt2": "attn.c_proj", "llama": "self_attn.o_proj", "mistral": "self_attn.o_proj",
            "gpt_neox": "attention.dense", "gpt_neox_sequential": "attention.dense", "gptj": "attn.out_proj"}
LAYER = 1
HEAD_HOOKS = ["q", "k", "v", "pattern", "z"]


def name(point: str, layer: int = LAYER) -> str:
    return f"blocks.{layer}.attn.hook_{point}"


def test_counts_and_shapes(lm):
    config = lm.model.config
    assert lm.n_heads == config.num_attention_heads and lm.d_head == config.hidden_size // config.num_attention_heads
    assert lm.n_kv_heads == getattr(config, "num_key_value_heads", config.num_attention_heads)
    run = lm.run(PROMPTS, capture=HEAD_HOOKS)
    batch, seq = run.tokens.shape
    assert run.cache[name("q")].shape == (batch, seq, lm.n_heads, lm.d_head)
    assert run.cache[name("k")].shape == run.cache[name("v")].shape == (batch, seq, lm.n_kv_heads, lm.d_head)
    assert run.cache[name("pattern")].shape == (batch, lm.n_heads, seq, seq)
    assert run.cache[name("z")].shape == (batch, seq, lm.n_heads, lm.d_head)
    assert run.cache.stack("z").shape == (lm.n_layers, batch, seq, lm.n_heads, lm.d_head)
    # short forms select every layer; hook_names lists them in execution order
    assert [p.name for p in lm.resolve("attn.hook_z")] == [name("z", layer) for layer in range(lm.n_layers)]
    names = lm.hook_names()
    block = [n for n in names if n.startswith(f"blocks.{LAYER}.")]
    assert block[:7] == [f"blocks.{LAYER}.hook_resid_pre"] + [name(p) for p in HEAD_HOOKS] + [f"blocks.{LAYER}.hook_attn_out"]


def test_z_is_pattern_times_v_and_projects_to_attn_out(lm, family):
    run = lm.run(PROMPTS, capture=["pattern", "v", "z", "attn_out"])
    mask = run.attention_mask.bool()
    group = lm.n_heads // lm.n_kv_heads
    for layer in range(lm.n_layers):
        pattern, v, z = (run.cache[name(p, layer)] for p in ("pattern", "v", "z"))
        v = v.repeat_interleave(group, dim=2)  # query head h reads key/value head h // group
        torch.testing.assert_close(torch.einsum("bhqk,bkhd->bqhd", pattern, v)[mask], z[mask], atol=1e-5, rtol=0)
        rows = pattern.sum(-1).transpose(1, 2)[mask]  # each real query's probabilities sum to 1
        torch.testing.assert_close(rows, torch.ones_like(rows))
        proj = lm.model.get_submodule(lm.arch.blocks)[layer].get_submodule(OUT_PROJ[family])
        attn_out = run.cache[f"blocks.{layer}.hook_attn_out"]
        torch.testing.assert_close(proj(z.flatten(2)), attn_out, atol=1e-5, rtol=0)
        assert z.abs().max() > 1e-3


def test_head_replace_writes_exactly_that_head(lm):
    base = lm.run(PROMPTS, capture=["z", "attn_out"], positions=-1)
    run = lm.run(PROMPTS, capture=["z", "attn_out"], positions=-1,
                 interventions={name("z"): interp.replace(torch.zeros(lm.d_head), heads=[2])})
    z, z0 = run.cache[name("z")], base.cache[name("z")]
    assert (z[:, :, 2] == 0).all() and z0[:, :, 2].abs().max() > 1e-3
    others = [h for h in range(lm.n_heads) if h != 2]
    torch.testing.assert_close(z[:, :, others], z0[:, :, others], atol=0, rtol=0)
    assert not torch.allclose(run.cache[f"blocks.{LAYER}.hook_attn_out"], base.cache[f"blocks.{LAYER}.hook_attn_out"])
    torch.testing.assert_close(run.cache[name("z", 0)], base.cache[name("z", 0)], atol=0, rtol=0)  # earlier layer


def test_head_add_at_positions(lm):
    base = lm.run(PROMPTS, capture="z")
    vec = torch.randn(lm.d_head)
    run = lm.run(PROMPTS, capture="z", interventions={name("z"): interp.add(vec, positions=-1, heads=1)})
    diff = run.cache[name("z")] - base.cache[name("z")]
    torch.testing.assert_close(diff[:, -1, 1], vec.expand(len(PROMPTS), -1), atol=1e-6, rtol=0)
    diff[:, -1, 1] = 0
    assert diff.abs().max() == 0


def test_pattern_write_is_what_the_values_are_mixed_with(lm):
    """Head 1 made to attend to its own position only: its z is then its value there; the other
    heads are untouched. A write at the last query only leaves the other queries' rows."""
    prompt = PROMPTS[1]
    base = lm.run(prompt, capture=["pattern", "v", "z"])
    seq = base.tokens.shape[1]
    run = lm.run(prompt, capture=["pattern", "v", "z"],
                 interventions={name("pattern"): interp.replace(torch.eye(seq), heads=[1])})
    z, v = run.cache[name("z")], run.cache[name("v")]
    group = lm.n_heads // lm.n_kv_heads
    torch.testing.assert_close(z[:, :, 1], v[:, :, 1 // group], atol=1e-6, rtol=0)
    assert (run.cache[name("pattern")][:, 1] == torch.eye(seq)).all()
    others = [h for h in range(lm.n_heads) if h != 1]
    torch.testing.assert_close(z[:, :, others], base.cache[name("z")][:, :, others], atol=0, rtol=0)
    assert not torch.allclose(z[:, :, 1], base.cache[name("z")][:, :, 1])
    one_row = lm.run(prompt, capture="pattern", interventions={
        name("pattern"): interp.replace(torch.full((seq,), 1.0 / seq), positions=-1, heads=[0])})
    got, old = one_row.cache[name("pattern")], base.cache[name("pattern")]
    assert (got[:, 0, -1] == 1.0 / seq).all()
    torch.testing.assert_close(got[:, 0, :-1], old[:, 0, :-1], atol=0, rtol=0)
    torch.testing.assert_close(got[:, 1:], old[:, 1:], atol=0, rtol=0)


@pytest.mark.parametrize("point", ["q", "k", "v"])
def test_qkv_writes(lm, point):
    """A write to one of q/k/v (a fused projection is split and put back together) lands on
    that head only; writing the captured values back changes nothing."""
    base = lm.run(PROMPTS, capture=["q", "k", "v", "z"])
    same = lm.run(PROMPTS, capture=["z"], interventions={name(point): base.cache[name(point)]})
    torch.testing.assert_close(same.logits, base.logits, atol=1e-5, rtol=0)
    value = torch.randn(lm.d_head)
    run = lm.run(PROMPTS, capture=["q", "k", "v", "z"], interventions={name(point): interp.replace(value, heads=[0])})
    for p in ("q", "k", "v"):
        got, old = run.cache[name(p)], base.cache[name(p)]
        if p == point:
            assert (got[:, :, 0] == value).all()
            torch.testing.assert_close(got[:, :, 1:], old[:, :, 1:], atol=0, rtol=0)
        else:
            torch.testing.assert_close(got, old, atol=0, rtol=0)
    changed = (run.cache[name("z")] - base.cache[name("z")]).abs().amax(dim=(0, 1, 3)) > 1e-6
    n_read = lm.n_heads // (lm.n_kv_heads if point != "q" else lm.n_heads)  # query heads reading head 0
    assert changed.tolist() == [h < n_read for h in range(lm.n_heads)]


def test_positions_select_the_query_axis(lm):
    full = lm.run(PROMPTS, capture=HEAD_HOOKS)
    kept = lm.run(PROMPTS, capture=HEAD_HOOKS, positions=[0, -1])
    cols = kept.columns
    rows = torch.arange(len(PROMPTS)).unsqueeze(1)
    for p in ("q", "k", "v", "z"):
        torch.testing.assert_close(kept.cache[name(p)], full.cache[name(p)][rows, cols], atol=0, rtol=0)
    pattern = full.cache[name("pattern")].transpose(1, 2)[rows, cols].transpose(1, 2)
    torch.testing.assert_close(kept.cache[name("pattern")], pattern, atol=0, rtol=0)


def test_padded_batch_equals_alone(lm):
    batch = lm.run(PROMPTS, capture=HEAD_HOOKS)
    for i, prompt in enumerate(PROMPTS):
        alone = lm.run(prompt, capture=HEAD_HOOKS)
        n = alone.tokens.shape[1]
        for p in ("q", "k", "v", "z"):
            torch.testing.assert_close(batch.cache[name(p)][i, -n:], alone.cache[name(p)][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(batch.cache[name("pattern")][i, :, -n:, -n:], alone.cache[name("pattern")][0],
                                   atol=1e-5, rtol=0)


def test_pattern_switches_to_eager_for_the_run_and_back(lm):
    before = lm.model.config._attn_implementation
    assert before != "eager"  # the fixtures load SDPA, so the switch is exercised
    run = lm.run(PROMPTS, capture="pattern", positions=-1)
    assert lm.model.config._attn_implementation == before
    torch.testing.assert_close(run.logits, lm.run(PROMPTS, positions=-1).logits, atol=1e-5, rtol=0)


def test_pattern_where_eager_cannot_be_used_raises(lm_of, monkeypatch):
    lm = lm_of("llama")
    monkeypatch.setattr(lm.model, "set_attn_implementation", lambda impl: None)  # as a model that cannot switch
    with pytest.raises(InterpError, match="attn_implementation='eager'"):
        lm.run(PROMPTS, capture="pattern")
    lm.run(PROMPTS, capture="z")  # the other head hooks work with any attention


def test_bad_head_input_raises(lm_of):
    lm = lm_of("llama")  # 4 query heads, 2 key/value heads
    with pytest.raises(InterpError, match=r"heads \[4\].*4 heads; valid heads: 0\.\.3"):
        lm.run(PROMPTS, interventions={name("z"): interp.replace(torch.zeros(lm.d_head), heads=[4])})
    with pytest.raises(InterpError, match=r"heads \[2\].*2 heads; valid heads: 0\.\.1"):
        lm.run(PROMPTS, interventions={name("k"): interp.add(torch.zeros(lm.d_head), heads=[2])})
    with pytest.raises(InterpError, match="heads= applies to attention-head hooks"):
        lm.run(PROMPTS, interventions={"blocks.0.hook_resid_pre": interp.add(torch.zeros(lm.d_model), heads=[0])})
    with pytest.raises(InterpError, match=r"does not broadcast to the activation slice \[batch, n_heads, n_pos, key_pos\]"):
        lm.run(PROMPTS, interventions={name("pattern"): interp.replace(torch.zeros(3, 3), heads=[0])})
    assert torch._C._len_torch_function_stack() == 0  # the error inside the attention left no mode on
    with pytest.raises(UnknownHook, match=r"blocks\.\{0\.\.2\}\.attn\.hook_\{q,k,v,pattern,z\}"):
        lm.run(PROMPTS, capture="blocks.0.hook_z")
    with pytest.raises(UnknownHook, match="layer 7 is out of range"):
        lm.run(PROMPTS, capture="blocks.7.attn.hook_z")


def test_head_hook_on_a_row_without_the_field_raises(lm_of, monkeypatch):
    lm = lm_of("gpt2")
    monkeypatch.setattr(lm, "arch", dataclasses.replace(lm.arch, attn_o=None, attn_qkv=None))
    for hook in ("z", "blocks.0.attn.hook_pattern", "q"):
        with pytest.raises(NoHeadHooks, match="attn_.*interp.adapters.*valid names: hook_embed"):
            lm.run(PROMPTS, capture=hook)
    assert issubclass(NoHeadHooks, UnknownHook) and issubclass(NoHeadHooks, UnsupportedArchitecture)
    assert not any(".attn." in n for n in lm.hook_names())
