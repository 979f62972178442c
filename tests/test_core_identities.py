"""Identities the core must satisfy on every supported family (random-init tiny models).

Each check compares two computations that a wrong hook, mask or position id would split:
the HF model alone vs through our hooks, a padded batch vs one prompt at a time, a
captured sum vs its parts.
"""

import pytest
import torch

import interp
from interp.hook_names import block_hook
from tests.conftest import PROMPTS

ATOL = 1e-5


def sequential(lm) -> bool:
    return not lm.parallel


def all_points(lm):
    return ["resid_pre", "attn_out", "mlp_out", "resid_post"] + (["resid_mid"] if sequential(lm) else [])


def test_logits_equal_hf_model(lm):
    ids, mask, _ = lm.to_tokens(PROMPTS[0])
    ours = lm.run(PROMPTS[0], capture=all_points(lm)).logits
    theirs = lm.model(input_ids=ids).logits
    assert torch.equal(ours, theirs)  # hooks that only read must not change a bit


def test_final_layer_logit_lens_equals_logits(lm):
    run = lm.run(PROMPTS, capture=[block_hook(lm.n_layers - 1, "resid_post")])
    lens = interp.lens.logit_lens(lm, run.cache[block_hook(lm.n_layers - 1, "resid_post")])
    real = run.attention_mask.bool()
    torch.testing.assert_close(lens[real], run.logits[real], atol=ATOL, rtol=0)


def test_residual_stream_identities(lm):
    cache = lm.run(PROMPTS, capture=all_points(lm)).cache
    pre, attn, mlp, post = (cache.stack(p) for p in ("resid_pre", "attn_out", "mlp_out", "resid_post"))
    torch.testing.assert_close(post, pre + attn + mlp, atol=ATOL, rtol=0)
    torch.testing.assert_close(pre[1:], post[:-1], atol=0, rtol=0)
    if sequential(lm):
        mid = cache.stack("resid_mid")
        torch.testing.assert_close(mid, pre + attn, atol=0, rtol=0)
        torch.testing.assert_close(post, mid + mlp, atol=ATOL, rtol=0)


def test_embedding_hooks_sum_to_first_residual(lm):
    names = ["hook_embed", "blocks.0.hook_resid_pre"] + (["hook_pos_embed"] if lm.arch.pos_embed else [])
    cache = lm.run(PROMPTS[1], capture=names).cache
    embed = cache["hook_embed"] + (cache["hook_pos_embed"] if lm.arch.pos_embed else 0)
    torch.testing.assert_close(embed, cache["blocks.0.hook_resid_pre"], atol=ATOL, rtol=0)


def test_padded_batch_equals_one_at_a_time(lm):
    points = all_points(lm)
    batch = lm.run(PROMPTS, capture=points)
    lengths = batch.lengths.tolist()
    assert len(set(lengths)) > 1, "prompts must differ in length for this test to mean anything"
    for i, prompt in enumerate(PROMPTS):
        alone = lm.run(prompt, capture=points)
        n = lengths[i]
        torch.testing.assert_close(batch.logits[i, -n:], alone.logits[0], atol=ATOL, rtol=0)
        for name in alone.cache:
            torch.testing.assert_close(batch.cache[name][i, -n:], alone.cache[name][0], atol=ATOL, rtol=0)


def test_positions_keep_only_chosen_columns(lm):
    full = lm.run(PROMPTS, capture=["resid_post"])
    some = lm.run(PROMPTS, capture=["resid_post"], positions=[0, -1])
    assert some.logits.shape == (len(PROMPTS), 2, lm.d_vocab)
    for i, n in enumerate(full.lengths.tolist()):
        first, last = full.logits.shape[1] - n, full.logits.shape[1] - 1  # prompt-relative 0 and -1
        torch.testing.assert_close(some.logits[i], full.logits[i, [first, last]], atol=ATOL, rtol=0)
        stacked = some.cache.stack("resid_post")[:, i]
        torch.testing.assert_close(stacked, full.cache.stack("resid_post")[:, i, [first, last]], atol=0, rtol=0)


@pytest.mark.parametrize("point", ["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"])
def test_writing_back_the_captured_value_changes_nothing(lm, point):
    if point == "resid_mid" and not sequential(lm):
        pytest.skip("parallel families have no resid_mid (tested in test_core_errors)")
    clean = lm.run(PROMPTS, capture=[point])
    writes = {name: clean.cache[name] for name in clean.cache}
    patched = lm.run(PROMPTS, interventions=writes)
    torch.testing.assert_close(patched.logits, clean.logits, atol=ATOL, rtol=0)


def test_replacing_first_residual_gives_the_other_prompts_logits(lm):
    a, b = torch.randint(4, lm.d_vocab, (2, 9), generator=torch.Generator().manual_seed(1))
    run_b = lm.run(b, capture=["blocks.0.hook_resid_pre"])
    patched = lm.run(a, interventions={"blocks.0.hook_resid_pre": run_b.cache["blocks.0.hook_resid_pre"]})
    torch.testing.assert_close(patched.logits, run_b.logits, atol=ATOL, rtol=0)
    assert not torch.allclose(lm.run(a).logits, run_b.logits, atol=1e-3)


def test_add_at_one_position_changes_only_that_position_and_later(lm):
    vector = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(2))
    clean = lm.run(PROMPTS[1])
    hook = block_hook(1, "mlp_out")
    patched = lm.run(PROMPTS[1], interventions={hook: interp.add(vector, positions=3)})
    torch.testing.assert_close(patched.logits[:, :3], clean.logits[:, :3], atol=ATOL, rtol=0)
    assert (patched.logits[:, 3] - clean.logits[:, 3]).abs().max() > 1e-3


