"""One executor for every exchange call: classify, retry where safe, record.

Runs on the I/O loop, so its backoff sleeps never block an actor. Policy:

* RETRYABLE / RATE_LIMITED: retried with exponential backoff and jitter
  (rate limits back off longer) if the call is idempotent (reads, cancels);
* UNKNOWN (a timeout: the order may exist): never re-sent blindly; the
  ``lookup`` (by client order id) decides: found -> that is the result; not
  found -> the request did not land and may be sent again;
* everything else is raised at once as a :class:`VenueError`.

Every order-affecting request and every failure is recorded as an
``exchange.request`` event; successful market-data reads are not (they would
drown the log).

Every attempt, look-ups included, first takes its weight from the venue's
request budget (:mod:`adapters.rate_limit`, one limiter per executor, so per
venue account): the op decides its class (stops and protective closes first,
reads last) and weight. A RATE_LIMITED answer pauses the whole limiter, so
every caller of this venue waits, not just the one refused; that pause
replaces the caller's own backoff. A look-up made on behalf of a call runs in
that call's class (a stop's look-up is protective too). Waits longer than
:attr:`Executor.THROTTLE_EVENT_S` and every pause are reported as
``exchange.throttled`` events (waits at most one event per class per
:attr:`Executor.THROTTLE_EVENT_EVERY_S`).
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from adapters.errors import Outcome, VenueError, classify
from adapters.event_store import EventStore
from adapters.rate_limit import RateLimiter, on_clock
from adapters.rate_tables import STYLE_OF_VENUE, Priority, priority_of, retry_after_ms
from core.clock import Clock
from core.events import Event, Severity

T = TypeVar("T")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_attempts: int = 4
    base_delay_ms: int = 200
    max_delay_ms: int = 5_000
    rate_limit_delay_ms: int = 2_000


class _LookupCredit:
    """Set while a look-up runs: the class it inherits, and the one request its caller already paid for."""

    __slots__ = ("priority", "unspent")

    def __init__(self, priority: Priority) -> None:
        self.priority, self.unspent = priority, True


_LOOKUP: contextvars.ContextVar[_LookupCredit | None] = contextvars.ContextVar("executor_lookup", default=None)


class Executor:
    #: A call that waited this long for the budget is reported (``exchange.throttled``).
    THROTTLE_EVENT_S = 1.0
    #: ... at most once per class this often (a saturated budget would report every read).
    THROTTLE_EVENT_EVERY_S = 10.0

    def __init__(self, *, venue: str, store: EventStore | None, clock: Clock, policy: RetryPolicy | None = None, seed: int | None = None, limiter: RateLimiter | None = None) -> None:
        """``limiter``: the venue's request budget; by default the table of a real venue's
        name (``binanceusdm`` / ``bybit``) at the default share, none for other names."""
        self.venue = venue
        self._store = store
        self._clock = clock
        self.policy = policy or RetryPolicy()
        self._rng = random.Random(seed)
        self.limiter = limiter if limiter is not None else RateLimiter.for_style(STYLE_OF_VENUE.get(venue))
        self._slow: dict[Priority, tuple[float, int, float]] = {}  # class -> (last event at, slow calls since, max wait since)

    async def run(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        *,
        idempotent: bool,
        lookup: Callable[[], Awaitable[T | None]] | None = None,
        record: bool = True,
        context: dict[str, Any] | None = None,
        priority: Priority | None = None,
    ) -> T:
        """Run ``call`` under the policy; returns its result or raises VenueError.

        ``priority`` overrides the class the op name gives (:func:`priority_of`)."""
        ctx = context or {}
        cls = priority if priority is not None else priority_of(op, ctx)
        credit = _LOOKUP.get()
        if credit is not None:
            cls = min(cls, credit.priority)
        attempt = 0
        while True:
            attempt += 1
            granted_at = await self._acquire(op, cls, ctx, credit)
            started = time.perf_counter()
            try:
                result = await call()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                err = classify(exc)
                self._record(op, attempt, err, started, ctx, always=True)
                if err.outcome is Outcome.RATE_LIMITED:
                    self._pause(op, err, granted_at, ctx)
                if err.outcome is Outcome.UNKNOWN or (err.retryable and not idempotent):
                    if lookup is None:
                        if not idempotent:
                            raise err from None
                    else:
                        found = await self._resolve(op, cls, lookup, ctx)
                        if found is not None:
                            return found
                elif not err.retryable:
                    raise err from None
                if attempt >= self.policy.max_attempts:
                    raise err from None
                if err.outcome is not Outcome.RATE_LIMITED:  # a refusal's wait is the venue-wide pause
                    await asyncio.sleep(self._delay_s(attempt, err))
                continue
            if record:
                self._record(op, attempt, None, started, ctx, always=False)
            return result

    async def _resolve(self, op: str, cls: Priority, lookup: Callable[[], Awaitable[T | None]], ctx: dict[str, Any]) -> T | None:
        """Find out whether an ambiguous request landed; raise UNKNOWN if we cannot tell.

        Each look-up is paid for here, in the caller's class; an executor call
        inside the look-up spends that payment instead of paying twice."""
        last: VenueError | None = None
        for attempt in range(1, self.policy.max_attempts + 1):
            granted_at = await self._acquire("fetch_order", cls, ctx, None)
            token = _LOOKUP.set(_LookupCredit(cls))
            try:
                found = await lookup()
            except Exception as exc:
                last = classify(exc)
                if last.outcome is Outcome.NOT_FOUND:
                    found = None
                elif last.retryable or last.outcome is Outcome.UNKNOWN:
                    if last.outcome is Outcome.RATE_LIMITED:
                        self._pause(f"{op}.lookup", last, granted_at, ctx)
                    else:
                        await asyncio.sleep(self._delay_s(attempt, last))
                    continue
                else:
                    raise last from None
            finally:
                _LOOKUP.reset(token)
            self._emit("exchange.outcome_resolved", {"op": op, "landed": found is not None}, ctx, Severity.WARNING)
            return found
        raise VenueError(Outcome.UNKNOWN, f"{op}: outcome still unknown after {self.policy.max_attempts} look-ups ({last})")

    # ------------------------------------------------------------ budget
    async def _acquire(self, op: str, cls: Priority, ctx: dict[str, Any], credit: _LookupCredit | None) -> float:
        """Take ``op``'s weight from the budget (waiting on this loop); returns when it was granted."""
        if credit is not None and credit.unspent:
            credit.unspent = False
            return self.limiter.now()
        permit = await self.limiter.acquire(op, cls)
        if permit.waited_s >= self.THROTTLE_EVENT_S:
            self._note_slow(op, cls, permit.waited_s, permit.granted_at, ctx)
        return permit.granted_at

    def _note_slow(self, op: str, cls: Priority, waited_s: float, now: float, ctx: dict[str, Any]) -> None:
        last_at, count, worst = self._slow.get(cls, (-self.THROTTLE_EVENT_EVERY_S, 0, 0.0))
        count, worst = count + 1, max(worst, waited_s)
        if now - last_at < self.THROTTLE_EVENT_EVERY_S:
            self._slow[cls] = (last_at, count, worst)
            return
        self._slow[cls] = (now, 0, 0.0)
        data = {"reason": "budget", "class": cls.name.lower(), "op": op, "waited_ms": round(waited_s * 1000), "slow_calls": count, "max_wait_ms": round(worst * 1000), "usage": self._usage()}
        self._emit("exchange.throttled", data, ctx, Severity.WARNING)

    def _pause(self, op: str, err: VenueError, granted_at: float, ctx: dict[str, Any]) -> None:
        """A rate-limit refusal: every caller of this venue waits (Retry-After if the venue gave one)."""
        hint_ms = retry_after_ms(str(err.args[0]), self._clock.now_ms())
        pause_s = self.limiter.rate_limited(
            granted_at=granted_at,
            retry_after_s=hint_ms / 1000 if hint_ms is not None else None,
            base_s=self.policy.rate_limit_delay_ms / 1000,
            max_s=self.policy.max_delay_ms / 1000,
        )
        if pause_s is not None:
            data = {"reason": "rate_limited", "op": op, "code": err.code, "pause_ms": round(pause_s * 1000), "retry_after_ms": hint_ms, "usage": self._usage()}
            self._emit("exchange.throttled", data, ctx, Severity.WARNING)

    def _usage(self) -> dict[str, int]:
        return {name: w["used"] for name, w in self.limiter.stats()["windows"].items()}

    def _delay_s(self, attempt: int, err: VenueError) -> float:
        base = self.policy.rate_limit_delay_ms if err.outcome is Outcome.RATE_LIMITED else self.policy.base_delay_ms
        delay = min(self.policy.max_delay_ms, base * 2 ** (attempt - 1))
        return delay * self._rng.uniform(0.5, 1.0) / 1000

    def _record(self, op: str, attempt: int, err: VenueError | None, started: float, ctx: dict[str, Any], *, always: bool) -> None:
        data = {"op": op, "attempt": attempt, "latency_ms": round((time.perf_counter() - started) * 1000, 2), "outcome": "ok" if err is None else err.outcome.value}
        if err is not None:
            data.update(code=err.code, error=str(err.args[0]))
        self._emit("exchange.request", data, ctx, Severity.INFO if err is None else Severity.WARNING)

    def _emit(self, type_: str, data: dict[str, Any], ctx: dict[str, Any], severity: Severity) -> None:
        if self._store is None:
            return
        self._store.append(
            Event(
                type=type_,
                ts_ms=self._clock.now_ms(),
                actor=ctx.get("actor", f"venue:{self.venue}"),
                severity=severity,
                position_id=ctx.get("position_id"),
                correlation_id=ctx.get("correlation_id"),
                symbol=ctx.get("symbol"),
                exchange=self.venue,
                data=data,
            )
        )


def executor_for(config: Any, venue: str, clock: Clock, store: EventStore | None) -> Executor:
    """The venue's executor with its request budget.

    A real venue's budget runs on the monotonic clock. The paper venue has no
    limits of its own: with ``exchange.paper_rate_limits`` it gets its
    flavour's table on the paper exchange's clock (virtual in tests), else none."""
    e = config.exchange
    policy = RetryPolicy(max_attempts=e.max_attempts, base_delay_ms=e.retry_base_delay_ms, max_delay_ms=e.retry_max_delay_ms, rate_limit_delay_ms=e.rate_limit_delay_ms)
    budget: dict[str, Any] = {"share": float(e.rate_limit_share), "reserve": float(e.protect_reserve)}
    style = STYLE_OF_VENUE.get(venue)
    if venue == "paper":
        style = config.paper.flavour if e.paper_rate_limits else None
        budget["monotonic_s"], budget["sleep"] = on_clock(clock)
    return Executor(venue=venue, store=store, clock=clock, policy=policy, limiter=RateLimiter.for_style(style, **budget))
