"""Signal transport: the real aiohttp server and client on 127.0.0.1, on a real I/O loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiohttp import WSMsgType, web

from adapters.io_loop import IOLoop
from adapters.markets import Markets
from adapters.signal_client import ClientState, SignalClient
from adapters.signal_server import SignalServer, load_replay, main
from tests.conftest import SHARED, eventually
from core.signal_protocol import WAVE_MS, DecodeKind, RecentIds, decode, wave_of

MARKETS = {"paper": Markets.from_file(SHARED / "data/markets/binanceusdm-linear.json")}
DEMO = Path(__file__).resolve().parents[1] / "demo" / "waves.jsonl"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def replay(n: int) -> list[dict[str, Any]]:
    symbols = ["BTCUSDT", "ETH/USDT:USDT", "XRPUSDT"]
    return [
        {"wave_offset_min": 15 * w, "signals": [{"symbol": s, "action": "buy" if i % 2 else "sell", "score_week": 0.5 + w / 100, "score_month": 0.4} for i, s in enumerate(symbols)]}
        for w in range(n)
    ]


class Recorder:
    """The consumer side: frames and state events, appended from the loop thread."""

    def __init__(self) -> None:
        self.frames: list[bytes | str] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def on_message(self, frame: bytes | str) -> None:
        with self._lock:
            self.frames.append(frame)

    def on_state(self, event: str, details: dict[str, Any]) -> None:
        with self._lock:
            self.events.append((event, details))

    def named(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for e, d in self.events if e == event]

    def messages(self) -> list[dict[str, Any]]:
        with self._lock:
            frames = list(self.frames)
        out = []
        for f in frames:
            try:
                m = json.loads(f)
            except ValueError:
                continue  # a raw bad frame: decode() judges those
            out.append(m if isinstance(m, dict) else {})
        return out

    def waves(self) -> list[int]:
        return [m["wave_ts_ms"] for m in self.messages() if m.get("type") == "batch"]


class Harness:
    def __init__(self, io: IOLoop) -> None:
        self.io = io
        self._stops: list[Any] = []

    def server(self, **kw: Any) -> SignalServer:
        kw.setdefault("heartbeat_s", 60.0)
        server = self.io.run(SignalServer(**kw).start(), 5)
        self._stops.append(server)
        return server

    def client(self, url: str, rec: Recorder, **kw: Any) -> SignalClient:
        kw.setdefault("on_message", rec.on_message)
        kw.setdefault("heartbeat_s", 1.0)
        kw.setdefault("dead_after_s", 5.0)
        kw.setdefault("backoff_initial_s", 0.05)
        kw.setdefault("backoff_max_s", 0.2)
        client = SignalClient(url, on_state=rec.on_state, seed=7, **kw)
        self.io.run(client.start(), 5)
        self._stops.append(client)
        return client

    def close(self) -> None:
        for thing in reversed(self._stops):
            self.io.run(thing.stop(), 10)


@pytest.fixture
def harness(io_loop: IOLoop) -> Iterator[Harness]:
    h = Harness(io_loop)
    yield h
    h.close()


def test_client_receives_published_batches_in_order(harness: Harness) -> None:
    server = harness.server(replay=replay(4))
    rec = Recorder()
    client = harness.client(server.url, rec)
    eventually(lambda: rec.named("subscribed"), what="subscribed")
    published = [harness.io.run(server.publish_next(), 5) for _ in range(4)]
    assert harness.io.run(server.publish_next(), 5) is None  # replay exhausted
    eventually(lambda: len(rec.waves()) == 4, what="four batches")
    assert rec.waves() == published and published == sorted(published) and all(w % WAVE_MS == 0 for w in published)
    assert published[-1] == wave_of(now_ms())  # the replay ends at the current wave
    assert [m["type"] for m in rec.messages()][:2] == ["hello", "subscribed"]
    seen = RecentIds()
    results = [decode(f, markets_by_exchange=MARKETS, now_ms=now_ms(), seen_ids=seen) for f in rec.frames]
    batches = [r for r in results if r.kind == DecodeKind.BATCH]
    assert all(not r.rejected and len(r.accepted) == 3 for r in batches)
    assert {a.symbol for r in batches for a in r.accepted} == {"BTCUSDT", "ETHUSDT", "XRPUSDT"}
    assert client.state == ClientState.CONNECTED and client.stats.last_wave_ts_ms == published[-1]
    assert client.stats.reconnects == 0 and client.stats.dropped == 0


def test_server_restart_on_the_same_port_resubscribes_without_gap_or_duplicate(harness: Harness) -> None:
    server = harness.server(replay=replay(4))
    port = server.port
    rec = Recorder()
    client = harness.client(server.url, rec)
    eventually(lambda: rec.named("subscribed"), what="subscribed")
    w1, w2 = harness.io.run(server.publish_next(), 5), harness.io.run(server.publish_next(), 5)
    eventually(lambda: rec.waves() == [w1, w2], what="the first two waves")

    harness.io.run(server.stop(), 5)
    eventually(lambda: rec.named("disconnected"), what="the client to notice")
    w3 = harness.io.run(server.publish_next(), 5)  # published while the client is away
    harness.io.run(server.start(), 5)
    assert server.port == port
    eventually(lambda: rec.waves() == [w1, w2, w3], what="the missed wave")
    w4 = harness.io.run(server.publish_next(), 5)
    eventually(lambda: len(rec.waves()) == 4, what="the live wave after the reconnect")

    assert rec.waves() == [w1, w2, w3, w4]  # none lost, none twice
    assert server.subscriptions == [None, w2]  # resubscribed from the newest wave it had
    assert [m["replay_waves"] for m in rec.messages() if m["type"] == "subscribed"] == [0, 1]
    connected = rec.named("connected")
    assert [(c["reconnect"], c["since_wave_ts_ms"]) for c in connected] == [(False, None), (True, w2)]
    assert rec.named("disconnected")[0]["reason"] == "closed by server" and rec.named("backoff")
    assert client.stats.reconnects == 1 and client.state == ClientState.CONNECTED
    events = [e for e, _ in rec.events]
    assert events.index("disconnected") < events.index("backoff") < len(events) - 1 - events[::-1].index("connected")


class BlackHole:
    """A WebSocket server that accepts and then never answers: no pong, no frame."""

    def __init__(self) -> None:
        self.pings = 0
        self.connections = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> BlackHole:
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{self.runner.addresses[0][1]}/ws"
        return self

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=False, timeout=0.5)
        await ws.prepare(request)
        self.connections += 1
        async for msg in ws:
            if msg.type is WSMsgType.PING:
                self.pings += 1
        return ws

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def test_a_silent_connection_is_declared_dead_and_reconnected(harness: Harness) -> None:
    hole = harness.io.run(BlackHole().start(), 5)
    harness._stops.append(hole)
    rec = Recorder()
    client = harness.client(hole.url, rec, heartbeat_s=0.1, dead_after_s=0.3)
    eventually(lambda: len(rec.named("dead")) >= 2 and len(rec.named("connected")) >= 3, what="two dead connections and a reconnect")
    assert hole.pings >= 2  # the client did ping
    assert all(d["reason"] == "dead" for d in rec.named("disconnected")[:2])
    assert client.stats.reconnects >= 2 and hole.connections >= 3
    assert [d["attempt"] for d in rec.named("backoff")][:2] == [1, 2]  # no frame ever heard: backoff keeps growing


def test_a_quiet_but_live_connection_is_not_declared_dead(harness: Harness) -> None:
    server = harness.server(heartbeat_s=0.05)
    rec = Recorder()
    client = harness.client(server.url, rec, heartbeat_s=0.1, dead_after_s=0.3)
    eventually(lambda: client.stats.heartbeats >= 15, what="0.75 s of heartbeats")
    assert not rec.named("dead") and client.stats.connects == 1 and client.state == ClientState.CONNECTED
    assert [m["type"] for m in rec.messages()] == ["hello", "subscribed"]  # heartbeats are not delivered


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


def test_overflow_drops_the_oldest_and_reports_the_count(harness: Harness) -> None:
    server = harness.server()
    rec = Recorder()
    gate = harness.io.run(_new_event(), 5)

    def slow_consumer(frame: bytes | str) -> Any:
        rec.on_message(frame)
        return gate.wait()  # back-pressure: the next frame waits until this one is "handled"

    client = harness.client(server.url, rec, on_message=slow_consumer, buffer_size=5)
    eventually(lambda: rec.named("subscribed") and client.stats.delivered == 1, what="hello in the consumer's hands")
    base = wave_of(now_ms()) - 20 * WAVE_MS
    published = [harness.io.run(server.publish([{"symbol": "BTCUSDT"}], wave_ts_ms=base + i * WAVE_MS), 5) for i in range(20)]
    eventually(lambda: client.stats.messages == 22, what="all frames at the client")  # hello, subscribed, 20 batches

    stats = client.stats
    assert (stats.dropped, stats.buffered) == (16, 5)  # 22 - 1 in the consumer's hands - 5 kept
    assert len(rec.named("overflow_started")) == 1 and not rec.named("overflow")
    harness.io.loop.call_soon_threadsafe(gate.set)
    eventually(lambda: client.stats.delivered == 6, what="the buffer to drain")
    assert rec.waves() == published[-5:]  # the newest survive
    (burst,) = rec.named("overflow")
    assert (burst["dropped"], burst["total_dropped"], burst["buffer_size"]) == (16, 16, 5)


def test_backoff_grows_with_jitter_and_stop_ends_it(harness: Harness, io_loop: IOLoop) -> None:
    server = harness.server()
    url = server.url
    io_loop.run(server.stop(), 5)  # nothing listens on this port now
    rec = Recorder()
    client = harness.client(url, rec, backoff_initial_s=0.01, backoff_max_s=0.08)
    eventually(lambda: len(rec.named("backoff")) >= 6, what="six backoffs")
    delays = [(d["attempt"], d["delay_s"]) for d in rec.named("backoff")[:6]]
    for attempt, delay in delays:
        ceiling = min(0.08, 0.01 * 2 ** (attempt - 1))
        assert ceiling / 2 - 1e-3 <= delay <= ceiling + 1e-3
    assert [a for a, _ in delays] == [1, 2, 3, 4, 5, 6] and rec.named("connect_failed")
    io_loop.run(client.stop(), 5)
    assert client.state == ClientState.STOPPED and rec.events[-1][0] == "stopped"


def test_the_demo_waves_end_to_end(harness: Harness) -> None:
    entries = load_replay(DEMO)
    server = harness.server(replay=entries)
    rec = Recorder()
    harness.client(server.url, rec)
    eventually(lambda: rec.named("subscribed"), what="subscribed")
    while harness.io.run(server.publish_next(), 5) is not None:
        pass
    eventually(lambda: len(rec.waves()) == 6 and len(rec.frames) == 10, what="six waves and two raw frames")
    seen = RecentIds()
    results = [decode(f, markets_by_exchange=MARKETS, now_ms=now_ms(), seen_ids=seen) for f in rec.frames]
    reasons = " | ".join(x.reason for r in results for x in r.rejected)
    for expected in ("unknown symbol 'FOOUSDT'", "score_week is negative", "Invalid enum value 'hold'", "missing required field `score_month`", "score_week is NaN", "unknown exchange 'kraken'", "duplicate signal id 'demo-dup-1'", "malformed JSON", "not a JSON object"):
        assert expected in reasons
    assert sum("raw" in e for e in entries) == 2
    total = sum(len(e["signals"]) for e in entries if "signals" in e)
    assert 6 * 12 <= total <= 6 * 20
    assert sum(len(r.accepted) for r in results) == total - 7  # 7 bad signals; 2 bad frames besides


def test_a_background_replay_survives_garbage_collection_and_keeps_serving(harness: Harness) -> None:
    """The bundled server's replay, started and forgotten (as the wiring does): after its waves it
    waits forever; asyncio holds tasks only weakly, so before, a collection destroyed it ("Task was
    destroyed but it is pending!") and the server closed every connection mid-run (code 1001)."""
    server = harness.server(replay=replay(2), waves_every_s=0.05)
    rec = Recorder()
    harness.client(server.url, rec)
    eventually(lambda: rec.named("subscribed"), what="subscribed")
    harness.io.run(server.serve_in_background(first_delay_s=0.0), 5)
    eventually(lambda: len(rec.waves()) == 2, what="both waves")

    async def collect() -> None:
        import gc

        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)

    harness.io.run(collect(), 10)
    assert server.connections == 1 and server._serving is not None and not server._serving.done()
    assert not rec.named("disconnected")


def test_server_main_refuses_bad_arguments() -> None:
    assert main(["--every", "0"]) == 2
    assert main(["--replay", "/nonexistent/waves.jsonl"]) == 2
    assert main(["--no-such-flag"]) == 2
