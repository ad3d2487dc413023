"""The token store: per-frame CLIP tokens plus labels and text embeddings, zarr v3 or HDF5.

Layout (format `par-token-store`, version 1; README documents every key):
  tokens [F, N, D] float16|float32   frame rows, tracklet-major, frames in order
  offsets [T+1] int64                tracklet i owns rows offsets[i]:offsets[i+1]
  frame_ok [F] uint8                 0 where a bad frame was skipped (its tokens are zeros)
  frame_index [F] int32              position of the row's frame in the manifest's frame list
  tracklets [T] str, split [T] str, labels [T, A] uint8, text_embeddings [A, D] float32 (the prompts),
  phrase_embeddings [A, D] float32 (the bare phrases: the prompt-template ablation from one store)
  attrs: format, version, complete, identity (model, weights, schema, prompts, preprocessing),
         attribute names, group boundaries, dtype, frame policy, shard size, package version.
zarr: `tokens` is chunked one frame per chunk (stage two reads a few random frames of one
tracklet) inside shards of `shard_frames` frames (one file per shard, written whole by one rank).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParError

STORE_FORMAT = "par-token-store"
STORE_VERSION = 1
IDENTITY_KEYS = ("model", "weights", "schema", "attributes", "prompts", "preprocessing")
TEXT_SOURCES = {"prompts": "text_embeddings", "phrases": "phrase_embeddings"}


def is_url(path: str) -> bool:
    return "://" in str(path)


def store_format_of(path: str | Path) -> str:
    return "h5" if str(path).endswith((".h5", ".hdf5")) else "zarr"


@dataclass
class StorePlan:
    """What will be written: known before any frame is encoded."""
    tracklets: list[str]
    split: list[str]
    labels: np.ndarray  # [T, A] uint8
    offsets: np.ndarray  # [T+1] int64
    frame_index: np.ndarray  # [F] int32
    num_tokens: int
    dim: int

    @property
    def num_frames(self) -> int:
        return int(self.offsets[-1])


def create_zarr(path: str, plan: StorePlan, text: dict[str, np.ndarray], attrs: dict[str, Any],
                dtype: str, shard_frames: int) -> Any:
    import zarr

    g = zarr.open_group(path, mode="w", zarr_format=3)
    F, N, D = plan.num_frames, plan.num_tokens, plan.dim
    g.create_array("tokens", shape=(F, N, D), chunks=(1, N, D), shards=(shard_frames, N, D), dtype=dtype,
                   compressors=None, fill_value=0)
    g.create_array("frame_ok", shape=(F,), chunks=(shard_frames,), dtype="uint8", compressors=None, fill_value=0)
    num_shards = max(1, -(-F // shard_frames))
    g.create_array("done", shape=(num_shards,), chunks=(1,), dtype="uint8", fill_value=0)
    g.create_array("offsets", data=plan.offsets.astype(np.int64))
    g.create_array("frame_index", data=plan.frame_index.astype(np.int32))
    g.create_array("labels", data=plan.labels.astype(np.uint8))
    for name, values in text.items():  # text_embeddings, phrase_embeddings
        g.create_array(name, data=values.astype(np.float32))
    for name in ("tracklets", "split"):
        values = getattr(plan, name)
        arr = g.create_array(name, shape=(len(values),), dtype=str)
        if values:
            arr[:] = np.array(values, dtype=object)
    g.attrs.update(attrs)
    return g


def open_zarr_group(path: str, mode: str = "r") -> Any:
    import zarr

    try:
        return zarr.open_group(path, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise ParError(f"{path}: no token store there; create it with `par extract`") from None


def zarr_to_h5(src: Any, dst: Path, chunk_frames: int = 256) -> None:
    """Copy a finished zarr group into an HDF5 file (chunked one frame per chunk, like zarr)."""
    import h5py

    with h5py.File(dst, "w") as h:
        tok = src["tokens"]
        F, N, D = tok.shape
        ds = h.create_dataset("tokens", shape=(F, N, D), dtype=tok.dtype, chunks=(1, N, D) if F else None)
        for s in range(0, F, chunk_frames):
            ds[s:s + chunk_frames] = tok[s:s + chunk_frames]
        for name in ("frame_ok", "offsets", "frame_index", "labels", *TEXT_SOURCES.values()):
            h.create_dataset(name, data=src[name][:])
        for name in ("tracklets", "split"):
            h.create_dataset(name, data=np.array(src[name][:], dtype=object), dtype=h5py.string_dtype())
        for k, v in src.attrs.asdict().items():
            h.attrs[k] = json.dumps(v)


class TokenStore:
    """Read side of a finished store (zarr directory/URL or HDF5 file)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.format = store_format_of(path)
        if self.format == "h5":
            import h5py

            if not Path(self.path).is_file():
                raise ParError(f"{self.path}: token store not found; create it with `par extract ... --format h5`")
            try:
                self._root = h5py.File(self.path, "r")
            except OSError as exc:
                raise ParError(f"{self.path}: not a readable HDF5 token store ({exc}); re-run `par extract`") from None
            self.attrs = {k: json.loads(v) for k, v in self._root.attrs.items()}
        else:
            if not is_url(self.path) and not Path(self.path).exists():
                raise ParError(f"{self.path}: token store not found; create it with `par extract`")
            self._root = open_zarr_group(self.path)
            self.attrs = self._root.attrs.asdict()
        if self.attrs.get("format") != STORE_FORMAT:
            raise ParError(f"{self.path}: not a par token store; create it with `par extract`")
        if self.attrs.get("version") != STORE_VERSION:
            raise ParError(f"{self.path}: token store version {self.attrs.get('version')} is not supported "
                           f"(this par reads {STORE_VERSION}); re-extract it")
        if not self.attrs.get("complete"):
            raise ParError(f"{self.path}: token store is incomplete; finish it by re-running the same `par extract` command")
        self.tokens = self._root["tokens"]
        self.offsets = np.asarray(self._root["offsets"][:], dtype=np.int64)
        self.labels = np.asarray(self._root["labels"][:], dtype=np.uint8)
        self._text = {src: np.asarray(self._root[name][:], dtype=np.float32) for src, name in TEXT_SOURCES.items()}
        self.frame_ok = np.asarray(self._root["frame_ok"][:], dtype=bool)
        self.frame_index = np.asarray(self._root["frame_index"][:], dtype=np.int64)
        self.tracklets = [_str(s) for s in self._root["tracklets"][:]]
        self.split = [_str(s) for s in self._root["split"][:]]
        self._direct = None
        if self.format == "zarr" and not is_url(self.path):
            from .shard_files import ShardFileReader

            self._direct = ShardFileReader.for_array(Path(self.path) / "tokens")

    def __len__(self) -> int:
        return len(self.tracklets)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[1])

    @property
    def dim(self) -> int:
        return int(self.tokens.shape[2])

    @property
    def attribute_names(self) -> list[str]:
        return list(self.attrs["attributes"])

    def text_features(self, source: str = "prompts") -> np.ndarray:
        """[A, D] text features: of the prompts (default) or of the bare phrases (template off)."""
        if source not in TEXT_SOURCES:
            raise ParError(f"text source must be one of {sorted(TEXT_SOURCES)}, not '{source}'")
        return self._text[source]

    @property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint trained on this store must agree with."""
        return {k: self.attrs[k] for k in IDENTITY_KEYS}

    def indices(self, split: str) -> np.ndarray:
        return np.array([i for i, s in enumerate(self.split) if s == split], dtype=np.int64)

    def valid_rows(self, i: int) -> np.ndarray:
        """Store rows of tracklet i that hold real tokens (skipped frames left out)."""
        rows = np.arange(self.offsets[i], self.offsets[i + 1])
        return rows[self.frame_ok[rows]]

    def read_rows_into(self, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """`read_rows` into a given C-contiguous [k, N, D] array of the store's dtype (no allocation on the fast path)."""
        if self._direct is not None:
            return self._direct.read_into(rows, out)
        out[...] = self.read_rows(rows)
        return out

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Tokens of the given rows [k, N, D] in the given order (duplicates allowed).

        A local zarr store in our layout is read straight from its shard files (ShardFileReader);
        otherwise each run of consecutive rows is one slice, far cheaper than fancy indexing in
        both zarr and h5py.
        """
        if self._direct is not None:
            return self._direct.read(rows)
        uniq, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        parts = [np.asarray(self.tokens[int(run[0]):int(run[-1]) + 1]) for run in np.split(uniq, breaks) if len(run)]
        data = np.concatenate(parts) if parts else np.zeros((0, self.num_tokens, self.dim), dtype=self.tokens.dtype)
        return data[inverse]

    def close(self) -> None:
        if self.format == "h5":
            self._root.close()
        if self._direct is not None:
            self._direct.close()


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def check_identity(expected: dict[str, Any], actual: dict[str, Any], what: str, where: str, fix: str) -> None:
    """Refuse to mix artefacts built with another CLIP model, weights, schema, prompts or preprocessing."""
    for key in IDENTITY_KEYS:
        if key in expected and expected.get(key) != actual.get(key):
            raise ParError(f"{where}: {what} was built with a different {key} "
                           f"({_short(actual.get(key))} vs {_short(expected.get(key))}); {fix}")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
