"""`make bench`: throughput figures measured as ratios in one run on one machine.

extract: the whole pipeline (decode workers + CLIP + checksummed writes) vs CLIP alone on decoded frames; token
         agreement of each precision and of each store dtype with float32; bytes per frame vs the raw floor; the
         extraction loop's own host capacity with decoding and CLIP stubbed out (direct shard writes vs zarr's).
train:   training samples/s from the store vs the same training step on an in-memory batch; the loader alone
         with a warm and with a cold page cache beside the disk's own random-read rate; the cost of checksum
         verification; float16 vs int8 stores.
sweep:   a frame-count sweep from one store (extraction included) vs the reference way (CLIP on every sampled
         frame at every step), measured and projected to 20 epochs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..compiling import check_compile_mode
from ..config import BenchConfig, ExtractConfig, build_config, configure
from ..data.layouts import build_mars_manifest
from ..data.preprocess import load_frame
from ..data.sampling import sample_frames
from ..data.schema import load_schema
from ..engine.step import TrainingStep
from ..engine.tokens import EpochBatches, TrackletTokens, default_workers, tracklet_batches
from ..errors import ParError
from ..model.clip import ClipEncoder
from ..outputs import MARKER, claim_dir, mark_own, read_marker, write_json
from ..precision import autocast_dtype, input_dtype
from ..reports import plus_minus
from ..store.codec import TokenCodec
from ..store.reader import TokenStore
from ..store.shard_files import Verify
from ..store.writer import ShardSink, StorePlan, convert_store, copy_to_host, create_zarr
from ..tools.synth import plan_random, write_synth
from ..workflows.extract import encode_shards, extract, preprocess_of
from ..workflows.train import build_model, train, train_together
from .stubs import StubFrames

PARTS = ("extract", "train", "predict", "sweep", "deploy")  # `all`
OTHER_PARTS = ("track", "link", "grid")  # asked for by name (`make track-bench`; scripts/gpu_check.sh)
Log = Callable[[str], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _extract_config(sizes: BenchConfig, out: Path, **kw: Any) -> tuple[ExtractConfig, dict]:
    return configure("extract", None, [("bench", {
        "out": str(out), "clip_model": sizes.clip_model, "allow_random_init": True, "precision": sizes.clip_precision,
        "batch_size": sizes.batch_size, "shard_frames": max(64, sizes.batch_size), "workers": sizes.workers,
        "device": sizes.device, "decode": sizes.decode, "compile": sizes.compile, **kw})])


def _cosines(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    cos = torch.nn.functional.cosine_similarity(a.flatten(0, -2).float(), b.flatten(0, -2).float(), dim=-1)
    return {"min_token_cosine": float(cos.min()), "mean_token_cosine": float(cos.mean()),
            "max_abs_diff": float((a.float() - b.float()).abs().max())}


def bench_extract(work: Path, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    data = work / "mars"
    if not data.exists():
        write_synth(data, plan_random("mars", sizes.tracklets, (sizes.frames_per_tracklet,) * 2, seed=0),
                    workers=max(1, os.cpu_count() or 1))
    manifest, _ = build_mars_manifest(data, load_schema("mars"))
    cfg, recipe = _extract_config(sizes, work / "store.zarr")
    enc = ClipEncoder(cfg.clip_model, None, True, cfg.device, cfg.precision, preprocess_of(cfg), compile=cfg.compile)
    paths = [str(manifest.resolve(f)) for r in manifest.records for f in r.frames]
    imgs = torch.from_numpy(np.stack([load_frame(p, enc.preprocess)[0] for p in paths[:sizes.batch_size]]))
    if enc.device.type == "cuda":
        imgs = imgs.pin_memory()
    for _ in range(2):
        enc.encode_frames(imgs)
    _sync(enc.device)
    n_batches = max(3, len(paths) // sizes.batch_size)
    # the tokens leave the device as the pipeline's sink takes them (store.writer.copy_to_host): into a pinned buffer
    # on a copy stream, overlapping the next batch's compute (a blocking .cpu() here counted the copy as model time,
    # which made the pipeline measure faster than the model)
    cuda = enc.device.type == "cuda"
    host = torch.empty((sizes.batch_size, enc.num_tokens, enc.dim), dtype=torch.float16, pin_memory=cuda)
    stream = torch.cuda.Stream(enc.device) if cuda else None
    t = time.perf_counter()
    for _ in range(n_batches):
        copy_to_host([(host, enc.encode_frames(imgs))], stream)
    _sync(enc.device)
    model_fps = n_batches * sizes.batch_size / (time.perf_counter() - t)
    log(f"model-only ({cfg.precision}): {model_fps:,.1f} frames/s")
    # Agreement with float32 tokens: each reduced precision, and each store dtype on the float32 tokens.
    few = imgs[:4 if enc.device.type == "cpu" else 16]
    ref = enc.encode_frames(few, "fp32")
    agreement = {p: _cosines(enc.encode_frames(few, p), ref) for p in ("fp16", "bf16")
                 if enc.device.type == "cuda" or p == "bf16"}
    stored = {d: _cosines(TokenCodec(d).round_trip(ref), ref) for d in ("float16", "int8")}
    log(f"precision vs fp32: {agreement}; store dtype vs float32: {stored}")
    shutil.rmtree(cfg.out, ignore_errors=True)
    stamps: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    res = extract(manifest, cfg, recipe, on_progress=lambda d, _t: stamps.append((time.perf_counter(), d)))
    wall = time.perf_counter() - t0
    (ta, da), (tb, db) = stamps[1], stamps[-1]  # from the first written shard: loading and start-up excluded
    pipe_fps = (db - da) / (tb - ta) if tb > ta else res.rows / wall
    log(
        f"pipeline: {pipe_fps:,.1f} frames/s; waited for decoded frames {res.loader_wait_s:.1f} of {res.encode_s:.1f} s"
    )
    store = TokenStore(cfg.out)
    floor = store.codec.bytes_per_frame(store.num_tokens, store.dim)
    per_frame = _dir_bytes(Path(cfg.out) / "tokens") / res.rows
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    n = min(200, len(store))
    for i in range(n):
        frames = store.valid_frames(i)
        store.read_rows(store.rows(i, frames[sample_frames(len(frames), 6, rng)]))
    read_ms = (time.perf_counter() - t) / n * 1000
    host = {d: bench_host_loop(enc, sizes, d, log) for d in ("float16", "int8")}
    return {"clip_model": cfg.clip_model, "device": str(enc.device), "precision": cfg.precision, "decode": cfg.decode,
            "compile": cfg.compile,
            "batch_size": sizes.batch_size, "workers": sizes.workers, "frames": res.rows,
            "model_only_fps": model_fps, "pipeline_fps": pipe_fps, "pipeline_over_model": pipe_fps / model_fps,
            "bytes_per_frame": per_frame, "raw_floor_bytes": floor, "bytes_over_floor": per_frame / floor,
            "int8_bytes_per_frame": TokenCodec("int8").bytes_per_frame(store.num_tokens, store.dim) + 8,
            "chunks": list(store.tokens.chunks), "shards": list(getattr(store.tokens, "shards", None) or []),
            "random_read_ms_T6": read_ms, "store": cfg.out, "loader_wait_s": res.loader_wait_s,
            "encode_loop_s": res.encode_s, "extract_s": wall, "host_loop": host, "precision_vs_fp32": agreement,
            "dtype_vs_fp32": stored}


class _InstantEncoder:
    """Stands in for CLIP: hands back fixed tokens at once, in float16 as an fp16 CLIP gives them (a GPU casts and
    checks them on the device), so only the loop's own host work is timed."""

    def __init__(self, enc: ClipEncoder, batch_size: int):
        self.device = enc.device
        self.tokens = torch.randn(batch_size, enc.num_tokens, enc.dim, device=enc.device).to(torch.float16)

    def encode_frames(self, images: torch.Tensor) -> torch.Tensor:
        return self.tokens[:len(images)]


