"""`make track-bench` (`par bench --part track`): `par track` on synthetic footage with ground truth.

- tracking: MOTA, IDF1 and ID switches (the `trackers` package's TrackEval-parity evaluation) with the motion
  detector and with the ground-truth boxes as detections, per scene seed;
- attributes: F1 over the tracked people (the paper's protocol, each track scored against the person it follows
  most) the tracklet way (`par track`: the mean of T frames' tokens through the fusion model) against the same
  model on each of those T frames alone with the answers voted per group (the per-frame way of frame-level
  tools), mean and std over seeds;
- throughput: video frames/s end to end and each stage's share of the time;
- memory: the peak resident memory of a `par track` process on a short and a 10x longer video.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import BenchConfig, build_config
from ..data.layouts import read_attribute_csv
from ..data.schema import schema_from_dict
from ..deploy.runtime import load_runtime
from ..engine.metrics import evaluate_predictions, group_answers
from ..footage.records import crop_box, track_probabilities
from ..model.checkpoint import load_checkpoint
from ..reports import spread
from ..workflows.track import track_video
from .scenes import write_scene

Log = Callable[[str], None]


def _mot(gt: Path, result: Path) -> dict[str, float]:
    from trackers.eval import evaluate_mot_sequence

    r = evaluate_mot_sequence(str(gt), str(result), metrics=["CLEAR", "Identity"])
    return {"mota": float(r.CLEAR.MOTA), "idf1": float(r.Identity.IDF1), "id_switches": int(r.CLEAR.IDSW)}


def _labels(scene: Path, schema: Any) -> dict[int, np.ndarray]:
    """Person id -> labels, from the scene's labels.csv (camera and tracklet are 1 for everyone)."""
    return {pid: labels for (pid, _, _), (labels, _) in read_attribute_csv(scene / "labels.csv", schema).items()}


def _gt_boxes(scene: Path) -> dict[tuple[int, int], tuple[float, float, float, float]]:
    out = {}
    for line in (scene / "gt" / "gt.txt").read_text().splitlines():
        f, i, x, y, w, h = (float(v) for v in line.split(",")[:6])
        out[(int(f), int(i))] = (x, y, x + w, y + h)
    return out


def _person_of(track: dict[str, Any], gt: dict[tuple[int, int], tuple[float, ...]], people: int) -> int | None:
    """The ground-truth person a track follows in most of its frames (IoU >= 0.5), if any."""
    from trackers.eval import box_iou

    votes: dict[int, int] = {}
    for f, x, y, w, h, _ in track["boxes"]:
        here = [pid for pid in range(1, people + 1) if (int(f), pid) in gt]
        if not here:
            continue
        ious = box_iou(np.array([[x, y, x + w, y + h]]), np.array([gt[(int(f), pid)] for pid in here]))[0]
        if ious.max() >= 0.5:
            best = here[int(ious.argmax())]
            votes[best] = votes.get(best, 0) + 1
    return max(votes, key=votes.get) if votes else None


def _per_frame_votes(doc: dict[str, Any], scene: Path, run: str, schema: Any, threshold: float,
                     device: str) -> np.ndarray:
    """The per-frame way: each track's chosen frames through the model one at a time, answers voted per group;
    returned as 0/1 'probabilities' in attribute order (a vote is the answer, so the threshold rule keeps it)."""
    from ..data.preprocess import prepare_image
    from ..data.video import FrameSource

    rt = load_runtime(run, "torch", None, device)
    wanted: dict[int, list[tuple[int, list[float]]]] = {}
    for k, t in enumerate(doc["tracks"]):
        boxes = {int(b[0]): b for b in t["boxes"]}
        for f in t["frames_used"]:
            wanted.setdefault(f - 1, []).append((k, boxes[f]))
    answers: dict[int, list[list[int]]] = {k: [] for k in range(len(doc["tracks"]))}
    for index, rgb in FrameSource(scene / "video.mp4"):
        for k, (_, x, y, w, h, _) in wanted.get(index, []):
            image = torch.from_numpy(prepare_image(crop_box(rgb, (x, y, x + w, y + h)), rt.preprocess))[None]
            probs = track_probabilities(rt, rt.tokens(image))  # one frame: a track of one
            answers[k].append([a for a, _ in group_answers(probs, schema.groups, threshold)])
    voted = np.zeros((len(doc["tracks"]), schema.num_attributes), dtype=np.float32)
    for k, rows in answers.items():
        for g, column in zip(schema.groups, np.array(rows).T):
            winner = int(np.bincount(column, minlength=g.num_values).argmax())
            voted[k, g.start + (0 if g.is_binary else winner)] = float(winner) if g.is_binary else 1.0
    return voted


