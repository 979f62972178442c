"""Exact activation patching: batched sweeps vs one patched run at a time, vs TransformerLens.

Prompts differ in their second and last two tokens, so some cells are unchanged (the
``skip_unchanged`` shortcut) and the rest need real patched runs.
"""

from __future__ import annotations

import copy
import dataclasses
from functools import partial

import pytest
import torch

import interp
from interp.errors import InterpError, PromptError, UnknownHook, UnsupportedArchitecture
from interp.patching import patch_heads, patch_layers, patch_sweep

# HF's own module names of each attention output projection, independent of interp.adapters.
OUT_PROJ = {"gpt2": "attn.c_proj", "llama": "self_attn.o_proj", "gpt_neox": "attention.dense", "gptj": "attn.out_proj"}

CORRUPTED = ["the capital of france is paris", "i plan to visit the city"]
CLEAN = ["the city of poland is warsaw", "i plan to visit a country"]
HOOKS = ["resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"]
SWEEP_FAMILIES = ["gpt2", "llama", "gpt_neox", "gptj"]


def logit_diff(tokenizer):
    a, b = tokenizer.convert_tokens_to_ids(["paris", "warsaw"])
    return lambda logits: logits[:, b].mean() - logits[:, a].mean()


def loop_sweep(lm, metric, hook, all_positions=False, corrupted=CORRUPTED, clean=CLEAN):
    """One ``lm.run`` per cell with ``interp.replace`` at that position: the reference."""
    clean = lm.run(clean, capture=hook).cache
    seq = lm.to_tokens(corrupted)[0].shape[1]
    cells = [None] if all_positions else range(seq)
    out = torch.zeros(lm.n_layers, len(cells))
    for layer in range(lm.n_layers):
        name = interp.block_hook(layer, hook)
        for j, pos in enumerate(cells):
            value = clean[name] if pos is None else clean[name][:, pos:pos + 1]
            run = lm.run(corrupted, positions=-1, interventions={name: interp.replace(value, positions=pos)})
            out[layer, j] = metric(run.logits[:, 0])
    return out


def hooks_of(lm):
    return [h for h in HOOKS if not (lm.parallel and h == "resid_mid")]


@pytest.mark.parametrize("family", SWEEP_FAMILIES)
def test_sweep_equals_loop_of_single_runs(lm_of, tokenizer, family):
    lm = lm_of(family)
    metric = logit_diff(tokenizer)
    for hook in hooks_of(lm):
        fast = patch_sweep(lm, CORRUPTED, CLEAN, metric, hook=hook)
        ref = loop_sweep(lm, metric, hook)
        assert fast.shape == (lm.n_layers, 6)
        assert ref.std() > 1e-3, "the reference sweep is flat: the test would not see a wrong cell"
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4, msg=f"{family} {hook}")


