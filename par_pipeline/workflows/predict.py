"""`par predict`: attributes of new tracklets (frame folders, videos, MARS tracklet ids) from a checkpoint.

The CLIP model, weights, precision, preprocessing and token dtype are the ones the checkpoint's store was built
with (recorded in the checkpoint), so a tracklet gets the probabilities `par eval` would give it on the same
frames. Frames of many tracklets go through CLIP together in batches, run by the checkpoint's PyTorch model or an
export of it (`--runtime`, par_pipeline/deploy).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import PredictConfig, check_device
from ..data.frames import FrameRows, collate_rows, decode_rows, video_frames
from ..data.layouts import mars_tracklet_frames
from ..data.sampling import sample_frames
from ..data.schema import schema_from_dict
from ..data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ..deploy.runtime import AttributeRuntime, load_runtime
from ..engine.metrics import describe
from ..errors import ParError
from ..outputs import json_format_is, write_output_file
from ..reports import csv_text
from ..workers import stop_with_parent

PREDICTIONS_FORMAT = "par-predictions"


@dataclass
class TrackletInput:
    name: str
    frames: list[Path] | None = None  # image files, in order
    video: Path | None = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_inputs(
    paths: Sequence[Path], mars_root: Path | None = None, tracklet_ids: Sequence[str] = ()
) -> list[TrackletInput]:
    """Frame folders (one tracklet each, or a folder of such folders), video files, MARS tracklet ids."""
    out: list[TrackletInput] = []
    for path in map(Path, paths):
        if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            out.append(TrackletInput(path.stem, video=path))
        elif path.is_dir():
            images = _images_in(path)
            if images:
                out.append(TrackletInput(path.name, frames=images))
                continue
            subs = [(d, _images_in(d)) for d in sorted(path.iterdir()) if d.is_dir()]
            subs = [(d, imgs) for d, imgs in subs if imgs]
            if not subs:
                raise ParError(f"{path}: no frames (jpg/png) in the folder or its sub-folders; give a folder of one "
                               f"person's frames")
            out.extend(TrackletInput(d.name, frames=imgs) for d, imgs in subs)
        elif path.exists():
            raise ParError(f"{path}: not a frame folder or a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
        else:
            raise ParError(f"{path}: not found")
    for tid in tracklet_ids:
        if mars_root is None:
            raise ParError("--tracklet needs --mars-root (the folder holding bbox_train/ and bbox_test/)")
        out.append(TrackletInput(tid, frames=mars_tracklet_frames(mars_root, tid)))
    if not out:
        raise ParError("nothing to predict: give frame folders, video files or --mars-root with --tracklet")
    return out


def predict(inputs: list[TrackletInput], cfg: PredictConfig, on_progress: Callable[[int, int], None] | None = None
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One record per input (README: `par predict --json`), and what answered (the runtime's record)."""
    check_device(cfg.device)
    rt = load_runtime(cfg.checkpoint, cfg.runtime, cfg.pretrained, cfg.device)
    meta = rt.meta
    probs, counts = tracklet_probabilities(rt, inputs, cfg.frames, cfg.batch_size, cfg.workers, on_progress)
    schema = schema_from_dict(meta["schema_definition"])
    records = []
    for t, n, p in zip(inputs, counts, probs):
        answers, confidence = describe(p, schema, meta["threshold"])
        records.append({"tracklet": t.name, "frames": n, "description": answers, "confidence": confidence,
                        "probabilities": dict(zip(meta["attributes"], map(float, p)))})
    return records, rt.record()


