"""What a reward model reads for a (prompt, response) pair: the input formats and overlong inputs.

Formats (``prompt`` is the user's text, not pre-rendered; ``response`` the answer):

- ``pair``: ``tokenizer(prompt, response)``, the tokenizer's two-segment encoding
  (``[CLS] prompt [SEP] response [SEP]`` with token types), which the OpenAssistant DeBERTa
  reward models were trained on. Only for encoder reward models: a decoder tokenizer's pair
  encoding (Llama: ``<s> prompt <s> response``) is nothing a decoder reward model was trained on.
- ``chat``: the tokenizer's chat template of a user turn ``prompt`` and an assistant turn
  ``response`` (with the assistant's end-of-turn tokens), BOS once
  (:func:`probes.chat.chat_exchange`). Decoder reward models, the toy reward model.
- ``concat``: ``prompt + " " + response`` as one text (any model; for prompts that are
  already rendered, e.g. the toy world's ``"User : ... Assistant :"``).
- ``auto``: the format the model was trained with: its registry entry's, else ``pair`` for
  encoders, ``chat`` when the tokenizer has a chat template, else ``concat``.

Overlong inputs (more tokens than the model's positions), ``truncate``: ``"error"`` (default)
raises naming the pair; ``"left"`` drops the prompt's leading words until the input fits
(the response is never cut; a pair whose response alone does not fit raises); ``"skip"``
leaves the pair unscored (NaN). Scores count both (``n_truncated``, ``n_skipped``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from interp.errors import PromptError
from probes.chat import NoChatTemplate, chat_exchange, has_chat_template

Format = Literal["auto", "pair", "chat", "concat"]
FORMATS = ("auto", "pair", "chat", "concat")
Truncate = Literal["error", "left", "skip"]
TRUNCATE = ("error", "left", "skip")


def is_encoder(rm) -> bool:
    from interp.encoder import EncoderRewardModel

    return isinstance(rm, EncoderRewardModel)


def resolve_format(rm, fmt: str, trained: str | None = None) -> str:
    """``fmt`` checked for this model, ``auto`` replaced by the format it was trained with
    (``trained``, from the registry, else the default for its kind; see the module docstring)."""
    if fmt not in FORMATS:
        raise PromptError(f"unknown reward input format {fmt!r}; valid: {', '.join(FORMATS)}")
    tok = rm.tokenizer
    if tok is None:
        raise PromptError(f"reward model {rm.name!r} has no tokenizer: scoring text needs one")
    if fmt == "auto":
        fmt = trained or ("pair" if is_encoder(rm) else "chat" if has_chat_template(tok) else "concat")
    valid = valid_formats(rm)
    if fmt == "pair" and not is_encoder(rm):
        raise PromptError(f"format 'pair' (tokenizer(prompt, response)) is for encoder reward models (DeBERTa); "
                          f"{rm.name!r} is a decoder that reads one sequence; valid formats: {', '.join(valid)}")
    if fmt == "chat" and not has_chat_template(tok):
        raise NoChatTemplate(f"format 'chat': the tokenizer of {rm.name!r} has no chat template; "
                             f"valid formats: {', '.join(valid)}")
    return fmt


def valid_formats(rm) -> list[str]:
    """The formats this model can read (besides ``auto``)."""
    out = ["pair"] if is_encoder(rm) else []
    if rm.tokenizer is not None and has_chat_template(rm.tokenizer):
        out.append("chat")
    return out + ["concat"]


def generation_suffix(tokenizer) -> str:
    """What the chat template writes after a user turn to start the assistant's (the toy's
    ``"Assistant :"``, Llama 3's ``<|start_header_id|>assistant<|end_header_id|>``), stripped;
    ``""`` when it cannot tell."""
    turn = [{"role": "user", "content": "x"}]
    without = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=False)
    with_prompt = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    return with_prompt[len(without):].strip() if with_prompt.startswith(without) else ""


def check_not_rendered(tokenizer, prompts, what: str = "format 'chat'", fix: str = "format='concat'") -> None:
    """Raise if a prompt already ends with the template's assistant prompt: the chat format
    would wrap it in a second template (``User : User : ... Assistant : Assistant : ...``)."""
    suffix = generation_suffix(tokenizer)
    if not suffix:
        return
    bad = [i for i, p in enumerate(prompts) if p.rstrip().endswith(suffix)]
    if bad:
        raise PromptError(f"prompts {bad[:5]} already end with the chat template's assistant prompt {suffix!r}: "
                          f"{what} renders the template itself and would wrap them twice; pass the user's text, "
                          f"or {fix} for prompts that are already rendered")


def render(tokenizer, fmt: str, prompt: str, response: str) -> str | tuple[str, str]:
    """The text the model reads: a ``(prompt, response)`` tuple for ``pair``, else one string."""
    if fmt == "pair":
        return prompt, response
    if fmt == "chat":
        return chat_exchange(tokenizer, prompt, response)
    if fmt == "concat":
        return prompt + " " + response
    raise PromptError(f"unknown reward input format {fmt!r}; valid: {', '.join(FORMATS[1:])}")


def token_ids(tokenizer, rendered: str | tuple[str, str]) -> list[int]:
    """The token ids of a rendered input, with the tokenizer's default special tokens (as HF's
    own ``tokenizer(text)`` / ``tokenizer(question, answer)`` and the models' cards)."""
    enc = tokenizer(*rendered) if isinstance(rendered, tuple) else tokenizer(rendered)
    return list(enc["input_ids"])


