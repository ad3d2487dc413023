"""The token store format (`par-token-store`, version 2; README documents every array and key) and its identity.

Rows: one per stored (frame, view), tracklet-major; inside a tracklet frame-major, view-minor. Tracklet i owns
rows offsets[i]:offsets[i+1]; it stores views[i] rows per frame (the training split V, others 1), so frame j,
view v is row offsets[i] + j * views[i] + v, and view 0 is the frame itself.

Identity: what the stored tokens are (`TOKEN_KEYS`: a checkpoint trained on a store needs a store with the same
ones) and, for resuming or reusing a store, also which frames and views it holds (`STORE_KEYS`). One check,
`check_identity`, serves both.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..data.texts import TEXT_SOURCES
from ..errors import ParError

STORE_FORMAT = "par-token-store"
STORE_VERSION = 2
TOKEN_KEYS = ("clip_model", "weights", "precision", "preprocessing", "dtype", "schema", "attributes", "texts")
STORE_KEYS = (*TOKEN_KEYS, "views", "manifest_sha256", "frame_policy", "shard_frames")
TEXT_ARRAYS = {source: f"text_{source}" for source in TEXT_SOURCES}
FORMATS = ("zarr", "h5")


def is_url(path: str | Path) -> bool:
    return "://" in str(path)


def store_format_of(path: str | Path, given: str | None = None) -> str:
    """The store format: as given, else from the path (.h5/.hdf5 -> h5, anything else -> a zarr folder)."""
    suffix_h5 = str(path).endswith((".h5", ".hdf5"))
    if given is None:
        return "h5" if suffix_h5 else "zarr"
    if given not in FORMATS:
        raise ParError(f"--format must be one of {list(FORMATS)}, not '{given}'")
    if given == "h5" and not suffix_h5:
        raise ParError(f"{path}: an HDF5 store needs a .h5 or .hdf5 file name")
    if given == "zarr" and suffix_h5:
        raise ParError(f"{path}: a zarr store is a folder; drop the .h5 suffix or use --format h5")
    return given


def row_of(offsets: Any, views: Any, i: int, frame: Any, view: Any = 0) -> Any:
    """Store row of view `view` of frame `frame` of tracklet i; arrays of frames and views give an array of rows."""
    return offsets[i] + np.asarray(frame, dtype=np.int64) * int(views[i]) + np.asarray(view, dtype=np.int64)


def check_identity(expected: dict[str, Any], actual: dict[str, Any], keys: Iterable[str], what: str, where: str,
                   fix: str) -> None:
    """Refuse to mix artefacts made differently: the first key whose value differs is named, with the fix."""
    for key in keys:
        if key in expected and expected.get(key) != actual.get(key):
            raise ParError(f"{where}: {what} was made with a different {key} ({_short(actual.get(key))} vs "
                           f"{_short(expected.get(key))}); {fix}")


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
