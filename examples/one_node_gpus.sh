#!/bin/bash
# A study on one node with several GPUs: one shard process per GPU, each seeing only its GPU.
#
#   bash examples/one_node_gpus.sh            # as many shards as GPUs
#
# Why CUDA_VISIBLE_DEVICES and not torchrun / accelerate launch: shards share nothing (each
# loads its own copy of the model and writes its own two files), so no process group is needed;
# and each process sees its GPU as cuda:0, so every shard runs the same `--device cuda`, which is
# part of the run's fingerprint: shards with `--device cuda:0`, `--device cuda:1`, ... would be
# different runs, and --summary-only would refuse to put them together.
set -euo pipefail
N=${N:-$(nvidia-smi -L | wc -l)}
OUT=${OUT:-runs/ffn_capitals/llama2-7b}
ARGS=(--pair llama2-7b --dtype bfloat16 --device cuda --out "$OUT")
mkdir -p "$OUT"
for i in $(seq 1 "$N"); do
    CUDA_VISIBLE_DEVICES=$((i - 1)) python -m studies.ffn_capitals "${ARGS[@]}" --shard "$i/$N" \
        > "$OUT/shard-$i.log" 2>&1 &
done
wait   # every shard finished (a failed one: see its log, rerun it alone; it resumes)
python -m studies.ffn_capitals "${ARGS[@]}" --summary-only
