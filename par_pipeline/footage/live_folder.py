"""A live run's folder: a camera's history over every run into it (README: Live cameras).

A live run into its own earlier folder continues it; nothing an earlier run wrote is removed or rewritten:
- tracks.jsonl, alerts.jsonl and tracks.txt are appended to; each record and alert carries its `run` (1, 2, ...),
  and track ids go on from the largest id of the earlier runs, so an id names one person in the folder's history;
- runs.jsonl has a line when each run starts and one when it ends (`par-live-run`, version 1);
- tracks.json, tracks.csv and tracks.html are made anew at each run's end from every run's records.
Several cameras write OUT/<camera>/ each, and OUT carries the marker of a `live cameras` folder, so a later run
(of one camera or of all) finds its place. The folder is par's own (`.par-output.json`), locked while a run writes.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ParError
from ..outputs import check_dir_target, claim_dir, io_errors, mark_own, read_marker
from . import LIVE_RECORDS, now_text

LIVE_KIND = "live tracks"
CAMERAS_KIND = "live cameras"
RECORDS, MOT, ALERTS, RUNS = LIVE_RECORDS, "tracks.txt", "alerts.jsonl", "runs.jsonl"
SUMMARIES = ("tracks.json", "tracks.csv", "tracks.html")  # made anew at each run's end
LIVE_FILES = (RECORDS, MOT, ALERTS, RUNS, *SUMMARIES)
RUN_FORMAT, RUN_VERSION = "par-live-run", 1
_ID = re.compile(r'"id": (\d+)')  # a record's id: among its first keys, so a long history is scanned by prefix


def check_camera_dir(out: Path) -> None:
    """OUT for one camera: new, empty, or a live folder of par's holding only what par writes there."""
    marker = read_marker(out) if out.is_dir() else None
    if out.exists() and not out.is_dir():
        raise ParError(f"{out}: exists and is a file; a live run writes a folder - choose another --out")
    if marker is not None:
        if marker.get("kind") == CAMERAS_KIND:
            cams = ", ".join(marker.get("files", [])) or "none yet"
            raise ParError(f"{out}: holds a multi-camera live run (cameras: {cams}); to continue one camera give "
                           f"--out {out}/<camera>, or name every camera again, or choose another --out")
        check_dir_target(out, LIVE_KIND)  # par's own live folder, holding nothing but what par wrote
    elif out.is_dir() and any(out.iterdir()):
        raise ParError(f"{out}: exists, is not empty and was not written by par; par does not write into folders it "
                       f"did not create - choose another --out")


def check_cameras_dir(out: Path, cameras: list[str]) -> None:
    """OUT for several cameras (OUT/<camera>/ each): new, empty, or an earlier multi-camera live folder."""
    marker = read_marker(out) if out.is_dir() else None
    if marker is not None and marker.get("kind") == LIVE_KIND:
        raise ParError(f"{out}: holds the live run of one camera; give {len(cameras)} cameras another --out (or "
                       f"--out {out} with that one camera to continue it)")
    if marker is not None and marker.get("kind") != CAMERAS_KIND:
        raise ParError(f"{out}: holds a par {marker.get('kind')} output, not a live run; choose another --out")
    if marker is None and out.is_dir() and any(out.iterdir()) and not _cameras_of_earlier_par(out):
        raise ParError(f"{out}: exists, is not empty and was not written by par; par does not write into folders it "
                       f"did not create - choose another --out")
    if out.exists() and not out.is_dir():
        raise ParError(f"{out}: exists and is a file; a live run writes a folder - choose another --out")
    for name in cameras:
        check_camera_dir(out / name)


def _cameras_of_earlier_par(out: Path) -> bool:
    """A multi-camera folder written before the folder itself was marked: camera folders of par's and nothing else."""
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.is_dir() and (read_marker(p) or {}).get("kind") == LIVE_KIND for p in entries)


def claim_cameras_dir(out: Path, cameras: list[str], files: list[str] | None = None) -> None:
    """OUT marked as par's, naming its camera folders and `files` (OUT/links.jsonl of a --link run)."""
    marker = read_marker(out) if out.is_dir() else None
    known = set(marker.get("files", [])) if marker else {p.name for p in out.glob("*/")}
    with io_errors(out, "create"):
        out.mkdir(parents=True, exist_ok=True)
        mark_own(out, CAMERAS_KIND, sorted(known | set(cameras) | set(files or [])))


@dataclass
class RunStart:
    """Where this run continues the folder's history."""
    run: int
    first_id: int  # track ids of this run are the tracker's + first_id - 1
    mot_offset: int  # bytes of tracks.txt before this run: only this run's rows are sorted at its end


def start_run(out: Path, record: dict[str, Any]) -> RunStart:
    """Claim OUT (checked already) for this run and append its start to runs.jsonl."""
    claim_dir(out, LIVE_KIND)
    mark_own(out, LIVE_KIND, list(LIVE_FILES))
    earlier = read_runs(out)
    last_id = 0
    if (out / RECORDS).is_file():
        with open(out / RECORDS, "rb") as f:
            for line in f:
                m = _ID.search(line[:120].decode("utf-8", "replace"))
                if m:
                    last_id = max(last_id, int(m.group(1)))
    legacy = 1 if not earlier and last_id else 0  # records of a par that did not number its runs: run 1
    run = max([r["run"] for r in earlier], default=legacy) + 1
    mot = out / MOT
    start = RunStart(run, last_id + 1, mot.stat().st_size if mot.is_file() else 0)
    append_line(out / RUNS, {"format": RUN_FORMAT, "version": RUN_VERSION, "run": run, "event": "started",
                             "at": now_text(), "first_id": start.first_id, **record})
    return start


def end_run(out: Path, run: int, summary: dict[str, Any]) -> None:
    append_line(out / RUNS, {"format": RUN_FORMAT, "version": RUN_VERSION, "run": run, "event": "ended",
                             "at": now_text(), **summary})


def read_runs(out: Path) -> list[dict[str, Any]]:
    """Each run of the folder, its start and end lines merged (a run killed before its end has `ended_at` None)."""
    runs: dict[int, dict[str, Any]] = {}
    path = out / RUNS
    if not path.is_file():
        return []
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            entry = runs.setdefault(r["run"], {"run": r["run"], "started_at": None, "ended_at": None})
            fields = {k: v for k, v in r.items() if k not in ("format", "version", "run", "event", "at")}
            entry.update(fields)
            entry["started_at" if r["event"] == "started" else "ended_at"] = r["at"]
    return [runs[k] for k in sorted(runs)]


def append_line(path: Path, obj: dict[str, Any] | None) -> None:
    """One whole line per write (O_APPEND): writers never interleave, and a reader sees whole lines, plus at most
    a last one still being written, without its newline (readers leave it out: read_live_records). None: the file
    is made, nothing written."""
    line = (json.dumps(obj) + "\n").encode() if obj is not None else b""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
