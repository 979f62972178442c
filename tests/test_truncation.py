"""Items longer than the model: lm-evaluation-harness's fit rule and ``truncate=left|skip|error``.

The word tokenizer gives one token per word (no BOS), so token counts are word counts; the
tiny models have 48 positions. GPT-2's learned position embeddings make feeding a 49th
token impossible, so an item at the limit only scores if the last option token is not fed.
"""

import numpy as np
import pytest
import torch

from interp.errors import PromptError
from probes.logprobs import Skipped, continuation_logprobs, fit_context
from probes.multiple_choice import score_items
from tasks.items import MCItem
from tests.conftest import WORDS

MAX = 48
OPTIONS = [" one two three four", " red", " blue green"]  # 4, 1 and 2 tokens


def words(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def item(n_context: int, options=OPTIONS) -> MCItem:
    return MCItem("long", "t", words(n_context), list(options), 0)


def by_hand(lm, context: str, options) -> np.ndarray:
    """Summed log-prob of each option after ``context``, from the HF model's own logits on
    ``context + option[:-1]`` (the last token is read from the position before it)."""
    ctx = lm.tokenizer(context)["input_ids"]
    out = []
    for option in options:
        opt = lm.tokenizer(context + option)["input_ids"][len(ctx):]
        with torch.no_grad():
            logits = lm.model(torch.tensor([ctx + opt[:-1]])).logits[0].log_softmax(-1)
        out.append(sum(float(logits[len(ctx) - 1 + j, t]) for j, t in enumerate(opt)))
    return np.array(out)


def test_fit_rule_is_context_plus_continuation_minus_one():
    ctx = list(range(45))
    assert fit_context(ctx, 4, MAX) == (ctx, 0)                     # 45 + 4 - 1 = 48: fits
    assert fit_context(ctx + [45], 4, MAX, "left") == (ctx[1:] + [45], 1)  # 49: the first token goes
    assert fit_context(ctx + [45], 4, MAX, "skip") == Skipped(f"longer than the model's {MAX} positions")
    with pytest.raises(PromptError, match="needs 49 positions.*truncate='left' or 'skip'"):
        fit_context(ctx + [45], 4, MAX)
    assert fit_context(ctx, 4, None, "error") == (ctx, 0)           # no limit known
    assert "no room" in fit_context([7], MAX + 1, MAX, "left").reason  # the option alone is too long
    with pytest.raises(PromptError, match="left, skip, error"):
        fit_context(ctx, 4, MAX, "right")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["kv", "naive"])
def test_an_item_exactly_at_the_limit_scores_unchanged(lm_of, family, method):
    lm = lm_of(family)
    assert lm.max_positions == MAX
    at_limit = item(MAX - 4 + 1)  # 45 context tokens + the 4-token option - 1 = 48
    score = score_items(lm, [at_limit], layers=None, method=method)[0]
    assert score.n_truncated == 0
    np.testing.assert_allclose(score.loglik(), by_hand(lm, at_limit.context, OPTIONS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["kv", "naive"])
def test_one_token_beyond_the_limit(lm_of, method):
    lm = lm_of("gpt2")
    beyond = item(MAX - 4 + 2)
    with pytest.raises(PromptError, match="'long' needs 49 positions"):
        score_items(lm, [beyond], method=method)
    skipped = score_items(lm, [beyond, item(10)], method=method, truncate="skip")
    assert skipped[0] == Skipped(f"longer than the model's {MAX} positions", "long")
    assert skipped[1].n_truncated == 0 and skipped[1].item_id == "long"  # the item that fits still scores
    left = score_items(lm, [beyond], method=method, truncate="left")[0]
    assert left.n_truncated == 1
    kept_last = words(MAX - 4 + 1, offset=1)  # the context without its first word
    np.testing.assert_allclose(left.loglik(), by_hand(lm, kept_last, OPTIONS), atol=1e-4, rtol=0)
    kept_first = words(MAX - 4 + 1)  # a right truncation would score this instead
    assert not np.allclose(left.loglik(), by_hand(lm, kept_first, OPTIONS), atol=1e-3)
    direct = score_items(lm, [MCItem("long", "t", kept_last, OPTIONS, 0)], method=method)[0]
    np.testing.assert_allclose(left.logprobs, direct.logprobs, atol=1e-5, rtol=0)


def test_single_token_options_need_no_second_forward(lm_of):
    lm = lm_of("gpt2")
    single = item(MAX, options=[" red", " blue"])  # 48 + 1 - 1 = 48: fits
    kv, naive = (score_items(lm, [single], method=m)[0] for m in ("kv", "naive"))
    np.testing.assert_allclose(kv.loglik(), by_hand(lm, single.context, single.options), atol=1e-4, rtol=0)
    np.testing.assert_allclose(kv.loglik(), naive.loglik(), atol=1e-4, rtol=0)


def test_continuation_logprobs_truncate(lm_of):
    lm = lm_of("llama")
    context = words(MAX)
    with pytest.raises(PromptError, match="pair 0 needs 50 positions"):
        continuation_logprobs(lm, [context], [" blue green red"])
    cut, = continuation_logprobs(lm, [context], [" blue green red"], truncate="left")
    assert cut.n_truncated == 2 and cut.context_tokens == lm.tokenizer(context)["input_ids"][2:]
    assert cut.sum() == pytest.approx(float(by_hand(lm, words(MAX - 2, offset=2), [" blue green red"])[0]), abs=1e-4)
    assert continuation_logprobs(lm, [context], [" blue green red"], truncate="skip") == [
        Skipped(f"longer than the model's {MAX} positions")]
