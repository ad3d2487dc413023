"""Synthetic MARS- or Duke-shaped datasets whose frames show their attributes, some frames more than others.

Each tracklet is a drawn figure whose clothing colours, sleeve and leg length, bottom type, bags, hat, hair,
shoes, build, pose, motion and age follow its CSV row (`data_manifests/synth/<layout>.json` says which column
drives which part). As in real tracklets, the evidence varies from frame to frame
(`data_manifests/synth/frames.json`): the pose wanders around the labelled one (a backpack is plain only from
behind, straps from the front), occluders hide the head, a side, the torso or the lower body, exposure and colour
cast change, frames blur and change scale, and a share of tracklets carries a frame of another person or of no
one (flagged in the CSV's wrong-target / target-miss columns, as MARS flags them). So averaging more frames
genuinely helps. Same seed, same bytes.
"""

from __future__ import annotations

import csv
import dataclasses
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..data.layouts import LAYOUTS, DatasetLayout, layout_named, mars_frame_counts, read_attribute_csv, read_mars_info
from ..data.schema import load_schema
from ..errors import ParError
from ..outputs import replace_dir
from ..resources import load_json

if TYPE_CHECKING:
    from ..config import SynthConfig


@dataclass(frozen=True)
class SynthTracklet:
    split: str
    person_id: int
    camera_id: int
    tracklet_no: int
    num_frames: int
    row: dict[str, int]  # the CSV values (motion, pose, colours, ...)
    seed: int
    distractor: str = ""  # "", "wrong-target" or "target-miss": one frame shows another person or no one

    def frame_path(self, layout: DatasetLayout, i: int) -> str:
        return layout.frame_path(self.split, self.person_id, self.camera_id, self.tracklet_no, i)


@dataclass(frozen=True)
class Appearance:
    """What the drawing shows, whatever the annotation it came from."""
    top_colour: tuple[int, int, int] | None  # None: a complex (striped) pattern
    bottom_colour: tuple[int, int, int] | None
    short_sleeves: bool
    short_bottom: bool
    trousers: bool
    shoulder_bag: bool
    backpack: bool
    hand_bag: bool
    hat: bool
    long_hair: bool
    female: bool
    boots: bool
    light_shoes: bool
    age: int
    pose: int
    motion: int


def appearance(row: dict[str, int], spec: dict[str, Any]) -> Appearance:
    values: dict[str, Any] = {"boots": False, "light_shoes": False}
    for name, rule in spec["appearance"].items():
        if "constant" in rule:
            values[name] = rule["constant"]
        elif "colours" in rule:
            colour = rule["colours"][row[rule["column"]]]
            values[name] = tuple(colour) if colour is not None else None
        elif "equals" in rule:
            values[name] = row[rule["column"]] == rule["equals"]
        else:
            values[name] = int(row[rule["column"]])
    return Appearance(**values)


def sample_row(rng: np.random.Generator, spec: dict[str, Any]) -> dict[str, int]:
    row = {}
    for col, prior in spec["priors"].items():
        row[col] = int(rng.choice(len(prior), p=np.array(prior) / sum(prior))) if isinstance(prior, list) \
            else int(rng.random() < prior)
    for rule in spec["correlated"]:  # e.g. long hair correlates with female, as in MARS
        if all(row[c] == v for c, v in rule["when"].items()) and rng.random() < rule["probability"]:
            row[rule["column"]] = rule["value"]
    return row


def _shade(colour: Sequence[int], rng: np.random.Generator, amount: int = 18) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def frame_pose(pose: int, rng: np.random.Generator, change: float) -> int:
    """The pose a frame shows: the labelled one, or (with probability `change`) a neighbouring one; 'varies' (5)
    is any pose in every frame."""
    if pose == 5:
        return int(rng.integers(0, 5))
    if rng.random() < change:
        return int(np.clip(pose + rng.choice([-1, 1]), 0, 4))
    return pose


