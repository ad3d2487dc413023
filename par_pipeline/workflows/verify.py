"""`par verify STORE|RUN|CHECKPOINT`: check every checksum and every number; name the first bad shard, row or file.

A store: its metadata and index arrays, every shard index, every row chunk's crc32c (HDF5: Fletcher-32), that
every frame the store says it holds is present, and that every stored token is finite. A run folder or a
checkpoint: the sha256 of every file its JSON names, and that every weight is finite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ParError
from ..run import PENDING, read_checkpoint_meta, verify_file
from ..store.codec import finite_rows
from ..store.reader import TokenStore
from ..store.shard_files import CorruptStore, Verify


def verify(path: str, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir() and (p / "best.json").is_file() or p.suffix == ".json":
        return verify_run(p)
    return verify_store(path, on_progress)


def verify_store(path: str, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    store = TokenStore(path)
    store.check_shards()
    rows_total = int(store.tokens.shape[0])
    chunk = max(1, int(store.attrs.get("shard_frames", 64)))
    checked = 0
    for start in range(0, rows_total, chunk):
        rows = np.arange(start, min(start + chunk, rows_total))
        ok = store.frame_ok[rows]
        present = rows[ok]
        if len(present):
            tokens = np.empty((len(present), store.num_tokens, store.dim), dtype=store.codec.numpy_dtype)
            scales = np.empty((len(present), store.num_tokens), dtype=np.float32) if store.codec.scaled else None
            store.read_rows_into(present, tokens, scales, Verify.ALWAYS)
            finite = finite_rows(torch.from_numpy(scales if scales is not None else tokens)).numpy()
            if not finite.all():
                r = int(present[np.flatnonzero(~finite)[0]])
                raise CorruptStore(f"{path}: row {r} ({_where(store, r)}) holds non-finite tokens (NaN/Inf); extract "
                                   f"that store again")
        checked += len(rows)
        if on_progress:
            on_progress(checked, rows_total)
    texts = {source: bool(np.isfinite(store.text_features(source)).all()) for source in store.attrs["texts"]}
    if not all(texts.values()):
        raise CorruptStore(f"{path}: text features of {[s for s, ok in texts.items() if not ok]} are not finite")
    summary = {"kind": "token store", "path": path, "rows": rows_total, "tracklets": len(store),
               "rows_with_tokens": int(store.frame_ok.sum()), "dtype": store.attrs["dtype"],
               "checks": "metadata, index arrays, shard indexes, row checksums, presence, finite tokens and texts"}
    store.close()
    return summary


def _where(store: TokenStore, row: int) -> str:
    i, _, view = store.locate(row)
    return f"tracklet {store.tracklets[i]}, frame {int(store.frame_index[row])}, view {view}"


def verify_run(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    jsons = [path] if path.suffix == ".json" else [p for p in (path / "best.json", path / "last.json")
                                                   if p.name == "best.json" or p.is_file()]
    checked = []
    for j in jsons:
        meta_path, meta = read_checkpoint_meta(j)
        weights = meta_path.with_name(meta["weights"])
        verify_file(weights, meta["weights_sha256"], "the weights file")
        bad = [k for k, v in load_file(str(weights)).items() if v.is_floating_point() and not bool(v.isfinite().all())]
        if bad:
            raise ParError(f"{weights}: tensor {bad[0]} holds non-finite values; use another checkpoint or retrain")
        if "state" in meta:
            verify_file(meta_path.with_name(meta["state"]), meta["state_sha256"], "the resume state")
        checked.append(meta_path.name)
    pending = (path / PENDING).exists() if path.is_dir() else False
    return {"kind": "run" if path.is_dir() else "checkpoint", "path": str(path), "checkpoints": checked,
            "interrupted_commit": pending,
            "checks": "sha256 of weights and resume state, finite weights"}
