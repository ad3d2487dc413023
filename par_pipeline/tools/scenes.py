"""`par synth --video`: synthetic camera footage with ground truth, for `par track` and its benchmark.

A fixed camera looks at a fixed background (ground, wall, clutter, a pole in front). People (the drawn figures of
`par synth`, each with its own MARS attribute row) enter from either side at their own time and depth, walk
across, occlude each other and the pole occludes them, and leave; nearer people are larger and drawn in front.
The same per-frame nuisance as the tracklet datasets applies to each figure (pose changes, the occasional
occluder), plus the camera's own exposure drift and noise. Written as a streamed video (frame by frame, bounded
memory) with MOTChallenge ground truth:

    OUT/video.mp4            the footage (MPEG-4, `fps`)
    OUT/gt/gt.txt            frame,id,x,y,w,h,1,1,visibility (MOTChallenge; frames and ids from 1)
    OUT/labels.csv           each person's attribute row (mars_attributes.csv columns; person_id = gt id)
    OUT/seqinfo.ini          MOTChallenge sequence info
Same seed, same bytes.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from ..data.schema import load_schema
from ..errors import ParError
from ..outputs import replace_dir
from ..resources import load_json
from .synth import appearance, draw_person, frame_pose, sample_row

if TYPE_CHECKING:
    from ..config import SynthConfig

SCENE_KIND = "synthetic video"


@dataclass(frozen=True)
class ScenePerson:
    pid: int  # the ground-truth id, from 1
    row: dict[str, int]  # attribute values (the CSV's)
    seed: int
    enter: int  # first frame (0-based) in view
    leave: int  # last frame in view
    depth: float  # 0 far .. 1 near: sets the foot line and the size
    leftward: bool

    def box(self, frame: int, W: int, H: int) -> tuple[float, float, float, float]:
        """(x, y, w, h) of the figure's canvas in frame `frame` (it walks across at constant speed); the person's box
        is the part of the canvas the figure covers."""
        h = H * (0.35 + 0.45 * self.depth)
        w = h / 2
        t = (frame - self.enter) / max(1, self.leave - self.enter)
        start, end = -w, W
        x = (end - t * (end - start)) if self.leftward else (start + t * (end - start))
        foot = H * (0.62 + 0.36 * self.depth)
        return x, foot - h, w, h


def plan_scene(people: int, frames: int, seed: int) -> list[ScenePerson]:
    """`people` walkers spread over `frames`; each crosses in 35-90% of the clip (at most 30 s at 10 fps)."""
    spec = load_json("synth", "mars")
    rng = np.random.default_rng([seed, 5])
    plan = []
    for pid in range(1, people + 1):
        span = int(min(frames, max(8, rng.uniform(0.35, 0.9) * frames)))
        enter = int(rng.integers(0, max(1, frames - span // 2)))
        plan.append(ScenePerson(pid, sample_row(rng, spec), int(rng.integers(2**31)), enter,
                                enter + span - 1, float(rng.uniform(0, 1)), bool(rng.random() < 0.5)))
    return plan


def background(W: int, H: int, seed: int) -> Image.Image:
    rng = np.random.default_rng([seed, 6])
    img = Image.new("RGB", (W, H), tuple(int(v) for v in rng.integers(120, 190, 3)))
    d = ImageDraw.Draw(img)
    d.rectangle([0, int(H * 0.55), W, H], fill=tuple(int(v) for v in rng.integers(70, 120, 3)))  # the ground
    for _ in range(12):  # windows, doors, signs
        x0, y0 = int(rng.integers(0, W)), int(rng.integers(0, int(H * 0.5)))
        d.rectangle([x0, y0, x0 + int(rng.integers(10, W // 6)), y0 + int(rng.integers(10, H // 5))],
                    fill=tuple(int(v) for v in rng.integers(40, 230, 3)))
    return img


def pole(W: int, H: int, seed: int) -> tuple[int, int, int, int]:
    """A post in front of the walkers: it hides part of whoever passes behind it."""
    rng = np.random.default_rng([seed, 7])
    x = int(rng.uniform(0.3, 0.7) * W)
    return x, int(H * 0.05), x + max(4, W // 40), H


def figure(p: ScenePerson, frame: int, w: int, h: int, spec: dict[str, Any],
           nuisance: dict[str, Any]) -> Image.Image:
    """The person drawn on a transparent canvas of w x h (RGBA), with this frame's pose."""
    ident = np.random.default_rng([p.seed, 0])
    rng = np.random.default_rng([p.seed, frame + 1])
    canvas = Image.new("RGBA", (max(2, int(w)), max(2, int(h))), (0, 0, 0, 0))
    a = appearance(p.row, spec)
    quiet = {**nuisance, "scale_jitter": 0.0, "shift_jitter": 0.0}  # the box is the ground truth: keep the figure in it
    draw_person(ImageDraw.Draw(canvas), a, ident, rng, canvas.width, canvas.height,
                frame_pose(a.pose, rng, nuisance["pose_change"]), frame, quiet)
    return canvas


