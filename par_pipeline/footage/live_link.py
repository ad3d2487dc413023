"""`--link` of a live multi-camera run: each camera's records go to one `OnlineLinker` as they are written; their
people, and every later change of a record's person, are appended to OUT/links.jsonl (`par-link`, version 1: a
line per change, `camera`, `run`, `track`, `person`, `settled`, `at`; the last line of a record is its person).
Person numbers are the run's own, and stay with people (footage/online_linking.py: 1, 2, ... as they arrive).

Route alerts (`--alert-route "door > yard"`): a person seen in those cameras in that order (other sightings may come
between). The record that completes the route raises `alert` once, as soon as the link says so (OUT/alerts.jsonl,
`par-alert` version 2, and the webhook); the link may still change until the person settles, and a record whose
settled person no longer makes the route `retracted`s its alert (a route that only holds once the person settles
alerts then)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ParError
from . import now_text
from .alerts import ALERT_FORMAT, ALERT_VERSION
from .linking import LinkRules, group_columns
from .live_folder import append_line
from .online_linking import Arrival, OnlineLinker
from .records import read_vector

LINKS = "links.jsonl"
LINK_FORMAT, LINK_VERSION = "par-link", 1
ROUTE_ALERTS = "alerts.jsonl"


def parse_routes(text: str | None, cameras: list[str]) -> list[tuple[str, ...]]:
    """`door > yard, hall > door` -> [("door", "yard"), ("hall", "door")]: each route two or more of the cameras."""
    routes = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        route = tuple(c.strip() for c in part.split(">"))
        unknown = [c for c in route if c not in cameras]
        if len(route) < 2 or unknown or len(set(route)) < len(route):
            raise ParError(f"--alert-route {part!r}: two or more of the cameras {', '.join(cameras)} in the order "
                           f"walked, joined by '>' (e.g. \"{cameras[0]} > {cameras[-1]}\")")
        routes.append(route)
    return routes


def route_end(route: tuple[str, ...], sightings: list[tuple[float, str, Any]]) -> Any | None:
    """The sighting (its key) that completes `route` first in a person's sightings (start, camera, key), if any."""
    at = 0
    for _, camera, key in sorted(sightings, key=lambda x: x[0]):
        if camera == route[at]:
            at += 1
            if at == len(route):
                return key
    return None


class LiveLink:
    """The run's linker, its clock (seconds from the earliest camera's start, as `par link` reads the folders'
    runs.jsonl) and OUT/links.jsonl."""

    def __init__(self, out: Path, cameras: dict[str, tuple[int, float]], attributes: list[str], groups: list[str],
                 rules: LinkRules, horizon: Callable[[], float], routes: list[tuple[str, ...]] | None = None,
                 on_alert: Callable[[dict[str, Any]], None] | None = None) -> None:
        """`cameras`: name -> (its run, its run's start as seconds since the epoch); `horizon`: the earliest
        start (seconds since the epoch) a record still to come can have; `routes`' events go to OUT/alerts.jsonl
        and `on_alert`."""
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
        self.routes = routes or []
        self.on_alert = on_alert
        self.seen: dict[tuple[str, int, int], tuple[float, str]] = {}  # key -> (start, line) of the open records
        self.alerted: set[tuple[tuple[str, ...], Any]] = set()  # (route, completing record) alerted, not yet settled
        self.alerts = 0
        self._lock = threading.Lock()
        if self.routes:  # there from the start: an empty alerts.jsonl says no route has been walked yet
            append_line(self.path.parent / ROUTE_ALERTS, None)

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
            self.seen[key] = (t0, record["line"])
            self._write(self.linker.add(a), settled=False)
            settled, moved = self.linker.settle(self.horizon() - self.zero)
            self._write(settled, settled=True)
            self._write(moved, settled=False)
            self._route_events(settled)
            self._forget(settled)
            self.most_open = max(self.most_open, self.linker.open_rows())
            return self.people[key]

    def _forget(self, settled: dict[Any, int]) -> None:
        for key in settled:
            self.seen.pop(key, None)

    def _route_events(self, settled: dict[Any, int]) -> None:
        """Alerts for routes the open people (and those settling now) make; retractions for settled records that
        alerted and no longer make their route."""
        if not self.routes:
            return
        by_person: dict[int, list[tuple[float, str, Any]]] = {}
        for key in [*self.linker.person, *settled]:
            by_person.setdefault(self.people[key], []).append((self.seen[key][0], key[0], key))
        making = {(route, end): rows for rows in by_person.values() for route in self.routes
                  if (end := route_end(route, rows)) is not None}
        for route, end in sorted(set(making) - self.alerted, key=lambda x: self.seen[x[1]][0]):
            self.alerted.add((route, end))
            self._alert("alert", route, end, making[(route, end)])
        for route, end in sorted(self.alerted, key=lambda x: self.seen[x[1]][0]):
            if end in settled:
                self.alerted.discard((route, end))
                if (route, end) not in making:
                    rows = next(r for r in by_person.values() if any(x[2] == end for x in r))
                    self._alert("retracted", route, end, rows)

    def _alert(self, event: str, route: tuple[str, ...], key: Any, rows: list[tuple[float, str, Any]]) -> None:
        """One route event; `rows`: the person's sightings (start, camera, key)."""
        camera, run, track = key
        alert = {"format": ALERT_FORMAT, "version": ALERT_VERSION, "event": event, "camera": camera, "run": run,
                 "rule": " > ".join(route), "track": track, "person": self.people[key], "line": self.seen[key][1],
                 "sightings": [{"camera": k[0], "track": k[2]} for _, _, k in sorted(rows, key=lambda x: x[0])],
                 "provisional": False, "written_at": now_text()}
        append_line(self.path.parent / ROUTE_ALERTS, alert)
        self.alerts += event == "alert"
        if self.on_alert is not None:
            self.on_alert(alert)

    def finish(self) -> dict[str, Any]:
        """Every open person settles (the run is over): the run's link summary."""
        with self._lock:
            settled, _ = self.linker.settle(np.inf)
            self._write(settled, settled=True)
            self._route_events(settled)
        return {"people": len(set(self.people.values())), "records": len(self.people), "most_open": self.most_open,
                "rules": self.linker.rules.record(self.names), "routes": [" > ".join(r) for r in self.routes],
                "route_alerts": self.alerts}
