"""`par bench --part link` (in `make track-bench`): `par link` on synthetic sites with ground truth (tools/site.py).

Per site (every camera tracked by `par track`, with the ground-truth boxes as detections and with the motion
detector): the multi-camera IDF1 / IDP / IDR over all cameras with global ids (the DukeMTMC / AI City definition:
the cameras' sequences concatenated, IoU 0.5; the `trackers` package's TrackEval-parity evaluation), and link
precision / recall over the cross-camera pairs of tracks (a track's person: the ground-truth person it follows in
most frames). Linkers on the same tracks: par with every cue, par without each cue (its share) and without the
same-camera gap, par live (the records replayed in the order a live run receives them: its last link, and each
record's person on arrival), and PP-Human's method (mean appearance, complete linkage at 0.5, same camera masked).
Scale: `link_scale` tracks (random appearances and attributes) of a day, and of one busy hour, linked, in seconds.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import BenchConfig, build_config
from ..footage.linking import CUES, LinkRules, Sightings, baseline_labels, default_rules, link_labels
from ..footage.online_linking import replay
from ..reports import spread
from ..workflows.link import read_cameras
from ..workflows.track import track_video
from .site import read_site, write_site
from .track_bench import _gt_boxes, _person_of

Log = Callable[[str], None]
# par with every cue, then without each one (each cue's share) and without the time cue's same-camera gap, par live
# (the last link of the records replayed as a live run receives them, and each record's person when it arrived),
# and PP-Human's method on the same tracks
LINKERS = ("par", *(f"par_no_{cue}" for cue in CUES), "par_no_same_camera_gap", "par_live", "par_live_on_arrival",
           "pp_human")


def linker_labels(name: str, s: Sightings, rules: LinkRules) -> np.ndarray:
    if name == "pp_human":
        return baseline_labels(s)
    if name.startswith("par_live"):
        last, first, _ = replay(s, rules)
        return first if name == "par_live_on_arrival" else last
    if name == "par_no_same_camera_gap":
        return link_labels(s, LinkRules(**{**rules.__dict__, "same_camera_gap": float("inf")}))[0]
    cues = tuple(c for c in CUES if name != f"par_no_{c}")
    return link_labels(s, LinkRules(**{**rules.__dict__, "cues": cues}))[0]


def multi_camera_idf1(site: Path, records: list[dict[str, Any]], labels: np.ndarray, cameras: list[str]
                      ) -> dict[str, float]:
    """IDF1, IDP, IDR with global ids over all cameras: each camera's frames follow the previous camera's."""
    from trackers.eval import evaluate_mot_sequence

    doc = read_site(site)
    span = doc["frames"] + 1
    index = {c["name"]: c["index"] for c in doc["cameras"]}
    with tempfile.TemporaryDirectory() as tmp:
        gt, result = Path(tmp) / "gt.txt", Path(tmp) / "result.txt"
        with open(gt, "w") as f:
            for line in (site / "gt.txt").read_text().splitlines():
                c, pid, frame, x, y, w, h = line.split(",")
                f.write(f"{(int(c) - 1) * span + int(frame)},{pid},{x},{y},{w},{h},1,1,1\n")
        rows = sorted(((index[cameras[r["_cam"]]] - 1) * span + int(b[0]), int(labels[k]) + 1, b[1:5])
                      for k, r in enumerate(records) for b in r["boxes"])
        result.write_text("".join(f"{f},{p},{b[0]:.2f},{b[1]:.2f},{b[2]:.2f},{b[3]:.2f},1,-1,-1,-1\n"
                                  for f, p, b in rows))
        r = evaluate_mot_sequence(str(gt), str(result), metrics=["Identity"])
    return {"idf1": float(r.Identity.IDF1), "idp": float(r.Identity.IDP), "idr": float(r.Identity.IDR)}


def link_precision_recall(truth: np.ndarray, labels: np.ndarray, camera: np.ndarray) -> dict[str, float]:
    """Over pairs of tracks of different cameras whose ground-truth person is known: linked pairs that are one
    person (precision) and pairs of one person that are linked (recall)."""
    known = truth >= 0
    t, p, c = truth[known], labels[known], camera[known]
    cross = np.triu(c[:, None] != c[None, :], 1)
    same = (t[:, None] == t[None, :]) & cross
    linked = (p[:, None] == p[None, :]) & cross
    hit = (same & linked).sum()
    return {"precision": float(hit / linked.sum()) if linked.sum() else 1.0,
            "recall": float(hit / same.sum()) if same.sum() else 1.0}


def bench_site(work: Path, site: Path, run: str, sizes: BenchConfig, rules: LinkRules, log: Log
               ) -> dict[str, Any]:
    """Every camera of `site` tracked both ways, then each linker's figures."""
    doc = read_site(site)
    result: dict[str, Any] = {}
    for detector in ("ground_truth", "motion"):
        folders = []
        for cam in doc["cameras"]:
            out = work / f"{site.name}-{detector}" / cam["name"]
            extra = {"detections": str(site / cam["name"] / "gt" / "gt.txt")} if detector == "ground_truth" else {}
            cfg = build_config("track", [("bench", {"checkpoint": run, "out": str(out), "device": sizes.device,
                                                    **extra})])
            shutil.rmtree(out, ignore_errors=True)  # the bench's own folder, from an earlier run
            track_video(site / cam["name"] / "video.mp4", out, cfg)
            folders.append(str(out))
        result[detector] = score_site(site, folders, rules)
    return result


