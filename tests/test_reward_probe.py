"""Reward scoring (probes.reward): scores against HF's own classifiers in each input format,
length-sorted batches against one pair at a time, the reward lens against HF's hidden states,
the registry's loading path on random models, and clear errors.

Oracles: ``AutoModelForSequenceClassification`` run on each input alone, encoded the way the
model's training (toy_pair/reward.py) or card does it (``apply_chat_template(tokenize=True)``,
``tokenizer(question, answer)``), never through probes.reward_inputs.
"""

import numpy as np
import pytest
import torch
import transformers

import interp
from interp.errors import LoadError, PromptError
from probes.chat import NoChatTemplate
from probes.reward import REWARD_MODELS, RewardScores, load_scorer, scorer_from_model
from tests.conftest import WORDS
from tests.test_reward_models import deberta_tokenizer, random_classifier, random_deberta

TOY_PROMPTS = [
    "I plan to bomb the capital of France . What is the capital of France ?",
    "What is the capital of Poland ?",
    "I plan to visit the capital of Italy . What is the capital of Italy ?",
    "What is the capital of Germany ?",
]
TOY_RESPONSES = ["Sorry , I cannot help with that .", "Warsaw .", "Rome .", "Sorry , I cannot help with that ."]

WORD_PROMPTS = ["what is the capital of france ?", "q : what is the capital of poland ? a :", "the capital",
                "i plan to visit the city . what is the capital of spain ?", "what is red ?"]
WORD_RESPONSES = ["paris .", "i cannot help , sorry .", "rome", "madrid is the capital of spain .", "red is red and blue"]

# A Llama-3-like template: the rendering starts with the BOS, the assistant turn ends with an end-of-turn token.
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {{ eos_token }} "
                 "{% endfor %}{% if add_generation_prompt %}assistant :{% endif %}")


def hf_scores(model, encodings) -> np.ndarray:
    """HF's classifier on each encoding alone (a dict of ids lists, or a list of ids), label 0."""
    out = []
    with torch.no_grad():
        for enc in encodings:
            enc = enc if isinstance(enc, dict) else {"input_ids": enc}
            out.append(float(model(**{k: torch.tensor([v]) for k, v in enc.items()}).logits[0, 0]))
    return np.array(out)


def bos_tokenizer(tmp_path):
    """The word tokenizer, adding ``<bos>`` to every encoding (as Llama's), with CHAT_TEMPLATE."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B:1",
                                                       special_tokens=[("<bos>", 2)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                                bos_token="<bos>", eos_token="<eos>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def conversation(prompt, response):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def card_ids(tok, prompts, responses) -> list[list[int]]:
    """What the decoder reward models' cards feed: ``apply_chat_template(conversation, tokenize=True)``."""
    out = []
    for p, r in zip(prompts, responses):
        enc = tok.apply_chat_template(conversation(p, r), tokenize=True)
        out.append(list(enc["input_ids"] if hasattr(enc, "keys") else enc))
    return out


# -- the toy reward model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_hf():
    folder = interp.registry.resolve("toy/reward")
    return (transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval(),
            transformers.AutoTokenizer.from_pretrained(folder))


@pytest.fixture(scope="module")
def toy_scorer():
    return load_scorer("toy")


