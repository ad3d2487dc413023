"""Write side of the token store: the plan of rows, the zarr layout, the shard sink of the extraction loop, and
the HDF5 copy.

The sink is the host side of the encode loop: a few shard buffers (pinned on CUDA) that the device copies each
encoded batch straight into on a side stream, and writer threads that each write a full shard (one `writev`
per array; zarr itself for URL stores), then mark it done and free its buffer. The loop therefore never waits
for the GPU and never copies tokens on the host; the bounded pool of buffers is the back-pressure when the disk
is the slower side. Non-finite tokens are detected on the device and refused before anything is written.
"""
from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from ..errors import ParError
from ..outputs import fault_point
from .codec import TokenCodec, finite_rows
from .format import TEXT_ARRAYS, is_url
from .shard_files import FlagChunkWriter, ShardFileWriter

if TYPE_CHECKING:
    from .reader import TokenStore


@dataclass
class StorePlan:
    """What will be written, known before any frame is encoded: one entry per row, one per tracklet."""
    tracklets: list[str]
    split: list[str]
    person_ids: np.ndarray  # [T] int64
    labels: np.ndarray  # [T, A] uint8
    offsets: np.ndarray  # [T+1] int64
    views: np.ndarray  # [T] uint8: rows per frame
    frame_index: np.ndarray  # [R] int32: the row's frame in the manifest's frame list
    num_tokens: int
    dim: int

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    @classmethod
    def one_tracklet(cls, rows: int, num_tokens: int, dim: int) -> "StorePlan":
        """A plan of one training tracklet of `rows` frames and one attribute (the benchmark's write-only stores)."""
        return cls(tracklets=["t"], split=["train"], person_ids=np.zeros(1, np.int64),
                   labels=np.zeros((1, 1), np.uint8), offsets=np.array([0, rows]), views=np.ones(1, np.uint8),
                   frame_index=np.arange(rows, dtype=np.int32), num_tokens=num_tokens, dim=dim)


