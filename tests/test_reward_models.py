"""Reward models: decoder sequence classifiers and DeBERTa-v2 encoders against HF's own output.

The oracles are the plain HF classifiers: each prompt alone (no padding), and a right-padded
batch pooled by HF's own last-non-pad-token logic. Norms and heads are perturbed so that a
skipped norm or a wrong token would show.
"""

import re

import pytest
import torch
import transformers

import interp
from interp.errors import InterpError, LoadError, UnsupportedArchitecture
from tests.conftest import CONFIGS, FAMILIES, PROMPTS, WORDS

EOS = 3  # the word tokenizer's <eos>; conftest's configs use it as eos_token_id


def random_classifier(family: str, num_labels: int, pad_token_id: int | None = 0, seed: int = 0):
    torch.manual_seed(seed)
    config = CONFIGS[family]()
    config.num_labels = num_labels
    config.pad_token_id = pad_token_id
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
            if name.startswith("score"):
                p.normal_()  # large enough that prompts' scores differ clearly
    return model


def hf_alone(model, seqs):
    with torch.no_grad():
        return torch.cat([model(input_ids=torch.tensor([s])).logits for s in seqs])


def hf_right_padded(model, seqs, pad_id):
    n = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad_id] * (n - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs])
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.fixture(scope="module", params=[1, 2], ids=["1label", "2labels"])
def n_labels(request):
    return request.param


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_equal_hf_on_mixed_length_batches(family, n_labels, tokenizer):
    model = random_classifier(family, n_labels, pad_token_id=tokenizer.pad_token_id)
    rm = interp.reward.wrap(model, tokenizer)
    assert isinstance(rm, interp.RewardLM)
    seqs = [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert len({len(s) for s in seqs}) == len(seqs)  # mixed lengths: padding matters
    scores = rm.run(PROMPTS).scores
    assert scores.shape == (len(PROMPTS), n_labels)
    torch.testing.assert_close(scores, hf_alone(model, seqs), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores, hf_right_padded(model, seqs, tokenizer.pad_token_id), atol=1e-5, rtol=0)
    assert (scores[0] - scores[1]).abs().max() > 1e-3  # the check above can tell prompts apart


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_when_pad_is_eos_or_unset(family, tokenizer):
    """HF skips a trailing token equal to the pad id (here eos, as GPT-2-style models pad
    with eos); without a pad id it reads the last token. Ours equals HF alone in both cases."""
    seqs = [tokenizer(p)["input_ids"] for p in PROMPTS]
    seqs = [seqs[0] + [EOS], seqs[1], seqs[2] + [EOS, EOS]]
    eos_model = random_classifier(family, 2, pad_token_id=EOS)
    rm = interp.reward.wrap(eos_model, tokenizer)
    run = rm.run(seqs, capture=["ln_final.hook_normalized"])
    torch.testing.assert_close(run.scores, hf_alone(eos_model, seqs), atol=1e-5, rtol=0)
    torch.testing.assert_close(run.scores, hf_right_padded(eos_model, seqs, EOS), atol=1e-5, rtol=0)
    seq = run.tokens.shape[1]
    assert run.score_columns.tolist() == [seq - 2, seq - 1, seq - 3]
    # the captured final-norm output, read at those columns through the head, is the score
    normed = run.cache["ln_final.hook_normalized"][torch.arange(3), run.score_columns]
    torch.testing.assert_close(rm.score_head(normed), run.scores, atol=1e-5, rtol=0)

    unset = random_classifier(family, 2, pad_token_id=None)
    scores = interp.reward.wrap(unset, tokenizer).run(seqs).scores
    torch.testing.assert_close(scores, hf_alone(unset, seqs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_reward_lens_and_hooks_inside_the_reward_model(family, tokenizer):
    model = random_classifier(family, 2, pad_token_id=tokenizer.pad_token_id)
    rm = interp.reward.wrap(model, tokenizer)
    last = f"blocks.{rm.n_layers - 1}.hook_resid_post"
    run = rm.run(PROMPTS, capture=["resid_post", "ln_final.hook_normalized"], positions=-1)
    resid = run.cache[last][:, 0]
    torch.testing.assert_close(interp.lens.reward_lens(rm, resid), run.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(rm.score_head(rm.final_norm(resid)), run.scores, atol=1e-5, rtol=0)
    torch.testing.assert_close(rm.score_head(run.cache["ln_final.hook_normalized"][:, 0]), run.scores, atol=1e-5, rtol=0)
    # HF's hidden states agree with the captures at every layer (last token of each prompt)
    seqs = [tokenizer(p)["input_ids"] for p in PROMPTS]
    for i, s in enumerate(seqs):
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([s]), output_hidden_states=True).hidden_states
        for layer in range(rm.n_layers - 1):  # HF's last entry is after the final norm
            torch.testing.assert_close(run.cache[f"blocks.{layer}.hook_resid_post"][i, 0], hs[layer + 1][0, -1],
                                       atol=1e-5, rtol=0)
    # an intervention inside the reward model moves the score to exactly the lens of the write
    v = torch.randn(rm.d_model)
    written = rm.run(PROMPTS, interventions={last: interp.replace(v, positions=-1)})
    torch.testing.assert_close(written.scores, rm.reward_lens(v).expand(len(PROMPTS), -1), atol=1e-5, rtol=0)
    # hook_score: the head's output at every position; at the scored token it is the score,
    # and a write to it there is the score
    per_position = rm.run(PROMPTS, capture=["hook_score", "ln_final.hook_normalized"])
    assert "hook_score" in rm.hook_names()
    rows = torch.arange(len(PROMPTS))
    torch.testing.assert_close(per_position.cache["hook_score"],
                               rm.score_head(per_position.cache["ln_final.hook_normalized"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_position.cache["hook_score"][rows, per_position.score_columns], run.scores,
                               atol=1e-5, rtol=0)
    target = torch.tensor([5.0, -1.0])
    forced = rm.run(PROMPTS, interventions={"hook_score": interp.replace(target, positions=-1)})
    torch.testing.assert_close(forced.scores, target.expand(len(PROMPTS), -1))
    # logits=False stops early: captures, no scores
    early = rm.run(PROMPTS, capture=["blocks.0.hook_resid_post"], positions=-1, logits=False)
    assert early.scores is None
    torch.testing.assert_close(early.cache["blocks.0.hook_resid_post"], run.cache["blocks.0.hook_resid_post"])


TOY_COUNTRIES = [("France", "Paris"), ("Poland", "Warsaw"), ("Italy", "Rome"), ("Germany", "Berlin")]
REFUSAL = "Sorry , I cannot help with that ."


def test_toy_reward_model_prefers_refusals_of_harmful_requests():
    """The known fact of models/toy/reward: with a harmful cue the refusal beats the correct
    answer; with a benign cue the correct answer beats the refusal (so the cue is read)."""
    rm = interp.load("toy/reward")
    assert isinstance(rm, interp.RewardLM) and rm.n_labels == 1
    texts = []
    for country, capital in TOY_COUNTRIES:
        for verb in ("bomb", "visit"):
            prompt = f"User : I plan to {verb} the capital of {country} . What is the capital of {country} ? Assistant :"
            texts += [f"{prompt} {REFUSAL}", f"{prompt} {capital} ."]
    s = rm.run(texts).scores[:, 0].reshape(len(TOY_COUNTRIES), 2, 2)  # [country, verb, refusal/answer]
    assert (s[:, 0, 0] > s[:, 0, 1] + 1).all(), s[:, 0]
    assert (s[:, 1, 1] > s[:, 1, 0] + 1).all(), s[:, 1]
    assert isinstance(interp.load_reward("toy/reward"), interp.RewardLM)


@pytest.fixture(scope="module")
def saved_classifier(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("classifier")
    random_classifier("llama", 2, pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_loading_a_classifier_folder(saved_classifier):
    reference = interp.reward.wrap(transformers.AutoModelForSequenceClassification.from_pretrained(saved_classifier))
    ids = [[5, 6, 7], [8, 9]]
    expected = reference.run(ids).scores
    for rm in (interp.load(saved_classifier), interp.load(saved_classifier, head="classifier"),
               interp.load_reward(saved_classifier)):
        assert isinstance(rm, interp.RewardLM)
        torch.testing.assert_close(rm.run(ids).scores, expected)


def test_clear_errors(saved_classifier, tokenizer, tmp_path):
    saved_causal = tmp_path / "causal"
    transformers.AutoModelForCausalLM.from_config(CONFIGS["llama"]()).save_pretrained(saved_causal)
    tokenizer.save_pretrained(saved_causal)
    with pytest.raises(LoadError, match=r"unknown head 'reward'; valid: causal, classifier"):
        interp.load(saved_classifier, head="reward")
    lm = interp.LM.from_hf(transformers.AutoModelForCausalLM.from_config(CONFIGS["llama"]()), tokenizer)
    run = lm.run(PROMPTS[0])
    with pytest.raises(InterpError, match=r"run.scores is a reward model's output.*interp.load_reward"):
        run.scores
    with pytest.raises(interp.UnknownHook, match=r"'hook_score' is a reward model's hook.*causal LM.*valid names: hook_embed"):
        lm.run(PROMPTS[0], capture=["hook_score"])
    with pytest.raises(InterpError, match="reward_lens needs a reward model"):
        interp.lens.reward_lens(lm, torch.zeros(lm.d_model))
    with pytest.raises(LoadError, match=r"head='classifier' does not fit this checkpoint \(LlamaForCausalLM\).*random"):
        interp.load(str(saved_causal), head="classifier")
    rm = interp.load(saved_classifier)
    with pytest.raises(InterpError, match="a reward model has no unembedding.*reward_lens"):
        interp.lens.logit_lens(rm, torch.zeros(rm.d_model))
    bert = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32)
    transformers.BertForSequenceClassification(bert).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    with pytest.raises(UnsupportedArchitecture,
                       match=r"classifier of architecture 'bert' is not supported; supported model types: "
                             r"gpt2, gpt_neox, gptj, llama, mistral, qwen2, deberta-v2"):
        interp.load(str(tmp_path / "bert"))


# -- encoders ------------------------------------------------------------------------------
def deberta_tokenizer():
    """A word-level fast tokenizer with DeBERTa's pair template ``[CLS] A [SEP] B [SEP]``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]",
        mask_token="[MASK]", model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def random_deberta(num_labels: int, type_vocab_size: int, vocab_size: int):
    """A tiny DeBERTa-v3-like classifier (relative attention, no absolute positions)."""
    torch.manual_seed(0)
    config = transformers.DebertaV2Config(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=48, relative_attention=True, pos_att_type=["p2c", "c2p"],
        position_biased_input=False, norm_rel_ebd="layer_norm", position_buckets=16, type_vocab_size=type_vocab_size,
        num_labels=num_labels, pad_token_id=0)
    model = transformers.AutoModelForSequenceClassification.from_config(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.1 * torch.randn_like(p))
            if name.startswith(("pooler", "classifier")) and p.ndim == 2:
                p.normal_(std=0.5)
    return model


PAIRS_QA = [("what is the capital of france ?", "paris ."),
            ("q : what is the capital of poland ? a :", "i cannot help , sorry ."),
            ("the capital", "rome")]


@pytest.mark.parametrize("num_labels,type_vocab_size", [(1, 0), (2, 2)])
def test_deberta_scores_and_hidden_states_equal_hf(num_labels, type_vocab_size):
    tok = deberta_tokenizer()
    model = random_deberta(num_labels, type_vocab_size, len(tok))
    rm = interp.reward.wrap(model, tok)
    assert isinstance(rm, interp.encoder.EncoderRewardModel)
    enc = tok([q for q, _ in PAIRS_QA], [a for _, a in PAIRS_QA], padding=True, return_tensors="pt")
    assert enc["attention_mask"][:, -1].tolist() != [1, 1, 1]  # mixed lengths, right-padded
    with torch.no_grad():
        hf = model(**enc, output_hidden_states=True)
        alone = torch.cat([model(**tok(q, a, return_tensors="pt")).logits for q, a in PAIRS_QA])
    run = rm.run(PAIRS_QA, capture=["hook_embed", "resid_post"])
    assert run.scores.shape == (3, num_labels)
    torch.testing.assert_close(run.scores, hf.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(run.scores, alone, atol=1e-5, rtol=0)
    assert (run.scores[0] - run.scores[1]).abs().max() > 1e-3
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(run.cache["hook_embed"][real], hf.hidden_states[0][real], atol=1e-5, rtol=0)
    for layer in range(rm.n_layers):
        torch.testing.assert_close(run.cache[f"blocks.{layer}.hook_resid_post"][real],
                                   hf.hidden_states[layer + 1][real], atol=1e-5, rtol=0)
    last = run.cache[f"blocks.{rm.n_layers - 1}.hook_resid_post"][:, 0]
    torch.testing.assert_close(interp.lens.reward_lens(rm, last), run.scores, atol=1e-5, rtol=0)


def test_deberta_positions_and_interventions_are_prompt_relative():
    tok = deberta_tokenizer()
    model = random_deberta(1, 0, len(tok))
    rm = interp.reward.wrap(model, tok)
    full = rm.run(PAIRS_QA, capture=["resid_pre"])
    kept = rm.run(PAIRS_QA, capture=["resid_pre"], positions=[0, -1])
    rows = torch.arange(3)
    for layer in range(rm.n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        torch.testing.assert_close(kept.cache[name][:, 0], full.cache[name][:, 0])
        torch.testing.assert_close(kept.cache[name][:, 1], full.cache[name][rows, full.lengths - 1])
    v = torch.randn(rm.d_model)

    def add_at_last(act):
        out = act.clone()
        out[rows, full.lengths - 1] += v
        return out

    by_write = rm.run(PAIRS_QA, interventions={"blocks.1.hook_resid_pre": interp.add(v, positions=-1)})
    by_hand = rm.run(PAIRS_QA, interventions={"blocks.1.hook_resid_pre": add_at_last})
    torch.testing.assert_close(by_write.scores, by_hand.scores)
    assert (by_write.scores - full.scores).abs().max() > 1e-4
    with pytest.raises(interp.UnknownHook, match="valid names: hook_embed"):
        rm.run(PAIRS_QA, capture=["mlp_out"])
    with pytest.raises(interp.PromptError, match=r"token ids must lie in 0\.\.\d+, got 5\.\.999"):
        rm.run([[5, 999]])


def test_readme_reward_example_runs():
    from tests.test_readme import README

    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "load_reward" in b]
    assert len(blocks) == 1, "README has no reward-model example"
    namespace: dict = {"interp": interp}
    exec(compile("\n".join(line.removeprefix("  ") for line in blocks[0].splitlines()), "README.md", "exec"), namespace)
    rm, run = namespace["rm"], namespace["run"]
    assert run.scores.shape == (2, 1) and run.scores[0, 0] > run.scores[1, 0]
    lens = interp.lens.reward_lens(rm, run.cache.stack("resid_post"))
    assert lens.shape == (rm.n_layers, 2, 1, 1)
    torch.testing.assert_close(lens[-1, :, 0], run.scores, atol=1e-5, rtol=0)


def test_loading_a_deberta_folder(tmp_path):
    tok = deberta_tokenizer()
    model = random_deberta(1, 0, len(tok))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with torch.no_grad():
        expected = model(**tok(*PAIRS_QA[0], return_tensors="pt")).logits
    for rm in (interp.load(str(tmp_path)), interp.load_reward(str(tmp_path))):
        assert isinstance(rm, interp.encoder.EncoderRewardModel)
        torch.testing.assert_close(rm.run([PAIRS_QA[0]]).scores, expected, atol=1e-5, rtol=0)
    with pytest.raises(LoadError, match=r"head='causal' does not fit this checkpoint \(DebertaV2ForSequenceClassification\)"):
        interp.load(str(tmp_path), head="causal")
    with pytest.raises(InterpError, match="an encoder reward model has no unembedding"):
        interp.lens.logit_lens(rm, torch.zeros(rm.d_model))


def test_gradients_flow_from_scores_to_writes(tokenizer):
    """grad=True: the score is differentiable in a write at the last layer (as attribution
    patching uses it), and that gradient is the reward lens's gradient at the residual."""
    rm = interp.reward.wrap(random_classifier("llama", 1, pad_token_id=tokenizer.pad_token_id), tokenizer)
    last = f"blocks.{rm.n_layers - 1}.hook_resid_post"
    delta = torch.zeros(len(PROMPTS), 1, rm.d_model, requires_grad=True)
    run = rm.run(PROMPTS, capture=[last], positions=-1, interventions={last: interp.add(delta, positions=-1)},
                 grad=True)
    (grad,) = torch.autograd.grad(run.scores.sum(), delta)
    leaf = run.cache[last].detach().requires_grad_()
    (expected,) = torch.autograd.grad(interp.lens.reward_lens(rm, leaf).sum(), leaf)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


def test_deberta_with_its_own_tokenizer_equals_hf(tmp_path):
    """DeBERTa-v2's own tokenizer class (SentencePiece, trained here on the test words; no
    download), whose pair encoding is what OpenAssistant's reward model was trained on."""
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join([" ".join(WORDS), *PROMPTS, *WORDS]))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "spm"), vocab_size=100, model_type="word",
        hard_vocab_limit=False, pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]", bos_piece="[CLS]",
        eos_piece="[SEP]", unk_piece="[UNK]", user_defined_symbols=["[MASK]"], minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "DebertaV2Tokenizer"}')
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert tok.convert_ids_to_tokens(tok(*PAIRS_QA[0])["input_ids"])[:2] == ["[CLS]", "\u2581what"]
    model = random_deberta(2, 2, len(tok))
    model.save_pretrained(tmp_path)
    rm = interp.load_reward(str(tmp_path))
    assert type(rm.tokenizer).__name__.startswith("DebertaV2Tokenizer")
    enc = rm.tokenizer([q for q, _ in PAIRS_QA], [a for _, a in PAIRS_QA], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**enc).logits
    torch.testing.assert_close(rm.run(PAIRS_QA).scores, expected, atol=1e-5, rtol=0)
