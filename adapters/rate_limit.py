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
An entry also *books* the units of the stop that must follow it
(``create_order.entry`` books ``create_order.stop``'s cost): reads and entries
count bookings as used, protective calls do not, and the stop's placement
takes the oldest booking in each of its windows (a booking left unused expires
with its window). So a burst of entries can never crowd its own stops out of
a tight order window (Bybit: 10 creates per second per UID): the later entries
wait for the window to slide instead of the stops.

When the venue says "too many requests" anyway, :meth:`RateLimiter.rate_limited`
pauses reads and entries (the venue counts per IP / account, not per caller),
for the venue's Retry-After when the message carries one, else for an
exponential backoff. Protective calls do not wait it out: they *probe*, one at
a time, on a short schedule (``protect_probe_s``, doubling after each refusal
up to ``protect_probe_max_s``): the first protective waiter goes after
``protect_probe_s``; if the venue takes it, protective calls flow freely for
the rest of the pause (on Binance the order endpoints have limits of their own
apart from the IP weight a read broke; on Bybit the limits are per endpoint),
while reads and entries still wait for the pause to end. So a fresh position's
stop refused by a rate limit is retried in a fraction of a second, not after
the whole pause.

A *hard ban* (:meth:`RateLimiter.banned`: Binance HTTP 418 "banned until",
Bybit HTTP 403 "IP rate limit", which asks for at least 10 minutes) holds
reads and entries for the venue's whole wait. Every request from the IP is
refused meanwhile, so protective calls only probe at a slow, bounded cadence
(``ban_probe_s``; 0: they wait too), one at a time and only while one is
waiting; a probe the venue takes ends the ban for everyone (it is IP-wide).

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

from adapters import venues
from adapters.rate_tables import UNLIMITED, Priority, VenueLimits, Window, priority_of

#: An entry books the units of the stop that follows it (see the module doc).
ENTRY_OP, STOP_OP = "create_order.entry", "create_order.stop"


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
    """A granted request: when (limiter time), how long it waited, whether it is a maintenance probe,
    whether it is a protective probe during a rate-limit pause or a ban (``protect_probe``)."""

    granted_at: float
    waited_s: float
    probe: bool = False
    protect_probe: bool = False


class _Waiter:
    __slots__ = ("book", "cancelled", "consume", "cost", "future", "key", "seq")

    def __init__(self, seq: int, cost: Mapping[str, int], future: asyncio.Future[tuple[float, bool, bool]], book: Mapping[str, int] | None = None, consume: bool = False) -> None:
        self.seq, self.cost, self.key = seq, cost, frozenset(cost)
        self.future, self.cancelled = future, False
        self.book, self.consume = book, consume


class _Window:
    """Sliding-window usage of one limit, and the cap of each class in it."""

    __slots__ = ("booked", "caps", "events", "span_s", "spec", "used")

    def __init__(self, spec: Window, share: float, reserve: float) -> None:
        self.spec = spec
        self.span_s = spec.window_ms / 1000
        budget = spec.limit * share
        self.caps = {Priority.PROTECT: budget, Priority.ENTRY: budget * (1 - reserve), Priority.READ: budget * (1 - reserve)}
        self.events: collections.deque[tuple[float, int]] = collections.deque()
        self.used = 0
        #: When each unit booked for a protective call still to come was booked (see the module doc).
        self.booked: collections.deque[float] = collections.deque()

    def evict(self, now: float) -> None:
        events, span = self.events, self.span_s
        while events and events[0][0] + span <= now:  # the same sum as free_at's: no float gap
            self.used -= events.popleft()[1]
        booked = self.booked
        while booked and booked[0] + span <= now:
            booked.popleft()

    def free_at(self, units: int, priority: Priority, now: float) -> float:
        """Earliest time ``units`` fit under ``priority``'s cap (``now`` if they fit now).

        A request larger than the cap still goes, alone, into an empty window. Reads and entries
        count the units booked for protective calls still to come; protective calls do not."""
        counts_bookings = priority is not Priority.PROTECT and bool(self.booked)
        cap, used = self.caps[priority], self.used + (len(self.booked) if counts_bookings else 0)
        if used + units <= cap + 1e-9 or used == 0:
            return now
        expiring = heapq.merge(self.events, ((t, 1) for t in self.booked)) if counts_bookings else self.events
        for t, n in expiring:
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
    #: The longest venue-wide pause after a plain rate-limit answer, whatever it asks.
    MAX_PAUSE_S = 600.0
    #: The longest hard ban honoured at once (Binance bans last from 2 minutes to 3 days).
    MAX_BAN_S = 3 * 86_400.0

    def __init__(
        self,
        limits: VenueLimits,
        *,
        share: float = 0.8,
        reserve: float = 0.2,
        monotonic_s: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        protect_probe_s: float = 0.25,
        protect_probe_max_s: float = 2.0,
        ban_probe_s: float = 60.0,
    ) -> None:
        """``protect_probe_s`` / ``protect_probe_max_s``: a protective call's first probe after a
        rate-limit answer, and the cap of its doubling; ``ban_probe_s``: the protective probe's
        cadence during a hard ban (0: protective calls wait the ban out too)."""
        if not 0 < share <= 1 or not 0 <= reserve < 1:
            raise ValueError(f"share must be in (0, 1] and reserve in [0, 1): got {share}, {reserve}")
        if not 0 < protect_probe_s <= protect_probe_max_s or ban_probe_s < 0:
            raise ValueError(f"need 0 < protect_probe_s <= protect_probe_max_s and ban_probe_s >= 0: got {protect_probe_s}, {protect_probe_max_s}, {ban_probe_s}")
        self.protect_probe_s, self.protect_probe_max_s, self.ban_probe_s = protect_probe_s, protect_probe_max_s, ban_probe_s
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
        # Protective calls during a pause: the next probe at, one out at a time, cleared by a taken one.
        self._protect_at = -math.inf
        self._protect_out = False
        self._protect_clear = True
        self._protect_strikes = 0
        self._ban_until = -math.inf  # a hard ban's end (limiter time), while one is on
        self._timer: asyncio.Task[None] | None = None
        self._timer_due = math.inf
        self._stats = [{"granted": 0, "waited": 0, "wait_s_total": 0.0, "wait_s_max": 0.0} for _ in Priority]

    @classmethod
    def for_style(cls, style: str | None, **kw: Any) -> RateLimiter:
        """The limiter of a venue unit's table (``binance`` / ``bybit``, by unit or exchange name); no windows for anything else."""
        unit = venues.find(style)
        return cls(unit.limits if unit is not None else UNLIMITED, **kw)

    # ------------------------------------------------------------ acquire
    async def acquire(self, op: str, priority: Priority | None = None) -> Permit:
        """Wait until ``op`` fits the budget (and no venue-wide pause is on), then take its weight."""
        cls = priority_of(op) if priority is None else priority
        cost = self.limits.cost(op)
        book = self.limits.cost(STOP_OP) if op == ENTRY_OP else None
        consume = op == STOP_OP
        now = self.now()
        if not any(self._queued) and self._may_go(cls, now) and not self._probe_out and self._fits(cost, cls, now):
            self._take(cost, now, book, consume)
            self._count(cls, 0.0)
            probe, self._probe_out = self._hold, self._hold
            return Permit(granted_at=now, waited_s=0.0, probe=probe, protect_probe=self._grant_protect(cls, now))
        future: asyncio.Future[tuple[float, bool, bool]] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(next(self._seq), cost, future, book, consume)
        self._queues[cls].setdefault(waiter.key, collections.deque()).append(waiter)
        self._queued[cls] += 1
        self._dispatch()
        try:
            granted_at, probe, protect_probe = await future
        except asyncio.CancelledError:
            if not future.done() or future.cancelled():
                waiter.cancelled = True
                self._queued[cls] -= 1
                self._dispatch()  # it may have been blocking others
            else:
                if future.result()[1]:
                    self.probe_lost()  # granted as the probe, never sent: another waiter probes
                if future.result()[2]:
                    self.protect_probe_done(cleared=False)
            raise
        waited = granted_at - now
        self._count(cls, waited)
        return Permit(granted_at=granted_at, waited_s=waited, probe=probe, protect_probe=protect_probe)

    def _paused(self, now: float) -> bool:
        return now < self._paused_until

    def _may_go(self, cls: Priority, now: float) -> bool:
        """May a request of ``cls`` go now, as far as pauses are concerned (windows aside)?"""
        if not self._paused(now):
            return True
        if cls is not Priority.PROTECT or self._hold:
            return False  # reads and entries wait the pause out; a maintenance hold holds everyone
        return self._protect_clear or (not self._protect_out and now >= self._protect_at)

    def _grant_protect(self, cls: Priority, now: float) -> bool:
        """A protective request granted during a pause before one was taken is the probe."""
        if cls is not Priority.PROTECT or not self._paused(now) or self._hold or self._protect_clear:
            return False
        self._protect_out = True
        return True

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

    def _take(self, cost: Mapping[str, int], now: float, book: Mapping[str, int] | None = None, consume: bool = False) -> None:
        for name, units in cost.items():
            w = self._windows.get(name)
            if w is not None:
                w.events.append((now, units))
                w.used += units
                if consume and w.booked:
                    w.booked.popleft()  # the stop an entry booked for: its unit is now used
        for name, units in (book or {}).items():
            w = self._windows.get(name)
            if w is not None:
                w.booked.extend([now] * units)

    def _dispatch(self) -> None:
        """Grant every waiter that may go now, by class, then arrival; arm the timer for the rest.

        Within a class the queues are merged by arrival. A waiter that does not
        fit blocks the windows it is short of for everyone after it (its class
        and below); others may still use the windows it does not wait for."""
        now = self.now()
        if self._probe_out:
            return  # a maintenance probe is out: everyone waits for its answer
        blocked: set[str] = set()
        next_due = math.inf
        paused = self._paused(now)
        if paused and any(self._queued[c] for c in (Priority.ENTRY, Priority.READ)):
            next_due = self._paused_until
        for cls in Priority:
            if not self._may_go(cls, now):
                if cls is Priority.PROTECT and self._queued[cls] and not self._protect_out and not self._hold:
                    next_due = min(next_due, self._protect_at)
                elif self._queued[cls]:
                    next_due = min(next_due, self._paused_until)
                continue
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
                self._take(waiter.cost, now, waiter.book, waiter.consume)
                protect_probe = self._grant_protect(cls, now)
                waiter.future.set_result((now, self._hold, protect_probe))
                if self._hold:
                    self._probe_out = True  # the probe: nobody else goes until it is answered
                    return
                if protect_probe:
                    break  # the protective probe is out: the next protective call waits for its answer
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
    def rate_limited(self, *, granted_at: float, retry_after_s: float | None, base_s: float, max_s: float, protect_probe: bool = False) -> float | None:
        """The venue refused a request granted at ``granted_at``: pause reads and entries.

        Returns the pause started (seconds), or None when the refusal belongs to
        a pause already under way (the request was sent before it began: many
        requests in flight come back refused together and count as one strike)
        or was a protective probe's (``protect_probe``: the next probe waits
        twice as long, up to ``protect_probe_max_s``; the pause itself is not
        lengthened, unless the venue's answer asks for longer).
        """
        now = self.now()
        if protect_probe:
            self._protect_refused(now)
            if retry_after_s is not None and now + retry_after_s > self._paused_until:
                self._extend(min(max(retry_after_s, 0.0), self.MAX_PAUSE_S))
            return None
        if granted_at <= self._pause_started and now < self._paused_until + base_s:
            return None
        strikes = self._strikes
        strikes.count = strikes.count + 1 if now - strikes.last_at < self.STRIKE_MEMORY_S else 1
        strikes.last_at = now
        pause = retry_after_s if retry_after_s is not None else min(max_s, base_s * 2 ** (strikes.count - 1))
        pause = min(max(pause, 0.0), self.MAX_PAUSE_S)
        self.pause(pause)
        return pause

    def banned(self, *, granted_at: float, ban_s: float, protect_probe: bool = False) -> float | None:
        """A hard ban (Binance 418, Bybit 403): reads and entries wait ``ban_s`` (the venue's wait);
        protective calls probe every ``ban_probe_s`` (see module doc).

        Returns the wait started, or None when it only confirms a ban already
        under way that lasts at least as long (a refused probe, or a request
        that was in flight when the ban began)."""
        now = self.now()
        ban_s = min(max(ban_s, 0.0), self.MAX_BAN_S)
        new = not self.is_banned or now + ban_s > self._ban_until + 1.0
        self._ban_until = max(self._ban_until if self.is_banned else -math.inf, now + ban_s)
        if protect_probe:
            self._protect_out = False
        if new:
            self._extend(ban_s)
            self._pause_started = now
            self._pauses += 1
        self._protect_clear = False
        self._protect_at = now + self.ban_probe_s if self.ban_probe_s > 0 else self._paused_until
        self._dispatch()
        return ban_s if new else None

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` (extends, never shortens, a pause under way);
        protective calls probe after ``protect_probe_s`` (see module doc)."""
        now = self.now()
        self._pause_started = now
        self._extend(seconds)
        self._pauses += 1
        if not self.is_banned:
            self._protect_clear, self._protect_strikes = False, 0
            self._protect_at = now + self.protect_probe_s
        self._dispatch()

    def _extend(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self.now() + seconds)

    def _protect_refused(self, now: float) -> None:
        self._protect_out, self._protect_clear = False, False
        self._protect_strikes += 1
        if self.is_banned:
            self._protect_at = now + self.ban_probe_s if self.ban_probe_s > 0 else self._paused_until
        else:
            self._protect_at = now + min(self.protect_probe_max_s, self.protect_probe_s * 2**self._protect_strikes)
        self._dispatch()

    def protect_probe_done(self, *, cleared: bool) -> None:
        """A protective probe's answer, other than a rate limit or a ban.

        ``cleared``: the venue took it (or answered it with a code of its own):
        protective calls go freely for the rest of the pause; during a ban, the
        ban is over for everyone (it is IP-wide). Not cleared (no answer, a
        cancel): the next protective waiter probes at once."""
        if not self._protect_out and not cleared:
            return
        self._protect_out = False
        if cleared:
            self._protect_clear, self._protect_strikes = True, 0
            if self.is_banned:
                self.ban_over()
                return
        self._dispatch()

    def ban_over(self) -> None:
        """The ban is over (a request went through): everyone goes again."""
        if self._ban_until > -math.inf:
            self._ban_until = -math.inf
            self._paused_until = min(self._paused_until, self.now())
        self._dispatch()

    @property
    def is_banned(self) -> bool:
        """True while a hard ban is on (its wait not yet over)."""
        return self.now() < self._ban_until

    @property
    def banned_for_s(self) -> float:
        return max(0.0, self._ban_until - self.now())

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
            windows[name] = {"used": w.used, "booked": len(w.booked), "limit": w.spec.limit, "window_ms": w.spec.window_ms, "cap": round(w.caps[Priority.PROTECT], 2), "cap_non_protect": round(w.caps[Priority.READ], 2)}
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
        return {
            "style": self.limits.style, "share": self.share, "reserve": self.reserve, "classes": classes, "windows": windows,
            "paused_ms": round(self.paused_for_s * 1000, 1), "pauses": self._pauses, "maintenance_hold": self._hold,
            "banned_ms": round(self.banned_for_s * 1000, 1), "protect_probing": self.paused_for_s > 0 and not self._protect_clear and not self._hold,
        }  # fmt: skip