@pytest.mark.parametrize(("family", "attention"), [("gpt2", "sdpa"), ("llama", "sdpa"), ("llama", "eager")])
@pytest.mark.parametrize("prompts", [1, 2])
def test_realistic_case_equals_loop_of_single_runs(lm_of, tokenizer, family, attention, prompts):
    """Issue 12's case, from a benchmark not written here: 20 tokens, clean and corrupted
    differing at positions 3, 7 and 11, and the metric a plain function of the last position's
    logits (a log-softmax: it reads every one). Every cell equals one patched run, to 1e-5:
    cells before position 3 (skipped), single differing positions in block 0, packed runs of
    positions in the middle blocks (under both attention implementations' masks), and the
    final block's cells (run on the clean keys and values at their position)."""
    lm = lm_of(family)
    if attention != lm.model.config._attn_implementation:
        model = copy.deepcopy(lm.model)
        model.set_attn_implementation(attention)
        lm = interp.LM.from_hf(model, tokenizer)
        assert lm.model.config._attn_implementation == attention
    vocab = lm.model.config.vocab_size
    torch.manual_seed(12)
    clean = torch.randint(4, vocab, (prompts, 20))
    corrupted = clean.clone()
    differing = [3, 7, 11]
    while bool((corrupted[:, differing] == clean[:, differing]).any()):
        corrupted[:, differing] = torch.randint(4, vocab, (prompts, len(differing)))

    def metric(logits):  # [batch, vocab] -> scalar
        return logits.log_softmax(-1)[:, 5].mean() - logits[:, 9].mean()

    fast = patch_sweep(lm, corrupted, clean, metric, hook="resid_pre")
    ref = loop_sweep(lm, metric, "resid_pre", corrupted=corrupted, clean=clean)
    assert fast.shape == (lm.n_layers, 20) and ref[:, 3:].std() > 1e-3
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "gptj"])
def test_patch_layers_equals_loop(lm_of, tokenizer, family):
    lm = lm_of(family)
    metric = logit_diff(tokenizer)
    for hook in ["attn_out", "mlp_out", "resid_post"]:
        fast = patch_layers(lm, CORRUPTED, CLEAN, metric, hook=hook)
        ref = loop_sweep(lm, metric, hook, all_positions=True)[:, 0]
        assert fast.shape == (lm.n_layers,)
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)
    # Patching the whole residual stream entering any layer reproduces the clean run.
    clean_metric = metric(lm.run(CLEAN, positions=-1).logits[:, 0])
    torch.testing.assert_close(patch_layers(lm, CORRUPTED, CLEAN, metric), clean_metric.expand(lm.n_layers))


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox", "gptj"])
def test_patch_heads_equals_loop(lm_of, tokenizer, family):
    lm = lm_of(family)
    metric = logit_diff(tokenizer)
    heads = lm.model.config.num_attention_heads
    blocks = lm.model.get_submodule(lm.arch.blocks)
    proj = [b.get_submodule(OUT_PROJ[lm.model.config.model_type]) for b in blocks]
    clean_z = {}
    handles = [p.register_forward_pre_hook(partial(lambda l, m, a: clean_z.__setitem__(l, a[0].clone()), l))
               for l, p in enumerate(proj)]
    lm.run(CLEAN)
    for h in handles:
        h.remove()
    ref = torch.zeros(lm.n_layers, heads)
    for layer in range(lm.n_layers):
        d_head = clean_z[layer].shape[-1] // heads
        for head in range(heads):
            sl = slice(head * d_head, (head + 1) * d_head)

            def write(module, args, sl=sl, layer=layer):
                z = args[0].clone()
                z[..., sl] = clean_z[layer][..., sl]
                return (z,)

            handle = proj[layer].register_forward_pre_hook(write)
            try:
                ref[layer, head] = metric(lm.run(CORRUPTED, positions=-1).logits[:, 0])
            finally:
                handle.remove()
    fast = patch_heads(lm, CORRUPTED, CLEAN, metric)
    assert fast.shape == (lm.n_layers, heads)
    assert ref.std() > 1e-4
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-4)


def test_resid_mid_raises_for_parallel_family(lm_of, tokenizer):
    with pytest.raises(UnknownHook, match="parallel"):
        patch_sweep(lm_of("gptj"), CORRUPTED, CLEAN, logit_diff(tokenizer), hook="resid_mid")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_shortcuts_chunking_equal_plain_full_recompute(lm_of, tokenizer, family):
    lm = lm_of(family)
    metric = logit_diff(tokenizer)
    plain = patch_sweep(lm, CORRUPTED, CLEAN, metric, resume=False, skip_unchanged=False, chunk_size=1000)
    for kw in [dict(resume=True, skip_unchanged=False), dict(resume=False, skip_unchanged=True),
               dict(chunk_size=1), dict(chunk_size=4, progress=True), dict(chunk_size=5, resume=False)]:
        torch.testing.assert_close(patch_sweep(lm, CORRUPTED, CLEAN, metric, **kw), plain, atol=1e-6, rtol=1e-5,
                                   msg=str(kw))
    heads_plain = patch_heads(lm, CORRUPTED, CLEAN, metric, resume=False, skip_unchanged=False)
    torch.testing.assert_close(patch_heads(lm, CORRUPTED, CLEAN, metric, chunk_size=3), heads_plain, atol=1e-6, rtol=1e-5)


