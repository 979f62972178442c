"""The chat-template option the studies share: ``--chat-template off,on`` and the tokenizer
whose template renders the prompts (the chat member's, used for both models)."""

from __future__ import annotations

import argparse

from studies._common import comma_list


def on_off(text: str) -> tuple[bool, ...]:
    """An argparse ``type``: ``"off,on"`` -> ``(False, True)``."""
    parts = comma_list(text)
    bad = [p for p in parts if p not in ("on", "off")]
    if bad:
        raise argparse.ArgumentTypeError(f"invalid choice {bad[0]!r}; choose from on, off")
    return tuple(p == "on" for p in parts)


def template_tokenizer(pair):
    """The chat member's tokenizer (its template renders prompts for both models)."""
    import transformers

    from interp import LoadError
    from probes.chat import has_chat_template

    pair.check()  # a member folder without a model: say so, not what its tokenizer lacks
    source = pair.spec.source("chat")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise LoadError(f"could not load the tokenizer of {source!r} for its chat template ({type(err).__name__}); "
                        "use --chat-template off, or check the path / hub id") from None
    if not has_chat_template(tok):
        raise LoadError(f"the tokenizer of {source!r} has no chat template; use --chat-template off")
    return tok
