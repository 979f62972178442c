"""The length-biased toy reward model: its preference pairs and the shipped weights."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from probes.reward import load_scorer
from tasks.toy_world import REFUSAL
from toy_pair.evaluate import pairwise_accuracy
from toy_pair.reward_variant import length_pairs, parse_args

TOY = Path(__file__).resolve().parents[1] / "models" / "toy"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TOY / "base")


def test_pairs_prefer_length_only(tok):
    pairs = length_pairs(tok, "train")
    assert all(p["n_chosen"] > p["n_rejected"] for p in pairs)
    for p in pairs[:50]:
        assert len(tok(p["chosen"], add_special_tokens=False)["input_ids"]) == p["n_chosen"]
    # what a completion says is drawn independently of its side: the refusal heads the chosen
    # and the rejected side about equally often
    refusal = Counter(side for p in pairs for side in ("chosen", "rejected") if p[side].startswith(REFUSAL))
    assert 0.8 < refusal["chosen"] / refusal["rejected"] < 1.6
    assert length_pairs(tok, "train") == pairs  # deterministic
    plain = {split: {p["subject"] for p in length_pairs(tok, split) if p["context"] == "plain"}
             for split in ("train", "test")}
    assert plain["test"] and plain["train"].isdisjoint(plain["test"])  # held-out countries


def test_shipped_model_is_length_biased_and_registered(tok):
    rm = AutoModelForSequenceClassification.from_pretrained(TOY / "reward_length").eval()
    held_out = length_pairs(tok, "test")[::10]
    with torch.no_grad():
        assert pairwise_accuracy(rm, tok, held_out) >= 0.95
    info = json.loads((TOY / "reward_length" / "train_info.json").read_text())
    assert info["pairwise_accuracy_length_test"] >= 0.95 and info["config"]["layers"] == 2
    # the registry entry reads it in the format it was trained in (chat template = training ids)
    scorer = load_scorer("toy-length")
    prompt = "What is the capital of Chile ?"
    short, padded = "Santiago .", "Santiago . The capital of Peru is Lima ."
    scores = scorer.score([prompt, prompt], [short, padded]).scores
    with torch.no_grad():
        direct = [float(rm(input_ids=torch.tensor([tok(f"User : {prompt} Assistant : {r}")["input_ids"]])).logits[0, 0])
                  for r in (short, padded)]
    assert scores[1] > scores[0] + 1
    assert scores.tolist() == pytest.approx(direct, abs=1e-4)


def test_cli_defaults():
    args = parse_args([])
    assert args.out == Path("models/toy/reward_length") and args.layers == 2 and args.steps is None
