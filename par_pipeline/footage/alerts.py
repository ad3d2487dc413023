"""Alert rules on tracked people (`par track --alert`, recorded or live): which records raise which events.

A rule is a query in the condition grammar (footage/conditions.py); all its conditions must hold. By default a rule
fires on a person's final record only (what `par search` finds on the finished output). With early alerts, a
provisional record (`--update-every`) may fire first, as an `early` event, and the person's final record then
`confirmed`s or `retract`s it: a provisional answer from a second of footage is often wrong.
Events (alerts.jsonl, `par-alert` version 2, and the webhook's body):
- `alert`: the final record matches (no early event came before);
- `early`: a provisional record matches (early alerts only);
- `confirmed` / `retracted`: the final record of a person with an early event matches the rule / does not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..data.schema import AttributeSchema
from ..errors import ParError
from . import now_text
from .conditions import Condition, match, parse_query

if TYPE_CHECKING:
    from ..config import TrackConfig

ALERT_FORMAT, ALERT_VERSION = "par-alert", 2
EVENTS = ("alert", "early", "confirmed", "retracted")


@dataclass
class AlertRule:
    text: str
    conditions: list[Condition]


def parse_alerts(rules: list[str], schema: AttributeSchema) -> list[AlertRule]:
    """`--alert "top color = red, backpack"` (repeatable): each rule's conditions in the search grammar."""
    groups = [g.name for g in schema.groups]
    parsed = []
    for rule in rules:
        if not rule.strip():
            raise ParError(f"--alert {rule!r}: give conditions such as \"top color = red, backpack\"")
        conditions = parse_query(rule, groups, schema.attributes)
        parsed.append(AlertRule(", ".join(c.text for c in conditions), conditions))
    return parsed


@dataclass
class AlertBook:
    """The alert events of one camera's records, in the order the records come."""
    rules: list[AlertRule]
    early: bool = False
    context: dict[str, Any] = field(default_factory=dict)  # fields every event carries (camera, run)
    _early_fired: set[tuple[int, str]] = field(default_factory=set)
    _final: set[tuple[int, str]] = field(default_factory=set)

    def events(self, record: dict[str, Any], provisional: bool) -> list[dict[str, Any]]:
        out = []
        for rule in self.rules:
            key = (record["id"], rule.text)
            if key in self._final:
                continue
            found = match(rule.conditions, record)
            if provisional:
                if self.early and found is not None and key not in self._early_fired:
                    self._early_fired.add(key)
                    out.append(self._event("early", rule, record, found))
                continue
            self._final.add(key)
            if key in self._early_fired:
                self._early_fired.discard(key)
                out.append(self._event("confirmed" if found is not None else "retracted", rule, record, found))
            elif found is not None:
                out.append(self._event("alert", rule, record, found))
        return out

    def _event(self, event: str, rule: AlertRule, record: dict[str, Any],
               found: tuple[float, dict[str, float]] | None) -> dict[str, Any]:
        return {"format": ALERT_FORMAT, "version": ALERT_VERSION, "event": event, **self.context, "rule": rule.text,
                "track": record["id"], "score": found[0] if found else None, "scores": found[1] if found else None,
                "line": record["line"], "provisional": event == "early", "first_frame": record["first_frame"],
                "last_frame": record["last_frame"],
                "written_at": record.get("written_at") or now_text()}


def check_alert_options(cfg: "TrackConfig", live: bool) -> None:
    """The alert options that act together, refused in one line when one is given without what it needs."""
    if cfg.early_alerts and not live:
        raise ParError("--early-alerts: a recorded file's records are all final; early alerts are for --live runs")
    if cfg.early_alerts and not cfg.update_every:
        raise ParError("--early-alerts fire on provisional records: give --update-every SECONDS too")
    if cfg.alert_route and not live:
        raise ParError("--alert-route follows a person across live cameras (--live --link); for recorded videos, "
                       "`par link` the folders and read people.json")
    if ((cfg.early_alerts or cfg.webhook_thumbnails) and not cfg.alerts) or (
            cfg.alert_webhook and not cfg.alerts and not cfg.alert_route):
        raise ParError("--alert-webhook, --early-alerts and --webhook-thumbnails act on alerts: give at least one "
                       "--alert RULE (or, for the webhook, an --alert-route)")
