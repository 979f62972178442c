"""Token distribution shift (URIAL, Lin et al. 2023): at which answer tokens does the chat model
leave the base model's ranking?

    responses = chat_responses(chat, prompts, kinds=kinds, max_new_tokens=32)   # chat loaded alone
    rows = score_shift(base, responses)                                          # then base alone
    by_pos = fractions_by_position(rows); top = most_shifted_tokens(rows)

The chat model answers each prompt (greedy, or sampled with a seed) and scores its own answer
by teacher forcing, keeping its full next-token log-probabilities at every answer position.
The base model then reads the same prompt + answer (one forward per response) and each answer
position gets:

* ``base_rank``: 1 + the number of vocabulary tokens whose base logit is strictly greater than
  that of the chat model's token, exactly over the full vocabulary (URIAL reads a truncated
  top-k list). Ties count in the token's favour: a token tied with base's top-1 has rank 1.
* ``shift_class``: ``unshifted`` (rank 1, chat's token is base's top-1), ``marginal`` (rank 2-3)
  or ``shifted`` (rank > 3), URIAL's three classes.
* ``kl``: KL(chat || base) of the two next-token distributions at that position, in nats.

An answer ends at the end-of-sequence token, which is kept as a position (whether base would
stop there is part of the shift), or after ``max_new_tokens``. Memory: the chat model's
log-probs are kept for every answer position, ``positions x vocab x 4`` bytes (a 32k
vocabulary: 128 kB per position), so a study reads large prompt sets in blocks.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.diff._decode import decode, last_logits, prompt_ids
from interp.errors import InterpError, PromptError
from interp.loading import vocab_difference

SHIFT_CLASSES: tuple[str, ...] = ("unshifted", "marginal", "shifted")
MODES: tuple[str, ...] = ("greedy", "sample")
MARGINAL_MAX_RANK = 3  # URIAL: ranks 2-3 are marginal, above 3 shifted


def shift_class(rank: int) -> str:
    """URIAL's class of a base rank (1 = base's top-1)."""
    if rank < 1:
        raise InterpError(f"ranks start at 1 (base's top-1), got {rank}")
    return "unshifted" if rank == 1 else "marginal" if rank <= MARGINAL_MAX_RANK else "shifted"


def vocab_hash(lm) -> str:
    """A short hash of ``lm``'s tokenizer vocabulary (token -> id), to refuse mixing tokenizers."""
    if lm.tokenizer is None:
        raise PromptError("token shift needs the model's tokenizer (LM.from_hf(model, tokenizer))")
    items = sorted(lm.tokenizer.get_vocab().items())
    return hashlib.sha256(repr(items).encode()).hexdigest()[:16]


def check_same_tokenizer(a, b) -> None:
    """Raise InterpError unless ``a`` and ``b`` share one tokenizer vocabulary and vocabulary size."""
    if vocab_hash(a) != vocab_hash(b) or a.d_vocab != b.d_vocab:
        difference = vocab_difference(a.tokenizer.get_vocab(), b.tokenizer.get_vocab(), names=("the first", "the second"))
        raise InterpError(
            f"{a.name!r} and {b.name!r} have different tokenizers ({difference}; vocab sizes {a.d_vocab} vs "
            f"{b.d_vocab}); per-token comparisons need one tokenizer: pick a pair that shares it"
        )


@dataclass
class ChatResponse:
    """One answer of the chat model and its own next-token log-probs along it.

    Attributes:
        prompt_id, prompt_kind: the caller's labels (e.g. ``"capital/Poland"``, ``"harmful"``).
        mode: ``"greedy"`` or ``"sample"``.
        prompt: the prompt's token ids (as ``LM.run`` encodes the text).
        response: the answer's token ids (ending at EOS when the model stopped).
        chat_logprobs: log-softmax of the chat model's logits at each answer position
            ``[n_response, vocab]`` (float32, cpu): row ``t`` predicts ``response[t]``.
        vocab: :func:`vocab_hash` of the chat model's tokenizer.
    """

    prompt_id: str
    prompt_kind: str
    mode: str
    prompt: list[int]
    response: list[int]
    chat_logprobs: Float[Tensor, "n_response vocab"]
    vocab: str


