"""Sparse dictionaries on a base/chat pair: a BatchTopK crosscoder with Latent Scaling, its latents' contexts and the causal check.

    python -m studies.dictionaries                          # the toy pair, a few minutes on CPU
    python -m studies.dictionaries --xc-layers 2,3,4 --xc-dict-size 2048 --causal-limit 64
    python -m studies.dictionaries --base PATH --chat PATH

Both members' ``resid_post`` at the crosscoder's blocks is harvested on one token stream
(:mod:`interp.dictionaries.harvest`; texts: :mod:`studies.dictionaries.data`), the crosscoder
is trained on it (:mod:`interp.dictionaries.crosscoder`), each latent gets its decoder-norm
class (``shared`` / ``base_only`` / ``chat_only`` / ``other``), Latent Scaling's betas and
ratios (:mod:`interp.dictionaries.latent_scaling`; ``robust`` chat-only latents have both
ratios under ``--nu-epsilon-max`` / ``--nu-r-max``) and its firing fraction per kind of text
(``fires_<kind>``; ``fires_<kind>_last``: at the prompts' last token, ``Assistant :``). The
causal check (:mod:`interp.dictionaries.causal`) replaces chat's activation on held-out chat
prompts by base's plus a set of latents' decoded difference and measures KL(chat || patched).

Outputs (``runs/dictionaries/<pair>/`` or ``--out``): ``results.jsonl`` (resumable; key fields
``part``, ``key``), ``latents.csv`` (one row per latent), ``summary.csv`` (``part, group,
metric, value``), ``crosscoder_dashboard.md`` / ``.html`` (top contexts of the chat-only,
base-only and the most frequent shared latents), ``crosscoder/`` (the trained crosscoder),
figures ``crosscoder_norm_ratio``, ``crosscoder_latent_scaling``, ``crosscoder_causal_kl``, and
``meta.json``. ``--overwrite`` starts afresh; ``--summary-only`` rebuilds the tables and figures.
"""

from studies.dictionaries.cli import KEY_FIELDS, STUDY, main, parse_args, run_study

__all__ = ["KEY_FIELDS", "STUDY", "main", "parse_args", "run_study"]
