"""Models across devices: a model with blocks offloaded to disk (accelerate ``device_map`` with an
``offload_folder``, which works without a GPU) gives the single-device numbers for captures,
interventions, patching sweeps, multiple-choice scoring and lenses; bad maps fail before loading.

The oracle is the same weights loaded on one device (no accelerate hooks). Each test first
checks the offload really happened (weights on ``meta``, hooks attached), so it cannot pass by
loading everything on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import interp
from interp import devices
from interp.forward import forward
from interp.patching import sweep as sweep_module
from interp.patching.metrics import logit_diff
from probes.multiple_choice import score_items
from tasks.items import MCItem
from tests.conftest import random_model

TOL = dict(rtol=0, atol=1e-5)


def offload_map(n_layers: int, disk_head: bool) -> dict:
    """Odd blocks (and with ``disk_head`` the embeddings and final norm) on disk, the rest on the CPU."""
    out = {f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(n_layers)}
    out.update({"model.norm": "disk", "*": "cpu"})
    if disk_head:  # tied embeddings (the toy pair): both on disk, through one weight
        out.update({"model.embed_tokens": "disk", "lm_head": "disk"})
    else:
        out["lm_head"] = "disk"
    return out


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("random-llama")
    random_model("llama").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["toy", "llama"])
def pair(request, llama_dir, tmp_path_factory):
    """(single-device LM, the same weights with blocks offloaded to disk, prompts, two answer token ids)."""
    if request.param == "toy":
        source, tied = "toy/base", True
        prompts = (["The capital of Poland is", "The capital of Spain is"],
                   ["The capital of France is", "The capital of Italy is"])
    else:
        source, tied = str(llama_dir), False
        prompts = (["the capital of france is paris", "i plan to visit the city"],
                   ["the capital of poland is paris", "i plan to visit the country"])
    ref = interp.load(source)
    off = interp.load(source, device_map=offload_map(ref.n_layers, tied),
                      offload_folder=tmp_path_factory.mktemp("offload"))
    ids = ref.tokenizer(" Warsaw Paris" if request.param == "toy" else "warsaw paris")["input_ids"][-2:]
    return ref, off, prompts, ids


def assert_offloaded(lm) -> None:
    """The test's premise: some blocks' (and the unembedding's) weights live on disk, not in the modules."""
    assert devices.is_dispatched(lm.model)
    assert devices.offloaded(lm.unembed) and lm.unembed.weight.device.type == "meta"
    blocks = lm.model.get_submodule(lm.arch.blocks)
    assert devices.offloaded(blocks[1]) and not devices.offloaded(blocks[0])


def test_captures_and_logits_equal_single_device(pair):
    ref, off, (prompts, _), _ = pair
    assert_offloaded(off)
    assert off.device == torch.device("cpu")  # not meta: the embedding's execution device
    names = ["resid_pre", "attn_out", "mlp_out", "resid_post", "blocks.1.attn.hook_z", "ln_final.hook_normalized"]
    a, b = ref.run(prompts, capture=names), off.run(prompts, capture=names)
    torch.testing.assert_close(b.logits, a.logits, **TOL)
    assert set(a.cache.keys()) == set(b.cache.keys())
    for name in a.cache.keys():
        torch.testing.assert_close(b.cache[name], a.cache[name], **TOL)
    early = off.run(prompts, capture="blocks.1.hook_resid_post", logits=False)  # stops inside a disk block
    torch.testing.assert_close(early.cache["blocks.1.hook_resid_post"], a.cache["blocks.1.hook_resid_post"], **TOL)


def test_interventions_equal_single_device(pair):
    ref, off, (prompts, _), _ = pair
    torch.manual_seed(0)
    vector = torch.randn(ref.d_model)
    writes = {"blocks.1.hook_mlp_out": interp.add(vector, positions=[-1]),  # a disk block
              "blocks.2.hook_resid_pre": interp.replace(vector, positions=[-2]),
              "blocks.2.hook_attn_out": lambda act: act * 0.5}
    a = ref.run(prompts, capture=["resid_post"], interventions=writes)
    b = off.run(prompts, capture=["resid_post"], interventions=writes)
    assert not torch.allclose(a.logits, ref.run(prompts).logits, atol=1e-3)  # the writes did something
    torch.testing.assert_close(b.logits, a.logits, **TOL)
    for name in a.cache.keys():
        torch.testing.assert_close(b.cache[name], a.cache[name], **TOL)


@pytest.mark.parametrize("hook", ["resid_pre", "attn_out", "mlp_out"])
def test_patch_sweeps_equal_single_device(pair, hook, monkeypatch):
    ref, off, (corrupted, clean), (a_id, b_id) = pair
    metric = logit_diff(a_id, b_id)
    packed = []
    real = sweep_module.packed_chunk
    monkeypatch.setattr(sweep_module, "packed_chunk", lambda *a, **k: packed.append(1) or real(*a, **k))
    want = interp.patching.patch_sweep(ref, corrupted, clean, metric, hook=hook)
    n_ref = len(packed)
    got = interp.patching.patch_sweep(off, corrupted, clean, metric, hook=hook)
    # the fast paths (key/value prefix, packed runs, deferred unembedding) ran on both
    assert n_ref > 0 and len(packed) == 2 * n_ref
    assert sweep_module._LAST_FFN[off.model] and sweep_module._PLAIN_UNEMBED[off.model]
    assert float(want.abs().max()) > 0
    torch.testing.assert_close(got, want, **TOL)
    slow = interp.patching.patch_sweep(off, corrupted, clean, metric, hook=hook, kv_prefix=False, resume=False)
    torch.testing.assert_close(slow, want, **TOL)


def test_layer_and_head_patching_equal_single_device(pair):
    ref, off, (corrupted, clean), (a_id, b_id) = pair
    metric = logit_diff(a_id, b_id)
    torch.testing.assert_close(interp.patching.patch_heads(off, corrupted, clean, metric),
                               interp.patching.patch_heads(ref, corrupted, clean, metric), **TOL)
    torch.testing.assert_close(interp.patching.patch_layers(off, corrupted, clean, metric, hook="resid_post"),
                               interp.patching.patch_layers(ref, corrupted, clean, metric, hook="resid_post"), **TOL)


def test_mc_scoring_and_lenses_equal_single_device(pair):
    ref, off, (prompts, _), (a_id, _) = pair
    words = ref.tokenizer.convert_ids_to_tokens([a_id])[0].lstrip("Ġ▁")
    items = [MCItem("a", "t", prompts[0], [" " + words, " red blue", " the"], 0),
             MCItem("b", "t", prompts[1], [" one", " two three"], 1)]
    for method in ("kv", "naive"):
        want = score_items(ref, items, layers="all", method=method, batch_size=2)
        got = score_items(off, items, layers="all", method=method, batch_size=2)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.logprobs, w.logprobs, **TOL)
    resid = ref.run(prompts, capture="resid_post", positions=-1).cache.stack("resid_post")
    torch.testing.assert_close(interp.lens.readout(off, resid).top_probs, interp.lens.readout(ref, resid).top_probs, **TOL)
    torch.testing.assert_close(interp.lens.logit_lens(off, resid), interp.lens.logit_lens(ref, resid), **TOL)
    assert interp.lens.tuned.readout_hash(off) == interp.lens.tuned.readout_hash(ref)
    comps = ref.run(prompts, capture=["attn_out", "mlp_out"], positions=-1).cache
    parts = torch.stack([comps[f"blocks.{l}.hook_{p}"][:, 0] for l in range(ref.n_layers) for p in ("attn_out", "mlp_out")])
    targets = torch.tensor([a_id, a_id])
    want = interp.direct.direct_logit_attribution(ref, resid[-1, :, 0], parts, targets)
    got = interp.direct.direct_logit_attribution(off, resid[-1, :, 0], parts, targets)
    torch.testing.assert_close(got.contributions, want.contributions, **TOL)
    torch.manual_seed(1)
    vector = torch.randn(ref.d_model)
    for hook in ("mlp_out", "resid_pre"):  # block 1 is on disk
        want = interp.transplant.transplant(ref, prompts, vector, layer=1, hook=hook)
        got = interp.transplant.transplant(off, prompts, vector, layer=1, hook=hook)
        torch.testing.assert_close(got.final.logits, want.final.logits, **TOL)
        torch.testing.assert_close(got.layers.top_probs, want.layers.top_probs, **TOL)