def tracklet_probabilities(rt: AttributeRuntime, inputs: list[TrackletInput], frames: int | None, batch_size: int,
                           workers: int, on_progress: Callable[[int, int], None] | None = None
                           ) -> tuple[np.ndarray, list[int]]:
    """Probabilities [n, A] of the tracklets and the frames each used: all frames (`frames` None, a temporal model
    its checkpoint's T) or T evenly spaced (the rule `par eval` uses), through CLIP in batches across tracklets."""
    keep = rt.needs_frames
    frames = frames or (rt.meta["eval_frames"] if keep else None)
    jobs: list[tuple[int, Any]] = []
    counts = []
    for i, t in enumerate(inputs):
        items: Sequence[Any] = video_frames(t.video, rt.preprocess) if t.video is not None else (t.frames or [])
        if not items:
            raise ParError(f"{t.name}: no frames")
        idx = np.arange(len(items)) if frames is None else sample_frames(len(items), frames, None)
        jobs.extend((i, items[k]) for k in idx)
        counts.append(len(idx))
    tokens = torch.zeros(len(jobs), rt.num_tokens, rt.dim) if keep else None
    sums = torch.zeros(len(inputs), rt.num_tokens, rt.dim)
    done = 0

    def accumulate(positions: list[int], images: torch.Tensor) -> None:
        nonlocal done
        feats = rt.tokens(images)  # what the store would hold
        owners = torch.tensor([jobs[p][0] for p in positions])
        if keep:
            tokens[positions] = feats
        sums.index_add_(0, owners, feats)
        done += len(positions)
        if on_progress:
            on_progress(done, len(jobs))

    decoded = [p for p, (_, item) in enumerate(jobs) if isinstance(item, np.ndarray)]
    for b in range(0, len(decoded), batch_size):
        chunk = decoded[b:b + batch_size]
        accumulate(chunk, torch.from_numpy(np.stack([jobs[p][1] for p in chunk])))
    files = [p for p, (_, item) in enumerate(jobs) if not isinstance(item, np.ndarray)]
    if files:  # decode JPEGs in loader workers while CLIP runs, as `par extract` does
        rows = FrameRows([str(jobs[p][1]) for p in files], rt.preprocess)
        loader = DataLoader(rows, batch_size=batch_size, num_workers=workers, collate_fn=collate_rows,
                            pin_memory=rt.device.type == "cuda", worker_init_fn=stop_with_parent())
        for r, payload, good, reasons in loader:
            images, good, reasons = decode_rows(rows, r, payload, good, reasons, rt.device)
            if not bool(good.all()):
                k = int(np.flatnonzero(~good.numpy())[0])
                raise ParError(f"{rows.paths[int(r[k])]}: {reasons[k]}; remove or replace the frame")
            accumulate([files[int(x)] for x in r], images)
    if keep:
        by_tracklet = [tokens[[p for p, (i, _) in enumerate(jobs) if i == t]] for t in range(len(inputs))]
        visual = torch.stack(by_tracklet)
    else:
        visual = sums / torch.tensor(counts, dtype=torch.float32).view(-1, 1, 1)
    return rt.probabilities(visual), counts


def _is_predictions_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith("tracklet,frames,")
    except (OSError, UnicodeDecodeError):
        return False


def write_predictions(records: list[dict[str, Any]], runtime: dict[str, Any], cfg: PredictConfig) -> None:
    """`--json`: {format, version, checkpoint, runtime, records}; `--csv`: one row per tracklet (answers, then
    probabilities)."""
    if cfg.json is not None:
        text = json.dumps({"format": PREDICTIONS_FORMAT, "version": 1, "checkpoint": cfg.checkpoint,
                           "runtime": runtime, "records": records}, indent=2) + "\n"
        write_output_file(Path(cfg.json), "predictions file", json_format_is(PREDICTIONS_FORMAT),
                          lambda tmp: tmp.write_text(text))
    if cfg.csv is not None:
        groups, attrs = list(records[0]["description"]), list(records[0]["probabilities"])
        rows = [[r["tracklet"], r["frames"], *(r["description"][g] for g in groups),
                 *(f"{r['probabilities'][a]:.4f}" for a in attrs)] for r in records]
        text = csv_text(["tracklet", "frames", *groups, *(f"p({a})" for a in attrs)], rows)
        write_output_file(Path(cfg.csv), "predictions CSV", _is_predictions_csv, lambda tmp: tmp.write_text(text))
