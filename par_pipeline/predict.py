"""`par predict`: attributes of new tracklets (frame folders, videos, MARS tracklet ids) from a checkpoint.

The CLIP model, weights and preprocessing are the ones the checkpoint's store was built with
(recorded in the checkpoint); frames of many tracklets go through CLIP together in batches, and
each tracklet's tokens are averaged (all frames by default, or T evenly spaced ones).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .checkpoint import load_checkpoint, resolve_checkpoint
from .encoder import ClipEncoder, file_sha256
from .errors import ParError
from torch.utils.data import DataLoader

from .extract import FrameDataset
from .preprocess import Preprocess, prepare_image
from .samples import sample_frames

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


@dataclass
class TrackletInput:
    name: str
    frames: list[Path] | None = None  # image files, in order
    video: Path | None = None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_inputs(paths: Sequence[Path], mars_root: Path | None = None, tracklet_ids: Sequence[str] = ()) -> list[TrackletInput]:
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
                raise ParError(f"{path}: no frames (jpg/png) in the folder or its sub-folders; give a folder of one person's frames")
            out.extend(TrackletInput(d.name, frames=imgs) for d, imgs in subs)
        elif path.exists():
            raise ParError(f"{path}: not a frame folder or a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
        else:
            raise ParError(f"{path}: not found")
    for tid in tracklet_ids:
        if mars_root is None:
            raise ParError("--tracklet needs --mars-root (the folder holding bbox_train/ and bbox_test/)")
        m = re.fullmatch(r"(\d{4})C(\d)T(\d{4})", tid)
        if not m:
            raise ParError(f"--tracklet {tid}: MARS tracklet ids look like 0001C1T0001")
        frames = sorted(p for split in ("bbox_train", "bbox_test") for p in (Path(mars_root) / split / m.group(1)).glob(f"{tid}F*.jpg"))
        if not frames:
            raise ParError(f"{mars_root}: no frames of tracklet {tid} under bbox_train/ or bbox_test/")
        out.append(TrackletInput(tid, frames=frames))
    if not out:
        raise ParError("nothing to predict: give frame folders, video files or --mars-root with --tracklet")
    return out


def _video_frames(path: Path, pp: Preprocess) -> list[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            frames = [prepare_image(f.to_image(), pp) for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise ParError(f"{path}: unreadable video ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                       f"give an mp4/avi of a person crop") from None
    if not frames:
        raise ParError(f"{path}: the video has no frames")
    return frames


def encoder_for_checkpoint(meta: dict[str, Any], pretrained: str | None, device: str) -> ClipEncoder:
    """Rebuild the exact CLIP the checkpoint's store was made with; a mismatch is an error."""
    ident = meta["store_identity"]
    weights = ident["weights"]
    kind = weights.get("kind")
    ckpt = meta.get("_path", "the checkpoint")
    if kind == "random-init":
        enc = ClipEncoder(ident["model"], None, True, device, seed=int(weights.get("seed", 0)))
    elif kind == "file":
        if pretrained is None:
            raise ParError(f"{ckpt} was trained on tokens from CLIP weights {weights['name']}; pass that file with --pretrained")
        if file_sha256(Path(pretrained)) != weights["sha256"]:
            raise ParError(f"{pretrained}: not the CLIP weights {ckpt} was trained with (sha256 differs from {weights['name']}); "
                           f"pass the original file")
        enc = ClipEncoder(ident["model"], pretrained, False, device)
    elif kind == "open_clip-tag":
        if pretrained is not None and pretrained != weights["tag"]:
            raise ParError(f"--pretrained {pretrained}: {ckpt} was trained with open_clip weights '{weights['tag']}'")
        enc = ClipEncoder(ident["model"], weights["tag"], False, device)
    else:
        raise ParError(f"{ckpt}: unknown CLIP weights record {weights}")
    if enc.preprocess.to_dict() != ident["preprocessing"]:
        raise ParError(f"{ckpt}: its store used preprocessing {ident['preprocessing']}, this CLIP gives "
                       f"{enc.preprocess.to_dict()}; rebuild with the original model")
    return enc


