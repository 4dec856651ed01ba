"""The request budget of one venue account, shared by every caller of its executor.

Why: every actor reaches the venue through one :class:`~adapters.executor.Executor`
per account. Without a budget, a burst of reads (a reconcile, 50 position
actors checking their stops, the price feed) can run past the venue's limits
and get the *whole account or IP* refused, stop placements included; Binance
escalates repeated 429s to 418 IP bans. So each request first takes its weight
from sliding windows modelled on the venue's published limits, scaled down by
``share`` (other tools may use the same IP or key).

Priority classes (:class:`Priority`): PROTECT (stop placement, protective
close, a position's own cancels) > ENTRY (entries, take-profits, other
cancels) > READ (fetches). Waiters are served by class, then first come first
served; a later waiter may go ahead of an earlier one only if it needs none of
the windows the earlier one is waiting for, so a large request is never
starved by a stream of small ones. The top ``reserve`` of every window is
PROTECT's alone: reads and entries saturate at ``1 - reserve`` of the budget,
so a protective call finds headroom at once instead of queueing behind them.

When the venue says "too many requests" anyway, :meth:`RateLimiter.rate_limited`
pauses *every* caller (the venue counts per IP / account, not per caller), for
the venue's Retry-After / ban time when the message carries one, else for an
exponential backoff; after the pause the queue is served in class order again,
protective calls first.

When the venue says "maintenance", :meth:`RateLimiter.maintenance` starts a
*hold*: the same venue-wide pause, but when it ends a single request goes out
as a probe (the first waiter by class, or the next caller) while everyone
else keeps waiting for its answer. The executor reports that answer:
maintenance again -> the next pause, twice as long (bounded); anything else ->
:meth:`RateLimiter.end_hold` and the queue is served as usual. So a venue
under maintenance sees one request per probe interval, not one per caller.

Time is injected: ``monotonic_s`` (seconds) and ``sleep`` (a coroutine
function), so tests run minutes of budget in milliseconds; :func:`on_clock`
puts a limiter on a :class:`~core.clock.Clock` (the paper venue's, when
it has a budget). The limiter lives on the I/O loop (no locks: one thread);
its only sleeper is one timer task.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from adapters.rate_tables import LIMITS, UNLIMITED, Priority, VenueLimits, Window, priority_of


def on_clock(clock: Any) -> tuple[Callable[[], float], Callable[[float], Awaitable[None]]]:
    """``(monotonic_s, sleep)`` on an injected :class:`~core.clock.Clock`.

    For the paper venue: its budget runs in the paper exchange's own time, as
    its ``max_requests_per_s`` does (virtual in tests, so a test that moves its
    clock moves the budget too). The sleep is a clock timer that wakes the
    loop thread-safely (a virtual clock fires timers on the thread that advances it).
    """

    def now_s() -> float:
        return clock.now_ms() / 1000

    async def sleep(seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def fire() -> None:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        handle = clock.call_later(max(1, math.ceil(seconds * 1000)), fire)
        try:
            await future
        finally:
            handle.cancel()

    return now_s, sleep


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Permit(msgspec.Struct, frozen=True):
    """A granted request: when (limiter time), how long it waited, whether it is a maintenance probe."""

    granted_at: float
    waited_s: float
    probe: bool = False


class _Waiter:
    __slots__ = ("cancelled", "cost", "future", "key", "seq")

    def __init__(self, seq: int, cost: Mapping[str, int], future: asyncio.Future[tuple[float, bool]]) -> None:
        self.seq, self.cost, self.key = seq, cost, frozenset(cost)
        self.future, self.cancelled = future, False


class _Window:
    """Sliding-window usage of one limit, and the cap of each class in it."""

    __slots__ = ("caps", "events", "span_s", "spec", "used")

    def __init__(self, spec: Window, share: float, reserve: float) -> None:
        self.spec = spec
        self.span_s = spec.window_ms / 1000
        budget = spec.limit * share
        self.caps = {Priority.PROTECT: budget, Priority.ENTRY: budget * (1 - reserve), Priority.READ: budget * (1 - reserve)}
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.used = 0

    def evict(self, now: float) -> None:
        events, span = self.events, self.span_s
        while events and events[0][0] + span <= now:  # the same sum as free_at's: no float gap
            self.used -= events.popleft()[1]

    def free_at(self, units: int, priority: Priority, now: float) -> float:
        """Earliest time ``units`` fit under ``priority``'s cap (``now`` if they fit now).

        A request larger than the cap still goes, alone, into an empty window."""
        cap, used = self.caps[priority], self.used
        if used + units <= cap + 1e-9 or used == 0:
            return now
        for t, n in self.events:
            used -= n
            if used + units <= cap + 1e-9 or used <= 0:
                return t + self.span_s
        return now  # unreachable: the loop empties the window


class _Strikes:
    """Consecutive rate-limit refusals, for the backoff of venue-wide pauses."""

    __slots__ = ("count", "last_at")

    def __init__(self) -> None:
        self.count, self.last_at = 0, -math.inf


class RateLimiter:
    """Weighted, prioritised request budget for one venue account (see module doc)."""

    #: A refusal this long after the previous one starts the backoff over.
    STRIKE_MEMORY_S = 60.0
    #: The longest venue-wide pause, whatever the venue asks (a longer ban is re-read on the next try).
    MAX_PAUSE_S = 600.0

    def __init__(
        self,
        limits: VenueLimits,
        *,
        share: float = 0.8,
        reserve: float = 0.2,
        monotonic_s: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not 0 < share <= 1 or not 0 <= reserve < 1:
            raise ValueError(f"share must be in (0, 1] and reserve in [0, 1): got {share}, {reserve}")
        self.limits, self.share, self.reserve = limits, share, reserve
        self.now, self.sleep = monotonic_s, sleep
        self._windows = {w.name: _Window(w, share, reserve) for w in limits.windows}
        self._queues: list[dict[frozenset[str], collections.deque[_Waiter]]] = [{} for _ in Priority]
        self._queued = [0 for _ in Priority]
        self._seq = itertools.count()
        self._paused_until = -math.inf
        self._pause_started = -math.inf
        self._strikes = _Strikes()
        self._pauses = 0
        self._hold = False  # maintenance: after the pause, one probe at a time
        self._probe_out = False
        self._hold_started = -math.inf
        self._hold_strikes = 0
        self._timer: asyncio.Task[None] | None = None
        self._timer_due = math.inf
        self._stats = [{"granted": 0, "waited": 0, "wait_s_total": 0.0, "wait_s_max": 0.0} for _ in Priority]

    @classmethod
    def for_style(cls, style: str | None, **kw: Any) -> RateLimiter:
        """The limiter of a table style (``binance`` / ``bybit``); no windows for anything else."""
        return cls(LIMITS.get(style or "", UNLIMITED), **kw)

    # ------------------------------------------------------------ acquire
    async def acquire(self, op: str, priority: Priority | None = None) -> Permit:
        """Wait until ``op`` fits the budget (and no venue-wide pause is on), then take its weight."""
        cls = priority_of(op) if priority is None else priority
        cost = self.limits.cost(op)
        now = self.now()
        if not any(self._queued) and now >= self._paused_until and not self._probe_out and self._fits(cost, cls, now):
            self._take(cost, now)
            self._count(cls, 0.0)
            probe, self._probe_out = self._hold, self._hold
            return Permit(granted_at=now, waited_s=0.0, probe=probe)
        future: asyncio.Future[tuple[float, bool]] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(next(self._seq), cost, future)
        self._queues[cls].setdefault(waiter.key, collections.deque()).append(waiter)
        self._queued[cls] += 1
        self._dispatch()
        try:
            granted_at, probe = await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                waiter.cancelled = True
                self._queued[cls] -= 1
                self._dispatch()  # it may have been blocking others
            elif future.result()[1]:
                self.probe_lost()  # granted as the probe, never sent: another waiter probes
            raise
        waited = granted_at - now
        self._count(cls, waited)
        return Permit(granted_at=granted_at, waited_s=waited, probe=probe)

    def _fits(self, cost: Mapping[str, int], cls: Priority, now: float) -> bool:
        for name, units in cost.items():
            w = self._windows.get(name)
            if w is not None:
                w.evict(now)
                if w.free_at(units, cls, now) > now:
                    return False
        return True

    def _short_of(self, cost: Mapping[str, int], cls: Priority, now: float) -> dict[str, float]:
        """The windows where ``cost`` does not fit now, each with when it will."""
        short = {}
        for name, units in cost.items():
            w = self._windows.get(name)
            if w is not None:
                w.evict(now)
                due = w.free_at(units, cls, now)
                if due > now:
                    short[name] = due
        return short

    def _take(self, cost: Mapping[str, int], now: float) -> None:
        for name, units in cost.items():
            w = self._windows.get(name)
            if w is not None:
                w.events.append((now, units))
                w.used += units

    def _dispatch(self) -> None:
        """Grant every waiter that may go now, by class, then arrival; arm the timer for the rest.

        Within a class the queues are merged by arrival. A waiter that does not
        fit blocks the windows it is short of for everyone after it (its class
        and below); others may still use the windows it does not wait for."""
        now = self.now()
        if now < self._paused_until:
            if any(self._queued):
                self._arm(self._paused_until)
            return
        if self._probe_out:
            return  # a maintenance probe is out: everyone waits for its answer
        blocked: set[str] = set()
        next_due = math.inf
        for cls in Priority:
            queues = self._queues[cls]
            heads = [(q[0].seq, key) for key, q in queues.items() if self._drop_cancelled(q)]
            heapq.heapify(heads)
            while heads:
                _, key = heapq.heappop(heads)
                queue = queues[key]
                waiter = queue[0]
                if not blocked.isdisjoint(key):
                    continue  # an earlier waiter is waiting for one of its windows: after it
                short = self._short_of(waiter.cost, cls, now)
                if short:
                    blocked.update(short)
                    next_due = min(next_due, max(short.values()))
                    continue
                queue.popleft()
                self._queued[cls] -= 1
                self._take(waiter.cost, now)
                waiter.future.set_result((now, self._hold))
                if self._hold:
                    self._probe_out = True  # the probe: nobody else goes until it is answered
                    return
                if self._drop_cancelled(queue):
                    heapq.heappush(heads, (queue[0].seq, key))
            for key in [k for k, q in queues.items() if not q]:
                del queues[key]
        if next_due < math.inf:
            self._arm(next_due)

    @staticmethod
    def _drop_cancelled(queue: collections.deque[_Waiter]) -> bool:
        while queue and (queue[0].cancelled or queue[0].future.done()):
            queue.popleft()
        return bool(queue)

    def _arm(self, due: float) -> None:
        """One timer task wakes the dispatcher at the earliest time something may go."""
        if self._timer is not None and not self._timer.done():
            if self._timer_due <= due:
                return
            self._timer.cancel()
        self._timer_due = due
        self._timer = asyncio.get_running_loop().create_task(self._wake(due))

    async def _wake(self, due: float) -> None:
        await self.sleep(max(0.0, due - self.now()))
        self._timer, self._timer_due = None, math.inf
        self._dispatch()

    def _count(self, cls: Priority, waited: float) -> None:
        s = self._stats[cls]
        s["granted"] += 1
        if waited > 0:
            s["waited"] += 1
            s["wait_s_total"] += waited
            s["wait_s_max"] = max(s["wait_s_max"], waited)

    # -------------------------------------------------------------- pause
    def rate_limited(self, *, granted_at: float, retry_after_s: float | None, base_s: float, max_s: float) -> float | None:
        """The venue refused a request granted at ``granted_at``: pause every caller.

        Returns the pause started (seconds), or None when the refusal belongs to
        a pause already under way (the request was sent before it began: many
        requests in flight come back refused together and count as one strike).
        """
        now = self.now()
        if granted_at <= self._pause_started and now < self._paused_until + base_s:
            return None
        strikes = self._strikes
        strikes.count = strikes.count + 1 if now - strikes.last_at < self.STRIKE_MEMORY_S else 1
        strikes.last_at = now
        pause = retry_after_s if retry_after_s is not None else min(max_s, base_s * 2 ** (strikes.count - 1))
        pause = min(max(pause, 0.0), self.MAX_PAUSE_S)
        self.pause(pause)
        return pause

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (extends, never shortens, a pause under way)."""
        now = self.now()
        self._pause_started = now
        self._paused_until = max(self._paused_until, now + seconds)
        self._pauses += 1
        if any(self._queued):
            self._arm(self._paused_until)

    def maintenance(self, *, granted_at: float, probe: bool, base_s: float, max_s: float) -> float | None:
        """The venue answered "maintenance" to a request granted at ``granted_at``: hold every caller.

        The hold pauses for ``base_s``, doubling at each failed probe up to ``max_s``,
        then lets one probe through (see module doc). Returns the pause started, or
        None for the answer of a request sent before the hold began (counted once)."""
        if not probe and self._hold and granted_at <= self._hold_started:
            return None
        self._hold_strikes = self._hold_strikes + 1 if self._hold else 1
        self._hold, self._probe_out = True, False
        self._hold_started = self.now()
        pause = min(max_s, base_s * 2 ** (self._hold_strikes - 1))
        self.pause(pause)
        self._dispatch()
        return pause

    def end_hold(self) -> None:
        """The probe got an answer other than "maintenance": serve the queue as usual."""
        if self._hold:
            self._hold, self._probe_out, self._hold_strikes = False, False, 0
            self._dispatch()

    def probe_lost(self) -> None:
        """The probe was never answered (cancelled, or our own bug): the next waiter probes."""
        if self._probe_out:
            self._probe_out = False
            self._dispatch()

    @property
    def holding(self) -> bool:
        """True while a maintenance hold is on (pausing or probing)."""
        return self._hold

    @property
    def paused_for_s(self) -> float:
        return max(0.0, self._paused_until - self.now())

    # -------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Per-class grants and waits, queue lengths, each window's use against its caps, pauses."""
        now = self.now()
        windows = {}
        for name, w in self._windows.items():
            w.evict(now)
            windows[name] = {"used": w.used, "limit": w.spec.limit, "window_ms": w.spec.window_ms, "cap": round(w.caps[Priority.PROTECT], 2), "cap_non_protect": round(w.caps[Priority.READ], 2)}
        classes = {}
        for cls in Priority:
            s = self._stats[cls]
            classes[cls.name.lower()] = {
                "granted": s["granted"],
                "waited": s["waited"],
                "wait_ms_total": round(s["wait_s_total"] * 1000, 1),
                "wait_ms_max": round(s["wait_s_max"] * 1000, 1),
                "queued": self._queued[cls],
            }
        return {"style": self.limits.style, "share": self.share, "reserve": self.reserve, "classes": classes, "windows": windows, "paused_ms": round(self.paused_for_s * 1000, 1), "pauses": self._pauses, "maintenance_hold": self._hold}
