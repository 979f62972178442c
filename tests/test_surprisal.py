"""Region surprisal (probes.surprisal, probes.syntaxgym) against a hand alignment and the plain
HF model's log-probs, on the three tokenizer kinds: GPT-2's byte-level BPE, the toy pair's
WordPiece and Llama's SentencePiece (both BPE ones trained here on a few sentences; no download).

Each case writes down by hand which tokens make each region (a word split into several tokens
among them) and checks the probe's region sums against ``-log2 softmax`` of the HF model's own
logits summed over those tokens."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import transformers

import interp
from probes.logprobs import Skipped
from probes.surprisal import encode_text, region_surprisals, text_surprisals, token_regions
from probes.syntaxgym import score_items
from tasks.benchmarks.syntaxgym import Prediction, SyntaxGymItem

CORPUS = ["the king sits in the house .", "the queen sits with the king .", "as the king ate , the bread fell .",
          "the government sits in warsaw ."] * 20 + ["unbelievable things happened"]


def _bpe(tmp_path, specials: bool):
    """A GPT-2-style tokenizer: byte-level BPE, no prefix space, offsets trimmed, no BOS added;
    ``specials``: with GPT-2's ``<|endoftext|>`` as BOS / EOS, else with no special token at all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    kwargs = dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>") if specials else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _spm(tmp_path):
    """A Llama tokenizer (SentencePiece BPE with byte fallback, BOS added) trained on CORPUS."""
    spm = pytest.importorskip("sentencepiece")
    folder = tmp_path / "spm"
    folder.mkdir()
    (folder / "corpus.txt").write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(
        input=str(folder / "corpus.txt"), model_prefix=str(folder / "tokenizer"), vocab_size=330, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        minloglevel=2)
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer",
                                                              "add_bos_token": True}))
    return transformers.AutoTokenizer.from_pretrained(folder)


def _wordpiece(tmp_path):
    from toy_pair.tokenizer import build_tokenizer

    return build_tokenizer()


TOKENIZERS = {"bpe": lambda p: _bpe(p, True), "wordpiece": _wordpiece, "sentencepiece": _spm}


def _model(kind: str, vocab: int):
    torch.manual_seed(0)
    if kind == "bpe":
        config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab, n_positions=64)
    else:
        config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                          num_key_value_heads=2, intermediate_size=64, vocab_size=vocab,
                                          max_position_embeddings=64)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    out = {}
    for kind, make in TOKENIZERS.items():
        tok = make(tmp_path_factory.mktemp(kind))
        model = _model(kind, len(tok))
        out[kind] = (interp.LM.from_hf(model, tok, name=f"random-{kind}"), model, tok)
    return out


# (regions, attach_punctuation, the tokens fed, region -> indices into them, the indices of a
# word split into several tokens): written by hand.
CASES = {
    "bpe": (["As the king", "ate", ",", "the bread", "fell", "."], False,
            ["<|endoftext|>", "A", "s", "Ġthe", "Ġking", "Ġat", "e", "Ġ,", "Ġthe", "Ġbr", "ead", "Ġfel", "l", "Ġ."],
            [[1, 2, 3, 4], [5, 6], [7], [8, 9, 10], [11, 12], [13]], [9, 10]),
    "wordpiece": (["In Poland", ",", "the government", "", "sits", "in Warsaw", "."], True,
                  ["<s>", "In", "Pol", "##and", ",", "the", "government", "sits", "in", "War", "##saw", "."],
                  [[1, 2, 3], [4], [5, 6], [], [7], [8, 9, 10], [11]], [2, 3]),
    "sentencepiece": (["As the king", "ate", ",", "the bread", "fell", "."], True,
                      ["<s>", "▁", "<0x41>", "s", "▁the", "▁king", "▁ate", ",", "▁the", "▁bre", "ad", "▁fell", "."],
                      [[1, 2, 3, 4, 5], [6], [7], [8, 9, 10], [11], [12]], [9, 10]),
}


def _item(regions, name="hand"):
    return SyntaxGymItem(id=f"syntaxgym-{name}-1", task="syntaxgym", suite=name, item_number=1,
                         conditions={"c": tuple((i + 1, r) for i, r in enumerate(regions))},
                         predictions=(Prediction("(1;%c%) > 0"),))


