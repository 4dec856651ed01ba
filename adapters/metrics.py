"""Prometheus metrics from committed events (the store's fan-out), exposed with ``prometheus_client``.

Nothing is instrumented by hand where an event already says it: counters and
histograms move in :meth:`Metrics.observe`, a store subscriber on the I/O
loop. Gauges that describe "now" (positions by state, health, the store's
backlog) are set when /metrics is scraped, from the same status /health uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from core.events import Event

CONTENT_TYPE = CONTENT_TYPE_LATEST
_FINDINGS = ("untracked", "phantoms", "mismatches", "strays", "zombies")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter("tradebot_events", "Committed events by type and severity", ["type", "severity"], registry=r)
        self.requests = Counter("tradebot_exchange_requests", "Exchange requests by call and outcome", ["call", "outcome"], registry=r)
        self.request_seconds = Histogram(
            "tradebot_exchange_request_seconds", "Exchange request latency", ["call"], registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.throttled = Counter("tradebot_exchange_throttled", "Rate-limit pauses by call", ["call"], registry=r)
        self.stops_placed = Counter("tradebot_stops_placed", "Stops placed (a first stop or a re-placed one) by kind", ["kind"], registry=r)
        self.stop_moves = Counter("tradebot_stop_moves", "Stop moves by reason", ["reason"], registry=r)
        self.findings = Counter("tradebot_reconcile_findings", "Reconcile findings by kind", ["kind"], registry=r)
        self.alerts = Counter("tradebot_alerts", "Alert deliveries by rule, sink and outcome", ["rule", "sink", "outcome"], registry=r)
        self.restarts = Counter("tradebot_actor_restarts", "Actor restarts by child", ["child"], registry=r)
        self.waves = Counter("tradebot_signal_waves", "Signal waves finished", registry=r)
        self.wave_opens = Histogram("tradebot_signal_wave_opens", "Positions opened per wave", registry=r, buckets=(0, 1, 2, 3, 5, 10, 20))
        self.unprotected_seconds = Histogram(
            "tradebot_unprotected_seconds", "Unprotected windows: entry filled (or adopted) -> stop placed, stop lost -> a stop placed again", registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self._unprotected_from: dict[str, int] = {}  # position id -> when its open window began (ms)
        self.positions = Gauge("tradebot_positions", "Open positions by state", ["state"], registry=r)
        self.unprotected = Gauge("tradebot_positions_unprotected", "Open positions with a filled entry and no live stop, per the bot's records", registry=r)
        self.healthy = Gauge("tradebot_healthy", "1 when /health answers 200", registry=r)
        self.uptime = Gauge("tradebot_uptime_seconds", "Seconds since the bot started", registry=r)
        self.store_backlog = Gauge("tradebot_store_backlog", "Events appended, not yet committed", registry=r)
        self.store_commit = Gauge("tradebot_store_last_commit_seconds", "The last batch's transaction time", registry=r)
        self.dropped = Gauge("tradebot_fanout_dropped", "Committed events a subscriber lost to overflow", ["subscriber"], registry=r)
        self._children: dict[tuple[str, Any], Any] = {}
        self._request_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe(self, events: Iterable[Event]) -> None:
        """A store subscriber: move counters for committed events (on the I/O loop, the writer's: cheap,
        so each label set's child is looked up once and kept)."""
        children = self._children
        for ev in events:
            t = ev.type
            key = (t, ev.severity)
            child = children.get(key)
            if child is None:
                child = children[key] = self.events.labels(t, ev.severity.label)
            child.inc()
            d = ev.data
            if t == "exchange.request":
                op, outcome = str(d.get("op", "?")), str(d.get("outcome", "?"))
                pair = self._request_children.get((op, outcome))
                if pair is None:
                    pair = self._request_children[(op, outcome)] = (self.requests.labels(op, outcome), self.request_seconds.labels(op))
                pair[0].inc()
                if isinstance(d.get("latency_ms"), (int, float)):
                    pair[1].observe(d["latency_ms"] / 1000)
            elif t == "exchange.throttled":
                self.throttled.labels(str(d.get("op", "?"))).inc()
            elif t == "position.stop_placed":
                self.stops_placed.labels(str(d.get("kind", "?"))).inc()
            elif t == "position.stop_moved":
                self.stop_moves.labels(str(d.get("reason", "?"))).inc()
            elif t == "sync.reconciled":
                for kind in _FINDINGS:
                    n = len(d.get(kind) or ())
                    if n:
                        self.findings.labels(kind).inc(n)
            elif t in ("alert.sent", "alert.failed"):
                self.alerts.labels(str(d.get("rule")), str(d.get("sink")), "sent" if t == "alert.sent" else "dropped" if d.get("dropped") else "failed").inc()
            elif t == "supervisor.child_restarted":
                self.restarts.labels(str(d.get("child", "?"))).inc()
            elif t == "intake.wave_finished":
                self.waves.inc()
                if isinstance(d.get("confirmed"), int):
                    self.wave_opens.observe(d["confirmed"])
            if t in _WINDOW_OPENS and ev.position_id:
                self._unprotected_from.setdefault(ev.position_id, ev.ts_ms)
            elif t in _WINDOW_CLOSES and ev.position_id:
                began = self._unprotected_from.pop(ev.position_id, None)
                if began is not None:
                    self.unprotected_seconds.observe(max(0, ev.ts_ms - began) / 1000)

    def set_now(self, status: dict[str, Any] | None, positions: list[dict[str, Any]], dropped: dict[str, int]) -> None:
        """Gauges at scrape time: the status (None: the supervisor did not answer) and the projection."""
        self.healthy.set(1 if status and status.get("healthy") else 0)
        if status:
            self.uptime.set(status.get("uptime_s", 0))
            store = status.get("store", {})
            self.store_backlog.set(store.get("backlog", 0))
            self.store_commit.set(store.get("last_commit_ms", 0) / 1000)
        self.positions.clear()
        by_state: dict[str, int] = {}
        for p in positions:
            by_state[str(p.get("state"))] = by_state.get(str(p.get("state")), 0) + 1
        for state, n in by_state.items():
            self.positions.labels(state).set(n)
        self.unprotected.set(sum(1 for p in positions if is_unprotected(p)))
        for name, n in dropped.items():
            self.dropped.labels(name).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_NOT_FILLED = ("pending_entry", "entry_placed")
#: An unprotected window opens when a position holds a quantity with no stop, and closes when a stop
#: is placed or the position is flat (a stop move places the new stop first: no window).
_WINDOW_OPENS = frozenset({"position.entry_filled", "position.adopted", "position.stop_lost"})
_WINDOW_CLOSES = frozenset({"position.stop_placed", "position.closed", "position.rolled_back", "position.stop_filled"})


def is_unprotected(projection: dict[str, Any]) -> bool:
    """An open position (a row of the store's projection) whose entry filled and that has no stop order."""
    return bool(projection.get("is_open")) and projection.get("state") not in _NOT_FILLED and not projection.get("stop_order_id")
