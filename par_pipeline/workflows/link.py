"""`par link FOLDER... --out PEOPLE`: the people of several cameras' `par track` folders (recorded or live), each
person's sightings linked across cameras (footage/linking.py decides).

A FOLDER is one camera's output (named by its folder, or NAME=FOLDER), or a folder of several (OUT/<name>/ each, as
`par track` writes several videos or cameras). Times are on one clock: a recorded video's from its first frame (plus
`--offset NAME=SECONDS` where the videos did not start together), a live run's from the moment it started.
Outputs (PEOPLE, written whole; README: formats): people.json (`par-people`), people.csv and people.txt (the
multi-camera MOT rows camera,person,frame,x,y,w,h that evaluation tools read; camera is its index from 1 in the
order of people.json's cameras) and people.html (crops per camera, a timeline, the search box of tracks.html).
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.metrics import is_positive
from ..errors import ParError
from ..footage import epoch_of
from ..footage.linking import (
    CUES,
    SIMILARITY_CUES,
    Cues,
    LinkRules,
    Sightings,
    default_rules,
    group_columns,
    link_labels,
)
from ..footage.live_folder import read_runs
from ..footage.records import answers_line, read_vector
from ..outputs import replace_dir
from ..pages.people_page import people_html
from ..reports import csv_text
from .search import read_tracks, track_files

PEOPLE_KIND = "people"
PEOPLE_FORMAT, PEOPLE_VERSION = "par-people", 1


@dataclass
class Camera:
    name: str
    folder: Path
    doc: dict[str, Any]
    origin: float  # its clock's zero on the site's clock, seconds
    live: bool


def camera_folders(given: list[str]) -> list[tuple[str, Path]]:
    """(name, folder) of each camera: NAME=FOLDER, or FOLDER named by itself, or a folder of several cameras."""
    cameras: list[tuple[str, Path]] = []
    for text in given:
        name, sep, rest = text.partition("=")
        folder = Path(rest if sep else text)
        if not folder.is_dir():
            raise ParError(f"{folder}: no such folder; give `par track` output folders")
        files = track_files(folder)
        if sep:
            if len(files) != 1 or files[0].parent != folder:
                raise ParError(f"{text}: {folder} holds several cameras; name each one's own folder")
            cameras.append((name, folder))
        else:
            cameras.extend((f.parent.name, f.parent) for f in files)
    names = [n for n, _ in cameras]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ParError(f"camera {twice[0]!r} is named twice; give one of them another name (NAME=FOLDER)")
    return cameras


def read_cameras(given: list[str], offsets: dict[str, float]) -> tuple[list[Camera], list[dict[str, Any]],
                                                                      Sightings]:
    """The cameras, every track's record (with `camera` and `t0`, `t1` on the site's clock) and the sightings."""
    named = camera_folders(given)
    unknown = sorted(set(offsets) - {n for n, _ in named})
    if unknown:
        raise ParError(f"--offset {unknown[0]}: no such camera among {[n for n, _ in named]}")
    cameras, records = [], []
    identity = None
    for name, folder in named:
        path = track_files(folder)[0]
        doc = read_tracks(path)
        live = path.suffix == ".jsonl" or "live" in doc
        sha = doc.get("checkpoint_sha256")
        if path.suffix == ".jsonl":  # a run under way: its start line names the checkpoint
            sha = next((r.get("checkpoint_sha256") for r in read_runs(folder)), None)
        if sha is None:
            raise ParError(f"{path}: written by a par that did not record its checkpoint's sha256; run `par track` "
                           f"on it again to link it")
        if identity is None:
            identity = (sha, doc["attributes"], doc["groups"])
        elif identity != (sha, doc["attributes"], doc["groups"]):
            raise ParError(f"{path}: tracked with another checkpoint than {cameras[0].folder} (their probabilities "
                           f"are not comparable); track every camera with the same checkpoint")
        cam = Camera(name, folder, {**doc, "checkpoint_sha256": sha}, offsets.get(name, 0.0), live)
        runs = {r["run"]: epoch_of(r["started_at"]) for r in read_runs(folder) if r.get("started_at")} if live else {}
        for r in doc["tracks"]:
            if "appearance" not in r or "colour" not in r:
                raise ParError(f"{path}: track {r['id']} has no appearance (written by an older par); run `par "
                               f"track` on it again to link it")
            if live:
                base = runs.get(r.get("run"), 0.0) + cam.origin
                t0, t1 = base + r["first_time"], base + r["last_time"]
            else:
                t0, t1 = (cam.origin + (r["first_frame"] - 1) / doc["fps"],
                          cam.origin + (r["last_frame"] - 1) / doc["fps"])
            records.append({**r, "camera": name, "t0": t0, "t1": t1})
        cameras.append(cam)
    if len({c.live for c in cameras}) > 1:
        raise ParError("live and recorded folders have no common clock; link each kind on its own")
    zero = min((r["t0"] for r in records), default=0.0) if cameras and cameras[0].live else 0.0
    for r in records:
        r["t0"], r["t1"] = round(r["t0"] - zero, 3), round(r["t1"] - zero, 3)
    columns, values = group_columns(identity[2], identity[1]) if identity else ([], [])
    index = {c.name: k for k, c in enumerate(cameras)}
    def vectors(key: str) -> np.ndarray:
        return np.stack([read_vector(r[key]) for r in records]) if records else np.zeros((0, 1), np.float32)

    sightings = Sightings(
        [c.name for c in cameras], np.array([index[r["camera"]] for r in records], dtype=np.int64),
        np.array([r["id"] for r in records], dtype=np.int64), np.array([r["t0"] for r in records], dtype=np.float64),
        np.array([r["t1"] for r in records], dtype=np.float64), vectors("appearance"), vectors("colour"),
        np.array([[r["probabilities"][a] for a in identity[1]] for r in records], dtype=np.float32)
        if records else np.zeros((0, 0), np.float32),
        columns, list(identity[2]) if identity else [], values)
    return cameras, records, sightings


def read_transit(path: Path, cameras: list[str]) -> dict[tuple[int, int], tuple[float, float]]:
    """A transit table: CSV with columns from,to,min,max (seconds); a pair holds both ways unless the other way is
    a row of its own."""
    try:
        rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    except OSError as exc:
        raise ParError(f"{path}: cannot read the transit table ({exc.strerror})") from None
    if not rows or set(rows[0]) != {"from", "to", "min", "max"}:
        raise ParError(f"{path}: a transit table has the columns from,to,min,max (seconds)")
    table: dict[tuple[int, int], tuple[float, float]] = {}
    given = set()
    for k, row in enumerate(rows, start=2):
        for end in ("from", "to"):
            if row[end] not in cameras:
                raise ParError(f"{path}:{k}: camera {row[end]!r} is not one of the cameras linked ({cameras})")
        try:
            lo, hi = float(row["min"]), float(row["max"])
        except ValueError:
            raise ParError(f"{path}:{k}: min and max are seconds") from None
        if not 0 <= lo <= hi:
            raise ParError(f"{path}:{k}: needs 0 <= min <= max")
        a, b = cameras.index(row["from"]), cameras.index(row["to"])
        if a == b:
            raise ParError(f"{path}:{k}: a transit row joins two cameras; one camera's gap is --same-camera-gap")
        table[(a, b)] = (lo, hi)
        given.add((a, b))
        if (b, a) not in given:
            table[(b, a)] = (lo, hi)
    return table


def parse_offsets(texts: list[str]) -> dict[str, float]:
    offsets = {}
    for text in texts:
        name, sep, value = text.partition("=")
        try:
            offsets[name] = float(value) if sep and name else float("nan")
        except ValueError:
            offsets[name] = float("nan")
        if offsets[name] != offsets[name]:
            raise ParError(f"--offset {text!r}: give NAME=SECONDS, e.g. hall=12.5")
    return offsets


def parse_weights(text: str | None) -> dict[str, float] | None:
    """`appearance=1,colour=1,attributes=2` -> each similarity cue's weight (a cue not named weighs 0)."""
    if text is None:
        return None
    weights = dict.fromkeys(SIMILARITY_CUES, 0.0)
    try:
        for item in filter(None, (x.strip() for x in text.split(","))):
            cue, value = (v.strip() for v in item.split("="))
            if cue not in weights or float(value) < 0:
                raise ValueError(cue)
            weights[cue] = float(value)
    except ValueError:
        raise ParError(f"--weights {text!r}: CUE=WEIGHT pairs, comma-separated, with CUE one of "
                       f"{', '.join(SIMILARITY_CUES)} and WEIGHT >= 0 (e.g. appearance=1,colour=1,attributes=2)")
    if not sum(weights.values()) > 0:
        raise ParError(f"--weights {text!r}: at least one cue needs a weight above 0")
    return weights


