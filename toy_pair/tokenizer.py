"""A fixed-vocabulary WordPiece tokenizer for the toy world.

Names (countries, capitals, languages, continents) are split into two pieces (``Pol ##and``,
``War ##saw``) so that the model has to assemble them: with one token per name the answer is
top-1 right after block 0 and there are no stages to see. Other words are whole tokens; single
letters and digits make any text encodable. Pre-tokenization splits on whitespace and
punctuation, so ``"France?"`` and ``"France ?"`` give the same tokens.

Every encoding starts with ``<s>`` (the post-processor adds it, as in training), so
``tokenizer(prompt)`` on a plain string reproduces training conditions. The chat template
renders ``User : ... Assistant : ...`` *without* ``<s>``: tokenize the rendered string with
``tokenizer(text)``; ``apply_chat_template(..., tokenize=True)`` does not add ``<s>``.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from tasks.toy_world import lexicon

SPECIALS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
PREFIX_CHARS = 3

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User : ' + message['content'] + ' ' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant : ' + message['content'] + ' ' }}"
    "{% else %}{{ raise_exception('toy chat template: roles are user and assistant') }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant :' }}{% endif %}"
)


def split_name(name: str) -> tuple[str, str]:
    """The two pieces of a name: its first ``PREFIX_CHARS`` characters and the rest."""
    k = min(PREFIX_CHARS, len(name) - 1)
    return name[:k], "##" + name[k:]


def build_vocab() -> list[str]:
    """The fixed vocabulary, in id order (specials first)."""
    lex = lexicon()
    pre = pre_tokenizers.BertPreTokenizer()
    vocab = list(SPECIALS.values())
    vocab += list(string.punctuation) + list(string.digits)
    vocab += list(string.ascii_letters) + ["##" + c for c in string.ascii_letters + string.digits]
    for w in lex["words"]:
        vocab += [piece for piece, _ in pre.pre_tokenize_str(w)]
    for name in lex["names"]:
        vocab += split_name(name)
    seen: dict[str, None] = {}
    for v in vocab:
        seen.setdefault(v, None)
    return list(seen)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = build_vocab()
    ids = {tok: i for i, tok in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(vocab=ids, unk_token=SPECIALS["unk"], max_input_chars_per_word=64))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    bos = SPECIALS["bos"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, ids[bos])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=SPECIALS["eos"],
        pad_token=SPECIALS["pad"], unk_token=SPECIALS["unk"], model_max_length=128,
        padding_side="right")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def name_pieces(tokenizer, names: list[str]) -> dict[str, list[str]]:
    """How each name is tokenized (used to check that names are split)."""
    return {n: tokenizer.tokenize(n) for n in names}