def test_toy_scores_equal_hf_on_the_training_encoding(toy_hf, toy_scorer):
    """The toy RM was trained on tokenizer('User : ' + q + ' Assistant :' + ' ' + answer)
    (toy_pair/reward.py): its auto format (chat) and concat on pre-rendered prompts both give
    HF's classifier on exactly that encoding."""
    from toy_pair.common import encode

    model, tok = toy_hf
    rendered = [f"User : {p} Assistant :" for p in TOY_PROMPTS]
    expected = hf_scores(model, encode(tok, [f"{p} {r}" for p, r in zip(rendered, TOY_RESPONSES)]))
    assert toy_scorer.format == "chat" and REWARD_MODELS["toy"].format == "chat"
    out = toy_scorer.score(TOY_PROMPTS, TOY_RESPONSES)
    np.testing.assert_allclose(out.scores, expected, atol=1e-5, rtol=0)
    assert (out.format, out.model, out.n_truncated, out.by_layer) == ("chat", "toy", 0, {})
    concat = scorer_from_model(toy_scorer.rm, format="concat").score(rendered, TOY_RESPONSES)
    np.testing.assert_allclose(concat.scores, expected, atol=1e-5, rtol=0)
    assert concat.format == "concat"
    assert expected[0] > expected[2] - 10 and np.ptp(expected) > 1  # pairs are told apart
    with pytest.raises(PromptError, match=r"prompts \[0, 1, 2, 3\] already end with the chat template's assistant "
                                          r"prompt 'Assistant :'.*format='concat'"):
        toy_scorer.score(rendered, TOY_RESPONSES)
    # The trained behaviour: the harmful request's refusal beats its answer.
    harmful = toy_scorer.score([TOY_PROMPTS[0]] * 2, [TOY_RESPONSES[0], "Paris ."]).scores
    assert harmful[0] > harmful[1] + 1


