"""Stage one: every frame of every tracklet through the frozen CLIP image encoder, once, into a store.

Work is cut into shards of `shard_frames` consecutive store rows. A shard is encoded in fixed,
shard-aligned batches and written whole, then marked done; so a run stopped at any point
(Ctrl-C, kill -9) resumes at the first unfinished shard and ends bit-identical to an
uninterrupted run, and torchrun ranks (shard s goes to rank s % world) never touch one file.
The store is built at `<out>.partial` and renamed to `<out>` (or converted into the HDF5 file)
only when every shard is done.
"""
from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from . import __version__
from .atomic import atomic_path, remove_path
from .distributed import DistContext
from .encoder import ClipEncoder
from .errors import ParError
from .manifest import Manifest
from .preprocess import Preprocess, load_frame
from .prompts import build_prompts
from .samples import sample_frames
from .shard_files import ShardFileWriter, shard_rows
from .store import (STORE_FORMAT, STORE_VERSION, StorePlan, create_zarr, is_url, open_zarr_group, store_format_of,
                    zarr_to_h5)

RUN_KEYS = ("model", "weights", "schema", "attributes", "prompts", "preprocessing", "dtype", "frame_policy",
            "shard_frames", "manifest_sha256")


@dataclass
class ExtractConfig:
    out: str
    model: str = "ViT-B-16"
    pretrained: str | None = None
    allow_random_init: bool = False
    seed: int = 0
    fmt: str | None = None  # "zarr" | "h5"; from the suffix when None
    dtype: str = "float16"
    batch_size: int = 64
    shard_frames: int = 64
    workers: int = 2
    device: str = "cpu"
    precision: str = "auto"
    prompt_template: str | None = None
    max_frames_per_tracklet: int | None = None
    on_bad_frame: str = "error"  # "error" | "skip"


@dataclass
class ExtractResult:
    path: str
    frames: int
    tracklets: int
    encoded_frames: int
    skipped: list[str] = field(default_factory=list)
    already_complete: bool = False
    resumed_shards: int = 0
    encode_s: float = 0.0  # wall time of the encode loop (this rank)
    loader_wait_s: float = 0.0  # of which waiting for decoded frames: near encode_s means decode-bound


def select_frames(n: int, k: int | None) -> np.ndarray:
    """All frames, or k evenly spaced ones (first and last included)."""
    if k is None or n <= k:
        return np.arange(n)
    return sample_frames(n, k, None)  # n > k: the rounded positions are distinct


def plan_store(manifest: Manifest, max_frames: int | None, num_tokens: int, dim: int) -> tuple[StorePlan, list[str]]:
    frame_index, paths, offsets = [], [], [0]
    for rec in manifest.records:
        idx = select_frames(len(rec.frames), max_frames)
        frame_index.append(idx)
        paths.extend(str(manifest.resolve(rec.frames[i])) for i in idx)
        offsets.append(offsets[-1] + len(idx))
    plan = StorePlan(
        tracklets=[r.tracklet for r in manifest.records], split=[r.split for r in manifest.records],
        labels=np.array([r.labels for r in manifest.records], dtype=np.uint8).reshape(len(manifest.records), -1),
        offsets=np.array(offsets, dtype=np.int64),
        frame_index=np.concatenate(frame_index).astype(np.int32) if frame_index else np.zeros(0, np.int32),
        num_tokens=num_tokens, dim=dim,
    )
    return plan, paths


class FrameDataset(Dataset):
    """Store row -> (row, uint8 image, ok, reason); a bad frame comes back as zeros with ok=False."""

    def __init__(self, paths: list[str], pp: Preprocess):
        self.paths, self.pp = paths, pp

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor, bool, str]:
        img, reason = load_frame(self.paths[row], self.pp)
        if img is None:
            return row, torch.zeros(3, self.pp.size, self.pp.size, dtype=torch.uint8), False, reason
        return row, torch.from_numpy(img), True, ""


