"""A MARS-shaped synthetic dataset whose frames show their attributes.

Each tracklet is a rendered figure whose clothing colours, sleeve and leg length, bottom type,
bags, hat, hair, build, pose, motion and age follow its labels; every frame adds nuisance
(occlusion, blur, pose and scale jitter, background clutter, noise) so that averaging several
frames genuinely helps. Same seed, same bytes.
"""
from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .atomic import atomic_path
from .errors import ParError
from .layouts import MARS_SPLITS, mars_frame_counts, read_attribute_csv, read_mars_info
from .schema import load_schema

QUALITY_COLUMNS = ["occlusion", "cut-out", "multi-person", "background-dominant", "target-change", "target-miss", "wrong-target"]
MARS_CSV_COLUMNS = ["person_id", "camera_id", "tracklets_id", "motion", "pose", *QUALITY_COLUMNS, "top color", "bottom color",
                    "age", "top length", "bottom length", "shoulder bag", "backpack", "hat", "hand bag", "hair", "gender", "bottom type"]
# Colours in the value order of the MARS schema; "complex" is drawn as stripes.
TOP_COLOURS = [(20, 20, 20), (120, 40, 150), (40, 150, 50), (40, 70, 200), (128, 128, 128), (235, 235, 235), (230, 210, 40), (200, 30, 30), None]
BOTTOM_COLOURS = [(235, 235, 235), (120, 40, 150), (20, 20, 20), (40, 150, 50), (128, 128, 128), (240, 140, 180), (230, 210, 40), (40, 70, 200), (130, 80, 30), None]
# MARS-like marginals so that class imbalance resembles the real data.
PRIORS = {"motion": [0.86, 0.03, 0.04, 0.05, 0.02], "pose": [0.1, 0.12, 0.2, 0.28, 0.27, 0.03],
          "top color": [0.17, 0.05, 0.09, 0.08, 0.1, 0.25, 0.07, 0.1, 0.09],
          "bottom color": [0.08, 0.03, 0.36, 0.04, 0.15, 0.04, 0.03, 0.15, 0.08, 0.04], "age": [0.04, 0.72, 0.19, 0.05],
          "top length": 0.9, "bottom length": 0.6, "shoulder bag": 0.25, "backpack": 0.25, "hat": 0.1, "hand bag": 0.18,
          "hair": 0.34, "gender": 0.42, "bottom type": 0.86}


@dataclass(frozen=True)
class SynthTracklet:
    split: str
    person_id: int
    camera_id: int
    tracklet_no: int
    num_frames: int
    row: dict[str, int]  # the CSV values (motion, pose, colours, ...)
    seed: int

    @property
    def folder(self) -> str:
        return f"{MARS_SPLITS[self.split]}/{self.person_id:04d}"

    def frame_name(self, i: int) -> str:
        return f"{self.person_id:04d}C{self.camera_id}T{self.tracklet_no:04d}F{i + 1:03d}.jpg"


def sample_row(rng: np.random.Generator) -> dict[str, int]:
    row = {}
    for col, prior in PRIORS.items():
        row[col] = int(rng.choice(len(prior), p=prior)) if isinstance(prior, list) else int(rng.random() < prior)
    if row["gender"] and rng.random() < 0.6:  # long hair correlates with female, as in MARS
        row["hair"] = 1
    return row


