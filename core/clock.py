"""Injected time: the current time and timers, real or virtual.

Every actor and adapter takes a :class:`Clock`. Periodic work is a timer that
*tells* an actor a message; nothing sleeps inside a handler. Tests use
:class:`VirtualClock` and move time with :meth:`VirtualClock.advance`, which
fires every due timer in due-time order, so minutes of trading run in
milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol


class TimerHandle:
    """A scheduled callback; :meth:`cancel` makes it a no-op."""

    __slots__ = ("_seq", "callback", "cancelled", "due_ms", "fired", "interval_ms", "owner")

    def __init__(self, due_ms: int, interval_ms: int | None, callback: Callable[[], None], seq: int, owner: str = ""):
        self.due_ms = due_ms
        self.interval_ms = interval_ms
        self.callback = callback
        self.cancelled = False
        self.fired = False  # a one-shot that has run
        self._seq = seq
        self.owner = owner

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def pending(self) -> bool:
        """Still to fire: not cancelled, and periodic or not yet run."""
        return not self.cancelled and (self.interval_ms is not None or not self.fired)

    def __lt__(self, other: TimerHandle) -> bool:
        # Timers due at the same instant: by owner first, then in the order they were set. Two
        # actors that set timers at once get sequence numbers in whatever order their threads ran;
        # their owners' names do not depend on that, so a virtual run fires them in the same order.
        return (self.due_ms, self.owner, self._seq) < (other.due_ms, other.owner, other._seq)


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time in epoch milliseconds."""

    def call_later(self, delay_ms: int, callback: Callable[[], None], owner: str = "") -> TimerHandle:
        """Run ``callback`` once after ``delay_ms``; it must not block (tell, don't work).
        ``owner`` (an actor's name) orders timers due at the same instant."""

    def call_every(self, interval_ms: int, callback: Callable[[], None], first_delay_ms: int | None = None, owner: str = "") -> TimerHandle:
        """Run ``callback`` every ``interval_ms`` until cancelled."""

    def close(self) -> None:
        """Stop firing timers."""


class _TimerHeap:
    """Shared bookkeeping for both clocks (not thread-safe on its own)."""

    def __init__(self) -> None:
        self._heap: list[TimerHandle] = []
        self._seq = itertools.count()

    def push(self, due_ms: int, interval_ms: int | None, callback: Callable[[], None], owner: str = "") -> TimerHandle:
        handle = TimerHandle(due_ms, interval_ms, callback, next(self._seq), owner)
        heapq.heappush(self._heap, handle)
        return handle

    def pop_due(self, now_ms: int) -> TimerHandle | None:
        while self._heap:
            head = self._heap[0]
            if head.cancelled:
                heapq.heappop(self._heap)
                continue
            if head.due_ms > now_ms:
                return None
            return heapq.heappop(self._heap)
        return None

    def next_due_ms(self) -> int | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].due_ms if self._heap else None

    def reschedule(self, handle: TimerHandle) -> None:
        if handle.interval_ms is not None and not handle.cancelled:
            handle.due_ms += handle.interval_ms
            heapq.heappush(self._heap, handle)


def _fire(handle: TimerHandle) -> None:
    if handle.cancelled:
        return
    if handle.interval_ms is None:
        handle.fired = True
    try:
        handle.callback()
    except Exception:
        from loguru import logger

        logger.opt(exception=True).error("timer callback failed")


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _due_ms(delay_ms: int) -> int:
    """When a timer asked for now with ``delay_ms`` is due: from the next whole
    millisecond, so it never fires before its full delay has passed."""
    return -(-time.monotonic_ns() // 1_000_000) + max(0, int(delay_ms))


class RealClock:
    """System time; timers fire from one daemon thread.

    ``now_ms`` is wall time (what events carry), but timers are due on the
    monotonic clock: a step of the wall clock (NTP, a resumed VM) neither
    fires every deadline at once nor stalls every timer for the step."""

    def __init__(self) -> None:
        self._timers = _TimerHeap()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="clock-timers", daemon=True)
        self._thread.start()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def call_later(self, delay_ms: int, callback: Callable[[], None], owner: str = "") -> TimerHandle:
        with self._cond:
            handle = self._timers.push(_due_ms(delay_ms), None, callback, owner)
            self._cond.notify()
        return handle

    def call_every(self, interval_ms: int, callback: Callable[[], None], first_delay_ms: int | None = None, owner: str = "") -> TimerHandle:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be > 0, got {interval_ms}")
        first = interval_ms if first_delay_ms is None else max(0, int(first_delay_ms))
        with self._cond:
            handle = self._timers.push(_due_ms(first), int(interval_ms), callback, owner)
            self._cond.notify()
        return handle

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = _monotonic_ms()
                handle = self._timers.pop_due(now)
                if handle is None:
                    nxt = self._timers.next_due_ms()
                    self._cond.wait(None if nxt is None else max(0.0, (nxt - now) / 1000))
                    continue
                self._timers.reschedule(handle)
            _fire(handle)


