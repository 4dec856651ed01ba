"""Operations, in one run: the event fan-out's cost on the store's append throughput (the writer
alone, then 1 and 3 subscribers, as ratios to it); a critical event's commit -> a loopback webhook
receiving its alert; and /health and /metrics latency over real HTTP with 100 and 1,000 real
position owners (each with its stop on the in-process paper exchange), idle and while every owner
makes its first trailing stop move at once. ``TRADEBOT_BENCH_OPS_SIZES=100,1000`` picks the sizes."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
import types
import urllib.request
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from actors.alert_rules import index
from actors.messages import MarkPrice
from adapters.event_store import EventStore
from adapters.http_server import HttpServer
from adapters.io_loop import IOLoop
from adapters.metrics import Metrics
from benchmarks._util import pct, row, summary_us
from benchmarks.bench_positions import Bench
from core.clock import RealClock
from core.config import parse_config
from core.events import Event, Severity
from supervision.actor import ActorContext
from supervision.directory import Directory
from tradebot.ops import health_routes, ops_children

N = 30_000


def _throughput(path: Path, io: IOLoop, subscribers: int) -> float:
    """Appends/s until all are committed, with 0, 1 (metrics), or 3 (metrics, the alert filter, a counter) subscribers."""
    store = EventStore(path, io).open()
    try:
        rules = index(parse_config("").alerts.rules)
        seen = [0]
        subs = [("metrics", Metrics().observe), ("alerts", lambda evs: [e for e in evs if e.type in rules]), ("count", lambda evs: seen.__setitem__(0, seen[0] + len(evs)))]
        for name, fn in subs[: {0: 0, 1: 1, 3: 3}[subscribers]]:
            store.subscribe(name, fn)
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
    committed: dict[int, int] = {}
    store.subscribe("stamp", lambda evs: committed.update((e.id or 0, time.perf_counter_ns()) for e in evs))  # first: at commit
    config = parse_config(f'[alerts]\ncooldown_secs = 0\n[[alerts.sinks]]\nkind = "webhook"\nurl = "http://127.0.0.1:{port}/alerts"\n', base_dir=path.parent)
    clock, directory = RealClock(), Directory()
    runtime = types.SimpleNamespace(config=config, io=io, store=store, directory=directory, resources=[], metrics=None)
    [spec] = ops_children(runtime)  # the bot's own wiring: forward on the fan-out -> the alert actor -> the sink
    ref = spec.factory("alerts", ActorContext(clock=clock, io=io, store=store, config=config, directory=directory))
    directory.register("alerts", ref)
    try:
        for i in range(n):
            got.clear()
            store.append(Event(type="position.close_gave_up", ts_ms=clock.now_ms(), actor="bench", position_id=f"p{i}", severity=Severity.CRITICAL))
            got.wait(10)
        deadline = time.monotonic() + 10
        while len(arrived) < n and time.monotonic() < deadline:
            time.sleep(0.01)  # benchmark driver waiting for the last deliveries
    finally:
        ref.stop()
        for close in reversed(runtime.resources):
            close()
        store.close()
        io.run(runner.cleanup(), 10)
        clock.close()
    return [arrived[k] - committed[k] for k in arrived if k in committed]


def _get_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        resp.read()
    return (time.perf_counter() - t0) * 1000


def _http_at(n: int) -> dict[str, list[float]]:
    """/health and /metrics latency (ms) with ``n`` real owners: idle, then during everyone's first stop move."""
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        b = Bench(tmp, n, None)
        server = None
        try:
            runtime = types.SimpleNamespace(store=b.store, supervisor=b.sup, metrics=Metrics())
            b.store.subscribe("metrics", runtime.metrics.observe)
            server = HttpServer(b.io, "127.0.0.1", 0)
            health_routes(server, runtime)
            server.start()
            b.open([m.id for m in b.markets])
            b.wait_opened(n, timeout_s=600)
            for path in ("health", "metrics"):
                out[f"{path} idle"] = [_get_ms(f"{server.url}/{path}") for _ in range(100)]
            # the load: every owner's first trailing move at once (+1.5 % activates trailing)
            refs = [b.ctx.directory.lookup(f"position:{m.id}:b{m.id}") for m in b.markets]
            now_ms = b.clock.now_ms()
            for ref, m in zip(refs, b.markets, strict=True):
                b.exchange.set_mark(m.symbol, Decimal(40700))
                ref.tell(MarkPrice(symbol=m.id, price=Decimal(40700), ts_ms=now_ms))
            busy: dict[str, list[float]] = {"health": [], "metrics": []}
            done = threading.Event()

            def sample() -> None:  # a scraper hitting both, back to back, for the whole burst
                while not done.is_set():
                    for path in ("health", "metrics"):
                        busy[path].append(_get_ms(f"{server.url}/{path}"))

            scraper = threading.Thread(target=sample, name="bench-scraper")
            scraper.start()
            deadline = time.monotonic() + 300
            moved = 0
            while time.monotonic() < deadline and moved < n:
                time.sleep(0.05)  # benchmark driver polling for the end of the burst
                moved = len(b.io.run(b.store.query(types=("position.stop_moved",), consistent=False), 60))
            done.set()
            scraper.join()
            out["health while moving"], out["metrics while moving"] = busy["health"], busy["metrics"]
            out["moved"] = [float(moved)]
        finally:
            if server is not None:
                server.stop()
            b.close()
    return out


def run() -> None:
    print("ops: event fan-out, alert delivery, /health and /metrics")
    io = IOLoop("bench-ops").start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rates: dict[int, float] = {}
            for rnd in range(3):  # interleaved, best of three each: the machine's load drifts
                for k in (0, 1, 3):
                    rates[k] = max(rates.get(k, 0.0), _throughput(Path(tmp) / f"t{k}-{rnd}.db", io, k))
            bare = rates[0]
            row(f"store appends/s, writer alone ({N:,} events, best of 3)", f"{bare:,.0f}")
            row("  with 1 subscriber (metrics)", f"{rates[1]:,.0f}  (ratio {rates[1] / bare:.2f})")
            row("  with 3 subscribers (metrics, alerts, a counter)", f"{rates[3]:,.0f}  (ratio {rates[3] / bare:.2f})")
            row("  fan-out cost per event, 3 subscribers", f"{(1 / rates[3] - 1 / bare) * 1e6:+.2f} us")
            samples = _webhook_latency(Path(tmp) / "c.db", io)
            row("critical event committed -> webhook received (actor path)", summary_us(samples))
    finally:
        io.stop()
    sizes = [int(x) for x in os.environ.get("TRADEBOT_BENCH_OPS_SIZES", "100,1000").split(",") if x.strip()]
    for n in sizes:
        got = _http_at(n)
        moved = int(got.pop("moved")[0])
        for name, ms in got.items():
            row(f"GET /{name}, {n:,} positions", f"p50 {pct(ms, 50):.1f} ms  p99 {pct(ms, 99):.1f} ms  (n={len(ms)})")
        if moved < n:
            row(f"  (only {moved} of {n} owners moved their stop)", "")


if __name__ == "__main__":  # alone, set up as `make bench` is (quiet logs, the runtime's GIL switch interval)
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    sys.setswitchinterval(parse_config("").runtime.gil_switch_interval_us / 1_000_000)
    asyncio.run(asyncio.sleep(0))
    run()
