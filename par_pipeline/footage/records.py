"""A tracked person's record and its derived forms, shared by recorded and live `par track`: the record
(tracks.json's `tracks`), its short line, tracks.csv rows and MOTChallenge rows; the crop of a box, a track's
probabilities and what links it across cameras from its chosen frames' tokens."""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.schema import AttributeSchema
from ..engine.metrics import describe
from ..reports import csv_text
from .tracking import Track


def track_probabilities(rt: Any, frames: torch.Tensor) -> np.ndarray:
    """A track's chosen frames' tokens [T, N, D] -> its A probabilities, as `par predict` computes them (`rt`: the
    run's AttributeRuntime)."""
    visual = frames if rt.needs_frames else frames.mean(0)
    return rt.probabilities(visual.unsqueeze(0))[0]


COLOUR_BINS = 8  # chromaticity bins per axis of the colour cue


def colour_histogram(crop: Image.Image) -> np.ndarray:
    """A crop's colours: per half (upper and lower body) the histogram of its chromaticity (r and g over r + g + b,
    so a camera's brightness cancels), COLOUR_BINS x COLOUR_BINS bins, each half summing to 1."""
    rgb = np.asarray(crop.convert("RGB"), dtype=np.float32)
    chroma = rgb[..., :2] / (rgb.sum(2, keepdims=True) + 1.0)
    q = np.minimum((chroma * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    cells = q[..., 0] * COLOUR_BINS + q[..., 1]
    half = max(1, len(cells) // 2)
    out = []
    for part in (cells[:half], cells[half:]):
        h = np.bincount(part.ravel(), minlength=COLOUR_BINS ** 2).astype(np.float32)
        out.append(h / max(1.0, float(h.sum())))
    return np.concatenate(out)


def _vector_text(vec: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, dtype="<f2").tobytes()).decode("ascii")


def read_vector(text: str) -> np.ndarray:
    """A record's `appearance` or `colour` as float32."""
    return np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)


def track_cues(frames: torch.Tensor, colours: list[np.ndarray]) -> dict[str, str]:
    """What links a track across cameras (`par link`), as a record carries it (float16 little-endian in base64):
    `appearance`, the class tokens of its chosen frames (CLIP's image embedding of each crop; tokens [T, N, D] as
    stored) L2-normalised, averaged and normalised again (D = 512: 1.4 KB); `colour`, the mean of the crops'
    colour histograms, square-rooted (Hellinger) and L2-normalised."""
    cls = torch.nn.functional.normalize(frames[:, 0, :].float(), dim=-1).mean(0)
    appearance = torch.nn.functional.normalize(cls, dim=0).numpy()
    colour = np.sqrt(np.mean(colours, axis=0))
    return {"appearance": _vector_text(appearance), "colour": _vector_text(colour / max(1e-12, np.linalg.norm(colour)))}


def crop_box(rgb: np.ndarray, box: tuple[float, ...]) -> Image.Image:
    H, W = rgb.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(W, max(x0 + 1, int(np.ceil(box[2])))), min(H, max(y0 + 1, int(np.ceil(box[3]))))
    return Image.fromarray(rgb[y0:y1, x0:x1])


def track_record(t: Track, probs: np.ndarray, used: list[int], cues: dict[str, str], schema: AttributeSchema,
                 threshold: float) -> dict[str, Any]:
    description, confidence = describe(probs, schema, threshold)
    record = {"id": t.id, "first_frame": t.first + 1, "last_frame": t.last + 1, "frames": len(t.frames),
              "frames_used": [f + 1 for f in used],
              "boxes": [[f + 1, round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2),
                         round(s, 4)] for f, b, s in zip(t.frames, t.boxes, t.scores)],
              "description": description, "confidence": confidence,
              "probabilities": {a: float(p) for a, p in zip(schema.attributes, probs)}, **cues}
    record["line"] = short_line(record, schema)
    return record


def tracks_csv(records: list[dict[str, Any]], schema: AttributeSchema, attributes: list[str]) -> str:
    """A row per person; a live folder's rows start with the run that saw them."""
    groups = [g.name for g in schema.groups]
    runs = any("run" in r for r in records)
    rows = [[*([r.get("run", "")] if runs else []), r["id"], r["first_frame"], r["last_frame"], r["frames"],
             *(r["description"][g] for g in groups), *(f"{r['probabilities'][a]:.4f}" for a in attributes)]
            for r in records]
    return csv_text([*(["run"] if runs else []), "track", "first_frame", "last_frame", "frames", *groups,
                     *(f"p({a})" for a in attributes)], rows)


def mot_rows(tracks: list[Track]) -> str:
    """MOTChallenge result rows: frame,id,x,y,w,h,conf,-1,-1,-1 (frames and ids from 1), by frame."""
    rows = sorted((f + 1, t.id, b, s) for t in tracks for f, b, s in zip(t.frames, t.boxes, t.scores))
    return "".join(f"{f},{i},{b[0]:.2f},{b[1]:.2f},{b[2] - b[0]:.2f},{b[3] - b[1]:.2f},{s:.4f},-1,-1,-1\n"
                   for f, i, b, s in rows)


def short_line(record: dict[str, Any], schema: AttributeSchema) -> str:
    """`#3 female, red top, black bottom, backpack`: the record's id and its `answers_line`."""
    return f"#{record['id']} " + answers_line(record["description"], [g.name for g in schema.groups if g.is_binary])


def answers_line(description: dict[str, str], yes_no: list[str]) -> str:
    """`female, red top, black bottom, backpack`: the colours and the yes/no groups that are present."""
    parts = []
    for group, answer in description.items():
        if group in yes_no and answer == "yes":
            parts.append(group)
        elif group in ("top color", "bottom color"):
            parts.append(f"{answer} {group.split()[0]}")
    return ", ".join(parts)
