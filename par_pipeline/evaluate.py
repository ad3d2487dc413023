"""`par eval`: a checkpoint on a store's test split -> metrics.json, per-group tables, predictions.npz."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path, write_json_atomic
from .checkpoint import check_store_matches, load_checkpoint, resolve_checkpoint
from .errors import ParError
from .metrics import evaluate_predictions
from .report import GROUP_HEADER, csv_text, group_rows, group_table_markdown
from .samples import TrackletTokens
from .store import TokenStore
from .train import predict_split


def evaluate_checkpoint(store_path: str, checkpoint: str, out_dir: str, frames: int | None = None, split: str = "test",
                        device: str = "cpu", workers: int = 2, threshold: float | None = None) -> dict[str, Any]:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "metrics.json").exists())):
        raise ParError(f"{out}: exists and is not an earlier `par eval` output; choose another --out")
    model, meta = load_checkpoint(checkpoint, device)
    store = TokenStore(store_path)
    check_store_matches(meta, store.identity, store_path, str(resolve_checkpoint(checkpoint)))
    frames = frames or meta.get("eval_frames") or meta["frames"]
    threshold = meta.get("threshold", 0.45) if threshold is None else threshold
    idx = store.indices(split)
    probs = predict_split(model, TrackletTokens(store_path, frames), idx, 64, workers, torch.device(device))
    labels = store.labels[idx]
    metrics = evaluate_predictions(probs, labels, store.attrs["group_boundaries"], store.attrs["groups"], threshold)
    metrics.update({"checkpoint": str(resolve_checkpoint(checkpoint)), "store": store_path, "split": split, "frames": frames,
                    "attributes": store.attribute_names, "format": "par-metrics", "version": 1})
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        write_json_atomic(tmp / "metrics.json", metrics)
        (tmp / "groups.md").write_text(group_table_markdown(metrics))
        (tmp / "groups.csv").write_text(csv_text(GROUP_HEADER, group_rows(metrics)))
        np.savez(tmp / "predictions.npz", probs=probs.astype(np.float32), labels=labels.astype(np.uint8),
                 tracklets=np.array([store.tracklets[i] for i in idx]), attributes=np.array(store.attribute_names))
    return metrics
