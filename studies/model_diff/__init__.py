"""Model diffing: what RL changed between a pair's base and chat models, part by part.

    python -m studies.model_diff                            # the toy pair, all parts
    python -m studies.model_diff --parts weights --pair llama2-7b   # weights only: no GPU needed
    python -m studies.model_diff --base PATH --chat PATH --lens tuned
    python -m studies.model_diff --parts token_shift --base PATH --chat PATH --shift-prompts FILE.jsonl

Parts (``--parts``, run in order; ``cli.PARTS``), each writing its table into the run folder
(``runs/model_diff/<pair>/`` or ``--out``):

- ``weights`` (``weights.csv``, one row per stored tensor; :mod:`studies.model_diff.weights`):
  relative change, fraction of entries changed (``--tol``; exact at 0, and after bf16
  rounding) and the spectrum of the change, streamed from the safetensors files
  (:func:`interp.diff.weight_diff`); figure ``weight_change_heatmap`` (block x module).
- ``activations`` (``activations.csv``, one row per corpus x block x position bucket;
  :mod:`studies.model_diff.activations`): residual difference, cosine, linear CKA and KL both
  ways between the two models' decoded distributions (``--lens``) on neutral text and on the
  toy prompts by kind (plain, benign, harmful); figure ``activation_divergence_by_layer``.
- ``token_shift`` (``token_shift.csv``, one row per prompt x mode x answer position, with
  ``token_shift_positions.csv`` and ``token_shift_tokens.csv``; :mod:`studies.model_diff.token_shift`):
  URIAL's token distribution shift: the chat model answers (greedy and sampled), the base
  model ranks each answer token exactly (``unshifted`` / ``marginal`` / ``shifted``) and gives
  KL(chat || base); ``--shift-*`` options; figure ``token_shift_positions``.
- ``adl`` (``adl_tokens.csv``, ``adl_targets.csv``, ``adl_steering.csv``, ``adl_tokens.md``;
  :mod:`studies.model_diff.adl`): the activation difference lens, the mean residual difference
  chat - base on neutral text per layer, decoded by each member's lens and added as a steering
  vector; ``--adl-*`` options; its means are cached in ``adl/``; figure ``adl_target_rank``.
- ``amplify`` (opt-in: ``--parts amplify`` or ``all``; ``amplify.csv``, one row per prompt x mode
  x alpha; :mod:`studies.model_diff.amplify`): answers under logit diff amplification, both
  models in memory; ``--amp-*`` options; figure ``amplify_refusal_rate`` (by alpha and kind).

All parts' rows share one resumable ``results.jsonl`` (key fields ``part``, ``key``); the
tables, ``summary.csv`` (``part, group, layer, metric, value``) and figures are rebuilt from
the rows alone; ``meta.json`` records the run. ``--overwrite`` starts afresh. ``--shard i/n``
runs only with ``--parts token_shift`` (by blocks of prompts; the other parts' statistics are
one pass per model over everything), then ``--summary-only`` merges the shards.
"""

from studies.model_diff.cli import PARTS, STUDY, main, parse_args, run_study
from studies.model_diff.parts import KEY_FIELDS, Context, Part

__all__ = ["KEY_FIELDS", "PARTS", "STUDY", "Context", "Part", "main", "parse_args", "run_study"]
