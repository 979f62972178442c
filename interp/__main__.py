"""``python -m interp``: a 10-second check that the core works on this machine.

Builds a random-init GPT-2-shaped model (nothing downloaded), captures the residual stream
and FFN updates, and early-decodes the last position at every layer.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import transformers

import interp


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=200, n_positions=32,
                                    bos_token_id=0, eos_token_id=0)
    lm = interp.LM.from_hf(transformers.GPT2LMHeadModel(config), name="random-gpt2")
    prompts = [torch.randint(0, 200, (n,)) for n in (7, 11)]
    run = lm.run(prompts, capture=["resid_post", "mlp_out"], positions=-1)
    print(lm)
    print("hook names:", len(lm.hook_names()), "e.g.", lm.hook_names()[:3])
    print("resid_post stack:", tuple(run.cache.stack("resid_post").shape), "(layer, batch, pos, d_model)")
    readout = interp.lens.readout(lm, run.cache.stack("resid_post"), k=3)
    final = (interp.lens.logit_lens(lm, run.cache["blocks.3.hook_resid_post"]) - run.logits).abs().max()
    print("top-3 ids per layer, prompt 0:", readout.top_ids[:, 0, 0].tolist())
    print(f"final-layer lens vs model logits, max |diff| = {final:.2e}")


if __name__ == "__main__":
    main()