def _shade(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 18) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def render_frame(t: SynthTracklet, index: int, height: int, width: int) -> Image.Image:
    """One frame of tracklet `t`: the figure drawn from its labels plus per-frame nuisance."""
    ident = np.random.default_rng([t.seed, 0])  # per tracklet: appearance constants
    rng = np.random.default_rng([t.seed, index + 1])  # per frame: nuisance
    r = t.row
    W, H = width, height
    bg = tuple(int(v) for v in ident.integers(60, 200, size=3))
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):  # background clutter
        x0, y0 = rng.integers(0, W), rng.integers(0, H)
        d.rectangle([x0, y0, x0 + rng.integers(5, W // 2), y0 + rng.integers(5, H // 3)], fill=_shade(bg, rng, 60))
    skin = _shade((205, 160, 125), ident, 30)
    hair_colour = (200, 200, 200) if r["age"] == 3 else _shade((45, 30, 20), ident, 15)
    pose = int(rng.integers(0, 5)) if r["pose"] == 5 else r["pose"]
    motion = int(rng.integers(0, 4)) if r["motion"] == 4 else r["motion"]
    scale = [0.78, 0.88, 1.0, 0.96][r["age"]] * (1 + rng.uniform(-0.06, 0.06))
    cx = W / 2 + rng.uniform(-0.07, 0.07) * W
    top_y = H * (0.04 + rng.uniform(0, 0.05)) + (1 - scale) * H * 0.6

    def y(f: float) -> float:
        return top_y + f * H * scale

    def x(f: float) -> float:
        return cx + f * W * scale

    side = pose == 2
    half = (0.15 if r["gender"] else 0.19) * (0.65 if side else 1.0)
    top_colour = TOP_COLOURS[r["top color"]]
    bottom_colour = BOTTOM_COLOURS[r["bottom color"]]
    stripes = [tuple(int(v) for v in ident.integers(0, 255, 3)) for _ in range(2)]

    def fill_part(box: Sequence[float], colour: tuple[int, int, int] | None) -> None:
        if colour is not None:
            d.rectangle(box, fill=_shade(colour, rng, 10))
            return
        x0, y0, x1, y1 = box
        step = max(2.0, (y1 - y0) / 6)
        k, yy = 0, y0
        while yy < y1:
            d.rectangle([x0, yy, x1, min(y1, yy + step)], fill=stripes[k % 2])
            yy, k = yy + step, k + 1

    # backpack behind the torso (sticks out at the side; covers the back when seen from behind)
    if r["backpack"] and pose in (0, 1, 2):
        d.rectangle([x(-half - 0.07), y(0.2), x(half + 0.07), y(0.45)], fill=(30, 60, 30))
    # legs / bottom
    spread = {0: 0.05, 1: 0.1, 2: 0.02, 3: 0.0}[motion] * (1 if index % 2 else -1)
    leg_w = half * 0.45
    for sgn in (-1, 1):
        lx = sgn * half * 0.5 + sgn * spread
        d.rectangle([x(lx - leg_w), y(0.52), x(lx + leg_w), y(0.95)], fill=skin)
        if r["bottom type"]:
            end = 0.7 if r["bottom length"] else 0.95
            fill_part([x(lx - leg_w), y(0.52), x(lx + leg_w), y(end)], bottom_colour)
        d.rectangle([x(lx - leg_w), y(0.93), x(lx + leg_w * 1.3), y(0.97)], fill=(25, 25, 25))
    if not r["bottom type"]:  # skirt or dress: a trapezoid
        end = 0.72 if r["bottom length"] else 0.86
        colour = bottom_colour if bottom_colour is not None else stripes[0]
        d.polygon([(x(-half), y(0.5)), (x(half), y(0.5)), (x(half + 0.08), y(end)), (x(-half - 0.08), y(end))], fill=colour)
    if motion == 2:  # riding: wheels
        for wx in (-0.3, 0.3):
            d.ellipse([x(wx - 0.16), y(0.78), x(wx + 0.16), y(1.0)], outline=(10, 10, 10), width=3)
    # torso and arms
    fill_part([x(-half), y(0.2), x(half), y(0.53)], top_colour)
    arm = 0.07
    for sgn in ([1] if side else [-1, 1]):
        ax0 = x(sgn * half) if sgn > 0 else x(-half - arm)
        ax1 = ax0 + arm * W * scale
        d.rectangle([ax0, y(0.21), ax1, y(0.5)], fill=skin)
        fill_part([ax0, y(0.21), ax1, y(0.3 if r["top length"] else 0.48)], top_colour)
    if r["backpack"] and pose in (3, 4):
        d.rectangle([x(-half * 0.85), y(0.22), x(half * 0.85), y(0.46)], fill=(30, 60, 30))
    if r["shoulder bag"]:
        d.line([x(-half), y(0.21), x(half + 0.02), y(0.47)], fill=(90, 50, 20), width=3)
        d.rectangle([x(half - 0.02), y(0.42), x(half + 0.12), y(0.54)], fill=(110, 60, 25))
    if r["hand bag"]:
        d.rectangle([x(-half - 0.16), y(0.47), x(-half - 0.02), y(0.6)], fill=(150, 20, 90))
    # head, hair, hat, face
    hr = 0.075
    if r["hair"]:
        d.rectangle([x(-hr * 1.1), y(0.09), x(hr * 1.1), y(0.3)], fill=hair_colour)
    d.ellipse([x(-hr), y(0.04), x(hr), y(0.19)], fill=hair_colour if pose == 4 else skin)
    if pose != 4:
        d.chord([x(-hr), y(0.035), x(hr), y(0.13)], 180, 360, fill=hair_colour)
    if pose in (0, 1):
        off = 0.0 if pose == 0 else 0.025
        for ex in (-0.03, 0.03):
            d.ellipse([x(ex + off - 0.01), y(0.1), x(ex + off + 0.01), y(0.115)], fill=(10, 10, 10))
    elif pose == 2:
        d.ellipse([x(0.04), y(0.1), x(0.06), y(0.115)], fill=(10, 10, 10))
    if r["hat"]:
        d.rectangle([x(-hr * 1.2), y(0.02), x(hr * 1.2), y(0.07)], fill=(180, 20, 20) if r["top color"] != 7 else (20, 20, 180))
        d.rectangle([x(-hr * 0.9), y(-0.01), x(hr * 0.9), y(0.03)], fill=(150, 15, 15) if r["top color"] != 7 else (15, 15, 150))
    # per-frame nuisance: occlusion, blur, noise
    if rng.random() < 0.3:
        ow, oh = int(W * rng.uniform(0.25, 0.6)), int(H * rng.uniform(0.15, 0.35))
        ox, oy = int(rng.integers(0, W - ow + 1)), int(rng.integers(0, H - oh + 1))
        d.rectangle([ox, oy, ox + ow, oy + oh], fill=_shade(bg, rng, 80))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 2.2))))
    arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, size=(H, W, 3)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _write_tracklet(args: tuple[SynthTracklet, Path, int, int]) -> int:
    t, out, height, width = args
    folder = out / t.folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(t.num_frames):
        render_frame(t, i, height, width).save(folder / t.frame_name(i), format="JPEG", quality=90)
    return t.num_frames


