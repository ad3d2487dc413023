#!/usr/bin/env bash
# GPU checks in one run: a profile of the CLIP encoder (scripts/profile_clip.py), real ViT-B/16 extraction in fp16
# and bf16 (model-only vs pipeline, agreement with fp32, PIL vs GPU JPEG decoding), store bytes and int8 agreement,
# the extraction host loop, paper-size training from the store (warm and cold page cache, disk random-read rate,
# int8; the fusion step eager vs torch.compile vs CUDA graphs), predict, par track (throughput, stage shares, memory),
# the paper's whole grid on a MARS-shaped store (fused as par ablation trains it, beside points trained alone); then
# a one-screen summary. PARTS picks what runs (default all but the grid, which at MARS's size wants a call of its own:
# PARTS=grid bash scripts/gpu_check.sh). Sizes are variables, so
# the same script runs on a CPU with tiny sizes (the test suite does). Packages missing on a lent machine travel as
# wheels in $WHEELS (.whl/).
# Time: on one H200 (2026-11-29) the four extraction runs alone took 430 s at TRACKLETS=1000, then train+predict
# (EPOCHS=2) about 100 s (since then the train part trains twice more, from --cache ram and --cache device: allow
# for it) and track (TRACK_MINUTES=1) about 40 s; to fit one call of a 15-minute lease, halve them
# (an estimate: PRECISIONS=bf16 TRACKLETS=500 EPOCHS=2 TRACK_MINUTES=1). Where only a few files come back (the
# device tool: 8), write OUT elsewhere and pack it: OUT=/tmp/g bash scripts/gpu_check.sh; tar czf "$OUT/gpu.tgz" -C
# /tmp g
set -uo pipefail
PARTS=${PARTS:-profile extract train track}  # and grid
OUT=${OUT:-/tmp/gpu-out}
DEVICE=${DEVICE:-cuda}
CLIP=${CLIP:-ViT-B-16-quickgelu}
FUSION=${FUSION:-vtf-par}
TRACKLETS=${TRACKLETS:-1500}        # x2 splits x FRAMES frames: 48,000 frames, so start-up does not set the rates
FRAMES=${FRAMES:-16}
BATCH=${BATCH:-256}
PROFILE_BATCHES=${PROFILE_BATCHES:-128,512}  # other CLIP batch sizes the profile times
TRAIN_BATCH=${TRAIN_BATCH:-64}
STEP_MODES=${STEP_MODES:-eager,compile,cudagraphs}  # the fusion step eager, torch.compile'd, with CUDA graphs
EPOCHS=${EPOCHS:-5}
HOST_FRAMES=${HOST_FRAMES:-16384}
PRECISIONS=${PRECISIONS:-fp16 bf16}
DECODERS=${DECODERS:-pil torchvision}  # JPEG decoding on the CPU (PIL) and on the device (torchvision)
TRACK_SECONDS=${TRACK_SECONDS:-20}  # par track: one synthetic scene, and the memory videos below
TRACK_MINUTES=${TRACK_MINUTES-1 3}  # the memory videos (empty: no memory measurement)
TRACK_CAMERAS=${TRACK_CAMERAS:-1 2 3 4 6 8}  # live: camera counts tried until one drops frames
TRACK_CHECKPOINT=${TRACK_CHECKPOINT:-}  # the track part's model (default: the train part's run)
PROFILE_COMPILE=${PROFILE_COMPILE---compile}  # the profile also times torch.compile of the token path
# the grid: MARS's tracklet counts, 8 frames each (26 GB in float16: a 64 GiB disk also holds the other stores), the
# paper's T, fusion / no-fusion, 3 seeds, 20 epochs; GRID_ALONE points of seed 0 also trained alone
GRID_TRACKLETS=${GRID_TRACKLETS:-8298 8062}
GRID_FRAMES=${GRID_FRAMES:-8}
GRID_DTYPE=${GRID_DTYPE:-float16}
GRID_EPOCHS=${GRID_EPOCHS:-20}
GRID_SEEDS=${GRID_SEEDS:-3}
GRID_ALONE=${GRID_ALONE:-2}
GRID_CACHE=${GRID_CACHE:-auto}
WORK=${WORK:-/tmp/par-gpu-check}
DD_MB=${DD_MB:-512}                 # the disk-speed probe's size
WHEELS=${WHEELS:-.whl}              # packages the lent machine lacks (open_clip_torch, zarr, av, trackers, ...)
mkdir -p "$OUT" "$WORK"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 COLUMNS=160
PY=${PY:-python3}
W=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
{ echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%MZ)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  echo "disk write speed where the stores go:"; dd if=/dev/zero of="$WORK/ddtest" bs=1M count="$DD_MB" conv=fdatasync 2>&1 | tail -1
  rm -f "$WORK/ddtest"; } | tee "$OUT/machine.txt"
want() { [[ " $PARTS " == *" $1 "* ]]; }
FIRST=$(echo $PRECISIONS | cut -d' ' -f1)
FIRST_D=$(echo $DECODERS | cut -d' ' -f1)
# where the encoder's time goes (par's token path vs open_clip's pooled forward, a matmul for scale, top kernels)
want profile && $PY scripts/profile_clip.py --clip-model "$CLIP" --device "$DEVICE" --precision "$FIRST" \
  --batch "$BATCH" $PROFILE_COMPILE --batches "$PROFILE_BATCHES" 2>&1 | tee "$OUT/profile_clip.txt"
