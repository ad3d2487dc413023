#!/usr/bin/env bash
# GPU checks on a lent machine: real ViT-B/16 extraction throughput in fp16 and bf16 (model-only vs
# pipeline, agreement with fp32) and the paper-size fusion training step from the store.
# Packages missing on that image travel as wheels in .whl/ (see README, "GPU checks").
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 COLUMNS=160
nvidia-smi --query-gpu=name,memory.total --format=csv
W=$(( $(nproc) - 2 ))
python3 -m cli.main bench --part extract --model ViT-B-16 --device cuda --precision fp16 --batch-size 256 \
  --workers $W --tracklets 150 --frames 16 --out /tmp/b16 2>&1 | tee "$OUT/extract_fp16.txt"
cp /tmp/b16/bench.json "$OUT/extract_fp16.json"
python3 -m cli.main bench --part extract --model ViT-B-16 --device cuda --precision bf16 --batch-size 256 \
  --workers $W --tracklets 150 --frames 16 --out /tmp/b16 2>&1 | tee "$OUT/extract_bf16.txt"
cp /tmp/b16/bench.json "$OUT/extract_bf16.json"
python3 -m cli.main bench --part train --device cuda --fusion-model vtf-par --train-batch 64 --epochs 2 \
  --workers $W --out /tmp/b16 2>&1 | tee "$OUT/train_bf16.txt"
cp /tmp/b16/bench.json "$OUT/train.json"
python3 -m cli.main bench --part predict --device cuda --batch-size 256 --workers $W --out /tmp/b16 2>&1 | tee "$OUT/predict.txt"
cp /tmp/b16/bench.json "$OUT/predict.json"
