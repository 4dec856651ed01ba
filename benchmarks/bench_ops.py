"""Operations: the event fan-out's cost on the store's append throughput (with vs without
subscribers, one run), and a critical event's commit -> a loopback webhook receiving its alert."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

from actors.alert_rules import AlertState, evaluate, index
from adapters.alert_sinks import Sink
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from adapters.metrics import Metrics
from benchmarks._util import row, summary_us
from core.config import AlertSink, parse_config
from core.events import Event, Severity

N = 30_000


def _throughput(path: Path, io: IOLoop, subscribers: bool) -> float:
    store = EventStore(path, io).open()
    try:
        if subscribers:
            metrics = Metrics()
            rules = index(parse_config("").alerts.rules)
            store.subscribe("metrics", metrics.observe)
            store.subscribe("alerts", lambda evs: [e for e in evs if e.type in rules])
        started = time.perf_counter()
        for i in range(N):
            store.append(Event(type="exchange.request", ts_ms=i, actor="bench", data={"op": "fetch_positions", "outcome": "ok", "latency_ms": 1.5}))
        store.flush(60)
        return N / (time.perf_counter() - started)
    finally:
        store.close()


def _webhook_latency(path: Path, io: IOLoop, n: int = 200) -> list[int]:
    arrived: dict[int, int] = {}
    got = threading.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        arrived[int(body["event_id"])] = time.perf_counter_ns()
        got.set()
        return web.json_response({"ok": True})

    async def serve() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/alerts", hook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    runner, port = io.run(serve(), 10)
    store = EventStore(path, io).open()
    sink = Sink(AlertSink(kind="webhook", url=f"http://127.0.0.1:{port}/alerts"), io, lambda d, a: None)
    io.run(sink.start(), 10)
    rules, state = index(parse_config("").alerts.rules), AlertState()
    committed: dict[int, int] = {}

    def on_commit(events: list[Event]) -> None:  # the alert path, in-loop (rules + sink), minus the actor hop
        for ev in events:
            for alert in evaluate(state, rules, ev, 0):
                committed[alert.event_id or 0] = time.perf_counter_ns()
                sink.submit(alert.key, {"event_id": alert.event_id, "rule": alert.rule}, alert.message())

    store.subscribe("alerts", on_commit)
    try:
        for i in range(n):
            got.clear()
            store.append(Event(type="position.close_gave_up", ts_ms=i, actor="bench", position_id=f"p{i}", severity=Severity.CRITICAL))
            got.wait(10)
        deadline = time.monotonic() + 10
        while len(arrived) < n and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        io.run(sink.stop(), 10)
        store.close()
        io.run(runner.cleanup(), 10)
    return [arrived[k] - committed[k] for k in arrived if k in committed]


def run() -> None:
    print("ops: event fan-out and alert delivery")
    io = IOLoop("bench-ops").start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bare = _throughput(Path(tmp) / "a.db", io, False)
            fanned = _throughput(Path(tmp) / "b.db", io, True)
            row(f"store appends/s, no subscribers ({N:,} events)", f"{bare:,.0f}")
            row("store appends/s, metrics + alert subscribers", f"{fanned:,.0f}  (ratio {fanned / bare:.2f})")
            samples = _webhook_latency(Path(tmp) / "c.db", io)
            row("critical event committed -> webhook received", summary_us(samples))
    finally:
        io.stop()


if __name__ == "__main__":
    asyncio.run(asyncio.sleep(0))
    run()
