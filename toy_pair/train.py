"""Rebuild the toy pair: ``python -m toy_pair.train [--stage base|reward|chat|all]``.

``--stage eval`` only re-evaluates. Stages read their inputs from ``--out`` (reward and chat start from ``OUT/base``, chat also
needs ``OUT/reward``), write ``OUT/{base,reward,chat}`` and finally ``OUT/eval.json`` and
``OUT/README.md``. ``--steps N`` caps every stage at N steps (smoke tests).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from tasks.toy_world import data_sha256  # noqa: E402

from .card import write_card, write_eval  # noqa: E402
from .common import set_determinism  # noqa: E402
from .evaluate import evaluate_all  # noqa: E402
from .pretrain import PretrainConfig, pretrain  # noqa: E402
from .reward import RewardConfig, train_reward  # noqa: E402
from .rl import RLConfig, train_rl  # noqa: E402
from .tokenizer import build_tokenizer  # noqa: E402

STAGES = ("base", "reward", "chat", "all", "eval")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m toy_pair.train", description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=STAGES, default="all")
    p.add_argument("--out", type=Path, default=Path("models/toy"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=None, help="cap on steps of every stage")
    p.add_argument("--base-steps", type=int, default=None)
    p.add_argument("--reward-steps", type=int, default=None)
    p.add_argument("--chat-steps", type=int, default=None)
    p.add_argument("--chat-lr", type=float, default=None, help="RL learning rate")
    p.add_argument("--eval-limit", type=int, default=None, help="max prompts per evaluation set")
    p.add_argument("--no-eval", action="store_true", help="skip evaluation and the model card")
    return p.parse_args(argv)


def _steps(default: int, specific: int | None, cap: int | None) -> int:
    n = specific if specific is not None else default
    return min(n, cap) if cap is not None else n


def configs(args) -> dict:
    return {
        "base": replace(PretrainConfig(seed=args.seed), steps=_steps(PretrainConfig.steps, args.base_steps, args.steps)),
        "reward": replace(RewardConfig(seed=args.seed), steps=_steps(RewardConfig.steps, args.reward_steps, args.steps)),
        "chat": replace(RLConfig(seed=args.seed), steps=_steps(RLConfig.steps, args.chat_steps, args.steps),
                        lr=RLConfig.lr if args.chat_lr is None else args.chat_lr),
    }


def reproduce_command(args, threads: dict[str, int] | None = None) -> str:
    """The command(s) that rebuild all stages with these settings (whatever stage ran last).

    ``threads`` maps each stage to the thread count it ran with (``train_log.json``): the thread
    count changes float sums, and RL amplifies such differences, so when stages ran with
    different counts one command per stage is given, each with its own ``--threads``.
    """
    def command(threads_: int, stage: str | None = None) -> str:
        cmd = f"python -m toy_pair.train --out {args.out} --seed {args.seed} --threads {threads_}"
        if stage is not None:
            cmd += f" --stage {stage}" + (" --no-eval" if stage != "chat" else "")
        for flag in ("steps", "base_steps", "reward_steps", "chat_steps", "chat_lr", "eval_limit"):
            if getattr(args, flag) is not None:
                cmd += f" --{flag.replace('_', '-')} {getattr(args, flag)}"
        return cmd

    threads = {s: threads.get(s, args.threads) for s in ("base", "reward", "chat")} if threads else {}
    if len(set(threads.values())) <= 1:
        return command(next(iter(threads.values()), args.threads))
    return "\n".join(command(n, stage) for stage, n in threads.items())


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_determinism(args.seed, args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cfg = configs(args)
    log_path = out / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    seconds = log.get("seconds", {})
    threads = log.get("threads", {})
    stages = {"all": ("base", "reward", "chat"), "eval": ()}.get(args.stage, (args.stage,))
    history = log.get("rl_history")  # kept unless the chat stage runs again

    if "base" in stages:
        t = time.time()
        tok = build_tokenizer()
        base = pretrain(tok, cfg["base"])
        base.save_pretrained(out / "base")
        tok.save_pretrained(out / "base")
        seconds["base"] = round(time.time() - t, 1)
        threads["base"] = args.threads
    tok = AutoTokenizer.from_pretrained(out / "base")
    base = AutoModelForCausalLM.from_pretrained(out / "base").eval()
    if "reward" in stages:
        t = time.time()
        torch.manual_seed(args.seed)
        rm = train_reward(base, tok, cfg["reward"])
        rm.save_pretrained(out / "reward")
        tok.save_pretrained(out / "reward")
        seconds["reward"] = round(time.time() - t, 1)
        threads["reward"] = args.threads
    if "chat" in stages:
        t = time.time()
        rm = AutoModelForSequenceClassification.from_pretrained(out / "reward").eval()
        chat, history = train_rl(base, rm, tok, cfg["chat"])
        chat.save_pretrained(out / "chat")
        tok.save_pretrained(out / "chat")
        seconds["chat"] = round(time.time() - t, 1)
        threads["chat"] = args.threads
    log_path.write_text(json.dumps({"seconds": seconds, "threads": threads, "rl_history": history}, indent=1) + "\n")

    if args.no_eval or not all((out / s).exists() for s in ("base", "reward", "chat")):
        return {}
    t = time.time()
    results = evaluate_all(out, limit=args.eval_limit)
    seconds["eval"] = round(time.time() - t, 1)
    results["meta"] = {
        "command": reproduce_command(args, threads),
        "seed": args.seed, "threads": threads or args.threads, "seconds": seconds,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "data_sha256": data_sha256(), "config": {k: asdict(v) for k, v in cfg.items()},
    }
    write_eval(out, results)
    write_card(out, results)
    print(json.dumps({k: v for k, v in results.items() if k != "meta"}, indent=1))
    return results


if __name__ == "__main__":
    main()
