"""/metrics agrees with the event store: real positions on the paper exchange, real actors and store,
the production ops wiring (metrics and the alert actor on the store's fan-out), scraped over HTTP and
parsed with prometheus_client's parser; every figure is recounted from the SQLite file on its own."""

from __future__ import annotations

import json
import sqlite3
import types
import urllib.request
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.position_state import PState, rebuild
from adapters.http_server import HttpServer
from adapters.io_loop import IOLoop
from core.events import Event, Severity
from core.messages import StartChild
from tests.alert_fakes import FakeReceiver
from tests.conftest import eventually
from tests.world import BTC, STOP_REFUSED, World, advance_until, is_close, is_stop, opened
from tradebot.ops import health_routes, ops_children


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    io = IOLoop("webhook-fake").start()
    r = FakeReceiver(io).start()
    yield r
    r.stop()
    io.stop()


@pytest.fixture
def extra_toml(receiver: FakeReceiver) -> str:
    return f'[[alerts.sinks]]\nkind = "webhook"\nurl = "{receiver.url}/alerts"\nbackoff_ms = 10\n'


@pytest.fixture
def scraped(world: World) -> Iterator[tuple[World, types.SimpleNamespace]]:
    """The world with the ops wiring added as a bot adds it: metrics, alert actor, /metrics over HTTP."""
    ctx = world.ctx
    runtime = types.SimpleNamespace(config=ctx.config, io=ctx.io, store=ctx.store, directory=ctx.directory, resources=[], metrics=None, supervisor=world.sup)
    for spec in ops_children(runtime):
        world.sup.tell(StartChild(spec=spec))
    eventually(lambda: ctx.directory.lookup("alerts") is not None, what="the alert actor")
    server = HttpServer(ctx.io, "127.0.0.1", 0)
    health_routes(server, runtime)
    server.start()
    runtime.url = server.url
    yield world, runtime
    server.stop()
    for close in reversed(runtime.resources):
        close()