def test_resume_restores_blocks_even_on_error(lm_of, tokenizer):
    lm = lm_of("llama")
    blocks = lm.model.get_submodule(lm.arch.blocks)
    before = list(blocks)
    calls = []

    def failing(logits):
        calls.append(1)
        if len(calls) > 3:  # fails inside the patched chunks, after some relays were installed
            raise RuntimeError("metric failed")
        return logits[:, 0].mean()

    with pytest.raises(RuntimeError, match="metric failed"):
        patch_sweep(lm, CORRUPTED, CLEAN, failing, chunk_size=2)
    assert all(a is b for a, b in zip(blocks, before)) and len(blocks) == len(before)
    run = lm.run(CORRUPTED)
    torch.testing.assert_close(run.logits, lm.model(lm.to_tokens(CORRUPTED)[0]).logits)


def test_unchanged_cells_are_the_corrupted_run(lm_of, tokenizer):
    lm = lm_of("gpt2")
    metric = logit_diff(tokenizer)
    base = metric(lm.run(CORRUPTED, positions=-1).logits[:, 0])
    sweep = patch_sweep(lm, CORRUPTED, CLEAN, metric)
    torch.testing.assert_close(sweep[:, 0], base.expand(lm.n_layers))  # both prompts share token 0
    assert (sweep[:, 1] - base).abs().max() > 1e-4  # token 1 differs in the first pair


# -- TransformerLens on the same weights ------------------------------------------------------
@pytest.fixture(scope="module")
def bridge_of(lm_of, tokenizer, tmp_path_factory):
    from transformer_lens.model_bridge import TransformerBridge

    cache = {}

    def make(family):
        if family not in cache:
            folder = tmp_path_factory.mktemp(f"hf-{family}")
            model = lm_of(family).model
            model.save_pretrained(folder)
            # A copy: the bridge switches its model to eager attention; ours keeps its own.
            cache[family] = TransformerBridge.boot_transformers(
                str(folder), hf_model=copy.deepcopy(model), tokenizer=tokenizer)
        return cache[family]

    return make


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_equals_transformer_lens(lm_of, bridge_of, tokenizer, family):
    import transformer_lens.patching as tlp

    lm, bridge = lm_of(family), bridge_of(family)
    metric = logit_diff(tokenizer)
    corr_ids, clean_ids = lm.to_tokens(CORRUPTED)[0], lm.to_tokens(CLEAN)[0]
    _, clean_cache = bridge.run_with_cache(clean_ids)

    def tl_metric(logits):  # TransformerLens passes [batch, pos, vocab]; ours gets logits[:, -1]
        return metric(logits[:, -1])

    resid_post = partial(tlp.generic_activation_patch, patch_setter=tlp.layer_pos_patch_setter,
                         activation_name="resid_post", index_axis_names=("layer", "pos"))
    # No resid_mid: in TransformerBridge (4.3) ``hook_resid_mid`` is an alias of ``ln2.hook_in``,
    # so a write to it changes the MLP's input but not the residual carried past the MLP. Our
    # resid_mid is the true residual stream (as in TL 3.9 HookedTransformer, which agrees with
    # it); the loop test above checks it.
    tl_fns = {"resid_pre": tlp.get_act_patch_resid_pre, "attn_out": tlp.get_act_patch_attn_out,
              "mlp_out": tlp.get_act_patch_mlp_out, "resid_post": resid_post}
    for hook, fn in tl_fns.items():
        ref = fn(bridge, corr_ids, clean_cache, tl_metric).float()
        ours = patch_sweep(lm, corr_ids, clean_ids, metric, hook=hook)
        assert ref.std() > 1e-3
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4, msg=f"{family} {hook}")
    ref = tlp.get_act_patch_attn_head_out_all_pos(bridge, corr_ids, clean_cache, tl_metric).float()
    torch.testing.assert_close(patch_heads(lm, corr_ids, clean_ids, metric), ref, atol=1e-4, rtol=1e-4)


