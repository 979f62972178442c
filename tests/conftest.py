"""Shared fixtures: tiny random-init models built from real configs, and a word tokenizer.

Nothing is downloaded: each family's HF config class is instantiated at a tiny size and
the weights are random (seeded). ``FAMILIES`` is the list every core test parametrises over.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch
import transformers

import interp

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

WORDS = (
    "the capital of france is paris poland warsaw spain madrid italy rome germany berlin "
    "q a what ? : . , and or not is was were be to in on at for with from by i we you they "
    "plan visit bomb city country language french polish spanish italian german sorry cannot "
    "help user assistant one two three four five six seven eight nine ten red blue green"
).split()


def build_tokenizer(folder) -> transformers.PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer saved to ``folder`` (TransformerLens needs a folder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    fast.save_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder)


VOCAB = 4 + len(WORDS)

CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(
        n_layer=3, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=48, bos_token_id=2, eos_token_id=3),
    "llama": lambda: transformers.LlamaConfig(
        num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=48, bos_token_id=2, eos_token_id=3),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(
        num_hidden_layers=3, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, max_position_embeddings=48, bos_token_id=2, eos_token_id=3),
    "gpt_neox_sequential": lambda: transformers.GPTNeoXConfig(
        num_hidden_layers=3, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, max_position_embeddings=48, use_parallel_residual=False, bos_token_id=2, eos_token_id=3),
    "gptj": lambda: transformers.GPTJConfig(
        n_layer=3, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=48, rotary_dim=8, bos_token_id=2, eos_token_id=3),
    "mistral": lambda: transformers.MistralConfig(
        num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=48, bos_token_id=2, eos_token_id=3),
}
FAMILIES = list(CONFIGS)


def random_model(family: str, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[family]()).eval()
    # Random init leaves norms at identity; perturb them so a missing norm would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return transformers.AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="session")
def lm_of(tokenizer):
    """``lm_of(family)`` -> a cached ``interp.LM`` of that family with the word tokenizer."""
    cache = {}

    def make(family: str) -> interp.LM:
        if family not in cache:
            cache[family] = interp.LM.from_hf(random_model(family), tokenizer, name=f"random-{family}")
        return cache[family]

    return make


@pytest.fixture(scope="session")
def lm(family, lm_of):
    return lm_of(family)


PROMPTS = [
    "the capital of france is",
    "q : what is the capital of poland ? a :",
    "i plan to visit the city",
]


def harness_loglik(model, tok, norm, context: str, option: str) -> dict:
    """An oracle for option scoring: lm-evaluation-harness's loglikelihood of ``option`` after
    ``context`` with the plain HF model on the whole sequence alone (no padding, no cache).

    The context's trailing whitespace moves to the option; the option's tokens are those of
    ``encode(context + option)`` after ``encode(context)``. ``norm`` is the model's final norm
    (by HF's own module name), for a logit lens of each block.

    Returns ``n_tokens``; ``by_layer``: summed log-prob at blocks ``0 .. L-2`` then the
    output (which is also block ``L-1``'s lens); ``greedy``: every token is the argmax.
    """
    stripped = context.rstrip()
    ctx_ids = tok(stripped)["input_ids"]
    whole = tok(stripped + context[len(stripped):] + option)["input_ids"]
    cont = whole[len(ctx_ids):]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([whole]), output_hidden_states=True)
        rows = slice(len(ctx_ids) - 1, len(whole) - 1)  # the positions that predict the option's tokens
        # hidden_states[l + 1] is block l's output except the last (normalised by HF): use the logits there
        per_layer = [model.get_output_embeddings()(norm(h[0, rows])) for h in out.hidden_states[1:-1]]
        target = torch.tensor(cont)
        lp = [x.log_softmax(-1)[torch.arange(len(cont)), target] for x in per_layer + [out.logits[0, rows]]]
    return {"n_tokens": len(cont), "by_layer": np.array([float(x.sum()) for x in lp]),
            "greedy": bool((out.logits[0, rows].argmax(-1) == target).all())}


def harness_chars(option: str) -> int:
    """lm-evaluation-harness's acc_norm length: the choice's characters, without the one
    leading space that is its target delimiter."""
    return len(option) - 1 if option.startswith(" ") else len(option)


def png_rgb(path) -> np.ndarray:
    """A PNG read back as ``[height, width, 3]`` floats in [0, 1]."""
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3]


def color_share(rgb: np.ndarray, hex_color: str, tol: float = 0.03) -> float:
    """Fraction of pixels within ``tol`` (per channel) of ``hex_color`` (``"#4C72B0"``)."""
    target = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return float((np.abs(rgb - target) <= tol).all(-1).mean())


def assert_figure_files(stem, colors=(), min_ink: float = 0.02) -> np.ndarray:
    """``stem.png`` and ``stem.pdf`` hold a drawn figure: the PNG is not blank (at least
    ``min_ink`` of its pixels are not white) and shows each of ``colors``; the PDF has one
    page. Returns the PNG's pixels."""
    import re
    from pathlib import Path

    stem = Path(stem)
    rgb = png_rgb(stem.with_name(stem.name + ".png"))
    ink = float((rgb < 0.95).any(-1).mean())
    assert ink >= min_ink, f"{stem}.png is nearly blank ({ink:.3%} ink)"
    for color in colors:
        assert color_share(rgb, color) > 1e-3, f"{stem}.png shows no {color}"
    pdf = stem.with_name(stem.name + ".pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1
    return rgb
