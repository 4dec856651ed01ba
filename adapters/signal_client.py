"""WebSocket client for the signal feed; it lives on the I/O loop.

Create it anywhere, then ``io.run(client.start(), 5)``; everything after
that runs as tasks on the loop: one connection task (connect, subscribe,
read, reconnect with backoff), one ping task per connection and one delivery
task. Nothing here blocks the loop: backoff waits are ``asyncio.sleep``.

Connection life
    ``connecting`` -> ``connected`` -> (closed, failed or dead) -> ``backoff``
    -> ``connecting`` ... until :meth:`stop` (``stopped``). Each connect sends
    ``subscribe`` with the newest wave received so far (or the
    ``since_wave_ts_ms`` given at construction), so a resubscribe asks for
    exactly the waves it missed. Backoff is exponential from
    ``backoff_initial_s`` to ``backoff_max_s`` with "equal jitter" (half
    fixed, half random; ``seed`` makes it reproducible); it starts over once
    a connection has received a frame (the server really speaks).

Liveness
    A ping every ``heartbeat_s``. A connection on which nothing arrived (no
    frame, no pong, no server heartbeat) for ``dead_after_s`` is dead: it is
    closed without waiting for the peer and the client reconnects.

Buffer and overflow policy
    Frames go from the socket reader into a bounded FIFO of ``buffer_size``
    frames; a delivery task takes them out in order and calls
    ``on_message(frame)`` (str or bytes, as received; server heartbeats are
    consumed here and not delivered). The buffer survives reconnects. When it
    is full the **oldest** frame is dropped: the freshest data matters most to
    a trading bot, and a dropped wave is stale by the time it would be read.
    Drops are counted (``stats.dropped``) and reported per burst through
    ``on_state``: ``overflow_started`` at the first drop, then ``overflow``
    with the burst's count when delivery next moves on.

Callbacks
    Both run on the loop and must only hand things on (the bot's callbacks
    ``tell`` an actor). An exception in a callback is logged and ignored. If
    ``on_message`` returns an awaitable, delivery waits for it before the next
    frame: that is how a consumer applies back-pressure (and how the buffer
    can fill up at all). ``on_state(event, details)`` gets the events
    ``connecting``, ``connected``, ``subscribed``, ``connect_failed``,
    ``disconnected``, ``dead``, ``backoff``, ``overflow_started``,
    ``overflow``, ``stopped``.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import inspect
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from loguru import logger

from core.signal_protocol import WAVE_MS, Subscribe, encode

log = logger.bind(actor="signal_client")


class ClientState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPED = "stopped"


class ClientStats(msgspec.Struct, frozen=True, kw_only=True):
    connects: int  # successful connections
    reconnects: int  # successful connections after the first
    connect_failures: int
    messages: int  # frames put into the buffer (heartbeats excluded)
    heartbeats: int  # server heartbeats received
    delivered: int  # frames handed to on_message
    dropped: int  # frames dropped by the overflow policy
    buffered: int  # frames waiting now
    last_message_ms: int | None  # wall clock of the last frame of any kind
    last_wave_ts_ms: int | None  # newest wave received (sent in the next subscribe)


class _Peek(msgspec.Struct):
    """Just enough of a frame to track waves and liveness; everything else is ignored."""

    type: str = ""
    wave_ts_ms: Any = None
    signal: Any = None
    replay_waves: Any = None


_peek = msgspec.json.Decoder(_Peek)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SignalClient:
    """Auto-reconnecting signal feed client; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        on_message: Callable[[bytes | str], object],  # an awaitable result is awaited, any other is ignored
        on_state: Callable[[str, dict[str, Any]], object],  # the result is ignored
        heartbeat_s: float = 20.0,
        dead_after_s: float = 60.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        buffer_size: int = 10_000,
        seed: int | None = None,
        since_wave_ts_ms: int | None = None,
        connect_timeout_s: float = 10.0,
        close_timeout_s: float = 2.0,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        if heartbeat_s <= 0 or dead_after_s <= heartbeat_s:
            raise ValueError(f"need 0 < heartbeat_s < dead_after_s (got {heartbeat_s}, {dead_after_s})")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError(f"need 0 < backoff_initial_s <= backoff_max_s (got {backoff_initial_s}, {backoff_max_s})")
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self.url = url
        self._on_message = on_message
        self._on_state = on_state
        self.heartbeat_s, self.dead_after_s = heartbeat_s, dead_after_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.buffer_size = buffer_size
        self.connect_timeout_s, self.close_timeout_s = connect_timeout_s, close_timeout_s
        self._clock_ms = clock_ms
        self._rng = random.Random(seed)
        self._state = ClientState.STOPPED
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._buffer: collections.deque[bytes | str] = collections.deque()
        self._ready: asyncio.Event | None = None
        self._burst_dropped = 0
        self._last_wave: int | None = since_wave_ts_ms
        self._n = dict(connects=0, connect_failures=0, messages=0, heartbeats=0, delivered=0, dropped=0)
        self._last_message_ms: int | None = None

    # ------------------------------------------------------------------ public

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def stats(self) -> ClientStats:
        n = self._n
        return ClientStats(
            connects=n["connects"],
            reconnects=max(0, n["connects"] - 1),
            connect_failures=n["connect_failures"],
            messages=n["messages"],
            heartbeats=n["heartbeats"],
            delivered=n["delivered"],
            dropped=n["dropped"],
            buffered=len(self._buffer),
            last_message_ms=self._last_message_ms,
            last_wave_ts_ms=self._last_wave,
        )

    async def start(self) -> None:
        """Start connecting (returns at once); call on the I/O loop."""
        if self._tasks:
            return
        self._stopping = False
        self._ready = asyncio.Event()
        self._session = aiohttp.ClientSession()
        self._tasks = [
            asyncio.create_task(self._deliver(), name="signal-client-deliver"),
            asyncio.create_task(self._run(), name="signal-client-connection"),
        ]

    async def stop(self) -> None:
        """Close the connection (bounded by ``close_timeout_s``) and end all tasks."""
        if not self._tasks:
            return
        self._stopping = True
        ws = self._ws
        if ws is not None and not ws.closed:
            try:
                await asyncio.wait_for(ws.close(code=aiohttp.WSCloseCode.GOING_AWAY), self.close_timeout_s + 1)
            except Exception as exc:
                log.debug("signal client: close on stop failed: {}", exc)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._report_overflow()
        undelivered = len(self._buffer)
        self._buffer.clear()
        self._state = ClientState.STOPPED
        self._emit("stopped", {"undelivered": undelivered, "dropped": self._n["dropped"]})

    # ------------------------------------------------------------------ callbacks

    def _emit(self, event: str, details: dict[str, Any]) -> None:
        try:
            self._on_state(event, details)
        except Exception:
            log.exception("signal client: on_state callback failed for {}", event)

    def _set_state(self, state: ClientState, event: str, details: dict[str, Any]) -> None:
        self._state = state
        self._emit(event, {"url": self.url, **details})

    # ------------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        session = self._session
        assert session is not None  # start() opens it before this task, stop() closes it after the task ends
        failures = 0
        while not self._stopping:
            self._set_state(ClientState.CONNECTING, "connecting", {"attempt": failures + 1})
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    ws = await session.ws_connect(
                        self.url,
                        autoping=False,  # we answer pings and must see pongs ourselves
                        heartbeat=None,
                        timeout=aiohttp.ClientWSTimeout(ws_close=self.close_timeout_s),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._n["connect_failures"] += 1
                self._emit("connect_failed", {"url": self.url, "attempt": failures, "error": _describe(exc)})
            else:
                heard = await self._serve(ws)
                failures = 0 if heard else failures + 1
            if self._stopping:
                break
            delay = self._backoff_delay(max(failures, 1))
            self._set_state(ClientState.BACKOFF, "backoff", {"delay_s": round(delay, 3), "attempt": failures})
            await asyncio.sleep(delay)

    def _backoff_delay(self, attempt: int) -> float:
        """Exponential with equal jitter: in [d/2, d], d = initial * 2^(attempt-1), capped."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** min(attempt - 1, 32))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Subscribe and read until the connection ends; True if it received any frame."""
        self._ws = ws
        self._n["connects"] += 1
        since = self._last_wave
        connected_at = time.monotonic()
        self._set_state(ClientState.CONNECTED, "connected", {"reconnect": self._n["connects"] > 1, "since_wave_ts_ms": since})
        pinger = asyncio.create_task(self._ping(ws), name="signal-client-ping")
        heard = False
        reason, code = "closed", None
        try:
            await ws.send_str(encode(Subscribe(since_wave_ts_ms=since)).decode())
            while True:
                try:
                    msg = await ws.receive(timeout=self.dead_after_s)
                except TimeoutError:
                    reason = "dead"
                    self._emit("dead", {"url": self.url, "silent_for_s": self.dead_after_s})
                    break
                heard = True
                self._last_message_ms = self._clock_ms()
                if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    self._on_frame(msg.data)
                elif msg.type is aiohttp.WSMsgType.PING:
                    await ws.pong(msg.data)
                elif msg.type is aiohttp.WSMsgType.PONG:
                    pass  # liveness only
                else:
                    reason = "error" if msg.type is aiohttp.WSMsgType.ERROR else "closed by server"
                    code = ws.close_code
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        reason = f"error: {_describe(msg.data)}"
                    break
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        except Exception as exc:
            reason = f"error: {_describe(exc)}"
        finally:
            pinger.cancel()
            self._ws = None
            if not ws.closed:
                try:
                    await asyncio.wait_for(ws.close(), self.close_timeout_s + 1)
                except BaseException:
                    pass
            if self._stopping and reason != "dead":
                reason = "stopped"
            self._emit("disconnected", {"url": self.url, "reason": reason, "code": code if code is not None else ws.close_code, "connected_for_s": round(time.monotonic() - connected_at, 3)})
        return heard

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while not ws.closed:
                await asyncio.sleep(self.heartbeat_s)
                await ws.ping()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("signal client: ping failed: {}", exc)

    # ------------------------------------------------------------------ buffer

    def _on_frame(self, data: bytes | str) -> None:
        try:
            peek = _peek.decode(data)
        except Exception:
            peek = _Peek()
        if peek.type == "heartbeat":
            self._n["heartbeats"] += 1
            return
        if peek.type == "batch":
            self._note_wave(peek.wave_ts_ms)
        elif peek.type == "signal" and isinstance(peek.signal, dict):
            self._note_wave(peek.signal.get("wave_ts_ms"))
        elif peek.type == "subscribed":
            self._emit("subscribed", {"url": self.url, "since_wave_ts_ms": self._last_wave, "replay_waves": peek.replay_waves})
        self._n["messages"] += 1
        if len(self._buffer) >= self.buffer_size:
            self._buffer.popleft()
            self._n["dropped"] += 1
            self._burst_dropped += 1
            if self._burst_dropped == 1:
                self._emit("overflow_started", {"buffer_size": self.buffer_size, "total_dropped": self._n["dropped"]})
        self._buffer.append(data)
        assert self._ready is not None
        self._ready.set()

    def _note_wave(self, wave_ts_ms: Any) -> None:
        """Remember the newest plausible wave (on the grid, not in the future)."""
        if type(wave_ts_ms) is not int or wave_ts_ms % WAVE_MS or wave_ts_ms > self._clock_ms() + 60_000:
            return
        if self._last_wave is None or wave_ts_ms > self._last_wave:
            self._last_wave = wave_ts_ms

    def _report_overflow(self) -> None:
        if self._burst_dropped:
            n, self._burst_dropped = self._burst_dropped, 0
            self._emit("overflow", {"dropped": n, "total_dropped": self._n["dropped"], "buffer_size": self.buffer_size})

    async def _deliver(self) -> None:
        assert self._ready is not None
        while True:
            await self._ready.wait()
            while self._buffer:
                self._report_overflow()
                frame = self._buffer.popleft()
                self._n["delivered"] += 1
                try:
                    result = self._on_message(frame)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("signal client: on_message callback failed")
            self._report_overflow()
            self._ready.clear()


def _describe(exc: Any) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