def bench_track(work: Path, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    run = sizes.track_checkpoint or str(work / "bench-run")
    _, meta = load_checkpoint(run)
    schema = schema_from_dict(meta["schema_definition"])
    threshold = meta["threshold"]
    per_seed, stage_seconds, frames_total, wall_total = [], {}, 0, 0.0
    for seed in range(sizes.track_seeds):
        scene = work / f"scene-s{seed}"
        if not scene.exists():
            write_scene(scene, sizes.track_people, sizes.track_seconds, 10, 640, 360, seed)
        row: dict[str, Any] = {"seed": seed}
        for name, extra in (("motion", {}), ("ground_truth", {"detections": str(scene / "gt" / "gt.txt")})):
            cfg = build_config("track", [("bench", {"checkpoint": run, "out": str(work / f"tracks-{name}-s{seed}"),
                                                    "device": sizes.device, **extra})])
            out = Path(cfg.out)
            shutil.rmtree(out, ignore_errors=True)  # the bench's own folder, from an earlier run
            t = time.perf_counter()
            doc, seconds = track_video(scene / "video.mp4", out, cfg)
            wall = time.perf_counter() - t
            row[name] = _mot(scene / "gt" / "gt.txt", out / "tracks.txt")
            if name == "motion":
                frames_total += doc["frames_read"]
                wall_total += wall
                for k, v in seconds.items():
                    stage_seconds[k] = stage_seconds.get(k, 0.0) + v
            else:  # attributes on the ground-truth tracks, so tracking errors do not enter the comparison
                labels, gt = _labels(scene, schema), _gt_boxes(scene)
                people = [_person_of(t, gt, sizes.track_people) for t in doc["tracks"]]
                keep = [k for k, p in enumerate(people) if p is not None]
                y = np.stack([labels[people[k]] for k in keep])
                tracklet = np.array([[doc["tracks"][k]["probabilities"][a] for a in schema.attributes] for k in keep])
                voted = _per_frame_votes(doc, scene, run, schema, threshold, sizes.device)[keep]

                def f1(probs: np.ndarray) -> float:
                    m = evaluate_predictions(probs, y, meta["group_boundaries"], meta["groups"], threshold)
                    return m["protocol"]["mean"]["f1"]
                row["attributes"] = {"people": len(keep), "tracklet_f1": f1(tracklet), "per_frame_vote_f1": f1(voted)}
        log(f"track seed {seed}: {row}")
        per_seed.append(row)

    summary = {
        "checkpoint": run, "people": sizes.track_people, "seconds": sizes.track_seconds, "seeds": sizes.track_seeds,
        "per_seed": per_seed,
        **{f"{d}_{m}": spread([r[d][m] for r in per_seed]) for d in ("motion", "ground_truth")
           for m in ("mota", "idf1", "id_switches")},
        "tracklet_f1": spread([r["attributes"]["tracklet_f1"] for r in per_seed]),
        "per_frame_vote_f1": spread([r["attributes"]["per_frame_vote_f1"] for r in per_seed]),
        "frames_per_s": frames_total / wall_total if wall_total else None,
        "stage_share": {k: v / sum(stage_seconds.values()) for k, v in stage_seconds.items()},
        "peak_memory_mb": _peak_memory(work, run, sizes, log),
    }
    summary["live"] = bench_live(work, run, sizes, summary["frames_per_s"], log)
    return summary


def _own_peak_kib(proc: subprocess.Popen) -> int:
    """The child's own peak resident set (VmHWM, KiB), read while it runs until it exits. Not wait4's ru_maxrss:
    on Linux a child's ru_maxrss starts from its parent's resident set at the fork, so a large bench process made
    every child look as large as itself."""
    peak = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            peak = max(peak, int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))))
        except (OSError, StopIteration, ValueError):  # exiting: the last reading stands
            pass
        time.sleep(0.1)
    return peak


def _peak_memory(work: Path, run: str, sizes: BenchConfig, log: Log, live_speed: float | None = None
                 ) -> dict[str, float]:
    """Peak RSS (MB) of `par track` (motion detector) on a video of `track_minutes[0]` and of `track_minutes[1]`
    minutes (320 x 180 at 5 fps); with `live_speed`, played live at that many times its rate."""
    peaks = {}
    for minutes in sizes.track_minutes:
        scene = work / f"memory-{minutes:g}min"
        if not scene.exists():
            write_scene(scene, max(2, int(sizes.track_people * minutes)), minutes * 60, 5, 320, 180, 11)
        out = work / f"{'live' if live_speed else 'tracks'}-memory-{minutes:g}min"
        shutil.rmtree(out, ignore_errors=True)
        # the package's root goes first, the caller's PYTHONPATH stays (a lent GPU machine's wheels live there);
        # stderr goes to a file, since a pipe read only after the wait could fill and stall the child
        path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([sys.executable, "-m", "cli.main", "track", str(scene / "video.mp4"),
                                     "--checkpoint", run, "--out", str(out), "--device", sizes.device,
                                     *(["--live", "--speed", f"{live_speed:.3f}"] if live_speed else [])],
                                    stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONPATH": path})
            peak = _own_peak_kib(proc)
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"par track on {scene} failed: {err.read().decode()[-500:]}")
        peaks[f"{minutes:g} min"] = peak / 1024
        log(f"track{' --live' if live_speed else ''} memory, {minutes:g} min of video: "
            f"{peaks[f'{minutes:g} min']:.0f} MB peak")
    return peaks


