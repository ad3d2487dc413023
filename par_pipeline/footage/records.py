"""A tracked person's record and its derived forms, shared by recorded and live `par track`: the record
(tracks.json's `tracks`), its short line, tracks.csv rows and MOTChallenge rows; the crop of a box and a track's
probabilities from its chosen frames' tokens."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.schema import AttributeSchema
from ..engine.metrics import describe
from ..reports import csv_text
from .tracking import Track


@torch.no_grad()
def track_probabilities(model: torch.nn.Module, frames: torch.Tensor, device: str) -> np.ndarray:
    """A track's chosen frames' tokens [T, N, D] -> its A probabilities, as `par predict` computes them."""
    visual = frames if model.cfg.needs_frames else frames.mean(0)
    return torch.sigmoid(model(visual.unsqueeze(0).to(device)).float())[0].cpu().numpy()


def crop_box(rgb: np.ndarray, box: tuple[float, ...]) -> Image.Image:
    H, W = rgb.shape[:2]
    x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x1, y1 = min(W, max(x0 + 1, int(np.ceil(box[2])))), min(H, max(y0 + 1, int(np.ceil(box[3]))))
    return Image.fromarray(rgb[y0:y1, x0:x1])


def track_record(t: Track, probs: np.ndarray, used: list[int], schema: AttributeSchema, threshold: float
            ) -> dict[str, Any]:
    description, confidence = describe(probs, schema, threshold)
    record = {"id": t.id, "first_frame": t.first + 1, "last_frame": t.last + 1, "frames": len(t.frames),
              "frames_used": [f + 1 for f in used],
              "boxes": [[f + 1, round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2),
                         round(s, 4)] for f, b, s in zip(t.frames, t.boxes, t.scores)],
              "description": description, "confidence": confidence,
              "probabilities": {a: float(p) for a, p in zip(schema.attributes, probs)}}
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
    """`#3 female, red top, black bottom, backpack`: the colours and the binary attributes that are present."""
    parts = []
    for g in schema.groups:
        answer = record["description"][g.name]
        if g.is_binary and answer == g.value_names[1]:
            parts.append(g.name)
        elif g.name in ("top color", "bottom color"):
            parts.append(f"{answer} {g.name.split()[0]}")
    return f"#{record['id']} " + ", ".join(parts)