class ShardBatchSampler(Sampler):
    """Shard-aligned batches: batch composition depends only on the shard, so resumed runs match."""

    def __init__(self, shards: list[int], shard_frames: int, batch_size: int, num_frames: int):
        self.shards, self.shard_frames, self.batch_size, self.num_frames = shards, shard_frames, batch_size, num_frames

    def __iter__(self) -> Iterator[list[int]]:
        for s in self.shards:
            start, end = s * self.shard_frames, min((s + 1) * self.shard_frames, self.num_frames)
            for b in range(start, end, self.batch_size):
                yield list(range(b, min(b + self.batch_size, end)))

    def __len__(self) -> int:
        per = -(-self.shard_frames // self.batch_size)
        return len(self.shards) * per


def manifest_digest(manifest: Manifest) -> str:
    h = hashlib.sha256()
    for r in manifest.records:
        h.update(f"{r.tracklet}|{r.split}|{','.join(r.frames)}|{r.labels}\n".encode())
    return h.hexdigest()


def store_attrs(cfg: ExtractConfig, enc: ClipEncoder, manifest: Manifest, prompts: list[str]) -> dict[str, Any]:
    schema = manifest.schema
    return {
        "format": STORE_FORMAT, "version": STORE_VERSION, "complete": False,
        "model": enc.model_name, "weights": enc.weights, "schema": schema.name, "attributes": schema.attributes,
        "group_boundaries": schema.boundaries, "groups": [g.name for g in schema.groups],
        "prompts": prompts, "preprocessing": enc.preprocess.to_dict(), "dtype": cfg.dtype,
        "frame_policy": {"max_frames_per_tracklet": cfg.max_frames_per_tracklet, "selection": "evenly-spaced"},
        "shard_frames": cfg.shard_frames, "manifest_sha256": manifest_digest(manifest),
        "manifest_root": manifest.root, "num_tokens": enc.num_tokens, "dim": enc.dim,
        "allow_random_init": enc.weights.get("kind") == "random-init", "on_bad_frame": cfg.on_bad_frame,
        "skipped_frames": [], "par_version": __version__,
    }


def _partial_path(out: str) -> str:
    return out.rstrip("/") + ".partial"


def _check_same_run(existing: dict[str, Any], wanted: dict[str, Any], where: str) -> None:
    for key in RUN_KEYS:
        if existing.get(key) != wanted.get(key):
            raise ParError(f"{where}: existing store was made with a different {key}; it is never mixed - "
                           f"remove it or choose another --out")


def extract(manifest: Manifest, cfg: ExtractConfig, dist: DistContext | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> ExtractResult:
    """Run stage one. `on_progress(done_frames, total_frames)` is called as frames are written (rank 0)."""
    dist = dist or DistContext.single()
    fmt = cfg.fmt or store_format_of(cfg.out)
    if fmt == "h5" and dist.world_size > 1:
        raise ParError(f"{cfg.out}: HDF5 output cannot be written by several ranks; use a zarr --out with torchrun")
    if cfg.on_bad_frame not in ("error", "skip"):
        raise ParError(f"--on-bad-frame must be 'error' or 'skip', not '{cfg.on_bad_frame}'")
    if cfg.dtype not in ("float16", "float32"):
        raise ParError(f"--dtype must be float16 or float32, not '{cfg.dtype}'")
    enc = ClipEncoder(cfg.model, cfg.pretrained, cfg.allow_random_init, cfg.device, cfg.precision, cfg.seed)
    prompts = build_prompts(manifest.schema, cfg.prompt_template)
    attrs = store_attrs(cfg, enc, manifest, prompts)
    plan, paths = plan_store(manifest, cfg.max_frames_per_tracklet, enc.num_tokens, enc.dim)
    out, partial = cfg.out, _partial_path(cfg.out)

    # A finished store: verify it is the same run and stop.
    existing = _existing_attrs(out, fmt)
    if existing is not None and existing.get("complete"):
        _check_same_run(existing, attrs, out)
        return ExtractResult(out, plan.num_frames, len(plan.tracklets), 0, list(existing.get("skipped_frames", [])),
                             already_complete=True)

    target = out if is_url(out) else partial  # URLs are written in place, marked complete last
    resumed = 0
    if dist.is_main:
        if _zarr_exists(target):
            g = open_zarr_group(target, mode="r+")
            _check_same_run(g.attrs.asdict(), attrs, target)
            resumed = int(np.asarray(g["done"][:]).sum())
        else:
            text = {"text_embeddings": enc.encode_text(prompts).cpu().numpy(),
                    "phrase_embeddings": enc.encode_text(build_prompts(manifest.schema, "{phrase}")).cpu().numpy()}
            create_zarr(target, plan, text, attrs, cfg.dtype, cfg.shard_frames)
    dist.barrier()
    g = open_zarr_group(target, mode="r+")
    done = np.asarray(g["done"][:]).astype(bool)
    mine = [s for s in range(len(done)) if s % dist.world_size == dist.rank and not done[s]]
    total_frames = plan.num_frames
    done_frames = total_frames - sum(shard_rows(s, cfg.shard_frames, total_frames) for s in range(len(done)) if not done[s])
    if on_progress and dist.is_main:
        on_progress(done_frames, total_frames)

    stats: dict[str, float] = {}
    t_start = time.perf_counter()
    written = [done_frames]

    def report(n: int) -> None:
        written[0] += n
        if on_progress and dist.is_main:
            on_progress(written[0], total_frames)

    encoded = _run_shards(enc, g, target, paths, mine, cfg, report, stats)
    dist.barrier()
    result = ExtractResult(out, total_frames, len(plan.tracklets), encoded, resumed_shards=resumed,
                           encode_s=time.perf_counter() - t_start, loader_wait_s=stats.get("loader_wait_s", 0.0))
    if dist.is_main:
        result.skipped = _finalize(g, target, out, fmt, paths)
    dist.barrier()
    return result


def _existing_attrs(out: str, fmt: str) -> dict[str, Any] | None:
    """Attributes of whatever store is at `out` (None when nothing is); a foreign file there is an error."""
    if fmt == "h5" and Path(out).is_file():
        import h5py
        import json

        try:
            with h5py.File(out, "r") as h:
                return {k: json.loads(v) for k, v in h.attrs.items()}
        except (OSError, ValueError):
            raise ParError(f"{out}: exists but is not a par token store; remove it or choose another --out") from None
    if _zarr_exists(out):
        attrs = open_zarr_group(out).attrs.asdict()
        if attrs.get("format") != STORE_FORMAT or not (attrs.get("complete") or is_url(out)):
            raise ParError(f"{out}: exists but is not a finished par token store; remove it or choose another --out")
        return attrs
    if not is_url(out) and Path(out).exists():
        raise ParError(f"{out}: exists but is not a par token store; remove it or choose another --out")
    return None


def _zarr_exists(path: str) -> bool:
    if is_url(path):
        try:
            open_zarr_group(path)
            return True
        except ParError:
            return False
    return (Path(path) / "zarr.json").exists()


class _ShardSink:
    """Host side of the encode loop: a few shard buffers (pinned on CUDA) that the device copies batches
    straight into on a side stream, and a writer thread that writes each full shard (one `writev` of the
    buffer into its shard file; zarr itself for URL stores), then marks it done and frees the buffer.

    The main loop therefore never waits for the GPU and never copies tokens on the host; the bounded
    buffer pool is the back-pressure when the disk is the slower side."""

    def __init__(self, g: Any, target: str, shard_frames: int, num_tokens: int, dim: int, dtype: torch.dtype,
                 device: torch.device, report: Callable[[int], None], depth: int = 3, direct_writes: bool = True):
        self.g, self.shard_frames, self.report = g, shard_frames, report
        local = direct_writes and not is_url(target)
        self.direct = ShardFileWriter.for_array(Path(target) / "tokens") if local else None
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.free: queue.Queue = queue.Queue()
        for _ in range(depth):
            self.free.put(torch.empty((shard_frames, num_tokens, dim), dtype=dtype, pin_memory=self.cuda))
        self.todo: queue.Queue = queue.Queue()
        self.failure: list[BaseException] = []
        self.thread = threading.Thread(target=self._write_loop, daemon=True)
        self.thread.start()

    def take(self) -> torch.Tensor:
        self.raise_failure()
        return self.free.get()

    def copy(self, buf: torch.Tensor, lo: int, feats: torch.Tensor) -> None:
        """buf[lo:lo+len(feats)] = feats, asynchronously from the GPU."""
        if not self.cuda:
            buf[lo:lo + len(feats)].copy_(feats)
            return
        computed = torch.cuda.Event()
        computed.record()
        with torch.cuda.stream(self.stream):
            self.stream.wait_event(computed)
            buf[lo:lo + len(feats)].copy_(feats, non_blocking=True)
            feats.record_stream(self.stream)

    def submit(self, s: int, buf: torch.Tensor, ok: np.ndarray) -> None:
        copied = None
        if self.cuda:
            copied = torch.cuda.Event()
            copied.record(self.stream)
        self.todo.put((s, buf, ok, copied))

    def close(self, surface: bool = True) -> None:
        self.todo.put(None)
        self.thread.join()
        if surface:
            self.raise_failure()

    def raise_failure(self) -> None:
        if self.failure:
            raise self.failure[0]

    def _write_loop(self) -> None:
        while (item := self.todo.get()) is not None:
            s, buf, ok, copied = item
            try:
                if not self.failure:
                    if copied is not None:
                        copied.synchronize()  # releases the GIL
                    n, start = len(ok), s * self.shard_frames
                    frames = buf[:n].numpy()
                    if self.direct is not None:
                        self.direct.write(s, frames, ok)
                    else:
                        self.g["tokens"][start:start + n] = frames
                    self.g["frame_ok"][start:start + n] = ok
                    self.g["done"][s] = 1  # only after the shard's data: a killed run redoes this shard
                    self.report(n)
            except OSError as exc:  # disk full, permissions, I/O error: one line, and the run stays resumable
                where = self.direct.shard_path(s) if self.direct is not None else f"{self.g.store_path} shard {s}"
                self.failure.append(ParError(f"{where}: cannot write ({exc.strerror or exc}); fix the disk or free "
                                             f"space, then re-run the same command to resume"))
            except BaseException as exc:  # surfaced in the main thread
                self.failure.append(exc)
            finally:
                self.free.put(buf)


@torch.inference_mode()
def _run_shards(enc: ClipEncoder, g: Any, target: str, paths: list[str], shards: list[int], cfg: ExtractConfig,
                report: Callable[[int], None], stats: dict[str, float], frames: Dataset | None = None,
                direct_writes: bool = True) -> int:
    """Encode and write `shards`; `report(n)` after each n frames are written; `stats["loader_wait_s"]` gets
    the time spent waiting for decoded frames. `frames` and `direct_writes` exist for `make bench`, which
    times this loop's own host cost with decoding and CLIP stubbed out."""
    if not shards:
        return 0
    F = len(paths)
    loader = DataLoader(
        frames if frames is not None else FrameDataset(paths, enc.preprocess),
        batch_sampler=ShardBatchSampler(shards, cfg.shard_frames, cfg.batch_size, F),
        num_workers=cfg.workers, pin_memory=enc.device.type == "cuda",
        persistent_workers=False, prefetch_factor=4 if cfg.workers > 0 else None,
    )
    store_dtype = torch.float16 if cfg.dtype == "float16" else torch.float32
    sink = _ShardSink(g, target, cfg.shard_frames, enc.num_tokens, enc.dim, store_dtype, enc.device, report,
                      direct_writes=direct_writes)
    shard, buf, ok, filled, encoded = -1, None, np.zeros(0, np.uint8), 0, 0
    batches = iter(loader)
    try:
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            stats["loader_wait_s"] = stats.get("loader_wait_s", 0.0) + time.perf_counter() - t0
            if batch is None:
                break
            rows, images, good, reasons = batch
            sink.raise_failure()
            all_good = bool(good.all())
            if not all_good and cfg.on_bad_frame == "error":
                row, reason = next((int(r), why) for r, g_, why in zip(rows, good, reasons) if not g_)
                raise ParError(f"{paths[row]}: {reason}; replace or remove the frame, or pass --on-bad-frame skip")
            feats = enc.encode_frames(images, store_dtype)
            if not all_good:  # skipped frames: zero tokens (and no chunk in the shard file)
                feats[~good.to(feats.device)] = 0
            first = int(rows[0])
            if first // cfg.shard_frames != shard:  # batches are consecutive rows of one shard
                shard = first // cfg.shard_frames
                buf, ok, filled = sink.take(), np.zeros(shard_rows(shard, cfg.shard_frames, F), np.uint8), 0
            lo = first - shard * cfg.shard_frames
            sink.copy(buf, lo, feats)
            ok[lo:lo + len(rows)] = good.numpy()
            filled += len(rows)
            encoded += len(rows)
            if filled == len(ok):
                sink.submit(shard, buf, ok)
                shard, buf = -1, None
    except BaseException:
        sink.close(surface=False)  # the error at hand wins over a writer failure it may have caused
        raise
    sink.close()
    return encoded


def _finalize(g: Any, target: str, out: str, fmt: str, paths: list[str]) -> list[str]:
    done = np.asarray(g["done"][:])
    if not done.all():
        raise ParError(f"{target}: {int((done == 0).sum())} shard(s) unfinished; re-run the same command to resume")
    ok = np.asarray(g["frame_ok"][:]).astype(bool)
    skipped = [paths[i] for i in np.flatnonzero(~ok)]
    g.attrs.update({"skipped_frames": skipped, "complete": True})
    if is_url(out):
        return skipped
    if fmt == "h5":
        with atomic_path(out) as tmp:
            zarr_to_h5(g, tmp)
        remove_path(Path(target))
    else:
        os.replace(target, out)
    return skipped
