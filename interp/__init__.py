"""interp: one hook-based forward-pass API over Hugging Face causal LMs.

    import interp
    lm = interp.load("toy/base")
    run = lm.run(["The capital of Poland is"], capture=["resid_post", "mlp_out"], positions=-1)
    run.cache.stack("resid_post")          # [layer, batch, pos, d_model]
    interp.lens.logit_lens(lm, run.cache["blocks.3.hook_resid_post"])
    interp.lens.TunedLens.load(folder, lm).decode(run.cache["blocks.3.hook_resid_post"], layer=3)

    rm = interp.load_reward("toy/reward")  # reward models: the same hooks, run.scores [batch, n_labels]
    interp.lens.reward_lens(rm, rm.run(texts, capture=["resid_post"], positions=-1).cache.stack("resid_post"))
"""

from interp import direct, encoder, lens, patching, reward, transplant
from interp.adapters import ARCHITECTURES, Arch
from interp.cache import ActivationCache, Run
from interp.errors import InterpError, LoadError, NoHeadHooks, PromptError, UnknownHook, UnsupportedArchitecture
from interp.hook_names import block_hook
from interp.identity import model_identity
from interp.interventions import add, replace
from interp.loading import Pair, load, load_pair
from interp.model import LM
from interp.registry import PAIRS, PairSpec
from interp.reward import RewardLM, RewardRun, load_reward

__all__ = [
    "ARCHITECTURES", "ActivationCache", "Arch", "InterpError", "LM", "LoadError", "NoHeadHooks", "PAIRS", "Pair",
    "PairSpec", "PromptError", "Run", "UnknownHook", "UnsupportedArchitecture", "add", "block_hook",
    "RewardLM", "RewardRun", "direct", "encoder", "lens", "load", "load_pair", "load_reward", "model_identity",
    "patching", "replace", "reward", "transplant",
]
