"""`par bench --part grid`: the paper's Table 1 + Table 3 grid (every T x fusion / no-fusion x seeds, the test split
evaluated each epoch) timed as `par ablation` trains it, beside the same points trained alone as `par train` runs
them, on a store of MARS's shape.

The store holds MARS's tracklet counts (or fewer: `--grid-tracklets`) with frame counts of MARS's range and mean,
capped at `--grid-frames` evenly spaced frames as `par extract --max-frames-per-tracklet` keeps them, and labels drawn
as `par synth` draws MARS rows. Its tokens are random rows (the speed of stage two does not depend on their values),
written by the extraction loop's own sink, so building it needs no CLIP and no frames, and times the extraction host
loop on a real plan."""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import BenchConfig, configure
from ..data.layouts import layout_named, mars_tracklet_name
from ..data.manifest import Manifest, TrackletRecord
from ..data.schema import load_schema
from ..data.texts import attribute_texts
from ..errors import ParError
from ..model.clip import token_geometry
from ..resources import load_json
from ..run import RunFolder
from ..store.codec import TokenCodec
from ..store.writer import ShardSink, create_zarr
from ..tools.synth import sample_row
from ..workflows.ablation import evaluate_point, plan_sweep, run_ablation
from ..workflows.extract import encode_shards, finalize_store, partial_path, plan_store, store_attrs
from ..workflows.train import train
from .stubs import StubFrames

Log = Callable[[str], None]

# MARS-Attribute's labelled tracklets have 5 to 900 frames, about 62 on average (SPEC section 4).
MARS_FRAMES = {"min": 5, "max": 900, "mean": 62}
RANDOM_ROWS = 127  # distinct random token rows the store's rows cycle through
GRID_VARIANTS = ("fusion", "no-fusion")  # Table 3's component ablation; Table 1's T are --sweep-frames


def mars_shaped_manifest(train: int, test: int, seed: int) -> Manifest:
    """`train` + `test` tracklets of MARS's layout and schema (labels drawn from data_manifests/synth/mars.json's
    priors, 1-4 tracklets a person) whose frame counts are MARS's minimum plus a geometric draw with MARS's mean,
    at most MARS's maximum. The frames are names only: nothing reads them."""
    schema, layout, spec = load_schema("mars"), layout_named("mars"), load_json("synth", "mars")
    rng = np.random.default_rng(seed)
    records, pid = [], 0
    for split, count in (("train", train), ("test", test)):
        made = 0
        while made < count:
            pid += 1
            row = sample_row(rng, spec)
            labels = [int(v) for v in schema.encode_row({c: str(v) for c, v in row.items()}, "grid bench")]
            for cam in rng.permutation(6)[:min(int(rng.integers(1, 5)), count - made)] + 1:
                extra = rng.geometric(1 / (MARS_FRAMES["mean"] - MARS_FRAMES["min"] + 1)) - 1
                n = min(MARS_FRAMES["min"] + int(extra), MARS_FRAMES["max"])
                made += 1
                records.append(TrackletRecord(
                    tracklet=mars_tracklet_name(pid, int(cam), made), split=split, person_id=pid,
                    camera_id=int(cam), tracklet_no=made, labels=labels,
                    frames=[layout.frame_path(split, pid, int(cam), made, i) for i in range(n)]))
    return Manifest(schema=schema, root="grid-bench-frames", records=records, layout="mars")


