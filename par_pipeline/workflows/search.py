"""`par search OUT CONDITION...`: the people of `par track` outputs that match attribute conditions, best first.

A condition names an attribute group as `tracks.json` does, and optionally a value and a probability:
- `backpack`: a binary group is present (its answer is yes, by the checkpoint's threshold rule);
- `top color = red`: a group's answer is this value (`backpack = no` works too);
- `gender female >= 0.7`, `top color = red >= 0.5`: the probability of that answer is at least this.
All conditions must hold; people are ranked by the product of the conditions' probabilities. OUT is a `par track`
output folder or a folder of them (several videos: OUT/<name>/ each), searched whole; a live run's folder is searched
while it runs, through what its tracks.jsonl holds so far.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ParError
from ..footage import LIVE_RECORDS, TRACKS_FORMAT, read_live_records

SEARCH_FORMAT = "par-search"
CONDITION = re.compile(r"^\s*(?P<name>[^=<>]+?)\s*(?:=\s*(?P<value>[^=<>]+?))?\s*(?:>=\s*(?P<p>[0-9.]+))?\s*$")


@dataclass(frozen=True)
class Condition:
    text: str
    group: str
    value: str  # the answer asked for ("yes" for a bare binary group)
    attribute: str  # whose probability scores it
    negated: bool  # a binary group asked to be "no": scored by 1 - P
    at_least: float | None

    def score(self, track: dict[str, Any]) -> float | None:
        """The condition's probability for this person, or None when it does not hold."""
        p = float(track["probabilities"][self.attribute])
        p = 1.0 - p if self.negated else p
        holds = p >= self.at_least if self.at_least is not None else track["description"][self.group] == self.value
        return p if holds else None


def parse_condition(text: str, groups: list[str], attributes: list[str]) -> Condition:
    """One condition against the groups and attributes of a tracks.json."""
    m = CONDITION.match(text)
    if not m:
        raise ParError(f"condition {text!r}: write GROUP, GROUP = VALUE, or either followed by >= PROBABILITY")
    name, value, p = m.group("name").strip().lower(), (m.group("value") or "").strip().lower(), m.group("p")
    if name not in groups:
        raise ParError(f"condition {text!r}: no attribute group '{name}'; the groups are {groups}")
    at_least = None
    if p is not None:
        at_least = float(p)
        if not 0 <= at_least <= 1:
            raise ParError(f"condition {text!r}: a probability is between 0 and 1")
    if name in attributes:  # a binary group: its one attribute is the group itself
        if value not in ("", "yes", "no"):
            raise ParError(f"condition {text!r}: '{name}' is yes or no")
        return Condition(text.strip(), name, value or "yes", name, value == "no", at_least)
    values = [a[len(name) + 1:] for a in attributes if a.startswith(name + " ")]
    if value not in values:
        raise ParError(f"condition {text!r}: '{name}' takes one of {values}")
    return Condition(text.strip(), name, value, f"{name} {value}", False, at_least)


def match(conditions: list[Condition], track: dict[str, Any]) -> tuple[float, dict[str, float]] | None:
    """(score, each condition's probability) when every condition holds for this person (a tracks.json record),
    else None: what `par search` ranks and what `par track --alert` fires on."""
    scores = [c.score(track) for c in conditions]
    if any(s is None for s in scores):
        return None
    total = 1.0
    for s in scores:
        total *= s
    return total, {c.text: s for c, s in zip(conditions, scores)}


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
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ParError(f"{path}: not readable JSON; run `par track` again") from None
    if doc.get("format") != TRACKS_FORMAT:
        raise ParError(f"{path}: not a par track output")
    return doc


def search(out: Path, conditions: list[str]) -> dict[str, Any]:
    """Every matching person of every tracks.json under `out`, best first (README: `par search --json`)."""
    if not conditions:
        raise ParError("give at least one condition, e.g. backpack or \"top color = red\"")
    results = []
    for path in track_files(Path(out)):
        doc = read_tracks(path)
        if not doc["tracks"]:
            continue  # a live run that has written nobody yet
        parsed = [parse_condition(c, doc["groups"], doc["attributes"]) for c in conditions]
        for t in doc["tracks"]:
            found = match(parsed, t)
            if found is not None:
                results.append({"source": doc["source"], "folder": str(path.parent), "track": t["id"],
                                "first_frame": t["first_frame"], "last_frame": t["last_frame"], "frames": t["frames"],
                                "score": found[0], "scores": found[1], "line": t["line"]})
    results.sort(key=lambda r: (-r["score"], r["folder"], r["track"]))
    return {"format": SEARCH_FORMAT, "version": 1, "conditions": conditions, "results": results}