def render_scene_frame(plan: list[ScenePerson], frame: int, W: int, H: int, base: Image.Image,
                       spec: dict[str, Any], nuisance: dict[str, Any], seed: int,
                       gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
                       ) -> tuple[np.ndarray, list[tuple[int, tuple[float, float, float, float], float]]]:
    """(RGB uint8 [H, W, 3], ground truth [(id, (x, y, w, h) clipped to the frame, visibility)]); `gain` is the
    camera's own colour response (a site's cameras differ)."""
    img = base.copy()
    here = sorted((p for p in plan if p.enter <= frame <= p.leave), key=lambda p: p.depth)  # far first
    masks, extents = [], []
    for p in here:
        x, y, w, h = p.box(frame, W, H)
        fig = figure(p, frame, w, h, spec, nuisance)
        x0, y0 = int(round(x)), int(round(y))
        img.paste(fig, (x0, y0), fig)
        alpha = np.asarray(fig.getchannel("A")) > 0
        rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
        # the person's box: the whole drawn figure, occluded parts included (as MOTChallenge boxes are)
        extents.append((x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1) if len(rows) else None)
        mask = np.zeros((H, W), dtype=bool)
        xs, ys = slice(max(0, x0), min(W, x0 + alpha.shape[1])), slice(max(0, y0), min(H, y0 + alpha.shape[0]))
        if xs.start < xs.stop and ys.start < ys.stop:
            mask[ys, xs] = alpha[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        masks.append(mask)
    px0, py0, px1, py1 = pole(W, H, seed)
    ImageDraw.Draw(img).rectangle([px0, py0, px1, py1], fill=(60, 60, 65))
    covered = np.zeros((H, W), dtype=bool)
    covered[py0:py1 + 1, px0:px1 + 1] = True
    truth = []
    for k in range(len(here) - 1, -1, -1):  # near to far: what is in front covers what is behind
        p, mask, extent = here[k], masks[k], extents[k]
        total = mask.sum()
        if extent is not None and total:
            cx0, cy0, cx1, cy1 = max(0, extent[0]), max(0, extent[1]), min(W, extent[2]), min(H, extent[3])
            if cx1 - cx0 >= 2 and cy1 - cy0 >= 2:
                truth.append((p.pid, (float(cx0), float(cy0), float(cx1 - cx0), float(cy1 - cy0)),
                              float((mask & ~covered).sum() / total)))
        covered |= mask
    rng = np.random.default_rng([seed, 8, frame])
    arr = np.asarray(img, dtype=np.float32) * np.asarray(gain, dtype=np.float32) * (1 + 0.08 * np.sin(frame / 40.0)) \
        + rng.normal(0, 3, (H, W, 3))
    return np.clip(np.round(arr), 0, 255).astype(np.uint8), sorted(truth)


def write_camera(tmp: Path, plan: list[ScenePerson], frames: int, fps: int, width: int, height: int, seed: int,
                 gain: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 progress: Callable[[int], None] | None = None) -> None:
    """One camera's footage and ground truth into the (new) folder `tmp`: video.mp4, gt/gt.txt, labels.csv of the
    people in `plan`, seqinfo.ini. `seed` sets the background, the post and the noise."""
    import av

    spec, nuisance = load_json("synth", "mars"), load_json("synth", "frames")
    base = background(width, height, seed)
    schema = load_schema("mars")
    (tmp / "gt").mkdir(parents=True)
    with av.open(str(tmp / "video.mp4"), "w") as container, open(tmp / "gt" / "gt.txt", "w") as gt:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 4_000_000
        for f in range(frames):
            rgb, truth = render_scene_frame(plan, f, width, height, base, spec, nuisance, seed, gain)
            for pid, (x, y, w, h), vis in truth:
                gt.write(f"{f + 1},{pid},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,1,{vis:.3f}\n")
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
            if progress:
                progress(f + 1)
        for packet in stream.encode():
            container.mux(packet)
    with open(tmp / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(schema.csv_columns)
        for p in sorted({p.pid: p for p in plan}.values(), key=lambda p: p.pid):
            w.writerow(schema.csv_row(p.pid, 1, 1, p.row))
    (tmp / "seqinfo.ini").write_text(f"[Sequence]\nname={tmp.name}\nimDir=img1\nframeRate={fps}\n"
                                     f"seqLength={frames}\nimWidth={width}\nimHeight={height}\nimExt=.jpg\n")


def check_scene_sizes(people: int, seconds: float, fps: int, width: int, height: int) -> int:
    """The frame count of a synthetic video of these sizes; one line for sizes a video cannot have."""
    if people < 1 or seconds <= 0 or fps < 1:
        raise ParError("a synthetic video needs at least 1 person, a positive length and fps")
    if width % 2 or height % 2:
        raise ParError(f"--width {width} / --height {height}: a video frame needs even sides")
    return max(2, int(round(seconds * fps)))


def check_new_folder(out: Path) -> None:
    if out.exists():
        raise ParError(f"{out}: already exists; par writes a synthetic video into a new folder - choose another")


def write_scene(out: Path, people: int, seconds: float, fps: int, width: int, height: int, seed: int,
                progress: Callable[[int, int], None] | None = None) -> list[ScenePerson]:
    """Render a scene into the folder `out` (built beside it, put in place when complete)."""
    frames = check_scene_sizes(people, seconds, fps, width, height)
    plan = plan_scene(people, frames, seed)
    out = Path(out)
    check_new_folder(out)
    replace_dir(out, SCENE_KIND, lambda tmp: write_camera(
        tmp, plan, frames, fps, width, height, seed, progress=(lambda f: progress(f, frames)) if progress else None))
    return plan


def synthesize_scene(cfg: "SynthConfig", on_progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """`par synth --video`: a scene with its ground truth (sizes default to 640 x 360), or with `--cameras K` a site
    (tools/site.py); returns its people."""
    if cfg.cameras > 1:
        from .site import write_site

        plan = write_site(Path(cfg.out), cfg.people, cfg.cameras, cfg.seconds, cfg.fps, cfg.width or 640,
                          cfg.height or 360, cfg.seed, on_progress)
        return sorted(plan.rows)
    return write_scene(Path(cfg.out), cfg.people, cfg.seconds, cfg.fps, cfg.width or 640, cfg.height or 360, cfg.seed,
                       on_progress)
