"""Stage one: every frame (and stored view) of every tracklet through the frozen CLIP image encoder, once, into a
token store.

Rows are cut into shards of `shard_frames`. A shard is encoded in fixed, shard-aligned batches and written
whole, then marked done; so a run stopped at any point (Ctrl-C, kill -9, a full disk) resumes at the first
unfinished shard and ends bit-identical to an uninterrupted run, and torchrun ranks (shard s goes to rank
s % world) never touch one file. The store is built at `<out>.partial`, locked while a run writes it, and renamed
to `<out>` (or converted into the HDF5 file) only when every shard is done.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import __version__
from ..config import ExtractConfig, check_device
from ..data.frames import FrameRows, collate_rows, decode_rows
from ..data.manifest import Manifest, manifest_digest
from ..data.preprocess import Preprocess
from ..data.sampling import sample_frames
from ..data.texts import attribute_texts
from ..distributed import DistContext
from ..errors import ParError
from ..model.clip import ClipEncoder, weights_identity
from ..outputs import atomic_write, exclusive, fault_point, fsync_dir, io_errors, remove_own
from ..store.codec import TokenCodec
from ..store.format import STORE_FORMAT, STORE_KEYS, STORE_VERSION, check_identity, is_url, store_format_of
from ..store.reader import open_zarr_group, read_attrs
from ..store.shard_files import shard_rows
from ..store.writer import ShardSink, StorePlan, create_zarr, zarr_to_h5
from ..workers import stop_with_parent

VIEW_SPLITS = ("train",)  # evaluation reads view 0 only, so only training frames get extra views


@dataclass
class ExtractResult:
    rows: int
    tracklets: int
    encoded_rows: int
    skipped: list[str] = field(default_factory=list)
    already_complete: bool = False
    resumed_shards: int = 0
    encode_s: float = 0.0  # wall time of the encode loop (this rank)
    loader_wait_s: float = 0.0  # of which waiting for decoded frames: near encode_s means decode-bound


def preprocess_of(cfg: ExtractConfig) -> Preprocess:
    return Preprocess(size=cfg.image_size, mean=tuple(cfg.mean), std=tuple(cfg.std), pad=cfg.pad,
                      interpolation=cfg.interpolation, decoder=cfg.decode)


def select_frames(n: int, k: int | None) -> np.ndarray:
    """All frames, or k evenly spaced ones (first and last included)."""
    return np.arange(n) if k is None or n <= k else sample_frames(n, k, None)


@dataclass
class RowPlan:
    """Per store row: the frame file, the view and where the frame sits (tracklet, position in its frame list)."""
    paths: list[str]
    view: np.ndarray
    tracklet: np.ndarray
    position: np.ndarray


def plan_store(manifest: Manifest, cfg: ExtractConfig, num_tokens: int, dim: int) -> tuple[StorePlan, RowPlan]:
    paths: list[str] = []
    view, tracklet, position, frame_index, offsets, views = [], [], [], [], [0], []
    for t, rec in enumerate(manifest.records):
        idx = select_frames(len(rec.frames), cfg.max_frames_per_tracklet)
        v = cfg.views if rec.split in VIEW_SPLITS else 1
        views.append(v)
        for k in idx:
            path = str(manifest.resolve(rec.frames[k]))
            paths.extend([path] * v)
            view.append(np.arange(v))
            tracklet.append(np.full(v, t))
            position.append(np.full(v, k))
            frame_index.append(np.full(v, k))
        offsets.append(offsets[-1] + len(idx) * v)

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
    plan = StorePlan(
        tracklets=[r.tracklet for r in manifest.records], split=[r.split for r in manifest.records],
        person_ids=np.array([r.person_id for r in manifest.records], dtype=np.int64),
        labels=np.array([r.labels for r in manifest.records], dtype=np.uint8).reshape(len(manifest.records), -1),
        offsets=np.array(offsets, dtype=np.int64), views=np.array(views, dtype=np.uint8),
        frame_index=cat(frame_index, np.int32), num_tokens=num_tokens, dim=dim)
    return plan, RowPlan(paths, cat(view, np.int16), cat(tracklet, np.int64), cat(position, np.int64))


def store_attrs(cfg: ExtractConfig, manifest: Manifest, recipe: dict[str, Any], texts: dict[str, list[str]]) -> dict:
    """Every attribute of the store but the encoder's token geometry; known before CLIP is loaded."""
    schema = manifest.schema
    return {
        "format": STORE_FORMAT, "version": STORE_VERSION, "complete": False, "par_version": __version__,
        "recipe": recipe, "clip_model": cfg.clip_model,
        "weights": weights_identity(cfg.pretrained, cfg.allow_random_init, cfg.weights_seed),
        "precision": cfg.precision, "preprocessing": preprocess_of(cfg).to_dict(), "dtype": cfg.dtype,
        "schema": schema.name, "attributes": schema.attributes, "texts": texts,
        "views": {"count": cfg.views, "seed": cfg.view_seed, "pad": cfg.view_pad, "splits": list(VIEW_SPLITS)},
        "manifest_sha256": manifest_digest(manifest),
        "frame_policy": {"max_frames_per_tracklet": cfg.max_frames_per_tracklet, "selection": "evenly-spaced"},
        "shard_frames": cfg.shard_frames, "schema_definition": schema.to_dict(), "group_boundaries": schema.boundaries,
        "groups": schema.group_names, "manifest_root": manifest.root,
        "manifest_path": manifest.source, "allow_random_init": cfg.allow_random_init,
        "on_bad_frame": cfg.on_bad_frame, "skipped_frames": [],
        "checksums": "zarr: crc32c of every row chunk and of every shard index; HDF5: Fletcher-32 of every chunk",
    }


