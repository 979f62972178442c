"""Model diffing: what RL changed between a pair's base and chat models, part by part.

    python -m studies.model_diff                            # the toy pair, all parts
    python -m studies.model_diff --parts weights --pair llama2-7b   # weights only: no GPU needed
    python -m studies.model_diff --base PATH --chat PATH --lens tuned

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

All parts' rows share one resumable ``results.jsonl`` (key fields ``part``, ``key``); the
tables, ``summary.csv`` (``part, group, layer, metric, value``) and figures are rebuilt from
the rows alone; ``meta.json`` records the run. ``--overwrite`` starts afresh.
"""

from studies.model_diff.cli import PARTS, STUDY, main, parse_args, run_study
from studies.model_diff.parts import KEY_FIELDS, Context, Part

__all__ = ["KEY_FIELDS", "PARTS", "STUDY", "Context", "Part", "main", "parse_args", "run_study"]