class VirtualClock:
    """Time that moves only when told to; timers fire inside :meth:`advance`.

    ``advance`` runs callbacks on the caller's thread in due-time order and
    sets ``now`` to each timer's due time before firing it, so a 30 s periodic
    timer fires exactly twice in ``advance(60_000)``.
    """

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = int(start_ms)
        self._timers = _TimerHeap()
        self._lock = threading.RLock()
        self._closed = False

    def now_ms(self) -> int:
        return self._now_ms

    def call_later(self, delay_ms: int, callback: Callable[[], None], owner: str = "") -> TimerHandle:
        with self._lock:
            return self._timers.push(self._now_ms + max(0, int(delay_ms)), None, callback, owner)

    def call_every(self, interval_ms: int, callback: Callable[[], None], first_delay_ms: int | None = None, owner: str = "") -> TimerHandle:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be > 0, got {interval_ms}")
        first = interval_ms if first_delay_ms is None else max(0, int(first_delay_ms))
        with self._lock:
            return self._timers.push(self._now_ms + first, int(interval_ms), callback, owner)

    def advance(self, delta_ms: int) -> int:
        """Move time forward by ``delta_ms``, firing due timers; returns how many fired."""
        if delta_ms < 0:
            raise ValueError("virtual time never goes backwards")
        target = self._now_ms + int(delta_ms)
        fired = 0
        while not self._closed:
            with self._lock:
                handle = self._timers.pop_due(target)
                if handle is None:
                    break
                self._now_ms = max(self._now_ms, handle.due_ms)
                self._timers.reschedule(handle)
            _fire(handle)
            fired += 1
        with self._lock:
            self._now_ms = max(self._now_ms, target)
        return fired

    def next_due_ms(self) -> int | None:
        """When the next timer is due (None: no timer)."""
        with self._lock:
            return self._timers.next_due_ms()

    def step_to(self, t_ms: int) -> int:
        """Set now to ``t_ms`` and fire only the timers that exist now and are due by then, in order;
        timers scheduled meanwhile (even for now) wait for the next step. For a driver that lets the
        system settle between steps (the replay); returns how many fired."""
        with self._lock:
            if t_ms < self._now_ms:
                raise ValueError("virtual time never goes backwards")
            self._now_ms = int(t_ms)
            limit = next(self._timers._seq)
        fired = 0
        while not self._closed:
            with self._lock:
                head = self._timers.pop_due(self._now_ms)
                if head is None:
                    break
                if head._seq > limit:
                    heapq.heappush(self._timers._heap, head)
                    break
                self._timers.reschedule(head)
            _fire(head)
            fired += 1
        return fired

    def fire_one(self, t_ms: int) -> bool:
        """Set now to ``t_ms`` and fire the first timer due by then, if any (False: none due).

        A driver that lets the system settle after each timer (the replay) runs the
        consequences of one timer before the next timer due at the same time starts."""
        with self._lock:
            if t_ms < self._now_ms:
                raise ValueError("virtual time never goes backwards")
            self._now_ms = int(t_ms)
            head = self._timers.pop_due(self._now_ms) if not self._closed else None
            if head is None:
                return False
            self._timers.reschedule(head)
        _fire(head)
        return True

    def pending(self) -> int:
        with self._lock:
            return sum(1 for h in self._timers._heap if not h.cancelled)

    def close(self) -> None:
        self._closed = True


# ------------------------------------------------- asyncio code on manual time
class ManualTime:
    """Monotonic seconds that move only in :meth:`advance`; ``sleep`` waits for that."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + max(0.0, seconds), next(self._seq), fut))
        await fut

    def next_due(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # cancelled sleeps
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers in due order and letting them run."""
        end = self.t + seconds
        while (due := self.next_due()) is not None and due <= end:
            _, _, fut = heapq.heappop(self._sleepers)
            self.t = max(self.t, due)
            fut.set_result(None)
            await settle()
        self.t = end
        await settle()


async def settle(rounds: int = 30) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def drive(clock: ManualTime, tasks: list[asyncio.Task[Any]], max_steps: int = 100_000) -> None:
    """Run ``tasks`` to the end, jumping time to the next sleeper whenever all are idle."""
    for _ in range(max_steps):
        await settle()
        if all(t.done() for t in tasks):
            return
        due = clock.next_due()
        if due is None:
            raise AssertionError("tasks are stuck with no sleeper to wake")
        await clock.advance(due - clock.t)
    raise AssertionError("too many steps")
