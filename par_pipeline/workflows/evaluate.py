"""`par eval`: a checkpoint on a store's split -> metrics.json, groups.md/csv, predictions.npz (one folder, written
whole), with the majority-value baseline beside it on request."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import check_device
from ..engine.inference import predict_split
from ..engine.metrics import evaluate_predictions, majority_baseline
from ..engine.tokens import TrackletTokens, default_workers
from ..errors import ParError
from ..outputs import replace_dir
from ..precision import autocast_dtype
from ..reports import GROUP_HEADER, csv_text, group_rows, group_table_markdown
from ..run import RunFolder, check_store_matches, load_checkpoint, read_checkpoint_meta, selection_label
from ..store.reader import TokenStore

METRICS_FORMAT = "par-metrics"
METRICS_VERSION = 2
EVAL_KIND = "eval"


def default_eval_dir(checkpoint: str, split: str, frames: int | None, sampling: str | None, seed: int | None) -> Path:
    meta_path, meta = read_checkpoint_meta(checkpoint)
    return RunFolder(meta_path.parent).eval_dir(split, frames, sampling or meta.get("eval_sampling", "fixed"),
                                                meta.get("seed", 0) if seed is None else seed)


def evaluate_checkpoint(store_path: str, checkpoint: str, out_dir: str | None = None, frames: int | None = None,
                        split: str = "test", device: str = "cpu", workers: int | None = None,
                        threshold: float | None = None, sampling: str | None = None, seed: int | None = None,
                        baseline: bool = False) -> dict[str, Any]:
    check_device(device)
    if frames is not None and frames < 1:
        raise ParError(f"--frames must be at least 1, got {frames}")
    if threshold is not None and not 0 < threshold <= 1:
        raise ParError(f"--threshold must be in (0, 1], got {threshold}")
    model, meta = load_checkpoint(checkpoint, device)
    store = TokenStore(store_path)
    check_store_matches(meta, store.identity, store_path)
    store.check_shards()
    idx = store.indices(split)
    frames = frames or meta["eval_frames"]
    sampling = sampling or meta.get("eval_sampling", "fixed")
    seed = meta.get("seed", 0) if seed is None else seed
    threshold = meta["threshold"] if threshold is None else threshold
    out = Path(out_dir) if out_dir else default_eval_dir(checkpoint, split, frames if frames != meta["eval_frames"] else None,
                                                         sampling, seed)
    dev = torch.device(device)
    amp = autocast_dtype(meta["train_config"].get("precision", "auto"), dev)
    dataset = TrackletTokens(store_path, frames, seed, keep_frames=model.cfg.needs_frames, sampling=sampling)
    probs = predict_split(model, dataset, idx, default_workers(workers, dev), dev, amp)
    labels = store.labels[idx]
    a = store.attrs
    metrics = evaluate_predictions(probs, labels, a["group_boundaries"], a["groups"], threshold)
    metrics.update({"format": METRICS_FORMAT, "version": METRICS_VERSION, "checkpoint": meta["_path"],
                    "selection": selection_label(meta), "epoch": meta["epoch"], "recipe": meta.get("recipe"),
                    "store": store_path, "split": split, "frames": frames, "sampling": sampling, "seed": seed,
                    "attributes": store.attribute_names})
    last = Path(meta["_path"]).with_name("last.json")
    if last.is_file() and Path(meta["_path"]).name != "last.json":
        _, last_meta = read_checkpoint_meta(last)
        metrics["last_epoch"] = {"epoch": last_meta["epoch"], "split": last_meta.get("eval_split", "test"),
                                 "protocol_mean": last_meta["metrics"]["protocol"]["mean"]}
    if baseline:
        base = majority_baseline(store.labels[store.indices(meta["train_config"]["train_split"])], labels,
                                 a["group_boundaries"])
        metrics["baseline"] = {"kind": "majority value of each group on the training split",
                               **evaluate_predictions(base, labels, a["group_boundaries"], a["groups"], threshold)}
    store.close()

    def build(folder: Path) -> None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (folder / "groups.md").write_text(group_table_markdown(metrics))
        (folder / "groups.csv").write_text(csv_text(GROUP_HEADER, group_rows(metrics)))
        np.savez(folder / "predictions.npz", probs=probs.astype(np.float32), labels=labels.astype(np.uint8),
                 tracklets=np.array([store.tracklets[i] for i in idx]), attributes=np.array(store.attribute_names))

    replace_dir(out, EVAL_KIND, build)
    metrics["out"] = str(out)
    return metrics