def test_captures_and_logits_go_to_the_capture_device(pair):
    """The move to one device is real: ``meta`` (no data) stands in for a second device."""
    _, off, (prompts, _), _ = pair
    ids, mask, _ = off.to_tokens(prompts)
    points = off.resolve("resid_post")
    meta = torch.device("meta")
    out = forward(off, ids, mask, capture=points, capture_device=meta)
    assert out.logits.device == meta and all(t.device == meta for t in out.captures.values())
    assert off.output_device == torch.device("cpu")
    off.capture_device = meta
    try:
        run = off.run(prompts, capture="blocks.0.hook_mlp_out")
        assert run.logits.device == meta and run.cache["blocks.0.hook_mlp_out"].device == meta
    finally:
        off.capture_device = None


# -- errors: before any weight is read -----------------------------------------------------------
def test_bad_device_maps_raise_one_clear_error(tmp_path):
    layers = {f"model.layers.{i}": "cpu" for i in range(6)}
    rest = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    cases = [
        ({**layers, **rest, "model.layer.3": "cpu"}, "not a module of this llama model; did you mean model.layers.3"),
        ({**layers, "model.layers.2": "tpu", **rest}, "= 'tpu' is not a device of this machine; valid here: cpu"),
        ({**layers, "model.layers.2": "disk", **rest}, "needs an offload folder"),
        ({k: v for k, v in layers.items() if k not in ("model.layers.4", "model.layers.5")} | rest,
         "gives no device to model.layers.4, model.layers.5"),
        ({**layers, **rest, "lm_head": "disk"}, "ties its input and output embeddings"),
    ]
    for device_map, message in cases:
        with pytest.raises(interp.LoadError, match=message.replace("?", r"\?").replace("(", r"\(")):
            interp.load("toy/base", device_map=device_map, offload_folder=tmp_path if "offload" not in message else None)
    with pytest.raises(interp.LoadError, match="not both"):
        interp.load("toy/base", device="cpu", device_map="auto")
    with pytest.raises(interp.LoadError, match="capture_device 'tpu' is not available on this machine; valid here: cpu"):
        interp.load("toy/base", capture_device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_asked_without_gpu():
    with pytest.raises(interp.LoadError, match=r"device_map\['model.layers.0'\] = 'cuda:0' is not a device of this machine; valid here: cpu, disk"):
        interp.load("toy/base", device_map={"model.layers.0": "cuda:0", "*": "cpu"})
    with pytest.raises(interp.LoadError, match=r"= 1 is not a device of this machine"):
        interp.load("toy/base", device_map={"model.layers.0": 1, "*": "cpu"})
    with pytest.raises(interp.LoadError, match="capture_device 'cuda' is not available"):
        interp.load("toy/base", capture_device="cuda")


def test_parse_device_map_text_forms():
    assert devices.parse_device_map(None) is None
    assert devices.parse_device_map("auto") == "auto"
    assert devices.parse_device_map("model.layers.1-3=disk, lm_head=0,*=cpu") == {
        "model.layers.1": "disk", "model.layers.2": "disk", "model.layers.3": "disk", "lm_head": 0, "*": "cpu"}
    assert devices.parse_device_map('{"model.layers.0": "disk", "*": "cpu"}') == {"model.layers.0": "disk", "*": "cpu"}
    for bad, message in (("model.layers.3-1=disk", "runs backwards"), ("model.layers.0=", "not module=device"),
                         ("{oops", "not valid JSON")):
        with pytest.raises(interp.LoadError, match=message):
            devices.parse_device_map(bad)
