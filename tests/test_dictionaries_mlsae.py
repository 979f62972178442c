"""TopK SAE and multi-layer SAE (interp.dictionaries.sae / mlsae / metrics): planted-dictionary
recovery, AuxK reviving dead latents, per-layer standardisation, metrics against hand
computations, splice-back, save/load."""

from __future__ import annotations

import math

import pytest
import torch

import interp
from interp.dictionaries import DictionaryError
from interp.dictionaries import harvest as H
from interp.dictionaries.metrics import evaluate, mlsae_report, splice_delta
from interp.dictionaries.mlsae import MLSAE, train_mlsae
from interp.dictionaries.sae import SAEConfig, TopKSAE, planted, recovered, train_sae
from tests.conftest import random_model

FAST = dict(n_latents=128, k=3, steps=200, batch_size=256, lr=3e-3, dead_after=4000)


def test_topk_sae_recovers_a_planted_dictionary():
    x, atoms = planted(8000, 32, 64, 3, seed=0)
    sae, history = train_sae(x, SAEConfig(**FAST))
    assert recovered(atoms, sae.W_dec.detach(), 0.9) >= 0.9
    assert history[-1]["fvu"] < 0.2 < history[0]["fvu"]
    # The unit-norm decoder constraint holds after training.
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(128))


