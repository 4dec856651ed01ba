"""Exchange streams (``watch_*``) pumped into an actor, with reconnect.

A :class:`StreamPump` runs on the I/O loop: it awaits the next batch from a
``watch_*`` call and hands it to a callback (which only ``tell``s). When the
stream fails it reports the state, backs off (exponential, capped, with
jitter) and calls ``watch`` again; meanwhile the consumer's periodic full
reads are the fallback, so a dead stream costs detection speed, never
correctness.

Reconnecting is the next ``watch`` call: ccxt.pro drops a client whose
connection failed or was closed by the server, so the next ``watch_*`` dials a
new connection and sends its subscription (Bybit: ``auth`` first; Binance
user data: the listenKey is in the URL) again. ``tests/test_ccxt_streams.py``
checks this against a local websocket server.

:meth:`rewatch` ends the pending ``watch`` call and starts the next at once (no
state change, no backoff): for a ``watch`` whose arguments changed (the mark
feed's set of symbols), so the new set is watched without dropping the connection.

States told to ``on_state``: ``connecting`` (once, at start), ``up`` (an update
arrived, or ``connected()`` says the connection is open again), ``down``
(with the error). A stream that only speaks when something happens (orders,
positions) would otherwise look down until the next order after a reconnect;
``connected`` avoids that.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

#: What :meth:`StreamPump._next` returns for a watch ended by :meth:`StreamPump.rewatch`.
_REWATCH = object()


class StreamPump:
    def __init__(
        self,
        name: str,
        watch: Callable[[], Awaitable[Any]],
        on_batch: Callable[[Any], None],
        on_state: Callable[[str, str | None], None],
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        connected: Callable[[], bool] | None = None,
        probe_interval_s: float = 0.25,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0),
    ) -> None:
        """``connected`` (optional) says whether the stream's connection is open; ``sleep`` and
        ``jitter`` (a factor applied to each backoff delay) are injectable for tests."""
        self.name = name
        self._watch = watch
        self._on_batch = on_batch
        self._on_state = on_state
        self._initial, self._max = backoff_initial_s, backoff_max_s
        self._connected = connected
        self._probe_s = probe_interval_s
        self._sleep = sleep
        self._jitter = jitter
        self._task: asyncio.Task[None] | None = None
        self._inner: asyncio.Future[Any] | None = None  # the pending watch call
        self._rewatching = False
        self.state = "stopped"
        #: Failed watch calls in a row (reset by the next update).
        self.failures = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start on ``loop`` (callable from any thread)."""
        loop.call_soon_threadsafe(self.spawn)

    def spawn(self) -> None:
        """Start now, on the running loop (call it from the loop's thread)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"stream:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.state = "stopped"

    def rewatch(self) -> None:
        """End the pending watch call; the next one starts at once (call it on the loop's thread)."""
        if self._inner is not None and not self._inner.done():
            self._rewatching = True
            self._inner.cancel()

    async def _run(self) -> None:
        delay = self._initial
        self._set("connecting", None)
        while True:
            try:
                batch = await self._next()
                if batch is _REWATCH:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self._set("down", f"{type(exc).__name__}: {exc}")
                await self._sleep(delay * self._jitter())
                delay = min(delay * 2, self._max)
                continue
            # Only a real update resets the backoff: a server that accepts and then drops
            # every connection must not be redialled at the initial rate forever.
            delay, self.failures = self._initial, 0
            self._set("up", None)
            if batch:
                try:
                    self._on_batch(batch)
                except Exception:
                    return

    async def _next(self) -> Any:
        """The next batch; meanwhile, report ``up`` as soon as ``connected()`` says so."""
        self._rewatching = False
        task = self._inner = asyncio.ensure_future(self._watch())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._probe_s if self._connected is not None else None)
                if done:
                    if task.cancelled():  # by rewatch(), or by the library under it: a failed watch
                        if self._rewatching:
                            return _REWATCH
                        raise ConnectionError(f"{self.name}: watch cancelled")
                    return task.result()
                if self.state != "up" and self._probe():
                    self._set("up", None)
        finally:
            self._inner = None
            if not task.done():
                task.cancel()

    def _probe(self) -> bool:
        if self._connected is None:
            return False
        try:
            return bool(self._connected())
        except Exception:
            return False

    def _set(self, state: str, error: str | None) -> None:
        if state != self.state:
            self.state = state
            try:
                self._on_state(state, error)
            except Exception:
                pass
