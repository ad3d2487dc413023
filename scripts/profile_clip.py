"""Where the CLIP image encoder's time goes, for `scripts/gpu_check.sh`: par's token path (open_clip's
`forward_intermediates` + `proj`, as `par extract` runs it) against open_clip's plain pooled forward on the same
batch, a matmul of the card's own rate for scale, and the profiler's top kernels of par's path.

Usage: python scripts/profile_clip.py [--clip-model ViT-B-16-quickgelu] [--device cuda] [--precision bf16]
       [--batch 256] [--steps 10]
The first H200 run (2026-11-29) measured ViT-B/16 tokens at ~3,000 frames/s, about 7% of that card's bf16 rate:
this is the check that says whether the model, the token path or the host sets that pace."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from par_pipeline.data.preprocess import Preprocess  # noqa: E402  (this checkout's par)
from par_pipeline.model.clip import ClipEncoder  # noqa: E402
from par_pipeline.precision import autocast_dtype  # noqa: E402


def timed(fn, steps: int, device: torch.device) -> float:
    """Seconds per call after two warm-up calls, the device drained before and after."""
    for _ in range(2):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip-model", default="ViT-B-16-quickgelu")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    enc = ClipEncoder(args.clip_model, None, True, args.device, args.precision, Preprocess())
    size = enc.preprocess.size
    images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8)
    if device.type == "cuda":
        images = images.pin_memory()
    x = torch.randn(args.batch, 3, size, size, device=device)
    amp = autocast_dtype(args.precision, device)

    @torch.inference_mode()
    def pooled() -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return enc.visual(x)

    @torch.inference_mode()
    def tokens() -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            return enc._frame_tokens(x)

    rows = {"open_clip pooled forward (model.visual)": timed(pooled, args.steps, device),
            "par's tokens (forward_intermediates + proj)": timed(tokens, args.steps, device),
            "encode_frames (uint8 upload + normalise + tokens)": timed(lambda: enc.encode_frames(images), args.steps,
                                                                       device),
            "encode_frames + tokens to the host (float16)": timed(
                lambda: enc.encode_frames(images).to(torch.float16).cpu(), args.steps, device)}
    print(f"{args.clip_model} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})"
          f", {args.precision}, batch {args.batch}, torch {torch.__version__}")
    for name, s in rows.items():
        print(f"  {name:52s} {args.batch / s:10,.1f} frames/s  ({1000 * s:.2f} ms a batch)")
    n = 4096 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=amp or torch.float32)
    s = timed(lambda: a @ a, args.steps, device)
    print(f"  {'matmul ' + str(n) + '^3 in ' + str(a.dtype):52s} {2 * n ** 3 / s / 1e12:10,.1f} TFLOP/s")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            tokens()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