class _RandomTokens:
    """Stands in for CLIP: each frame gets the next of RANDOM_ROWS fixed random token rows (seeded), in the
    encoder's output dtype, on the device. The extraction loop encodes rows in order, so a store built twice is the
    same."""

    def __init__(self, num_tokens: int, dim: int, device: torch.device, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.device, self.seen = device, 0
        self.rows = torch.randn(RANDOM_ROWS, num_tokens, dim, generator=g).to(device)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        pick = (self.seen + torch.arange(len(images), device=self.device)) % RANDOM_ROWS
        self.seen += len(images)
        return self.rows[pick]


def build_random_store(out: Path, manifest: Manifest, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    """A complete token store at `out` for `manifest` (the bench's own; a finished one is reused), through
    `par extract`'s plan, layout, sink and finish with random tokens; returns its size and the build's rate."""
    cfg, recipe = configure("extract", None, [("grid bench", {
        "out": str(out), "clip_model": sizes.clip_model, "allow_random_init": True, "dtype": sizes.grid_dtype,
        "max_frames_per_tracklet": sizes.grid_frames, "batch_size": 256, "device": sizes.device})])
    num_tokens, dim = token_geometry(cfg.clip_model)
    plan, rows = plan_store(manifest, cfg, num_tokens, dim)
    codec = TokenCodec(cfg.dtype)
    built = {"rows": plan.num_rows, "tracklets": len(plan.tracklets), "dtype": cfg.dtype,
             "gb": plan.num_rows * codec.bytes_per_frame(num_tokens, dim) / 1e9}
    if out.exists():
        log(f"grid store {out}: reused ({built['rows']:,} rows)")
        return {**built, "rows_per_s": None}
    target = Path(partial_path(str(out)))
    shutil.rmtree(target, ignore_errors=True)  # the bench's own unfinished store
    strings = attribute_texts(manifest.schema, cfg.prompt_template)
    texts = {source: np.random.default_rng(1).standard_normal((len(words), dim)).astype(np.float32)
             for source, words in strings.items()}
    attrs = {**store_attrs(cfg, manifest, recipe, strings), "num_tokens": num_tokens, "dim": dim}
    g = create_zarr(str(target), plan, texts, attrs, codec, cfg.shard_frames)
    device = torch.device(sizes.device)
    sink = ShardSink(g, str(target), cfg.shard_frames, num_tokens, dim, codec, device, lambda n: None, str,
                     writers=cfg.writers)
    t = time.perf_counter()
    encode_shards(_RandomTokens(num_tokens, dim, device, seed=0), StubFrames(plan.num_rows, 1),
                  shards=list(range(-(-plan.num_rows // cfg.shard_frames))), shard_frames=cfg.shard_frames,
                  batch_size=cfg.batch_size, workers=0, sink=sink, on_bad_frame="error")
    finalize_store(g, str(target), str(out), "zarr", rows.paths)
    s = time.perf_counter() - t
    log(f"grid store: {built['rows']:,} rows ({built['gb']:.1f} GB {cfg.dtype}) written in {s:.1f} s "
        f"({built['rows'] / s:,.0f} rows/s)")
    return {**built, "rows_per_s": built["rows"] / s, "seconds": s}


def bench_grid(work: Path, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    """The grid fused (`par ablation`: one seed's points side by side from one read of each batch, then each
    point's evaluation) vs `--grid-alone` points of seed 0, spread over its (variant, T) list, run alone (`par train`
    then `par eval`: each its own run and its own --cache load), scaled to every point; the checkpoints of the points
    run both ways compared."""
    variants = list(GRID_VARIANTS)
    if len(sizes.grid_tracklets) != 2 or min(sizes.grid_tracklets) < 2:
        raise ParError(f"--grid-tracklets must be two counts of at least 2 (training, test), not "
                       f"{' '.join(map(str, sizes.grid_tracklets))}")
    train_n, test_n = sizes.grid_tracklets
    store = work / f"grid-store-{train_n}-{test_n}-{sizes.grid_frames}-{sizes.grid_dtype}.zarr"
    built = build_random_store(store, mars_shaped_manifest(train_n, test_n, seed=0), sizes, log)
    base = {"model": sizes.fusion_model, "epochs": sizes.grid_epochs, "batch_size": sizes.train_batch,
            "device": sizes.device, "cache": sizes.grid_cache, "fusion_init": "random",
            "workers": sizes.train_workers}
    base = {k: v for k, v in base.items() if v is not None}
    said: list[str] = []

    def loading(what: str, done: int, total: int) -> None:
        if done == 0:
            said.append(what)
    device = torch.device(sizes.device)
    grid_out = work / "grid"
    shutil.rmtree(grid_out, ignore_errors=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    run_ablation(str(store), grid_out, sizes.sweep_frames, variants, sizes.grid_seeds, None, base, loading=loading)
    grid_s = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    points = plan_sweep(str(store), grid_out, sizes.sweep_frames, variants, sizes.grid_seeds, None, base)
    log(f"grid: {len(points)} points ({len(sizes.sweep_frames)} T x {len(variants)} variants x {sizes.grid_seeds} "
        f"seed(s)), {sizes.grid_epochs} epochs, {built['tracklets']:,} tracklets: {grid_s:.1f} s fused"
        + (f"; {said[0]}" if said else "") + (f"; peak GPU memory {peak:.1f} GiB" if peak is not None else ""))
    alone_root = work / "grid-alone"
    shutil.rmtree(alone_root, ignore_errors=True)
    alone, same = {}, []
    first_seed = [p for p in points if p.seed == 0]
    spread_out = np.unique(np.linspace(0, len(first_seed) - 1, min(sizes.grid_alone, len(first_seed))).round())
    for p in [first_seed[int(i)] for i in spread_out]:
        cfg = dataclasses.replace(p.config, out=str(alone_root / p.key))
        t = time.perf_counter()
        train(cfg, p.recipe)
        evaluate_point(dataclasses.replace(p, config=cfg))
        alone[p.key] = time.perf_counter() - t
        same.append(all((Path(cfg.out) / f).read_bytes() == (Path(p.config.out) / f).read_bytes()
                        for f in ("last.safetensors", "best.safetensors")))
        if not same[-1]:
            ours, theirs = RunFolder(cfg.out).read_log(), RunFolder(p.config.out).read_log()
            diff = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(ours, theirs))
            log(f"grid point {p.key}: alone and fused checkpoints differ; epoch losses within {diff:.2e} relative")
    alone_s = sum(alone.values()) / len(alone) * len(points) if alone else None
    if alone_s is not None:
        log(f"grid points alone: {len(alone)} measured, {alone_s:.1f} s scaled to {len(points)} points "
            f"({alone_s / grid_s:.2f}x the fused grid); same checkpoints: {all(same)}")
    shutil.rmtree(alone_root, ignore_errors=True)
    return {"store": built, "points": len(points), "frames": sizes.sweep_frames, "variants": variants,
            "seeds": sizes.grid_seeds, "epochs": sizes.grid_epochs, "fusion_model": sizes.fusion_model,
            "train_batch": sizes.train_batch, "cache_requested": sizes.grid_cache, "cache": said[0] if said else None,
            "grid_s": grid_s, "peak_gpu_gib": peak,
            "alone_measured_s": alone, "alone_scaled_s": alone_s,
            "alone_over_grid": alone_s / grid_s if alone_s is not None else None,
            "alone_same_checkpoints": all(same) if same else None,
            "note": "fused: par ablation (training with the test split evaluated each epoch, then each point's "
                    "evaluation); alone: par train + par eval per point, scaled from the points measured"}
