"""Property tests: over batch sizes, prompt lengths, positions and hook names, shapes are
as documented and the identities hold."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import interp
from interp.hook_names import BLOCK_POINTS

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def batches(draw, vocab: int, max_len: int = 12):
    lengths = draw(st.lists(st.integers(1, max_len), min_size=1, max_size=4))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (n,), generator=gen) for n in lengths]


@SETTINGS
@given(data=st.data(), family=st.sampled_from(["gpt2", "llama", "gptj"]))
def test_shapes_and_identities(lm_of, data, family):
    lm = lm_of(family)
    prompts = data.draw(batches(lm.d_vocab))
    shortest = min(len(p) for p in prompts)
    positions = data.draw(st.one_of(
        st.none(),
        st.lists(st.integers(-shortest, shortest - 1), min_size=1, max_size=3, unique=True),
    ))
    valid_points = [p for p in BLOCK_POINTS if not (lm.parallel and p == "resid_mid")]
    points = data.draw(st.lists(st.sampled_from(valid_points), min_size=1, unique=True))
    layer = data.draw(st.integers(0, lm.n_layers - 1))
    full_name = interp.block_hook(layer, data.draw(st.sampled_from(valid_points)))

    run = lm.run(prompts, capture=points + [full_name], positions=positions)
    batch, seq = len(prompts), max(len(p) for p in prompts)
    n_pos = seq if positions is None else len(positions)
    assert run.tokens.shape == (batch, seq)
    assert run.logits.shape == (batch, n_pos, lm.d_vocab)
    for point in points:
        assert run.cache.stack(point).shape == (lm.n_layers, batch, n_pos, lm.d_model)
    assert run.cache[full_name].shape == (batch, n_pos, lm.d_model)

    # The same positions read from a full run: prompt-relative p means column pad + p.
    full = lm.run(prompts, capture=[full_name])
    for i, prompt in enumerate(prompts):
        pad = seq - len(prompt)
        if positions is None:  # every column is kept, padding included
            ours, cols = slice(pad, seq), list(range(pad, seq))
        else:
            ours, cols = slice(None), [pad + p if p >= 0 else seq + p for p in positions]
        torch.testing.assert_close(run.logits[i, ours], full.logits[i, cols], atol=1e-5, rtol=0)
        torch.testing.assert_close(run.cache[full_name][i, ours], full.cache[full_name][i, cols], atol=1e-6, rtol=0)
        alone = lm.run(prompt, capture=[full_name])
        torch.testing.assert_close(full.logits[i, pad:], alone.logits[0], atol=1e-5, rtol=0)


@SETTINGS
@given(data=st.data(), family=st.sampled_from(["gpt2", "llama"]))
def test_write_back_is_identity_and_replace_changes_downstream(lm_of, data, family):
    lm = lm_of(family)
    prompts = data.draw(batches(lm.d_vocab, max_len=8))
    layer = data.draw(st.integers(0, lm.n_layers - 1))
    point = data.draw(st.sampled_from(BLOCK_POINTS))
    name = interp.block_hook(layer, point)
    clean = lm.run(prompts, capture=[name])
    same = lm.run(prompts, interventions={name: clean.cache[name]})
    torch.testing.assert_close(same.logits, clean.logits, atol=1e-5, rtol=0)
    # Not a constant vector: LayerNorm subtracts the mean and would erase it.
    vector = 3.0 * torch.randn(lm.d_model, generator=torch.Generator().manual_seed(layer))
    shifted = lm.run(prompts, interventions={name: interp.add(vector, positions=-1)})
    last = clean.logits[:, -1]
    assert (shifted.logits[:, -1] - last).abs().amax(-1).min() > 1e-4  # every prompt's last token moved
