"""Direct reads and writes of the zarr v3 shard files that hold `tokens` and `token_scales` (one row per chunk), and
direct writes of the chunks of the per-shard flags (`frame_ok`, `done`).

zarr-python spends about a millisecond of machinery per read call, which starves training (each sample reads T
random rows), and its write path holds the GIL for ~0.3-0.9 ms a frame, which starves a GPU extraction loop. The
sharding codec's layout is fixed by the zarr v3 spec; for exactly the codec chain `writer.create_zarr` writes
(inner chunks: raw little-endian bytes followed by their crc32c; index: (offset, nbytes) uint64 pairs followed by
their crc32c, at the end of the file), rows are read with one `preadv` each and shards written with one
`writev` (both release the GIL). The bytes equal zarr-python's own (test), so any zarr reader opens the store.

Every checksum is checked: a shard's index when the shard is first opened, a row's chunk the first time this
reader reads it. A chunk missing from the index (never written), a truncated file or a wrong checksum is a
`CorruptStore` error naming the shard file and the row, never zeros or wrong numbers.
"""
from __future__ import annotations

import enum
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np

from ..errors import ParError

EMPTY = np.uint64(2**64 - 1)
IOV_MAX = 512  # iovecs per writev call (Linux allows 1024)
CRC = 4



class Verify(enum.Enum):
    """When a row's checksum is checked as it is read. `Verify(text)` refuses anything else, so a typo never reads
    unverified."""
    ONCE = "once"  # the first time this reader reads the row (the loader: each row once per process)
    ALWAYS = "always"  # on every read (`par verify`)
    NEVER = "never"  # not at all (the bench's raw disk rate)

class CorruptStore(ParError):
    """Stored data that fails its own checks."""


def expected_codecs(dtype: np.dtype, chunk_shape: list[int]) -> list[dict[str, Any]]:
    """The codec chain of our arrays, as zarr-python writes it into zarr.json."""
    raw = {"name": "bytes"} if dtype.itemsize == 1 else {"name": "bytes", "configuration": {"endian": "little"}}
    return [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": chunk_shape, "codecs": [raw, {"name": "crc32c"}],
        "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
        "index_location": "end"}}]


def _data_end(raw_index: bytes) -> int:
    """Where the last chunk an index points to ends (a file shorter than that was truncated)."""
    index = np.frombuffer(raw_index, dtype="<u8").reshape(-1, 2)
    used = index[index[:, 0] != EMPTY]
    return int((used[:, 0] + used[:, 1]).max()) if len(used) else 0


def shard_rows(s: int, shard_frames: int, total_rows: int) -> int:
    """Rows in shard s of an array of `total_rows` rows cut into shards of `shard_frames` (the last may be short)."""
    return max(0, min((s + 1) * shard_frames, total_rows) - s * shard_frames)


def crc32c(data: np.ndarray) -> int:
    view = data.view()
    view.flags.writeable = False  # the C extension takes read-only buffers only
    return google_crc32c.value(view.reshape(-1).view(np.uint8))