def plan_random(tracklets_per_split: int, frames: tuple[int, int], seed: int) -> list[SynthTracklet]:
    """Persons of 1-4 tracklets sharing labels; test persons distinct from train ones."""
    rng = np.random.default_rng(seed)
    plan: list[SynthTracklet] = []
    pid = 0
    for split in ("train", "test"):
        made = 0
        while made < tracklets_per_split:
            pid += 1
            row = sample_row(rng)
            cams = rng.permutation(6)[: int(rng.integers(1, 5))] + 1
            for k, cam in enumerate(cams[: tracklets_per_split - made]):
                n = int(rng.integers(frames[0], frames[1] + 1))
                plan.append(SynthTracklet(split, pid, int(cam), k + 1, n, row, int(rng.integers(2**31))))
                made += 1
    return plan


def plan_like_mars(like_mars: Path, tracklets_per_split: int | None, seed: int) -> list[SynthTracklet]:
    """Identities, labels and real frame counts from the MARS annotation and info files."""
    like_mars = Path(like_mars)
    csv_path = like_mars / "mars_attributes.csv"
    labels = read_attribute_csv(csv_path, load_schema("mars"))
    counts = mars_frame_counts(read_mars_info(like_mars / "info"), labels.keys())
    rng = np.random.default_rng(seed)
    plan: list[SynthTracklet] = []
    for split in ("train", "test"):
        keys = sorted(k for k, (s, _) in counts.items() if s == split)
        if tracklets_per_split is not None and tracklets_per_split < len(keys):
            keys = sorted(keys[i] for i in rng.choice(len(keys), tracklets_per_split, replace=False))
        for key in keys:
            row = {c: int(labels[key][1][c]) for c in PRIORS}
            plan.append(SynthTracklet(split, key[0], key[1], key[2], counts[key][1], row, int(rng.integers(2**31))))
    return plan


def write_synth(out: Path, plan: list[SynthTracklet], height: int = 256, width: int = 128, workers: int = 2,
                progress: Callable[[int], None] | None = None) -> None:
    """Render `plan` into a MARS layout at `out` (built beside it, renamed when complete)."""
    out = Path(out)
    if out.exists():
        raise ParError(f"{out}: already exists; remove it or choose another output folder")
    with atomic_path(out) as tmp:
        for folder in MARS_SPLITS.values():
            (tmp / folder).mkdir(parents=True)
        with open(tmp / "mars_attributes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(MARS_CSV_COLUMNS)
            for t in plan:
                row = {"person_id": t.person_id, "camera_id": t.camera_id, "tracklets_id": t.tracklet_no, **t.row}
                w.writerow([row.get(c, 0) for c in MARS_CSV_COLUMNS])
        jobs = [(t, tmp, height, width) for t in plan]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for n in pool.map(_write_tracklet, jobs, chunksize=4):
                    if progress:
                        progress(n)
        else:
            for job in jobs:
                n = _write_tracklet(job)
                if progress:
                    progress(n)
