"""Issue 11, bugs 3 and 4 at the executor: our bugs pass through, FATAL is not retried, maintenance
holds the venue with probes, an unreachable venue is noticed and its recovery too.

Real executor, real limiter, real paper exchange (faults injected with ``fail_next``);
time is a :class:`ManualTime` for the limiter and a :class:`VirtualClock` for the
executor's records, both moved by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from adapters.errors import Outcome, VenueError
from adapters.executor import Executor, RetryPolicy
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.paper.exchange import MARKET_FILES
from adapters.rate_limit import RateLimiter
from adapters.rate_tables import UNLIMITED
from adapters.venue import STYLES, Venue
from adapters.venue_health import HealthReport, VenueHealth
from core.clock import ManualTime, VirtualClock, drive, settle
from tests.conftest import SHARED

BTC = "BTC/USDT:USDT"
D = Decimal


def auth_refused(code: int = -2015, msg: str = "Invalid API-key, IP, or permissions for action.") -> ccxt.AuthenticationError:
    """What ccxt raises for Binance's answer to a revoked key (HTTP 401)."""
    return ccxt.AuthenticationError(f'binanceusdm {{"code":{code},"msg":"{msg}"}}')


def maintenance() -> ccxt.OnMaintenance:
    return ccxt.OnMaintenance('binanceusdm {"code":-1016,"msg":"System is under maintenance."}')


class Events:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def append(self, event: Any) -> None:
        self.got.append(event)

    def of(self, type_: str) -> list[Any]:
        return [e for e in self.got if e.type == type_]


class World:
    def __init__(self, *, max_attempts: int = 4, failures: int = 3, after_ms: int = 10_000) -> None:
        self.time = ManualTime()
        self.vclock = VirtualClock()
        markets = Markets.from_file(SHARED / "data" / "markets" / MARKET_FILES["binance"])
        engine = PaperEngine(markets, flavour="binance", slippage_bps=D(0))
        self.exchange = PaperExchange(engine, self.vclock, flavour="binance")
        self.exchange.set_mark(BTC, D("40000"))
        self.events = Events()
        self.reports: list[HealthReport] = []
        self.health = VenueHealth("paper", failures=failures, after_ms=after_ms)
        self.health.subscribe(self.reports.append)
        policy = RetryPolicy(max_attempts=max_attempts, base_delay_ms=1, max_delay_ms=2, maintenance_probe_ms=5_000, maintenance_probe_max_ms=20_000)
        limiter = RateLimiter(UNLIMITED, monotonic_s=self.time.now, sleep=self.time.sleep)
        self.executor = Executor(venue="paper", store=self.events, clock=self.vclock, policy=policy, limiter=limiter, health=self.health)  # type: ignore[arg-type]
        self.venue = Venue("paper", self.exchange, markets, self.executor, STYLES["binance"])

    def calls(self, method: str | None = None) -> list[str]:
        return [r["method"] for r in self.exchange.requests if method is None or r["method"] == method]


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# ------------------------------------------------------------ bug 3: our bugs are not venue refusals
class _BrokenParse(type(STYLES["binance"])):  # type: ignore[misc]
    """The venue layer with a parsing bug: the reply of an order cannot be read."""

    def report_id(self, raw: dict[str, Any]) -> str:
        return raw["info"]["no-such-field"]


def test_a_bug_parsing_the_reply_of_a_stop_is_not_retried_and_reaches_the_caller_as_itself():
    async def go() -> None:
        w = World()
        await w.exchange.load_markets()
        await w.venue.open_market("BTCUSDT", "buy", D("0.01"), "tb-p1-e1", ref_price=D(40000))
        broken = Venue("paper", w.exchange, w.venue.markets, w.executor, _BrokenParse())
        before = len(w.calls("create_order"))
        with pytest.raises(KeyError) as raised:
            await broken.place_stop("BTCUSDT", "sell", D("0.01"), D("39000"), "tb-p1-s1")
        assert raised.value.args == ("no-such-field",)  # the original exception, not a VenueError
        assert len(w.calls("create_order")) == before + 1  # sent once: not retried, not looked up
        assert not [e for e in w.events.of("exchange.request") if e.data["outcome"] != "ok"]  # not a refusal
        assert w.events.of("exchange.outcome_resolved") == []
        stops = await w.exchange.fetch_open_orders(BTC, None, None, {"trigger": True})
        assert [o["clientOrderId"] for o in stops] == ["tb-p1-s1"]  # it landed: the owner's look-up by client id finds it
        assert w.health.report().ok and w.reports == []

    run(go())