class ShardLayout:
    """Geometry of an array in our layout: shard s holds rows s*shard_frames .. (s+1)*shard_frames-1."""

    def __init__(self, array_dir: Path, shape: tuple[int, ...], shard_frames: int, dtype: np.dtype):
        self.dir, self.shape, self.shard_frames, self.dtype = Path(array_dir), shape, shard_frames, dtype
        self.row_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    @classmethod
    def for_array(cls, array_dir: str | Path):
        """An instance when `array_dir` holds an array in exactly our layout, else None."""
        try:
            meta: dict[str, Any] = json.loads((Path(array_dir) / "zarr.json").read_text())
            shape = tuple(meta["shape"])
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
            dtype = np.dtype(meta["data_type"]).newbyteorder("<") if meta["data_type"] != "int8" else np.dtype("int8")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if meta.get("data_type") not in ("float16", "float32", "int8") or meta.get("fill_value") not in (0, 0.0):
            return None
        if meta.get("codecs") != expected_codecs(dtype, [1, *shape[1:]]) or list(shard[1:]) != list(shape[1:]):
            return None
        if meta.get("chunk_key_encoding") != {"name": "default", "configuration": {"separator": "/"}}:
            return None
        return cls(Path(array_dir), shape, int(shard[0]), dtype)

    def shard_path(self, s: int) -> Path:
        return self.dir / "c" / str(s) / "/".join("0" * (len(self.shape) - 1))

    def rows_in_shard(self, s: int) -> int:
        return shard_rows(s, self.shard_frames, self.shape[0])

    @property
    def num_shards(self) -> int:
        return -(-self.shape[0] // self.shard_frames)


class ShardFileReader(ShardLayout):
    MAX_OPEN = 128  # shard files kept open (all of MARS is ~16,000 shards; a process may open ~1,024 files)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._index: dict[int, np.ndarray] = {}
        self._verified = np.zeros(self.shape[0], dtype=bool)
        self._crc = np.zeros(1, dtype="<u4")

    def shard_index(self, s: int) -> tuple[int, np.ndarray]:
        """(fd or -1 when the shard file does not exist, index [shard_frames, 2]); the index checksum is verified the
        first time. Indexes stay cached; file descriptors are kept for the most recently used shards only."""
        if s in self._fds:
            self._fds.move_to_end(s)
            return self._fds[s], self._index[s]
        path = self.shard_path(s)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            fd = -1
        if s not in self._index:
            self._index[s] = self._read_index(fd, path)
        self._fds[s] = fd
        if len(self._fds) > self.MAX_OPEN:
            _, old = self._fds.popitem(last=False)
            if old >= 0:
                os.close(old)
        return fd, self._index[s]

    def _read_index(self, fd: int, path: Path) -> np.ndarray:
        if fd < 0:
            return np.full((self.shard_frames, 2), EMPTY, dtype="<u8")
        nbytes = self.shard_frames * 16
        size = os.fstat(fd).st_size
        raw = os.pread(fd, nbytes + CRC, size - nbytes - CRC) if size >= nbytes + CRC else b""
        if len(raw) != nbytes + CRC or google_crc32c.value(raw[:nbytes]) != int.from_bytes(raw[nbytes:], "little") \
                or _data_end(raw[:nbytes]) > size - nbytes - CRC:
            os.close(fd)
            raise CorruptStore(f"{path}: shard index is damaged (truncated file or checksum mismatch); the store is "
                               f"corrupt - run `par verify` on it and extract it again")
        return np.frombuffer(raw[:nbytes], dtype="<u8").reshape(-1, 2)

    def check_present(self, present: np.ndarray) -> None:
        """Every shard index valid and every row marked present in it (rows whose `present` is 0 may be absent)."""
        for s in range(self.num_shards):
            _, index = self.shard_index(s)
            rows = np.arange(s * self.shard_frames, s * self.shard_frames + self.rows_in_shard(s))
            missing = rows[present[rows] & (index[:len(rows), 0] == EMPTY)]
            if len(missing):
                raise CorruptStore(f"{self.shard_path(s)}: row {int(missing[0])} has no data (missing shard file or "
                                   f"chunk); the store is corrupt - run `par verify` on it and extract it again")

    def read_into(self, rows: np.ndarray, out: np.ndarray, verify: Verify = Verify.ONCE) -> np.ndarray:
        """Rows into `out` [len(rows), ...] (C-contiguous, this dtype), each read straight into place, each row's
        checksum checked as `verify` says."""
        verify = Verify(verify)
        for k, r in enumerate(np.asarray(rows, dtype=np.int64)):
            r = int(r)
            s = r // self.shard_frames
            fd, index = self.shard_index(s)
            offset, nbytes = index[r % self.shard_frames]
            if offset == EMPTY:
                raise CorruptStore(
                    f"{self.shard_path(s)}: row {r} has no data (missing shard file or chunk); the store "
                    f"is corrupt - run `par verify` on it and extract it again"
                )
            if nbytes != self.row_bytes + CRC:
                raise CorruptStore(f"{self.shard_path(s)}: chunk of row {r} has {int(nbytes)} bytes, expected "
                                   f"{self.row_bytes + CRC}; the store is corrupt - extract it again")
            got = os.preadv(fd, [memoryview(out[k]).cast("B"), memoryview(self._crc).cast("B")], int(offset))
            if got != self.row_bytes + CRC:
                raise CorruptStore(f"{self.shard_path(s)}: truncated shard file (row {r}); the store is corrupt - "
                                   f"extract it again")
            if verify is Verify.ALWAYS or (verify is Verify.ONCE and not self._verified[r]):
                if crc32c(out[k]) != int(self._crc[0]):
                    raise CorruptStore(f"{self.shard_path(s)}: row {r} fails its checksum; the store is corrupt - "
                                       f"run `par verify` on it and extract it again")
                self._verified[r] = True
        return out

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.read_into(rows, np.empty((len(rows), *self.shape[1:]), dtype=self.dtype))

    def prefetch(self, rows: np.ndarray) -> None:
        """Ask the kernel to start reading these rows now (posix_fadvise WILLNEED): on a cold page cache the
        reads of a whole batch are then in flight together instead of one after another."""
        for r in np.asarray(rows, dtype=np.int64):
            fd, index = self.shard_index(int(r) // self.shard_frames)
            offset, nbytes = index[int(r) % self.shard_frames]
            if fd >= 0 and offset != EMPTY:
                os.posix_fadvise(fd, int(offset), int(nbytes), os.POSIX_FADV_WILLNEED)

    def drop_cache(self) -> None:
        """Evict this array's shard files from the page cache (posix_fadvise DONTNEED): the bench's cold reads."""
        for s in range(self.num_shards):
            fd, _ = self.shard_index(s)
            if fd >= 0:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        self.close()


class ShardFileWriter(ShardLayout):
    def write(self, s: int, rows: np.ndarray, present: np.ndarray) -> None:
        """Write shard s whole: `rows` [rows_in_shard(s), ...] in this dtype, C-contiguous; rows whose `present` is 0
        are left out (zarr leaves out chunks of fill values the same way)."""
        n = self.rows_in_shard(s)
        if rows.shape != (n, *self.shape[1:]) or rows.dtype != self.dtype or not rows.flags.c_contiguous:
            raise ValueError(f"shard {s}: expected C-contiguous {self.dtype} {(n, *self.shape[1:])}, got {rows.dtype} "
                             f"{rows.shape}")
        keep = np.flatnonzero(np.asarray(present[:n], dtype=bool))
        if not len(keep):  # a shard of fill values only: zarr writes no file
            return
        chunk = self.row_bytes + CRC
        index = np.full((self.shard_frames, 2), EMPTY, dtype="<u8")
        index[keep, 0] = np.arange(len(keep), dtype=np.uint64) * np.uint64(chunk)
        index[keep, 1] = chunk
        crcs = np.array([crc32c(rows[k]) for k in keep], dtype="<u4")
        raw_index = index.tobytes()
        tail = raw_index + google_crc32c.value(raw_index).to_bytes(CRC, "little")
        flat = memoryview(rows).cast("B")
        crc_bytes = memoryview(crcs).cast("B")
        views: list[memoryview] = []
        for j, k in enumerate(keep):
            views += [flat[k * self.row_bytes:(k + 1) * self.row_bytes], crc_bytes[j * CRC:(j + 1) * CRC]]
        views.append(memoryview(tail))
        path = self.shard_path(s)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written in place as zarr does: the shard's `done` flag is set only after this returns, so a run killed
        # mid-write redoes the shard.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
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


class FlagChunkWriter:
    """Whole chunks of a small 1-D uint8 array (`frame_ok`, `done`: a chunk per shard) written as zarr-python writes
    them, without its machinery (about 3 ms a call here, two calls a shard: a third of the extraction writer's time
    at 64 frames a shard). The chunk is the raw bytes then their crc32c, or a zstd frame (level 0, no checksum:
    numcodecs', the compressor zarr-python uses for them); written to a temporary file and renamed into place, as
    zarr-python does; a chunk of fill values only is not stored (zarr-python's default). Bytes equal zarr-python's
    own (test)."""

    def __init__(self, array_dir: Path, chunk: int, compress: Any | None):
        self.dir, self.chunk, self.compress = array_dir, chunk, compress

    @classmethod
    def for_array(cls, array_dir: str | Path) -> "FlagChunkWriter | None":
        """An instance when `array_dir` holds a 1-D uint8 array with a codec chain this writes, else None (the
        caller writes through zarr-python)."""
        try:
            meta: dict[str, Any] = json.loads((Path(array_dir) / "zarr.json").read_text())
            (_,), (chunk,) = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if meta.get("data_type") != "uint8" or meta.get("fill_value") != 0 or meta.get("chunk_key_encoding") != {
                "name": "default", "configuration": {"separator": "/"}}:
            return None
        codecs = meta.get("codecs")
        if codecs == [{"name": "bytes"}, {"name": "crc32c"}]:
            return cls(Path(array_dir), int(chunk), None)
        if codecs == [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 0, "checksum": False}}]:
            from numcodecs import Zstd

            return cls(Path(array_dir), int(chunk), Zstd(level=0, checksum=False))
        return None

    def write(self, c: int, values: np.ndarray) -> None:
        """Chunk c whole: `values` are its elements (the last chunk's may be fewer than the chunk length; zarr pads
        it with the fill value)."""
        raw = np.zeros(self.chunk, dtype=np.uint8)
        raw[:len(values)] = values
        path = self.dir / "c" / str(c)
        if not raw.any():
            path.unlink(missing_ok=True)
            return
        data = bytes(self.compress.encode(raw)) if self.compress is not None else \
            raw.tobytes() + crc32c(raw).to_bytes(CRC, "little")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