def scrape(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return {f.name: f for f in text_string_to_metric_families(resp.read().decode())}


def samples(families: dict[str, Any], family: str, name: str, key: str) -> dict[str, float]:
    return {s.labels[key]: s.value for s in families[family].samples if s.name == name and s.value}


def from_the_file(world: World) -> tuple[list[Event], dict[str, Any]]:
    """Every event, read from the SQLite file by a connection of our own; positions rebuilt from them."""
    world.ctx.store.flush(10)
    db = sqlite3.connect(f"file:{world.ctx.store.path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, ts_ms, type, actor, position_id, severity, data FROM events ORDER BY id").fetchall()
    finally:
        db.close()
    events = [Event(id=i, ts_ms=ts, type=t, actor=a, position_id=p, severity=Severity(sev), data=json.loads(d)) for i, ts, t, a, p, sev, d in rows]
    by_position: dict[str, list[Event]] = {}
    for e in events:
        if e.position_id and e.type.startswith("position."):
            by_position.setdefault(e.position_id, []).append(e)
    return events, {pid: rebuild(evs) for pid, evs in by_position.items()}


def test_metrics_counters_and_gauges_match_what_the_store_holds(scraped: tuple[World, types.SimpleNamespace], receiver: FakeReceiver):
    world, runtime = scraped
    # p1: protected, then trailed (stop moves)
    world.open(pid="p1")
    opened(world, "p1")
    world.exchange.set_mark(BTC, Decimal("40600"))
    advance_until(world, lambda: (s := world.state("p1")).stop_reason == "trailing" and s.move_client_id is None, "p1 trailed")
    # p2: stop refused three times and the rollback refused too: an emergency stop, two critical alerts
    for _ in range(3):
        world.exchange.faults.fail_next("create_order", STOP_REFUSED(), when=is_stop)
    world.exchange.faults.fail_next("create_order", ccxt.InvalidOrder('binanceusdm {"code":-2022,"msg":"ReduceOnly Order is rejected."}'), when=is_close)
    world.exchange.set_mark("ETH/USDT:USDT", Decimal("2000"))
    world.open(symbol="ETHUSDT", pid="p2")
    advance_until(world, lambda: (s := world.state("p2")) is not None and s.stop_kind == "emergency", "p2 on its emergency stop")
    eventually(lambda: len(receiver.received) == 2, what="two alerts at the webhook")
    # p3: entry filled, its stop failed once and waits for a retry the (virtual) clock has not reached:
    # unprotected while we look.
    world.exchange.faults.fail_next("create_order", ccxt.ExchangeNotAvailable("binanceusdm 503 Service Unavailable"), count=5, when=is_stop)
    world.open(pid="p3")
    eventually(lambda: any(e.type == "position.stop_failed" for e in world.events("p3")), what="p3's stop failed")
    eventually(lambda: len([e for e in world.ctx.io.run(world.ctx.store.query(types=("alert.sent",)), 5)]) == 2, what="both deliveries recorded")

    # Nothing moves now (the clock stands still); the fan-out is asynchronous, so wait until the
    # events per type (for the types that only began after the wiring subscribed) agree, then compare all.
    def agree() -> tuple[dict[str, Any], list[Event], dict[str, Any]] | None:
        families = scrape(runtime.url)
        events, positions = from_the_file(world)
        per_type = Counter(e.type for e in events if e.type.startswith(("position.", "alert.")))
        exposed = {k: v for k, v in samples(families, "tradebot_events", "tradebot_events_total", "type").items() if k.startswith(("position.", "alert."))}
        return (families, events, positions) if exposed == dict(per_type) else None

    families, events, positions = eventually(agree, what="/metrics caught up with the store")
    of = lambda t: [e for e in events if e.type == t]  # noqa: E731

    open_by_state = Counter(s.state.value for s in positions.values() if s.state.is_open)
    assert samples(families, "tradebot_positions", "tradebot_positions", "state") == dict(open_by_state)
    assert sum(open_by_state.values()) == 3
    unprotected = [pid for pid, s in positions.items() if s.state.is_open and s.state not in (PState.PENDING_ENTRY, PState.ENTRY_PLACED) and s.stop_order_id is None]
    assert unprotected == ["p3"]
    assert families["tradebot_positions_unprotected"].samples[0].value == len(unprotected)

    placed = Counter(e.data["kind"] for e in of("position.stop_placed"))
    assert samples(families, "tradebot_stops_placed", "tradebot_stops_placed_total", "kind") == dict(placed)
    assert placed["emergency"] == 1 and sum(placed.values()) == 2
    moves = Counter(e.data["reason"] for e in of("position.stop_moved"))
    assert samples(families, "tradebot_stop_moves", "tradebot_stop_moves_total", "reason") == dict(moves)
    assert moves["trailing"] >= 1

    sent = Counter(e.data["rule"] for e in of("alert.sent"))
    got = {s.labels["rule"]: s.value for s in families["tradebot_alerts"].samples if s.name == "tradebot_alerts_total" and s.labels["outcome"] == "sent"}
    assert got == dict(sent) == {"rollback_failed": 1, "emergency_stop": 1}
    assert sorted(r["body"]["rule"] for r in receiver.received) == sorted(sent)

    # Unprotected windows: entry filled -> a stop placed (p1, and p2's emergency stop); p3's is still open.
    windows, began = [], {}
    for e in events:
        if e.position_id and e.type in ("position.entry_filled", "position.adopted", "position.stop_lost"):
            began.setdefault(e.position_id, e.ts_ms)
        elif e.position_id in began and e.type in ("position.stop_placed", "position.closed", "position.rolled_back", "position.stop_filled"):
            windows.append((e.ts_ms - began.pop(e.position_id)) / 1000)
    assert len(windows) == 2 and list(began) == ["p3"]
    hist = {s.name: s.value for s in families["tradebot_unprotected_seconds"].samples if not s.labels}
    assert hist["tradebot_unprotected_seconds_count"] == 2
    assert hist["tradebot_unprotected_seconds_sum"] == pytest.approx(sum(windows))