# -- bad input ----------------------------------------------------------------------------------
def test_prompts_of_different_lengths_raise_naming_both(lm_of, tokenizer):
    lm = lm_of("gpt2")
    with pytest.raises(PromptError, match=r"\[6\].*\[5\]"):
        patch_sweep(lm, "the capital of france is paris", "the capital of poland is", logit_diff(tokenizer))
    with pytest.raises(PromptError, match="2 prompts.*1"):
        patch_sweep(lm, CORRUPTED, CLEAN[:1], logit_diff(tokenizer))


def test_unknown_hook_raises_with_choices(lm_of, tokenizer):
    with pytest.raises(UnknownHook, match="resid_pre"):
        patch_sweep(lm_of("gpt2"), CORRUPTED, CLEAN, logit_diff(tokenizer), hook="resid_middle")


def test_non_scalar_metric_raises(lm_of):
    with pytest.raises(InterpError, match=r"scalar.*\(2,\)"):
        patch_sweep(lm_of("gpt2"), CORRUPTED, CLEAN, lambda logits: logits[:, 0])


def test_heads_without_out_proj_row_raise(lm_of, tokenizer, monkeypatch):
    lm = lm_of("gpt2")
    monkeypatch.setattr(lm, "arch", dataclasses.replace(lm.arch, attn_o=None))
    with pytest.raises(UnsupportedArchitecture, match="attn_o"):
        patch_heads(lm, CORRUPTED, CLEAN, logit_diff(tokenizer))


# -- the key/value prefix shortcut --------------------------------------------------------------
def test_kv_prefix_equals_full_length_path(lm_of, tokenizer, family):
    """Every hook, every family (``family`` is the conftest fixture over FAMILIES): the kv-prefix sweep (default) equals the full-length one,
    with and without resuming, chunked, and without the unchanged-cell shortcut."""
    lm = lm_of(family)
    metric = logit_diff(tokenizer)
    for hook in hooks_of(lm):
        full = patch_sweep(lm, CORRUPTED, CLEAN, metric, hook=hook, kv_prefix=False, skip_unchanged=False)
        assert full.std() > 1e-3
        for kw in [{}, {"resume": False}, {"chunk_size": 2}, {"skip_unchanged": False},
                   {"chunk_size": 1, "resume": False, "skip_unchanged": False}]:
            torch.testing.assert_close(patch_sweep(lm, CORRUPTED, CLEAN, metric, hook=hook, **kw), full,
                                       atol=1e-5, rtol=1e-4, msg=f"{family} {hook} {kw}")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_kv_prefix_patch_layers_and_heads_unchanged(lm_of, tokenizer, family):
    lm = lm_of(family)
    metric = logit_diff(tokenizer)
    torch.testing.assert_close(patch_layers(lm, CORRUPTED, CLEAN, metric, hook="mlp_out"),
                               patch_layers(lm, CORRUPTED, CLEAN, metric, hook="mlp_out", kv_prefix=False))
    torch.testing.assert_close(patch_heads(lm, CORRUPTED, CLEAN, metric),
                               patch_heads(lm, CORRUPTED, CLEAN, metric, kv_prefix=False))


def test_kv_prefix_runs_only_the_suffix(lm_of, tokenizer):
    """The shortcut is really taken: patched forwards see fewer tokens than the prompt, and
    the corrupted run's cache is left as it was (each chunk gets its own copy)."""
    from interp.patching import sweep

    from interp.patching import kv

    lm = lm_of("gpt2")
    seq = lm.to_tokens(CORRUPTED)[0].shape[1]
    lengths = []
    handle = lm.model.get_submodule(lm.arch.blocks)[-1].register_forward_pre_hook(
        lambda module, args: lengths.append(args[0].shape[1]))
    try:
        fast = patch_sweep(lm, CORRUPTED, CLEAN, logit_diff(tokenizer), chunk_size=1)
    finally:
        handle.remove()
    assert min(lengths) < seq and max(lengths) == seq
    torch.testing.assert_close(fast, loop_sweep(lm, logit_diff(tokenizer), "resid_pre"), atol=1e-5, rtol=1e-4)
    ids = lm.to_tokens(CORRUPTED)[0]
    _, _, _, _, cache, _ = sweep._capture(lm, ids, "resid_pre", resume=False, kv=True)
    assert kv.prefix_kv(lm, cache, seq) is not None
    assert kv.prefix_kv(lm, cache, seq + 1) is None  # a cache missing positions is refused
    assert kv.prefix_kv(lm, None, seq) is None