def link_rules(threshold: float | None, max_gap: float | None, cues: str, transit: Path | None,
               cameras: list[str], weights: str | None = None, same_camera_gap: float | None = None) -> LinkRules:
    used = tuple(c.strip() for c in cues.split(",") if c.strip())
    wrong = [c for c in used if c not in CUES]
    if wrong or not set(used) & set(SIMILARITY_CUES):
        raise ParError(f"--cues {cues!r}: a comma-separated list of {', '.join(CUES)} with at least one of "
                       f"{', '.join(SIMILARITY_CUES)}")
    table = read_transit(transit, cameras) if transit else {}
    return default_rules(threshold=threshold, max_gap=max_gap, cues=used, transit=table,
                         weights=parse_weights(weights), same_camera_gap=same_camera_gap)


def _answers(probs: np.ndarray, s: Sightings, threshold: float) -> dict[str, str]:
    out = {}
    for name, cols, values in zip(s.group_names, s.groups, s.value_names):
        if len(cols) == 1:
            out[name] = values[int(bool(is_positive(float(probs[cols[0]]), threshold)))]
        else:
            out[name] = values[int(np.argmax(probs[cols]))]
    return out


def people_doc(cameras: list[Camera], records: list[dict[str, Any]], s: Sightings, labels: np.ndarray,
               cues: Cues, rules: LinkRules, threshold: float) -> dict[str, Any]:
    """people.json: each person's sightings in time order, fused attributes and the links that joined them."""
    attributes = cameras[0].doc["attributes"] if cameras else []
    people = []
    for person in range(int(labels.max()) + 1 if len(labels) else 0):
        rows = np.flatnonzero(labels == person)
        rows = rows[np.lexsort((s.camera[rows], s.start[rows]))]
        frames = np.array([records[k]["frames"] for k in rows], dtype=np.float64)
        fused = (s.probs[rows] * frames[:, None]).sum(0) / frames.sum()
        sightings = [{"camera": records[k]["camera"], "track": int(records[k]["id"]),
                      **({"run": records[k]["run"]} if "run" in records[k] else {}),
                      "first_time": records[k]["t0"], "last_time": records[k]["t1"],
                      "first_frame": records[k]["first_frame"], "last_frame": records[k]["last_frame"],
                      "frames": records[k]["frames"]} for k in rows]
        links = []
        for a, b in zip(rows[:-1], rows[1:]):
            da, db = records[a]["description"], records[b]["description"]
            links.append({"from": {"camera": records[a]["camera"], "track": int(records[a]["id"])},
                          "to": {"camera": records[b]["camera"], "track": int(records[b]["id"])},
                          **{k: round(v, 4) for k, v in cues.pair(rules, a, b).items()},
                          "agreed": [g for g in s.group_names if da.get(g) == db.get(g)],
                          "differed": [g for g in s.group_names if da.get(g) != db.get(g)]})
        description = _answers(fused, s, threshold)
        yes_no = [g for g, values in zip(s.group_names, s.value_names) if values == ["no", "yes"]]
        people.append({"person": person + 1, "cameras": list(dict.fromkeys(x["camera"] for x in sightings)),
                       "first_time": sightings[0]["first_time"], "last_time": max(x["last_time"] for x in sightings),
                       "description": description, "line": answers_line(description, yes_no),
                       "probabilities": {a: round(float(p), 4) for a, p in zip(attributes, fused)},
                       "sightings": sightings, "links": links})
    return {"format": PEOPLE_FORMAT, "version": PEOPLE_VERSION,
            "cameras": [{"name": c.name, "folder": str(c.folder), "offset_s": c.origin, "live": c.live,
                         "tracks": int((s.camera == k).sum())} for k, c in enumerate(cameras)],
            "checkpoint": cameras[0].doc.get("checkpoint") if cameras else None,
            "checkpoint_sha256": cameras[0].doc["checkpoint_sha256"] if cameras else None,
            "clock": "seconds from the first sighting (live) or from the videos' first frames (recorded)",
            "linker": rules.record(s.cameras), "attributes": attributes, "groups": s.group_names,
            "people": people}


