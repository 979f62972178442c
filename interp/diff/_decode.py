"""One token-level decoding loop for the model-diff readouts: greedy or seeded sampling from
any next-token logits function (one model, one model under a steering write, or two models'
amplified difference).

The loop recomputes the whole sequence at every step (no key/value cache): it is shared by
readouts whose logits come from hooked runs (``interp.add`` writes at every position) or from
two models at once, where a cache per model would buy little for the short answers read here.
Stopping is per row at the end-of-sequence token (kept, it is the model's own choice) or after
``max_new_tokens``; finished rows keep being run with their last token but their tokens are
not extended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.errors import InterpError, PromptError

# logits_fn(list of token-id lists) -> [batch, vocab] next-token logits at each row's last token
LogitsFn = Callable[[list[list[int]]], Float[Tensor, "batch vocab"]]


def check_decoding(max_new_tokens: int, temperature: float) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InterpError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not temperature > 0:
        raise InterpError(f"temperature must be > 0 (use greedy=True for argmax decoding), got {temperature!r}")


def prompt_ids(lm, prompts: Sequence[str] | Sequence[Sequence[int]]) -> list[list[int]]:
    """Each prompt's token ids (strings through ``lm``'s tokenizer, as ``LM.run`` encodes them)."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise PromptError("prompts must be a non-empty list of strings or of token-id lists")
    return [[int(t) for t in s] for s in lm._sequences(list(prompts))]


def decode(
    logits_fn: LogitsFn,
    prompts: list[list[int]],
    eos_id: int | None,
    max_new_tokens: int = 32,
    greedy: bool = True,
    temperature: float = 1.0,
    seed: int | Sequence[int] = 0,
) -> list[list[int]]:
    """New token ids per prompt: argmax (``greedy``) or a draw from ``softmax(logits / temperature)``.

    Sampling uses one ``torch.Generator`` per row, seeded by ``seed[i]`` (an int ``seed`` gives
    row ``i`` the seed ``seed + i``): a row's tokens depend on its seed only, not on the global
    RNG, the batch it is decoded in or the rows before it.
    """
    check_decoding(max_new_tokens, temperature)
    seeds = [seed + i for i in range(len(prompts))] if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != len(prompts):
        raise InterpError(f"got {len(seeds)} seeds for {len(prompts)} prompts; pass one per prompt or one int")
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    seqs = [list(p) for p in prompts]
    new: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(max_new_tokens):
        active = [i for i, d in enumerate(done) if not d]
        if not active:
            break
        logits = logits_fn([seqs[i] for i in active]).float().cpu()
        if greedy:
            picks = logits.argmax(-1).tolist()
        else:
            probs = (logits / temperature).softmax(-1)
            picks = [int(torch.multinomial(p, 1, generator=generators[i])) for i, p in zip(active, probs)]
        for i, token in zip(active, picks):
            seqs[i].append(int(token))
            new[i].append(int(token))
            if eos_id is not None and token == eos_id:
                done[i] = True
    return new


def last_logits(lm, seqs: list[list[int]], interventions=None) -> Float[Tensor, "batch vocab"]:
    """``lm``'s next-token logits after each sequence (one batched, left-padded run)."""
    with torch.no_grad():
        return lm.run(seqs, positions=-1, interventions=interventions).logits[:, -1]