def describe(probs: np.ndarray, attributes: Sequence[str], boundaries: Sequence[int], groups: Sequence[str],
             threshold: float) -> tuple[dict[str, str], dict[str, float]]:
    """Binary groups yes/no at the threshold; multi-class groups their most likely value.

    Also returns the probability behind each answer (of the attribute for binary groups, of the value otherwise).
    """
    out, conf = {}, {}
    for g, name in enumerate(groups):
        s, e = boundaries[g], boundaries[g + 1]
        if e - s == 1:
            out[name], conf[name] = ("yes" if probs[s] >= threshold else "no"), float(probs[s])
        else:
            k = s + int(np.argmax(probs[s:e]))
            best = attributes[k]
            out[name], conf[name] = (best[len(name):].strip() if best.startswith(name) else best), float(probs[k])
    return out, conf


def predict(inputs: list[TrackletInput], checkpoint: str, pretrained: str | None = None, device: str = "cpu",
            frames: int | None = None, batch_size: int = 64, on_progress: Callable[[int, int], None] | None = None,
            workers: int = 2) -> list[dict[str, Any]]:
    model, meta = load_checkpoint(checkpoint, device)
    meta["_path"] = str(resolve_checkpoint(checkpoint))
    enc = encoder_for_checkpoint(meta, pretrained, device)
    pp = enc.preprocess
    # Which frames of each tracklet: all (default) or T evenly spaced (the rule `par eval` uses).
    jobs: list[tuple[int, Any]] = []
    counts = []
    for i, t in enumerate(inputs):
        items: Sequence[Any] = _video_frames(t.video, pp) if t.video is not None else (t.frames or [])
        if not items:
            raise ParError(f"{t.name}: no frames")
        idx = np.arange(len(items)) if frames is None else sample_frames(len(items), frames, None)
        jobs.extend((i, items[k]) for k in idx)
        counts.append(len(idx))
    sums = torch.zeros(len(inputs), enc.num_tokens, enc.dim)
    done = 0

    def accumulate(owners: list[int], images: torch.Tensor) -> None:
        nonlocal done
        # Round through float16 as the store does, so predictions match `par eval` on the same frames.
        tokens = enc.encode_frames(images, torch.float16).float().cpu()
        sums.index_add_(0, torch.tensor(owners), tokens)
        done += len(owners)
        if on_progress:
            on_progress(done, len(jobs))

    decoded = [(i, item) for i, item in jobs if isinstance(item, np.ndarray)]
    for b in range(0, len(decoded), batch_size):
        chunk = decoded[b:b + batch_size]
        accumulate([i for i, _ in chunk], torch.from_numpy(np.stack([img for _, img in chunk])))
    files = [(i, str(item)) for i, item in jobs if not isinstance(item, np.ndarray)]
    if files:  # decode JPEGs in loader workers while CLIP runs, as `par extract` does
        loader = DataLoader(FrameDataset([p for _, p in files], pp), batch_size=batch_size, num_workers=workers,
                            pin_memory=enc.device.type == "cuda")
        for rows, images, good, reasons in loader:
            if not bool(good.all()):
                k = int(rows[~good][0])
                raise ParError(f"{files[k][1]}: {reasons[int((~good).nonzero()[0])]}; remove or replace the frame")
            accumulate([files[int(r)][0] for r in rows], images)
    mean = sums / torch.tensor(counts, dtype=torch.float32).view(-1, 1, 1)
    with torch.no_grad():
        probs = torch.sigmoid(model(mean.to(device)).float()).cpu().numpy()
    threshold = meta.get("threshold", 0.45)
    records = []
    for t, n, p in zip(inputs, counts, probs):
        desc, conf = describe(p, meta["attributes"], meta["group_boundaries"], meta["groups"], threshold)
        records.append({"tracklet": t.name, "frames": n, "description": desc, "confidence": conf,
                        "probabilities": dict(zip(meta["attributes"], map(float, p)))})
    return records
