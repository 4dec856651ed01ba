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
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Awaitable, Callable, TypeVar

import msgspec

from adapters.errors import Outcome, VenueError, classify
from adapters.event_store import EventStore
from tradebot.clock import Clock
from tradebot.events import Event, Severity

T = TypeVar("T")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    max_attempts: int = 4
    base_delay_ms: int = 200
    max_delay_ms: int = 5_000
    rate_limit_delay_ms: int = 2_000


class Executor:
    def __init__(self, *, venue: str, store: EventStore | None, clock: Clock, policy: RetryPolicy | None = None, seed: int | None = None) -> None:
        self.venue = venue
        self._store = store
        self._clock = clock
        self.policy = policy or RetryPolicy()
        self._rng = random.Random(seed)

    async def run(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        *,
        idempotent: bool,
        lookup: Callable[[], Awaitable[T | None]] | None = None,
        record: bool = True,
        context: dict[str, Any] | None = None,
    ) -> T:
        """Run ``call`` under the policy; returns its result or raises VenueError."""
        ctx = context or {}
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                result = await call()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified here, once
                err = classify(exc)
                self._record(op, attempt, err, started, ctx, always=True)
                if err.outcome is Outcome.UNKNOWN or (err.retryable and not idempotent):
                    if lookup is None:
                        if not idempotent:
                            raise err from None
                    else:
                        found = await self._resolve(op, lookup, ctx)
                        if found is not None:
                            return found
                elif not err.retryable:
                    raise err from None
                if attempt >= self.policy.max_attempts:
                    raise err from None
                await asyncio.sleep(self._delay_s(attempt, err))
                continue
            if record:
                self._record(op, attempt, None, started, ctx, always=False)
            return result

    async def _resolve(self, op: str, lookup: Callable[[], Awaitable[T | None]], ctx: dict[str, Any]) -> T | None:
        """Find out whether an ambiguous request landed; raise UNKNOWN if we cannot tell."""
        last: VenueError | None = None
        for attempt in range(1, self.policy.max_attempts + 1):
            try:
                found = await lookup()
            except Exception as exc:  # noqa: BLE001
                last = classify(exc)
                if last.outcome is Outcome.NOT_FOUND:
                    found = None
                elif last.retryable or last.outcome is Outcome.UNKNOWN:
                    await asyncio.sleep(self._delay_s(attempt, last))
                    continue
                else:
                    raise last from None
            self._emit("exchange.outcome_resolved", {"op": op, "landed": found is not None}, ctx, Severity.WARNING)
            return found
        raise VenueError(Outcome.UNKNOWN, f"{op}: outcome still unknown after {self.policy.max_attempts} look-ups ({last})")

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
