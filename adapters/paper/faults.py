"""Faults the paper exchange injects into its ccxt-style methods, on demand.

A :class:`FaultPlan` is configuration (a frozen msgspec Struct): per-method
error rates by class, the rate of *ambiguous* timeouts (the request is
executed on the engine and then ``ccxt.RequestTimeout`` is raised: the order
exists although the caller saw an error), a uniform latency range and a
partial-fill probability for market orders. A :class:`FaultInjector` is its
running state: one seeded RNG (so a run is reproducible for the same sequence
of calls) and a script of exact faults (:meth:`FaultInjector.fail_next`).

Error classes: ``network`` -> ``ccxt.NetworkError``, ``timeout`` ->
``ccxt.RequestTimeout``, ``rate_limit`` -> the flavour's rate-limit answer
(binance -1003 / bybit 10006, ``ccxt.RateLimitExceeded``),
``exchange_unavailable`` -> ``ccxt.ExchangeNotAvailable``. The method name
``"*"`` applies to every method that has no entry of its own.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from typing import Any

import ccxt
import msgspec

from adapters.paper.errors import paper_error, venue_error

ERROR_CLASSES = ("network", "timeout", "rate_limit", "exchange_unavailable")


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True):
    """``FaultPlan(error_rates={"create_order": {"network": 0.05}}, ambiguous_timeout_rate={"create_order": 0.02},
    latency_ms_min=0, latency_ms_max=0, partial_fill_prob=None, seed=0)``."""

    error_rates: dict[str, dict[str, float]] = {}
    ambiguous_timeout_rate: dict[str, float] = {}
    latency_ms_min: int = 0
    latency_ms_max: int = 0
    partial_fill_prob: float | None = None  # None: the engine's own setting
    seed: int = 0

    def __post_init__(self) -> None:
        for method, rates in self.error_rates.items():
            unknown = set(rates) - set(ERROR_CLASSES)
            if unknown:
                raise ValueError(f"error_rates[{method!r}]: unknown classes {sorted(unknown)} (known: {ERROR_CLASSES})")
            if sum(rates.values()) > 1:
                raise ValueError(f"error_rates[{method!r}]: rates add up to more than 1")
        if not 0 <= self.latency_ms_min <= self.latency_ms_max:
            raise ValueError("need 0 <= latency_ms_min <= latency_ms_max")


class FaultInjector:
    """Decides, call by call, whether a method fails and how long it takes."""

    def __init__(self, plan: FaultPlan | None = None, flavour: str = "binance") -> None:
        self.plan = plan or FaultPlan()
        self.flavour = flavour
        self.rng = random.Random(self.plan.seed)
        self._script: dict[str, collections.deque[tuple[Any, bool, Callable[[dict[str, Any]], bool] | None]]] = collections.defaultdict(collections.deque)

    def fail_next(self, method: str, error_class: Any = "network", count: int = 1, ambiguous: bool = False, when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Make the next ``count`` calls of ``method`` fail with ``error_class``.

        ``error_class`` is a class name from :data:`ERROR_CLASSES`, a ccxt
        exception class or an exception instance. ``ambiguous=True``: the call
        is executed first and then fails (use with ``"timeout"``). ``when``
        (a predicate on the call's arguments) limits the fault to matching
        calls, e.g. only stop orders: ``when=lambda a: a["type"] != "market"``.
        """
        if isinstance(error_class, str) and error_class not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {error_class!r} (known: {ERROR_CLASSES})")
        for _ in range(count):
            self._script[method].append((error_class, ambiguous, when))

    def pending(self, method: str) -> int:
        """Scripted faults still waiting for ``method``."""
        return len(self._script.get(method, ()))

    def draw(self, method: str, args: dict[str, Any] | None = None) -> tuple[BaseException | None, bool]:
        """(error to raise or None, whether it is raised *after* executing the call)."""
        script = self._script.get(method)
        if script:
            for i, (spec, ambiguous, when) in enumerate(script):
                if when is None or when(args or {}):
                    del script[i]
                    return self.make_error(spec, method), ambiguous
        plan = self.plan
        rates = plan.error_rates.get(method, plan.error_rates.get("*", {}))
        if rates:
            u, acc = self.rng.random(), 0.0
            for cls in ERROR_CLASSES:
                acc += rates.get(cls, 0.0)
                if u < acc:
                    return self.make_error(cls, method), False
        amb = plan.ambiguous_timeout_rate.get(method, plan.ambiguous_timeout_rate.get("*", 0.0))
        if amb and self.rng.random() < amb:
            return self.make_error("timeout", method), True
        return None, False

    def latency_ms(self) -> int:
        lo, hi = self.plan.latency_ms_min, self.plan.latency_ms_max
        return self.rng.randint(lo, hi) if hi > 0 else 0

    def make_error(self, spec: Any, method: str) -> BaseException:
        """The exception for a class name, ccxt class or instance, worded like ccxt's."""
        if isinstance(spec, BaseException):
            return spec
        if isinstance(spec, type):
            return paper_error(self.flavour, spec, f"{method} injected fault")
        if spec == "rate_limit":
            return venue_error(self.flavour, "rate_limit")
        if spec == "timeout":
            return paper_error(self.flavour, ccxt.RequestTimeout, f"{method} request timed out (10000 ms)")
        if spec == "exchange_unavailable":
            return paper_error(self.flavour, ccxt.ExchangeNotAvailable, f"{method} 503 Service Temporarily Unavailable")
        return paper_error(self.flavour, ccxt.NetworkError, f"{method} ECONNRESET (connection reset by peer)")


class ClockedFaultInjector(FaultInjector):
    """A :class:`FaultInjector` whose random draws depend on what is called when, not on call order across callers.

    Each call's draw comes from an RNG seeded with ``(plan.seed, method, symbol, clock ms, n)``, ``n``
    counting the calls with the same method and symbol at that instant. On a virtual clock
    (``tradebot replay``) the same replay draws the same faults whichever actor's thread reaches the
    exchange first. No latency: a wall-clock sleep would not move virtual time, only slow the run.
    Scripted faults (:meth:`fail_next`) come first, as in the base class.
    """

    def __init__(self, plan: FaultPlan | None, flavour: str, clock: Any) -> None:
        super().__init__(plan, flavour)
        self.clock = clock
        self._at = -1
        self._seen: collections.Counter[tuple[str, str]] = collections.Counter()

    def draw(self, method: str, args: dict[str, Any] | None = None) -> tuple[BaseException | None, bool]:
        now = self.clock.now_ms()
        if now != self._at:
            self._at, self._seen = now, collections.Counter()
        key = (method, str((args or {}).get("symbol")))
        n = self._seen[key]
        self._seen[key] += 1
        self.rng = random.Random(f"{self.plan.seed}:{method}:{key[1]}:{now}:{n}")
        return super().draw(method, args)

    def latency_ms(self) -> int:
        return 0
