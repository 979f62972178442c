"""Wrapping a prompt as the user turn of a chat template."""

from __future__ import annotations

from interp.errors import InterpError


class NoChatTemplate(InterpError):
    """The tokenizer has no chat template to render."""


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    """The template's text of ``messages``, without a leading BOS when the tokenizer adds one
    itself (otherwise the model would read two)."""
    if not has_chat_template(tokenizer):
        raise NoChatTemplate("the tokenizer has no chat template; use --chat-template off")
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    bos = tokenizer.bos_token
    if bos and rendered.startswith(bos):
        ids = tokenizer("a")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            rendered = rendered[len(bos):]
    return rendered


def chat_prompt(tokenizer, text: str) -> str:
    """``text`` as one user turn with the assistant's generation prompt, ready to continue.

    A BOS the template writes is dropped when the tokenizer adds one itself (otherwise the
    model would read two). Trailing whitespace is kept as the template renders it.
    """
    return _render(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)


def chat_exchange(tokenizer, prompt: str, response: str) -> str:
    """A user turn ``prompt`` and an assistant turn ``response`` as the template renders the
    whole conversation (with the assistant's end-of-turn tokens, which reward models read);
    BOS as in :func:`chat_prompt`."""
    return _render(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                   add_generation_prompt=False)


def chat_turns(tokenizer, messages: list[dict]) -> str:
    """A conversation (``{"role", "content"}`` dicts ending with a user turn) with the
    assistant's generation prompt, ready to continue; BOS as in :func:`chat_prompt`."""
    return _render(tokenizer, list(messages), add_generation_prompt=True)
