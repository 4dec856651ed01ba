"""Exchange streams (``watch_*``) pumped into an actor, with reconnect.

A :class:`StreamPump` runs on the I/O loop: it awaits the next batch from a
``watch_*`` call and hands it to a callback (which only ``tell``s). When the
stream fails it reports the state, backs off (exponential, capped, with
jitter) and resubscribes; meanwhile the consumer's periodic full reads are
the fallback, so a dead stream costs detection speed, never correctness.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Awaitable, Callable


class StreamPump:
    def __init__(
        self,
        name: str,
        watch: Callable[[], Awaitable[list[Any]]],
        on_batch: Callable[[list[Any]], None],
        on_state: Callable[[str, str | None], None],
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.name = name
        self._watch = watch
        self._on_batch = on_batch
        self._on_state = on_state
        self._initial, self._max = backoff_initial_s, backoff_max_s
        self._task: asyncio.Task[None] | None = None
        self.state = "stopped"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start on ``loop`` (callable from any thread)."""
        loop.call_soon_threadsafe(self._spawn)

    def _spawn(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"stream:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.state = "stopped"

    async def _run(self) -> None:
        delay = self._initial
        self._set("connecting", None)
        while True:
            try:
                batch = await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any stream failure: report, back off, resubscribe
                self._set("down", f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._max)
                continue
            delay = self._initial
            self._set("up", None)
            if batch:
                try:
                    self._on_batch(batch)
                except Exception:  # noqa: BLE001 - the consumer is gone: stop pumping
                    return

    def _set(self, state: str, error: str | None) -> None:
        if state != self.state:
            self.state = state
            try:
                self._on_state(state, error)
            except Exception:  # noqa: BLE001 - the consumer is gone
                pass
