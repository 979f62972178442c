"""TransformerLens 3.9 ``HookedTransformer`` side of the patching benchmark.

Runs under TL 3.9's own interpreter (it cannot share a venv with TL 4.x), so it imports
nothing of ours. Usage: ``python tl3_worker.py MODEL_DIR INPUTS.pt REPEATS WARMUP``; prints one
JSON object: per-call seconds, the ``[layer, pos]`` result, versions, and the max logit
difference against the HF model (weights loaded with no processing, so it is ~1e-6).
"""

import json
import os
import sys
import time
from importlib.metadata import version

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens.patching import get_act_patch_resid_pre  # noqa: E402
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights  # noqa: E402


def hooked(hf) -> HookedTransformer:
    c = hf.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
        d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
        normalization_type="LN", eps=c.layer_norm_epsilon, original_architecture="GPT2LMHeadModel",
        default_prepend_bos=False)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    return model.eval()


def main(model_dir: str, inputs: str, repeats: int, warmup: int) -> None:
    torch.set_num_threads(1)
    data = torch.load(inputs)
    corrupted, clean, a, b = data["corrupted"], data["clean"], data["a"], data["b"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(model_dir).eval()
    model = hooked(hf)

    def metric(logits):
        return logits[0, -1, a] - logits[0, -1, b]

    def sweep():
        _, cache = model.run_with_cache(clean)
        return get_act_patch_resid_pre(model, corrupted, cache, metric)

    with torch.no_grad():
        logit_diff = float((model(corrupted) - hf(corrupted, use_cache=False).logits).abs().max())
        for _ in range(warmup):
            sweep()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = sweep()
            times.append(time.perf_counter() - start)
    print(json.dumps({
        "times_s": times, "result": result.tolist(), "max_logit_diff_vs_hf": logit_diff,
        "transformer_lens": version("transformer-lens"),
        "torch": torch.__version__, "transformers": transformers.__version__,
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
