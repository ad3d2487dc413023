"""`par synth --video --cameras K`: a site of K fixed cameras the same people walk through, with who is who in every
camera (the ground truth of `par link` and its benchmark).

The cameras stand along one route (camera 1 .. K, data_manifests/synth/site.json): each has its own background,
colour response, scale (the depth band its walkers keep) and main walking direction. A person walks the route one
way from some camera and may stop after any camera, so some people are seen by only some cameras; between two
cameras they spend that pair's transit time. A share of the people wear another person's clothes (the same attribute
row, a figure of their own) and walk the other way at the same time: the hard case for a linker, two people alike
seen at one moment by two cameras. Same seed, same bytes.

    SITE/site.json            `par-site` v1: cameras (name, index from 1, look), transit seconds of every pair
                              (min, max), fps, frames, people (their cameras in the order walked)
    SITE/<camera>/            each camera as `par synth --video` writes a scene (video.mp4, gt/gt.txt, labels.csv,
                              seqinfo.ini), with the site's ids: one id is one person in every camera
    SITE/gt.txt               camera,id,frame,x,y,w,h (camera index and frames from 1): the multi-camera ground truth
    SITE/labels.csv           every person's attribute row (mars_attributes.csv columns; person_id = id)
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.schema import load_schema
from ..outputs import replace_dir
from ..resources import load_json
from .scenes import ScenePerson, check_new_folder, check_scene_sizes, write_camera
from .synth import sample_row

SITE_KIND = "synthetic site"
SITE_FORMAT, SITE_VERSION = "par-site", 1


@dataclass(frozen=True)
class SiteCamera:
    name: str
    index: int  # from 1, the order along the route
    seed: int  # background, post and noise
    gain: tuple[float, float, float]  # colour response
    depth: tuple[float, float]  # the band of depths (sizes) its walkers keep
    leftward: float  # the share of walkers who cross it right to left


@dataclass(frozen=True)
class SitePlan:
    cameras: list[SiteCamera]
    transit: np.ndarray  # [K, K, 2] min and max seconds from leaving camera i to entering camera j
    views: dict[int, list[ScenePerson]]  # camera index -> the people it sees
    rows: dict[int, dict[str, int]]  # person id -> attribute row
    routes: dict[int, list[int]]  # person id -> camera indices in the order walked
    same_clothes: dict[int, int]  # person id -> the person whose clothes they wear


def plan_site(people: int, cameras: int, frames: int, fps: int, seed: int) -> SitePlan:
    spec, site = load_json("synth", "mars"), load_json("synth", "site")
    look = site["camera_look"]
    rng = np.random.default_rng([seed, 10])
    cams = []
    for c in range(1, cameras + 1):
        lo = float(rng.uniform(0, 1 - look["depth_span"]))
        base = float(rng.uniform(*look["gain"]))
        gain = tuple(round(base * (1 + float(rng.uniform(-look["tint"], look["tint"]))), 4) for _ in range(3))
        main = float(look["main_direction_share"])
        cams.append(SiteCamera(f"cam{c}", c, int(rng.integers(2**31)), gain, (lo, lo + look["depth_span"]),
                               main if rng.random() < 0.5 else round(1 - main, 4)))
    # transit between neighbours; further pairs add the neighbours' times and the crossings between them
    hop = np.array([[rng.uniform(*site["transit_min_seconds"]), 0.0] for _ in range(max(0, cameras - 1))])
    if len(hop):
        hop[:, 1] = hop[:, 0] + rng.uniform(*site["transit_extra_seconds"], size=len(hop))
    cross_lo, cross_hi = site["crossing_seconds"]
    transit = np.zeros((cameras, cameras, 2))
    for i in range(cameras):
        for j in range(i + 1, cameras):
            between = j - i - 1
            transit[i, j] = transit[j, i] = (hop[i:j, 0].sum() + between * cross_lo,
                                             hop[i:j, 1].sum() + between * cross_hi)

    seconds = frames / fps
    rows: dict[int, dict[str, int]] = {}
    routes: dict[int, list[int]] = {}
    starts: dict[int, tuple[float, bool]] = {}
    same_clothes: dict[int, int] = {}
    twins = int(round(site["same_clothes_share"] * people)) if people > 1 else 0
    for pid in range(1, people + 1):
        forward = bool(rng.random() < 0.5)
        if pid > people - twins:  # wears the clothes of an earlier person and walks the other way, at their time
            other = int(rng.integers(1, people - twins + 1))
            same_clothes[pid] = other
            rows[pid] = dict(rows[other])
            forward = not starts[other][1]
            t0 = starts[other][0] + float(rng.uniform(-1, 1))
        else:
            rows[pid] = sample_row(rng, spec)
            t0 = float(rng.uniform(0, max(0.0, seconds - cross_hi)))
        starts[pid] = (t0, forward)
        order = list(range(cameras)) if forward else list(range(cameras - 1, -1, -1))
        first = 0 if rng.random() < 0.6 else int(rng.integers(0, cameras))
        route = [order[first]]
        for c in order[first + 1:]:
            if rng.random() < site["stop_after_camera"]:
                break
            route.append(c)
        routes[pid] = [c + 1 for c in route]

    views: dict[int, list[ScenePerson]] = {c.index: [] for c in cams}
    for pid in range(1, people + 1):
        t, forward = starts[pid]
        t = max(0.0, t)
        prng = np.random.default_rng([seed, 11, pid])
        figure_seed = int(prng.integers(2**31))  # the same figure in every camera
        seen = []
        for k, c in enumerate(routes[pid]):
            if k:
                lo, hi = transit[routes[pid][k - 1] - 1, c - 1]
                t += float(prng.uniform(lo, hi))
            cross = float(prng.uniform(cross_lo, cross_hi))
            enter, leave = int(round(t * fps)), int(round((t + cross) * fps))
            t += cross
            if enter >= frames:
                break
            cam = cams[c - 1]
            views[c].append(ScenePerson(pid, rows[pid], figure_seed, enter, max(enter + 1, leave),
                                        float(prng.uniform(*cam.depth)), bool(prng.random() < cam.leftward)))
            seen.append(c)
        routes[pid] = seen
    return SitePlan(cams, transit, views, rows, routes, same_clothes)


def write_site(out: Path, people: int, cameras: int, seconds: float, fps: int, width: int, height: int, seed: int,
               progress: Callable[[int, int], None] | None = None) -> SitePlan:
    """Render a site into the folder `out` (built beside it, put in place when complete)."""
    frames = check_scene_sizes(people, seconds, fps, width, height)
    out = Path(out)
    check_new_folder(out)
    plan = plan_site(people, cameras, frames, fps, seed)
    schema = load_schema("mars")
    done = 0

    def step(_: int) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, frames * cameras)

    def build(tmp: Path) -> None:
        for cam in plan.cameras:
            write_camera(tmp / cam.name, plan.views[cam.index], frames, fps, width, height, cam.seed, cam.gain, step)
        with open(tmp / "gt.txt", "w") as f:
            for cam in plan.cameras:
                for line in (tmp / cam.name / "gt" / "gt.txt").read_text().splitlines():
                    frame, pid, x, y, w, h = line.split(",")[:6]
                    f.write(f"{cam.index},{pid},{frame},{x},{y},{w},{h}\n")
        with open(tmp / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(schema.csv_columns)
            for pid, row in sorted(plan.rows.items()):
                w.writerow(schema.csv_row(pid, 1, 1, row))
        doc = {"format": SITE_FORMAT, "version": SITE_VERSION, "seed": seed, "fps": fps, "frames": frames,
               "width": width, "height": height,
               "cameras": [{**asdict(c), "gain": list(c.gain), "depth": [round(v, 4) for v in c.depth]}
                           for c in plan.cameras],
               "transit": [{"from": a.name, "to": b.name,
                            **{k: round(float(plan.transit[a.index - 1, b.index - 1, m]), 3)
                               for m, k in enumerate(("min", "max"))}}
                           for a in plan.cameras for b in plan.cameras if a is not b],
               "people": [{"id": pid, "cameras": [plan.cameras[c - 1].name for c in plan.routes[pid]],
                           **({"clothes_of": plan.same_clothes[pid]} if pid in plan.same_clothes else {})}
                          for pid in sorted(plan.rows)]}
        (tmp / "site.json").write_text(json.dumps(doc, indent=1) + "\n")

    replace_dir(out, SITE_KIND, build)
    return plan


def read_site(site: Path) -> dict[str, Any]:
    return json.loads((Path(site) / "site.json").read_text())