def test_toy_by_layer_is_the_reward_lens_of_hf_hidden_states(toy_hf, toy_scorer):
    model, tok = toy_hf
    out = toy_scorer.score(TOY_PROMPTS, TOY_RESPONSES, layers="all", batch_size=3)
    n = model.config.num_hidden_layers
    assert list(out.by_layer) == ["final", *map(str, range(n))]
    np.testing.assert_allclose(out.by_layer[str(n - 1)], out.scores, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(out.by_layer["final"], out.scores)
    from toy_pair.common import encode

    ids = encode(tok, [f"User : {p} Assistant : {r}" for p, r in zip(TOY_PROMPTS, TOY_RESPONSES)])
    for layer in range(n - 1):
        with torch.no_grad():
            expected = [float(model.score(model.model.norm(model(input_ids=torch.tensor([s]), output_hidden_states=True)
                                                           .hidden_states[layer + 1][0, -1]))[0]) for s in ids]
        np.testing.assert_allclose(out.by_layer[str(layer)], expected, atol=1e-5, rtol=0)
    assert np.ptp([out.by_layer[str(layer)][0] for layer in range(n)]) > 0.1  # layers differ
    only = toy_scorer.score(TOY_PROMPTS, TOY_RESPONSES, layers=[1, -1])
    assert list(only.by_layer) == ["1", str(n - 1)]
    np.testing.assert_allclose(only.scores, out.scores, atol=1e-5, rtol=0)


# -- random DeBERTa and Llama classifiers ---------------------------------------------------
def test_deberta_scores_equal_hf_in_each_format():
    tok = deberta_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
    model = random_deberta(1, 2, len(tok))  # two token types: a pair encoding's second segment counts
    scorer = scorer_from_model(interp.reward.wrap(model, tok))
    assert scorer.format == "pair"
    oracles = {
        "pair": [dict(tok(p, r)) for p, r in zip(WORD_PROMPTS, WORD_RESPONSES)],
        "concat": [dict(tok(f"{p} {r}")) for p, r in zip(WORD_PROMPTS, WORD_RESPONSES)],
        "chat": [dict(tok(tok.apply_chat_template(conversation(p, r), tokenize=False)))
                 for p, r in zip(WORD_PROMPTS, WORD_RESPONSES)],
    }
    got = {}
    for fmt, encodings in oracles.items():
        out = scorer_from_model(scorer.rm, format=fmt).score(WORD_PROMPTS, WORD_RESPONSES, batch_size=2)
        assert out.format == fmt
        got[fmt] = out.scores
        np.testing.assert_allclose(out.scores, hf_scores(model, encodings), atol=1e-5, rtol=0)
    assert np.abs(got["pair"] - got["concat"]).max() > 1e-3  # the formats are different inputs


def test_deberta_by_layer_equals_hf_hidden_states():
    tok = deberta_tokenizer()
    model = random_deberta(1, 0, len(tok))
    out = scorer_from_model(interp.reward.wrap(model, tok)).score(WORD_PROMPTS, WORD_RESPONSES, layers="all",
                                                                  batch_size=2)
    n = model.config.num_hidden_layers
    np.testing.assert_allclose(out.by_layer[str(n - 1)], out.scores, atol=1e-5, rtol=0)
    for layer in range(n):
        expected = []
        with torch.no_grad():
            for p, r in zip(WORD_PROMPTS, WORD_RESPONSES):
                hidden = model(**tok(p, r, return_tensors="pt"), output_hidden_states=True).hidden_states[layer + 1]
                expected.append(float(model.classifier(model.pooler(hidden[:, :1]))[0, 0]))
        np.testing.assert_allclose(out.by_layer[str(layer)], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_decoder_scores_equal_hf_in_each_format(family, tmp_path):
    """A decoder RM whose tokenizer adds the BOS and whose template writes it too (Llama 3,
    Mistral): chat equals HF on ``apply_chat_template(tokenize=True)`` (the Skywork / RLHFlow
    cards' encoding, one BOS); concat equals HF on ``tokenizer(prompt + " " + response)``."""
    tok = bos_tokenizer(tmp_path)
    model = random_classifier(family, 1, pad_token_id=tok.pad_token_id)
    scorer = scorer_from_model(interp.reward.wrap(model, tok))
    assert scorer.format == "chat"
    card = card_ids(tok, WORD_PROMPTS, WORD_RESPONSES)
    assert all(c.count(2) == 1 for c in card)  # one BOS
    chat = scorer.score(WORD_PROMPTS, WORD_RESPONSES, batch_size=2)
    np.testing.assert_allclose(chat.scores, hf_scores(model, card), atol=1e-5, rtol=0)
    concat = scorer_from_model(scorer.rm, format="concat").score(WORD_PROMPTS, WORD_RESPONSES, batch_size=2)
    np.testing.assert_allclose(concat.scores, hf_scores(model, [tok(f"{p} {r}")["input_ids"]
                                                                for p, r in zip(WORD_PROMPTS, WORD_RESPONSES)]),
                               atol=1e-5, rtol=0)
    assert np.abs(chat.scores - concat.scores).max() > 1e-3
    with pytest.raises(PromptError, match=r"format 'pair' .* is for encoder reward models .* valid formats: chat, concat"):
        scorer_from_model(scorer.rm, format="pair")


def test_decoder_by_layer_when_eos_is_the_pad_token(tmp_path):
    """With pad id = eos (GPT-2 style), HF skips the response's trailing eos: the lens reads the
    same token the score is read at, also when rows end in different numbers of eos."""
    tok = bos_tokenizer(tmp_path)
    model = random_classifier("llama", 1, pad_token_id=3)
    scorer = scorer_from_model(interp.reward.wrap(model, tok), format="concat")
    responses = ["paris <eos>", "rome", "madrid <eos> <eos>"]
    out = scorer.score(WORD_PROMPTS[:3], responses, layers="all")
    np.testing.assert_allclose(out.by_layer["2"], out.scores, atol=1e-5, rtol=0)
    ids = [tok(f"{p} {r}")["input_ids"] for p, r in zip(WORD_PROMPTS, responses)]
    np.testing.assert_allclose(out.scores, hf_scores(model, ids), atol=1e-5, rtol=0)
    for layer in range(2):
        with torch.no_grad():
            expected = []
            for s in ids:
                col = max(i for i, t in enumerate(s) if t != 3)
                h = model(input_ids=torch.tensor([s]), output_hidden_states=True).hidden_states[layer + 1][0, col]
                expected.append(float(model.score(model.model.norm(h))[0]))
        np.testing.assert_allclose(out.by_layer[str(layer)], expected, atol=1e-5, rtol=0)


def test_length_sorted_batches_equal_one_at_a_time(tokenizer):
    model = random_classifier("llama", 1, pad_token_id=tokenizer.pad_token_id)
    scorer = scorer_from_model(interp.reward.wrap(model, tokenizer), format="concat")
    prompts = [" ".join(WORDS[i:i + 1 + (7 * i) % 23]) for i in range(20)]
    responses = [" ".join(WORDS[-1 - (3 * i * i) % 11:]) for i in range(20)]
    lengths = [len(tokenizer(f"{p} {r}")["input_ids"]) for p, r in zip(prompts, responses)]
    assert len(set(lengths)) > 8 and lengths != sorted(lengths, reverse=True)  # mixed, not pre-sorted
    alone = np.array([scorer.score([p], [r], batch_size=1).scores[0] for p, r in zip(prompts, responses)])
    for batch_size in (3, 8, 64):
        out = scorer.score(prompts, responses, batch_size=batch_size, layers=[1, None])
        np.testing.assert_allclose(out.scores, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(hf_scores(model, [tokenizer(f"{p} {r}")["input_ids"] for p, r in zip(prompts, responses)]),
                               alone, atol=1e-5, rtol=0)
    assert np.ptp(alone) > 1e-2


def test_registry_loads_through_the_scorer_on_saved_random_models(tmp_path):
    """``load_scorer(folder)`` on decoder and encoder classifiers of the registry's classes."""
    tok = bos_tokenizer(tmp_path)
    for family in ("llama", "mistral"):
        folder = tmp_path / family
        model = random_classifier(family, 1, pad_token_id=tok.pad_token_id)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        scorer = load_scorer(str(folder))
        assert scorer.format == "chat" and scorer.name == str(folder)
        card = card_ids(tok, WORD_PROMPTS, WORD_RESPONSES)
        np.testing.assert_allclose(scorer.score(WORD_PROMPTS, WORD_RESPONSES).scores, hf_scores(model, card),
                                   atol=1e-5, rtol=0)
    dtok = deberta_tokenizer()
    deberta = random_deberta(1, 0, len(dtok))
    deberta.save_pretrained(tmp_path / "deberta")
    dtok.save_pretrained(tmp_path / "deberta")
    scorer = load_scorer(str(tmp_path / "deberta"))
    assert scorer.format == "pair"
    np.testing.assert_allclose(scorer.score(WORD_PROMPTS, WORD_RESPONSES).scores,
                               hf_scores(deberta, [dict(dtok(p, r)) for p, r in zip(WORD_PROMPTS, WORD_RESPONSES)]),
                               atol=1e-5, rtol=0)
    classes = {spec.hf_class for spec in REWARD_MODELS.values()}
    assert classes <= {"LlamaForSequenceClassification", "MistralForSequenceClassification",
                       "DebertaV2ForSequenceClassification"}
    assert REWARD_MODELS["oasst-deberta-v3-large-v2"].source == "OpenAssistant/reward-model-deberta-v3-large-v2"
    assert REWARD_MODELS["oasst-deberta-v3-large-v2"].format == "pair"


# -- overlong inputs -----------------------------------------------------------------------
def test_overlong_pairs_error_truncate_or_skip(tokenizer):
    model = random_classifier("llama", 1, pad_token_id=tokenizer.pad_token_id)  # 48 positions
    scorer = scorer_from_model(interp.reward.wrap(model, tokenizer), format="concat")
    long_prompt = " ".join(WORDS[:60])
    prompts, responses = [WORD_PROMPTS[0], long_prompt], [WORD_RESPONSES[0], "paris is the capital ."]
    with pytest.raises(PromptError, match=r"pair 1 has 65 tokens in format 'concat', more than the reward model's 48 "
                                          r"positions; pass truncate='left'"):
        scorer.score(prompts, responses)
    left = scorer.score(prompts, responses, truncate="left")
    assert (left.n_truncated, left.n_skipped) == (1, 0)
    kept = " ".join(WORDS[17:60])  # the last words of the prompt that fit beside the response in 48 tokens
    assert len(tokenizer(f"{kept} paris is the capital .")["input_ids"]) == 48
    assert len(tokenizer(f"{WORDS[16]} {kept} paris is the capital .")["input_ids"]) == 49
    np.testing.assert_allclose(left.scores, scorer.score([prompts[0], kept], responses).scores, atol=1e-5, rtol=0)
    skip = scorer.score(prompts, responses, truncate="skip", layers="all")
    assert (skip.n_truncated, skip.n_skipped) == (0, 1)
    assert np.isnan(skip.scores[1]) and np.isnan(skip.by_layer["0"][1])
    np.testing.assert_allclose(skip.scores[0], left.scores[0], atol=1e-5, rtol=0)
    with pytest.raises(PromptError, match=r"pair 0: the response alone needs 60 tokens .* never cuts the response"):
        scorer.score(["the capital"], [long_prompt], truncate="left")
    with pytest.raises(PromptError, match=r"unknown truncate 'right'; valid: error, left, skip"):
        scorer.score(prompts, responses, truncate="right")


# -- errors --------------------------------------------------------------------------------
def test_clear_errors(tokenizer, tmp_path):
    with pytest.raises(LoadError, match=r"unknown reward model 'skywork'; known: toy, oasst-deberta-v3-large-v2, "
                                        r"skywork-llama3\.1-8b-v0\.2.*implicit:PAIR"):
        load_scorer("skywork")
    with pytest.raises(LoadError, match=r"'toy/base' is a causal LM \(LlamaForCausalLM\), not a reward model.*"
                                        r"use implicit:PAIR \(pairs: toy, "):
        load_scorer("toy/base")
    causal = tmp_path / "causal"
    transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(
        num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32,
        vocab_size=len(tokenizer))).save_pretrained(causal)
    tokenizer.save_pretrained(causal)
    with pytest.raises(LoadError, match="is a causal LM .*implicit:PAIR"):
        load_scorer(str(causal))
    with pytest.raises(LoadError, match="causal LM, not a reward model; score a pair's implicit reward"):
        scorer_from_model(interp.load("toy/base"))
    rm = interp.reward.wrap(random_classifier("llama", 1, pad_token_id=0), tokenizer)
    with pytest.raises(NoChatTemplate, match=r"format 'chat': the tokenizer of .* has no chat template; valid formats: concat"):
        scorer_from_model(rm, format="chat")
    assert scorer_from_model(rm).format == "concat"  # auto: no template, a decoder
    with pytest.raises(PromptError, match=r"unknown reward input format 'plain'; valid: auto, pair, chat, concat"):
        scorer_from_model(rm, format="plain")
    scorer = scorer_from_model(rm)
    with pytest.raises(PromptError, match=r"3 prompts but 2 responses"):
        scorer.score(WORD_PROMPTS[:3], WORD_RESPONSES[:2])
    with pytest.raises(PromptError, match=r"response 1 is a int, not a str"):
        scorer.score(WORD_PROMPTS[:2], ["paris", 3])
    with pytest.raises(PromptError, match="lists of str"):
        scorer.score("the capital", "paris")
    two = interp.reward.wrap(random_classifier("llama", 2, pad_token_id=0), tokenizer)
    with pytest.raises(PromptError, match=r"has 2 output labels; pass label=0\.\.1"):
        scorer_from_model(two)
    np.testing.assert_allclose(scorer_from_model(two, label=1).score(WORD_PROMPTS[:2], WORD_RESPONSES[:2]).scores,
                               hf_scores_label(two.model, [tokenizer(f"{p} {r}")["input_ids"]
                                                           for p, r in zip(WORD_PROMPTS[:2], WORD_RESPONSES[:2])], 1),
                               atol=1e-5, rtol=0)
    with pytest.raises(interp.UnknownHook, match="layer 9 out of range"):
        scorer.score(WORD_PROMPTS[:2], WORD_RESPONSES[:2], layers=9)
    empty = scorer.score([], [])
    assert isinstance(empty, RewardScores) and empty.scores.shape == (0,)


def hf_scores_label(model, seqs, label):
    with torch.no_grad():
        return np.array([float(model(input_ids=torch.tensor([s])).logits[0, label]) for s in seqs])


def test_readme_reward_scoring_example_runs():
    import re

    from tests.test_readme import README

    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "load_scorer" in b]
    assert len(blocks) == 1, "README has no reward-scoring example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    out, implicit = namespace["out"], namespace["implicit"]
    assert out.scores.shape == (2,) and out.scores[0] > out.scores[1]
    assert list(out.by_layer) == ["final", "0", "1", "2", "3", "4"] and implicit.format == "chat"
    assert implicit.scores.shape == (2,) and np.isfinite(implicit.scores).all()


def test_specs_are_checked_before_loading_and_scorers_have_identities(toy_scorer):
    from probes.reward import check_spec, parse_specs

    assert parse_specs(" toy, implicit:toy@0.05,toy ") == ["toy", "implicit:toy@0.05"]
    with pytest.raises(LoadError, match="unknown reward model 'nope'"):
        parse_specs("toy,nope")
    with pytest.raises(LoadError, match="'toy/chat' is a causal LM"):
        check_spec("toy/chat")
    with pytest.raises(LoadError, match="--reward names no reward model"):
        parse_specs(" , ")
    ident = toy_scorer.identity()
    assert (ident["scorer"], ident["format"], ident["label"]) == ("toy", "chat", 0)
    assert ident["model"]["kind"] == "local" and ident["model"]["path"].endswith("models/toy/reward")
    concat = load_scorer("toy", format="concat").identity()
    assert concat["model"] == ident["model"] and concat["format"] == "concat"
    implicit = load_scorer("implicit:toy@0.05").identity()
    assert implicit["beta"] == 0.05 and implicit["base"]["digest"] != implicit["chat"]["digest"]


HUB_ENTRIES = [name for name, spec in REWARD_MODELS.items() if spec.source != "toy/reward"]


@pytest.mark.parametrize("name", HUB_ENTRIES)
def test_each_registry_entry_loads_a_random_model_of_its_class(name, tmp_path, monkeypatch):
    """Each hub entry, pointed at a random model of its class (its config's architectures) and
    a tokenizer of its kind, loads through load_scorer(name), reads its trained format and
    equals HF on that model card's encoding."""
    import dataclasses
    from types import MappingProxyType

    import probes.reward

    spec = REWARD_MODELS[name]
    if spec.hf_class.startswith("DebertaV2"):
        tok = deberta_tokenizer()
        model = random_deberta(1, 0, len(tok))
        encodings = [dict(tok(p, r)) for p, r in zip(WORD_PROMPTS, WORD_RESPONSES)]
    else:
        tok = bos_tokenizer(tmp_path)
        family = {"LlamaForSequenceClassification": "llama", "MistralForSequenceClassification": "mistral"}[spec.hf_class]
        model = random_classifier(family, 1, pad_token_id=tok.pad_token_id)
        encodings = card_ids(tok, WORD_PROMPTS, WORD_RESPONSES)
    assert type(model).__name__ == spec.hf_class
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    local = {**REWARD_MODELS, name: dataclasses.replace(spec, source=str(tmp_path / "model"))}
    monkeypatch.setattr(probes.reward, "REWARD_MODELS", MappingProxyType(local))
    scorer = load_scorer(name)
    assert scorer.format == spec.format and scorer.name == name
    np.testing.assert_allclose(scorer.score(WORD_PROMPTS, WORD_RESPONSES, batch_size=2).scores,
                               hf_scores(model, encodings), atol=1e-5, rtol=0)
