"""Where the CLIP image encoder's time goes, for `scripts/gpu_check.sh`: par's token path (open_clip's
`forward_intermediates` + `proj`, as `par extract` runs it) against open_clip's plain pooled forward on the same
batch, a matmul of the card's own rate for scale, and the profiler's top kernels of par's path. Then the candidate
fixes, each timed and its tokens compared with fp32's (the README's bar: min cosine >= 0.9999 for fp16): the
weights converted to the compute dtype as the reference's `clip.load` does (open_clip's `convert_weights_to_lp`:
LayerNorm in fp32, no autocast casts, a half-width residual stream), `torch.compile` of par's path (`--compile`),
and other batch sizes (`--batches`).

Usage: python scripts/profile_clip.py [--clip-model ViT-B-16-quickgelu] [--device cuda] [--precision bf16]
       [--batch 256] [--steps 10] [--compile] [--batches 128,512]
The first H200 run (2026-11-29) measured ViT-B/16 tokens at ~3,000 frames/s, about 7% of that card's bf16 rate:
this is the check that says whether the model, the token path or the host sets that pace."""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from par_pipeline.data.preprocess import Preprocess  # noqa: E402  (this checkout's par)
from par_pipeline.model.clip import ClipEncoder, frame_tokens  # noqa: E402
from par_pipeline.precision import autocast, autocast_dtype  # noqa: E402


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
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of par's token path")
    ap.add_argument("--batches", default="", help="other batch sizes of par's token path, e.g. 128,512")
    args = ap.parse_args()
    device = torch.device(args.device)
    enc = ClipEncoder(args.clip_model, None, True, args.device, args.precision, Preprocess())
    size = enc.preprocess.size
    images = torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8)
    if device.type == "cuda":
        images = images.pin_memory()
    x = torch.randn(args.batch, 3, size, size, device=device)
    amp = autocast_dtype(args.precision, device)
    pooled, tokens_of = at_precision(enc.visual, device, amp), at_precision(enc._frame_tokens, device, amp)

    def tokens() -> torch.Tensor:
        return tokens_of(x)
    rows = {"open_clip pooled forward (model.visual)": timed(lambda: pooled(x), args.steps, device),
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
    candidates(enc, x, amp, args, device, tokens_of, rows["par's tokens (forward_intermediates + proj)"])
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


def at_precision(fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 amp: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """fn under inference mode and this precision's autocast, as `ClipEncoder.encode_frames` runs the model."""
    def run(xb: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, amp):
            return fn(xb)
    return run


def candidates(enc: ClipEncoder, x: torch.Tensor, amp: torch.dtype | None, args: argparse.Namespace,
               device: torch.device, tokens_of: Callable[[torch.Tensor], torch.Tensor], tokens_s: float) -> None:
    """Each candidate fix of par's token path (`tokens_of`, timed above at `tokens_s` a batch): frames/s and its
    tokens against fp32's."""
    from open_clip.model import convert_weights_to_lp

    with torch.inference_mode():
        exact = enc._frame_tokens(x[:32]).float()

    def agreement(fn: Callable[[torch.Tensor], torch.Tensor]) -> str:
        with torch.inference_mode():
            got = fn(x[:32]).float()
        cos = torch.nn.functional.cosine_similarity(got.flatten(0, 1), exact.flatten(0, 1), dim=-1)
        return f"vs fp32: min cosine {float(cos.min()):.6f}, mean {float(cos.mean()):.6f}"

    ways = {}
    if amp is not None:
        low = copy.deepcopy(enc.visual)
        convert_weights_to_lp(low, amp)
        ways[f"weights in {str(amp).split('.')[-1]}, no autocast (clip.load's way)"] = at_precision(
            lambda xb: frame_tokens(low, xb.to(amp)), device, None)
    if args.compile:
        compiled = at_precision(torch.compile(enc._frame_tokens), device, amp)
        t = time.perf_counter()
        compiled(x)
        ways[f"torch.compile (first call {time.perf_counter() - t:.0f} s)"] = compiled
    print(f"candidate fixes ({args.precision}, batch {args.batch}):")
    label = "par's tokens (as above)"
    print(f"  {label:52s} {args.batch / tokens_s:10,.1f} frames/s  "
          f"{agreement(tokens_of)}")
    for name, fn in ways.items():
        s = timed(lambda: fn(x), args.steps, device)
        print(f"  {name:52s} {args.batch / s:10,.1f} frames/s  {agreement(fn)}")
    for b in [int(v) for v in args.batches.split(",") if v.strip()]:
        xb = torch.randn(b, *x.shape[1:], device=device)
        s = timed(lambda: tokens_of(xb), args.steps, device)
        label = f"par's tokens, batch {b}"
        print(f"  {label:52s} {b / s:10,.1f} frames/s")


if __name__ == "__main__":
    main()