def _oracle_bits(model, ids, layer=None):
    """-log2 p of every token after the first, from the HF model (``layer``: block's logit lens)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        if layer is None:
            logits = out.logits[0]
        else:
            logits = model.lm_head(model.model.norm(out.hidden_states[layer + 1][0]))
    lp = logits[:-1].log_softmax(-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    return [math.nan] + (-lp / math.log(2)).tolist()


@pytest.mark.parametrize("kind", list(CASES))
def test_region_surprisal_is_the_hand_sum_of_its_tokens(kind, lms):
    lm, model, tok = lms[kind]
    regions, attach, tokens, members, split = CASES[kind]
    item = _item(regions)
    text = item.sentence("c", attach)
    ids, _, _ = encode_text(tok, text)
    assert tok.convert_ids_to_tokens(ids) == tokens  # the tokenisation the hand alignment was written for
    assert any(set(split) <= set(m) for m in members) and len(split) > 1  # a word split into several tokens
    layers = [None, 0] if kind == "sentencepiece" else [None]
    (scored,) = text_surprisals(lm, [text], layers)
    spans = [(a, b) for _, a, b in item.region_spans("c", attach)]
    got = region_surprisals(scored, spans)
    assert got.tokens == members
    for row, layer in enumerate(layers):
        bits = _oracle_bits(model, ids, layer)
        expected = [sum(bits[t] for t in m) for m in members]
        torch.testing.assert_close(got.values[row], torch.tensor(expected, dtype=torch.float64), rtol=1e-4, atol=1e-4)
    (score,) = score_items(lm, [item], layers, attach_punctuation=attach)
    torch.testing.assert_close(torch.tensor(score.regions["c"], dtype=torch.float64), got.values, rtol=1e-6, atol=1e-6)


def test_leading_spaces_and_lone_space_tokens_go_to_the_next_region():
    """Offsets as SentencePiece gives them (the space inside the token's span) and a lone
    whitespace token (byte-level BPE: zero-width) both belong to the region after the space."""
    text = "ab  cd"
    spans = [(0, 2), (4, 6)]
    assert token_regions(text, [None, (0, 2), (2, 3), (3, 6)], spans) == ([-1, 0, 1, 1], 0)
    assert token_regions(text, [(0, 2), (3, 3), (4, 6)], spans) == ([0, 1, 1], 0)
    # a merge across a boundary (no space between regions): the later region, counted
    assert token_regions("abcd", [(0, 1), (1, 3), (3, 4)], [(0, 2), (2, 4)]) == ([0, 1, 1], 1)


def test_text_without_a_start_token(tmp_path):
    """GPT-2's tokenizer adds no BOS: its EOS goes in front, so the first word is scored; a
    tokenizer with no special token leaves the first token unscored and says so."""
    for specials in (True, False):
        tok = _bpe(tmp_path, specials)
        model = _model("bpe", len(tok))
        lm = interp.LM.from_hf(model, tok, name="random-bpe")
        (scored,) = text_surprisals(lm, ["the king sits"])
        assert scored.prefixed is specials and scored.first_scored is specials
        ids = scored.tokens
        assert tok.convert_ids_to_tokens(ids) == ["<|endoftext|>"] * specials + ["the", "Ġking", "Ġsits"]
        bits = _oracle_bits(model, ids)  # bits[0] is the first token fed: never predicted
        got = region_surprisals(scored, [(0, 8), (9, 13)]).values[0].tolist()
        # "the king" = the, Ġking with the prefix; Ġking alone without (its "the" is unscored)
        assert math.isnan(scored.surprisal[0, 0])
        assert got == pytest.approx([sum(bits[1:-1]), bits[-1]], rel=1e-4)
        assert len(bits[1:-1]) == 1 + specials


def test_predictions_on_a_hand_made_suite(lms, tmp_path):
    """A suite of hand-made formulas over real region surprisals: each formula's outcome equals
    the same comparison written in Python over the oracle's region sums."""
    from tasks.benchmarks.syntaxgym import load

    lm, model, tok = lms["wordpiece"]
    formulas = {
        "(3;%bad%) > (3;%good%)": lambda s: s["bad", 3] > s["good", 3],
        "(3;%good%) > (3;%bad%)": lambda s: s["good", 3] > s["bad", 3],
        "((3;%bad%) - (3;%good%)) > ((2;%bad%) - (2;%good%))":
            lambda s: s["bad", 3] - s["good", 3] > s["bad", 2] - s["good", 2],
        "(3;%bad%) + (4;%bad%) < 2 * 0 + (*;%good%)": None,  # '*' is not SyntaxGym grammar: a parse error
        "[(3;%bad%) > (3;%good%)] & [(1;%bad%) = (1;%good%)]":
            lambda s: s["bad", 3] > s["good", 3] and math.isclose(s["bad", 1], s["good", 1], rel_tol=1e-5, abs_tol=1e-3),
        "(3;%bad%) < (3;%good%) | -(2;%good%) < 0": lambda s: s["bad", 3] < s["good", 3] or -s["good", 2] < 0,
        "(*;%bad%) > (*;%good%)": lambda s: sum(v for (c, _), v in s.items() if c == "bad")
        > sum(v for (c, _), v in s.items() if c == "good"),
    }
    usable = {f: fn for f, fn in formulas.items() if fn is not None}
    regions = {"good": ["The government", "sits", "in Warsaw", "."], "bad": ["The government", "sit", "in Warsaw", "."]}
    suite = {"meta": {"name": "hand", "metric": "sum"}, "region_meta": {str(i): str(i) for i in range(1, 5)},
             "predictions": [{"type": "formula", "formula": f} for f in usable],
             "items": [{"item_number": 1, "conditions": [
                 {"condition_name": c, "regions": [{"region_number": i + 1, "content": t} for i, t in enumerate(r)]}
                 for c, r in regions.items()]}]}
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(suite))
    (item,) = load(data=str(path))
    (score,) = score_items(lm, [item])
    oracle = {}
    for condition, rs in regions.items():
        ids, _, _ = encode_text(tok, item.sentence(condition))
        bits = _oracle_bits(model, ids)
        # by hand: <s> The government | sits / sit | in War ##saw | .
        for number, tokens in zip(range(1, 5), [[1, 2], [3], [4, 5, 6], [7]]):
            oracle[condition, number] = sum(bits[t] for t in tokens)
    expected = [fn(oracle) for fn in usable.values()]
    assert score.predictions[0] == expected
    assert len(set(expected)) == 2  # both outcomes occur: a constant evaluator would fail
    from tasks.benchmarks.syntaxgym import FormulaError

    with pytest.raises(FormulaError, match=r"cannot parse .*\* 0 \+.* at position"):
        Prediction(next(f for f, fn in formulas.items() if fn is None))


