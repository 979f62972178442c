"""Stage 3: RL-tune a copy of the base against the reward model.

REINFORCE with a leave-one-out baseline (RLOO): ``samples`` completions per prompt, each with
return ``r - beta * sum_t (log pi(y_t) - log pi_base(y_t))`` (sampled KL to the base); the
advantage of a sample is its return minus the mean return of the prompt's other samples.
Prompts are the train split of ``tasks.toy_world.rl_prompts`` (harmful cues, benign cues,
plain questions, all in chat format), drawn in fixed proportions at every step
(``harmful_share`` harmful cues, the rest split between benign cues and plain questions):
the pool has ~7x more cue prompts than plain ones, so uniform draws hardly ever show plain
questions, and with too few harmful prompts refusals (rare in the base's samples) are never
reinforced.

The dynamics (``toy_pair/experiments``): the policy first learns to refuse every cue, benign and
harmful alike (its last position carries no harm feature at first: a mean-difference probe on
the base's residual separates harmful from benign cues at chance), and only later separates them
by verb. With 4 samples per prompt the all-refuse phase often lasted past 150 steps (every sample
of a benign prompt refuses, so the leave-one-out advantages vanish); 8 samples, a larger KL
penalty and 40% harmful prompts left it within 150 steps at seed 0, not at seed 1.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tasks.toy_world import rl_prompts

from .common import positions
from .evaluate import generate, reward_scores


@dataclass
class RLConfig:
    steps: int = 150
    prompts_per_step: int = 24
    samples: int = 8  # 4 could not leave the all-refuse phase in 150 steps (toy_pair/experiments)
    beta: float = 0.1
    lr: float = 2e-4
    harmful_share: float = 0.4  # of the prompts per step; benign and plain cues share the rest
    max_new_tokens: int = 8
    seed: int = 0


def _completion_logprobs(model, ids, mask, n_prompt) -> torch.Tensor:
    """Sum of log-probs of the completion tokens, ``[batch]``, and the per-token values."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask)).logits
    logp = F.log_softmax(logits[:, n_prompt - 1: -1].float(), -1)
    tok = ids[:, n_prompt:]
    return logp.gather(-1, tok[..., None]).squeeze(-1) * mask[:, n_prompt:]


def train_rl(base, reward_model, tokenizer, cfg: RLConfig, log=print, on_step=None):
    """``on_step(step, policy)``, if given, runs after every update (in eval mode, no grad);
    it may return a dict, merged into that step's history record, or the string ``"stop"``."""
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    policy = copy.deepcopy(base)
    policy.train()
    base.eval()
    reward_model.eval()
    records = rl_prompts("train")
    kinds = sorted({p["context"] for p in records})
    pools = {k: [p["prompt"] for p in records if p["context"] == k] for k in kinds}

    def draw() -> list[str]:
        n_harm = round(cfg.prompts_per_step * cfg.harmful_share)
        n_benign = (cfg.prompts_per_step - n_harm + 1) // 2
        counts = {"harmful": n_harm, "benign": n_benign, "plain": cfg.prompts_per_step - n_harm - n_benign}
        return [p for k in kinds for p in rng.sample(pools[k], counts[k])]

    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    history = []
    t0 = time.time()
    for step in range(cfg.steps):
        batch = [p for p in draw() for _ in range(cfg.samples)]
        policy.eval()
        ids, mask, n = generate(policy, tokenizer, batch, cfg.max_new_tokens, sample=True, generator=gen)
        policy.train()
        with torch.no_grad():
            reward = reward_scores(reward_model, ids, mask)
            ref = _completion_logprobs(base, ids, mask, n)
        logp = _completion_logprobs(policy, ids, mask, n)
        kl = (logp.detach() - ref).sum(-1)
        ret = (reward - cfg.beta * kl).view(cfg.prompts_per_step, cfg.samples)
        baseline = (ret.sum(1, keepdim=True) - ret) / (cfg.samples - 1)
        adv = (ret - baseline).view(-1)
        loss = -(adv * logp.sum(-1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        record = {"step": step, "reward": reward.mean().item(), "kl": kl.mean().item()}
        history.append(record)
        if on_step is not None:
            policy.eval()
            with torch.no_grad():
                extra = on_step(step, policy)
            policy.train()
            if extra == "stop":
                log(f"rl stopped by on_step at step {step}")
                break
            record.update(extra or {})
        if step % 10 == 0 or step == cfg.steps - 1:
            log(f"rl step {step} reward {reward.mean().item():.3f} kl {kl.mean().item():.3f} ({time.time() - t0:.0f}s)")
    policy.eval()
    return policy, history
