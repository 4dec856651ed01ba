"""A venue's health as its executor sees it: the single record of how calls to it end.

The :class:`~adapters.executor.Executor` is the only writer: every attempt
ends as a success, a venue answer (a refusal with a venue code), a transport
failure (network, timeout, 503: no answer) or a maintenance answer, and a
FATAL refusal (key invalid or revoked, permission missing, IP not allowed) is
a condition of its own. From that record three states follow:

* **fatal**: a FATAL refusal; cleared by the next *successful authenticated*
  call (public market data says nothing about the key);
* **unreachable**: at least ``failures`` transport failures in a row, the run
  lasting at least ``after_ms``; cleared by the next answer of any kind;
* **maintenance**: the venue said so; cleared when a probe gets another answer;
* **banned**: a hard IP ban (Binance 418, Bybit 403) until the venue's stated
  or default end; cleared by the next success (the ban is IP-wide).

Each change of state is a :class:`HealthReport` handed to the listeners
(``subscribe``), from the executor's thread (the I/O loop): a listener only
*tells* (the wiring tells the supervisor), so nobody polls the executor. The
object is thread-safe: ``report()`` may be read from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import msgspec

from core.messages import Message

#: Calls that need no API key: their success proves the network, not the key.
PUBLIC_OPS = frozenset({"fetch_ticker", "fetch_tickers", "fetch_mark_price", "fetch_mark_prices", "load_markets", "fetch_markets", "fetch_order_book", "fetch_ohlcv", "fetch_time", "fetch_status", "fetch_funding_rate"})


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    """One venue's health at ``at_ms`` (all times on the executor's clock, epoch ms)."""

    venue: str
    at_ms: int
    #: FATAL conditions under way: condition -> what the venue said (e.g. ``"-2015" -> "AuthenticationError ..."``).
    fatal: dict[str, str] = {}
    fatal_since_ms: int | None = None
    unreachable_since_ms: int | None = None  # the first failure of the run that made it unreachable
    maintenance_since_ms: int | None = None
    #: A hard IP ban: until when the venue asked us to stay away, and what it said.
    banned_until_ms: int | None = None
    ban_reason: str | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    last_answer_ms: int | None = None  # the venue last answered (a success or a refusal with a code)
    last_success_ms: int | None = None

    @property
    def ok(self) -> bool:
        return not self.fatal and self.unreachable_since_ms is None and self.maintenance_since_ms is None and self.banned_until_ms is None


Listener = Callable[[HealthReport], None]


class VenueHealthChanged(Message, frozen=True, kw_only=True):
    """To the supervisor (the wiring connects the listener): a venue's health changed state."""

    report: HealthReport


class VenueHealth:
    """Thread-safe record of one venue's call outcomes (see module doc)."""

    def __init__(self, venue: str, *, failures: int = 3, after_ms: int = 10_000) -> None:
        self.venue = venue
        self.failures, self.after_ms = failures, after_ms
        self._lock = threading.RLock()  # a listener may read report()
        self._listeners: list[Listener] = []
        self._fatal: dict[str, str] = {}
        self._fatal_since: int | None = None
        self._run = 0  # transport failures in a row
        self._run_since: int | None = None
        self._unreachable_since: int | None = None
        self._maintenance_since: int | None = None
        self._banned_until: int | None = None
        self._ban_reason: str | None = None
        self._last_error: str | None = None
        self._last_answer: int | None = None
        self._last_success: int | None = None
        self._at = 0

    def subscribe(self, listener: Listener) -> None:
        """``listener(report)`` on every change of state (on the executor's thread: tell, never block)."""
        with self._lock:
            self._listeners.append(listener)

    def report(self) -> HealthReport:
        with self._lock:
            return self._report()

    # ------------------------------------------------------------ writers (the executor)
    def succeeded(self, op: str, now_ms: int) -> list[str]:
        """A call succeeded; returns the states it ended (``"unreachable"``, ``"fatal"``, ``"banned"``)."""
        with self._lock:
            self._at, self._last_answer, self._last_success = now_ms, now_ms, now_ms
            ended = self._answered()
            if self._banned_until is not None:
                self._banned_until, self._ban_reason = None, None
                ended.append("banned")
            if self._fatal and op not in PUBLIC_OPS:
                self._fatal, self._fatal_since = {}, None
                ended.append("fatal")
            return self._publish(ended)

    def refused(self, now_ms: int) -> list[str]:
        """The venue answered with a refusal (it is reachable); returns the states it ended."""
        with self._lock:
            self._at, self._last_answer = now_ms, now_ms
            return self._publish(self._answered())

    def transport_failed(self, error: str, now_ms: int) -> list[str]:
        """No answer (network, timeout, 503); returns ``["unreachable"]`` when this made it so."""
        with self._lock:
            self._at, self._last_error = now_ms, error
            self._run += 1
            if self._run_since is None:
                self._run_since = now_ms
            began = []
            if self._unreachable_since is None and self._run >= self.failures and now_ms - self._run_since >= self.after_ms:
                self._unreachable_since = self._run_since
                began.append("unreachable")
            return self._publish(began)

    def fatal(self, condition: str, error: str, now_ms: int) -> bool:
        """A FATAL refusal; True if the condition is new (not already under way)."""
        with self._lock:
            self._at, self._last_answer, self._last_error = now_ms, now_ms, error
            ended = self._answered()
            new = condition not in self._fatal
            if new:
                self._fatal = {**self._fatal, condition: error}
                self._fatal_since = self._fatal_since if self._fatal_since is not None else now_ms
            self._publish(ended + (["fatal"] if new else []))
            return new

    def banned(self, until_ms: int, reason: str, now_ms: int) -> bool:
        """A hard IP ban until ``until_ms``; True if it is new or now ends later than known."""
        with self._lock:
            self._at, self._last_answer, self._last_error = now_ms, now_ms, reason
            ended = self._answered()
            new = self._banned_until is None or until_ms > self._banned_until + 1000
            if new or self._banned_until is None:
                self._banned_until, self._ban_reason = until_ms, reason
            self._publish(ended + (["banned"] if new else []))
            return new

    def maintenance(self, on: bool, now_ms: int) -> bool:
        """The venue is (``on``) or is no longer in maintenance; True if that changed."""
        with self._lock:
            self._at = now_ms
            changed = self._answered() if on else []  # "maintenance" is an answer
            if on:
                self._last_answer = now_ms
            if on != (self._maintenance_since is not None):
                self._maintenance_since = now_ms if on else None
                changed.append("maintenance")
            self._publish(changed)
            return "maintenance" in changed

    # ------------------------------------------------------------ internals (lock held)
    def _answered(self) -> list[str]:
        self._run, self._run_since = 0, None
        if self._unreachable_since is None:
            return []
        self._unreachable_since = None
        return ["unreachable"]

    def _publish(self, changed: list[str]) -> list[str]:
        if changed:
            report, listeners = self._report(), list(self._listeners)
            for listener in listeners:  # under the lock: reports reach a listener in order
                listener(report)
        return changed

    def _report(self) -> HealthReport:
        return HealthReport(
            venue=self.venue,
            at_ms=self._at,
            fatal=dict(self._fatal),
            fatal_since_ms=self._fatal_since,
            unreachable_since_ms=self._unreachable_since,
            maintenance_since_ms=self._maintenance_since,
            banned_until_ms=self._banned_until,
            ban_reason=self._ban_reason,
            consecutive_failures=self._run,
            last_error=self._last_error,
            last_answer_ms=self._last_answer,
            last_success_ms=self._last_success,
        )