def patched_runs(lm, hook):
    """How many cells of a ``patch_sweep`` of ``hook`` need a patched run: those whose clean
    and corrupted activations differ."""
    clean, corr = (lm.run(p, capture=hook).cache for p in (CLEAN, CORRUPTED))
    seq = lm.to_tokens(CORRUPTED)[0].shape[1]
    return sum(not torch.equal(clean[k][:, p], corr[k][:, p]) for k in clean for p in range(seq))


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_final_ffn_runs_at_the_last_position_only(lm_of, tokenizer, family):
    """Patched runs run the final block's FFN at their last position only, so apart from the
    two capture runs (the prompt batch at full length) it sees one row per prompt and patched
    run, several runs per forward (batched, or packed as columns)."""
    lm = lm_of(family)
    batch, seq = lm.to_tokens(CORRUPTED)[0].shape
    final_ffn = lm.model.get_submodule(lm.arch.blocks)[-1].get_submodule(lm.arch.mlp)
    shapes = []
    # A forward hook sees the arguments the FFN ran on.
    handle = final_ffn.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape[:2])))
    try:
        fast = patch_sweep(lm, CORRUPTED, CLEAN, logit_diff(tokenizer), hook="attn_out")
    finally:
        handle.remove()
    runs = [s for s in shapes if s != (batch, seq)]
    patched = patched_runs(lm, "attn_out")
    # One FFN row per prompt and patched run (at its last position; packed runs are columns).
    assert shapes.count((batch, seq)) == 2 and sum(s[0] * s[1] for s in runs) == batch * patched
    assert len(runs) < patched  # patched runs share forwards
    torch.testing.assert_close(fast, loop_sweep(lm, logit_diff(tokenizer), "attn_out"), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("hook", ["resid_pre", "mlp_out"])
def test_a_final_ffn_that_must_run_whole_runs_whole(lm_of, tokenizer, monkeypatch, hook):
    """A model whose final FFN fails the last-position check (``sweep._LAST_FFN``), and an
    ``mlp_out`` patch of the final layer (which writes that FFN's output at its position), run
    the FFN at every computed position, with the same numbers."""
    from interp.patching import sweep

    lm = lm_of("llama")
    metric = logit_diff(tokenizer)
    batch, seq = lm.to_tokens(CORRUPTED)[0].shape
    expected = patch_sweep(lm, CORRUPTED, CLEAN, metric, hook=hook, kv_prefix=False)
    if hook == "resid_pre":
        monkeypatch.setitem(sweep._LAST_FFN, lm.model, False)
    shapes = []
    final_ffn = lm.model.get_submodule(lm.arch.blocks)[-1].get_submodule(lm.arch.mlp)
    handle = final_ffn.register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape[:2])))
    try:
        torch.testing.assert_close(patch_sweep(lm, CORRUPTED, CLEAN, metric, hook=hook), expected, atol=1e-5, rtol=1e-4)
    finally:
        handle.remove()
    # Patched runs (shorter than the prompt: its first token is shared) ran it at more
    # positions than their last ones.
    # (The capture runs, of both prompts at full length, are 2 * batch * seq rows.)
    assert sum(s[0] * s[1] for s in shapes) - 2 * batch * seq > batch * patched_runs(lm, hook)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_one_and_two_token_prompts(lm_of, family):
    """The shortest prompts: one token (patched runs on an empty cache; the final layer's keys
    and values hold nothing to replace) or two; the same numbers as the full-length path."""
    from interp.patching import logit_diff as token_logit_diff

    lm = lm_of(family)
    torch.manual_seed(0)
    for seq in (1, 2):
        corrupted, clean = torch.randint(5, 50, (2, seq)), torch.randint(5, 50, (2, seq))
        for metric in (token_logit_diff(3, 4), lambda x: x[:, 3].mean() - x[:, 4].mean()):
            fast = patch_sweep(lm, corrupted, clean, metric, hook="resid_pre")
            assert fast.shape == (lm.n_layers, seq)
            torch.testing.assert_close(fast, patch_sweep(lm, corrupted, clean, metric, hook="resid_pre", kv_prefix=False),
                                       atol=1e-5, rtol=1e-4, msg=f"{family} seq={seq}")
            torch.testing.assert_close(patch_heads(lm, corrupted, clean, metric),
                                       patch_heads(lm, corrupted, clean, metric, kv_prefix=False), atol=1e-5, rtol=1e-4)


