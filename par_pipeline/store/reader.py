"""Read side of a finished token store (zarr folder or URL, or HDF5 file).

Local zarr stores are read straight from their shard files (`shard_files.ShardFileReader`: one `preadv` a row,
checksums verified); URL stores go through zarr (which verifies the same checksums) and HDF5 through h5py
(Fletcher-32 per chunk). Anything missing or malformed is a one-line error naming the store and the fix.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..data.schema import AttributeSchema, schema_from_dict
from ..errors import ParError
from .codec import TokenCodec
from .format import STORE_FORMAT, STORE_VERSION, TEXT_ARRAYS, TOKEN_KEYS, is_url, row_of, store_format_of
from .shard_files import CorruptStore, ShardFileReader, Verify

REQUIRED = ("tokens", "frame_ok", "offsets", "views", "person_id", "frame_index", "labels", "tracklets", "split",
            *TEXT_ARRAYS.values())


def open_zarr_group(path: str, mode: str = "r") -> Any:
    import zarr

    try:
        return zarr.open_group(path, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise ParError(f"{path}: no token store there; create it with `par extract`") from None
    except (ValueError, KeyError, TypeError) as exc:  # a zarr.json that is not valid metadata
        raise ParError(f"{path}: damaged store metadata ({type(exc).__name__}); the store is corrupt - extract it "
                       f"again") from None


def read_attrs(path: str, fmt: str) -> dict[str, Any] | None:
    """The attributes of whatever store is at `path` (None when there is none); unreadable metadata is an error."""
    if fmt == "h5":
        if not Path(path).is_file():
            return None
        import h5py

        try:
            with h5py.File(path, "r") as h:
                return {k: json.loads(v) for k, v in h.attrs.items()}
        except (OSError, ValueError):
            raise ParError(f"{path}: exists but is not a readable par token store; choose another --out") from None
    if not is_url(path) and not (Path(path) / "zarr.json").exists():
        return None
    try:
        return open_zarr_group(path).attrs.asdict()
    except ParError:
        if is_url(path):
            return None
        raise


class TokenStore:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self.format = store_format_of(path)
        if not is_url(self.path) and not Path(self.path).exists():
            raise ParError(f"{self.path}: token store not found; create it with `par extract`")
        if self.format == "h5":
            import h5py

            try:
                self._root = h5py.File(self.path, "r")
                self.attrs = {k: json.loads(v) for k, v in self._root.attrs.items()}
            except (OSError, ValueError):
                raise ParError(f"{self.path}: not a readable HDF5 token store; extract it again") from None
        else:
            self._root = open_zarr_group(self.path)
            self.attrs = self._root.attrs.asdict()
        if self.attrs.get("format") != STORE_FORMAT:
            raise ParError(f"{self.path}: not a par token store; create it with `par extract`")
        if self.attrs.get("version") != STORE_VERSION:
            raise ParError(f"{self.path}: token store version {self.attrs.get('version')} is not supported (this par "
                           f"reads version {STORE_VERSION}: checksummed, recipe-recorded); extract it again")
        if not self.attrs.get("complete"):
            raise ParError(f"{self.path}: token store is incomplete; finish it by re-running the same `par extract`")
        self.codec = TokenCodec(self.attrs["dtype"])
        wanted = [*REQUIRED, *(["token_scales"] if self.codec.scaled else [])]
        missing = [name for name in wanted if name not in self._root]
        if missing:
            raise ParError(f"{self.path}: store lacks array(s) {missing}; it is damaged - extract it again")
        try:
            self.tokens = self._root["tokens"]
            self.scales = self._root["token_scales"] if self.codec.scaled else None
            self.offsets = np.asarray(self._root["offsets"][:], dtype=np.int64)
            self.views = np.asarray(self._root["views"][:], dtype=np.int64)
            self.person_ids = np.asarray(self._root["person_id"][:], dtype=np.int64)
            self.labels = np.asarray(self._root["labels"][:], dtype=np.uint8)
            self._text = {src: np.asarray(self._root[name][:], dtype=np.float32) for src, name in TEXT_ARRAYS.items()}
            self.frame_ok = np.asarray(self._root["frame_ok"][:], dtype=bool)
            self.frame_index = np.asarray(self._root["frame_index"][:], dtype=np.int64)
            self.tracklets = [_str(s) for s in self._root["tracklets"][:]]
            self.split = [_str(s) for s in self._root["split"][:]]
        except (ValueError, OSError, KeyError) as exc:  # zarr checksum mismatch, HDF5 Fletcher-32 failure, ...
            raise CorruptStore(f"{self.path}: store arrays are damaged ({str(exc).splitlines()[0][:80]}); extract it "
                               f"again") from None
        T = len(self.tracklets)
        if len(self.offsets) != T + 1 or len(self.views) != T or self.offsets[-1] != self.tokens.shape[0] \
                or np.any(np.diff(self.offsets) < 0) or self.labels.shape[0] != T:
            raise CorruptStore(f"{self.path}: store index arrays disagree with each other; the store is damaged - "
                               f"extract it again")
        self.direct: dict[str, ShardFileReader] | None = None
        if self.format == "zarr" and not is_url(self.path):
            readers = {name: ShardFileReader.for_array(Path(self.path) / name)
                       for name in ("tokens", *(["token_scales"] if self.codec.scaled else []))}
            if None not in readers.values():
                self.direct = readers

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

    @property
    def schema(self) -> AttributeSchema:
        return schema_from_dict(self.attrs["schema_definition"])

    @property
    def identity(self) -> dict[str, Any]:
        """What a checkpoint trained on this store must agree with."""
        return {k: self.attrs[k] for k in TOKEN_KEYS}

    def text_features(self, source: str) -> np.ndarray:
        """[A, D] CLIP text features of one text source (words, prompts, phrases)."""
        if source not in self._text:
            raise ParError(f"text source must be one of {sorted(self._text)}, not '{source}'")
        return self._text[source]

    @property
    def splits(self) -> list[str]:
        return sorted(set(self.split))

    def indices(self, split: str) -> np.ndarray:
        if split not in self.split:
            raise ParError(f"{self.path}: no split '{split}' in this store; it has {self.splits}")
        return np.flatnonzero(np.asarray(self.split) == split).astype(np.int64)

    @functools.cached_property
    def _valid(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts [T+1], positions): tracklet i's valid frame positions are positions[starts[i]:starts[i + 1]]; the
        whole store's in a few array operations, once."""
        frames = (self.offsets[1:] - self.offsets[:-1]) // self.views
        tracklet = np.repeat(np.arange(len(frames)), frames)
        position = np.arange(int(frames.sum())) - np.repeat(np.cumsum(frames) - frames, frames)
        ok = self.frame_ok[self.offsets[tracklet] + position * self.views[tracklet]]
        starts = np.zeros(len(frames) + 1, dtype=np.int64)
        np.cumsum(np.bincount(tracklet[ok], minlength=len(frames)), out=starts[1:])
        return starts, position[ok]

    def valid_counts(self, indices: np.ndarray) -> np.ndarray:
        """How many valid frames each of these tracklets has."""
        starts, indices = self._valid[0], np.asarray(indices, dtype=np.int64)
        return starts[indices + 1] - starts[indices]

    def valid_frames(self, i: int) -> np.ndarray:
        """Positions of tracklet i's frames that hold tokens (frames skipped at extraction left out)."""
        starts, positions = self._valid
        return positions[starts[i]:starts[i + 1]]

    def valid_rows(self, indices: np.ndarray, all_views: bool = False) -> np.ndarray:
        """Store rows of every valid frame of these tracklets: its first view, or every stored view."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, positions = self._valid
        counts = self.valid_counts(indices)
        tracklet = np.repeat(indices, counts)
        at = np.arange(int(counts.sum())) + np.repeat(starts[indices] - (np.cumsum(counts) - counts), counts)
        rows = self.offsets[tracklet] + positions[at] * self.views[tracklet]
        if not all_views:
            return rows
        views = self.views[tracklet]
        return np.concatenate([rows[views > v] + v for v in range(int(views.max(initial=1)))])

    def rows_of_picks(self, indices: np.ndarray, picks: np.ndarray, views: np.ndarray | int = 0) -> np.ndarray:
        """[B, T] store rows of picks [B, T] (indices among each tracklet's valid frames) and their views."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, positions = self._valid
        frames = positions[starts[indices, None] + picks]
        return self.offsets[indices, None] + frames * self.views[indices, None] + views

    def row(self, i: int, frame: int, view: int = 0) -> int:
        return int(row_of(self.offsets, self.views, i, frame, view))

    def rows(self, i: int, frames: np.ndarray, views: np.ndarray | int = 0) -> np.ndarray:
        """Store rows of tracklet i's frames (positions) and views."""
        return row_of(self.offsets, self.views, i, frames, views)

    def locate(self, row: int) -> tuple[int, int, int]:
        """(tracklet, frame position, view) of a store row: the inverse of `row`."""
        i = int(np.searchsorted(self.offsets, row, side="right") - 1)
        frame, view = divmod(row - int(self.offsets[i]), int(self.views[i]))
        return i, frame, view

    @property
    def reads_shard_files(self) -> bool:
        """A local zarr store, read straight from its shard files (checksums checked by par)."""
        return self.direct is not None

    def read_rows_into(self, rows: np.ndarray, tokens: np.ndarray, scales: np.ndarray | None = None,
                       verify: Verify = Verify.ONCE) -> None:
        """Stored rows into `tokens` [k, N, D] (store dtype) and, for int8 stores, `scales` [k, N] float32. `verify`
        applies to shard-file reads; zarr and HDF5 check every read themselves."""
        if self.direct is not None:
            self.direct["tokens"].read_into(rows, tokens, verify)
            if scales is not None:
                self.direct["token_scales"].read_into(rows, scales, verify)
            return
        tokens[...] = self._gather(self.tokens, rows)
        if scales is not None:
            scales[...] = self._gather(self.scales, rows)

    def _gather(self, array: Any, rows: np.ndarray) -> np.ndarray:
        """Rows of a zarr/h5 array in the given order: each run of consecutive rows is one slice (far cheaper than
        fancy indexing in both)."""
        uniq, inverse = np.unique(np.asarray(rows, dtype=np.int64), return_inverse=True)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        try:
            parts = [np.asarray(array[int(run[0]):int(run[-1]) + 1]) for run in np.split(uniq, breaks) if len(run)]
        except (ValueError, OSError) as exc:
            raise CorruptStore(f"{self.path}: rows fail their checksum ({str(exc).splitlines()[0][:80]}); the store "
                               f"is corrupt - extract it again") from None
        data = np.concatenate(parts) if parts else np.zeros((0, *array.shape[1:]), dtype=array.dtype)
        return data[inverse]

    def read_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        tokens = np.empty((len(rows), self.num_tokens, self.dim), dtype=self.codec.numpy_dtype)
        scales = np.empty((len(rows), self.num_tokens), dtype=np.float32) if self.codec.scaled else None
        self.read_rows_into(rows, tokens, scales)
        return tokens, scales

    def check_shards(self) -> None:
        """Once per use of a store: every shard index of a local store valid and holding every row the store says it
        holds (a deleted or truncated shard is found before training, not hours into it). Row checksums are checked
        as rows are read."""
        if self.direct is not None:
            for reader in self.direct.values():
                reader.check_present(self.frame_ok)

    def prefetch(self, rows: np.ndarray) -> None:
        if self.direct is not None:
            for reader in self.direct.values():
                reader.prefetch(rows)

    def drop_cache(self) -> None:
        if self.direct is not None:
            for reader in self.direct.values():
                reader.drop_cache()

    def close(self) -> None:
        if self.format == "h5":
            self._root.close()
        if self.direct is not None:
            for reader in self.direct.values():
                reader.close()


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