def _layered(n: int = 8000, seed: int = 0):
    """The planted data seen at three 'layers' of very different scale and offset."""
    x, atoms = planted(n, 32, 64, 3, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    scales, offsets = torch.tensor([0.1, 1.0, 30.0]), torch.randn(3, 32, generator=gen) * torch.tensor([1.0, 5.0, 50.0]).view(3, 1)
    return x.unsqueeze(1) * scales.view(1, 3, 1) + offsets, atoms


def test_mlsae_recovers_atoms_shared_by_layers_of_different_scale():
    acts, atoms = _layered()
    model, _ = train_mlsae(acts, SAEConfig(**FAST), layers=[2, 4, 6])
    assert model.layers == (2, 4, 6)
    assert recovered(atoms, model.sae.W_dec.detach(), 0.9) >= 0.9
    ev = evaluate(model, acts, batch_size=1000)
    # Per-layer standardisation: every layer is reconstructed, the small one included.
    assert float(ev.fvu.max()) < 0.2, ev.fvu


def test_auxk_revives_dead_latents():
    """Half the latents start in directions the data never takes: without AuxK they are never in
    the top k, get no gradient and stay dead; AuxK trains them on the residual error."""
    x, _ = planted(6000, 16, 32, 3, seed=2)
    x = torch.cat([x, torch.zeros(6000, 16)], 1) + 0.05 * torch.randn(6000, 32, generator=torch.Generator().manual_seed(3))

    def alive_after(auxk: int) -> int:
        config = SAEConfig(**{**FAST, "n_latents": 64, "steps": 400, "auxk": auxk, "dead_after": 2000})
        sae = TopKSAE(32, config)
        with torch.no_grad():  # latents 32..63: encoder and decoder rows in the empty half
            rows = torch.randn(32, 32, generator=torch.Generator().manual_seed(4))
            rows[:, :16] = 0
            rows /= rows.norm(dim=-1, keepdim=True)
            sae.W_dec[32:] = rows
            sae.W_enc[:, 32:] = rows.T
        sae, _ = train_sae(x, config, sae=sae)
        with torch.no_grad():
            return int((sae.encode(x) > 0).any(0).sum())

    without, with_auxk = alive_after(0), alive_after(16)
    assert without <= 34  # the planted half, no more
    assert with_auxk >= without + 5  # 8 of the 32 revived in 400 steps at Gao et al.'s coefficient


def test_metrics_equal_hand_computations():
    acts, _ = _layered(600, seed=5)
    model, _ = train_mlsae(acts, SAEConfig(**{**FAST, "steps": 30}), layers=[1, 3, 5])
    ev = evaluate(model, acts, batch_size=77)  # batches that do not divide the stream
    with torch.no_grad():
        out = model(acts)
        z = model.latents(acts)  # [n, layer, n_latents]
    x = acts.double()
    fvu = ((out.recon.double() - x) ** 2).sum((0, 2)) / ((x - x.mean(0)) ** 2).sum((0, 2))
    torch.testing.assert_close(ev.fvu.double(), fvu, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ev.l0.double(), (z > 0).sum(-1).double().mean(0))
    assert float(ev.l0.max()) <= 3
    # Layer statistics by a loop over tokens and latents.
    layers = [1, 3, 5]
    for f in [int(i) for i in z.sum((0, 1)).argsort(descending=True)[:5]]:
        dists, within = [], []
        for t in range(z.shape[0]):
            a = z[t, :, f].double()
            if a.sum() > 0:
                p = a / a.sum()
                mean = sum(p[j] * layers[j] for j in range(3))
                within.append(sum(p[j] * (layers[j] - mean) ** 2 for j in range(3)))
                dists.append(p)
        pooled = torch.stack(dists).mean(0)
        mean = sum(pooled[j] * layers[j] for j in range(3))
        assert int(ev.active_tokens[f]) == len(dists)
        assert math.isclose(float(ev.mean_layer[f]), float(mean), rel_tol=1e-9)
        assert math.isclose(float(ev.var_over_tokens[f]), float(sum(pooled[j] * (layers[j] - mean) ** 2 for j in range(3))),
                            rel_tol=1e-7, abs_tol=1e-12)
        assert math.isclose(float(ev.var_within[f]), float(torch.stack(within).mean()), rel_tol=1e-7, abs_tol=1e-12)
    never = z.sum((0, 1)) == 0
    assert math.isclose(ev.dead_fraction, float(never.double().mean()))


def test_save_load_round_trip(tmp_path):
    acts, _ = _layered(600)
    model, _ = train_mlsae(acts, SAEConfig(**{**FAST, "steps": 20, "standardize": "token"}), layers=[0, 1, 2])
    model.save(tmp_path / "mlsae")
    back = MLSAE.load(tmp_path / "mlsae")
    assert back.config == model.config and back.layers == model.layers
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    with torch.no_grad():
        assert torch.equal(back(acts).recon, model(acts).recon)
    with pytest.raises(DictionaryError, match="no saved dictionary"):
        MLSAE.load(tmp_path / "nothing")
    with pytest.raises(DictionaryError, match="unknown config fields"):
        SAEConfig.from_dict({"k": 3, "topk": 3})


def test_bad_config_and_members():
    with pytest.raises(DictionaryError, match="valid: layer, token, none"):
        SAEConfig(standardize="per-layer")
    with pytest.raises(DictionaryError, match="exceeds n_latents"):
        SAEConfig(n_latents=8, k=16)


@pytest.fixture(scope="module")
def tiny_pair(tokenizer):
    base = interp.LM.from_hf(random_model("llama", seed=0), tokenizer, name="random-base")
    chat = interp.LM.from_hf(random_model("llama", seed=1), tokenizer, name="random-chat")
    return base, chat


TEXTS = ["the capital of france is paris", "q : what is the capital of poland ? a : warsaw",
         "i plan to visit the city of rome", "sorry , i cannot help with that"] * 4


def test_splice_back(tiny_pair):
    lm = tiny_pair[0]
    identity = splice_delta(lm, TEXTS, lambda x, layer: x.clone(), [0, 2], seq_len=16, batch_size=3)
    assert all(r["delta"] == 0.0 for r in identity.values())
    # The clean loss is the HF model's own next-token loss on each window alone.
    windows = H.token_windows(lm, TEXTS, 16)
    total, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = lm.model(input_ids=w.unsqueeze(0)).logits[0]
            total += float(torch.nn.functional.cross_entropy(logits[:-1], w[1:], reduction="sum"))
            count += len(w) - 1
    assert math.isclose(identity[0]["loss_clean"], total / count, rel_tol=1e-5)
    zeroed = splice_delta(lm, TEXTS, lambda x, layer: torch.zeros_like(x), [0, 2], seq_len=16, batch_size=3)
    # A random model's predictions are nearly uniform, so any change moves the loss a little only.
    assert all(abs(r["delta"]) > 1e-3 for r in zeroed.values())


def test_train_on_pair_members_and_report(tiny_pair):
    acts = H.harvest_pair(tiny_pair, TEXTS, [0, 1, 2], seq_len=16, batch_size=4, progress=False)
    config = SAEConfig(n_latents=64, k=4, steps=20, batch_size=32)
    models = {m: train_mlsae(acts, config, member=m)[0] for m in ("base", "chat", "both")}
    # Each member's standardisation comes from its own stream; "both" from both.
    torch.testing.assert_close(models["base"].mean, acts.members["base"].stack().mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(models["both"].mean, models["base"].mean)
    with pytest.raises(DictionaryError, match="valid: base, chat, both"):
        train_mlsae(acts, config, member="rl")
    rows = mlsae_report(models["both"], acts, splice={"base": splice_delta(tiny_pair[0], TEXTS, models["both"], [1], seq_len=16)})
    kinds = {r["kind"] for r in rows}
    assert kinds == {"layer", "summary", "latent"}
    layer_rows = [r for r in rows if r["kind"] == "layer"]
    assert len(layer_rows) == 6 and "loss_delta" in next(r for r in layer_rows if r["member"] == "base" and r["layer"] == 1)
    latents = [r for r in rows if r["kind"] == "latent"]
    assert len(latents) == 64
    for r in latents:
        if r["active_tokens_base"] and r["active_tokens_chat"]:
            assert math.isclose(r["layer_shift"], r["mean_layer_chat"] - r["mean_layer_base"])


def test_a_pair_of_two_widths_harvests_but_cannot_share_one_mlsae(tiny_pair, tokenizer):
    import transformers

    torch.manual_seed(2)
    config = transformers.LlamaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=64, vocab_size=tiny_pair[0].d_vocab, max_position_embeddings=48,
                                      bos_token_id=2, eos_token_id=3)
    narrow = interp.LM.from_hf(transformers.LlamaForCausalLM(config).eval(), tokenizer, name="narrow-chat")
    acts = H.harvest_pair((tiny_pair[0], narrow), TEXTS, [1], seq_len=16, progress=False)
    assert acts.base(1).shape[1] == 64 and acts.chat(1).shape[1] == 32
    small = SAEConfig(n_latents=16, k=2, steps=2, batch_size=16)
    assert train_mlsae(acts, small, member="chat")[0].d_model == 32
    with pytest.raises(DictionaryError, match="member='both' needs one width, but base has d_model=64 and chat 32"):
        train_mlsae(acts, small, member="both")
