"""Direct reads and writes of the zarr v3 shard files that hold `tokens` (uncompressed, one frame per chunk).

zarr-python spends about a millisecond of machinery per read call, which starves training (each
sample reads T random frames), and its write path holds the GIL for ~0.2 ms a frame, which starves
a GPU extraction loop. The sharding codec's layout is fixed by the zarr v3 spec: a shard file is the
raw inner chunks followed by an index of (offset, nbytes) little-endian uint64 pairs, one per inner
chunk (2**64-1 twice for a chunk that holds only fill values), plus the index's 4-byte crc32c. For
exactly the codec chain `create_zarr` writes, frames are read with one `preadv` each and shards are
written with one `writev` (both release the GIL); any other layout falls back to zarr itself. The
bytes written equal zarr-python's own (test).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

EMPTY = np.uint64(2**64 - 1)
EXPECTED_CODECS = [{"name": "sharding_indexed", "configuration": {
    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
    "index_location": "end"}}]
IOV_MAX = 512  # iovecs per writev call (Linux allows 1024)


def shard_rows(s: int, shard_frames: int, total_rows: int) -> int:
    """Rows in shard s of an array of `total_rows` rows cut into shards of `shard_frames` (the last may be short)."""
    return max(0, min((s + 1) * shard_frames, total_rows) - s * shard_frames)


class ShardLayout:
    """Geometry of a `tokens` array in our layout: shard s holds rows s*shard_frames .. (s+1)*shard_frames-1."""

    def __init__(self, array_dir: Path, shape: tuple[int, ...], shard_frames: int, dtype: np.dtype):
        self.dir, self.shape, self.shard_frames, self.dtype = Path(array_dir), shape, shard_frames, dtype
        self.frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    @classmethod
    def for_array(cls, array_dir: str | Path):
        """An instance when `array_dir` holds an array in exactly our layout, else None."""
        meta_path = Path(array_dir) / "zarr.json"
        try:
            meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        codecs = meta.get("codecs", [])
        if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
            return None
        conf = dict(codecs[0]["configuration"])
        inner = conf.pop("chunk_shape")
        if [{"name": "sharding_indexed", "configuration": conf}] != EXPECTED_CODECS:
            return None
        shape = tuple(meta["shape"])
        shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        if list(inner) != [1, *shape[1:]] or list(shard[1:]) != list(shape[1:]):
            return None
        if meta.get("chunk_key_encoding") != {"name": "default", "configuration": {"separator": "/"}}:
            return None
        if meta.get("data_type") not in ("float16", "float32") or meta.get("fill_value") not in (0, 0.0):
            return None
        return cls(Path(array_dir), shape, int(shard[0]), np.dtype(meta["data_type"]).newbyteorder("<"))

    def shard_path(self, s: int) -> Path:
        return self.dir / "c" / str(s) / "0" / "0"

    def rows_in_shard(self, s: int) -> int:
        return shard_rows(s, self.shard_frames, self.shape[0])


class ShardFileReader(ShardLayout):
    def __init__(self, *args: Any):
        super().__init__(*args)
        self._fds: dict[int, int] = {}
        self._index: dict[int, np.ndarray] = {}

    def _shard(self, s: int) -> tuple[int, np.ndarray]:
        if s not in self._fds:
            path = self.shard_path(s)
            if not path.exists():  # a shard of fill values only is never written
                self._fds[s], self._index[s] = -1, np.full((self.shard_frames, 2), EMPTY, dtype="<u8")
            else:
                fd = os.open(path, os.O_RDONLY)
                size = os.fstat(fd).st_size
                nbytes = self.shard_frames * 16
                raw = os.pread(fd, nbytes, size - nbytes - 4)
                self._fds[s], self._index[s] = fd, np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        return self._fds[s], self._index[s]

    def read_into(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Rows' tokens into `out` [len(rows), N, D] (C-contiguous, this dtype), each frame read straight into place."""
        for k, r in enumerate(np.asarray(rows, dtype=np.int64)):
            fd, index = self._shard(int(r) // self.shard_frames)
            offset, nbytes = index[int(r) % self.shard_frames]
            if offset == EMPTY:
                out[k] = 0
                continue
            if nbytes != self.frame_bytes:
                raise ValueError(f"{self.dir}: chunk of row {r} has {nbytes} bytes, expected {self.frame_bytes}")
            got = os.preadv(fd, [memoryview(out[k]).cast("B")], int(offset))
            if got != self.frame_bytes:
                raise ValueError(f"{self.shard_path(int(r) // self.shard_frames)}: truncated shard file; re-run `par extract`")
        return out

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.read_into(rows, np.empty((len(rows), *self.shape[1:]), dtype=self.dtype))

    def close(self) -> None:
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()
        self._index.clear()

    def __del__(self) -> None:
        self.close()


class ShardFileWriter(ShardLayout):
    def write(self, s: int, frames: np.ndarray, present: np.ndarray) -> None:
        """Write shard s whole: `frames` [rows_in_shard(s), N, D] in this dtype, C-contiguous; frames whose
        `present` is 0 are left out (zeros, as zarr leaves out chunks of fill values)."""
        n = self.rows_in_shard(s)
        if frames.shape != (n, *self.shape[1:]) or frames.dtype != self.dtype or not frames.flags.c_contiguous:
            raise ValueError(f"shard {s}: expected C-contiguous {self.dtype} {(n, *self.shape[1:])}, got {frames.dtype} {frames.shape}")
        index = np.full((self.shard_frames, 2), EMPTY, dtype="<u8")
        keep = np.flatnonzero(np.asarray(present[:n], dtype=bool))
        index[keep, 0] = np.arange(len(keep), dtype=np.uint64) * np.uint64(self.frame_bytes)
        index[keep, 1] = self.frame_bytes
        raw_index = index.tobytes()
        import google_crc32c

        tail = raw_index + google_crc32c.value(raw_index).to_bytes(4, "little")
        flat = memoryview(frames).cast("B")
        if len(keep) == n:  # the usual case: the frames are one contiguous run
            views = [flat]
        else:
            fb = self.frame_bytes
            views = [flat[k * fb:(k + 1) * fb] for k in keep]
        path = self.shard_path(s)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written in place like zarr does: the shard's `done` flag is set only after this returns,
        # so a run killed mid-write redoes the shard.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            views.append(memoryview(tail))
            for b in range(0, len(views), IOV_MAX):
                _write_all(fd, views[b:b + IOV_MAX])
        finally:
            os.close(fd)


def _write_all(fd: int, views: list[memoryview]) -> None:
    """writev until every byte is out (writev may write less than asked for)."""
    while views:
        n = os.writev(fd, views)
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]