def create_zarr(path: str, plan: StorePlan, texts: dict[str, np.ndarray], attrs: dict[str, Any], codec: TokenCodec,
                shard_frames: int) -> Any:
    """A new store group at `path` (which must not hold one yet: the caller checked that it holds nothing but
    extract's skeleton marker), every array created, tokens unwritten."""
    import zarr
    from zarr.codecs import Crc32cCodec, ZstdCodec

    g = zarr.open_group(path, mode="a", zarr_format=3)  # "w-" would count the skeleton marker as existing data
    fault_point("skeleton-group")
    R = plan.num_rows
    create_token_arrays(g, R, plan.num_tokens, plan.dim, codec, shard_frames)
    fault_point("skeleton-tokens")
    g.create_array("frame_ok", shape=(R,), chunks=(shard_frames,), dtype="uint8", compressors=[Crc32cCodec()],
                   fill_value=0)
    # explicit codecs (zarr-python's default for uint8 today): the store's bytes do not follow a library default
    g.create_array("done", shape=(max(1, -(-R // shard_frames)),), chunks=(1,), dtype="uint8", fill_value=0,
                   compressors=[ZstdCodec(level=0, checksum=False)])
    fault_point("skeleton-done")
    for name, values in (("offsets", plan.offsets.astype(np.int64)), ("views", plan.views.astype(np.uint8)),
                         ("person_id", plan.person_ids.astype(np.int64)),
                         ("frame_index", plan.frame_index.astype(np.int32)), ("labels", plan.labels.astype(np.uint8))):
        g.create_array(name, data=values, compressors=[Crc32cCodec()])
    for source, values in texts.items():
        g.create_array(TEXT_ARRAYS[source], data=values.astype(np.float32), compressors=[Crc32cCodec()])
    for name in ("tracklets", "split"):
        values = getattr(plan, name)
        arr = g.create_array(name, shape=(len(values),), dtype=str)
        if values:
            arr[:] = np.array(values, dtype=object)
    fault_point("skeleton-arrays")
    g.attrs.update(attrs)
    return g


def token_arrays(codec: TokenCodec) -> tuple[str, ...]:
    """The arrays that hold a store's tokens."""
    return ("tokens", "token_scales") if codec.scaled else ("tokens",)


def create_token_arrays(g: Any, rows: int, num_tokens: int, dim: int, codec: TokenCodec, shard_frames: int) -> None:
    """The token arrays of a zarr store: one row per chunk with its crc32c, `shard_frames` rows per shard file."""
    from zarr.codecs import Crc32cCodec

    g.create_array("tokens", shape=(rows, num_tokens, dim), chunks=(1, num_tokens, dim),
                   shards=(shard_frames, num_tokens, dim), dtype=codec.name, compressors=[Crc32cCodec()], fill_value=0)
    if codec.scaled:
        g.create_array("token_scales", shape=(rows, num_tokens), chunks=(1, num_tokens),
                       shards=(shard_frames, num_tokens), dtype="float32", compressors=[Crc32cCodec()], fill_value=0)


def convert_store(src: "TokenStore", dst: Path, dtype: str) -> None:
    """A copy of a finished local zarr store with its tokens re-encoded in another dtype (e.g. int8), no CLIP: every
    other array and attribute as in `src`, shards written as `par extract` writes them."""
    import shutil

    from .reader import open_zarr_group

    codec = TokenCodec(dtype)
    shutil.copytree(src.path, dst)
    g = open_zarr_group(str(dst), mode="r+")
    for name in token_arrays(src.codec):
        del g[name]
    R, S = int(src.tokens.shape[0]), int(src.attrs["shard_frames"])
    create_token_arrays(g, R, src.num_tokens, src.dim, codec, S)
    writers = {name: ShardFileWriter.for_array(Path(dst) / name) for name in token_arrays(codec)}
    for s in range(-(-R // S)):
        rows = np.arange(s * S, min((s + 1) * S, R))
        present = src.frame_ok[rows].astype(np.uint8)
        tokens, scales = src.read_rows(rows[present.astype(bool)])
        full = np.zeros((len(rows), src.num_tokens, src.dim), dtype=np.float32)
        full[present.astype(bool)] = src.codec.decode(torch.from_numpy(tokens), None if scales is None
                                                      else torch.from_numpy(scales)).numpy()
        encoded = dict(zip(("tokens", "token_scales"), codec.encode(torch.from_numpy(full))))
        for name, writer in writers.items():
            writer.write(s, encoded[name].numpy(), present)
    g.attrs.update({"dtype": dtype})


def zarr_to_h5(src: Any, dst: Path, chunk_rows: int = 256) -> None:
    """Copy a finished zarr group into an HDF5 file: one row per chunk like zarr, each chunk with a Fletcher-32
    checksum that HDF5 verifies on every read."""
    import h5py

    with h5py.File(dst, "w") as h:
        for name in ("tokens", "token_scales"):
            if name not in src:
                continue
            arr = src[name]
            ds = h.create_dataset(name, shape=arr.shape, dtype=arr.dtype, fletcher32=True,
                                  chunks=(1, *arr.shape[1:]) if arr.shape[0] else None)
            for s in range(0, arr.shape[0], chunk_rows):
                ds[s:s + chunk_rows] = arr[s:s + chunk_rows]
        for name in ("frame_ok", "offsets", "views", "person_id", "frame_index", "labels", *TEXT_ARRAYS.values()):
            h.create_dataset(name, data=src[name][:], fletcher32=True)
        for name in ("tracklets", "split"):
            h.create_dataset(name, data=np.array(src[name][:], dtype=object), dtype=h5py.string_dtype())
        for k, v in src.attrs.asdict().items():
            h.attrs[k] = json.dumps(v)


def copy_to_host(pairs: list[tuple[torch.Tensor, torch.Tensor]], stream: torch.cuda.Stream | None) -> None:
    """dst.copy_(src) for each (dst, src); from a GPU (`stream` given) on that copy stream once the work queued so
    far is done, without waiting for it, so that the next batch's compute overlaps the copy (src stays alive until
    its copy has run). The extraction sink and the benchmark's model-only loop copy tokens this one way."""
    if stream is None:
        for dst, src in pairs:
            dst.copy_(src)
        return
    computed = torch.cuda.Event()
    computed.record()
    with torch.cuda.stream(stream):
        stream.wait_event(computed)
        for dst, src in pairs:
            dst.copy_(src, non_blocking=True)
            src.record_stream(stream)


class ShardSink:
    """Shard buffers the device copies encoded batches into, and the thread that writes full shards."""

    def __init__(self, g: Any, target: str, shard_frames: int, num_tokens: int, dim: int, codec: TokenCodec,
                 device: torch.device, report: Callable[[int], None], describe_row: Callable[[int], str],
                 writers: int, direct_writes: bool = True):
        self.g, self.shard_frames, self.codec = g, shard_frames, codec
        self.report, self.describe_row = report, describe_row
        local = direct_writes and not is_url(target)
        # each array written directly where its layout is one these writers know, else through zarr-python
        self.direct = {name: ShardFileWriter.for_array(Path(target) / name) if local else None
                       for name in self.arrays}
        self.flags = {name: FlagChunkWriter.for_array(Path(target) / name) if local else None
                      for name in ("frame_ok", "done")}
        for name, chunk in (("frame_ok", shard_frames), ("done", 1)):
            if self.flags[name] is not None and self.flags[name].chunk != chunk:
                self.flags[name] = None
        self.reporting = threading.Lock()  # writers report finished shards one at a time
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.free: queue.Queue = queue.Queue()
        for _ in range(writers + 2):  # a buffer per writer, one filling, one ready

            buf = {
                "tokens": torch.empty((shard_frames, num_tokens, dim), dtype=codec.torch_dtype, pin_memory=self.cuda),
                "finite": torch.empty(shard_frames, dtype=torch.bool, pin_memory=self.cuda),
            }
            if codec.scaled:
                buf["token_scales"] = torch.empty((shard_frames, num_tokens), dtype=torch.float32, pin_memory=self.cuda)
            self.free.put(buf)
        self.todo: queue.Queue = queue.Queue()
        self.failure: list[BaseException] = []
        self.threads = [threading.Thread(target=self._write_loop, daemon=True) for _ in range(max(1, writers))]
        for thread in self.threads:
            thread.start()

    @property
    def arrays(self) -> tuple[str, ...]:
        return token_arrays(self.codec)

    def take(self) -> dict[str, torch.Tensor]:
        self.raise_failure()
        return self.free.get()

    def copy(self, buf: dict[str, torch.Tensor], lo: int, feats: torch.Tensor) -> None:
        """Encode `feats` [B, N, D] on its device into buf rows lo..lo+B (asynchronously from a GPU), with a per-row
        flag of whether every token value is finite."""
        tokens, scales = self.codec.encode(feats)
        # Checked on what is stored: an fp16 overflow in the cast shows up too; NaN/Inf reach an int8 token's scale.
        parts = {"tokens": tokens, "finite": finite_rows(scales if scales is not None else tokens)}
        if scales is not None:
            parts["token_scales"] = scales
        copy_to_host([(buf[name][lo:lo + len(feats)], value) for name, value in parts.items()], self.stream)

    def submit(self, s: int, buf: dict[str, torch.Tensor], ok: np.ndarray) -> None:
        copied = None
        if self.cuda:
            copied = torch.cuda.Event()
            copied.record(self.stream)
        self.todo.put((s, buf, ok, copied))

    def close(self, surface: bool = True) -> None:
        for _ in self.threads:
            self.todo.put(None)
        for thread in self.threads:
            thread.join()
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
                    self._write_shard(s, buf, ok)
            except OSError as exc:  # disk full, permissions, I/O error: one line, and the run stays resumable
                direct = self.direct["tokens"]
                where = direct.shard_path(s) if direct is not None else f"{self.g.store_path} shard {s}"
                self.failure.append(ParError(f"{where}: cannot write ({exc.strerror or exc}); fix the disk or free "
                                             f"space, then re-run the same command to resume"))
            except BaseException as exc:  # surfaced in the main thread
                self.failure.append(exc)
            finally:
                self.free.put(buf)

    def _write_shard(self, s: int, buf: dict[str, torch.Tensor], ok: np.ndarray) -> None:
        n, start = len(ok), s * self.shard_frames
        bad = np.flatnonzero(ok.astype(bool) & ~buf["finite"][:n].numpy())
        if len(bad):
            raise ParError(f"{self.describe_row(start + int(bad[0]))}: CLIP gave non-finite tokens (NaN/Inf) for this "
                           f"frame; nothing of it was stored - re-run with --precision fp32 (fp16 can overflow)")
        for name in self.arrays:
            rows = buf[name][:n].numpy()
            if self.direct[name] is not None:
                self.direct[name].write(s, rows, ok)
            else:
                self.g[name][start:start + n] = rows
            fault_point("shard-written")
        # each shard has its own chunk of frame_ok and of done, so writers never share one; done only after the
        # shard's data: a killed run redoes it
        for name, values, where in (("frame_ok", ok, slice(start, start + n)), ("done", np.ones(1, np.uint8),
                                                                                 slice(s, s + 1))):
            if self.flags[name] is not None:
                self.flags[name].write(s, values)
            else:
                self.g[name][where] = values
        fault_point("shard-done")
        with self.reporting:
            self.report(n)