def response_logits(lm, prompts: Sequence[list[int]], responses: Sequence[list[int]],
                    batch_size: int = 8) -> list[Float[Tensor, "n_response vocab"]]:
    """Teacher-forced float32 logits (cpu) at each response position of ``prompt + response``:
    row ``t`` is the distribution that predicts ``response[t]``."""
    empty = [i for i, r in enumerate(responses) if len(r) == 0]
    if empty:
        raise PromptError(f"responses {empty[:10]} are empty (no tokens); every prompt needs a response to score")
    out = []
    for start in range(0, len(prompts), batch_size):
        ps, rs = prompts[start:start + batch_size], responses[start:start + batch_size]
        seqs = [list(p) + list(r) for p, r in zip(ps, rs)]
        with torch.no_grad():
            logits = lm.run(seqs).logits.float().cpu()  # [batch, longest, vocab], left-padded
        longest = logits.shape[1]
        for row, (p, r) in enumerate(zip(ps, rs)):
            first = longest - len(r) - 1  # the column of the prompt's last token (left padding)
            out.append(logits[row, first:first + len(r)])
    return out


def prompt_seed(seed: int, prompt_id: str) -> int:
    """The sampling seed of one prompt: from the run's seed and the prompt's id, so a sampled
    answer does not depend on the batch or block it was drawn in."""
    return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:12], 16)


def _responses(chat, prompts, greedy: bool, max_new_tokens: int, temperature: float, seeds: list[int],
               batch_size: int) -> list[list[int]]:
    """New token ids per prompt, cut after the first EOS. Greedy uses HF ``generate`` (key/value
    cache, as ``probes.generation``); sampling uses the seeded loop of ``interp.diff._decode``."""
    eos = chat.tokenizer.eos_token_id
    if not greedy or not chat.local_modules:  # off NDIF HF's generate has no weights: the loop, one run a token
        return [r for start in range(0, len(prompts), batch_size)
                for r in decode(lambda s: last_logits(chat, s), prompts[start:start + batch_size], eos,
                                max_new_tokens, greedy=greedy, temperature=temperature,
                                seed=seeds[start:start + batch_size])]
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, _ = chat.to_tokens(prompts[start:start + batch_size])
        with torch.no_grad():
            new = chat.model.generate(input_ids=ids.to(chat.device), attention_mask=mask.to(chat.device),
                                      max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=chat.pad_id,
                                      eos_token_id=eos)[:, ids.shape[1]:].tolist()
        for row in new:
            out.append(row[:row.index(eos) + 1] if eos is not None and eos in row else row)
    return out


def chat_responses(
    chat,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    prompt_ids_: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    max_new_tokens: int = 32,
    modes: Sequence[str] = ("greedy",),
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
) -> list[ChatResponse]:
    """The chat model's answers to ``prompts`` in each of ``modes`` (``greedy``; ``sample``:
    temperature sampling seeded by :func:`prompt_seed` of ``seed`` and the prompt's id) and its
    log-probs along them.

    ``prompt_ids_`` / ``kinds`` label each prompt (default its index / ``"all"``).
    """
    seqs = prompt_ids(chat, prompts)
    ids = [str(i) for i in range(len(seqs))] if prompt_ids_ is None else [str(i) for i in prompt_ids_]
    kinds = ["all"] * len(seqs) if kinds is None else list(kinds)
    if len(ids) != len(seqs) or len(kinds) != len(seqs):
        raise InterpError(f"got {len(seqs)} prompts but {len(ids)} prompt ids and {len(kinds)} kinds; pass one per prompt")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise InterpError(f"unknown modes {bad or '(none given)'}; valid: {', '.join(MODES)}")
    vocab = vocab_hash(chat)
    out = []
    for mode in modes:
        responses = _responses(chat, seqs, mode == "greedy", max_new_tokens, temperature,
                               [prompt_seed(seed, i) for i in ids], batch_size)
        logits = response_logits(chat, seqs, responses, batch_size)
        out += [ChatResponse(i, k, mode, p, r, lg.log_softmax(-1), vocab)
                for i, k, p, r, lg in zip(ids, kinds, seqs, responses, logits)]
    return out


def base_ranks(logits: Float[Tensor, "n vocab"], tokens: Int[Tensor, " n"]) -> Int[Tensor, " n"]:
    """1 + how many tokens have a strictly greater logit than ``tokens`` at each row."""
    own = logits.gather(-1, tokens[:, None])
    return (logits > own).sum(-1) + 1