def file_live_agreement(file_doc: dict[str, Any], live_doc: dict[str, Any]) -> dict[str, Any]:
    """The people of a file's run and of a live run of the same footage, matched by id (the same detector and
    tracker on the same frames give the same ids): the share of group answers that agree, of tracks whose
    attributes came from the same frames, and of tracks that agree in every group."""
    live = {t["id"]: t for t in live_doc["tracks"]}
    both = [(t, live[t["id"]]) for t in file_doc["tracks"] if t["id"] in live]
    groups = file_doc["groups"]
    same = [sum(a["description"][g] == b["description"][g] for g in groups) for a, b in both]
    n = max(1, len(both))
    return {"tracks_compared": len(both), "dropped": live_doc["live"]["dropped"],
            "group_agreement": sum(same) / max(1, len(both) * len(groups)),
            "same_frames": sum(a["frames_used"] == b["frames_used"] for a, b in both) / n,
            "tracks_equal": sum(k == len(groups) for k in same) / n}


def bench_live(work: Path, run: str, sizes: BenchConfig, keep_up_fps: float, log: Log) -> dict[str, Any]:
    """`par track --live` on scene 0 (640 x 360 at 10 fps): the delay from a person's last frame to their record
    at the stream's own rate; frames dropped when the stream runs at 1x, 2x and 4x what this machine keeps up with
    (`keep_up_fps`: the file-mode rate of the same scenes); how many cameras at 10 fps one process follows without
    dropping; peak memory of a live run over the short and the long memory video, played as fast as it keeps up."""
    from ..workflows.live import track_live

    scene = work / "scene-s0" / "video.mp4"

    def live_docs(name: str, sources: list[str], speed: float) -> list[dict[str, Any]]:
        cfg = build_config("track", [("bench", {"checkpoint": run, "out": str(work / f"live-{name}"), "live": True,
                                                "speed": speed, "device": sizes.device})])
        shutil.rmtree(cfg.out, ignore_errors=True)  # the bench's own folder, from an earlier run
        return track_live(sources, cfg)

    def live(name: str, sources: list[str], speed: float) -> list[dict[str, Any]]:
        return [d["live"] for d in live_docs(name, sources, speed)]

    [at_rate] = live("1x", [str(scene)], 1.0)
    result: dict[str, Any] = {"delay_s": at_rate["delay_s"], "processing_s": at_rate["processing_s"],
                              "keep_up_fps": keep_up_fps, "dropped": {}}
    log(f"live at the stream's rate: delay {at_rate['delay_s']}")
    keep_up: dict[int, dict[str, Any]] = {}
    for k in (1, 2, 4):
        [keep_up[k]] = live_docs(f"{k}x-keep-up", [str(scene)], k * keep_up_fps / 10)
        d = keep_up[k]["live"]
        result["dropped"][f"{k}x"] = d["dropped"] / d["frames_read"]
        log(f"live at {k}x what this machine keeps up with: {100 * result['dropped'][f'{k}x']:.1f}% dropped")
    # live and file mode on the same footage: the same people named the same way? (every scene, played as fast as
    # this machine keeps up with, so that no frame is dropped and both runs see the same frames; scene 0's run is
    # the 1x one above)
    pairs = []
    for seed in range(sizes.track_seeds):
        [doc] = [keep_up[1]] if seed == 0 else live_docs(
            f"agreement-s{seed}", [str(work / f"scene-s{seed}" / "video.mp4")], keep_up_fps / 10)
        pairs.append(file_live_agreement(
            json.loads((work / f"tracks-motion-s{seed}" / "tracks.json").read_text()), doc))
    agreement = {k: spread([p[k] for p in pairs]) for k in ("group_agreement", "same_frames", "tracks_equal")}
    agreement["tracks_compared"] = sum(p["tracks_compared"] for p in pairs)
    agreement["dropped"] = sum(p["dropped"] for p in pairs)
    result["file_agreement"] = agreement
    log(f"live vs file, the same footage: {agreement}")
    cameras = 0
    for n in sizes.track_cameras:  # one camera at 10 fps is the 1x run above
        docs = [at_rate] if n == 1 else live(f"cameras-{n}", [f"cam{i}={scene}" for i in range(n)], 1.0)
        if any(d["dropped"] for d in docs):
            break
        cameras = n
    result["cameras_without_dropping"] = cameras
    log(f"live: {cameras} camera(s) at 10 fps followed without dropping")
    result["peak_memory_mb"] = _peak_memory(work, run, sizes, log, live_speed=keep_up_fps / 5)
    return result
