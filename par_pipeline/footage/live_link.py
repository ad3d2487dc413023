"""`--link` of a live multi-camera run: each camera's records go to one `OnlineLinker` as they are written; their
people, and every later change of a record's person, are appended to OUT/links.jsonl (`par-link`, version 1: a
line per change, `camera`, `run`, `track`, `person`, `settled`, `at`; the last line of a record is its person).
Person numbers are the run's own (1, 2, ... in the order people were first seen, as `par link` numbers them)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import now_text
from .linking import LinkRules, group_columns
from .live_folder import append_line
from .online_linking import Arrival, OnlineLinker
from .records import read_vector

LINKS = "links.jsonl"
LINK_FORMAT, LINK_VERSION = "par-link", 1


class LiveLink:
    """The run's linker, its clock (seconds from the earliest camera's start, as `par link` reads the folders'
    runs.jsonl) and OUT/links.jsonl."""

    def __init__(self, out: Path, cameras: dict[str, tuple[int, float]], attributes: list[str], groups: list[str],
                 rules: LinkRules, horizon: Callable[[], float]) -> None:
        """`cameras`: name -> (its run, its run's start as seconds since the epoch); `horizon`: the earliest
        start (seconds since the epoch) a record still to come can have."""
        columns, values = group_columns(groups, attributes)
        self.names = list(cameras)
        self.cameras = cameras
        self.zero = min(start for _, start in cameras.values())
        self.attributes = attributes
        self.linker = OnlineLinker(self.names, columns, groups, values, rules)
        self.path = out / LINKS
        self.horizon = horizon
        self.most_open = 0
        self.people: dict[tuple[str, int, int], int] = {}
        self._lock = threading.Lock()

    def _write(self, changed: dict[Any, int], settled: bool) -> None:
        for (camera, run, track), person in sorted(changed.items(), key=lambda kv: (kv[1], kv[0])):
            self.people[(camera, run, track)] = person
            append_line(self.path, {"format": LINK_FORMAT, "version": LINK_VERSION, "camera": camera, "run": run,
                                    "track": track, "person": person, "settled": settled, "at": now_text()})

    def arrived(self, camera: str, record: dict[str, Any]) -> int:
        """Link a camera's finished record: its person now (the record's `person`); the changes it made to
        others' and the people who settled are written to links.jsonl."""
        run, start = self.cameras[camera]
        key = (camera, run, int(record["id"]))
        # times as `par link` reads them from the finished folders
        t0, t1 = (round(start + record[k] - self.zero, 3) for k in ("first_time", "last_time"))
        a = Arrival(key, self.names.index(camera), t0, t1, read_vector(record["appearance"]),
                    read_vector(record["colour"]),
                    np.array([record["probabilities"][x] for x in self.attributes], dtype=np.float32))
        with self._lock:
            self._write(self.linker.add(a), settled=False)
            self._write(self.linker.settle(self.horizon() - self.zero), settled=True)
            self.most_open = max(self.most_open, self.linker.open_rows())
            return self.people[key]

    def finish(self) -> dict[str, Any]:
        """Every open person settles (the run is over): the run's link summary."""
        with self._lock:
            self._write(self.linker.settle(np.inf), settled=True)
        return {"people": len(set(self.people.values())), "records": len(self.people), "most_open": self.most_open,
                "rules": self.linker.rules.record(self.names)}
