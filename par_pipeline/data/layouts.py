"""Dataset layouts on disk (MARS, DukeMTMC-VID) -> manifests, with the annotation CSV joined.

MARS:  bbox_{train,test}/<pid>/<pid>C<c>T<tttt>F<fff>.jpg, CSV keyed by (person, camera, tracklet).
Duke:  {train,gallery,query}/<pid>/<tracklet>/<pid>_C<c>_F<frame>_X<n>.jpg; the CSV's tracklet ids
       number the train tracklets first, then the gallery ones, each in (pid, folder) order.
"""
from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import ParError
from .manifest import Manifest, TrackletRecord
from .schema import AttributeSchema

MARS_TRACKLET = re.compile(r"(\d{4})C(\d)T(\d{4})")
MARS_FRAME = re.compile(r"^(\d{4})C(\d)T(\d{4})F(\d{3,})\.jpg$")
DUKE_FRAME = re.compile(r"^(\d{4})_C(\d+)_F(\d+)_X(\d+)\.jpg$")
MARS_SPLITS = {"train": "bbox_train", "test": "bbox_test"}
DUKE_SPLITS = {"train": ("train",), "test": ("gallery", "query")}
MARS_CSV, DUKE_CSV = "mars_attributes.csv", "duke_attributes.csv"


@dataclass
class LayoutSummary:
    """What a walk found, for the rich summary and the tests."""
    tracklets: dict[str, int] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    labelled_without_frames: list[str] = field(default_factory=list)
    unlabelled_tracklets: list[str] = field(default_factory=list)
    empty_tracklets: list[str] = field(default_factory=list)


def mars_tracklet_name(pid: int, cam: int, trk: int) -> str:
    return f"{pid:04d}C{cam}T{trk:04d}"


def mars_frame_path(split: str, pid: int, cam: int, trk: int, index: int) -> str:
    """Relative path of frame `index` (0-based) of a MARS tracklet."""
    return f"{MARS_SPLITS[split]}/{pid:04d}/{mars_tracklet_name(pid, cam, trk)}F{index + 1:03d}.jpg"


def duke_frame_path(split: str, pid: int, cam: int, trk: int, index: int) -> str:
    """Relative path of frame `index` (0-based) of Duke tracklet `trk` (folder `<trk:04d>`) under train/ or gallery/."""
    folder = DUKE_SPLITS[split][0]
    return f"{folder}/{pid:04d}/{trk:04d}/{pid:04d}_C{cam}_F{index + 1:04d}_X{index + 1:05d}.jpg"


def mars_tracklet_frames(root: Path, tracklet: str) -> list[Path]:
    """The frames of one MARS tracklet id ('0001C1T0001') under bbox_train/ or bbox_test/, in order."""
    m = MARS_TRACKLET.fullmatch(tracklet)
    if not m:
        raise ParError(f"--tracklet {tracklet}: MARS tracklet ids look like 0001C1T0001")
    frames = sorted(
        p for folder in MARS_SPLITS.values() for p in (Path(root) / folder / m.group(1)).glob(f"{tracklet}F*.jpg")
    )
    if not frames:
        raise ParError(f"{root}: no frames of tracklet {tracklet} under bbox_train/ or bbox_test/")
    return frames


def read_attribute_csv(
    path: Path, schema: AttributeSchema
) -> dict[tuple[int, int, int], tuple[np.ndarray, dict[str, str]]]:
    """(person, camera, tracklet) -> (labels, row); fails on missing columns, bad values, duplicates."""
    if not path.is_file():
        raise ParError(f"{path}: attribute CSV not found; pass it with --attributes FILE")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        schema.check_columns(reader.fieldnames or [], str(path))
        ids = schema.id_columns
        out: dict[tuple[int, int, int], tuple[np.ndarray, dict[str, str]]] = {}
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            try:
                key = (int(row[ids["person_id"]]), int(row[ids["camera_id"]]), int(row[ids["tracklet_no"]]))
            except (TypeError, ValueError):
                raise ParError(f"{where}: id columns {list(ids.values())} must be integers; fix the row") from None
            if key in out:
                raise ParError(
                    f"{where}: duplicate tracklet row person {key[0]} camera {key[1]} tracklet {key[2]}; remove one"
                )
            out[key] = (schema.encode_row(row, where), row)
    return out


