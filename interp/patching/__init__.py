"""Activation patching (exact, batched) and attribution patching (linear approximation).

    from interp.patching import patch_sweep, attribution_sweep, compare, baseline_metric, logit_diff
    metric = lambda logits: logits[:, paris].mean() - logits[:, rome].mean()   # [batch, vocab] -> scalar
    metric = logit_diff(paris, rome)  # the same, and the sweep computes only those two logits
    exact = patch_sweep(lm, corrupted, clean, metric, hook="resid_pre")      # [layer, pos]
    approx = attribution_sweep(lm, corrupted, clean, metric, hook="resid_pre")
    compare(approx, exact - baseline_metric(lm, corrupted, metric))

Modules: ``sweep`` (exact sweeps: entry points and engine), ``patches`` (building a chunk's
patches), ``unembed`` (deferred, batched unembedding), ``kv`` (patched runs on a key/value
prefix, the final FFN at the last position), ``packed`` (many such runs in one sequence),
``chunks`` (grouping patched runs into forwards), ``metrics`` (metrics that name the logits they read),
``attribution`` (gradient estimate and comparison), ``resume`` (starting a forward at a cached
layer), ``inputs`` (argument checks). Per-head patching reads ``blocks.{l}.attn.hook_z``.
"""

from interp.patching.attribution import Comparison, attribution_heads, attribution_sweep, compare
from interp.patching.metrics import TokenMetric, logit, logit_diff
from interp.patching.sweep import baseline_metric, patch_heads, patch_layers, patch_sweep

__all__ = [
    "Comparison", "TokenMetric", "attribution_heads", "attribution_sweep", "baseline_metric", "compare", "logit",
    "logit_diff", "patch_heads", "patch_layers", "patch_sweep",
]
