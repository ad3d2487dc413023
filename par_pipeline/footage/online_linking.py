"""The same person across cameras while they are watched (`par track CAMERAS... --live --link`): each record gets
its person as it arrives, by the rules of `par link` (footage/linking.py) applied to the records still open to
change.

A person's sightings follow each other within the transit window (`max_gap`, or a pair's transit max): once a
person's last sighting ended a window before the earliest moment any camera could still report (`horizon`: the
start of its oldest open or unfinished track, else its latest frame), nobody can join them any more, and they
settle: their number is final, and their rows leave the linker (its memory is the people of the last window, not
the run). Until then, every arrival links the open rows again, exactly as `par link` links a folder: a record's
person may change while it is open (`settled: false`). When nothing settled before the run's end, the run's last
link is the offline link of its finished folders (the same people); people who settled early were linked with the
cues' mean of their time (the mean the cues are centred by is that of everything seen so far), which is why a long
run's link can differ from `par link`'s on its folders (`make track-bench` measures by how much).

Numbers stay with people: a number is given when a record arrives that joins nobody (1, 2, ... in that order), and
it stays with that record (its founder) and whoever is linked to it; a person linked to an earlier one takes the
smaller number, and gets their own back should the link part again. So a number, once shown, is not handed to
someone else while its founder is open, and people are not renumbered when others settle (`par link` numbers its
people by first sighting instead: the same people, other numbers).
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
        self.rows: list[Arrival] = []  # the open rows, in the order they arrived
        self.person: dict[Hashable, int] = {}  # each open row's person
        self.founded: dict[Hashable, int] = {}  # open rows that were given a number, and that number
        self.numbers = 0  # numbers given so far
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
        """Link the open rows again; each person's number: the smallest of the founders among their rows, else
        a new one (their first-arrived row founds it). The rows whose number changed, with it."""
        labels, _ = link_labels(self._sightings(self.rows), self.rules, self.totals)
        people: dict[int, list[Hashable]] = {}  # each person's rows in the order they arrived, people by their first
        for row, label in zip(self.rows, labels.tolist()):
            people.setdefault(label, []).append(row.key)
        changed = {}
        for keys in people.values():
            owned = [self.founded[k] for k in keys if k in self.founded]
            if owned:
                number = min(owned)
            else:
                self.numbers += 1
                number = self.founded[keys[0]] = self.numbers
            for key in keys:
                if self.person.get(key) != number:
                    self.person[key] = changed[key] = number
        return changed

    def settle(self, horizon: float) -> tuple[dict[Hashable, int], dict[Hashable, int]]:
        """The records of every person whose last sighting ended a transit window before `horizon` (the earliest
        start a record still to come can have): their final person (the number they have); and the open records
        whose person changed (linked again without them)."""
        with self._lock:
            by_person: dict[int, list[Arrival]] = {}
            for row in self.rows:
                by_person.setdefault(self.person[row.key], []).append(row)
            final = {r.key: person for person, rows in by_person.items()
                     if max(r.end for r in rows) + self.window < horizon for r in rows}
            if not final:
                return {}, {}
            for key in final:
                for held in (self.person, self.founded):
                    held.pop(key, None)
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
