"""People in camera footage: detection and tracking."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# tracks.json, what `par track` writes and `par search` reads (README: formats)
TRACKS_FORMAT = "par-tracks"
TRACKS_VERSION = 1

# a live run's records, one per line, as people leave (README: Live cameras)
LIVE_RECORDS = "tracks.jsonl"


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def now_text() -> str:
    """The local time as records, alerts and runs.jsonl write it (`written_at`, `at`)."""
    return time.strftime(TIME_FORMAT)


def epoch_of(text: str) -> float:
    """Seconds since the epoch of a `now_text` time."""
    from datetime import datetime

    return datetime.strptime(text, TIME_FORMAT).timestamp()


def read_live_records(path: Path) -> list[dict[str, Any]]:
    """Each track's latest record in a live run's tracks.jsonl, by id: its final record, or while it is still in
    view its latest provisional one. Lines are whole (each is written at once); a line cut short by a crash while it
    was written is the last and is left out."""
    records: dict[int, dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r["id"] not in records or not r["provisional"] or records[r["id"]]["provisional"]:
                records[r["id"]] = r
    return [records[k] for k in sorted(records)]
