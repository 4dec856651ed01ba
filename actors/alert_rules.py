"""Alert rules, pure: committed events in, alerts to send out.

A rule (``core.config.AlertRule``, data in config) names the event types that
raise it and those that clear it, and what identifies its subject. The state
is one entry per (rule, subject). An alert is sent when its condition is
raised and the same (rule, subject) was not sent within the cool-down; a
*resolved* message is sent when the condition clears, only for an alert that
was sent. So a condition flapping inside the cool-down sends one alert and one
resolved message. A rule with ``after_secs`` waits: the alert goes out only if
the condition is still raised that long after it was (:func:`due`, asked on a
timer); one that clears sooner sends nothing at all. A threshold rule
(``count``/``above``) is raised by its event when the count it names is above
the threshold and cleared by the same event type when it is not.
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.config import AlertRule
from core.events import Event

SEVERITY_RANK = {"info": 20, "warning": 30, "error": 40, "critical": 50}


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One message to send: an alert, or the all-clear of one."""

    rule: str
    subject: str
    severity: str
    resolved: bool
    text: str
    event_type: str
    event_id: int | None
    ts_ms: int
    details: dict[str, Any] = {}
    test: bool = False

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.subject}" if self.subject else self.rule

    def title(self) -> str:
        head = "RESOLVED" if self.resolved else self.severity.upper()
        return f"[tradebot {head}] {self.rule}{' ' + self.subject if self.subject else ''}"

    def message(self) -> str:
        body = f"{self.title()}: {self.event_type}"
        return f"{body}\n{self.text}" if self.text and not self.resolved else body


class _Entry(msgspec.Struct, kw_only=True):
    active: bool = False  # raised and not cleared
    sent: bool = False  # the alert for the current raise was sent (so its clearing is)
    last_sent_ms: int | None = None
    pending: Alert | None = None  # raised, waiting out its rule's after_secs
    due_ms: int = 0


class AlertState:
    """Per (rule, subject): raised or not, and when it was last sent."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], _Entry] = {}

    def active(self) -> list[tuple[str, str]]:
        return sorted(k for k, e in self.entries.items() if e.active)


def subject_of(rule: AlertRule, event: Event) -> str:
    field = rule.subject
    if not field:
        return ""
    if field.startswith("data."):
        value = event.data.get(field[5:])
    else:
        value = getattr(event, field, None)
    return "" if value is None else str(value)


def count_of(event: Event, key: str) -> int:
    """A threshold rule's count: the length of a list in the event's data, or a number there."""
    value = event.data.get(key)
    if isinstance(value, (list, tuple, dict)):
        return len(value)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def index(rules: tuple[AlertRule, ...]) -> dict[str, list[tuple[AlertRule, bool]]]:
    """event type -> [(rule, raises?)]: one dict lookup per event."""
    out: dict[str, list[tuple[AlertRule, bool]]] = {}
    for rule in rules:
        for t in rule.fire:
            out.setdefault(t, []).append((rule, True))
        for t in rule.resolve:
            out.setdefault(t, []).append((rule, False))
    return out


def evaluate(state: AlertState, by_type: dict[str, list[tuple[AlertRule, bool]]], event: Event, cooldown_ms: int) -> list[Alert]:
    """The alerts ``event`` causes (``state`` updated in place; the only effect)."""
    out: list[Alert] = []
    for rule, raises in by_type.get(event.type, ()):
        if rule.count:
            raises = count_of(event, rule.count) > rule.above
        subject = subject_of(rule, event)
        key = (rule.name, subject)
        entry = state.entries.get(key)
        if raises:
            if entry is None:
                entry = state.entries[key] = _Entry()
            if entry.active and (entry.sent or entry.pending is not None):
                continue  # still raised: already told (or waiting to tell)
            entry.active = True
            if rule.after_secs:
                entry.pending, entry.due_ms = _alert(rule, subject, event, resolved=False), event.ts_ms + rule.after_secs * 1000
                continue
            if entry.last_sent_ms is not None and event.ts_ms - entry.last_sent_ms < cooldown_ms:
                continue  # flapping inside the cool-down: not again
            entry.sent = True
            entry.last_sent_ms = event.ts_ms
            out.append(_alert(rule, subject, event, resolved=False))
        elif entry is not None and entry.active:
            entry.active = False
            entry.pending = None  # cleared before it was due: nothing to tell
            if entry.sent:
                entry.sent = False
                out.append(_alert(rule, subject, event, resolved=True))
    return out


def due(state: AlertState, now_ms: int, cooldown_ms: int) -> list[Alert]:
    """The alerts whose rule's ``after_secs`` has passed with the condition still raised (``state`` updated)."""
    out: list[Alert] = []
    for entry in state.entries.values():
        alert = entry.pending
        if alert is None or now_ms < entry.due_ms:
            continue
        entry.pending = None
        if entry.last_sent_ms is not None and now_ms - entry.last_sent_ms < cooldown_ms:
            continue  # flapping inside the cool-down: not again
        entry.sent, entry.last_sent_ms = True, now_ms
        out.append(alert)
    return out


def _alert(rule: AlertRule, subject: str, event: Event, *, resolved: bool) -> Alert:
    details = {k: v for k, v in event.data.items() if isinstance(v, (str, int, float, bool)) and not _looks_secret(k)}
    if rule.count:
        details[rule.count] = count_of(event, rule.count)
    return Alert(
        rule=rule.name,
        subject=subject,
        severity=rule.severity,
        resolved=resolved,
        text=rule.text,
        event_type=event.type,
        event_id=event.id,
        ts_ms=event.ts_ms,
        details=details,
    )


def _looks_secret(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in ("secret", "token", "key", "password", "passphrase"))


def reaches(alert: Alert, min_severity: str) -> bool:
    """Does ``alert`` reach a sink with this minimum? (A resolved message keeps its alert's severity,
    so it goes wherever the alert went.)"""
    return SEVERITY_RANK[alert.severity] >= SEVERITY_RANK[min_severity]
