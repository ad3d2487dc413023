"""`par search OUT CONDITION...`: the people of `par track` outputs that match attribute conditions, best first.

Conditions are read in the one grammar of par_pipeline/footage/conditions.py (`backpack`, `backpack = no`,
`not hat`, `top color = red`, `gender female >= 0.7`; several joined by commas or `and`, in one argument or in
several); all must hold, and people are ranked by the product of the conditions' probabilities. OUT is a `par track`
output folder or a folder of them (several videos or cameras: OUT/<name>/ each), searched whole; a live run's folder
is searched while it runs, through what its tracks.jsonl holds so far (every run into it). `--by person` searches
the people of a `par link` folder (people.json) instead: each person once, by the attributes fused over every
camera that saw them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ParError
from ..footage import LIVE_RECORDS, TRACKS_FORMAT, read_live_records
from ..footage.conditions import match, parse_query, split_query

SEARCH_FORMAT = "par-search"


def track_files(out: Path) -> list[Path]:
    """Each `par track` output under `out`: its tracks.json, or a live run's tracks.jsonl while it still runs."""
    own = _answer_of(out)
    files = [own] if own else [a for f in sorted(out.glob("*/")) if (a := _answer_of(f)) is not None]
    if not files:
        raise ParError(f"{out}: no tracks.json (or a live run's tracks.jsonl) here or in its sub-folders; give a "
                       f"`par track` output folder")
    return files


def _answer_of(folder: Path) -> Path | None:
    for name in ("tracks.json", LIVE_RECORDS):
        if (folder / name).is_file():
            return folder / name
    return None


def read_tracks(path: Path) -> dict[str, Any]:
    """A tracks.json, or what a running live run has written so far (its tracks.jsonl) in the same shape."""
    if path.name == LIVE_RECORDS:
        tracks = read_live_records(path)
        first = tracks[0] if tracks else {"description": {}, "probabilities": {}, "camera": path.parent.name}
        return {"source": first["camera"], "groups": list(first["description"]),
                "attributes": list(first["probabilities"]), "tracks": tracks}
    return read_output(path, TRACKS_FORMAT, "par track")


def read_output(path: Path, format: str, command: str) -> dict[str, Any]:
    """A JSON output of `command` (its `format`), or one line naming the file and how to make it again."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ParError(f"{path}: not readable JSON; run `{command}` again") from None
    if doc.get("format") != format:
        raise ParError(f"{path}: not a {command} output")
    return doc


def search(out: Path, conditions: list[str]) -> dict[str, Any]:
    """Every matching person of every tracks.json under `out`, best first (README: `par search --json`)."""
    texts = split_query(conditions)
    if not texts:
        raise ParError("give at least one condition, e.g. backpack, \"backpack = no\" or \"top color = red\"")
    results = []
    for path in track_files(Path(out)):
        doc = read_tracks(path)
        if not doc["tracks"]:
            continue  # a live run that has written nobody yet
        parsed = parse_query(texts, doc["groups"], doc["attributes"])
        for t in doc["tracks"]:
            found = match(parsed, t)
            if found is not None:
                results.append({"source": doc["source"], "folder": str(path.parent),
                                **({"run": t["run"]} if "run" in t else {}), "track": t["id"],
                                "first_frame": t["first_frame"], "last_frame": t["last_frame"], "frames": t["frames"],
                                "score": found[0], "scores": found[1], "line": t["line"]})
    results.sort(key=lambda r: (-r["score"], r["folder"], r["track"]))
    return {"format": SEARCH_FORMAT, "version": 1, "conditions": texts, "results": results}


def search_people(out: Path, conditions: list[str]) -> dict[str, Any]:
    """Every matching person of a `par link` folder's people.json, best first (README: `par search --by person`)."""
    from .link import PEOPLE_FORMAT

    path = Path(out) / "people.json"
    if not path.is_file():
        raise ParError(f"{out}: no people.json here; --by person searches a `par link` output folder")
    doc = read_output(path, PEOPLE_FORMAT, "par link")
    texts = split_query(conditions)
    parsed = parse_query(texts, doc["groups"], doc["attributes"])
    results = []
    for p in doc["people"]:
        found = match(parsed, p)
        if found is not None:
            results.append({"person": p["person"], "cameras": p["cameras"], "sightings": len(p["sightings"]),
                            "first_time": p["first_time"], "last_time": p["last_time"], "score": found[0],
                            "scores": found[1], "line": p["line"]})
    results.sort(key=lambda r: (-r["score"], r["person"]))
    return {"format": SEARCH_FORMAT, "version": 1, "by": "person", "conditions": texts, "results": results}
