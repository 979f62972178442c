"""Activation harvesting (interp.dictionaries.harvest): alignment with lm.run captures of each
window run alone, BOS / padding exclusion, the pair's token check, resumption, disk == memory."""

from __future__ import annotations

import pytest
import torch
import transformers

import interp
from interp.dictionaries import DictionaryError
from interp.dictionaries import harvest as H
from tests.conftest import WORDS, random_model

TEXTS = [
    "the capital of france is paris",
    "q : what is the capital of poland ? a : warsaw",
    "i plan to visit the city of rome and the city of madrid",
    "the capital of spain is madrid . the capital of italy is rome",
    "sorry , i cannot help with that",
    "one two three four five six seven eight nine ten",
] * 3
LAYERS = [0, 2]


@pytest.fixture(scope="module")
def pair(tokenizer):
    base = interp.LM.from_hf(random_model("llama", seed=0), tokenizer, name="random-base")
    chat = interp.LM.from_hf(random_model("llama", seed=1), tokenizer, name="random-chat")
    return base, chat


def test_rows_are_lm_run_captures_of_each_window_alone(pair, tokenizer):
    acts = H.harvest_pair(pair, TEXTS, LAYERS, seq_len=16, batch_size=3, progress=False, shard_windows=2)
    bos = tokenizer.bos_token_id
    # Every word is one token and this tokenizer adds no BOS: the kept tokens are the words.
    words = [tokenizer.convert_tokens_to_ids(w) for text in TEXTS for w in text.split()]
    assert acts.tokens.tolist() == words
    assert acts.n_tokens == len(words) and bos not in acts.tokens.tolist()
    windows = H.token_windows(pair[0], TEXTS, 16)
    assert all(int(w[0]) == bos and len(w) <= 16 for w in windows)
    where = acts.where
    for member, lm in zip(("base", "chat"), pair):
        for layer in LAYERS:
            got = acts.member(member).layer(layer)
            for w in (0, 3, len(windows) - 1):  # the last window is shorter: padded in its batch
                ref = lm.run(windows[w], capture=f"blocks.{layer}.hook_resid_post").cache[f"blocks.{layer}.hook_resid_post"][0]
                rows = where[:, 0] == w
                torch.testing.assert_close(got[rows], ref[where[rows, 1]], atol=1e-5, rtol=1e-5)
                assert (where[rows, 1] > 0).all()  # position 0 is the window's BOS
    assert not torch.equal(acts.base(2), acts.chat(2))  # two models, two streams


def test_resid_pre_and_one_model(pair):
    one = H.harvest(pair[0], TEXTS[:4], [1], hook="resid_pre", seq_len=12, progress=False)
    both = H.harvest(pair[0], TEXTS[:4], [0], seq_len=12, progress=False)
    torch.testing.assert_close(one.layer(1), both.layer(0))  # resid_pre of block 1 = resid_post of block 0