# the host loop's write paths: name -> (what the table says, direct shard files, writer threads)
HOST_LOOP_WRITES = {"direct": ("direct writes", True, 1),
                    "direct_2_writers": ("direct writes, 2 writer threads", True, 2),
                    "direct_4_writers": ("direct writes, 4 writer threads", True, 4),
                    "zarr": ("zarr-python writes", False, 1)}


def bench_host_loop(enc: ClipEncoder, sizes: BenchConfig, dtype: str, log: Log) -> dict[str, Any]:
    """The extraction loop's serial host capacity: `par extract`'s own loop (`encode_shards`: loader hand-off,
    encoding into the shard buffers, checksummed shard writes by the writer thread) with JPEG decoding and CLIP
    stubbed out, once per write path (direct shard files, as `par extract` writes local stores, with one and two
    writer threads, vs zarr-python's).
    The store goes to /dev/shm where there is one, so this machine's disk does not set the figure."""
    codec = TokenCodec(dtype)
    frame_bytes = codec.bytes_per_frame(enc.num_tokens, enc.dim)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and shutil.disk_usage(shm).free > 3 * sizes.host_frames * frame_bytes else Path("/tmp")
    shard = max(64, sizes.batch_size)
    frames = sizes.host_frames - sizes.host_frames % shard
    stub = _InstantEncoder(enc, sizes.batch_size)
    out: dict[str, Any] = {
        "frames": frames,
        "batch_size": sizes.batch_size,
        "shard_frames": shard,
        "store_on": str(base),
    }
    for name, (how, direct, writers) in HOST_LOOP_WRITES.items():
        target = base / f"par-bench-host-{os.getpid()}-{dtype}-{name}.zarr"
        shutil.rmtree(target, ignore_errors=True)
        g = create_zarr(str(target), StorePlan.one_tracklet(frames, enc.num_tokens, enc.dim), {}, {}, codec, shard)
        stamps: list[tuple[float, int]] = []
        written = [0]

        def report(n: int) -> None:
            written[0] += n
            stamps.append((time.perf_counter(), written[0]))

        sink = ShardSink(g, str(target), shard, enc.num_tokens, enc.dim, codec, enc.device, report, str,
                         writers=writers, direct_writes=direct)
        t, cpu = time.perf_counter(), os.times()
        encode_shards(stub, StubFrames(frames, enc.preprocess.size), shards=list(range(frames // shard)),
                      shard_frames=shard, batch_size=sizes.batch_size, workers=sizes.workers, sink=sink,
                      on_bad_frame="error")
        end = os.times()
        (ta, da), (tb, db) = stamps[0], stamps[-1]
        fps = (db - da) / (tb - ta) if tb > ta else frames / (time.perf_counter() - t)
        out[name] = {"frames_per_s": fps, "user_ms_per_frame": (end.user - cpu.user) / frames * 1e3,
                     "system_ms_per_frame": (end.system - cpu.system) / frames * 1e3,
                     "bytes_per_frame": _dir_bytes(target / "tokens") / frames + (
                         _dir_bytes(target / "token_scales") / frames if codec.scaled else 0)}
        shutil.rmtree(target, ignore_errors=True)
        log(f"extract host loop, {dtype}, {how}: {fps:,.0f} frames/s, user CPU "
            f"{out[name]['user_ms_per_frame']:.3f} ms/frame")
    return out


def _loader_rate(store_path: str, indices: np.ndarray, batch_size: int, workers: int, dtype: torch.dtype,
                 keep_frames: bool = False, cold: bool = False, readahead: bool = True, epochs: int = 3) -> float:
    """Samples/s of the training loader alone (no model), over `epochs` epochs after a warm-up epoch."""
    ds = TrackletTokens(store_path, 6, 0, dtype, keep_frames=keep_frames, readahead=readahead)
    sampler = EpochBatches(indices, batch_size, 0, shuffle=True)
    loader = tracklet_batches(ds, sampler, workers, False, persistent=True)
    for _ in loader:
        pass
    seen, busy = 0, 0.0
    for epoch in range(1, epochs + 1):
        if cold:
            TokenStore(store_path).drop_cache()
        sampler.set_epoch(epoch)
        t = time.perf_counter()
        for batch, _, _ in loader:
            seen += len(batch)
        busy += time.perf_counter() - t
    return seen / busy if busy > 0 else float("nan")


def draw_cost(store_path: str, indices: np.ndarray, batch_size: int, batches: int = 200) -> dict[str, float]:
    """µs of host work to choose a training batch's rows (the keyed draw, valid frames, views, rows), for the whole
    batch at once (`TrackletTokens.batch_rows`, what a step pays) and tracklet by tracklet (the same rule one
    tracklet per call: what per-tracklet Python costs)."""
    ds = TrackletTokens(store_path, 6, 0, use_views=True)
    order = np.random.default_rng(0).permutation(np.resize(indices, batches * batch_size)).reshape(batches, -1)
    ds.batch_rows(order[0], 0)  # the store's table of valid frames is built once, before the clock
    t = time.perf_counter()
    for epoch, batch in enumerate(order):
        ds.batch_rows(batch, epoch)
    together = (time.perf_counter() - t) / batches * 1e6
    t = time.perf_counter()
    for epoch, batch in enumerate(order[:max(1, batches // 10)]):
        for i in batch:
            ds.picked_rows(int(i), epoch)
    alone = (time.perf_counter() - t) / max(1, batches // 10) * 1e6
    return {"batch_size": batch_size, "batch_us": together, "tracklet_by_tracklet_us": alone}


def disk_random_read(store: TokenStore, rows: int = 600, seed: int = 0) -> dict[str, float]:
    """The disk's own random-read rate for store rows (page cache dropped first): one row at a time, and with a
    batch's rows announced together (posix_fadvise WILLNEED), as the loader reads them."""
    if not store.reads_shard_files:
        return {}
    rng = np.random.default_rng(seed)
    picks = rng.choice(int(store.tokens.shape[0]), size=min(rows, int(store.tokens.shape[0])), replace=False)
    picks = picks[store.frame_ok[picks]]
    buf = np.empty((1, store.num_tokens, store.dim), dtype=store.codec.numpy_dtype)
    out = {}
    for name, batch in (("one_at_a_time", 1), ("batches_of_96", 96)):
        store.drop_cache()
        t = time.perf_counter()
        for b in range(0, len(picks), batch):
            group = picks[b:b + batch]
            if batch > 1:
                store.prefetch(group)
            for r in group:
                store.read_rows_into(np.array([r]), buf, verify=Verify.NEVER)
        out[f"{name}_rows_per_s"] = len(picks) / (time.perf_counter() - t)
    return out


def bench_train(store_path: Path, work: Path, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    """Training from the store vs the same `TrainingStep` on one in-memory batch, so the ratio is what data loading
    costs; the loader alone warm and cold; checksum verification and int8 stores against float16."""
    store = TokenStore(store_path)
    dev = torch.device(sizes.device)
    cfg, recipe = configure("train", None, [("bench", {
        "store": str(store_path), "out": str(work / "bench-run"), "model": sizes.fusion_model, "epochs": sizes.epochs,
        "batch_size": sizes.train_batch, "workers": sizes.train_workers, "device": sizes.device, "warmup_epochs": 1,
        "fusion_init": "random"})])
    net, _ = build_model(cfg, store)
    net.to(dev)
    steps = TrainingStep(net, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=100, warmup_epochs=1,
                         warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, amp=autocast_dtype("auto", dev),
                         pos_rate=torch.from_numpy(store.labels.mean(0).astype(np.float32)).to(dev))
    x = torch.randn(sizes.train_batch, store.num_tokens, store.dim, device=dev).to(input_dtype(dev, cfg.precision))
    y = (torch.rand(sizes.train_batch, len(store.attribute_names), device=dev) > 0.5).float()

    def model_only(step: TrainingStep = steps, n: int = 50) -> float:
        for _ in range(5):
            step.step(x, y)
        _sync(dev)
        t = time.perf_counter()
        for _ in range(n):
            step.step(x, y)
        _sync(dev)
        return n * sizes.train_batch / (time.perf_counter() - t)

    before = model_only()
    step_modes = {}  # the same step, compiled: its steady rate (compilation before the clock) and first losses
    for mode in [m.strip() for m in sizes.step_modes.split(",") if m.strip() and m.strip() != "eager"]:
        check_compile_mode(mode, sizes.device)
        timed = TrainingStep(net, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=100, warmup_epochs=1,
                             warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr, amp=autocast_dtype("auto", dev),
                             pos_rate=steps.pos_rate, compile_mode=mode, warn=log)
        t = time.perf_counter()
        timed.step(x, y)
        _sync(dev)
        compile_s = time.perf_counter() - t
        step_modes[mode] = {"samples_per_s": model_only(timed), "first_step_s": compile_s}
        log(f"train model-only, {mode}: {step_modes[mode]['samples_per_s']:,.1f} samples/s (first step, compiling, "
            f"{compile_s:.1f} s)")
    workers = default_workers(sizes.train_workers, dev)
    idx = store.indices("train")
    dtype = input_dtype(dev, cfg.precision)
    warm = _loader_rate(str(store_path), idx, sizes.train_batch, workers, dtype)
    no_readahead = _loader_rate(str(store_path), idx, sizes.train_batch, workers, dtype, readahead=False)
    cold = _loader_rate(str(store_path), idx, sizes.train_batch, workers, dtype, cold=True)
    int8_path = work / "store-int8.zarr"
    shutil.rmtree(int8_path, ignore_errors=True)
    convert_store(store, int8_path, "int8")
    int8_warm = _loader_rate(str(int8_path), idx, sizes.train_batch, workers, dtype)
    int8_cold = _loader_rate(str(int8_path), idx, sizes.train_batch, workers, dtype, cold=True)
    disk = disk_random_read(store)
    verify = _verify_cost(store)
    draws = [draw_cost(str(store_path), idx, b) for b in (sizes.train_batch, 64)]
    log(f"loader alone ({workers} workers): warm {warm:,.1f} samples/s (no readahead {no_readahead:,.1f}), cold "
        f"{cold:,.1f}; int8 warm {int8_warm:,.1f}, cold {int8_cold:,.1f}; disk random rows/s {disk}")
    shutil.rmtree(work / "bench-run", ignore_errors=True)
    records: list[dict[str, Any]] = []
    train(cfg, recipe, on_epoch=records.append)
    rates = [r["samples_per_s"] for r in (records[1:] if len(records) > 1 else records) if r["samples_per_s"]]
    store_sps = float(np.median(rates)) if rates else float("nan")
    per_epoch = -(-len(idx) // sizes.train_batch)
    if per_epoch < 8:
        log(f"note: only {per_epoch} steps per epoch; for a steady-state rate use more tracklets or a smaller batch")
    cache = {}
    for tier in ("ram", "device"):  # the same run with its rows held in memory: its rate, and the same checkpoint
        out = work / f"bench-run-{tier}"
        shutil.rmtree(out, ignore_errors=True)
        held: list[dict[str, Any]] = []
        train(dataclasses.replace(cfg, out=str(out), cache=tier), recipe, on_epoch=held.append)
        tier_rates = [r["samples_per_s"] for r in (held[1:] if len(held) > 1 else held) if r["samples_per_s"]]
        cache[tier] = {"samples_per_s": float(np.median(tier_rates)) if tier_rates else float("nan"),
                       "same_checkpoint_as_disk": all((out / f).read_bytes() == (work / "bench-run" / f).read_bytes()
                                                      for f in ("last.safetensors", "best.safetensors"))}
    after = model_only()  # measured on both sides of the training runs: a shared machine's speed drifts
    model_sps = (before + after) / 2
    for c in (*cache.values(), *step_modes.values()):
        c["over_model"] = c["samples_per_s"] / model_sps
    for d in draws:  # the draw's share of a model-only step of that batch size (at this batch size's rate)
        d["share_of_model_step"] = d["batch_us"] * 1e-6 / (d["batch_size"] / model_sps)
    log(f"train model-only {model_sps:,.1f} samples/s (before {before:,.1f}, after {after:,.1f}); from the store "
        f"{store_sps:,.1f}; held in memory: " + ", ".join(f"{k} {c['samples_per_s']:,.1f}" for k, c in cache.items()))
    frame_rows = 6  # rows a sample reads
    return {"model": sizes.fusion_model, "device": sizes.device, "batch_size": sizes.train_batch, "workers": workers,
            "model_only_samples_per_s": model_sps, "model_only_before_after": [before, after],
            "store_samples_per_s": store_sps, "store_over_model": store_sps / model_sps, "cache": cache,
            "step_modes": step_modes,
            "steps_per_epoch": per_epoch,
            "loader_warm_samples_per_s": warm, "loader_warm_no_readahead_samples_per_s": no_readahead,
            "loader_cold_samples_per_s": cold, "int8_loader_warm_samples_per_s": int8_warm,
            "int8_loader_cold_samples_per_s": int8_cold, "disk_random_read": disk,
            "cold_over_disk_bound": cold / (disk.get("batches_of_96_rows_per_s", float("nan")) / frame_rows)
            if disk else None, "checksum_verification": verify, "draw": draws}


def _verify_cost(store: TokenStore, rows: int = 2000) -> dict[str, float]:
    """ms per row read warm: checksum checked on every read vs never (the loader checks each row once per process)."""
    if not store.reads_shard_files:
        return {}
    picks = np.flatnonzero(store.frame_ok)[:rows]
    buf = np.empty((1, store.num_tokens, store.dim), dtype=store.codec.numpy_dtype)
    out = {}
    for mode in (Verify.NEVER, Verify.ALWAYS):
        t = time.perf_counter()
        for r in picks:
            store.read_rows_into(np.array([r]), buf, verify=mode)
        out[f"ms_per_row_verify_{mode.value}"] = (time.perf_counter() - t) / len(picks) * 1e3
    return out


def bench_sweep(work: Path, extract_s: float, sizes: BenchConfig, log: Log, project_epochs: int = 20) -> dict[str, Any]:
    """A frame-count sweep: ours = the extraction (timed by the extract part, same store) + training from the store
    per T; the reference way = decode + CLIP on every sampled frame at every step, same data and models. Both are
    measured for `sweep_epochs`; the projection scales each side's measured per-epoch cost (extraction happens once)."""
    store_path = work / "store.zarr"
    store = TokenStore(store_path)
    manifest, _ = build_mars_manifest(work / "mars", load_schema("mars"))
    ours, configs = {}, {}
    for T in sizes.sweep_frames:
        shutil.rmtree(work / f"sweep-T{T}", ignore_errors=True)
        configs[T], recipe = configure("train", None, [("bench", {
            "store": str(store_path), "out": str(work / f"sweep-T{T}"), "model": sizes.fusion_model, "frames": T,
            "epochs": sizes.sweep_epochs, "batch_size": sizes.train_batch, "device": sizes.device,
            "warmup_epochs": 0, "fusion_init": "random"})])
        t = time.perf_counter()
        train(configs[T], recipe)
        ours[T] = time.perf_counter() - t
    # the same points side by side from one read of each batch (par ablation's way): wall time, and the same runs
    together = {T: dataclasses.replace(c, out=str(work / f"sweep-together-T{T}")) for T, c in configs.items()}
    for c in together.values():
        shutil.rmtree(c.out, ignore_errors=True)
    t = time.perf_counter()
    train_together([(c, recipe, False) for c in together.values()])
    together_s = time.perf_counter() - t
    same = all((Path(together[T].out) / f).read_bytes() == (Path(configs[T].out) / f).read_bytes()
               for T in configs for f in ("last.safetensors", "best.safetensors"))
    log(f"sweep side by side: {together_s:.1f}s vs {sum(ours.values()):.1f}s one after another; same checkpoints: "
        f"{same}")
    ecfg, _ = _extract_config(sizes, work / "unused")
    enc = ClipEncoder(store.attrs["clip_model"], None, True, sizes.device, ecfg.precision, preprocess_of(ecfg))
    train_recs = manifest.split("train")
    dev = torch.device(sizes.device)
    pos_rate = torch.from_numpy(store.labels[store.indices("train")].mean(0).astype(np.float32)).to(dev)
    reference = {}
    rng = np.random.default_rng(0)
    for T in sizes.sweep_frames:
        cfg = configs[T]
        net, _ = build_model(cfg, store)
        steps = TrainingStep(net.to(dev), lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                             warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr,
                             amp=autocast_dtype(cfg.precision, dev), pos_rate=pos_rate)
        net.train()
        t = time.perf_counter()
        for epoch in range(sizes.sweep_epochs):
            steps.start_epoch(epoch)
            order = rng.permutation(len(train_recs))
            for b in range(0, len(order) - 1, sizes.train_batch):
                recs = [train_recs[i] for i in order[b:b + sizes.train_batch]]
                imgs = [load_frame(manifest.resolve(r.frames[j]), enc.preprocess)[0]
                        for r in recs for j in sample_frames(len(r.frames), T, rng)]
                feats = enc.encode_frames(torch.from_numpy(np.stack(imgs))).float()
                x = feats.view(len(recs), T, store.num_tokens, store.dim).mean(1).to(dev)
                y = torch.tensor([r.labels for r in recs], dtype=torch.float32, device=dev)
                steps.step(x, y)
        _sync(dev)
        reference[T] = time.perf_counter() - t
        log(f"sweep T={T}: ours {ours[T]:.1f}s (+{extract_s:.1f}s extraction once), reference {reference[T]:.1f}s")
    total_ours, total_ref = extract_s + sum(ours.values()), sum(reference.values())
    scale = project_epochs / sizes.sweep_epochs
    proj_ours, proj_ref = extract_s + scale * sum(ours.values()), scale * total_ref
    return {"clip_model": store.attrs["clip_model"], "fusion_model": sizes.fusion_model, "epochs": sizes.sweep_epochs,
            "frames": sizes.sweep_frames, "extract_s": extract_s, "ours_train_s": ours, "reference_s": reference,
            "ours_total_s": total_ours, "reference_total_s": total_ref, "speedup": total_ref / total_ours,
            "projected_epochs": project_epochs, "projected_ours_s": proj_ours, "projected_reference_s": proj_ref,
            "projected_speedup": proj_ref / proj_ours, "together_s": together_s,
            "together_over_one_after_another": together_s / sum(ours.values()),
            "together_same_checkpoints": same,
            "note": "ours includes per-epoch evaluation on the test split; the reference loop trains only"}


def bench_predict(work: Path, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    """`par predict` throughput: all frames of every synthetic test tracklet, batched through CLIP together."""
    from ..workflows.predict import TrackletInput, predict

    manifest, _ = build_mars_manifest(work / "mars", load_schema("mars"))
    items = [TrackletInput(r.tracklet, frames=[manifest.resolve(f) for f in r.frames]) for r in manifest.split("test")]
    cfg = build_config("predict", [("bench", {"checkpoint": str(work / "bench-run"), "device": sizes.device,
                                              "batch_size": sizes.batch_size, "workers": sizes.workers})])
    predict(items[:2], cfg)  # warm-up
    t = time.perf_counter()
    predict(items, cfg)
    wall = time.perf_counter() - t
    frames = sum(len(i.frames or []) for i in items)
    log(f"predict: {len(items) / wall:,.2f} tracklets/s")
    return {"tracklets": len(items), "frames": frames, "seconds": wall, "tracklets_per_s": len(items) / wall,
            "frames_per_s": frames / wall, "batch_size": sizes.batch_size, "workers": sizes.workers,
            "device": sizes.device}


BENCH_KIND = "bench"


def claim_bench_dir(out: Path) -> None:
    """OUT as the bench's own folder: new, empty, or an earlier bench's (its marker, or its bench.json from before
    the folder was marked); anything else is refused, since the bench replaces what it finds there."""
    marker = read_marker(out) if out.is_dir() else None
    if marker is None and (out / "bench.json").is_file() and not (out / MARKER).exists():
        mark_own(out, BENCH_KIND, [])
    claim_dir(out, BENCH_KIND)


def run_bench(sizes: BenchConfig, log: Log) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    """Run the parts asked for (`all` or a comma list of extract,train,predict,sweep); bench.json and table rows."""
    out, part = Path(sizes.out), sizes.part
    parts = set(PARTS) if part == "all" else set(part.split(","))
    if not parts <= {*PARTS, *OTHER_PARTS}:
        raise ParError(f"--part must be all or a comma-separated subset of {','.join((*PARTS, *OTHER_PARTS))}, not "
                       f"'{part}'")
    needs = {"train": ("extract", out / "store.zarr"), "predict": ("train", out / "bench-run" / "best.json")}
    if sizes.track_checkpoint is None:
        needs["track"] = needs["link"] = ("train", out / "bench-run" / "best.json")
    for p, (before, path) in needs.items():
        if p in parts and before not in parts and not path.exists():
            raise ParError(f"{path}: the {p} part needs the {before} part's output; run `par bench --part {before}` "
                           f"first (or --part all)")
    if "sweep" in parts and "extract" not in parts:
        raise ParError("the sweep part reuses the extract part's store and timing: run --part all or extract,sweep")
    claim_bench_dir(out)  # every part deletes and rewrites inside OUT: it must be the bench's own folder
    gpu = torch.cuda.get_device_name(0) if sizes.device.startswith("cuda") and torch.cuda.is_available() else None
    earlier = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
    results: dict[str, Any] = {**earlier, "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                                      "torch": torch.__version__, "gpu": gpu,
                                                      "where": gpu or f"{os.cpu_count()} CPU cores"}}
    if "extract" in parts:
        results["extract"] = bench_extract(out, sizes, log)
    if "train" in parts:
        results["train"] = bench_train(out / "store.zarr", out, sizes, log)
    if "predict" in parts:
        results["predict"] = bench_predict(out, sizes, log)
    if "sweep" in parts:
        results["sweep"] = bench_sweep(out, results["extract"]["extract_s"], sizes, log)
    if "deploy" in parts:
        from .deploy_bench import bench_deploy

        results["deploy"] = bench_deploy(out, sizes, log)
    if "track" in parts:
        from .track_bench import bench_track

        results["track"] = bench_track(out, sizes, log)
    if "link" in parts:
        from .link_bench import bench_link

        results["link"] = bench_link(out, sizes, log)
    if "grid" in parts:
        from .grid_bench import bench_grid

        results["grid"] = bench_grid(out, sizes, log)
    write_json(out / "bench.json", results)
    return results, table_rows(results)


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, value, target) rows of the bench table."""
    rows: list[tuple[str, str, str]] = []
    if "extract" in results:
        e = results["extract"]
        compiled = ", compiled" if e["compile"] else ""
        rows += [(f"extract model-only ({e['clip_model']}, {e['precision']}, batch {e['batch_size']}{compiled})",
                  f"{e['model_only_fps']:,.1f} frames/s", ""),
                 (f"extract pipeline ({e['decode']} decoding, {e['workers']} workers)",
                  f"{e['pipeline_fps']:,.1f} frames/s", ""),
                 ("pipeline / model-only", f"{e['pipeline_over_model']:.3f}", ">= 0.9"),
                 ("float16 bytes per frame / raw floor 2*N*D",
                  f"{e['bytes_per_frame']:,.0f} / {e['raw_floor_bytes']:,} = {e['bytes_over_floor']:.4f}", "<= 1.02"),
                 ("int8 bytes per frame / float16 floor", f"{e['int8_bytes_per_frame'] / e['raw_floor_bytes']:.3f}",
                  "<= 0.51"),
                 ("random read of T=6 frames", f"{e['random_read_ms_T6']:.2f} ms", "")]
        for p, a in e["precision_vs_fp32"].items():
            rows.append((f"tokens {p} vs fp32: min / mean cosine", f"{a['min_token_cosine']:.6f} / "
                         f"{a['mean_token_cosine']:.6f}", ""))
        for d, a in e["dtype_vs_fp32"].items():
            rows.append((f"stored {d} vs float32 tokens: min / mean cosine", f"{a['min_token_cosine']:.6f} / "
                         f"{a['mean_token_cosine']:.6f}", ">= 0.999" if d == "int8" else ""))
        for d, h in e["host_loop"].items():
            for name, (how, _, _) in HOST_LOOP_WRITES.items():
                w = h[name]
                rows.append((f"extract host loop ({d}), CLIP+decode stubbed, {how}",
                             f"{w['frames_per_s']:,.0f} frames/s ({w['user_ms_per_frame']:.3f} ms user CPU)",
                             ">= 10,000" if name == "direct" else ""))
    if "train" in results:
        r = results["train"]
        rows += [(f"train model-only ({r['model']}, batch {r['batch_size']})",
                  f"{r['model_only_samples_per_s']:,.1f} samples/s", ""),
                 ("train from store", f"{r['store_samples_per_s']:,.1f} samples/s", ""),
                 ("store / model-only", f"{r['store_over_model']:.3f}", ">= 0.9"),
                 *((f"train from --cache {k} / model-only ({c['samples_per_s']:,.1f} samples/s)",
                    f"{c['over_model']:.3f}", ">= 0.9") for k, c in r["cache"].items()),
                 *((f"model-only step, --fusion-compile {k} / eager ({c['samples_per_s']:,.1f} samples/s; first step "
                    f"{c['first_step_s']:.1f} s)", f"{c['over_model']:.3f}", "fastest: the CUDA default")
                   for k, c in r.get("step_modes", {}).items()),
                 ("checkpoint from --cache ram / device = from disk",
                  " / ".join("yes" if c["same_checkpoint_as_disk"] else "no" for c in r["cache"].values()),
                  "yes (a CPU run)"),
                 (f"loader alone, warm ({r['workers']} workers)",
                  f"{r['loader_warm_samples_per_s']:,.1f} samples/s", ""),
                 ("loader alone, warm, no readahead",
                  f"{r['loader_warm_no_readahead_samples_per_s']:,.1f} samples/s", ""),
                 ("loader alone, int8 store, warm", f"{r['int8_loader_warm_samples_per_s']:,.1f} samples/s", ""),
                 ("loader alone, cold page cache (float16 / int8)",
                  f"{r['loader_cold_samples_per_s']:,.1f} / {r['int8_loader_cold_samples_per_s']:,.1f} samples/s", "")]
        if r["disk_random_read"]:
            d = r["disk_random_read"]
            rows += [("disk random rows/s, cold (one at a time / batches announced)",
                      f"{d['one_at_a_time_rows_per_s']:,.0f} / {d['batches_of_96_rows_per_s']:,.0f}", ""),
                     ("cold loader / what that disk rate allows (6 rows a sample)", f"{r['cold_over_disk_bound']:.3f}",
                      ">= 0.8")]
        rows += [(f"choosing a batch's rows, batch {d['batch_size']}: whole batch / tracklet by tracklet",
                  f"{d['batch_us']:,.0f} / {d['tracklet_by_tracklet_us']:,.0f} µs "
                  f"({100 * d['share_of_model_step']:.2f}% of a model-only step)", "") for d in r.get("draw", [])]
        if r["checksum_verification"]:
            v = r["checksum_verification"]
            rows.append(("row read warm, checksum never / always", f"{v['ms_per_row_verify_never']:.4f} / "
                         f"{v['ms_per_row_verify_always']:.4f} ms", ""))
    if "predict" in results:
        p = results["predict"]
        rows.append((f"predict ({p['tracklets']} tracklets, all {p['frames']} frames)",
                     f"{p['tracklets_per_s']:,.2f} tracklets/s", ""))
    if "deploy" in results:
        from .deploy_bench import deploy_rows

        rows += deploy_rows(results["deploy"])
    if "sweep" in results:
        w = results["sweep"]
        rows += [(f"sweep T={w['frames']} x {w['epochs']} epochs: ours (extract once + train)",
                  f"{w['ours_total_s']:.1f} s", ""),
                 ("sweep the reference way (CLIP every step)", f"{w['reference_total_s']:.1f} s", ""),
                 (f"sweep speedup, measured ({w['epochs']} epoch(s))", f"{w['speedup']:.2f}x", ""),
                 (f"sweep speedup, projected to {w['projected_epochs']} epochs", f"{w['projected_speedup']:.1f}x", ""),
                 ("the sweep's training side by side (one read a batch) / one after another",
                  f"{w['together_over_one_after_another']:.3f} ({w['together_s']:.1f} s)", "< 1"),
                 ("side by side: the same checkpoints", "yes" if w["together_same_checkpoints"] else "no", "yes")]
    if "track" in results:
        k = results["track"]

        def ms(d: dict[str, float], scale: float = 1.0) -> str:
            return plus_minus(d["mean"], d["std"], scale)
        rows += [(f"track, motion detector: MOTA / IDF1 / ID switches ({k['seeds']} scenes)",
                  f"{ms(k['motion_mota'], 100)} / {ms(k['motion_idf1'], 100)} / {ms(k['motion_id_switches'])}", ""),
                 ("track, ground-truth boxes: MOTA / IDF1 / ID switches",
                  f"{ms(k['ground_truth_mota'], 100)} / {ms(k['ground_truth_idf1'], 100)} / "
                  f"{ms(k['ground_truth_id_switches'])}", ""),
                 ("attributes F1: tracklet (par) / per-frame vote", f"{ms(k['tracklet_f1'], 100)} / "
                  f"{ms(k['per_frame_vote_f1'], 100)}", "tracklet ahead"),
                 ("track end to end (motion detector)", f"{k['frames_per_s']:,.1f} video frames/s", ""),
                 ("track stage shares", ", ".join(f"{s} {100 * v:.0f}%" for s, v in sorted(
                     k["stage_share"].items(), key=lambda kv: -kv[1])), ""),
                 ("track peak memory", " / ".join(f"{m}: {v:,.0f} MB" for m, v in k["peak_memory_mb"].items()),
                  "flat")]
        v = k["live"]
        rows += [("live: a person's last frame -> their record, median / p95",
                  f"{v['delay_s']['median']} / {v['delay_s']['p95']} s", ""),
                 ("live: frames dropped at 1x / 2x / 4x what this machine keeps up with",
                  " / ".join(f"{100 * d:.1f}%" for d in v["dropped"].values()), "0% at 1x"),
                 ("live: cameras at 10 fps followed without dropping", str(v["cameras_without_dropping"]), ""),
                 (f"live vs file on the same footage ({v['file_agreement']['tracks_compared']} people): group "
                  f"answers agreeing / tracks from the same frames / tracks agreeing in every group",
                  f"{ms(v['file_agreement']['group_agreement'], 100)} / {ms(v['file_agreement']['same_frames'], 100)}"
                  f" / {ms(v['file_agreement']['tracks_equal'], 100)}", "100% where no frame drops"),
                 ("live peak memory", " / ".join(f"{m}: {x:,.0f} MB" for m, x in v["peak_memory_mb"].items()),
                  "flat")]
    if "link" in results:
        from ..footage.linking import CUES

        k = results["link"]
        names = {"par": "par", **{f"par_no_{c}": f"par without {c}" for c in CUES},
                 "par_no_same_camera_gap": "par without the same-camera gap", "par_live": "par live (last link)",
                 "par_live_on_arrival": "par live (person on arrival)", "pp_human": "PP-Human's method"}
        for size, site in k["sites"].items():
            for detector in ("ground_truth", "motion"):
                for name, label in names.items():
                    m = site[detector][name]
                    rows.append((f"link, {size} ({k['seeds']} sites), {detector.replace('_', '-')} boxes, {label}: "
                                 f"multi-camera IDF1 / IDP / IDR / link precision / recall",
                                 " / ".join(plus_minus(m[x]["mean"], m[x]["std"])
                                            for x in ("idf1", "idp", "idr", "precision", "recall")),
                                 ">= 85% IDF1 (par, ground-truth boxes)" if name == "par" and detector ==
                                 "ground_truth" else "within 2 points of par" if name == "par_live" else ""))
        spans = {"day": "a day of times", "hour": "a busy hour: one n x n problem"}
        for span, scale in k["scale"].items():
            rows.append((f"link: {scale['tracks']:,} tracks (random appearances, {spans[span]})",
                         f"{scale['seconds']:.2f} s", "< 10 s"))
    if "grid" in results:
        g, s = results["grid"], results["grid"]["store"]
        rows += [(f"grid store: {s['tracklets']:,} MARS-shaped tracklets, {s['rows']:,} rows ({s['gb']:.1f} GB "
                  f"{s['dtype']}), random tokens through the extraction sink",
                  f"{s['rows_per_s']:,.0f} rows/s" if s["rows_per_s"] else "reused", ""),
                 (f"grid: {g['points']} points (T {g['frames']} x {' / '.join(g['variants'])} x {g['seeds']} "
                  f"seed(s)), {g['epochs']} epochs, {g['fusion_model']} batch {g['train_batch']}, fused",
                  f"{g['grid_s']:,.1f} s", "< 300 s (MARS, 20 epochs, 3 seeds, one H100/H200)"),
                 ("grid: --cache " + g["cache_requested"], g["cache"] or "disk", "")]
        if g["peak_gpu_gib"] is not None:
            rows.append(("grid: peak GPU memory", f"{g['peak_gpu_gib']:.1f} GiB", ""))
        if g["alone_scaled_s"] is not None:
            rows += [(f"grid points trained alone ({len(g['alone_measured_s'])} measured) scaled to all / fused",
                      f"{g['alone_scaled_s']:,.1f} s / {g['grid_s']:,.1f} s = {g['alone_over_grid']:.2f}x", "> 1"),
                     ("grid points alone: the fused grid's checkpoints",
                      "yes" if g["alone_same_checkpoints"] else "no", "yes (a CPU run)")]
    return rows
