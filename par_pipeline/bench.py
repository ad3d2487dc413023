"""`make bench`: throughput figures measured as ratios in one run on one machine.

extract: whole pipeline (decode workers + CLIP + writes) vs model-only forward on pre-decoded
         tensors; bytes per frame on disk vs the raw floor 2*N*D; random-read cost of the chunking.
train:   training samples/s from the store vs the model-only step on in-memory tensors; a
         frame-count sweep from one store (extraction included) vs the reference way (CLIP re-run
         on every sampled frame at every step).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .encoder import ClipEncoder
from .extract import ExtractConfig, extract
from .layouts import build_mars_manifest
from .losses import attribute_loss
from .model import VTFPAR, load_model_config
from .preprocess import load_frame
from .samples import sample_frames
from .schema import load_schema
from .store import TokenStore
from .synth import plan_random, write_synth
from .train import TrainConfig, TrainingStep, build_model, input_dtype, loader_workers, train, training_loader


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_extract(work: Path, model: str, device: str, precision: str, batch_size: int, workers: int, tracklets: int,
                  frames: int, pretrained: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    data = work / "mars"
    if not data.exists():
        write_synth(data, plan_random(tracklets, (frames, frames), seed=0), workers=max(1, os.cpu_count() or 1))
    manifest, _ = build_mars_manifest(data, load_schema("mars"))
    enc = ClipEncoder(model, pretrained, pretrained is None, device, precision)
    paths = [str(manifest.resolve(f)) for r in manifest.records for f in r.frames]
    imgs = torch.from_numpy(np.stack([load_frame(p, enc.preprocess)[0] for p in paths[:batch_size]]))
    if enc.device.type == "cuda":
        imgs = imgs.pin_memory()
    store_dtype = torch.float16  # what the pipeline brings back for a float16 store
    for _ in range(2):
        enc.encode_frames(imgs, store_dtype)
    _sync(enc.device)
    n_batches = max(3, len(paths) // batch_size)
    t = time.perf_counter()
    for _ in range(n_batches):
        enc.encode_frames(imgs, store_dtype).cpu()
    _sync(enc.device)
    model_fps = n_batches * batch_size / (time.perf_counter() - t)
    log(f"model-only: {model_fps:,.1f} frames/s")
    agreement = {}
    if enc.autocast_dtype is not None:  # reduced precision vs fp32 on the same frames
        low = enc.encode_frames(imgs[:16])
        dtype, enc.autocast_dtype = enc.autocast_dtype, None
        ref = enc.encode_frames(imgs[:16])
        enc.autocast_dtype = dtype
        cos = torch.nn.functional.cosine_similarity(low.flatten(0, 1), ref.flatten(0, 1), dim=-1)
        agreement = {"max_abs_diff_vs_fp32": float((low - ref).abs().max()), "min_token_cosine_vs_fp32": float(cos.min()),
                     "mean_token_cosine_vs_fp32": float(cos.mean())}
        log(f"{dtype} vs fp32: {agreement}")
    out = work / "store.zarr"
    if out.exists():
        import shutil
        shutil.rmtree(out)
    stamps: list[tuple[float, int]] = []
    cfg = ExtractConfig(out=str(out), model=model, pretrained=pretrained, allow_random_init=pretrained is None,
                        batch_size=batch_size, shard_frames=batch_size * max(1, 64 // batch_size) if batch_size < 64 else batch_size,
                        workers=workers, device=device, precision=precision)
    t0 = time.perf_counter()
    res = extract(manifest, cfg, on_progress=lambda d, _t: stamps.append((time.perf_counter(), d)))
    wall = time.perf_counter() - t0  # the whole stage one, model loading included
    # Rate from the first written shard to the end: model loading and worker start-up excluded.
    (ta, da), (tb, db) = stamps[1], stamps[-1]
    pipe_fps = (db - da) / (tb - ta) if tb > ta else res.frames / wall
    log(f"pipeline: {pipe_fps:,.1f} frames/s; waited for decoded frames {res.loader_wait_s:.1f} of {res.encode_s:.1f} s")
    store = TokenStore(out)
    floor = 2 * store.num_tokens * store.dim if store.tokens.dtype == np.float16 else 4 * store.num_tokens * store.dim
    per_frame = _dir_bytes(out / "tokens") / res.frames
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for i in range(min(200, len(store))):
        rows = store.valid_rows(i)
        store.read_rows(rows[sample_frames(len(rows), 6, rng)])
    read_ms = (time.perf_counter() - t) / min(200, len(store)) * 1000
    host = bench_host_loop(enc, work, batch_size, int(store.attrs["shard_frames"]), workers, log)
    return {"model": model, "device": str(enc.device), "precision": precision, "autocast": str(enc.autocast_dtype),
            "batch_size": batch_size, "workers": workers, "frames": res.frames,
            "model_only_fps": model_fps, "pipeline_fps": pipe_fps, "pipeline_over_model": pipe_fps / model_fps,
            "bytes_per_frame": per_frame, "raw_floor_bytes": floor, "bytes_over_floor": per_frame / floor,
            "chunks": list(store.tokens.chunks), "shards": list(getattr(store.tokens, "shards", None) or []),
            "random_read_ms_T6": read_ms, "store": str(out), "loader_wait_s": res.loader_wait_s,
            "encode_loop_s": res.encode_s, "extract_s": wall, "host_loop": host, **agreement}


class _InstantFrames(torch.utils.data.Dataset):
    """Stands in for JPEG decoding: every row is the same ready image."""

    def __init__(self, rows: int, size: int):
        self.rows, self.image = rows, torch.full((3, size, size), 128, dtype=torch.uint8)

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor, bool, str]:
        return row, self.image, True, ""


class _InstantEncoder:
    """Stands in for CLIP: hands back fixed tokens at once, so only the loop's own host work is timed."""

    def __init__(self, enc: ClipEncoder, batch_size: int):
        self.preprocess, self.num_tokens, self.dim, self.device = enc.preprocess, enc.num_tokens, enc.dim, enc.device
        self.tokens = torch.randn(batch_size, enc.num_tokens, enc.dim).to(enc.device, torch.float16)

    def encode_frames(self, images: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        return self.tokens[:len(images)].to(out_dtype)


def bench_host_loop(enc: ClipEncoder, work: Path, batch_size: int, shard_frames: int, workers: int,
                    log: Callable[[str], None], frames: int = 4096) -> dict[str, Any]:
    """The extraction loop's serial host capacity: `par extract`'s own loop (loader hand-off, copies into the
    shard buffers, writer thread) with JPEG decoding and CLIP stubbed out, once per write path (direct shard
    files, as `par extract` writes local stores, vs zarr-python's sharded writes). On a GPU server the model
    runs at thousands of frames/s; this is the rate the loop itself can carry. The store goes to /dev/shm when
    there is one, so this machine's disk does not set the figure. User CPU per frame is the part that holds
    the GIL (main, pin and writer threads of this process)."""
    import shutil

    from .extract import ExtractConfig, _run_shards
    from .store import StorePlan, create_zarr

    base = Path("/dev/shm") if Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 4 * frames * 2 * enc.num_tokens * enc.dim else work
    frames -= frames % shard_frames
    stub = _InstantEncoder(enc, batch_size)
    out: dict[str, Any] = {"frames": frames, "batch_size": batch_size, "shard_frames": shard_frames, "workers": workers,
                           "store_on": str(base)}
    for name, direct in (("direct", True), ("zarr", False)):
        target = base / f"par-bench-host-{os.getpid()}-{name}.zarr"
        shutil.rmtree(target, ignore_errors=True)
        plan = StorePlan(tracklets=["t"], split=["train"], labels=np.zeros((1, 1), np.uint8),
                         offsets=np.array([0, frames]), frame_index=np.arange(frames, dtype=np.int32),
                         num_tokens=enc.num_tokens, dim=enc.dim)
        g = create_zarr(str(target), plan, {"text_embeddings": np.zeros((1, enc.dim), np.float32)}, {}, "float16", shard_frames)
        cfg = ExtractConfig(out=str(target), batch_size=batch_size, shard_frames=shard_frames, workers=workers)
        stamps: list[tuple[float, int]] = []
        t, cpu = time.perf_counter(), os.times()
        written = [0]

        def report(n: int) -> None:
            written[0] += n
            stamps.append((time.perf_counter(), written[0]))

        _run_shards(stub, g, str(target), [""] * frames, list(range(frames // shard_frames)), cfg, report, {},
                    frames=_InstantFrames(frames, enc.preprocess.size), direct_writes=direct)
        end = os.times()
        (ta, da), (tb, db) = stamps[0], stamps[-1]
        fps = (db - da) / (tb - ta) if tb > ta else frames / (time.perf_counter() - t)
        out[name] = {"frames_per_s": fps, "user_ms_per_frame": (end.user - cpu.user) / frames * 1e3,
                     "system_ms_per_frame": (end.system - cpu.system) / frames * 1e3}
        shutil.rmtree(target, ignore_errors=True)
        log(f"extract host loop, {name} writes: {fps:,.0f} frames/s, user CPU {out[name]['user_ms_per_frame']:.3f} "
            f"ms/frame, system {out[name]['system_ms_per_frame']:.3f} ms/frame")
    return out


def bench_train(store_path: Path, work: Path, model: str, device: str, epochs: int, batch_size: int, workers: int | None,
                log: Callable[[str], None]) -> dict[str, Any]:
    """Training from the store vs the same `TrainingStep` on one in-memory batch (model, loss, AMP, fused
    Adam on GPU, schedule: all as `par train` has them), so the ratio is what data loading costs."""
    store = TokenStore(store_path)
    dev = torch.device(device)
    cfg = TrainConfig(store=str(store_path), out=str(work / "bench-run"), model=model, epochs=epochs, batch_size=batch_size,
                      workers=workers, device=device, warmup_epochs=1)
    net = build_model(cfg, store).to(dev)
    pos_rate = torch.from_numpy(store.labels.mean(0).astype(np.float32)).to(dev)
    steps = TrainingStep(net, net, cfg, 100, pos_rate)
    x = torch.randn(batch_size, store.num_tokens, store.dim, device=dev).to(input_dtype(dev, cfg.amp))
    y = (torch.rand(batch_size, len(store.attribute_names), device=dev) > 0.5).float()

    def model_only(n: int = 50) -> float:
        for _ in range(5):
            steps.step(x, y)
        _sync(dev)
        t = time.perf_counter()
        for _ in range(n):
            steps.step(x, y)
        _sync(dev)
        return n * batch_size / (time.perf_counter() - t)

    before = model_only()
    # The loader alone (same workers, same batches, no model): the rate data loading can carry at most.
    # Epoch 0 absorbs worker start-up; then whole epochs (their start-up included) until 40 batches are timed.
    loader, sampler = training_loader(cfg, store.indices(cfg.train_split), dev)
    for _ in loader:
        pass
    loaded, epoch, t = 0, 1, time.perf_counter()
    while loaded < 40 * batch_size or epoch < 3:
        sampler.set_epoch(epoch)
        for batch, _, _ in loader:  # not `x`: the model-only step after the run reuses that
            loaded += len(batch)
        epoch += 1
    busy = time.perf_counter() - t
    loader_sps = loaded / busy if busy > 0 else float("nan")
    del loader
    workers = loader_workers(workers, dev)
    log(f"train loader alone ({workers} workers): {loader_sps:,.1f} samples/s")
    import shutil
    shutil.rmtree(work / "bench-run", ignore_errors=True)
    # Each epoch's rate from `par train`'s own log: its first batch (loader start-up) left out, its end
    # synchronised with the device; the first epoch (allocator and kernel warm-up) is left out when there are more.
    records: list[dict[str, Any]] = []
    train(cfg, on_epoch=records.append)
    rates = [r["samples_per_s"] for r in (records[1:] if len(records) > 1 else records) if r["samples_per_s"]]
    store_sps = float(np.median(rates)) if rates else float("nan")
    per_epoch = -(-len(store.indices(cfg.train_split)) // batch_size)
    if per_epoch < 8:  # a short epoch is mostly start-up and prefetch: the rate is not a steady one
        log(f"note: only {per_epoch} steps per epoch; for a steady-state rate use more tracklets or a smaller batch")
    after = model_only()  # measured on both sides of the training run: a shared machine's speed drifts
    model_sps = (before + after) / 2
    log(f"train model-only: {model_sps:,.1f} samples/s (before {before:,.1f}, after {after:,.1f})")
    log(f"train from store: {store_sps:,.1f} samples/s")
    return {"model": model, "device": device, "batch_size": batch_size, "workers": workers,
            "model_only_samples_per_s": model_sps, "model_only_before_after": [before, after], "store_samples_per_s": store_sps, "loader_alone_samples_per_s": loader_sps,
            "steps_per_epoch": per_epoch,
            "store_over_model": store_sps / model_sps}


def bench_sweep(work: Path, extract_s: float, fusion_model: str, device: str, frames_list: list[int], epochs: int,
                batch_size: int, log: Callable[[str], None], project_epochs: int = 20) -> dict[str, Any]:
    """A frame-count sweep: ours = the extraction (timed by the extract part, same store) + training from the
    store per T; the reference way = decode + CLIP on every sampled frame at every step, same data and models.

    Both are measured for `epochs` epochs; the projection to `project_epochs` scales each side's measured
    per-epoch cost (extraction happens once)."""
    import shutil

    store_path = work / "store.zarr"
    store = TokenStore(store_path)
    clip_model = store.attrs["model"]
    manifest, _ = build_mars_manifest(work / "mars", load_schema("mars"))
    ours = {}
    for T in frames_list:
        shutil.rmtree(work / f"sweep-T{T}", ignore_errors=True)
        t = time.perf_counter()
        train(TrainConfig(store=str(store_path), out=str(work / f"sweep-T{T}"), model=fusion_model, frames=T, epochs=epochs,
                          batch_size=batch_size, device=device, warmup_epochs=0))
        ours[T] = time.perf_counter() - t
    enc = ClipEncoder(clip_model, None, True, device)
    train_recs = manifest.split("train")
    dev = torch.device(device)
    net = VTFPAR(load_model_config(fusion_model, input_dim=store.dim, num_attributes=len(store.attribute_names)),
                 torch.from_numpy(store.text_features())).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    reference = {}
    rng = np.random.default_rng(0)
    for T in frames_list:
        t = time.perf_counter()
        for _ in range(epochs):
            order = rng.permutation(len(train_recs))
            for b in range(0, len(order) - 1, batch_size):
                recs = [train_recs[i] for i in order[b:b + batch_size]]
                imgs = [load_frame(manifest.resolve(r.frames[j]), enc.preprocess)[0]
                        for r in recs for j in sample_frames(len(r.frames), T, rng)]
                feats = enc.encode_frames(torch.from_numpy(np.stack(imgs))).view(len(recs), T, store.num_tokens, store.dim).mean(1)
                y = torch.tensor([r.labels for r in recs], dtype=torch.float32, device=dev)
                loss = attribute_loss(net(feats.to(dev)), y, None)
                opt.zero_grad()
                loss.backward()
                opt.step()
        reference[T] = time.perf_counter() - t
        log(f"sweep T={T}: ours {ours[T]:.1f}s (+{extract_s:.1f}s extraction once), reference {reference[T]:.1f}s")
    total_ours = extract_s + sum(ours.values())
    total_ref = sum(reference.values())
    scale = project_epochs / epochs
    proj_ours = extract_s + scale * sum(ours.values())
    proj_ref = scale * total_ref
    return {"clip_model": clip_model, "fusion_model": fusion_model, "epochs": epochs, "frames": frames_list,
            "extract_s": extract_s, "ours_train_s": ours, "reference_s": reference, "ours_total_s": total_ours,
            "reference_total_s": total_ref, "speedup": total_ref / total_ours,
            "projected_epochs": project_epochs, "projected_ours_s": proj_ours, "projected_reference_s": proj_ref,
            "projected_speedup": proj_ref / proj_ours,
            "note": "ours includes per-epoch evaluation on the test split; the reference loop trains only"}


def bench_predict(work: Path, device: str, batch_size: int, workers: int, log: Callable[[str], None]) -> dict[str, Any]:
    """`par predict` throughput: all frames of every synthetic test tracklet, batched through CLIP together."""
    from .predict import TrackletInput, predict

    manifest, _ = build_mars_manifest(work / "mars", load_schema("mars"))
    items = [TrackletInput(r.tracklet, frames=[manifest.resolve(f) for f in r.frames]) for r in manifest.split("test")]
    predict(items[:2], str(work / "bench-run"), device=device, batch_size=batch_size, workers=workers)  # warm-up
    t = time.perf_counter()
    predict(items, str(work / "bench-run"), device=device, batch_size=batch_size, workers=workers)
    wall = time.perf_counter() - t
    frames = sum(len(i.frames or []) for i in items)
    log(f"predict: {len(items) / wall:,.2f} tracklets/s")
    return {"tracklets": len(items), "frames": frames, "seconds": wall, "tracklets_per_s": len(items) / wall,
            "frames_per_s": frames / wall, "batch_size": batch_size, "workers": workers, "device": device}
