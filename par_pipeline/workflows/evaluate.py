"""`par eval`: a checkpoint on a store's split -> metrics.json, groups.md/csv, predictions.npz (one folder, written
whole), with the majority-value baseline beside it on request."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import EvalConfig, check_device
from ..engine.inference import predict_split
from ..engine.metrics import evaluate_predictions, headline, majority_baseline
from ..engine.splits import split_indices
from ..engine.tokens import TrackletTokens, default_workers
from ..experiments import Warn, figures, log_evaluation
from ..model.checkpoint import load_checkpoint
from ..outputs import replace_dir
from ..precision import autocast_dtype
from ..reports import GROUP_HEADER, csv_text, group_rows, group_table_markdown
from ..run import check_store_matches, default_eval_dir, read_checkpoint_meta, selection_label
from ..store.reader import TokenStore

METRICS_FORMAT = "par-metrics"
METRICS_VERSION = 2
EVAL_KIND = "eval"


def evaluate_checkpoint(cfg: EvalConfig, warn: Warn | None = None) -> dict[str, Any]:
    """Evaluate `cfg.checkpoint` on `cfg.split` of `cfg.store`; writes the eval folder and returns its metrics (with
    `out`, the folder, and `trackers`: those of the run's experiment trackers that received the figures)."""
    check_device(cfg.device)
    store_path, checkpoint = cfg.store, cfg.checkpoint
    model, meta = load_checkpoint(checkpoint, cfg.device)
    store = TokenStore(store_path)
    check_store_matches(meta, store.identity, store_path)
    store.check_shards()
    split = cfg.split
    idx = split_indices(store, split, meta, store_path)
    frames = cfg.frames or meta["eval_frames"]
    sampling = cfg.sampling or meta.get("eval_sampling", "fixed")
    seed = meta.get("seed", 0) if cfg.seed is None else cfg.seed
    threshold = meta["threshold"] if cfg.threshold is None else cfg.threshold
    out = Path(cfg.out) if cfg.out else default_eval_dir(checkpoint, split, frames if frames != meta["eval_frames"]
                                                         else None, sampling, seed)
    dev = torch.device(cfg.device)
    amp = autocast_dtype(meta["train_config"].get("precision", "auto"), dev)
    dataset = TrackletTokens(store_path, frames, seed, keep_frames=model.cfg.needs_frames, sampling=sampling)
    probs = predict_split(model, dataset, idx, default_workers(cfg.workers, dev), dev, amp)
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
    if cfg.baseline:
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
    metrics["trackers"] = log_evaluation(Path(meta["_path"]).parent, out.name.removeprefix("eval-"),
                                         figures(headline(metrics)), meta["epoch"], warn)
    return metrics