def find_csv(root: Path, name: str, given: Path | None) -> Path:
    if given is not None:
        return given
    for candidate in (root / name, *sorted(root.glob(f"*/{name}"))):
        if candidate.is_file():
            return candidate
    raise ParError(f"{root}: no {name} found in the dataset root; pass the annotation with --attributes FILE")


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise ParError(f"{path}: {what} folder not found; check the dataset root")


def scan_mars(root: Path) -> dict[str, dict[tuple[int, int, int], list[str]]]:
    """split -> (pid, cam, trk) -> frame paths relative to root, in frame order."""
    _require_dir(root, "dataset root")
    found: dict[str, dict[tuple[int, int, int], list[str]]] = {}
    for split, folder in MARS_SPLITS.items():
        base = root / folder
        _require_dir(base, f"MARS {folder}")
        tracks: dict[tuple[int, int, int], list[tuple[int, str]]] = defaultdict(list)
        for pid_dir in sorted(os.scandir(base), key=lambda e: e.name):
            if not pid_dir.is_dir():
                continue
            for entry in os.scandir(pid_dir.path):
                m = MARS_FRAME.match(entry.name)
                if m:
                    pid, cam, trk, frame = map(int, m.groups())
                    tracks[(pid, cam, trk)].append((frame, f"{folder}/{pid_dir.name}/{entry.name}"))
        found[split] = {k: [p for _, p in sorted(v)] for k, v in sorted(tracks.items())}
    return found


def build_mars_manifest(
    root: Path, schema: AttributeSchema, attributes: Path | None = None
) -> tuple[Manifest, LayoutSummary]:
    root = Path(root)
    scanned = scan_mars(root)
    labels = read_attribute_csv(find_csv(root, MARS_CSV, attributes), schema)
    summary = LayoutSummary()
    records: list[TrackletRecord] = []
    seen: set[tuple[int, int, int]] = set()
    for split, tracks in scanned.items():
        for key, frames in tracks.items():
            name = mars_tracklet_name(*key)
            if key not in labels:
                summary.unlabelled_tracklets.append(name)
                continue
            seen.add(key)
            records.append(TrackletRecord(name, split, key[0], key[1], key[2], frames, labels[key][0].tolist()))
        summary.tracklets[split] = sum(r.split == split for r in records)
        summary.frames[split] = sum(len(r.frames) for r in records if r.split == split)
    summary.labelled_without_frames = [mars_tracklet_name(*k) for k in sorted(labels) if k not in seen]
    return Manifest(schema, str(root.resolve()), records, layout="mars"), summary


def scan_duke(root: Path) -> dict[str, list[tuple[int, str, list[str]]]]:
    """split -> [(pid, tracklet folder, frame paths)] in (pid, folder) order; query folded into gallery."""
    _require_dir(root, "dataset root")
    found: dict[str, list[tuple[int, str, list[str]]]] = {}
    for split, folders in DUKE_SPLITS.items():
        tracks: dict[tuple[int, str], list[str]] = {}
        for folder in folders:
            base = root / folder
            if folder == "query" and not base.is_dir():
                continue
            _require_dir(base, f"Duke {folder}")
            for pid_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                for trk_dir in sorted(p for p in pid_dir.iterdir() if p.is_dir()):
                    key = (int(pid_dir.name), trk_dir.name)
                    if key in tracks:  # a query tracklet repeats its gallery copy: count it once
                        continue
                    frames = sorted(
                        (int(m.group(3)), f"{folder}/{pid_dir.name}/{trk_dir.name}/{e.name}")
                        for e in os.scandir(trk_dir) if (m := DUKE_FRAME.match(e.name))
                    )
                    tracks[key] = [p for _, p in frames]
        found[split] = [(pid, trk, frames) for (pid, trk), frames in sorted(tracks.items())]
    return found


