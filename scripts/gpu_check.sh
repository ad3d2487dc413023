#!/usr/bin/env bash
# GPU checks on a lent machine: real ViT-B/16 extraction throughput in fp16 and bf16 (model-only vs
# pipeline, agreement with fp32), the disk's own write speed (the pipeline writes ~200 KB a frame),
# the paper-size fusion training step from the store, and predict throughput.
# Packages missing on that image travel as wheels in .whl/ (see README, "Benchmarks and GPU checks").
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 COLUMNS=160
TRACKLETS=${TRACKLETS:-1500}  # 48,000 frames: long enough that start-up does not set the rate
nvidia-smi --query-gpu=name,memory.total --format=csv
W=$(( $(nproc) - 2 ))
echo "disk write speed (the folder the store goes to):"
dd if=/dev/zero of=/tmp/ddtest bs=1M count=2048 conv=fdatasync 2>&1 | tail -1; rm -f /tmp/ddtest
for P in fp16 bf16; do
  python3 -m cli.main bench --part extract --model ViT-B-16 --device cuda --precision $P --batch-size 256 \
    --workers $W --tracklets $TRACKLETS --frames 16 --out /tmp/b16 2>&1 | tee "$OUT/extract_$P.txt"
  cp /tmp/b16/bench.json "$OUT/extract_$P.json"
done
python3 -m cli.main bench --part train --device cuda --fusion-model vtf-par --train-batch 64 --epochs 5 \
  --workers $W --out /tmp/b16 2>&1 | tee "$OUT/train_bf16.txt"
cp /tmp/b16/bench.json "$OUT/train.json"
python3 -m cli.main bench --part predict --device cuda --batch-size 256 --workers $W --out /tmp/b16 2>&1 | tee "$OUT/predict.txt"
cp /tmp/b16/bench.json "$OUT/predict.json"