@dataclass(frozen=True)
class Fitted:
    """A pair ready to score: what the model reads, its length, and how many leading prompt
    words were cut (``0``: none)."""

    rendered: str | tuple[str, str]
    n_tokens: int
    words_cut: int = 0


def fit(tokenizer, fmt: str, prompt: str, response: str, max_positions: int | None, truncate: str,
        what: str = "pair") -> Fitted | None:
    """The pair as the model reads it, fitted into ``max_positions`` under ``truncate`` (see the
    module docstring); ``None`` for a skipped pair."""
    if truncate not in TRUNCATE:
        raise PromptError(f"unknown truncate {truncate!r}; valid: {', '.join(TRUNCATE)}")
    rendered = render(tokenizer, fmt, prompt, response)
    n = len(token_ids(tokenizer, rendered))
    if max_positions is None or n <= max_positions:
        return Fitted(rendered, n)
    if truncate == "skip":
        return None
    if truncate == "error":
        raise PromptError(f"{what} has {n} tokens in format {fmt!r}, more than the reward model's {max_positions} "
                          "positions; pass truncate='left' (cut the prompt's first words) or 'skip'")
    starts = [m.start() for m in re.finditer(r"\S+", prompt)] + [len(prompt)]

    def cut(k: int) -> Fitted:
        rendered = render(tokenizer, fmt, prompt[starts[k]:], response)
        return Fitted(rendered, len(token_ids(tokenizer, rendered)), k)

    shortest = cut(len(starts) - 1)
    if shortest.n_tokens > max_positions:
        raise PromptError(f"{what}: the response alone needs {shortest.n_tokens} tokens in format {fmt!r}, more than "
                          f"the reward model's {max_positions} positions; truncate='left' never cuts the response: "
                          "use truncate='skip' or shorten it")
    lo, hi = 1, len(starts) - 1  # the fewest words to cut: the first k whose input fits
    while lo < hi:
        mid = (lo + hi) // 2
        if cut(mid).n_tokens <= max_positions:
            hi = mid
        else:
            lo = mid + 1
    fitted = cut(lo)
    while fitted.n_tokens > max_positions:  # token counts need not fall monotonically with words cut
        fitted = cut(fitted.words_cut + 1)
    return fitted
