"""Direct frame reads from the zarr v3 shards `par extract` writes (uncompressed, one frame per chunk).

zarr-python spends about a millisecond of machinery per call, which starves training (each sample
reads T random frames). The sharding codec's layout is fixed by the zarr v3 spec: a shard file is
the raw chunks followed by an index of (offset, nbytes) little-endian uint64 pairs, one per inner
chunk, plus a 4-byte crc32c. For exactly the codec chain we write, frames are read here with one
`pread` each; any other layout falls back to zarr itself.
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


class ShardFileReader:
    def __init__(self, array_dir: Path, shape: tuple[int, ...], shard_frames: int, dtype: np.dtype):
        self.dir, self.shape, self.shard_frames, self.dtype = array_dir, shape, shard_frames, dtype
        self.frame_bytes = int(np.prod(shape[1:])) * dtype.itemsize
        self._fds: dict[int, int] = {}
        self._index: dict[int, np.ndarray] = {}

    @classmethod
    def for_array(cls, array_dir: str | Path) -> "ShardFileReader | None":
        """A reader when `array_dir` holds an array in exactly our layout, else None."""
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

    def _shard(self, s: int) -> tuple[int | None, np.ndarray | None]:
        if s not in self._fds:
            path = self.dir / "c" / str(s) / "0" / "0"
            if not path.exists():  # a shard of fill values only is never written
                self._fds[s], self._index[s] = -1, np.full((self.shard_frames, 2), EMPTY, dtype="<u8")
            else:
                fd = os.open(path, os.O_RDONLY)
                size = os.fstat(fd).st_size
                nbytes = self.shard_frames * 16
                raw = os.pread(fd, nbytes, size - nbytes - 4)
                self._fds[s], self._index[s] = fd, np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
        return self._fds[s], self._index[s]

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), *self.shape[1:]), dtype=self.dtype)
        for k, r in enumerate(np.asarray(rows, dtype=np.int64)):
            fd, index = self._shard(int(r) // self.shard_frames)
            offset, nbytes = index[int(r) % self.shard_frames]
            if offset == EMPTY:
                continue
            if nbytes != self.frame_bytes:
                raise ValueError(f"{self.dir}: chunk of row {r} has {nbytes} bytes, expected {self.frame_bytes}")
            out[k] = np.frombuffer(os.pread(fd, self.frame_bytes, int(offset)), dtype=self.dtype).reshape(self.shape[1:])
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            if fd >= 0:
                os.close(fd)
        self._fds.clear()
        self._index.clear()

    def __del__(self) -> None:
        self.close()