def draw_person(d: ImageDraw.ImageDraw, a: Appearance, ident: np.random.Generator, rng: np.random.Generator,
                W: int, H: int, pose: int, index: int, nuisance: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """Draw the figure; returns the regions (head, torso, side, lower body) occluders may cover."""
    skin = _shade((205, 160, 125), ident, 30)
    hair_colour = (200, 200, 200) if a.age == 3 else _shade((45, 30, 20), ident, 15)
    motion = int(rng.integers(0, 4)) if a.motion == 4 else a.motion
    scale = [0.78, 0.88, 1.0, 0.96][a.age] * (1 + rng.uniform(-nuisance["scale_jitter"], nuisance["scale_jitter"]))
    cx = W / 2 + rng.uniform(-nuisance["shift_jitter"], nuisance["shift_jitter"]) * W
    top_y = H * (0.04 + rng.uniform(0, 0.05)) + (1 - scale) * H * 0.6

    def y(f: float) -> float:
        return top_y + f * H * scale

    def x(f: float) -> float:
        return cx + f * W * scale

    side = pose == 2
    half = (0.15 if a.female else 0.19) * (0.65 if side else 1.0)
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

    pack = (30, 60, 30)
    if a.backpack and pose == 2:  # from the side the pack sticks out behind
        d.rectangle([x(half - 0.02), y(0.2), x(half + 0.12), y(0.45)], fill=pack)
    # legs / bottom
    spread = {0: 0.05, 1: 0.1, 2: 0.02, 3: 0.0}[motion] * (1 if index % 2 else -1)
    leg_w = half * 0.45
    shoe = (235, 235, 235) if a.light_shoes else (25, 25, 25)
    for sgn in (-1, 1):
        lx = sgn * half * 0.5 + sgn * spread
        d.rectangle([x(lx - leg_w), y(0.52), x(lx + leg_w), y(0.95)], fill=skin)
        if a.trousers:
            fill_part([x(lx - leg_w), y(0.52), x(lx + leg_w), y(0.7 if a.short_bottom else 0.95)], a.bottom_colour)
        if a.boots:
            d.rectangle([x(lx - leg_w), y(0.82), x(lx + leg_w), y(0.95)], fill=(70, 40, 20))
        d.rectangle([x(lx - leg_w), y(0.93), x(lx + leg_w * 1.3), y(0.97)], fill=shoe)
    if not a.trousers:  # skirt or dress: a trapezoid
        end = 0.72 if a.short_bottom else 0.86
        colour = a.bottom_colour if a.bottom_colour is not None else stripes[0]
        d.polygon(
            [(x(-half), y(0.5)), (x(half), y(0.5)), (x(half + 0.08), y(end)), (x(-half - 0.08), y(end))], fill=colour
        )
    if motion == 2:  # riding: wheels
        for wx in (-0.3, 0.3):
            d.ellipse([x(wx - 0.16), y(0.78), x(wx + 0.16), y(1.0)], outline=(10, 10, 10), width=3)
    # torso and arms
    fill_part([x(-half), y(0.2), x(half), y(0.53)], a.top_colour)
    arm = 0.07
    for sgn in ([1] if side else [-1, 1]):
        ax0 = x(sgn * half) if sgn > 0 else x(-half - arm)
        ax1 = ax0 + arm * W * scale
        d.rectangle([ax0, y(0.21), ax1, y(0.5)], fill=skin)
        fill_part([ax0, y(0.21), ax1, y(0.3 if a.short_sleeves else 0.48)], a.top_colour)
    if a.backpack and pose in (3, 4):  # from behind: the whole pack
        d.rectangle([x(-half * 0.85), y(0.22), x(half * 0.85), y(0.46)], fill=pack)
    elif a.backpack and pose in (0, 1):  # from the front: only the straps
        for sx in (-0.45, 0.45):
            d.line([x(sx * half), y(0.2), x(sx * half), y(0.4)], fill=pack, width=2)
    if a.shoulder_bag:
        d.line([x(-half), y(0.21), x(half + 0.02), y(0.47)], fill=(90, 50, 20), width=3)
        d.rectangle([x(half - 0.02), y(0.42), x(half + 0.12), y(0.54)], fill=(110, 60, 25))
    if a.hand_bag:
        d.rectangle([x(-half - 0.16), y(0.47), x(-half - 0.02), y(0.6)], fill=(150, 20, 90))
    # head, hair, hat, face
    hr = 0.075
    if a.long_hair:
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
    if a.hat:
        brim, crown = (
            ((180, 20, 20), (150, 15, 15)) if a.top_colour != (200, 30, 30) else ((20, 20, 180), (15, 15, 150))
        )
        d.rectangle([x(-hr * 1.2), y(0.02), x(hr * 1.2), y(0.07)], fill=brim)
        d.rectangle([x(-hr * 0.9), y(-0.01), x(hr * 0.9), y(0.03)], fill=crown)
    return {"head": (x(-0.14), y(-0.03), x(0.14), y(0.2)), "torso": (x(-half - 0.02), y(0.2), x(half + 0.02), y(0.5)),
            "side": (x(-half - 0.2), y(0.2), x(half + 0.16), y(0.62)),
            "lower body": (x(-half - 0.1), y(0.5), x(half + 0.1), y(1.0))}


def render_frame(t: SynthTracklet, index: int, height: int, width: int, spec: dict[str, Any],
                 nuisance: dict[str, Any]) -> Image.Image:
    """One frame of tracklet `t`: the figure drawn from its row plus this frame's nuisance."""
    ident = np.random.default_rng([t.seed, 0])  # per tracklet: appearance constants
    rng = np.random.default_rng([t.seed, index + 1])  # per frame: nuisance
    W, H = width, height
    bg = tuple(int(v) for v in ident.integers(60, 200, size=3))
    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    lo, hi = nuisance["clutter"]
    for _ in range(int(rng.integers(lo, hi))):  # background clutter
        x0, y0 = rng.integers(0, W), rng.integers(0, H)
        d.rectangle([x0, y0, x0 + rng.integers(5, W // 2), y0 + rng.integers(5, H // 3)], fill=_shade(bg, rng, 60))
    distractor_frame = t.distractor and index == int(ident.integers(0, max(1, t.num_frames)))
    regions = None
    if not (distractor_frame and t.distractor == "target-miss"):
        a = appearance(t.row, spec)
        if distractor_frame:  # wrong target: somebody else in this frame
            a = appearance(sample_row(np.random.default_rng([t.seed, 99]), spec), spec)
        regions = draw_person(
            d, a, ident, rng, W, H, frame_pose(a.pose, rng, nuisance["pose_change"]), index, nuisance
        )
    if regions is not None and rng.random() < nuisance["occluder"]:  # something passes in front of one part
        names = list(nuisance["occluder_regions"])
        p = np.array([nuisance["occluder_regions"][n] for n in names])
        box = regions[names[int(rng.choice(len(names), p=p / p.sum()))]]
        d.rectangle(list(box), fill=_shade(bg, rng, 60))  # in the scene's colours, as a pole, a car, a passer-by
    if rng.random() < nuisance["blur"]:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 2.2))))
    arr = np.asarray(img, dtype=np.float32)
    light = nuisance["lighting"]  # this frame's exposure and colour cast (clouds, shade, camera gain)
    arr = arr * (1 + rng.uniform(-light["brightness"], light["brightness"])) + rng.uniform(
        -light["cast"], light["cast"], 3
    )
    if rng.random() < nuisance["motion_blur"]:  # a horizontal smear, as a moving person or camera
        k = int(rng.integers(3, 9))
        arr = np.mean([np.roll(arr, s, axis=1) for s in range(-(k // 2), k - k // 2)], axis=0)
    arr = arr + rng.normal(0, nuisance["noise_std"], size=(H, W, 3))
    return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8))


def _write_tracklet(args: tuple[SynthTracklet, Path, int, int, DatasetLayout, dict, dict]) -> int:
    t, out, height, width, layout, spec, nuisance = args
    for i in range(t.num_frames):
        path = out / t.frame_path(layout, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        render_frame(t, i, height, width, spec, nuisance).save(path, format="JPEG", quality=90)
    return t.num_frames


def _distractor(rng: np.random.Generator, share: float) -> str:
    return "" if rng.random() >= share else str(rng.choice(["wrong-target", "target-miss"]))


def _specs(layout: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The layout's synth spec and the per-frame nuisance; the layout is checked here, before anything is drawn."""
    return load_json("synth", layout_named(layout).name), load_json("synth", "frames")


def plan_random(layout: str, tracklets_per_split: int, frames: tuple[int, int], seed: int) -> list[SynthTracklet]:
    """Persons of 1-4 tracklets sharing labels; test persons distinct from train ones."""
    if tracklets_per_split < 1:
        raise ParError(f"--tracklets must be at least 1, got {tracklets_per_split}")
    if frames[0] < 1 or frames[1] < frames[0]:
        raise ParError(f"--frames-per-tracklet {frames[0]}-{frames[1]}: need 1 <= MIN <= MAX")
    spec, nuisance = _specs(layout)
    rng = np.random.default_rng(seed)
    plan: list[SynthTracklet] = []
    pid, number = 0, 0
    for split in ("train", "test"):
        made = 0
        while made < tracklets_per_split:
            pid += 1
            row = sample_row(rng, spec)
            cams = rng.permutation(6)[: int(rng.integers(1, 5))] + 1
            for k, cam in enumerate(cams[: tracklets_per_split - made]):
                number += 1
                n = int(rng.integers(frames[0], frames[1] + 1))
                trk = number if LAYOUTS[layout].global_tracklet_numbers else k + 1
                plan.append(SynthTracklet(split, pid, int(cam), trk, n, row, int(rng.integers(2**31)),
                                          _distractor(rng, nuisance["distractor_tracklets"])))
                made += 1
    return plan


def plan_like_mars(like: Path, tracklets_per_split: int | None, seed: int) -> list[SynthTracklet]:
    """Identities, labels and real frame counts from the MARS annotation and info files."""
    like = Path(like)
    labels = read_attribute_csv(like / LAYOUTS["mars"].attribute_csv, load_schema("mars"))
    counts = mars_frame_counts(read_mars_info(like / "info"), labels.keys())
    return _plan_like("mars", {k: (s, n) for k, (s, n) in counts.items()}, labels, tracklets_per_split, seed)


def plan_like_duke(
    like: Path, tracklets_per_split: int | None, frames: tuple[int, int], seed: int
) -> list[SynthTracklet]:
    """Identities and labels from the Duke annotation (tracklet ids up to the spec's `train_tracklets` are the
    training split); frame counts drawn from `frames` (the release has no per-tracklet counts)."""
    spec = load_json("synth", "duke")
    labels = read_attribute_csv(Path(like) / LAYOUTS["duke"].attribute_csv, load_schema("duke"))
    rng = np.random.default_rng([seed, 1])
    splits = {k: ("train" if k[2] <= spec["train_tracklets"] else "test", int(rng.integers(frames[0], frames[1] + 1)))
              for k in sorted(labels)}
    plan = _plan_like("duke", splits, labels, tracklets_per_split, seed)
    # Duke's layout numbers tracklets by their order on disk (train, then gallery; by person and folder):
    # a sampled subset is numbered afresh in that order.
    ordered = sorted(plan, key=lambda t: (t.split != "train", t.person_id, t.tracklet_no))
    return [dataclasses.replace(t, tracklet_no=n + 1) for n, t in enumerate(ordered)]


def _plan_like(
    layout: str, splits: dict, labels: dict, tracklets_per_split: int | None, seed: int
) -> list[SynthTracklet]:
    spec, nuisance = _specs(layout)
    rng = np.random.default_rng(seed)
    plan: list[SynthTracklet] = []
    for split in ("train", "test"):
        keys = sorted(k for k, (s, _) in splits.items() if s == split)
        if tracklets_per_split is not None and tracklets_per_split < len(keys):
            keys = sorted(keys[i] for i in rng.choice(len(keys), tracklets_per_split, replace=False))
        for key in keys:
            row = {c: int(labels[key][1][c]) for c in spec["priors"]}
            plan.append(SynthTracklet(split, key[0], key[1], key[2], splits[key][1], row, int(rng.integers(2**31)),
                                      _distractor(rng, nuisance["distractor_tracklets"])))
    return plan


def write_synth(out: Path, plan: list[SynthTracklet], layout: str = "mars", height: int = 256, width: int = 128,
                workers: int = 2, progress: Callable[[int], None] | None = None) -> None:
    """Render `plan` into the layout's folders at `out` (built beside it, put in place when complete)."""
    if not plan:
        raise ParError("nothing to render: the plan has no tracklets")
    out = Path(out)
    if out.exists():
        raise ParError(f"{out}: already exists; par writes a synthetic dataset into a new folder - choose another")
    spec, nuisance = _specs(layout)
    schema = load_schema(spec["schema"])
    lay = LAYOUTS[layout]

    def build(tmp: Path) -> None:
        for folders in lay.split_folders.values():
            (tmp / folders[0]).mkdir(parents=True)
        with open(tmp / lay.attribute_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(schema.csv_columns)
            for t in sorted(plan, key=lambda t: t.tracklet_no) if lay.global_tracklet_numbers else plan:
                w.writerow(schema.csv_row(t.person_id, t.camera_id, t.tracklet_no,
                                          {**t.row, **({t.distractor: 1} if t.distractor else {})}))
        jobs = [(t, tmp, height, width, lay, spec, nuisance) for t in plan]
        with ProcessPoolExecutor(max(1, workers)) as pool:
            for n in (pool.map(_write_tracklet, jobs, chunksize=4) if workers > 1 else map(_write_tracklet, jobs)):
                if progress:
                    progress(n)

    replace_dir(out, "synthetic dataset", build)


def parse_span(text: str) -> tuple[int, int]:
    """`--frames-per-tracklet`: N or MIN-MAX."""
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise ParError(f"--frames-per-tracklet must be N or MIN-MAX, not '{text}'") from None


def synthesize(cfg: "SynthConfig", on_progress: Callable[[int, int], None] | None = None) -> tuple[str, list[Any]]:
    """`par synth` of a dataset: plan (random, or like the real MARS / Duke annotation) and render; returns the
    layout and the plan (a video scene: `scenes.synthesize_scene`)."""
    if cfg.cameras > 1:
        raise ParError(f"--cameras {cfg.cameras} makes a site of camera footage: add --video")
    frames = parse_span(cfg.frames_per_tracklet)
    if cfg.like_mars is not None:
        layout, plan = "mars", plan_like_mars(Path(cfg.like_mars), cfg.tracklets, cfg.seed)
    elif cfg.like_duke is not None:
        layout, plan = "duke", plan_like_duke(Path(cfg.like_duke), cfg.tracklets, frames, cfg.seed)
    else:
        layout = cfg.layout
        plan = plan_random(layout, 40 if cfg.tracklets is None else cfg.tracklets, frames, cfg.seed)
    total, done = sum(t.num_frames for t in plan), 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            on_progress(done, total)
    write_synth(Path(cfg.out), plan, layout, cfg.height or 256, cfg.width or 128, cfg.workers, step)
    return layout, plan