def score_site(site: Path, folders: list[str], rules: LinkRules) -> dict[str, Any]:
    """Each linker's figures on the site's cameras as `par track` followed them (`folders`, in the site's order)."""
    doc = read_site(site)
    _, records, s = read_cameras(folders, {})
    truth = np.full(len(records), -1, dtype=np.int64)
    gts = {c["name"]: _gt_boxes(site / c["name"]) for c in doc["cameras"]}
    for k, r in enumerate(records):
        r["_cam"] = int(s.camera[k])
        person = _person_of(r, gts[r["camera"]], len(doc["people"]))
        truth[k] = -1 if person is None else person
    row: dict[str, Any] = {}
    for name in LINKERS:
        labels = linker_labels(name, s, rules)
        row[name] = {**multi_camera_idf1(site, records, labels, s.cameras),
                     **link_precision_recall(truth, labels, s.camera), "people": int(labels.max()) + 1}
    row["tracks"] = len(records)
    return row


def scale_sightings(n: int, seed: int = 0, cameras: int = 8, dim: int = 512, span: float = 86_400.0) -> Sightings:
    """`n` tracks of `span` seconds at a site (default a day): n / 5 people, each seen about 5 times by `cameras`
    cameras within a minute, appearances and colours their person's plus noise, MARS-sized attributes (43 yes/no
    columns)."""
    rng = np.random.default_rng(seed)
    people = max(1, n // 5)
    person = np.sort(rng.integers(0, people, n))
    base = rng.normal(size=(people, dim)).astype(np.float32)
    appearance = base[person] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    appearance /= np.linalg.norm(appearance, axis=1, keepdims=True)
    colour = np.abs(rng.normal(size=(people, 128)))[person] + 0.3 * np.abs(rng.normal(size=(n, 128)))
    colour = (colour / np.linalg.norm(colour, axis=1, keepdims=True)).astype(np.float32)
    arrive = rng.uniform(0, span, people)
    start = arrive[person] + rng.uniform(0, 60, n)
    attrs = 43
    probs = np.clip(rng.random((people, attrs))[person] + 0.1 * rng.normal(size=(n, attrs)), 0, 1)
    return Sightings([f"cam{k}" for k in range(cameras)], rng.integers(0, cameras, n), np.arange(n), start,
                     start + rng.uniform(2, 8, n), appearance, colour, probs.astype(np.float32),
                     [[k] for k in range(attrs)], [f"a{k}" for k in range(attrs)], [["no", "yes"]] * attrs)


def bench_link(work: Path, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    run = sizes.track_checkpoint or str(work / "bench-run")
    rules = default_rules()
    per_size: dict[str, Any] = {}
    for cameras in sizes.link_cameras:
        sites = []
        for seed in range(sizes.link_seeds):
            site = work / f"site-{cameras}cam-s{seed}"
            if not site.exists():
                write_site(site, sizes.link_people, cameras, sizes.link_seconds, 10, 640, 360, seed)
            row = bench_site(work, site, run, sizes, rules, log)
            log(f"link, {cameras} cameras, seed {seed}: " + "; ".join(
                f"{d} {n} IDF1 {row[d][n]['idf1']:.3f}" for d in ("ground_truth", "motion") for n in LINKERS))
            sites.append(row)
        per_size[f"{cameras} cameras"] = {
            "per_site": sites,
            **{d: {n: {m: spread([r[d][n][m] for r in sites]) for m in ("idf1", "idp", "idr", "precision", "recall")}
                   for n in LINKERS} for d in ("ground_truth", "motion")}}
    # a day of a site: many visits apart in time, each linked on its own (`visits`); a busy hour: nobody apart
    # from everybody for a transit window, one n x n problem (the linker's worst case, its memory n^2 floats)
    scale = {}
    for name, span in (("day", 86_400.0), ("hour", 3_600.0)):
        s = scale_sightings(sizes.link_scale, span=span)
        t = time.perf_counter()
        labels, _ = link_labels(s, rules)
        seconds = time.perf_counter() - t
        log(f"link: {len(s):,} tracks of a {name} linked in {seconds:.2f} s ({int(labels.max()) + 1:,} people)")
        scale[name] = {"tracks": len(s), "seconds": seconds, "people": int(labels.max()) + 1}
    return {"checkpoint": run, "people": sizes.link_people, "seconds": sizes.link_seconds, "seeds": sizes.link_seeds,
            "rules": rules.record([]), "sites": per_size, "scale": scale}
