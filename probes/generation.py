"""Free generation (greedy) and mapping a generated answer back to the options.

    texts = generate(lm, prompts, max_new_tokens=24, chat_template=True)
    option = map_to_option(texts[0], [" yes", " no"])   # index of the first option mentioned

``generate`` is greedy (``do_sample=False``), batched with left padding. With
``chat_template=True`` each prompt becomes the user turn of the tokenizer's chat template
(:func:`probes.chat.chat_prompt`). The text is cut at the first ``stop`` string (default a
blank line, as lm-evaluation-harness's ``until``) so that a few-shot prompt's next
demonstration is not read as the answer.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import torch

from interp.errors import PromptError
from probes.chat import chat_prompt

STOP = ("\n\n",)
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def generate(
    lm,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    chat_template: bool = False,
    stop: Sequence[str] = STOP,
    batch_size: int = 8,
) -> list[str]:
    """Greedy continuations of ``prompts`` (new text only, cut at the first ``stop``)."""
    if lm.tokenizer is None:
        raise PromptError("generate needs the model's tokenizer (LM.from_hf(model, tokenizer))")
    if not lm.local_modules:  # HF's generate runs this process's model, which holds no weights then
        from interp.nnsight_backend import remote_unsupported

        raise remote_unsupported("generation (probes.generation.generate)",
                                 "score the options instead (score_items; studies.benchmarks: --generate 0), or "
                                 "generate with backend='torch'")
    if chat_template:
        prompts = [chat_prompt(lm.tokenizer, p) for p in prompts]
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, _ = lm.to_tokens(list(prompts[start:start + batch_size]))
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        with torch.no_grad():
            new = lm.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=lm.pad_id, eos_token_id=lm.tokenizer.eos_token_id,
            )[:, ids.shape[1]:]
        for row in new:
            text = lm.tokenizer.decode(row, skip_special_tokens=True)
            for s in stop:
                text = text.split(s, 1)[0]
            out.append(text)
    return out


def normalize(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def map_to_option(text: str, options: Sequence[str | Sequence[str]]) -> int | None:
    """Index of the option mentioned first in ``text`` (after :func:`normalize`, whole words),
    or ``None`` if none is. An option may be a list of surface forms (e.g. ``[" B", "Paris"]``);
    at the same position the longer form wins ("new york" over "new")."""
    hay = f" {normalize(text)} "
    best: tuple[int, int, int] | None = None  # (position, -length, option)
    for index, option in enumerate(options):
        forms = [option] if isinstance(option, str) else list(option)
        for form in forms:
            needle = normalize(form)
            if not needle:
                continue
            pos = hay.find(f" {needle} ")
            if pos >= 0 and (best is None or (pos, -len(needle)) < best[:2]):
                best = (pos, -len(needle), index)
    return None if best is None else best[2]
