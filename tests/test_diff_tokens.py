"""interp.diff token-level readouts: token shift (URIAL), activation difference lens, logit diff
amplification, against hand computations on tiny random pairs."""

import copy

import pytest
import torch
import torch.nn.functional as F
import transformers

import interp
from interp.diff import adl, amplify, token_shift as ts
from tests.conftest import CONFIGS, PROMPTS, random_model

NEW = 6


def _perturbed(model, scale: float, seed: int):
    """A copy of ``model`` with every weight nudged: ranks of its greedy tokens under the original
    then spread over 1, 2-3 and > 3, so every shift class occurs."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=gen))
    return other


@pytest.fixture(scope="module")
def pair(tokenizer):
    base_model = random_model("llama", seed=0)
    chat_model = _perturbed(base_model, 0.6, seed=1)
    return (interp.LM.from_hf(base_model, tokenizer, name="base"),
            interp.LM.from_hf(chat_model, tokenizer, name="chat"))


PROMPT_SET = PROMPTS + ["the capital of spain is madrid and the capital of italy is", "we plan to visit berlin"]


@torch.no_grad()
def _hand_last_logits(model, ids):
    return model(input_ids=torch.tensor([ids])).logits[0, -1].float()


def _hf_greedy(lm, prompt: str, n: int) -> list[int]:
    """Plain HF decoding, one prompt at a time, no cache, stopping after EOS (kept)."""
    ids = lm.tokenizer(prompt)["input_ids"]
    out = []
    for _ in range(n):
        token = int(_hand_last_logits(lm.model, ids + out).argmax())
        out.append(token)
        if token == lm.tokenizer.eos_token_id:
            break
    return out


def test_shift_classes_ranks_and_kl_match_a_hand_loop(pair):
    base, chat = pair
    responses = ts.chat_responses(chat, PROMPT_SET, kinds=["k"] * len(PROMPT_SET), max_new_tokens=NEW,
                                  modes=("greedy", "sample"), seed=3, batch_size=3)
    rows = ts.score_shift(base, responses, batch_size=2)
    assert len(rows) == sum(len(r.response) for r in responses)
    it = iter(rows)
    seen = set()
    for r in responses:
        if r.mode == "greedy":  # the greedy answer is plain HF greedy decoding
            assert r.response == _hf_greedy(chat, PROMPT_SET[int(r.prompt_id)], NEW)
        for t, token in enumerate(r.response):
            row = next(it)
            prefix = r.prompt + r.response[:t]
            b = _hand_last_logits(base.model, prefix).tolist()
            rank = 1 + sum(1 for v in range(len(b)) if b[v] > b[token])  # strictly greater: ties favour the token
            cls = "unshifted" if rank == 1 else "marginal" if rank in (2, 3) else "shifted"
            c_log = _hand_last_logits(chat.model, prefix).log_softmax(-1)
            b_log = torch.tensor(b).log_softmax(-1)
            kl = float(F.kl_div(b_log, c_log, log_target=True, reduction="sum"))  # KL(chat || base)
            assert (row["prompt_id"], row["mode"], row["position"], row["token_id"]) == (r.prompt_id, r.mode, t, token)
            assert row["base_rank"] == rank and row["shift_class"] == cls
            assert row["kl"] == pytest.approx(kl, abs=1e-4)
            assert row["token"] == chat.tokenizer.convert_ids_to_tokens(token)
            seen.add(cls)
    assert seen == set(ts.SHIFT_CLASSES)  # the pair exercises every class boundary


def test_ties_count_in_the_tokens_favour():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]])
    assert ts.base_ranks(logits, torch.tensor([2])).item() == 1
    assert ts.base_ranks(logits, torch.tensor([0])).item() == 4
    assert [ts.shift_class(r) for r in (1, 2, 3, 4)] == ["unshifted", "marginal", "marginal", "shifted"]


def test_a_model_against_itself_is_unshifted_with_zero_kl(pair):
    _, chat = pair
    greedy = ts.score_shift(chat, ts.chat_responses(chat, PROMPT_SET, max_new_tokens=NEW))
    assert greedy and all(r["base_rank"] == 1 and r["shift_class"] == "unshifted" for r in greedy)
    sampled = ts.score_shift(chat, ts.chat_responses(chat, PROMPT_SET, max_new_tokens=NEW, modes=("sample",)))
    assert max(abs(r["kl"]) for r in greedy + sampled) < 1e-6
    assert any(r["base_rank"] > 1 for r in sampled)  # sampling leaves the top-1: the KL check is not trivial


def test_summaries_count_rows():
    rows = [{"mode": "greedy", "prompt_kind": kind, "position": pos, "token": tok, "shift_class": cls, "kl": kl}
            for kind, pos, tok, cls, kl in [("harmful", 0, "Sorry", "shifted", 2.0), ("harmful", 1, ",", "unshifted", 0.0),
                                            ("harmful", 0, "Sorry", "marginal", 1.0), ("plain", 0, "Paris", "unshifted", 0.5)]]
    frac = {(f["prompt_kind"], f["position"]): f for f in ts.fractions_by_position(rows)}
    assert frac[("harmful", 0)]["shifted"] == 0.5 and frac[("harmful", 0)]["marginal"] == 0.5
    assert frac[("harmful", "all")]["n"] == 3 and frac[("harmful", "all")]["mean_kl"] == pytest.approx(1.0)
    assert frac[("plain", "all")]["unshifted"] == 1.0
    top = ts.most_shifted_tokens(rows)
    assert [(t["prompt_kind"], t["token"], t["n"], t["n_shifted"]) for t in top] == [("harmful", "Sorry", 2, 1)]


# -- activation difference lens ------------------------------------------------------------------
LAYER = 1


def offset_models(layer: int = LAYER):
    """Two copies of one random Llama whose only difference is block ``layer``'s FFN output bias,
    v in chat and 0 in base: chat's resid_post at ``layer`` is base's + v at every position,
    exactly. Returns ``(base_model, chat_model, v)``."""
    config = CONFIGS["llama"]()
    config.mlp_bias = True
    torch.manual_seed(0)
    base_model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for block in base_model.model.layers:
            for proj in (block.mlp.gate_proj, block.mlp.up_proj, block.mlp.down_proj):
                proj.bias.zero_()
    chat_model = copy.deepcopy(base_model)
    v = torch.randn(config.hidden_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        chat_model.model.layers[layer].mlp.down_proj.bias.copy_(v)
    return base_model, chat_model, v


@pytest.fixture(scope="module")
def offset_pair(tokenizer):
    base_model, chat_model, v = offset_models()
    return (interp.LM.from_hf(base_model, tokenizer, name="base"), interp.LM.from_hf(chat_model, tokenizer, name="chat"), v)


def test_adl_recovers_a_known_residual_offset(offset_pair):
    base, chat, v = offset_pair
    texts = PROMPT_SET + ["one two three four five six"]
    b, c = adl.mean_resid(base, texts, k=3, batch_size=2), adl.mean_resid(chat, texts, k=3, batch_size=4)
    assert (b.n_texts, b.n_dropped) == (len(texts), 0)
    vectors = adl.adl_vectors(b, c)
    assert torch.allclose(vectors[LAYER], v, atol=1e-5)
    assert vectors[:LAYER].abs().max() < 1e-6  # blocks before LAYER are the same model
    assert (vectors[LAYER + 1:] - v).abs().max() > 1e-2  # later blocks transform the offset
    # the mean itself: resid_post of one text alone, by HF's own hidden states (block l -> hidden_states[l + 1])
    with torch.no_grad():
        hidden = torch.stack([base.model(input_ids=torch.tensor([base.tokenizer(t)["input_ids"]]),
                                         output_hidden_states=True).hidden_states[LAYER + 1][0, 1:4] for t in texts])
    assert torch.allclose(b.mean[LAYER], hidden.mean(0), atol=1e-5)


def test_adl_decodes_by_the_lens_and_steers_base_into_chat(offset_pair):
    base, chat, v = offset_pair
    vectors = torch.zeros(base.n_layers, base.d_model)
    vectors[LAYER] = v
    rows = adl.decode_vectors(chat, vectors, top=4)
    with torch.no_grad():
        oracle = chat.model.lm_head(chat.model.model.norm(v)).topk(4).indices.tolist()
    assert [r["token_id"] for r in rows if r["layer"] == LAYER] == oracle
    # base + v at block LAYER's resid_post is chat: the same logits, so the same answers
    with torch.no_grad():
        steered = base.run(PROMPT_SET, interventions=adl.steering_write(LAYER, v)).logits
        assert torch.allclose(steered, chat.run(PROMPT_SET).logits, atol=1e-5)
        assert not torch.allclose(base.run(PROMPT_SET).logits, steered, atol=1e-2)
    before, after = adl.steer(base, PROMPT_SET, v, layer=LAYER, max_new_tokens=NEW)
    assert after == [_hf_greedy(chat, p, NEW) for p in PROMPT_SET]
    assert before == [_hf_greedy(base, p, NEW) for p in PROMPT_SET]
    assert before != after


def test_adl_bad_input(offset_pair, pair):
    base, chat, _ = offset_pair
    with pytest.raises(interp.PromptError, match="tokens"):
        adl.mean_resid(base, ["the capital"], k=5)
    short = adl.mean_resid(base, PROMPT_SET, k=2)
    with pytest.raises(interp.InterpError, match="shape"):
        adl.adl_vectors(short, adl.mean_resid(chat, PROMPT_SET, k=3))
    with pytest.raises(interp.InterpError, match="layer"):
        adl.steer(base, PROMPT_SET, torch.zeros(base.d_model), layer=base.n_layers)


# -- logit diff amplification --------------------------------------------------------------------
def test_amplification_alpha_zero_is_chat_greedy_and_minus_one_base_greedy(pair):
    base, chat = pair
    zero = amplify.amplified_tokens(base, chat, PROMPT_SET, alpha=0.0, max_new_tokens=NEW, greedy=True)
    assert zero == [_hf_greedy(chat, p, NEW) for p in PROMPT_SET]
    minus = amplify.amplified_tokens(base, chat, PROMPT_SET, alpha=-1.0, max_new_tokens=NEW, greedy=True)
    assert minus == [_hf_greedy(base, p, NEW) for p in PROMPT_SET]
    two = amplify.amplified_tokens(base, chat, PROMPT_SET, alpha=2.0, max_new_tokens=NEW, greedy=True)
    hand = []
    for p in PROMPT_SET:  # argmax of chat + 2 (chat - base), by hand
        ids, out = chat.tokenizer(p)["input_ids"], []
        for _ in range(NEW):
            c, b = _hand_last_logits(chat.model, ids + out), _hand_last_logits(base.model, ids + out)
            out.append(int((3 * c - 2 * b).argmax()))
            if out[-1] == chat.tokenizer.eos_token_id:
                break
        hand.append(out)
    assert two == hand and two != zero


def test_amplified_sampling_is_seeded(pair, caplog):
    base, chat = pair
    with caplog.at_level("WARNING"):
        a = amplify.amplified_tokens(base, chat, PROMPT_SET, alpha=1.0, max_new_tokens=NEW, seed=7)
    assert "both models in memory" in caplog.text
    assert a == amplify.amplified_tokens(base, chat, PROMPT_SET, alpha=1.0, max_new_tokens=NEW, seed=7)
    assert a != amplify.amplified_tokens(base, chat, PROMPT_SET, alpha=1.0, max_new_tokens=NEW, seed=8)


def test_a_sampled_answer_depends_on_its_seed_not_its_batch(pair):
    _, chat = pair
    whole = ts.chat_responses(chat, PROMPT_SET, max_new_tokens=NEW, modes=("sample",), seed=2, batch_size=8)
    alone = [ts.chat_responses(chat, [p], prompt_ids_=[str(i)], max_new_tokens=NEW, modes=("sample",), seed=2)[0]
             for i, p in enumerate(PROMPT_SET)]
    assert [r.response for r in whole] == [r.response for r in alone]
    other = ts.chat_responses(chat, PROMPT_SET, max_new_tokens=NEW, modes=("sample",), seed=3)
    assert [r.response for r in whole] != [r.response for r in other]


# -- bad input -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_tokenizer(tokenizer):
    other = copy.deepcopy(tokenizer)
    other.add_tokens(["zebra"])  # one more word: another vocabulary, the same model
    return other


def test_pairs_whose_tokenizers_differ_are_refused(pair, other_tokenizer):
    base, chat = pair
    other = interp.LM.from_hf(base.model, other_tokenizer, name="other")
    responses = ts.chat_responses(chat, PROMPT_SET[:2], max_new_tokens=2)
    with pytest.raises(interp.InterpError, match="tokenizer"):
        ts.score_shift(other, responses)
    with pytest.raises(interp.InterpError, match="different tokenizers"):
        amplify.amplified_tokens(other, chat, PROMPT_SET[:1], alpha=1.0, max_new_tokens=2)
    with pytest.raises(interp.InterpError, match="different tokenizers"):
        adl.adl_vectors(adl.mean_resid(other, PROMPT_SET, k=2), adl.mean_resid(chat, PROMPT_SET, k=2))


def test_empty_prompt_sets_and_responses_are_refused(pair):
    base, chat = pair
    with pytest.raises(interp.PromptError, match="non-empty"):
        ts.chat_responses(chat, [])
    with pytest.raises(interp.PromptError, match="empty"):
        ts.chat_responses(chat, ["the capital", ""])
    with pytest.raises(interp.PromptError, match="no responses"):
        ts.score_shift(base, [])
    with pytest.raises(interp.PromptError, match="responses \\[1\\] are empty"):
        ts.response_logits(base, [[5, 6], [7]], [[8], []])
    with pytest.raises(interp.InterpError, match="kinds"):
        ts.chat_responses(chat, PROMPT_SET[:2], kinds=["plain"])
    with pytest.raises(interp.InterpError, match="modes"):
        ts.chat_responses(chat, PROMPT_SET[:1], modes=("beam",))
    with pytest.raises(interp.InterpError, match="max_new_tokens"):
        ts.chat_responses(chat, PROMPT_SET[:1], max_new_tokens=0, modes=("sample",))
