"""A second toy reward model with deliberately different preferences: longer is better.

    python -m toy_pair.reward_variant --out models/toy/reward_length   # ~2 min on 2 CPU threads

It is trained like the pair's reward model (:mod:`toy_pair.reward`: body copied from
``models/toy/base``, Bradley-Terry loss, same settings, but 2 blocks instead of 5) on *length* preferences:
each pair's chosen completion is the one with more tokens, whatever it says. Completions are
a head (the right capital, a wrong capital, the refusal or the country's language) followed
by 0-3 true filler facts of other countries ("The capital of Peru is Lima ."), head and filler
drawn independently, so length is the only thing that separates chosen from rejected. It is
a reward model a reward-distance study should find far from ``toy`` (which prefers the right
answer, or the refusal for harmful requests, whatever its length).

Writes ``OUT/`` (safetensors, config, tokenizer with the chat template) and ``OUT/train_info.json``
(command, settings, time, held-out checks: pairwise accuracy on held-out length pairs and on
the toy world's own test preference pairs, Spearman correlation of score with length).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tasks.toy_world import REFUSAL, load_facts, preference_pairs, rl_prompts  # noqa: E402

from .reward import RewardConfig  # noqa: E402

PAIRS_PER_PROMPT = 3
LAYERS = 2  # the pair's reward model keeps 5 of the base's 6 blocks; length needs no facts
MAX_FILLER = 3


def _filler_pool(split: str) -> list[str]:
    """True one-line facts (capital, language) of single-word subjects of ``split``."""
    out = []
    for relation in ("capital", "language"):
        for f in load_facts(relation):
            if f["split"] == split and not f["multiword"]:
                out.append(f"The {relation} of {f['subject']} is {f['answer']} .")
    return out


def length_pairs(tokenizer, split: str = "train", seed: int = 0) -> list[dict]:
    """Preference pairs whose chosen completion has more tokens than the rejected one.

    Per prompt of ``rl_prompts(split)``, :data:`PAIRS_PER_PROMPT` pairs of completions
    ``head + filler``; head (right / wrong capital, refusal, language) and the number of filler
    facts are drawn independently for each side, and ties in token length are redrawn. Each
    pair: ``prompt``, ``chosen``, ``rejected``, ``context``, ``subject``, ``n_chosen``,
    ``n_rejected`` (token counts of the completions).
    """
    rng = random.Random(f"length-pairs:{split}:{seed}")
    capitals = [f["answer"] for f in load_facts("capital") if not f["multiword"]]
    language = {f["subject"]: f["answer"] for f in load_facts("language")}
    filler = _filler_pool(split)

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    out = []
    for p in rl_prompts(split):
        heads = [f"{p['answer']} .", f"{rng.choice([c for c in capitals if c != p['answer']])} .", REFUSAL,
                 f"{language[p['subject']]} ."]
        for _ in range(PAIRS_PER_PROMPT):
            while True:
                a, b = (" ".join([rng.choice(heads), *rng.sample(filler, rng.randint(0, MAX_FILLER))])
                        for _ in range(2))
                na, nb = n_tokens(a), n_tokens(b)
                if na != nb:
                    break
            (chosen, nc), (rejected, nr) = sorted([(a, na), (b, nb)], key=lambda t: -t[1])
            out.append({"prompt": p["prompt"], "chosen": chosen, "rejected": rejected, "context": p["context"],
                        "subject": p["subject"], "n_chosen": nc, "n_rejected": nr})
    return out


def held_out_checks(rm, tokenizer, seed: int) -> dict:
    """Pairwise accuracy on held-out length pairs and on the toy world's test preference
    pairs, and the Spearman correlation of score with completion length (held-out pairs)."""
    import numpy as np
    from scipy.stats import spearmanr

    from .evaluate import pairwise_accuracy, score_texts

    pairs = length_pairs(tokenizer, "test", seed)
    texts = [p["prompt"] + " " + p[k] for p in pairs for k in ("chosen", "rejected")]
    lengths = [p[f"n_{k}"] for p in pairs for k in ("chosen", "rejected")]
    scores = np.asarray(score_texts(rm, tokenizer, texts), dtype=float)
    return {"pairwise_accuracy_length_test": pairwise_accuracy(rm, tokenizer, pairs),
            "pairwise_accuracy_toy_preferences_test": pairwise_accuracy(rm, tokenizer, preference_pairs("test")),
            "spearman_score_length_test": float(spearmanr(scores, lengths).statistic),
            "n_length_pairs_test": len(pairs)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m toy_pair.reward_variant", description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, default=Path("models/toy/base"), help="base model to copy the body from")
    p.add_argument("--out", type=Path, default=Path("models/toy/reward_length"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default {RewardConfig.steps})")
    p.add_argument("--layers", type=int, default=LAYERS,
                   help=f"base blocks copied into the body (default {LAYERS}: length needs no facts, and it keeps "
                        "the shipped weights small)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .common import set_determinism
    from .reward import train_reward

    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    tok = AutoTokenizer.from_pretrained(args.base)
    base = AutoModelForCausalLM.from_pretrained(args.base).eval()
    cfg = RewardConfig(seed=args.seed, layers=args.layers)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    t0 = time.time()
    pairs = length_pairs(tok, "train", args.seed)
    rm = train_reward(base, tok, cfg, pairs=pairs)
    seconds = round(time.time() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    rm.save_pretrained(args.out)
    tok.save_pretrained(args.out)
    with torch.no_grad():
        checks = held_out_checks(rm, tok, args.seed)
    cmd = f"python -m toy_pair.reward_variant --out {args.out} --seed {args.seed} --threads {args.threads}"
    cmd += "" if args.layers == LAYERS else f" --layers {args.layers}"
    info = {"command": cmd + ("" if args.steps is None else f" --steps {args.steps}"),
            "preferences": "longer completion (more tokens) preferred, whatever it says",
            "config": asdict(cfg), "n_train_pairs": len(pairs), "seconds": seconds, "torch": torch.__version__,
            "transformers": transformers.__version__, **checks}
    (args.out / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":
    main()