def partial_path(out: str) -> str:
    return out.rstrip("/") + ".partial"


def _same_store(existing: dict[str, Any], wanted: dict[str, Any], where: str) -> None:
    if existing.get("format") != STORE_FORMAT or existing.get("version") != STORE_VERSION:
        raise ParError(f"{where}: exists and is not a par token store of version {STORE_VERSION}; par does not "
                       f"overwrite it - remove it yourself or choose another --out")
    check_identity(existing, wanted, STORE_KEYS, "the existing store", where,
                   "it is never mixed - choose another --out, or run the command that made it")


def extract(manifest: Manifest, cfg: ExtractConfig, recipe: dict[str, Any], dist: DistContext | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> ExtractResult:
    """Run stage one. `on_progress(done_rows, total_rows)` is called as rows are written (rank 0)."""
    dist = dist or DistContext.single()
    fmt = store_format_of(cfg.out, cfg.format)
    if fmt == "h5" and dist.world_size > 1:
        raise ParError(f"{cfg.out}: HDF5 output cannot be written by several ranks; use a zarr --out with torchrun")
    check_device(cfg.device)
    texts = attribute_texts(manifest.schema, cfg.prompt_template)
    attrs = store_attrs(cfg, manifest, recipe, texts)
    out = cfg.out

    existing = read_attrs(out, fmt)
    if existing is not None and (existing.get("complete") or fmt == "h5"):
        _same_store(existing, attrs, out)
        if not existing.get("complete"):
            raise ParError(f"{out}: an incomplete store; remove it and run again")
        return ExtractResult(plan_store(manifest, cfg, 0, 0)[0].num_rows, len(manifest.records), 0,
                             list(existing.get("skipped_frames", [])), already_complete=True)
    if existing is None and not is_url(out) and Path(out).exists():
        raise ParError(f"{out}: exists and is not a par token store; par does not overwrite it - remove it yourself "
                       f"or choose another --out")

    if is_url(out):  # written in place, marked complete last (no rename, no lock on a URL)
        return _extract_into(manifest, cfg, attrs, out, out, fmt, dist, on_progress)
    target = partial_path(out)
    created = dist.is_main and not Path(target).exists()
    with io_errors(target, "create"):
        if dist.is_main:
            os.makedirs(target, exist_ok=True)
    dist.barrier()
    if not dist.is_main:
        return _extract_into(manifest, cfg, attrs, target, out, fmt, dist, on_progress)
    try:
        with exclusive(target, "extract"):
            return _extract_into(manifest, cfg, attrs, target, out, fmt, dist, on_progress)
    except BaseException:
        if created and Path(target).is_dir() and not any(Path(target).iterdir()):
            os.rmdir(target)  # failed before the store was created (e.g. weights that do not fit): leave nothing
        raise


def _extract_into(manifest: Manifest, cfg: ExtractConfig, attrs: dict[str, Any], target: str, out: str, fmt: str,
                  dist: DistContext, on_progress: Callable[[int, int], None] | None) -> ExtractResult:
    codec = TokenCodec(cfg.dtype)
    enc = ClipEncoder(cfg.clip_model, cfg.pretrained, cfg.allow_random_init, cfg.device, cfg.precision,
                      preprocess_of(cfg), cfg.weights_seed, compile=cfg.compile)
    attrs = {**attrs, "num_tokens": enc.num_tokens, "dim": enc.dim}
    plan, rows = plan_store(manifest, cfg, enc.num_tokens, enc.dim)
    resumed = 0
    if dist.is_main:
        building = None if is_url(target) else Path(target) / SKELETON
        if building is not None and building.exists():
            _clear_skeleton(Path(target))  # a run killed while it laid the store out: par's own, begun again
        if (Path(target) / "zarr.json").exists() or is_url(target) and read_attrs(target, "zarr") is not None:
            g = open_zarr_group(target, mode="r+")
            _same_store(g.attrs.asdict(), attrs, target)
            if "done" not in g or "tokens" not in g:
                raise ParError(f"{target}: an unfinished store that cannot be resumed (arrays missing, e.g. after two "
                               f"runs wrote it at once); it was made by par extract - remove it and run again")
            resumed = int(np.asarray(g["done"][:]).sum())
        else:
            if building is not None and any(Path(target).iterdir()):
                raise ParError(f"{target}: holds files that are not a par store; remove them and run again")
            text = {source: enc.encode_text(strings).cpu().numpy() for source, strings in attrs["texts"].items()}
            if building is not None:
                with open(building, "x") as f:  # existence is the mark: written first, before anything of the store
                    os.fsync(f.fileno())
                fsync_dir(Path(target))
            create_zarr(target, plan, text, attrs, codec, cfg.shard_frames)
            if building is not None:
                fault_point("skeleton-complete")
                building.unlink()
                fsync_dir(Path(target))
    dist.barrier()
    g = open_zarr_group(target, mode="r+")
    done = np.asarray(g["done"][:]).astype(bool)
    mine = [s for s in range(len(done)) if s % dist.world_size == dist.rank and not done[s]]
    total = plan.num_rows
    written = [total - sum(shard_rows(s, cfg.shard_frames, total) for s in range(len(done)) if not done[s])]
    if on_progress and dist.is_main:
        on_progress(written[0], total)

    def report(n: int) -> None:
        written[0] += n
        if on_progress and dist.is_main:
            on_progress(written[0], total)

    def describe_row(r: int) -> str:
        return f"{rows.paths[r]} (view {int(rows.view[r])})"

    frames = FrameRows(rows.paths, enc.preprocess, rows.view, rows.tracklet, rows.position, cfg.view_seed, cfg.view_pad)
    sink = ShardSink(g, target, cfg.shard_frames, enc.num_tokens, enc.dim, codec, enc.device, report, describe_row,
                     writers=cfg.writers)
    t_start = time.perf_counter()
    encoded = encode_shards(enc, frames, shards=mine, shard_frames=cfg.shard_frames, batch_size=cfg.batch_size,
                            workers=cfg.workers, sink=sink, on_bad_frame=cfg.on_bad_frame)
    dist.barrier()
    result = ExtractResult(total, len(plan.tracklets), encoded.rows, resumed_shards=resumed,
                           encode_s=time.perf_counter() - t_start, loader_wait_s=encoded.loader_wait_s)
    if dist.is_main:
        result.skipped = finalize_store(g, target, out, fmt, rows.paths)
    dist.barrier()
    return result


# Present in `<out>.partial` from before its first array is made until its last array and attributes are written:
# a rerun that finds it knows the folder is par's own unfinished layout (kill -9 mid-way) and lays it out again.
SKELETON = ".par-skeleton"


def _clear_skeleton(target: Path) -> None:
    """Remove a half-laid-out store (everything in `target`, which carries the skeleton marker), marker last."""
    for p in target.iterdir():
        if p.name != SKELETON:
            remove_own(p)
    (target / SKELETON).unlink()
    fsync_dir(target)


class ShardBatches(Sampler):
    """Shard-aligned batches: batch composition depends only on the shard, so resumed runs match."""

    def __init__(self, shards: list[int], shard_frames: int, batch_size: int, num_rows: int):
        self.shards, self.shard_frames, self.batch_size, self.num_rows = shards, shard_frames, batch_size, num_rows

    def __iter__(self) -> Iterator[list[int]]:
        for s in self.shards:
            start, end = s * self.shard_frames, min((s + 1) * self.shard_frames, self.num_rows)
            for b in range(start, end, self.batch_size):
                yield list(range(b, min(b + self.batch_size, end)))

    def __len__(self) -> int:
        return len(self.shards) * -(-self.shard_frames // self.batch_size)


@dataclass
class Encoded:
    """What the extraction loop did: rows encoded, and the time spent waiting for decoded frames."""
    rows: int
    loader_wait_s: float


@torch.inference_mode()
def encode_shards(encoder: Any, frames: Dataset, *, shards: list[int], shard_frames: int, batch_size: int,
                  workers: int, sink: ShardSink, on_bad_frame: str) -> Encoded:
    """The extraction loop: decode `shards`' rows in loader workers, encode them with `encoder` (anything with
    `device` and `encode_frames(uint8 images) -> [B, N, D]`) and hand each batch to the sink. `make bench` runs this
    same loop with decoding and CLIP stubbed out to measure the loop's own host cost."""
    if not shards:
        sink.close()
        return Encoded(0, 0.0)
    num_rows = len(frames)
    device = encoder.device
    loader = DataLoader(frames, batch_sampler=ShardBatches(shards, shard_frames, batch_size, num_rows),
                        num_workers=workers, pin_memory=device.type == "cuda", collate_fn=collate_rows,
                        persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
                        worker_init_fn=stop_with_parent())
    shard, buf, ok, filled, encoded, waited = -1, None, np.zeros(0, np.uint8), 0, 0, 0.0
    batches = iter(loader)
    try:
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - t0
            if batch is None:
                break
            sink.raise_failure()
            rows, payload, good, reasons = batch
            images, good, reasons = decode_rows(frames, rows, payload, good, reasons, device)
            if not bool(good.all()):
                k = int(np.flatnonzero(~good.numpy())[0])
                if on_bad_frame == "error":
                    raise ParError(f"{frames.paths[int(rows[k])]}: {reasons[k]}; replace or remove the frame, or pass "
                                   f"--on-bad-frame skip")
            feats = encoder.encode_frames(images)
            if not bool(good.all()):  # skipped frames: zero tokens (and no chunk in the shard file)
                feats[~good.to(feats.device)] = 0
            first = int(rows[0])
            if first // shard_frames != shard:  # batches are consecutive rows of one shard
                shard = first // shard_frames
                buf, ok, filled = sink.take(), np.zeros(shard_rows(shard, shard_frames, num_rows), np.uint8), 0
            lo = first - shard * shard_frames
            sink.copy(buf, lo, feats)
            ok[lo:lo + len(rows)] = good.numpy()
            filled += len(rows)
            encoded += len(rows)
            if filled == len(ok):
                sink.submit(shard, buf, ok)
                shard, buf = -1, None
    except BaseException:
        # drop the loader's iterator now, so its workers and pin-memory thread stop before the error is printed
        # (left to interpreter exit they die first and the thread prints a ConnectionResetError traceback)
        del batches
        sink.close(surface=False)  # the error at hand wins over a writer failure it may have caused
        raise
    sink.close()
    return Encoded(encoded, waited)


def finalize_store(g: Any, target: str, out: str, fmt: str, paths: list[str]) -> list[str]:
    """A store whose every shard is written: skipped frames recorded, marked complete, moved to `out` (copied to
    HDF5 for `h5`); returns the skipped frames' paths."""
    done = np.asarray(g["done"][:])
    if not done.all():
        raise ParError(f"{target}: {int((done == 0).sum())} shard(s) unfinished; re-run the same command to resume")
    ok = np.asarray(g["frame_ok"][:]).astype(bool)
    skipped = list(dict.fromkeys(paths[i] for i in np.flatnonzero(~ok)))
    g.attrs.update({"skipped_frames": skipped, "complete": True})
    if is_url(out):
        return skipped
    with io_errors(out):
        if fmt == "h5":
            atomic_write(out, lambda tmp: zarr_to_h5(g, tmp))
            import shutil

            shutil.rmtree(target)  # the .partial this run built and has now copied
        else:
            os.replace(target, out)
    return skipped
