"""interp.diff: weight statistics against hand computations on two tiny saved models that differ
in known entries (local folders, and hub ids read from an offline hub cache, one file or
sharded); linear CKA's properties and a hand value; KL and activation diff of a model
with itself; bad pairs."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers

import interp
from interp.adapters import ARCHITECTURES
from interp.diff import PairMismatch, WeightMismatch, collect, compare, kl, linear_cka, locate, weight_diff
from tests.conftest import PROMPTS, random_model


def _save(model, folder, shard_size=None):
    model.save_pretrained(folder, **({"max_shard_size": shard_size} if shard_size else {}))
    return folder


@pytest.fixture(scope="module")
def pair_dirs(tmp_path_factory):
    """A tiny Llama and a copy with known edits: 3 entries of layer 1's q_proj (one by 1e-6, below
    bf16's resolution of a weight near 1), all of layer 0's down_proj scaled by 1.5, the final norm
    untouched. The chat copy is sharded (an index file), the base is one file."""
    root = tmp_path_factory.mktemp("wdiff")
    base = random_model("llama", seed=1)
    chat = random_model("llama", seed=1)
    with torch.no_grad():
        q = chat.model.layers[1].self_attn.q_proj.weight
        q[0, 0] = 1.0
        base.model.layers[1].self_attn.q_proj.weight[0, 0] = 1.0
        q[0, 0] += 1e-6
        q[2, 5] += 0.5
        q[7, 3] -= 0.25
        chat.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    return _save(base, root / "base"), _save(chat, root / "chat", shard_size="20KB"), base, chat


def test_weight_stats_equal_a_hand_computation(pair_dirs):
    base_dir, chat_dir, base, chat = pair_dirs
    assert (chat_dir / "model.safetensors.index.json").is_file()  # the sharded path is exercised
    rows = {d.name: d for d in weight_diff(base_dir, chat_dir, top_k=3)}
    q = rows["model.layers.1.self_attn.q_proj.weight"]
    wb = base.model.layers[1].self_attn.q_proj.weight.detach().double()
    assert (q.module, q.layer, q.param) == ("attn_q", 1, "weight")
    assert q.n_changed == 3 and q.n_differ_fp32 == 3 and q.n_differ_bf16 == 2  # 1 + 1e-6 rounds to 1 in bf16
    assert q.frac_changed == pytest.approx(3 / wb.numel())
    hand = math.sqrt(0.5**2 + 0.25**2 + (1e-6) ** 2) / float(wb.norm())
    assert q.rel_change == pytest.approx(hand, rel=1e-5)
    # a change in two entries of distinct rows and columns: singular values |0.5|, |0.25|, 1e-6
    assert q.singular_values[:2] == pytest.approx((0.5, 0.25), rel=1e-5)
    p = torch.tensor([0.5, 0.25, 1e-6], dtype=torch.float64)
    p = p / p.sum()
    assert q.effective_rank == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-4)
    assert q.stable_rank == pytest.approx((0.5**2 + 0.25**2 + 1e-12) / 0.5**2, rel=1e-5)
    down = rows["model.layers.0.mlp.down_proj.weight"]
    assert down.rel_change == pytest.approx(0.5, rel=1e-6)  # 1.5 W - W = 0.5 W
    assert down.effective_rank > 10 and down.module == "mlp.down_proj"
    norm = rows["model.norm.weight"]
    assert (norm.module, norm.layer, norm.n_changed, norm.rel_change) == ("final_norm", None, 0, 0.0)
    untouched = [d for n, d in rows.items() if n not in (q.name, down.name)]
    assert all(d.n_changed == 0 and d.abs_change == 0 for d in untouched)
    assert {d.module for d in untouched} >= {"embed", "attn_k", "attn_v", "attn_o", "mlp.gate_proj", "input_layernorm"}


def test_tolerance_counts_only_larger_changes(pair_dirs):
    base_dir, chat_dir, *_ = pair_dirs
    name = "model.layers.1.self_attn.q_proj.weight"
    (q,) = weight_diff(base_dir, chat_dir, tol=0.3, names=[name])
    assert q.n_changed == 1  # only the +0.5 entry


def test_locate_reads_the_adapter_rows():
    assert locate("transformer.h.2.attn.c_attn.weight", ARCHITECTURES["gpt2"]) == ("attn_qkv", 2, "weight")
    assert locate("transformer.wpe.weight", ARCHITECTURES["gpt2"]) == ("pos_embed", None, "weight")
    assert locate("lm_head.weight", ARCHITECTURES["llama"]) == ("unembed", None, "weight")
    assert locate("gpt_neox.layers.0.attention.dense.bias", ARCHITECTURES["gpt_neox"]) == ("attn_o", 0, "bias")


def test_mismatched_checkpoints_raise(tmp_path, pair_dirs):
    base_dir, *_ = pair_dirs
    other = random_model("llama", seed=1)
    other.config.intermediate_size = 96
    small = transformers.AutoModelForCausalLM.from_config(other.config)
    _save(small, tmp_path / "small")
    with pytest.raises(WeightMismatch, match="differ in shape.*mlp"):
        next(weight_diff(base_dir, tmp_path / "small"))
    _save(random_model("gpt2"), tmp_path / "gpt2")
    with pytest.raises(WeightMismatch, match="only in base"):
        next(weight_diff(base_dir, tmp_path / "gpt2"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps({}))
    with pytest.raises(interp.LoadError, match="no model.safetensors"):
        next(weight_diff(base_dir, tmp_path / "empty"))
    with pytest.raises(interp.LoadError, match="no model folder"):
        next(weight_diff(base_dir, tmp_path / "missing"))


def _into_hub_cache(cache, repo_id, folder):
    """Put a saved model folder into a hub cache as huggingface_hub lays it out: each file a blob
    named by its hash, the snapshot of one commit linking them, ``refs/main`` naming the commit."""
    import hashlib
    import shutil
    from pathlib import Path

    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    for sub in (repo / "blobs", snapshot, repo / "refs"):
        sub.mkdir(parents=True)
    for f in sorted(Path(folder).iterdir()):
        blob = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / blob)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache, offline (the constants too: huggingface_hub reads the variables at import)."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    for name, env, value in (("HF_HUB_CACHE", str(cache), str(cache)), ("HF_HUB_OFFLINE", "1", True)):
        monkeypatch.setenv(name, env)
        monkeypatch.setattr(constants, name, value)
    return cache


def test_hub_ids_read_from_the_offline_cache(pair_dirs, offline_hub):
    import pandas as pd

    base_dir, chat_dir, *_ = pair_dirs
    _into_hub_cache(offline_hub, "org/base", base_dir)
    _into_hub_cache(offline_hub, "org/chat", chat_dir)  # sharded: an index and its shards
    from interp.diff import tensor_files

    shards = set(tensor_files("org/chat").values())
    assert len(shards) > 1 and all(offline_hub in p.parents for p in shards)
    local = pd.DataFrame([d.row(3) for d in weight_diff(base_dir, chat_dir, top_k=3)])
    hub = pd.DataFrame([d.row(3) for d in weight_diff("org/base", "org/chat", top_k=3)])
    pd.testing.assert_frame_equal(hub, local)  # and local equals the hand computation (above)
    q = hub.set_index("name").loc["model.layers.1.self_attn.q_proj.weight"]
    assert (q["n_changed"], q["n_differ_bf16"]) == (3, 2)
    with pytest.raises(interp.LoadError, match=r"hub id 'org/missing' is not in the local hub cache .*HF_HUB_OFFLINE "
                                               r"is set: download it once online \(hf download org/missing"):
        next(weight_diff("org/missing", "org/chat"))


# -- CKA ------------------------------------------------------------------------------------------
def test_cka_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = x @ torch.randn(8, 6, generator=g, dtype=torch.float64) + 0.5 * torch.randn(50, 6, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    assert 0.1 < base < 0.99
    assert linear_cka(x @ q, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, 3.7 * y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(0.2 * x @ q + 5.0, y) == pytest.approx(base, abs=1e-10)  # centring removes the shift
    assert linear_cka(x, torch.randn(50, 6, generator=g, dtype=torch.float64)) < 0.5


def test_cka_hand_value():
    # x = [1,2,3] centred [-1,0,1]; y = [1,3,2] centred [-1,1,0]; linear CKA of 1-D sides is the
    # squared correlation: (<xc, yc>)^2 / (|xc|^2 |yc|^2) = 1 / 4.
    x = torch.tensor([[1.0], [2.0], [3.0]])
    y = torch.tensor([[1.0], [3.0], [2.0]])
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-12)


def test_kl_hand_value_and_self():
    p = torch.tensor([0.5, 0.5, 0.0]).log()
    q = torch.tensor([0.25, 0.25, 0.5]).log()
    assert float(kl(p, q)) == pytest.approx(math.log(2), abs=1e-6)  # the zero entry of p adds nothing
    assert float(kl(q, q)) == 0.0


# -- activations ----------------------------------------------------------------------------------
def test_activation_diff_of_a_model_with_itself(lm_of):
    lm = lm_of("llama")
    a, b = collect(lm, PROMPTS, batch_size=2), collect(lm, PROMPTS, batch_size=3)  # other padding, same numbers
    rows = compare(a, b)
    assert {r["positions"] for r in rows} >= {"all", "0", "1-3", "4-15"}
    assert len({r["layer"] for r in rows}) == lm.n_layers
    for r in rows:
        assert r["rel_diff"] < 1e-5 and r["cosine"] == pytest.approx(1, abs=1e-5)
        assert abs(r["kl_base_chat"]) < 1e-6 and abs(r["kl_chat_base"]) < 1e-6
        if r["n_tokens"] > 1:
            assert r["cka"] == pytest.approx(1, abs=1e-5)


def test_activation_diff_sees_a_changed_model(lm_of, tokenizer):
    lm = lm_of("llama")
    other = random_model("llama", seed=0)
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight.mul_(3.0)
    rows = compare(collect(lm, PROMPTS), collect(interp.LM.from_hf(other, tokenizer), PROMPTS))
    whole = {r["layer"]: r for r in rows if r["positions"] == "all"}
    assert whole[0]["rel_diff"] < 1e-5  # block 0 is the same
    assert whole[1]["rel_diff"] > 0.01 and whole[1]["kl_base_chat"] > 0 and whole[1]["cosine"] < 1
    n = sum(len(lm.to_tokens([p])[0][0]) for p in PROMPTS)
    assert whole[0]["n_tokens"] == n


def test_max_tokens_caps_and_counts(lm_of):
    lm = lm_of("llama")
    c = collect(lm, PROMPTS, max_tokens=5)
    n = sum(len(lm.to_tokens([p])[0][0]) for p in PROMPTS)
    assert c.resid.shape[1] == 5 and c.logprobs.shape[:2] == (lm.n_layers, 5) and c.n_dropped == n - 5


def test_bad_pairs_raise(lm_of):
    import dataclasses

    lm = lm_of("llama")
    a = collect(lm, PROMPTS)
    b = dataclasses.replace(a, vocab={**a.vocab, "zebra": 999})
    with pytest.raises(PairMismatch, match="tokenizers differ.*zebra"):
        compare(a, b)
    with pytest.raises(PairMismatch, match="layers of d_model"):
        compare(a, dataclasses.replace(a, resid=a.resid[:-1], logprobs=a.logprobs[:-1]))
    with pytest.raises(PairMismatch, match="tokenised the texts differently"):
        compare(a, collect(lm, PROMPTS[:2]))


def test_study_weights_part_reads_hub_ids(pair_dirs, offline_hub, tmp_path):
    import pandas as pd

    from studies.model_diff import parse_args, run_study

    base_dir, chat_dir, *_ = pair_dirs
    _into_hub_cache(offline_hub, "org/base", base_dir)
    _into_hub_cache(offline_hub, "org/chat", chat_dir)
    tables = {}
    for name, (base, chat) in {"hub": ("org/base", "org/chat"), "local": (base_dir, chat_dir)}.items():
        run_study(parse_args(["--base", str(base), "--chat", str(chat), "--parts", "weights", "--no-figures",
                              "--out", str(tmp_path / name)]))
        tables[name] = pd.read_csv(tmp_path / name / "weights.csv")
    pd.testing.assert_frame_equal(tables["hub"], tables["local"])
