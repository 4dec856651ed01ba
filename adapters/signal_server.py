"""The bundled signal server: the signal protocol on loopback, for demos and tests.

It serves ``/ws`` (see ``core/signal_protocol.py``): ``hello`` on
connect; on ``subscribe``, ``subscribed`` and the waves it already published
after ``since_wave_ts_ms``, then live batches; a ``heartbeat`` every
``heartbeat_s``. Each connection has its own outgoing queue filled
synchronously, so a backlog and the live stream never interleave; a client
whose queue reaches ``queue_max`` frames is disconnected (it resubscribes and
catches up) rather than silently losing frames.

Replay file (JSON lines; blank lines and ``#`` comments skipped), one wave per
line::

    {"wave_offset_min": 15, "signals": [{"symbol": "BTCUSDT", "action": "buy",
                                         "score_week": 0.82, "score_month": 0.64}, ...]}

The server stamps each signal with ``id`` (``sig-<wave_ts_ms>-<nn>``),
``exchange`` (``paper``), ``wave_ts_ms`` and ``created_ms`` unless the line
gives them, and passes every other field through untouched, so a file can
carry bad signals on purpose to show the consumer's rejections. A line that
is not a wave (bad JSON, or not shaped like the above) is sent verbatim as a
frame of its own when its turn comes.

Wave timestamps: the replay's timeline is placed on the 15-minute grid of
``clock_ms`` so that its *last* wave is the clock's current bucket at the
first publish: ``wave_ts = wave_of(now) - offset(last) + offset(wave)``.
Waves are therefore strictly increasing and never in the future, whatever
the speed-up (``waves_every_s``); keep a file's span under the consumer's
maximum age (2 h).

Restart: :meth:`stop` then :meth:`start` on the same instance binds the same
port again and keeps what was published, so a client that resubscribes gets
the waves it missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal as os_signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from loguru import logger

from core.signal_protocol import PROTOCOL_VERSION, WAVE_MS, Heartbeat, Hello, Subscribed, decode_subscribe, encode, wave_of

log = logger.bind(actor="signal_server")

DEFAULT_PORT = 8765
DEFAULT_REPLAY = Path(__file__).resolve().parents[1] / "demo" / "waves.jsonl"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def load_replay(path: Path) -> list[dict[str, Any]]:
    """Replay entries: wave dicts as written, and ``{"raw": line}`` for lines that are not waves."""
    out: list[dict[str, Any]] = []
    for line in Path(path).read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            entry = json.loads(text)
        except ValueError:
            out.append({"raw": text})
            continue
        out.append(entry if _is_wave(entry) else {"raw": text})
    return out


def _is_wave(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and type(entry.get("wave_offset_min")) is int
        and entry["wave_offset_min"] >= 0
        and isinstance(entry.get("signals"), list)
    )


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, queue_max: int) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[str] = asyncio.Queue(queue_max)
        self.subscribed = False
        self.overflowed = False


class SignalServer:
    """Serves the signal protocol on ``ws://host:port/ws``; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        replay: list[dict[str, Any]] | None = None,
        clock_ms: Callable[[], int] = _wall_ms,
        waves_every_s: float = 30.0,
        heartbeat_s: float = 20.0,
        exchange: str = "paper",
        queue_max: int = 10_000,
        history_waves: int = 96,
        close_timeout_s: float = 2.0,
        name: str = "tradebot-signal-server",
    ) -> None:
        self.host, self._port = host, port
        self.replay = list(replay or [])
        self.clock_ms = clock_ms
        self.waves_every_s, self.heartbeat_s = waves_every_s, heartbeat_s
        self.exchange, self.queue_max, self.history_waves = exchange, queue_max, history_waves
        self.close_timeout_s, self.name = close_timeout_s, name
        self._cursor = 0
        self._anchor_ms: int | None = None
        offsets = [_aligned_offset_ms(e) for e in self.replay if _is_wave(e)]
        self._last_offset_ms = max(offsets, default=0)
        self.history: list[tuple[int, str]] = []  # (wave_ts_ms, frame), oldest first
        self.subscriptions: list[int | None] = []  # since_wave_ts_ms of every subscribe received
        self._conns: set[_Conn] = set()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat_task: asyncio.Task[None] | None = None
        #: The background replay (serve_in_background). Held here: asyncio keeps only weak
        #: references to tasks, and one waiting forever on its own future is garbage otherwise.
        self._serving: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self._port}/ws"

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def published(self) -> list[int]:
        """Wave timestamps published so far (within the kept history)."""
        return [ts for ts, _ in self.history]

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def start(self) -> SignalServer:
        """Bind (the same port again after a stop) and serve; call on the loop."""
        if self._runner is not None:
            return self
        app = web.Application()
        app.router.add_get("/ws", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.close_timeout_s)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        if self._port == 0:
            self._port = runner.addresses[0][1]
        self._runner = runner
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="signal-server-heartbeat")
        log.info("signal server listening on {}", self.url)
        return self

    async def stop(self) -> None:
        """Close every connection (code 1001) and stop listening; history is kept."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self._serving is not None and self._serving is not asyncio.current_task():
            self._serving.cancel()
        conns = list(self._conns)
        await asyncio.gather(
            *(asyncio.wait_for(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping"), self.close_timeout_s) for c in conns),
            return_exceptions=True,
        )
        await runner.cleanup()
        log.info("signal server on port {} stopped", self._port)

    async def run_forever(self, first_delay_s: float | None = None) -> None:
        """Serve, publishing the next replay wave every ``waves_every_s`` (the first after
        ``first_delay_s``, default the same interval), until cancelled."""
        await self.start()
        try:
            delay = self.waves_every_s if first_delay_s is None else first_delay_s
            while self._cursor < len(self.replay):
                await asyncio.sleep(delay)
                delay = self.waves_every_s
                await self.publish_next()
            log.info("signal server: replay finished ({} waves); still serving", len(self.history))
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def serve_in_background(self, first_delay_s: float | None = None) -> asyncio.Task[None]:
        """:meth:`run_forever` as a task the server holds (call on the loop); cancel it, or
        :meth:`stop`, to end it."""
        await self.start()
        if self._serving is None or self._serving.done():
            self._serving = asyncio.create_task(self.run_forever(first_delay_s), name="signal-server-replay")
        return self._serving

    # ------------------------------------------------------------------ publishing

    async def publish_next(self) -> int | None:
        """Publish the next replay wave (sending any raw lines before it); its wave_ts_ms, or None at the end."""
        while self._cursor < len(self.replay):
            entry = self.replay[self._cursor]
            self._cursor += 1
            if not _is_wave(entry):
                self._broadcast(str(entry.get("raw", json.dumps(entry))))
                continue
            now = self.clock_ms()
            if self._anchor_ms is None:
                self._anchor_ms = wave_of(now) - self._last_offset_ms
            wave_ts = self._anchor_ms + _aligned_offset_ms(entry)
            return self._publish_wave(entry["signals"], wave_ts, now)
        return None

    async def publish(self, signals: list[dict[str, Any]], *, wave_ts_ms: int | None = None) -> int:
        """Publish one wave of signal dicts (stamped like replay signals); its wave_ts_ms."""
        now = self.clock_ms()
        return self._publish_wave(signals, wave_of(now) if wave_ts_ms is None else wave_ts_ms, now)

    async def send_raw(self, frame: str) -> None:
        """Send ``frame`` as is to every subscriber (not kept for replay)."""
        self._broadcast(frame)

    def _publish_wave(self, signals: list[Any], wave_ts: int, now: int) -> int:
        if self.history and wave_ts <= self.history[-1][0]:
            raise ValueError(f"wave {wave_ts} is not after the last published wave {self.history[-1][0]}")
        stamped = [self._stamp(s, i, wave_ts, now) for i, s in enumerate(signals)]
        frame = encode({"type": "batch", "wave_ts_ms": wave_ts, "signals": stamped}).decode()
        self.history.append((wave_ts, frame))
        del self.history[: -self.history_waves]
        self._broadcast(frame)
        log.info("signal server: published wave {} ({} signals) to {} subscribers", wave_ts, len(stamped), sum(c.subscribed for c in self._conns))
        return wave_ts

    def _stamp(self, sig: Any, index: int, wave_ts: int, now: int) -> Any:
        if not isinstance(sig, dict):
            return sig  # passed through: the consumer rejects it
        out: dict[str, Any] = {"id": f"sig-{wave_ts}-{index:02d}", "exchange": self.exchange}
        out.update(sig)
        out.setdefault("wave_ts_ms", wave_ts)
        out.setdefault("created_ms", now)
        return out

    def _broadcast(self, frame: str) -> None:
        for conn in list(self._conns):
            if conn.subscribed:
                self._put(conn, frame)

    def _put(self, conn: _Conn, frame: str) -> None:
        if conn.overflowed:
            return
        try:
            conn.queue.put_nowait(frame)
        except asyncio.QueueFull:
            conn.overflowed = True
            log.warning("signal server: a client fell {} frames behind; disconnecting it", self.queue_max)
            self._spawn(conn.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ connections

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            frame = encode(Heartbeat(ts_ms=self.clock_ms())).decode()
            for conn in list(self._conns):
                self._put(conn, frame)

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, timeout=self.close_timeout_s, max_msg_size=64 * 1024)
        await ws.prepare(request)
        conn = _Conn(ws, self.queue_max)
        self._conns.add(conn)
        writer = asyncio.create_task(self._write(conn), name="signal-server-writer")
        self._put(conn, encode(Hello(protocol=PROTOCOL_VERSION, server=self.name, server_time_ms=self.clock_ms())).decode())
        peer = request.remote
        log.info("signal server: client {} connected", peer)
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                sub = decode_subscribe(msg.data)
                if isinstance(sub, str):
                    log.warning("signal server: ignored a frame from {}: {}", peer, sub)
                    continue
                self._subscribe(conn, sub.since_wave_ts_ms)
        finally:
            self._conns.discard(conn)
            writer.cancel()
            log.info("signal server: client {} disconnected", peer)
        return ws

    def _subscribe(self, conn: _Conn, since: int | None) -> None:
        """Answer, queue the backlog and join the live stream in one step (no await: no gap, no overlap)."""
        self.subscriptions.append(since)
        backlog = [frame for ts, frame in self.history if since is not None and ts > since]
        self._put(conn, encode(Subscribed(since_wave_ts_ms=since, replay_waves=len(backlog))).decode())
        for frame in backlog:
            self._put(conn, frame)
        conn.subscribed = True

    async def _write(self, conn: _Conn) -> None:
        try:
            while True:
                frame = await conn.queue.get()
                await conn.ws.send_str(frame)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("signal server: send failed: {}", exc)


def _aligned_offset_ms(entry: dict[str, Any]) -> int:
    return (int(entry["wave_offset_min"]) * 60_000) // WAVE_MS * WAVE_MS


def main(argv: list[str] | None = None) -> int:
    """``tradebot signals serve [--replay FILE] [--host H] [--port N] [--every S] [--heartbeat S]``."""
    parser = argparse.ArgumentParser(prog="tradebot signals serve", description="Serve the signal protocol on loopback, replaying a waves file.")
    parser.add_argument("--replay", type=Path, default=DEFAULT_REPLAY, help="waves file (JSON lines); default: demo/waves.jsonl")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--every", type=float, default=30.0, dest="waves_every_s", help="seconds between waves (demo speed-up; 900 = real time)")
    parser.add_argument("--heartbeat", type=float, default=20.0, dest="heartbeat_s", help="seconds between heartbeats")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.waves_every_s <= 0 or args.heartbeat_s <= 0:
        print("--every and --heartbeat must be positive")
        return 2
    try:
        replay = load_replay(args.replay)
    except OSError as exc:
        print(f"cannot read the replay file: {exc}")
        return 2
    server = SignalServer(args.host, args.port, replay=replay, waves_every_s=args.waves_every_s, heartbeat_s=args.heartbeat_s)

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None  # serve() runs as asyncio.run's main task
        loop = asyncio.get_running_loop()
        for sig in (os_signal.SIGINT, os_signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        print(f"serving {server.url}: {sum(_is_wave(e) for e in replay)} waves from {args.replay}, one every {args.waves_every_s:g} s")
        await server.run_forever()

    try:
        asyncio.run(serve())
    except asyncio.CancelledError:
        pass
    except OSError as exc:
        print(f"cannot serve on {args.host}:{args.port}: {exc}")
        return 1
    return 0