def test_a_sweep_does_not_depend_on_the_models_history():
    """A model's first kv sweep checks its unembedding with full logits; unchanged cells must
    still get the same number as in every later sweep (bit for bit: resumed studies rely on it).
    The toy model's width makes a two-column unembedding round differently from a full one."""
    from interp.patching import logit_diff as token_logit_diff

    lm = interp.load("toy/base")  # a fresh model object, never swept
    corrupted, clean = "The capital of Seychelles is", "The capital of Albania is"
    n = lm.to_tokens(corrupted)[0].shape[1]
    assert lm.to_tokens(clean)[0].shape[1] == n
    victoria, tirana = (lm.tokenizer(f"{prompt} {city}")["input_ids"][n]
                        for prompt, city in ((corrupted, "Victoria"), (clean, "Tirana")))
    metric = token_logit_diff(tirana, victoria)
    first = patch_sweep(lm, corrupted, clean, metric)
    assert torch.equal(first, patch_sweep(lm, corrupted, clean, metric))


def test_kv_chunks_cover_every_cell_once(lm_of):
    from interp.patching.chunks import kv_chunks

    lm = lm_of("llama")
    cells = [(layer, pos, None) for layer in range(3) for pos in range(1, 9)] + [(1, None, None)]
    for size, resume, pack in [(1, True, None), (3, True, None), (100, True, None), (4, False, None),
                               (100, True, 20), (3, True, 20), (100, True, 1)]:
        chunks = kv_chunks(lm, cells, size, 2, 9, resume, final_alone=pack is not None, pack=pack)
        flat = [c for chunk in chunks for c in chunk]
        assert sorted(flat, key=str) == sorted(cells, key=str)
        assert all(len(chunk) <= size for chunk in chunks)
        if resume:
            assert all(len({c[0] for c in chunk}) == 1 for chunk in chunks)
        if pack is not None:  # a pack's tokens and the prefix it sees fit the width (or it is one run)
            packed = [ch for ch in chunks if ch[0][0] != lm.n_layers - 1 and ch[0][1] is not None]
            assert packed and all(len(ch) == 1 or sum(9 - c[1] for c in ch) + max(c[1] for c in ch) <= pack
                                  for ch in packed)


def test_kv_prefix_restores_blocks_on_error_and_respects_the_unembed_check(lm_of, tokenizer, monkeypatch):
    from interp.patching import sweep

    lm = lm_of("llama")
    metric = logit_diff(tokenizer)
    blocks = lm.model.get_submodule(lm.arch.blocks)
    before = list(blocks)
    monkeypatch.setattr(sweep, "UNEMBED_ROWS", 1)  # unembed (and call the metric) after every chunk
    calls = []

    def failing(logits):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("metric failed")
        return metric(logits)

    with pytest.raises(RuntimeError, match="metric failed"):
        patch_sweep(lm, CORRUPTED, CLEAN, failing, chunk_size=2)
    assert all(a is b for a, b in zip(blocks, before)) and len(blocks) == len(before)
    full = patch_sweep(lm, CORRUPTED, CLEAN, metric, kv_prefix=False)
    torch.testing.assert_close(patch_sweep(lm, CORRUPTED, CLEAN, metric), full, atol=1e-5, rtol=1e-4)
    # A model whose logits are not its unembedding's output takes the full-length path.
    monkeypatch.setitem(sweep._PLAIN_UNEMBED, lm.model, False)
    torch.testing.assert_close(patch_sweep(lm, CORRUPTED, CLEAN, metric), full, atol=1e-6, rtol=1e-5)
    assert sweep._PLAIN_UNEMBED[lm.model] is False
