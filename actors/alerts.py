"""The alert actor: committed events in (through the store's fan-out), alerts out to every sink.

The rules are pure (:mod:`actors.alert_rules`, data in ``[alerts]``); this
actor holds their state, hands each alert to every sink whose minimum
severity it reaches, and records each delivery attempt's outcome as an event
(``alert.sent``, ``alert.failed``): ``tradebot events --type 'alert.*'`` is the
audit trail. A restarted actor rebuilds which alerts are raised from those
events, so it neither repeats an alert nor forgets to resolve it.

The store cannot record its own outage while it lasts (nothing commits, so
nothing fans out): this actor reads the store's health every
``alerts.check_ms`` (in memory, no I/O) and runs the rules on a
``store.unavailable`` / ``store.available`` event of its own when it changes.
The same timer sends the alerts of rules with ``after_secs`` that came due.
Those two are not written to the log; the ``alert.sent`` records are, once the
store takes writes again.
"""

from __future__ import annotations

from typing import Any

import msgspec

from actors.alert_rules import Alert, AlertState, _Entry, due, evaluate, index, reaches
from adapters.alert_sinks import Delivery, Sink
from core.events import Event, Severity
from core.messages import Message, Tick
from supervision.actor import ManagedActor, handles

SENT, FAILED = "alert.sent", "alert.failed"
STORE_DOWN, STORE_UP = "store.unavailable", "store.available"


class EventsCommitted(Message, frozen=True, kw_only=True):
    """Committed events a rule may care about (from the store's fan-out)."""

    events: tuple[Event, ...]


class AlertDelivered(Message, frozen=True, kw_only=True):
    """A sink's outcome for one alert (told from the I/O loop)."""

    delivery: Delivery
    alert: dict[str, Any]


def interesting(rules_index: dict[str, Any], events: list[Event]) -> tuple[Event, ...]:
    """The events any rule names (filter on the I/O loop: one dict lookup each)."""
    return tuple(e for e in events if e.type in rules_index)


class AlertActor(ManagedActor):
    def __init__(self, *, sinks: list[Sink], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sinks = sinks
        cfg = self.ctx.config.alerts
        self.by_type = index(cfg.rules)
        self.cooldown_ms = cfg.cooldown_secs * 1000
        self.state = AlertState()
        self.store_down = False

    def started(self) -> None:
        self.every(self.ctx.config.alerts.check_ms, "check")
        for ev in self.load_events(types=(SENT,), newest_first=True, limit=5000):
            d = ev.data
            if d.get("test") or not d.get("rule"):
                continue
            entry = self.state.entries.setdefault((d["rule"], d.get("subject", "")), _Entry())
            entry.active = entry.sent = not d.get("resolved", False)
            if not d.get("resolved", False):
                entry.last_sent_ms = d.get("ts_ms", ev.ts_ms)

    @handles(EventsCommitted)
    def _on_events(self, msg: EventsCommitted) -> None:
        for event in msg.events:
            for alert in evaluate(self.state, self.by_type, event, self.cooldown_ms):
                self.send(alert)

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        if msg.name == "check":
            self._check_store()
            for alert in due(self.state, msg.ts_ms, self.cooldown_ms):
                self.send(alert)

    def _check_store(self) -> None:
        """Past its critical threshold the store is unavailable (``EventStore.health``): alert, and resolve when it writes again."""
        h = self.ctx.store.health()
        if h.ok != self.store_down:
            return
        self.store_down = not h.ok
        event = Event(
            type=STORE_DOWN if self.store_down else STORE_UP,
            ts_ms=self.ctx.clock.now_ms(),
            actor=self.name,
            severity=Severity.CRITICAL if self.store_down else Severity.INFO,
            data={"error": h.last_error or "", "backlog": h.backlog, "failing_since_ms": h.failing_since_ms or 0},
        )
        for alert in evaluate(self.state, self.by_type, event, self.cooldown_ms):
            self.send(alert)

    def send(self, alert: Alert) -> None:
        payload = msgspec.to_builtins(alert)
        payload["message"] = alert.message()
        for sink in self.sinks:
            if reaches(alert, sink.cfg.min_severity):
                sink.submit(alert.key, payload, alert.message(), test=alert.test)

    @handles(AlertDelivered)
    def _on_delivered(self, msg: AlertDelivered) -> None:
        d, a = msg.delivery, msg.alert
        data = {
            "rule": a.get("rule"), "subject": a.get("subject", ""), "resolved": a.get("resolved", False), "ts_ms": a.get("ts_ms"),
            "sink": d.sink, "kind": d.kind, "attempts": d.attempts, "answer": d.answer, "dropped": d.dropped, "test": d.test,
            "event_id": a.get("event_id"),
        }
        if d.ok:
            self.emit(SENT, data)
        else:
            self.emit(FAILED, data, severity=Severity.WARNING)