want extract && for P in $PRECISIONS; do
  for D in $DECODERS; do
    $PY -m cli.main bench --part extract --clip-model "$CLIP" --device "$DEVICE" --precision "$P" --decode "$D" \
      --batch-size "$BATCH" --workers "$W" --tracklets "$TRACKLETS" --frames-per-tracklet "$FRAMES" \
      --host-frames "$HOST_FRAMES" --out "$WORK/b-$P-$D" 2>&1 | tee "$OUT/extract_${P}_$D.txt"
    cp "$WORK/b-$P-$D/bench.json" "$OUT/extract_${P}_$D.json"
  done
done
want train && $PY -m cli.main bench --part train,predict --device "$DEVICE" --fusion-model "$FUSION" --train-batch "$TRAIN_BATCH" \
  --step-modes "$STEP_MODES" --epochs "$EPOCHS" --batch-size "$BATCH" --workers "$W" --out "$WORK/b-$FIRST-$FIRST_D" 2>&1 | tee "$OUT/train.txt"
want train && cp "$WORK/b-$FIRST-$FIRST_D/bench.json" "$OUT/train.json"
want track && $PY -m cli.main bench --part track --device "$DEVICE" --track-seeds 1 --track-seconds "$TRACK_SECONDS" \
  --track-minutes "$TRACK_MINUTES" --track-cameras "$TRACK_CAMERAS" ${TRACK_CHECKPOINT:+--track-checkpoint "$TRACK_CHECKPOINT"} --out "$WORK/b-$FIRST-$FIRST_D" 2>&1 | tee "$OUT/track.txt"
want track && cp "$WORK/b-$FIRST-$FIRST_D/bench.json" "$OUT/track.json"
want grid && $PY -m cli.main bench --part grid --device "$DEVICE" --fusion-model "$FUSION" --train-batch "$TRAIN_BATCH" \
  --grid-tracklets "$GRID_TRACKLETS" --grid-frames "$GRID_FRAMES" --grid-dtype "$GRID_DTYPE" \
  --grid-epochs "$GRID_EPOCHS" --grid-seeds "$GRID_SEEDS" --grid-alone "$GRID_ALONE" --grid-cache "$GRID_CACHE" \
  --out "$WORK/grid" 2>&1 | tee "$OUT/grid.txt" && cp "$WORK/grid/bench.json" "$OUT/grid.json"
$PY - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print(open(out / "machine.txt").read().strip())
for f in sorted(out.glob("extract_*.json")):
    e = json.loads(f.read_text())["extract"]
    h = {k: v["frames_per_s"] for k, v in e["host_loop"]["float16"].items() if k.startswith("direct")}
    print(f"{f.stem:28s} model-only {e['model_only_fps']:9,.0f} f/s  pipeline {e['pipeline_fps']:9,.0f} f/s  "
          f"ratio {e['pipeline_over_model']:.2f}  host loop {h['direct']:,.0f} f/s "
          f"({h['direct_2_writers']:,.0f} / {h['direct_4_writers']:,.0f} with 2 / 4 writers)")
    for k, a in {**e["precision_vs_fp32"], **e["dtype_vs_fp32"]}.items():
        print(f"{'':28s} {k:8s} vs fp32: min cosine {a['min_token_cosine']:.6f}, mean {a['mean_token_cosine']:.6f}")
if (out / "train.json").exists():
    t = json.loads((out / "train.json").read_text())
    r, p = t["train"], t["predict"]
    print(f"train {r['model']}: store {r['store_samples_per_s']:,.0f} vs model-only "
          f"{r['model_only_samples_per_s']:,.0f} samples/s = {r['store_over_model']:.2f}; " + ", ".join(
              f"--cache {k} {c['samples_per_s']:,.0f} = {c['over_model']:.2f}" for k, c in r.get("cache", {}).items()))
    print("model-only step: eager " + ", ".join([f"{r['model_only_samples_per_s']:,.0f} samples/s"] + [
          f"{k} {c['samples_per_s']:,.0f} = {c['over_model']:.2f} (first step {c['first_step_s']:.0f} s)"
          for k, c in r.get("step_modes", {}).items()]))
    print(f"loader warm {r['loader_warm_samples_per_s']:,.0f}, cold {r['loader_cold_samples_per_s']:,.0f} samples/s; "
          f"int8 warm {r['int8_loader_warm_samples_per_s']:,.0f}, cold {r['int8_loader_cold_samples_per_s']:,.0f}; "
          f"disk {r['disk_random_read']}")
    print(f"predict {p['tracklets_per_s']:,.1f} tracklets/s ({p['frames_per_s']:,.0f} frames/s)")
if (out / "track.json").exists():
    k = json.loads((out / "track.json").read_text())["track"]
    print(f"track {k['frames_per_s']:,.1f} video frames/s; shares {k['stage_share']}; peak memory {k['peak_memory_mb']}")
if (out / "grid.json").exists():
    g = json.loads((out / "grid.json").read_text())["grid"]
    s = g["store"]
    print(f"grid store {s['tracklets']:,} tracklets, {s['rows']:,} rows, {s['gb']:.1f} GB {s['dtype']}: "
          f"{s['rows_per_s'] or 0:,.0f} rows/s to build")
    print(f"grid {g['points']} points x {g['epochs']} epochs: {g['grid_s']:,.1f} s fused ({g['cache']}; peak GPU "
          f"memory {g['peak_gpu_gib']} GiB); alone {g['alone_scaled_s']} s scaled from {len(g['alone_measured_s'])} "
          f"points, same checkpoints: {g['alone_same_checkpoints']}")
EOF
