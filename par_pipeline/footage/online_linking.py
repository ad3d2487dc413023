"""The same person across cameras while they are watched (`par track CAMERAS... --live --link`): each record gets
its person as it arrives, by the rules of `par link` (footage/linking.py) applied to the records still open to
change.

A person's sightings follow each other within the transit window (`max_gap`, or a pair's transit max): once a
person's last sighting ended a window before the earliest moment any camera could still report (`horizon`: the
start of its oldest open or unfinished track, else its latest frame), nobody can join them any more, and they
settle: their number is final, and their rows leave the linker (its memory is the people of the last window, not
the run). Until then, every arrival links the open rows again, exactly as `par link` links a folder: a record's
person may change while it is open (`settled: false`). When nothing settled before the run's end, its last link of
each record is the offline link of its finished folders, numbers included; people who settled early are numbered in
the order they settled and were linked with the cues' mean of their time (the mean the cues are centred by is that
of everything seen so far), which is why a long run's link can differ from `par link`'s on its folders
(`make track-bench` measures by how much).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Hashable

import numpy as np

from .linking import LinkRules, Sightings, Totals, add_totals, centring_totals, link_labels


@dataclass
class Arrival:
    """One finished track, as `par link` reads it from its record."""
    key: Hashable  # (camera, run, track)
    camera: int
    start: float  # seconds on the site's clock
    end: float
    appearance: np.ndarray  # [D] float32
    colour: np.ndarray  # [C] float32
    probs: np.ndarray  # [A] float32


class OnlineLinker:
    """People across cameras from records as they arrive; thread-safe (every camera's thread delivers here)."""

    def __init__(self, cameras: list[str], groups: list[list[int]], group_names: list[str],
                 value_names: list[list[str]], rules: LinkRules) -> None:
        self.cameras, self.groups, self.group_names, self.value_names = cameras, groups, group_names, value_names
        self.rules = rules
        self.window = rules.window
        self.rows: list[Arrival] = []
        self.person: dict[Hashable, int] = {}  # each open row's person (1, 2, ...: settled people come first)
        self.settled_people = 0
        self.totals: Totals = {}
        self._lock = threading.Lock()

    def _sightings(self, rows: list[Arrival]) -> Sightings:
        return Sightings(self.cameras, np.array([r.camera for r in rows], dtype=np.int64),
                         np.arange(len(rows)), np.array([r.start for r in rows], dtype=np.float64),
                         np.array([r.end for r in rows], dtype=np.float64),
                         np.stack([r.appearance for r in rows]), np.stack([r.colour for r in rows]),
                         np.stack([r.probs for r in rows]), self.groups, self.group_names, self.value_names)

    def add(self, arrival: Arrival) -> dict[Hashable, int]:
        """Link `arrival`: the open records whose person this changed (the arrival's own among them)."""
        with self._lock:
            self.totals = add_totals(self.totals, centring_totals(self._sightings([arrival]), self.rules))
            self.rows.append(arrival)
            return self._relink()

    def _relink(self) -> dict[Hashable, int]:
        labels, _ = link_labels(self._sightings(self.rows), self.rules, self.totals)
        changed = {}
        for row, label in zip(self.rows, labels.tolist()):
            person = self.settled_people + label + 1
            if self.person.get(row.key) != person:
                self.person[row.key] = changed[row.key] = person
        return changed

    def settle(self, horizon: float) -> tuple[dict[Hashable, int], dict[Hashable, int]]:
        """The records of every person whose last sighting ended a transit window before `horizon` (the earliest
        start a record still to come can have): their final person, numbered after the people settled before them
        (those settling together by first sighting, as `par link` numbers people); and the open records whose
        person changed (numbered after them, and linked again without them)."""
        with self._lock:
            by_person: dict[int, list[Arrival]] = {}
            for row in self.rows:
                by_person.setdefault(self.person[row.key], []).append(row)
            done = sorted((min(r.start for r in rows), person) for person, rows in by_person.items()
                          if max(r.end for r in rows) + self.window < horizon)
            final = {}
            for _, person in done:
                self.settled_people += 1
                for r in by_person[person]:
                    final[r.key] = self.settled_people
                    del self.person[r.key]
            if not final:
                return {}, {}
            self.rows = [r for r in self.rows if r.key not in final]
            return final, self._relink() if self.rows else {}

    def open_rows(self) -> int:
        return len(self.rows)


def arrival(s: Sightings, k: int, key: Hashable | None = None) -> Arrival:
    return Arrival(k if key is None else key, int(s.camera[k]), float(s.start[k]), float(s.end[k]), s.appearance[k],
                   s.colour[k], s.probs[k])


def replay(s: Sightings, rules: LinkRules) -> tuple[np.ndarray, np.ndarray, int]:
    """Finished sightings linked as a live run would have linked them, each arriving when it ends (in that order):
    (each one's last person, each one's person when it arrived, the most rows the linker held). The horizon at
    each arrival: the earliest start of a sighting under way (started, not yet arrived), else the arrival's end."""
    linker = OnlineLinker(s.cameras, s.groups, s.group_names, s.value_names, rules)
    order = np.lexsort((s.start, s.end))
    last = np.zeros(len(s), dtype=np.int64)
    first = np.zeros(len(s), dtype=np.int64)
    held = 0
    for n, k in enumerate(order):
        now = float(s.end[k])
        changed = linker.add(arrival(s, int(k)))
        first[k] = changed[int(k)]
        under_way = s.start[order[n + 1:]]
        horizon = min(now, float(under_way.min())) if len(under_way) else now
        final, moved = linker.settle(horizon)
        held = max(held, linker.open_rows())
        for key, person in {**changed, **final, **moved}.items():
            last[key] = person
    for key, person in linker.settle(np.inf)[0].items():
        last[key] = person
    return last - 1, first - 1, held
