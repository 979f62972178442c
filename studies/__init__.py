"""Studies: one module (or package) per study, runnable as ``python -m studies.NAME --pair PAIR``.

Each study is thin glue: a task (``tasks``) -> readouts of the forward pass (``interp``,
``probes``) -> tidy results -> figures (``figures``). Output conventions shared by every study
live in :mod:`studies._common` (entry point, options, run folder, progress bars),
:mod:`studies._results` (resumable ``results.jsonl``), :mod:`studies._shards` (chunks of the
work list, ``--shard i/n``), :mod:`studies._identity` (run fingerprints, ``meta.json``) and,
for the studies that early-decode blocks, :mod:`studies._lens` (``--lens logit|tuned|PATH``).

Studies:

- ``ffn_capitals``: Merullo, Eickhoff & Pavlick (2023) on a base model and its RL-tuned
  counterpart: early decoding of the capital task by layer, FFN ablation and o-vector
  transplant, and which sublayer (attention or FFN) writes the answer.
- ``benchmarks``: benchmark accuracy of base vs chat with paired statistics, by layer.
- ``calibration``: calibration of base vs chat (ECE, reliability, temperature, P(True)), by layer.
"""
