"""Attribute conditions on tracked people: the one grammar that `par search`, `par track --alert` rules and the search
box of tracks.html read (its patterns live in data_manifests/grammar/conditions.json, which the page's script takes
too; a browser test holds the two to the same answers).

A query is conditions joined by commas or the word `and`, all of which must hold:
- `backpack`: a yes/no group is yes (by the checkpoint's threshold rule); `backpack = no` or `not backpack`: it is no;
- `top color = red`: a group's answer is this value; `not top color = red`: it is another one;
- `gender female >= 0.7`, `top color = red >= 0.5`: the probability of that answer (of the opposite one after `not`
  or `= no`) is at least this, whatever the answer.
A person's score is the product of the conditions' probabilities (of the answers asked for).
"""
from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import ParError
from ..resources import shipped


@functools.lru_cache(maxsize=1)
def grammar() -> dict[str, Any]:
    """The grammar's patterns, as the page embeds them."""
    return json.loads((shipped("grammar") / "conditions.json").read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern, re.Pattern]:
    g = grammar()
    return re.compile(g["separator"]), re.compile(g["condition"])


FORMS = "GROUP, GROUP = VALUE, not GROUP, or any of these followed by >= PROBABILITY"


@dataclass(frozen=True)
class Condition:
    text: str
    group: str
    value: str  # the answer named ("yes" for a yes/no group)
    attribute: str  # whose probability scores it
    negated: bool  # the answer asked for is any but `value`: scored by 1 - P
    at_least: float | None

    def score(self, track: dict[str, Any]) -> float | None:
        """The condition's probability for this person (a tracks.json record), or None when it does not hold."""
        p = float(track["probabilities"][self.attribute])
        p = 1.0 - p if self.negated else p
        if self.at_least is not None:
            return p if p >= self.at_least else None
        return p if (track["description"][self.group] == self.value) != self.negated else None


def split_query(texts: str | Iterable[str]) -> list[str]:
    """The conditions of a query (or of each of several, as `par search` takes its arguments)."""
    separator, _ = _patterns()
    parts = [texts] if isinstance(texts, str) else list(texts)
    return [" ".join(c.split()) for part in parts for c in separator.split(part.lower()) if c.strip()]


def parse_query(texts: str | Iterable[str], groups: list[str], attributes: list[str]) -> list[Condition]:
    conditions = split_query(texts)
    if not conditions:
        raise ParError("give at least one condition, e.g. backpack, \"backpack = no\" or \"top color = red\"")
    return [parse_condition(c, groups, attributes) for c in conditions]


def parse_condition(text: str, groups: list[str], attributes: list[str]) -> Condition:
    """One condition against the groups and attributes of a tracks.json; an error names the nearest valid form."""
    _, pattern = _patterns()
    text = " ".join(text.lower().split())
    m = pattern.match(text)
    if not m:
        raise ParError(f"condition {text!r}: write {FORMS}")
    negated, name, value, p = bool(m.group(1)), m.group(2).strip(), (m.group(3) or "").strip(), m.group(4)
    if name not in groups:
        raise ParError(f"condition {text!r}: no attribute group '{name}'{_nearest(name, value, groups, attributes)}")
    at_least = None
    if p is not None:
        at_least = float(p)
        if not 0 <= at_least <= 1:
            raise ParError(f"condition {text!r}: a probability is between 0 and 1, e.g. '{name} >= 0.7'")
    yes, no = grammar()["binary_values"]
    if name in attributes:  # a yes/no group: its one attribute is the group itself
        if value not in ("", yes, no):
            raise ParError(f"condition {text!r}: '{name}' is {yes} or {no}; write '{name}', '{name} = {no}' or "
                           f"'not {name}'")
        return Condition(text, name, yes, name, negated != (value == no), at_least)
    values = [a[len(name) + 1:] for a in attributes if a.startswith(name + " ")]
    if value not in values:
        close = difflib.get_close_matches(value, values, n=1, cutoff=0.5) if value else []
        example = f"{name} = {close[0] if close else values[0]}"
        said = f"did you mean '{example}'?" if close else f"write e.g. '{example}'"
        raise ParError(f"condition {text!r}: '{name}' takes one of {', '.join(values)}; {said}")
    return Condition(text, name, value, f"{name} {value}", negated, at_least)


def _nearest(name: str, value: str, groups: list[str], attributes: list[str]) -> str:
    """'; did you mean ...?' with the valid condition nearest to what was written, and the groups."""
    forms = {g: g for g in groups if g in attributes}  # what a person writes -> the valid form
    for a in attributes:
        group = next((g for g in groups if g not in attributes and a.startswith(g + " ")), None)
        if group is not None:
            forms[a] = forms[a[len(group) + 1:] + " " + group] = f"{group} = {a[len(group) + 1:]}"
    for g in groups:
        forms.setdefault(g, g)
    written = f"{name} {value}".strip()
    close = difflib.get_close_matches(written, list(forms), n=1, cutoff=0.6) or \
        difflib.get_close_matches(name, list(forms), n=1, cutoff=0.6)
    hint = f"; did you mean '{forms[close[0]]}'?" if close else ""
    return f"{hint}; the groups are: {', '.join(groups)}"


def match(conditions: list[Condition], track: dict[str, Any]) -> tuple[float, dict[str, float]] | None:
    """(score, each condition's probability) when every condition holds for this person (a tracks.json record),
    else None: what `par search` ranks, tracks.html shows and `par track --alert` fires on."""
    scores = [c.score(track) for c in conditions]
    if any(s is None for s in scores):
        return None
    total = 1.0
    for s in scores:
        total *= s
    return total, {c.text: s for c, s in zip(conditions, scores)}
