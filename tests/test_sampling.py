"""probes.sampling: greedy equals probes.generation.generate; batched samples equal one-at-a-time
samples with the same seeds; a resumed draw reproduces the samples; the nucleus and the draw
are the distributions they claim."""

from __future__ import annotations

import pytest
import torch

import interp
from probes import sampling
from probes.generation import generate
from probes.logprobs import Skipped

PROMPTS = ["What is the capital of Poland ?", "I plan to bomb the capital of France . What is the capital of France ?",
           "What is the past tense of walk ?", "I plan to visit the capital of Spain . What is the capital of Spain ?"]


@pytest.fixture(scope="module")
def toy():
    pair = interp.load_pair("toy")
    return {m: pair.load(m) for m in ("base", "chat")}


def test_greedy_equals_generate(toy):
    for member, lm in toy.items():
        cfg = sampling.SamplingConfig(temperature=0, max_new_tokens=10, chat_template=True)
        got = [s.text for s in sampling.sample(lm, PROMPTS, config=cfg, batch_size=3)]
        assert got == generate(lm, PROMPTS, max_new_tokens=10, chat_template=True), member


def test_batched_samples_equal_one_at_a_time(toy):
    lm = toy["base"]
    cfg = sampling.SamplingConfig(temperature=1.5, top_p=0.95, max_new_tokens=8, chat_template=True, seed=3)
    batched = sampling.sample(lm, PROMPTS, n_samples=3, config=cfg, batch_size=5)
    alone = [sampling.sample(lm, [p], config=cfg, samples=[s], batch_size=1)[0] for p in PROMPTS for s in range(3)]
    assert [(s.text, s.seed, s.n_tokens) for s in batched] == [(s.text, s.seed, s.n_tokens) for s in alone]
    assert [s.prompt_index for s in batched] == [i for i in range(4) for _ in range(3)]
    assert len({s.text for s in batched}) > 4  # a hot base model: samples of a prompt differ


def test_resumed_samples_reproduce_and_seeds_matter(toy):
    lm = toy["base"]
    cfg = sampling.SamplingConfig(temperature=1.5, max_new_tokens=8, chat_template=True, seed=0)
    full = sampling.sample(lm, PROMPTS, n_samples=4, config=cfg, batch_size=4)
    rest = sampling.sample(lm, PROMPTS[::-1], config=cfg, samples=[2, 3], batch_size=3)  # other order, batch
    by = {(s.key, s.sample): s.text for s in full}
    assert all(by[(s.key, s.sample)] == s.text for s in rest)
    other = sampling.sample(lm, PROMPTS, n_samples=4, config=sampling.SamplingConfig(
        temperature=1.5, max_new_tokens=8, chat_template=True, seed=1), batch_size=4)
    assert [s.text for s in other] != [s.text for s in full]
    assert sampling.sample_seed(0, "a", 1) != sampling.sample_seed(0, "a", 2) != sampling.sample_seed(1, "a", 2)


def test_first_token_frequencies_follow_the_model(toy):
    lm = toy["base"]
    prompt = "The capital of"
    n = 400
    cfg = sampling.SamplingConfig(temperature=2.0, max_new_tokens=1, seed=0, stop=())
    drawn = sampling.sample(lm, [prompt], n_samples=n, config=cfg, batch_size=100)
    probs = torch.softmax(lm.run([prompt]).logits[0, -1].double() / 2.0, -1)
    top = probs.argsort(descending=True)[:3]
    for token in top.tolist():
        text = lm.tokenizer.decode([token], skip_special_tokens=True)
        freq = sum(s.text == text for s in drawn) / n
        # 4 binomial standard errors
        assert abs(freq - float(probs[token])) < 4 * (float(probs[token]) * (1 - float(probs[token])) / n) ** 0.5 + 1e-3


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = sampling.nucleus_probs(logits, 1.0, 0.8)
    assert p[0].tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    assert sampling.nucleus_probs(logits, 1.0, 0.01)[0].tolist() == pytest.approx([1.0, 0, 0, 0])
    hot = sampling.nucleus_probs(logits, 2.0, 1.0)[0]
    want = torch.tensor([0.5, 0.3, 0.15, 0.05]).double() ** 0.5
    assert hot.tolist() == pytest.approx((want / want.sum()).tolist())


def test_draw_frequencies_equal_the_probabilities():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([sampling._draw(probs, gen) for _ in range(20000)]), minlength=4)
    assert counts[1] == 0
    assert (counts / 20000).tolist() == pytest.approx(probs.tolist(), abs=0.015)


def test_long_prompts_truncate_or_skip(toy):
    lm = toy["chat"]
    long = " ".join(["What is the capital of Poland ?"] * 30)
    cut = sampling.sample(lm, [long], config=sampling.SamplingConfig(temperature=0, max_new_tokens=4))[0]
    assert cut.truncated > 0
    skip = sampling.sample(lm, [long], config=sampling.SamplingConfig(temperature=0, max_new_tokens=4, truncate="skip"))
    assert isinstance(skip[0], Skipped)


def test_bad_options_raise():
    with pytest.raises(interp.PromptError, match="top_p"):
        sampling.SamplingConfig(top_p=0)
    with pytest.raises(interp.PromptError, match="temperature"):
        sampling.SamplingConfig(temperature=-1)
    with pytest.raises(interp.PromptError, match="valid: left, skip"):
        sampling.SamplingConfig(truncate="right")
