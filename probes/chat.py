"""Wrapping a prompt as the user turn of a chat template."""

from __future__ import annotations

from interp.errors import InterpError


class NoChatTemplate(InterpError):
    """The tokenizer has no chat template to render."""


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer, text: str) -> str:
    """``text`` as one user turn with the assistant's generation prompt, ready to continue.

    A BOS the template writes is dropped when the tokenizer adds one itself (otherwise the
    model would read two). Trailing whitespace is kept as the template renders it.
    """
    if not has_chat_template(tokenizer):
        raise NoChatTemplate("the tokenizer has no chat template; use --chat-template off")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    bos = tokenizer.bos_token
    if bos and rendered.startswith(bos):
        ids = tokenizer("a")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            rendered = rendered[len(bos):]
    return rendered
