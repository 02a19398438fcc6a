#!/usr/bin/env bash
# Fit an EPIC bank with several processes (GPUs) through `accelerate launch`.
#
#   examples/distributed_fit.sh MODEL DATASET OUTPUT_DIR [NUM_PROCESSES] [extra `epic-hf fit` flags...]
#
#   # 8 GPUs, ImageNet streamed from the Hub, bf16 backbone:
#   examples/distributed_fit.sh microsoft/resnet-50 imagenet-1k runs/in1k 8 --streaming --split train \
#       --mixed-precision bf16 --batch-size 256 --train-batch-size 4096
#
# NUM_PROCESSES defaults to the number of visible GPUs (1 without any). Every process indexes a
# disjoint share of the data; the shares are merged by sample key, so the bank does not depend
# on the number of processes. Run the same command again after an interruption: it resumes
# from OUTPUT_DIR. For several machines, add accelerate's --num_machines/--machine_rank/
# --main_process_ip/--main_process_port through ACCELERATE_ARGS (see docs/distributed.md).
set -euo pipefail

if [[ $# -lt 3 ]]; then
    sed -n '2,15p' "$0" >&2
    exit 2
fi
MODEL=$1
DATASET=$2
OUTPUT_DIR=$3
shift 3
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    NUM_PROCESSES=$1
    shift
else
    NUM_PROCESSES=$( (nvidia-smi -L 2>/dev/null || true) | grep -c '^GPU' || true)
    [[ ${NUM_PROCESSES:-0} -ge 1 ]] || NUM_PROCESSES=1
fi

LAUNCH=(--num_processes "$NUM_PROCESSES" --num_machines "${NUM_MACHINES:-1}" --dynamo_backend no)
if [[ $NUM_PROCESSES -gt 1 || ${NUM_MACHINES:-1} -gt 1 ]]; then
    LAUNCH+=(--multi_gpu)
fi
# shellcheck disable=SC2086  # ACCELERATE_ARGS is deliberately word-split
exec accelerate launch "${LAUNCH[@]}" ${ACCELERATE_ARGS:-} -m epic_hf fit "$MODEL" "$DATASET" --output-dir "$OUTPUT_DIR" "$@"