def kl_divergence(p_log: Float[Tensor, "n vocab"], q_log: Float[Tensor, "n vocab"]) -> Float[Tensor, " n"]:
    """KL(p || q) in nats from log-probs (terms with p = 0 contribute 0)."""
    p = p_log.exp()
    return torch.where(p > 0, p * (p_log - q_log), torch.zeros_like(p)).sum(-1)


def score_shift(base, responses: Sequence[ChatResponse], batch_size: int = 8) -> list[dict]:
    """One row per response position: the base model's rank of the chat model's token, its shift
    class and KL(chat || base) (see the module docstring)."""
    if not responses:
        raise PromptError("no responses to score; chat_responses(...) returned none (empty prompt set?)")
    vocab = vocab_hash(base)
    if any(r.vocab != vocab for r in responses):
        raise InterpError(f"the responses were made with another tokenizer than {base.name!r}'s; per-token "
                          "comparisons need one tokenizer: pick a pair that shares it")
    if responses[0].chat_logprobs.shape[-1] != base.d_vocab:
        raise InterpError(f"the chat model's vocabulary has {responses[0].chat_logprobs.shape[-1]} entries and "
                          f"{base.name!r}'s {base.d_vocab}; a pair must share its vocabulary")
    logits = response_logits(base, [r.prompt for r in responses], [r.response for r in responses], batch_size)
    tok = base.tokenizer
    rows = []
    for r, lg in zip(responses, logits):
        tokens = torch.tensor(r.response)
        ranks = base_ranks(lg, tokens).tolist()
        base_log = lg.log_softmax(-1)
        kls = kl_divergence(r.chat_logprobs, base_log).tolist()
        chat_lp = r.chat_logprobs.gather(-1, tokens[:, None])[:, 0].tolist()
        base_lp = base_log.gather(-1, tokens[:, None])[:, 0].tolist()
        for t, token in enumerate(r.response):
            rows.append({"prompt_id": r.prompt_id, "prompt_kind": r.prompt_kind, "mode": r.mode, "position": t,
                         "token_id": token, "token": tok.convert_ids_to_tokens(token), "base_rank": ranks[t],
                         "shift_class": shift_class(ranks[t]), "kl": kls[t], "chat_logprob": chat_lp[t],
                         "base_logprob": base_lp[t]})
    return rows


def fractions_by_position(rows: Sequence[dict], max_position: int | None = None) -> list[dict]:
    """Per (mode, prompt_kind, position) and over all positions (``position="all"``): the number
    of positions and the fraction in each shift class, and the mean KL. Positions at or past
    ``max_position`` are pooled into ``position=max_position`` (``">=N"`` rows would be sparse)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        pos = row["position"] if max_position is None else min(row["position"], max_position)
        groups[(row["mode"], row["prompt_kind"], pos)].append(row)
        groups[(row["mode"], row["prompt_kind"], "all")].append(row)
    out = []
    for (mode, kind, pos), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]).zfill(6))):
        counts = Counter(r["shift_class"] for r in group)
        out.append({"mode": mode, "prompt_kind": kind, "position": pos, "n": len(group),
                    **{c: counts[c] / len(group) for c in SHIFT_CLASSES},
                    "mean_kl": sum(r["kl"] for r in group) / len(group)})
    return out


def most_shifted_tokens(rows: Sequence[dict], top: int = 20) -> list[dict]:
    """Per (mode, prompt_kind): the chat tokens most often shifted, with how often they occur,
    their shifted count and fraction and mean KL, most shifted first (ties: more frequent)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["mode"], row["prompt_kind"], row["token"])].append(row)
    by_kind: dict[tuple, list[dict]] = defaultdict(list)
    for (mode, kind, token), group in groups.items():
        shifted = sum(r["shift_class"] == "shifted" for r in group)
        if shifted:
            by_kind[(mode, kind)].append({"mode": mode, "prompt_kind": kind, "token": token, "n": len(group),
                                          "n_shifted": shifted, "frac_shifted": shifted / len(group),
                                          "mean_kl": sum(r["kl"] for r in group) / len(group)})
    out = []
    for key in sorted(by_kind):
        out += sorted(by_kind[key], key=lambda d: (-d["n_shifted"], -d["n"], d["token"]))[:top]
    return out