@pytest.mark.parametrize("bug", [KeyError("avgPrice"), AttributeError("'NoneType' object has no attribute 'get'"), ValueError("bad literal")], ids=lambda b: type(b).__name__)
def test_a_bug_inside_a_read_is_raised_untouched_and_not_retried(bug: Exception):
    async def go() -> None:
        w = World()
        await w.exchange.load_markets()
        w.exchange.fail_next("fetch_positions", bug, ambiguous=True)  # the call runs, then our code raises
        with pytest.raises(type(bug)) as raised:
            await w.venue.positions()
        assert raised.value is bug
        assert w.calls("fetch_positions") == ["fetch_positions"]
        assert w.events.of("exchange.request") == []

    run(go())


# ------------------------------------------------------------ bug 4: FATAL
def test_fatal_is_not_retried_recorded_once_and_cleared_by_an_authenticated_success():
    async def go() -> None:
        w = World(max_attempts=4)
        await w.exchange.load_markets()
        w.exchange.fail_next("fetch_positions", auth_refused(), count=2)
        for _ in range(2):
            with pytest.raises(VenueError) as err:
                await w.venue.positions()
            assert err.value.outcome is Outcome.FATAL and err.value.code == "-2015"
        assert w.calls("fetch_positions") == ["fetch_positions", "fetch_positions"]  # one request per call: no retry loop
        fatal = w.events.of("exchange.fatal")
        assert len(fatal) == 1 and fatal[0].severity.name == "CRITICAL" and fatal[0].data["code"] == "-2015"
        assert w.health.report().fatal and not w.health.report().ok
        assert await w.venue.mark_price("BTCUSDT") == D("40000")  # public data says nothing about the key
        assert w.health.report().fatal
        assert await w.venue.free_balance() > 0  # an authenticated call succeeded: the key works again
        assert w.health.report().ok
        assert len(w.events.of("exchange.fatal_cleared")) == 1
        assert [bool(r.fatal) for r in w.reports] == [True, False]
        w.exchange.fail_next("fetch_balance", auth_refused(-2014, "API-key format invalid."))
        with pytest.raises(VenueError):
            await w.venue.free_balance()
        assert len(w.events.of("exchange.fatal")) == 2  # a new episode is recorded again

    run(go())


def test_fatal_on_an_order_is_raised_at_once_and_nothing_else_is_touched():
    async def go() -> None:
        w = World()
        await w.exchange.load_markets()
        await w.venue.open_market("BTCUSDT", "buy", D("0.01"), "tb-p1-e1", ref_price=D(40000))
        await w.venue.place_stop("BTCUSDT", "sell", D("0.01"), D("39000"), "tb-p1-s1")
        w.exchange.fail_next("create_order", ccxt.PermissionDenied('bybit {"retCode":10005,"retMsg":"Permission denied"}'))
        with pytest.raises(VenueError) as err:
            await w.venue.open_market("BTCUSDT", "buy", D("0.01"), "tb-p2-e1", ref_price=D(40000))
        assert err.value.outcome is Outcome.FATAL
        assert w.calls().count("cancel_order") == 0
        stops = await w.exchange.fetch_open_orders(BTC, None, None, {"trigger": True})
        assert [o["clientOrderId"] for o in stops] == ["tb-p1-s1"]  # the existing stop stays

    run(go())


