"""Seeded sampling from a language model: several samples per prompt, reproducible one by one.

    from probes.sampling import SamplingConfig, sample

    cfg = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=32, chat_template=True, seed=0)
    samples = sample(lm, ["What is the capital of Poland ?"], n_samples=4, config=cfg)
    samples[0].text, samples[0].seed                       # "Warsaw.", the row's own seed

Every (prompt, sample index) draws from its own ``torch.Generator``, seeded by
:func:`sample_seed` from the run seed, the prompt's key (its text, unless ``keys`` are given)
and the sample index. So a sample does not depend on which other prompts share its batch, on
the batch size or on the order of the work list: a resumed run that samples only the missing
rows gets the very samples an uninterrupted run would have (up to the ~1e-7 float noise of
padding, which would have to land a uniform draw on a boundary of the cumulative distribution
to change a token).

The loop runs through ``interp``'s forward pass and key/value cache (``LM.run`` with
``use_cache=True``, then ``LM.run_continuation`` one token at a time), left-padded as
``probes.generation.generate`` is, because HF's ``generate`` draws every row of a batch from one
global generator. Each step takes the last position's logits, divides them by the temperature,
keeps the nucleus (the smallest set of most likely tokens whose probability reaches ``top_p``)
and inverts the cumulative distribution at one uniform draw of the row's generator.
``temperature=0`` is greedy (equal to ``probes.generation.generate``). A sample ends at the
tokenizer's EOS or after ``max_new_tokens``; its text is cut at the first ``stop`` string
(default a blank line, as ``generate``).

Prompts too long for the model: the prompt's first tokens are cut so that it and
``max_new_tokens`` fit (``truncate="left"``, ``Sample.truncated`` counts them) or the sample is
a :class:`probes.logprobs.Skipped` (``truncate="skip"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import PromptError
from probes.chat import chat_prompt
from probes.generation import STOP
from probes.logprobs import Skipped, fit_context

TRUNCATE = ("left", "skip")


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. ``temperature`` 0 is greedy; ``top_p`` 1 keeps the whole distribution;
    ``chat_template`` wraps each prompt as the user turn of the tokenizer's chat template;
    ``seed`` is the run seed every (prompt, sample) seed derives from."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    chat_template: bool = False
    stop: tuple[str, ...] = STOP
    seed: int = 0
    truncate: str = "left"

    def __post_init__(self):
        if not self.temperature >= 0:
            raise PromptError(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PromptError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise PromptError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.truncate not in TRUNCATE:
            raise PromptError(f"unknown truncate {self.truncate!r}; valid: {', '.join(TRUNCATE)}")


@dataclass(frozen=True)
class Sample:
    """One sample: its prompt's ``key`` and ``index`` in the list, the sample number, the seed it
    was drawn with, the new ``text`` (cut at the first stop string), ``n_tokens`` generated,
    ``finished`` (EOS or a stop string reached, not cut by ``max_new_tokens``) and the prompt
    tokens cut from the left to fit (``truncated``)."""

    key: str
    prompt_index: int
    sample: int
    seed: int
    text: str
    n_tokens: int
    finished: bool
    truncated: int


def sample_seed(run_seed: int, key: str, sample: int) -> int:
    """The seed of sample ``sample`` of the prompt ``key`` in a run seeded ``run_seed``: 63 bits of
    SHA-256, so it depends on nothing else (not the batch, not the position in the list)."""
    digest = hashlib.sha256(f"{run_seed}\x1f{key}\x1f{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def nucleus_probs(logits: Float[Tensor, "batch vocab"], temperature: float, top_p: float) -> Float[Tensor, "batch vocab"]:
    """Next-token probabilities after temperature and top-p (nucleus) filtering, in float64.
    The nucleus is the smallest set of most likely tokens whose probability reaches ``top_p``
    (the most likely token always stays), renormalised."""
    probs = torch.softmax(logits.double() / temperature, -1)
    if top_p >= 1:
        return probs
    sorted_p, order = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens
    keep_sorted = before < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True)


def _draw(probs: Float[Tensor, " vocab"], generator: torch.Generator) -> int:
    """Invert the cumulative distribution at one uniform draw (the row's own generator)."""
    u = torch.rand((), generator=generator, dtype=torch.float64)
    cdf = probs.cumsum(0)
    index = int(torch.searchsorted(cdf, u * cdf[-1], right=True))
    return min(index, probs.numel() - 1)


def _cut(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    hit = False
    for s in stop:
        if s in text:
            text, hit = text.split(s, 1)[0], True
    return text, hit


def sample(
    lm,
    prompts: Sequence[str],
    n_samples: int = 1,
    config: SamplingConfig = SamplingConfig(),
    keys: Sequence[str] | None = None,
    samples: Sequence[int] | None = None,
    batch_size: int = 8,
) -> list[Sample | Skipped]:
    """``n_samples`` samples of every prompt (prompt-major: prompt 0's samples first).

    Args:
        prompts: the prompts (user turns with ``config.chat_template``).
        keys: one string per prompt naming it in the seeds (default the prompt text); give item
            ids when two prompts share a text but should draw differently.
        samples: which sample numbers to draw (default ``range(n_samples)``), e.g. only the ones
            a resumed run still lacks; they equal the same numbers of a full run.
        batch_size: rows (prompt x sample) per forward; does not change the samples.
    """
    if lm.tokenizer is None:
        raise PromptError("sample needs the model's tokenizer (LM.from_hf(model, tokenizer))")
    keys = list(prompts) if keys is None else [str(k) for k in keys]
    if len(keys) != len(prompts):
        raise PromptError(f"keys must name every prompt: {len(keys)} keys for {len(prompts)} prompts")
    numbers = list(range(n_samples)) if samples is None else list(samples)
    if batch_size < 1:
        raise PromptError(f"batch_size must be >= 1, got {batch_size}")
    texts = [chat_prompt(lm.tokenizer, p) for p in prompts] if config.chat_template else list(prompts)
    rows: list[tuple[int, int]] = [(p, s) for p in range(len(prompts)) for s in numbers]
    fitted = {}
    for p, text in enumerate(texts):
        ids = lm.tokenizer(text)["input_ids"]
        # a prompt and max_new_tokens new tokens, the last not fed, must fit the positions
        fitted[p] = fit_context(ids, config.max_new_tokens, lm.max_positions, config.truncate, what="prompt")
    out: list[Sample | Skipped] = []
    todo = [(p, s) for p, s in rows if not isinstance(fitted[p], Skipped)]
    done: dict[tuple[int, int], Sample] = {}
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        for (p, s), result in zip(chunk, _sample_batch(lm, [fitted[p][0] for p, _ in chunk],
                                                       [sample_seed(config.seed, keys[p], s) for p, s in chunk],
                                                       config)):
            text, n_tokens, finished = result
            done[(p, s)] = Sample(keys[p], p, s, sample_seed(config.seed, keys[p], s), text, n_tokens, finished,
                                  fitted[p][1])
    for p, s in rows:
        out.append(fitted[p] if isinstance(fitted[p], Skipped) else done[(p, s)])
    return out


@torch.no_grad()
def _sample_batch(lm, prompt_ids: list[list[int]], seeds: list[int], config: SamplingConfig
                  ) -> list[tuple[str, int, bool]]:
    """``(text, n_tokens, finished)`` per row: one left-padded prompt pass, then one cached
    forward per new token for all rows until every row has ended."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    eos = lm.tokenizer.eos_token_id
    n = len(prompt_ids)
    run = lm.run(prompt_ids, positions=-1, use_cache=True)
    past, past_mask = run.past, run.attention_mask
    logits = run.logits[:, -1]
    new: list[list[int]] = [[] for _ in range(n)]
    ended = [False] * n  # EOS or a stop string
    for step in range(config.max_new_tokens):
        if config.temperature == 0:
            picks = logits.argmax(-1).tolist()
        else:
            probs = nucleus_probs(logits.float().cpu(), config.temperature, config.top_p)
            picks = [_draw(probs[i], gens[i]) for i in range(n)]
        for i, token in enumerate(picks):
            if ended[i]:
                continue
            if token == eos:
                ended[i] = True
                continue
            new[i].append(token)
            if config.stop and _cut(lm.tokenizer.decode(new[i], skip_special_tokens=True), config.stop)[1]:
                ended[i] = True
        if all(ended) or step == config.max_new_tokens - 1:
            break
        # Rows that ended keep being fed (their picks are ignored): the mask stays full, so the
        # other rows' numbers are those of their own sequence, as alone.
        ids = torch.tensor(picks, dtype=torch.long, device=past_mask.device)[:, None]
        cont = lm.run_continuation(past, past_mask, ids, torch.ones_like(ids))
        past = cont.past
        past_mask = torch.cat([past_mask, torch.ones_like(ids)], 1)
        logits = cont.logits[:, -1]
    out = []
    for i in range(n):
        text, hit = _cut(lm.tokenizer.decode(new[i], skip_special_tokens=True), config.stop)
        out.append((text, len(new[i]), ended[i] or hit))
    return out
