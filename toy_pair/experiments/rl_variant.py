"""One RL variant on the shipped base and reward model, with checkpoints monitored every 10 steps.

``python -m toy_pair.experiments.rl_variant NAME [models=DIR] [reward=DIR] key=value ...`` trains
the chat stage with ``RLConfig`` fields overridden by ``key=value`` (one thread, seed from the
config), and writes ``toy_pair/experiments/runs/NAME.json``: the overrides, the card claims that
fail at the end, few-shot accuracy, the held-out verb's refusal, and every 10 steps the greedy
refusal rate on train benign / train harmful / held-out benign cues, the held-out benign accuracy
and the held-out harmful verb's refusal. The tuned model goes to ``runs/NAME/`` (not committed).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import tasks.toy_world as w
from toy_pair.common import set_determinism
from toy_pair.evaluate import accuracy, refusal_rate
from toy_pair.rl import RLConfig, train_rl

ROOT = Path(__file__).resolve().parents[2]
RUNS = Path(__file__).resolve().parent / "runs"
HELD_OUT_VERB = "cut all electricity in"


def main(argv: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_toy_pair import chat_claims, hand_accuracy, hand_refusal  # the card's own checks

    name, overrides = argv[0], dict(a.split("=", 1) for a in argv[1:])
    models = Path(overrides.pop("models", ROOT / "models" / "toy"))
    reward_dir = Path(overrides.pop("reward", models / "reward"))
    cfg = RLConfig()
    cfg = replace(cfg, **{k: type(getattr(cfg, k))(v) for k, v in overrides.items()})
    set_determinism(cfg.seed, 1)
    tok = AutoTokenizer.from_pretrained(models / "base")
    base = AutoModelForCausalLM.from_pretrained(models / "base").eval()
    rm = AutoModelForSequenceClassification.from_pretrained(reward_dir).eval()
    train_benign, train_harmful = w.prompts("chat_benign", "train")[::7], w.prompts("chat_harmful", "train")[::7]
    test_benign = w.prompts("chat_benign", "test")[::5]
    held_out = [r for r in w.prompts("chat_harmful", "test") if r["verb"] == HELD_OUT_VERB]

    def monitor(step, policy):
        if step % 10:
            return None
        d = {"ref_train_benign": refusal_rate(policy, tok, train_benign),
             "ref_train_harmful": refusal_rate(policy, tok, train_harmful),
             "ref_test_benign": refusal_rate(policy, tok, test_benign),
             "acc_test_benign": accuracy(policy, tok, test_benign),
             "ref_heldout_verb": refusal_rate(policy, tok, held_out)}
        print(step, {k: round(v, 2) for k, v in d.items()}, flush=True)
        return d

    t = time.time()
    chat, history = train_rl(base, rm, tok, cfg, on_step=monitor)
    chat.save_pretrained(RUNS / name)
    chat = AutoModelForCausalLM.from_pretrained(RUNS / name).eval()  # fresh: the hand_* helpers cache by model
    res = {"cfg": {k: str(v) for k, v in overrides.items()}, "models": str(models), "s": round(time.time() - t),
           "history": [h for h in history if "ref_train_benign" in h],
           "claims": chat_claims(chat, base, tok), "few": hand_accuracy(chat, tok, w.prompts("few", "test")),
           "heldout_verb": hand_refusal(chat, tok, held_out)}
    RUNS.mkdir(exist_ok=True)
    (RUNS / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps({k: v for k, v in main(sys.argv[1:]).items() if k != "history"}, indent=1))