def people_csv(doc: dict[str, Any]) -> str:
    groups = doc["groups"]
    rows = [[p["person"], " ".join(p["cameras"]), len(p["sightings"]), p["first_time"], p["last_time"],
             " ".join(f"{x['camera']}:{x['track']}" for x in p["sightings"]), *(p["description"][g] for g in groups)]
            for p in doc["people"]]
    return csv_text(["person", "cameras", "sightings", "first_time", "last_time", "tracks", *groups], rows)


def people_mot(doc: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """camera,person,frame,x,y,w,h for every box of every sighting (camera: its index from 1 in doc's cameras)."""
    index = {c["name"]: k + 1 for k, c in enumerate(doc["cameras"])}
    by_track = {(r["camera"], r["id"], r.get("run")): r for r in records}
    rows = []
    for p in doc["people"]:
        for x in p["sightings"]:
            r = by_track[(x["camera"], x["track"], x.get("run"))]
            rows.extend((index[x["camera"]], p["person"], int(b[0]), b[1], b[2], b[3], b[4]) for b in r["boxes"])
    rows.sort()
    return "".join(f"{c},{p},{f},{x:.2f},{y:.2f},{w:.2f},{h:.2f}\n" for c, p, f, x, y, w, h in rows)


def link_folders(given: list[str], out: Path | None, threshold: float | None = None, max_gap: float | None = None,
                 cues: str = ",".join(CUES), transit: Path | None = None, offsets: dict[str, float] | None = None,
                 weights: str | None = None, same_camera_gap: float | None = None) -> tuple[dict[str, Any], float]:
    """Link the folders' tracks into people and write PEOPLE (when `out`); returns people.json and the seconds the
    linking itself took."""
    if out is not None:
        from ..outputs import check_dir_target

        check_dir_target(Path(out), PEOPLE_KIND)  # before anything is read
    cameras, records, s = read_cameras(given, offsets or {})
    rules = link_rules(threshold, max_gap, cues, transit, s.cameras, weights, same_camera_gap)
    t = time.perf_counter()
    labels, cues = link_labels(s, rules)
    seconds = time.perf_counter() - t
    doc = people_doc(cameras, records, s, labels, cues, rules, cameras[0].doc.get("threshold", 0.5))
    if out is not None:
        def build(folder: Path) -> None:
            (folder / "people.json").write_text(json.dumps(doc, indent=1) + "\n")
            (folder / "people.csv").write_text(people_csv(doc))
            (folder / "people.txt").write_text(people_mot(doc, records))
            (folder / "people.html").write_text(people_html(doc, {c.name: c.folder for c in cameras}))

        replace_dir(Path(out), PEOPLE_KIND, build)
    return doc, seconds