def _reversed_tokenizer(folder) -> transformers.PreTrainedTokenizerFast:
    """conftest's word tokenizer with the words' ids reversed: the same texts, other ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + list(reversed(WORDS)))}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                bos_token="<bos>", eos_token="<eos>")


def test_mismatched_tokenizers_are_refused(pair, tmp_path):
    chat = interp.LM.from_hf(pair[1].model, _reversed_tokenizer(tmp_path), name="other-tokenizer")
    with pytest.raises(DictionaryError, match="tokenize the texts differently.*window 0, position 1"):
        H.harvest_pair((pair[0], chat), TEXTS, LAYERS, seq_len=16, progress=False)


def test_bad_input(pair):
    with pytest.raises(DictionaryError, match=r"out of range .* valid: 0..2"):
        H.harvest_pair(pair, TEXTS, [0, 3], seq_len=16, progress=False)
    with pytest.raises(DictionaryError, match="corpus is empty"):
        H.harvest_pair(pair, [], LAYERS, seq_len=16, progress=False)
    with pytest.raises(DictionaryError, match="context of 48"):
        H.harvest_pair(pair, TEXTS, LAYERS, seq_len=64, progress=False)
    with pytest.raises(DictionaryError, match="valid: float32, bfloat16, float16"):
        H.harvest_pair(pair, TEXTS, LAYERS, dtype="int8", progress=False)
    with pytest.raises(DictionaryError, match="valid: resid_post, resid_pre"):
        H.harvest_pair(pair, TEXTS, LAYERS, hook="mlp_out", progress=False)


def test_disk_equals_memory_and_dtype(pair, tmp_path):
    mem = H.harvest_pair(pair, TEXTS, LAYERS, seq_len=16, batch_size=3, progress=False, shard_windows=2)
    disk = H.harvest_pair(pair, TEXTS, LAYERS, seq_len=16, batch_size=3, progress=False, shard_windows=2, out=tmp_path / "a")
    assert disk.members["base"]._shards[0].acts is None  # read from disk, not held
    assert mem.members["base"].n_shards == disk.members["base"].n_shards > 2
    for a, b in zip(mem.batches(7, shuffle=True, seed=3), disk.batches(7, shuffle=True, seed=3)):
        assert a.keys() == b.keys() == {"base", "chat", "tokens", "index"}
        for k in a:
            assert torch.equal(a[k], b[k])
        assert torch.equal(a["tokens"], mem.tokens[a["index"]]) and torch.equal(a["chat"][:, 1], mem.chat(2)[a["index"]])
    index = next(mem.batches(7, shuffle=True, seed=3))["index"]
    assert (index.diff() != 1).any()  # shuffled within the shard too, not only the shards' order
    shuffled = torch.cat([b["tokens"] for b in mem.batches(7, shuffle=True, seed=3)])
    assert not torch.equal(shuffled, mem.tokens) and sorted(shuffled.tolist()) == sorted(mem.tokens.tolist())
    assert torch.equal(torch.cat([b["chat"] for b in mem.batches(5, shuffle=False)]), mem.members["chat"].stack())
    half = H.harvest_pair(pair, TEXTS, LAYERS, seq_len=16, batch_size=3, progress=False, out=tmp_path / "b",
                          dtype="bfloat16")
    assert half.base(2).dtype == torch.bfloat16
    assert torch.equal(half.base(2), mem.base(2).to(torch.bfloat16))


def test_interrupted_harvest_resumes_to_the_same_result(pair, tmp_path, monkeypatch):
    kwargs = dict(seq_len=16, batch_size=2, progress=False, shard_windows=2)
    whole = H.harvest_pair(pair, TEXTS, LAYERS, out=tmp_path / "whole", **kwargs)
    n_shards = whole.members["base"].n_shards
    assert n_shards >= 3

    real_write, written = H._Folder.write, []

    def write_then_die(self, member, k, shard):
        if written:
            raise KeyboardInterrupt  # killed after the first shard was on disk
        written.append(k)
        return real_write(self, member, k, shard)

    monkeypatch.setattr(H._Folder, "write", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        H.harvest_pair(pair, TEXTS, LAYERS, out=tmp_path / "resumed", **kwargs)
    monkeypatch.setattr(H._Folder, "write", real_write)
    assert sorted(p.name for p in (tmp_path / "resumed" / "base").glob("*.safetensors")) == ["shard_00000.safetensors"]

    computed = []
    real_run = H._run_shard
    monkeypatch.setattr(H, "_run_shard", lambda lm, windows, first, *a: computed.append(first) or real_run(lm, windows, first, *a))
    resumed = H.harvest_pair(pair, TEXTS, LAYERS, out=tmp_path / "resumed", **kwargs)
    assert len(computed) == 2 * n_shards - 1  # the finished shard was not recomputed
    for member in ("base", "chat"):
        assert torch.equal(resumed.members[member].stack(), whole.members[member].stack())
    assert torch.equal(resumed.where, whole.where)

    computed.clear()  # a finished harvest: nothing recomputed
    H.harvest_pair(pair, TEXTS, LAYERS, out=tmp_path / "resumed", **kwargs)
    assert computed == []
    with pytest.raises(DictionaryError, match="another configuration .*differs in: seq_len"):
        H.harvest_pair(pair, TEXTS, LAYERS, out=tmp_path / "resumed", **{**kwargs, "seq_len": 12})
    with pytest.raises(DictionaryError, match="differs in: n_texts, texts_sha256"):
        H.harvest_pair(pair, TEXTS[:-1], LAYERS, out=tmp_path / "resumed", **kwargs)


def test_a_registry_pair_skips_loading_a_finished_member(tmp_path, monkeypatch):
    """The toy pair through interp.Pair: members load one at a time, and not at all once done."""
    texts = TEXTS[:3]
    first = H.harvest_pair("toy", texts, [1], seq_len=32, progress=False, out=tmp_path)
    assert first.n_tokens > 0 and interp.load("toy/base").tokenizer.bos_token_id not in first.tokens.tolist()
    loaded = []
    real_load = interp.Pair.load
    monkeypatch.setattr(interp.Pair, "load", lambda self, member: loaded.append(member) or real_load(self, member))
    again = H.harvest_pair("toy", texts, [1], seq_len=32, progress=False, out=tmp_path)
    assert loaded == [] and torch.equal(again.chat(1), first.chat(1))