def test_resid_mid_write_equals_the_same_write_to_attn_out(lm):
    if not sequential(lm):
        pytest.skip("no resid_mid in parallel families")
    vector = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(3))
    via_mid = lm.run(PROMPTS, interventions={"blocks.1.hook_resid_mid": interp.add(vector)}, capture=["blocks.1.hook_resid_mid"])
    via_attn = lm.run(PROMPTS, interventions={"blocks.1.hook_attn_out": interp.add(vector)}, capture=["blocks.1.hook_resid_mid"])
    torch.testing.assert_close(via_mid.logits, via_attn.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(via_mid.cache["blocks.1.hook_resid_mid"], via_attn.cache["blocks.1.hook_resid_mid"], atol=ATOL, rtol=0)


def test_function_intervention_sees_and_returns_the_activation(lm):
    seen = {}

    def zero_last(act):
        seen["shape"] = tuple(act.shape)
        out = act.clone()
        out[:, -1] = 0
        return out

    run = lm.run(PROMPTS, interventions={"blocks.0.hook_mlp_out": zero_last}, capture=["blocks.0.hook_mlp_out"])
    assert seen["shape"] == (len(PROMPTS), run.tokens.shape[1], lm.d_model)
    assert run.cache["blocks.0.hook_mlp_out"][:, -1].abs().max() == 0


def test_stop_early_skips_later_blocks_and_keeps_captures(lm):
    blocks = lm.model.get_submodule(lm.arch.blocks)
    calls = []
    handle = blocks[-1].register_forward_hook(lambda *a: calls.append(1))
    try:
        early = lm.run(PROMPTS, capture=["blocks.1.hook_resid_post"], logits=False)
        assert calls == [] and early.logits is None
        full = lm.run(PROMPTS, capture=["blocks.1.hook_resid_post"])
        assert calls == [1]
    finally:
        handle.remove()
    torch.testing.assert_close(early.cache["blocks.1.hook_resid_post"], full.cache["blocks.1.hook_resid_post"], atol=0, rtol=0)


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_even_when_an_intervention_fails(lm):
    before = _hook_count(lm.model)
    lm.run(PROMPTS, capture=all_points(lm), positions=-1)
    assert _hook_count(lm.model) == before

    def broken(act):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        lm.run(PROMPTS, interventions={"blocks.1.hook_mlp_out": broken})
    assert _hook_count(lm.model) == before


def test_captures_are_copies_the_model_cannot_touch(lm):
    # Block 0's output is the very tensor block 1 receives; a module (here a plain PyTorch
    # pre-hook standing in for a fused kernel) that changes it in place later in the same
    # forward pass must not reach the capture.
    name = "blocks.0.hook_resid_post"
    untouched = lm.run(PROMPTS[0], capture=[name]).cache[name]

    def mutate_in_place(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        hidden.mul_(-3.0).add_(7.0)

    blocks = lm.model.get_submodule(lm.arch.blocks)
    handle = blocks[1].register_forward_pre_hook(mutate_in_place, with_kwargs=True)
    try:
        run = lm.run(PROMPTS[0], capture=[name])
    finally:
        handle.remove()
    assert not torch.allclose(run.logits, lm.run(PROMPTS[0]).logits), "the in-place edit must act"
    torch.testing.assert_close(run.cache[name], untouched, atol=0, rtol=0)
    snapshot = run.cache[name].clone()
    lm.run(PROMPTS[1], capture=[name])  # a later run must not reuse the captured storage either
    assert torch.equal(run.cache[name], snapshot)
    assert not run.cache[name].requires_grad


def test_hook_names_are_in_execution_order_and_all_capturable(lm):
    names = lm.hook_names()
    assert names[0] == "hook_embed" and names[-1] == "ln_final.hook_normalized"
    assert (block_hook(0, "resid_mid") in names) == sequential(lm)
    run = lm.run(PROMPTS[0], capture=names, positions=-1)
    assert list(run.cache) == [n for n in names if n in run.cache] and set(run.cache) == set(names)


def test_lens_readout_is_the_same_in_any_grouping_of_layers(lm, monkeypatch):
    run = lm.run(PROMPTS, capture=["resid_post"], positions=[-2, -1])
    resids = run.cache.stack("resid_post")
    targets = torch.tensor([[5, 6], [7, 8], [9, 10]])
    together = interp.lens.readout(lm, resids, targets=targets, k=4)
    monkeypatch.setattr(interp.lens, "DECODE_BUDGET", 1)  # one layer per unembedding call
    apart = interp.lens.readout(lm, resids, targets=targets, k=4)
    for field in ("top_ids", "top_probs", "entropy", "target_rank", "target_prob"):
        torch.testing.assert_close(getattr(together, field), getattr(apart, field), atol=1e-6, rtol=0)
    # Hand computation for one cell: the rank is the number of strictly larger logits.
    logits = interp.lens.logit_lens(lm, resids[1, 2, 1])
    assert together.target_rank[1, 2, 1, 0] == (logits > logits[9]).sum()
    assert together.top_ids[1, 2, 1, 0] == logits.argmax()
    torch.testing.assert_close(together.target_prob[1, 2, 1, 1], logits.softmax(-1)[10], atol=1e-6, rtol=0)
