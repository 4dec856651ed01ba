"""One executor for every exchange call: translate, retry where safe, record.

Runs on the I/O loop, so its backoff sleeps never block an actor. Policy:

* RETRYABLE / RATE_LIMITED: retried with exponential backoff and jitter
  (rate limits back off longer) if the call is idempotent (reads, cancels);
  an order refused by a rate limit (429, 418, 403, Bybit 10006) was not
  executed: it is sent again after the pause without a look-up (a protective
  one as the limiter's protective probe, see :mod:`adapters.rate_limit`);
* a hard IP ban (Binance 418, Bybit 403: ``VenueError.ban_ms``): reads and
  entries wait the venue's whole wait, protective calls probe slowly; a
  critical ``alert.exchange_banned`` event once per ban and the venue's
  health says "banned" (``ctl status``) until a call succeeds;
* UNKNOWN (a timeout: the order may exist): never re-sent blindly; the
  ``lookup`` (by client order id) decides: found -> that is the result; not
  found -> the request did not land and may be sent again;
* MAINTENANCE: a venue-wide hold with probes (:meth:`RateLimiter.maintenance`);
  reads wait through it (up to ``max_attempts`` probes), an order is raised at
  once (the venue did not execute it; its owner decides);
* FATAL (key invalid or revoked, permission missing, IP not allowed): raised
  at once, never retried; recorded as a critical ``exchange.fatal`` event once
  per condition while it lasts;
* everything else the venue says is raised at once as a :class:`VenueError`;
* an exception that is not the venue's (:func:`~adapters.errors.translate`
  returns None: a ``KeyError`` parsing a reply is *our* bug) leaves ``run``
  untouched: not retried, not recorded as a refusal, not counted in health.

Every outcome also goes to the venue's :class:`~adapters.venue_health.VenueHealth`
(``executor.health``): last answer, transport failures in a row, FATAL and
maintenance conditions; its listeners hear every change of state.

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

from adapters import venues
from adapters.errors import Outcome, VenueError, translate
from adapters.event_store import EventStore
from adapters.rate_limit import Permit, RateLimiter, on_clock
from adapters.rate_tables import Priority, priority_of, retry_after_ms
from adapters.venue_health import VenueHealth
from core.clock import Clock
from core.events import Event, Severity

T = TypeVar("T")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_attempts: int = 4
    base_delay_ms: int = 200
    max_delay_ms: int = 5_000
    rate_limit_delay_ms: int = 2_000
    #: Maintenance: the first probe after this long, then twice as long each time, up to the max.
    maintenance_probe_ms: int = 5_000
    maintenance_probe_max_ms: int = 60_000


class _LookupCredit:
    """Set while a look-up runs: the class it inherits, and the one request its caller already paid for
    (its permit: a maintenance probe stays a probe when the look-up's own call spends it)."""

    __slots__ = ("permit", "priority", "unspent")

    def __init__(self, priority: Priority, permit: Permit) -> None:
        self.priority, self.permit, self.unspent = priority, permit, True


_LOOKUP: contextvars.ContextVar[_LookupCredit | None] = contextvars.ContextVar("executor_lookup", default=None)


def _table_of(venue: str) -> str | None:
    """The rate table of a real venue's ``exchange.name`` (its unit's); None for any other name."""
    unit = venues.real_venues().get(venue)
    return unit.name if unit is not None else None


class Executor:
    #: A call that waited this long for the budget is reported (``exchange.throttled``).
    THROTTLE_EVENT_S = 1.0
    #: ... at most once per class this often (a saturated budget would report every read).
    THROTTLE_EVENT_EVERY_S = 10.0

    def __init__(
        self,
        *,
        venue: str,
        store: EventStore | None,
        clock: Clock,
        policy: RetryPolicy | None = None,
        seed: int | None = None,
        limiter: RateLimiter | None = None,
        health: VenueHealth | None = None,
    ) -> None:
        """``limiter``: the venue's request budget; by default the table of a real venue's
        name (``binanceusdm`` / ``bybit``) at the default share, none for other names.
        ``health``: the record of outcomes (a default one if not given)."""
        self.venue = venue
        self._store = store
        self._clock = clock
        self.policy = policy or RetryPolicy()
        self._rng = random.Random(seed)
        self.limiter = limiter if limiter is not None else RateLimiter.for_style(_table_of(venue))
        self._slow: dict[Priority, tuple[float, int, float]] = {}  # class -> (last event at, slow calls since, max wait since)
        self.health = health if health is not None else VenueHealth(venue)

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

        An exception :func:`translate` does not know (our bug) is raised as it is.
        ``priority`` overrides the class the op name gives (:func:`priority_of`)."""
        ctx = context or {}
        cls = priority if priority is not None else priority_of(op, ctx)
        credit = _LOOKUP.get()
        if credit is not None:
            cls = min(cls, credit.priority)
        attempt = 0
        while True:
            attempt += 1
            permit = await self._acquire(op, cls, ctx, credit)
            started = time.perf_counter()
            try:
                result = await call()
            except asyncio.CancelledError:
                self._probe_unanswered(permit)
                raise
            except Exception as exc:
                err = translate(exc)
                if err is None:  # not the venue's answer: our bug, for the caller's supervisor
                    self._probe_unanswered(permit)
                    raise
                self._record(op, attempt, err, started, ctx, always=True)
                self._note_failure(op, err, permit, ctx)
                if err.outcome is Outcome.RATE_LIMITED:
                    self._pause(op, err, permit, ctx)
                    if attempt >= self.policy.max_attempts:
                        raise err from None
                    continue  # refused before execution (an order too): again once the limiter lets it; the pause is the wait
                elif permit.protect_probe:
                    self.limiter.protect_probe_done(cleared=not err.transport)
                if err.outcome is Outcome.MAINTENANCE:
                    if not idempotent or attempt >= self.policy.max_attempts:
                        raise err from None  # not executed; the hold keeps the venue from being hammered
                    continue  # the hold is the wait
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
            if permit.protect_probe:
                self.limiter.protect_probe_done(cleared=True)
            self._note_success(op, permit, ctx)
            if record:
                self._record(op, attempt, None, started, ctx, always=False)
            return result

    async def _resolve(self, op: str, cls: Priority, lookup: Callable[[], Awaitable[T | None]], ctx: dict[str, Any]) -> T | None:
        """Find out whether an ambiguous request landed; raise UNKNOWN if we cannot tell.

        Each look-up is paid for here, in the caller's class; an executor call
        inside the look-up spends that payment instead of paying twice."""
        last: VenueError | None = None
        for attempt in range(1, self.policy.max_attempts + 1):
            permit = await self._acquire("fetch_order", cls, ctx, None)
            credit = _LookupCredit(cls, permit)
            token = _LOOKUP.set(credit)
            try:
                found = await lookup()
            except Exception as exc:
                last = translate(exc)
                if last is None:
                    raise  # our bug
                if last.outcome is Outcome.NOT_FOUND:
                    found = None
                elif last.retryable or last.outcome is Outcome.UNKNOWN:
                    if last.outcome is Outcome.RATE_LIMITED:
                        self._pause(f"{op}.lookup", last, permit, ctx)
                    elif last.outcome is not Outcome.MAINTENANCE:  # a hold is its own wait
                        await asyncio.sleep(self._delay_s(attempt, last))
                    continue
                else:
                    raise last from None
            finally:
                _LOOKUP.reset(token)
                if credit.unspent:
                    self._probe_unanswered(permit)
            if permit.protect_probe:
                self.limiter.protect_probe_done(cleared=True)  # answered (found or not found)
            self._emit("exchange.outcome_resolved", {"op": op, "landed": found is not None}, ctx, Severity.WARNING)
            return found
        raise VenueError(Outcome.UNKNOWN, f"{op}: outcome still unknown after {self.policy.max_attempts} look-ups ({last})")

    # ------------------------------------------------------------ health
    def _note_success(self, op: str, permit: Permit, ctx: dict[str, Any]) -> None:
        if permit.probe:
            self._maintenance_over(op, ctx)
        ended = self.health.succeeded(op, self._clock.now_ms())
        if "banned" in ended:
            self.limiter.ban_over()
        self._health_events(op, ended, ctx)

    def _note_failure(self, op: str, err: VenueError, permit: Permit, ctx: dict[str, Any]) -> None:
        """One attempt's failure, in the venue's health (and the maintenance hold)."""
        now = self._clock.now_ms()
        if err.outcome is Outcome.MAINTENANCE:
            self._maintenance(op, err, permit, ctx)
            return
        if permit.probe:
            self._maintenance_over(op, ctx)  # any other outcome: the venue is back (or says something else)
        if err.outcome is Outcome.FATAL:
            condition = err.code or err.args[0].split(" ", 1)[0]
            if self.health.fatal(condition, str(err), now):
                data = {"op": op, "code": err.code, "error": str(err.args[0]), "condition": condition, "policy": "not retried; new entries blocked until an authenticated call succeeds; existing stops are left in place"}
                self._emit("exchange.fatal", data, ctx, Severity.CRITICAL)
            return
        if err.code == "read_only":
            return  # refused before it left (read-only mode): says nothing of the venue
        if err.transport:
            ended = self.health.transport_failed(str(err), now)
        elif err.code is not None:  # the venue answered: it is reachable
            ended = self.health.refused(now)
        else:
            return
        self._health_events(op, ended, ctx)

    def _health_events(self, op: str, changed: list[str], ctx: dict[str, Any]) -> None:
        if not changed:
            return
        report = self.health.report()
        for state in changed:
            if state == "unreachable" and report.unreachable_since_ms is not None:
                data = {"op": op, "since_ms": report.unreachable_since_ms, "failures": report.consecutive_failures, "last_answer_ms": report.last_answer_ms, "error": report.last_error}
                self._emit("exchange.unreachable", data, ctx, Severity.ERROR)
            elif state == "unreachable":
                self._emit("exchange.reachable", {"op": op, "last_answer_ms": report.last_answer_ms}, ctx, Severity.WARNING)
            elif state == "fatal":
                self._emit("exchange.fatal_cleared", {"op": op}, ctx, Severity.WARNING)
            elif state == "banned":
                self._emit("exchange.ban_over", {"op": op}, ctx, Severity.WARNING)

    def _maintenance(self, op: str, err: VenueError, permit: Permit, ctx: dict[str, Any]) -> None:
        p = self.policy
        pause_s = self.limiter.maintenance(granted_at=permit.granted_at, probe=permit.probe, base_s=p.maintenance_probe_ms / 1000, max_s=p.maintenance_probe_max_ms / 1000)
        if self.health.maintenance(True, self._clock.now_ms()):
            self._emit("exchange.maintenance", {"op": op, "code": err.code, "error": str(err.args[0]), "policy": "every call to this venue waits; one probe at a time"}, ctx, Severity.ERROR)
        if pause_s is not None:
            data = {"reason": "maintenance", "op": op, "code": err.code, "pause_ms": round(pause_s * 1000), "probe": permit.probe}
            self._emit("exchange.throttled", data, ctx, Severity.WARNING)

    def _maintenance_over(self, op: str, ctx: dict[str, Any]) -> None:
        self.limiter.end_hold()
        if self.health.maintenance(False, self._clock.now_ms()):
            self._emit("exchange.maintenance_over", {"op": op}, ctx, Severity.WARNING)

    def _probe_unanswered(self, permit: Permit) -> None:
        if permit.probe:
            self.limiter.probe_lost()
        if permit.protect_probe:
            self.limiter.protect_probe_done(cleared=False)

    # ------------------------------------------------------------ budget
    async def _acquire(self, op: str, cls: Priority, ctx: dict[str, Any], credit: _LookupCredit | None) -> Permit:
        """Take ``op``'s weight from the budget (waiting on this loop); returns the permit."""
        if credit is not None and credit.unspent:
            credit.unspent = False
            return credit.permit
        permit = await self.limiter.acquire(op, cls)
        if permit.waited_s >= self.THROTTLE_EVENT_S:
            self._note_slow(op, cls, permit.waited_s, permit.granted_at, ctx)
        return permit

    def _note_slow(self, op: str, cls: Priority, waited_s: float, now: float, ctx: dict[str, Any]) -> None:
        last_at, count, worst = self._slow.get(cls, (-self.THROTTLE_EVENT_EVERY_S, 0, 0.0))
        count, worst = count + 1, max(worst, waited_s)
        if now - last_at < self.THROTTLE_EVENT_EVERY_S:
            self._slow[cls] = (last_at, count, worst)
            return
        self._slow[cls] = (now, 0, 0.0)
        data = {"reason": "budget", "class": cls.name.lower(), "op": op, "waited_ms": round(waited_s * 1000), "slow_calls": count, "max_wait_ms": round(worst * 1000), "usage": self._usage()}
        self._emit("exchange.throttled", data, ctx, Severity.WARNING)

    def _pause(self, op: str, err: VenueError, permit: Permit, ctx: dict[str, Any]) -> None:
        """A rate-limit refusal: reads and entries of this venue wait (Retry-After if the venue gave
        one), protective calls probe; a hard ban (``err.ban_ms``) holds them for the venue's wait."""
        now_ms = self._clock.now_ms()
        hint_ms = retry_after_ms(str(err.args[0]), now_ms)
        if err.ban_ms is not None:
            wait_ms = hint_ms if hint_ms is not None else err.ban_ms
            started = self.limiter.banned(granted_at=permit.granted_at, ban_s=wait_ms / 1000, protect_probe=permit.protect_probe)
            if started is not None:
                probe_s = self.limiter.ban_probe_s
                policy = (
                    f"reads and entries wait until the ban ends; protective calls (stops, closes) probe once every {probe_s:g} s while one is waiting; "
                    "stops already on the venue stay live" if probe_s > 0 else "every call waits until the ban ends; stops already on the venue stay live"
                )
                alert: dict[str, Any] = {"op": op, "status": err.status, "code": err.code, "until_ms": now_ms + wait_ms, "wait_ms": wait_ms, "stated_by_venue": hint_ms is not None, "error": str(err.args[0]), "policy": policy}
                self._emit("alert.exchange_banned", alert, ctx, Severity.CRITICAL)
                self._emit("exchange.throttled", {"reason": "banned", "op": op, "code": err.code, "status": err.status, "pause_ms": wait_ms}, ctx, Severity.WARNING)
            self.health.banned(now_ms + wait_ms, str(err.args[0]), now_ms)
            return
        pause_s = self.limiter.rate_limited(
            granted_at=permit.granted_at,
            retry_after_s=hint_ms / 1000 if hint_ms is not None else None,
            base_s=self.policy.rate_limit_delay_ms / 1000,
            max_s=self.policy.max_delay_ms / 1000,
            protect_probe=permit.protect_probe,
        )
        if pause_s is not None:
            data: dict[str, Any] = {"reason": "rate_limited", "op": op, "code": err.code, "pause_ms": round(pause_s * 1000), "retry_after_ms": hint_ms, "protect_probe_ms": round(self.limiter.protect_probe_s * 1000), "usage": self._usage()}
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
    e, h = config.exchange, config.venue_health
    policy = RetryPolicy(
        max_attempts=e.max_attempts,
        base_delay_ms=e.retry_base_delay_ms,
        max_delay_ms=e.retry_max_delay_ms,
        rate_limit_delay_ms=e.rate_limit_delay_ms,
        maintenance_probe_ms=h.maintenance_probe_secs * 1000,
        maintenance_probe_max_ms=h.maintenance_probe_max_secs * 1000,
    )
    health = VenueHealth(venue, failures=h.unreachable_after_failures, after_ms=h.unreachable_after_secs * 1000)
    budget: dict[str, Any] = {
        "share": float(e.rate_limit_share), "reserve": float(e.protect_reserve),
        "protect_probe_s": e.protect_probe_ms / 1000, "protect_probe_max_s": max(e.protect_probe_ms, e.protect_probe_max_ms) / 1000, "ban_probe_s": float(e.ban_probe_secs),
    }  # fmt: skip
    style = _table_of(venue)
    if venue == "paper":
        style = config.paper.flavour if e.paper_rate_limits else None
        budget["monotonic_s"], budget["sleep"] = on_clock(clock)
    return Executor(venue=venue, store=store, clock=clock, policy=policy, limiter=RateLimiter.for_style(style, **budget), health=health)