# ------------------------------------------------------------ bug 4: maintenance
def test_maintenance_holds_every_caller_and_probes_at_a_bounded_interval():
    async def go() -> None:
        w = World(max_attempts=4)
        await w.exchange.load_markets()
        w.exchange.fail_next("fetch_balance", maintenance(), count=2)
        first = asyncio.create_task(w.venue.free_balance())
        await settle()
        assert w.calls() == ["fetch_balance"] and w.health.report().maintenance_since_ms is not None
        others = [asyncio.create_task(w.venue.positions()), asyncio.create_task(w.venue.mark_price("BTCUSDT"))]
        await settle()
        await w.time.advance(4.9)
        assert w.calls() == ["fetch_balance"]  # nobody goes during the pause
        await w.time.advance(0.1)
        assert w.calls() == ["fetch_balance"] * 2  # one probe at 5 s: maintenance again
        await w.time.advance(9.9)
        assert len(w.calls()) == 2  # the next pause is twice as long
        await drive(w.time, [first, *others])
        assert w.time.now() == 15.0
        assert sorted(w.calls()[2:]) == ["fetch_balance", "fetch_mark_price", "fetch_positions"]  # the probe (first in line) answered: all go
        assert first.result() > 0 and others[1].result() == D("40000")
        assert [e.data["pause_ms"] for e in w.events.of("exchange.throttled") if e.data["reason"] == "maintenance"] == [5000, 10000]
        assert len(w.events.of("exchange.maintenance")) == 1 and len(w.events.of("exchange.maintenance_over")) == 1
        assert w.health.report().ok and [r.maintenance_since_ms is not None for r in w.reports] == [True, False]

    run(go())


def test_an_order_refused_for_maintenance_is_not_resent():
    async def go() -> None:
        w = World()
        await w.exchange.load_markets()
        w.exchange.fail_next("create_order", maintenance())
        with pytest.raises(VenueError) as err:
            await w.venue.open_market("BTCUSDT", "buy", D("0.01"), "tb-p1-e1", ref_price=D(40000))
        assert err.value.outcome is Outcome.MAINTENANCE and w.calls() == ["create_order"]
        assert w.executor.limiter.holding

    run(go())


def test_the_probe_interval_is_bounded():
    async def go() -> list[int]:
        w = World(max_attempts=6)
        await w.exchange.load_markets()
        w.exchange.fail_next("fetch_balance", maintenance(), count=5)
        task = asyncio.create_task(w.venue.free_balance())
        await drive(w.time, [task])
        return [e.data["pause_ms"] for e in w.events.of("exchange.throttled") if e.data["reason"] == "maintenance"]

    assert run(go()) == [5000, 10000, 20000, 20000, 20000]


# ------------------------------------------------------------ bug 4: unreachable
def test_unreachable_after_failures_lasting_long_enough_and_reachable_at_the_next_answer():
    async def go() -> None:
        w = World(max_attempts=2, failures=3, after_ms=10_000)
        await w.exchange.load_markets()
        w.exchange.fail_next("fetch_positions", "network", count=6)
        for _ in range(3):
            with pytest.raises(VenueError):
                await w.venue.positions()
            if w.health.report().unreachable_since_ms is None:
                w.vclock.advance(6_000)
        report = w.health.report()
        assert report.unreachable_since_ms is not None and report.consecutive_failures >= 3
        assert len(w.events.of("exchange.unreachable")) == 1 and w.events.of("exchange.unreachable")[0].severity.name == "ERROR"
        assert await w.venue.positions() == []
        assert w.health.report().ok and len(w.events.of("exchange.reachable")) == 1
        assert [r.unreachable_since_ms is not None for r in w.reports] == [True, False]

    run(go())


def test_a_short_blip_is_not_an_outage():
    async def go() -> None:
        w = World(max_attempts=4, failures=3, after_ms=10_000)
        await w.exchange.load_markets()
        w.exchange.fail_next("fetch_positions", "network", count=3)
        assert await w.venue.positions() == []  # three failures within milliseconds, then an answer
        assert w.reports == [] and w.health.report().ok

    run(go())