def build_duke_manifest(
    root: Path, schema: AttributeSchema, attributes: Path | None = None
) -> tuple[Manifest, LayoutSummary]:
    root = Path(root)
    scanned = scan_duke(root)
    csv_path = find_csv(root, DUKE_CSV, attributes)
    by_tracklet = {k[2]: (k, v) for k, v in read_attribute_csv(csv_path, schema).items()}
    summary = LayoutSummary()
    records: list[TrackletRecord] = []
    number = 0
    for split in ("train", "test"):
        for pid, folder, frames in scanned[split]:
            number += 1
            name = f"{pid:04d}_{folder}"
            if not frames:
                summary.empty_tracklets.append(name)
                continue
            if number not in by_tracklet:
                summary.unlabelled_tracklets.append(name)
                continue
            (csv_pid, csv_cam, _), (labels, _) = by_tracklet.pop(number)
            cam = int(DUKE_FRAME.match(Path(frames[0]).name).group(2))
            if (csv_pid, csv_cam) != (pid, cam):
                raise ParError(
                    f"{csv_path}: tracklet {number} is person {csv_pid} camera {csv_cam} but folder {folder} of "
                    f"person {pid} (camera {cam}) takes that place; the dataset root does not have the "
                    f"DukeMTMC-VideoReID layout"
                )
            records.append(TrackletRecord(name, split, pid, cam, number, frames, labels.tolist()))
        summary.tracklets[split] = sum(r.split == split for r in records)
        summary.frames[split] = sum(len(r.frames) for r in records if r.split == split)
    summary.labelled_without_frames = [f"{k[0]:04d}_tracklet{n}" for n, (k, _) in sorted(by_tracklet.items())]
    return Manifest(schema, str(root.resolve()), records, layout="duke"), summary


@dataclass(frozen=True)
class DatasetLayout:
    """One dataset layout on disk: everything par knows of it (the manifest commands, `par synth`), so adding a
    dataset is adding one record to `LAYOUTS`."""
    name: str
    title: str
    split_folders: dict[str, tuple[str, ...]]  # split -> its folders; `par synth` writes into the first
    attribute_csv: str
    build_manifest: Callable[[Path, AttributeSchema, Path | None], tuple[Manifest, LayoutSummary]]
    frame_path: Callable[[str, int, int, int, int], str]  # (split, person, camera, tracklet, frame index) -> path
    global_tracklet_numbers: bool  # tracklets numbered across the dataset (Duke), not per person and camera (MARS)

    @property
    def folders(self) -> str:
        return ", ".join(f"{f}/" for folders in self.split_folders.values() for f in folders)


LAYOUTS = {layout.name: layout for layout in (
    DatasetLayout("mars", "MARS", {k: (v,) for k, v in MARS_SPLITS.items()}, MARS_CSV,
                  build_mars_manifest, mars_frame_path, global_tracklet_numbers=False),
    DatasetLayout("duke", "DukeMTMC-VideoReID", DUKE_SPLITS, DUKE_CSV, build_duke_manifest,
                  duke_frame_path, global_tracklet_numbers=True),
)}


def layout_named(name: str, option: str = "--layout") -> DatasetLayout:
    if name not in LAYOUTS:
        raise ParError(f"{option} must be one of {list(LAYOUTS)}, not '{name}'")
    return LAYOUTS[name]


def read_mars_info(info_dir: Path) -> dict[str, np.ndarray]:
    """split -> rows (start, end, pid, cam) of MARS's tracks_{split}_info.mat."""
    from scipy.io import loadmat

    out = {}
    for split in ("train", "test"):
        path = Path(info_dir) / f"tracks_{split}_info.mat"
        if not path.is_file():
            raise ParError(
                f"{path}: MARS info file not found; point --like-mars at the folder holding mars_attributes.csv "
                f"and info/"
            )
        out[split] = np.asarray(loadmat(str(path))[f"track_{split}_info"], dtype=np.int64)
    return out


def mars_frame_counts(
    info: dict[str, np.ndarray], keys: Iterable[tuple[int, int, int]]
) -> dict[tuple[int, int, int], tuple[str, int]]:
    """(pid, cam, trk) -> (split, frame count) for labelled tracklets, from the info files.

    Within one (pid, cam) the info rows follow increasing tracklet number, so the k-th row is the
    k-th smallest tracklet id of that (pid, cam) in the CSV.
    """
    by_pair: dict[tuple[int, int], list[int]] = defaultdict(list)
    for pid, cam, trk in keys:
        by_pair[(pid, cam)].append(trk)
    out: dict[tuple[int, int, int], tuple[str, int]] = {}
    for split, rows in info.items():
        pair_rows: dict[tuple[int, int], list[int]] = defaultdict(list)
        for start, end, pid, cam in rows:
            pair_rows[(int(pid), int(cam))].append(int(end - start + 1))
        for pair, counts in pair_rows.items():
            trks = sorted(by_pair.get(pair, []))
            if not trks:
                continue
            if len(trks) != len(counts):
                raise ParError(
                    f"MARS info for person {pair[0]} camera {pair[1]} lists {len(counts)} tracklets but the CSV "
                    f"has {len(trks)}"
                )
            for trk, count in zip(trks, counts):
                out[(pair[0], pair[1], trk)] = (split, count)
    return out