def test_too_long_items_are_skipped(lms):
    lm, _, _ = lms["wordpiece"]
    long = _item(["the king sits"] * 40)
    short = _item(["the king sits"], name="short")
    out = score_items(lm, [long, short])
    assert isinstance(out[0], Skipped) and f"longer than the model's {lm.max_positions} positions" in out[0].reason
    assert not isinstance(out[1], Skipped)


@pytest.mark.parametrize("metric, oracle", [("mean", np.mean), ("median", np.median), ("max", np.max),
                                            ("range", np.ptp), ("first", lambda x: x[0]), ("last", lambda x: x[-1])])
def test_region_metrics_are_syntaxgyms(lms, metric, oracle):
    """SyntaxGym's other region metrics over the same hand alignment (numpy's functions, as
    syntaxgym.utils.METRICS uses them)."""
    lm, model, tok = lms["wordpiece"]
    regions, attach, _, members, _ = CASES["wordpiece"]
    item = _item(regions)
    text = item.sentence("c", attach)
    (scored,) = text_surprisals(lm, [text])
    got = region_surprisals(scored, [(a, b) for _, a, b in item.region_spans("c", attach)], metric).values[0]
    bits = _oracle_bits(model, scored.tokens)
    for value, m in zip(got.tolist(), members):
        if m:
            assert value == pytest.approx(float(oracle(np.array([bits[t] for t in m]))), rel=1e-4, abs=1e-4)
        else:
            assert math.isnan(value)  # an empty region has no mean, median, ...
