"""The venue request budget: windows, priority classes, the protective reserve, venue-wide pauses.

Real limiter, real executor, real paper exchange; time is a :class:`ManualTime`
that moves only when a test (or :func:`drive`) says so, so minutes of budget
run in milliseconds and nothing sleeps on the wall clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import ccxt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.executor import Executor, RetryPolicy
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.paper.exchange import MARKET_FILES
from adapters.rate_limit import RateLimiter
from adapters.rate_tables import Priority, VenueLimits, Window, priority_of, retry_after_ms
from adapters.venue import STYLES, Venue
from adapters.venues.binance import LIMITS as BINANCE
from adapters.venues.bybit import LIMITS as BYBIT
from core.clock import ManualTime, VirtualClock, drive, settle
from tests.conftest import SHARED, make_config
from tradebot.wiring import build_executor

BTC = "BTC/USDT:USDT"


def limiter(limits: VenueLimits, clock: ManualTime, **kw: Any) -> RateLimiter:
    return RateLimiter(limits, monotonic_s=clock.now, sleep=clock.sleep, **kw)


#: One window of 10 units per minute: a small world whose arithmetic a reader can follow.
TEN = VenueLimits(style="test", windows=(Window("w", 10, 60_000),), costs={"fetch": {"w": 1}, "create_order": {"w": 1}}, default_cost={"w": 1})


def run(coro: Awaitable[Any]) -> Any:
    """Run a test coroutine; a hang fails it (wall clock) instead of hanging the suite."""
    return asyncio.run(asyncio.wait_for(coro, 30))


# ------------------------------------------------------------ classes and tables
@pytest.mark.parametrize(
    ("op", "ctx", "expected"),
    [
        ("create_order.stop", None, Priority.PROTECT),
        ("create_order.close", None, Priority.PROTECT),
        ("cancel_order", {"position_id": "p1"}, Priority.PROTECT),  # a position actor's own cancel
        ("cancel_order", {"actor": "sync"}, Priority.ENTRY),  # zombie clean-up
        ("clear_attached", {"position_id": "p1"}, Priority.PROTECT),  # Bybit trading-stop
        ("create_order.entry", None, Priority.ENTRY),
        ("create_order.take_profit", None, Priority.ENTRY),
        ("fetch_positions", None, Priority.READ),
        ("fetch_order", {"position_id": "p1"}, Priority.READ),  # a take-profit's check
        ("fetch_order", {"position_id": "p1", "protective": True}, Priority.PROTECT),  # its stop's
        ("fetch_positions", {"position_id": "p1", "protective": True}, Priority.PROTECT),
        ("fetch_mark_price", {"position_id": "p1", "protective": True}, Priority.PROTECT),
    ],
)
def test_op_decides_the_class(op: str, ctx: dict | None, expected: Priority):
    assert priority_of(op, ctx) is expected


def test_weights_come_from_the_venue_tables():
    assert BINANCE.cost("fetch_positions") == {"weight_1m": 5}
    assert BINANCE.cost("fetch_open_orders") == {"weight_1m": 40}
    assert BINANCE.cost("create_order.stop") == {"weight_1m": 1, "orders_10s": 1, "orders_1m": 1}
    assert BINANCE.cost("something_new") == {"weight_1m": 5}
    assert BYBIT.cost("create_order.entry") == {"ip_5s": 1, "create_1s": 1}
    assert BYBIT.cost("fetch_ticker") == {"ip_5s": 1}
    assert BYBIT.cost("clear_attached") == {"ip_5s": 1, "trading_stop_1s": 1}


def test_build_executor_picks_the_table_from_the_venue_and_the_config(tmp_path):
    cfg = make_config(tmp_path, '[paper]\nflavour = "bybit"\n[exchange]\nrate_limit_share = 0.5\nprotect_reserve = 0.1\npaper_rate_limits = true\n')
    ex = build_executor(cfg, "paper", VirtualClock(), None)
    assert ex.limiter.limits is BYBIT and ex.limiter.share == 0.5 and ex.limiter.reserve == 0.1
    assert build_executor(make_config(tmp_path), "paper", VirtualClock(), None).limiter.limits.windows == ()  # paper: none by default
    assert build_executor(make_config(tmp_path), "bybit", VirtualClock(), None).limiter.limits is BYBIT
    assert Executor(venue="binanceusdm", store=None, clock=VirtualClock()).limiter.limits is BINANCE  # without wiring too
    assert Executor(venue="somewhere", store=None, clock=VirtualClock()).limiter.limits.windows == ()


def test_the_paper_venues_budget_runs_on_the_paper_clock(tmp_path):
    """Virtual time in tests: a throttled call goes when the test moves the clock, not before."""
    clock = VirtualClock()
    ex = build_executor(make_config(tmp_path, "[exchange]\npaper_rate_limits = true\n"), "paper", clock, None)

    async def go() -> None:
        reads = [asyncio.create_task(ex.limiter.acquire("fetch_positions")) for _ in range(308)]
        await settle()
        assert sum(t.done() for t in reads) == 307
        clock.advance(59_999)
        await settle()
        assert not reads[-1].done()
        clock.advance(1)
        permit = await reads[-1]
        assert permit.waited_s == 60.0

    run(go())


@pytest.mark.parametrize(("toml", "message"), [("rate_limit_share = 0", "exchange.rate_limit_share: expected"), ("protect_reserve = 1", "exchange.protect_reserve: expected")])
def test_budget_config_is_bounded(tmp_path, toml: str, message: str):
    from core.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_config(tmp_path, f"[exchange]\n{toml}\n")


# ------------------------------------------------------------ (a) the window slides
def test_reads_beyond_the_window_wait_until_it_slides():
    """Binance: reads may use 2400 x 0.8 x 0.8 = 1536 weight a minute; positionRisk weighs 5."""

    async def go() -> list[float]:
        clock = ManualTime()
        lim = limiter(BINANCE, clock)
        tasks = [asyncio.create_task(lim.acquire("fetch_positions")) for _ in range(700)]
        await drive(clock, tasks)
        return [t.result().granted_at for t in tasks]

    granted = run(go())
    assert granted.count(0.0) == 307  # 307 x 5 = 1535 <= 1536
    assert granted.count(60.0) == 307  # the whole first minute slid out at once
    assert granted.count(120.0) == 86 and granted == sorted(granted)  # FIFO


def test_sliding_frees_weight_as_it_was_taken():
    async def go() -> list[float]:
        clock = ManualTime()
        lim = limiter(TEN, clock, share=1.0, reserve=0.2)
        first = []
        for _ in range(8):  # reads cap: 8 of 10
            first.append((await lim.acquire("fetch")).granted_at)
            await clock.advance(1)
        tasks = [asyncio.create_task(lim.acquire("fetch")) for _ in range(3)]
        await drive(clock, tasks)
        return first + [t.result().granted_at for t in tasks]

    assert run(go()) == [0, 1, 2, 3, 4, 5, 6, 7, 60, 61, 62]


# ------------------------------------------------------------ (b) priority
def test_protect_issued_last_is_served_first_and_at_once_within_the_reserve():
    async def go() -> None:
        clock = ManualTime()
        lim = limiter(BINANCE, clock)
        reads = [asyncio.create_task(lim.acquire("fetch_positions")) for _ in range(400)]
        entries = [asyncio.create_task(lim.acquire("create_order.entry")) for _ in range(3)]
        await settle()
        assert sum(t.done() for t in reads) == 307  # 1535 of the 1536 reads and entries may use
        assert [t.done() for t in entries] == [True, False, False]  # ahead of the queued reads, up to 1536
        stop = await lim.acquire("create_order.stop")
        assert stop.waited_s == 0 and stop.granted_at == 0.0  # in the reserve, at once
        assert lim.stats()["windows"]["weight_1m"]["used"] == 1537
        await drive(clock, reads + entries)
        assert [t.result().granted_at for t in entries] == [0.0, 60.0, 60.0]  # before the reads still queued
        assert min(t.result().granted_at for t in reads if t.result().granted_at > 0) == 60.0

    run(go())


def test_protect_waiting_behind_a_full_window_goes_before_earlier_reads():
    async def go() -> list[str]:
        clock = ManualTime()
        lim = limiter(TEN, clock, share=1.0, reserve=0.2)
        for _ in range(8):
            await lim.acquire("fetch")
            await clock.advance(1)
        for _ in range(2):  # the reserve, used by protective calls: the window is full
            await lim.acquire("create_order.stop", Priority.PROTECT)
            await clock.advance(1)
        order: list[str] = []

        async def call(name: str, cls: Priority) -> None:
            await lim.acquire("fetch", cls)
            order.append(f"{name}@{clock.now():g}")

        tasks = [asyncio.create_task(call(f"read{i}", Priority.READ)) for i in range(3)]
        await clock.advance(1)
        tasks.append(asyncio.create_task(call("entry", Priority.ENTRY)))
        tasks.append(asyncio.create_task(call("stop", Priority.PROTECT)))
        await drive(clock, tasks)
        return order

    # t=60: the first unit slides out: only the stop may use it (9 + 1 <= 10; reads and entries stop
    # at 8, reached again when t=63 slides out the unit of t=3)
    assert run(go()) == ["stop@60", "entry@63", "read0@64", "read1@65", "read2@66"]


def test_a_waiter_does_not_hold_up_calls_that_need_none_of_its_windows():
    """An entry waiting for the order window does not stop reads that only need weight."""

    async def go() -> None:
        clock = ManualTime()
        lim = limiter(BINANCE, clock)
        entries = [asyncio.create_task(lim.acquire("create_order.entry")) for _ in range(200)]
        await settle()
        assert sum(t.done() for t in entries) == 96  # 300 x 0.8 x 0.8 per 10 s, half of it booked for their stops
        read = await lim.acquire("fetch_positions")
        assert read.waited_s == 0
        await drive(clock, entries)

    run(go())


# ------------------------------------------------------------ (c) the reserve
@pytest.mark.parametrize("op", ["fetch_order", "create_order.entry", "cancel_order"])
def test_reads_and_entries_never_use_the_reserve(op: str):
    async def go() -> None:
        clock = ManualTime()
        lim = limiter(BINANCE, clock)
        tasks = [asyncio.create_task(lim.acquire(op)) for _ in range(5000)]
        for _ in range(20):  # two minutes of sliding, in steps
            await clock.advance(7)
            for name, w in lim.stats()["windows"].items():
                assert w["used"] <= w["cap_non_protect"], (name, w)
        for t in tasks:
            t.cancel()
        await settle()
        assert lim.stats()["classes"][priority_of(op).name.lower()]["queued"] == 0

    run(go())


def test_bybit_order_endpoints_per_second():
    async def go() -> tuple[int, int]:
        clock = ManualTime()
        lim = limiter(BYBIT, clock)
        entries = [asyncio.create_task(lim.acquire("create_order.entry")) for _ in range(20)]
        await settle()
        stops = [asyncio.create_task(lim.acquire("create_order.stop")) for _ in range(5)]
        await settle()
        granted = sum(t.done() for t in entries), sum(t.done() for t in stops)
        await drive(clock, entries + stops)
        return granted

    # 10/s x 0.8 = 8. Each entry books its stop's unit, so entries stop at 3 (3 used + 3 booked
    # + 1 > 6.4); the stops are not held by the bookings: the 3 booked and 2 more fit the 8.
    assert run(go()) == (3, 5)


def test_a_burst_of_entries_never_crowds_out_their_own_stops():
    """Five entries at once on Bybit, each followed by its stop as soon as it is granted: without
    bookings the five entries and three stops filled the 8 creates the bot takes of Bybit's 10 per
    second, and the last two stops waited ~1 s; now every stop goes the instant its entry does and
    the later entries wait for the window instead."""

    async def go() -> tuple[list[float], list[float]]:
        clock = ManualTime()
        lim = limiter(BYBIT, clock)
        entry_at: list[float] = []
        stop_gap: list[float] = []

        async def open_one() -> None:
            await lim.acquire("create_order.entry")
            sent = clock.now()
            entry_at.append(sent)
            await clock.sleep(0.005)  # the entry's round trip: its stop follows the fill
            await lim.acquire("create_order.stop")
            stop_gap.append(round(clock.now() - sent, 6))

        tasks = [asyncio.create_task(open_one()) for _ in range(5)]
        await drive(clock, tasks)
        return entry_at, stop_gap

    entry_at, stop_gap = run(go())
    assert stop_gap == [0.005] * 5  # no stop ever waits for its window: only its entry's round trip
    assert sorted(entry_at)[:3] == [0.0] * 3 and min(sorted(entry_at)[3:]) >= 1.0  # the 4th and 5th entries wait


# ------------------------------------------------------------ (d) venue-wide pause
def test_rate_limited_holds_reads_and_entries_while_a_stop_probes_first():
    """After a 429 reads and entries wait the pause out; the first stop goes after protect_probe_s,
    the next one waits for its answer, and once the venue took it protective calls flow."""

    async def go() -> None:
        clock = ManualTime()
        lim = limiter(BINANCE, clock, protect_probe_s=0.25)
        sent = await lim.acquire("fetch_positions")
        assert lim.rate_limited(granted_at=sent.granted_at, retry_after_s=None, base_s=2.0, max_s=5.0) == 2.0
        order: list[str] = []
        permits: dict[str, Any] = {}

        async def call(name: str, op: str) -> None:
            permits[name] = await lim.acquire(op)
            order.append(f"{name}@{clock.now():g}")

        tasks = [asyncio.create_task(call(f"read{i}", "fetch_order")) for i in range(3)]
        tasks.append(asyncio.create_task(call("entry", "create_order.entry")))
        tasks += [asyncio.create_task(call("stop1", "create_order.stop")), asyncio.create_task(call("stop2", "create_order.stop"))]
        await settle()
        await clock.advance(0.25)
        assert order == ["stop1@0.25"] and permits["stop1"].protect_probe
        await clock.advance(0.5)
        assert order == ["stop1@0.25"]  # stop2 waits for the probe's answer
        lim.protect_probe_done(cleared=True)  # the venue took it: protective calls go
        await settle()
        assert order == ["stop1@0.25", "stop2@0.75"] and not permits["stop2"].protect_probe
        assert (await lim.acquire("create_order.close")).waited_s == 0  # the rest of the pause, at once
        await clock.advance(1.0)
        assert len(order) == 2 and lim.stats()["paused_ms"] == pytest.approx(250)
        await drive(clock, tasks)
        assert order[2:] == ["entry@2", "read0@2", "read1@2", "read2@2"]

    run(go())


def test_a_refused_protective_probe_backs_off_without_lengthening_the_pause():
    async def go() -> list[float]:
        clock = ManualTime()
        lim = limiter(BINANCE, clock, protect_probe_s=0.25, protect_probe_max_s=1.0)
        p = await lim.acquire("fetch_positions")
        lim.rate_limited(granted_at=p.granted_at, retry_after_s=None, base_s=5.0, max_s=5.0)
        sent = []
        for _ in range(5):
            task = asyncio.create_task(lim.acquire("create_order.stop"))
            await drive(clock, [task])
            sent.append(clock.now())
            assert task.result().protect_probe
            assert lim.rate_limited(granted_at=task.result().granted_at, retry_after_s=None, base_s=5.0, max_s=5.0, protect_probe=True) is None
        assert lim.stats()["paused_ms"] == pytest.approx((5.0 - clock.now()) * 1000)
        return sent

    # 0.25 s, then 0.5, 1.0 (the cap), 1.0 ... after each refusal
    assert run(go()) == pytest.approx([0.25, 0.75, 1.75, 2.75, 3.75])


def test_a_hard_ban_holds_reads_for_the_venues_wait_and_a_stop_probes_slowly():
    """Binance 418 / Bybit 403: reads wait the whole ban; a waiting stop probes every ban_probe_s;
    a probe the venue takes ends the ban for everyone (it is IP-wide)."""

    async def go() -> list[str]:
        clock = ManualTime()
        lim = limiter(BINANCE, clock, ban_probe_s=60.0)
        p = await lim.acquire("fetch_positions")
        assert lim.banned(granted_at=p.granted_at, ban_s=600.0) == 600.0
        assert lim.is_banned and lim.stats()["banned_ms"] == 600_000
        order: list[str] = []

        async def call(name: str, op: str) -> Any:
            permit = await lim.acquire(op)
            order.append(f"{name}@{clock.now():g}")
            return permit

        read = asyncio.create_task(call("read", "fetch_positions"))
        stop = asyncio.create_task(call("stop", "create_order.stop"))
        await drive(clock, [stop])
        assert order == ["stop@60"] and stop.result().protect_probe
        assert lim.banned(granted_at=stop.result().granted_at, ban_s=540.0, protect_probe=True) is None  # the same ban, confirmed
        stop2 = asyncio.create_task(call("stop2", "create_order.stop"))
        await drive(clock, [stop2])
        lim.protect_probe_done(cleared=True)  # taken: the ban is over
        await drive(clock, [read])
        assert not lim.is_banned
        return order

    assert run(go()) == ["stop@60", "stop2@120", "read@120"]


def test_with_ban_probes_off_a_stop_waits_the_ban_out_too():
    async def go() -> float:
        clock = ManualTime()
        lim = limiter(BINANCE, clock, ban_probe_s=0.0)
        p = await lim.acquire("fetch_positions")
        lim.banned(granted_at=p.granted_at, ban_s=120.0)
        stop = asyncio.create_task(lim.acquire("create_order.stop"))
        await drive(clock, [stop])
        return clock.now()

    assert run(go()) == 120.0


def test_refusals_of_requests_already_in_flight_count_once_and_later_ones_back_off():
    async def go() -> list[float | None]:
        clock = ManualTime()
        lim = limiter(BINANCE, clock)
        in_flight = [await lim.acquire("fetch_order") for _ in range(5)]
        out = [lim.rate_limited(granted_at=p.granted_at, retry_after_s=None, base_s=2.0, max_s=5.0) for p in in_flight]
        await clock.advance(2)
        for _ in range(3):  # each retry after a pause is refused again: 4 s, then the 5 s cap
            p = await lim.acquire("fetch_order")
            out.append(lim.rate_limited(granted_at=p.granted_at, retry_after_s=None, base_s=2.0, max_s=5.0))
            await clock.advance(out[-1] or 0)
        await clock.advance(61)  # a minute without refusals: the backoff starts over
        p = await lim.acquire("fetch_order")
        out.append(lim.rate_limited(granted_at=p.granted_at, retry_after_s=None, base_s=2.0, max_s=5.0))
        return out

    assert run(go()) == [2.0, None, None, None, None, 4.0, 5.0, 5.0, 2.0]


def test_the_venues_own_wait_wins():
    now_ms = 1_700_000_000_000
    assert retry_after_ms('binanceusdm 418 {"code":-1003,"msg":"Way too many requests; IP(1.2.3.4) banned until ' + str(now_ms + 90_000) + '. Please use the websocket."}', now_ms) == 90_000
    assert retry_after_ms("429 Too Many Requests Retry-After: 7", now_ms) == 7000
    assert retry_after_ms('bybit {"retCode":10006,"retMsg":"Too many visits!"}', now_ms) is None

    async def go() -> float | None:
        clock = ManualTime()
        lim = limiter(BINANCE, clock)
        p = await lim.acquire("fetch_order")
        return lim.rate_limited(granted_at=p.granted_at, retry_after_s=90.0, base_s=2.0, max_s=5.0)

    assert run(go()) == 90.0


# ------------------------------------------------------------ (e) end to end
class Events:
    """The executor's event sink (the store's ``append``), kept in a list."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def append(self, event: Any) -> None:
        self.got.append(event)

    def of(self, type_: str) -> list[Any]:
        return [e for e in self.got if e.type == type_]


def paper_world(clock: ManualTime, policy: RetryPolicy | None = None) -> tuple[Venue, PaperExchange, Events]:
    vclock = VirtualClock()
    markets = Markets.from_file(SHARED / "data" / "markets" / MARKET_FILES["binance"])
    engine = PaperEngine(markets, flavour="binance", slippage_bps=Decimal(0))
    exchange = PaperExchange(engine, vclock, flavour="binance")
    exchange.set_mark(BTC, Decimal("40000"))
    events = Events()
    executor = Executor(venue="paper", store=events, clock=vclock, policy=policy or RetryPolicy(), limiter=limiter(BINANCE, clock))  # type: ignore[arg-type]
    return Venue("paper", exchange, markets, executor, STYLES["binance"]), exchange, events


def test_executor_rate_limit_pause_holds_reads_and_the_stop_probes_first():
    async def go() -> None:
        clock = ManualTime()
        venue, exchange, events = paper_world(clock, RetryPolicy(rate_limit_delay_ms=2000))
        venue.executor.limiter.protect_probe_s = 0.25
        await exchange.load_markets()
        entry = await venue.open_market("BTCUSDT", "buy", Decimal("0.01"), "tb-p1-e1", ref_price=Decimal(40000))
        assert entry.filled == Decimal("0.010")
        exchange.faults.fail_next("fetch_positions", "rate_limit")
        refused = asyncio.create_task(venue.positions())  # the sync actor's read: refused, -1003
        await settle()
        assert [e.data["reason"] for e in events.of("exchange.throttled")] == ["rate_limited"]
        assert events.of("exchange.throttled")[0].data["pause_ms"] == 2000
        others = [asyncio.create_task(venue.free_balance()), asyncio.create_task(venue.mark_price("BTCUSDT"))]
        exchange.faults.fail_next("create_order", "rate_limit")  # the stop's first try is refused too
        stop = asyncio.create_task(venue.place_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal("39000"), "tb-p1-s1"))
        await settle()
        before = len(exchange.requests)
        await drive(clock, [stop])
        after = [r["method"] for r in list(exchange.requests)[before:]]
        assert after == ["create_order", "create_order"]  # probed at 0.25 s (refused), again at 0.75 s: no look-up, no reads
        assert stop.result().trigger_price == Decimal("39000.0") and clock.now() == pytest.approx(0.75)
        assert not any(t.done() for t in [refused, *others])
        await drive(clock, [refused, *others])
        rest = [r["method"] for r in list(exchange.requests)[before + 2 :]]
        assert sorted(rest) == ["fetch_balance", "fetch_mark_price", "fetch_positions"] and clock.now() == 2.0
        assert refused.result()[0].qty == Decimal("0.010")
        stats = venue.executor.limiter.stats()
        assert stats["pauses"] == 1 and stats["classes"]["protect"]["wait_ms_max"] == 500

    run(go())


def test_executor_under_a_ban_alerts_once_shows_it_in_health_and_clears_on_success():
    async def go() -> None:
        clock = ManualTime()
        venue, exchange, events = paper_world(clock)
        venue.executor.limiter.ban_probe_s = 30.0
        await exchange.load_markets()
        await venue.open_market("BTCUSDT", "buy", Decimal("0.01"), "tb-p1-e1", ref_price=Decimal(40000))
        now_ms = venue.executor._clock.now_ms()  # the events' clock (it stands still here; the limiter's moves)

        def ban(left_ms: int) -> ccxt.DDoSProtection:
            return ccxt.DDoSProtection('binanceusdm 418 I\'m a teapot {"code":-1003,"msg":"Way too many requests; IP(127.0.0.1) banned until ' + str(now_ms + left_ms) + '."}')

        exchange.faults.fail_next("fetch_positions", ban(300_000))
        read = asyncio.create_task(venue.positions())
        await settle()
        (alert,) = events.of("alert.exchange_banned")
        assert alert.severity.name == "CRITICAL" and alert.data["wait_ms"] == 300_000 and alert.data["stated_by_venue"] and alert.data["status"] == 418
        assert venue.executor.health.report().banned_until_ms == now_ms + 300_000 and not venue.executor.health.report().ok
        exchange.faults.fail_next("create_order", ban(270_000))  # 30 s later, the first probe is refused: the same ban, no second alert
        stop = asyncio.create_task(venue.place_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal("39000"), "tb-p1-s1"))
        await drive(clock, [stop])
        assert clock.now() == pytest.approx(60.0) and len(events.of("alert.exchange_banned")) == 1
        await drive(clock, [read])  # the probe went through: the ban is over for the reads too
        assert clock.now() == pytest.approx(60.0) and venue.executor.health.report().banned_until_ms is None
        assert [e.type for e in events.got if e.type == "exchange.ban_over"] == ["exchange.ban_over"]

    run(go())


def test_a_stops_lookup_after_a_timeout_is_protective_and_paid_once():
    async def go() -> dict[str, Any]:
        clock = ManualTime()
        venue, exchange, events = paper_world(clock)
        await exchange.load_markets()
        await venue.open_market("BTCUSDT", "buy", Decimal("0.01"), "tb-p1-e1", ref_price=Decimal(40000))
        exchange.faults.fail_next("create_order", "timeout", ambiguous=True)
        before = venue.executor.limiter.stats()["classes"]
        report = await venue.place_stop("BTCUSDT", "sell", Decimal("0.01"), Decimal("39000"), "tb-p1-s1")
        assert report.client_id == "tb-p1-s1" and [e.data["landed"] for e in events.of("exchange.outcome_resolved")] == [True]
        after = venue.executor.limiter.stats()["classes"]
        return {cls: after[cls]["granted"] - before[cls]["granted"] for cls in after}

    # the create and one paid look-up (the algo-book fetch inside it spends that payment)
    assert run(go()) == {"protect": 2, "entry": 0, "read": 0}


def test_a_long_wait_is_reported_once_per_interval():
    async def go() -> list[Any]:
        clock = ManualTime()
        venue, exchange, events = paper_world(clock)
        await exchange.load_markets()
        reads = [asyncio.create_task(venue.free_balance()) for _ in range(700)]  # 5 weight each: two minutes' worth
        await drive(clock, reads)
        return events.of("exchange.throttled")

    throttled = run(go())
    assert [e.data["reason"] for e in throttled] == ["budget", "budget"]  # at 60 s and at 120 s, not per read
    assert throttled[0].data["class"] == "read" and throttled[0].data["waited_ms"] == 60_000 and throttled[0].severity.name == "WARNING"


# ------------------------------------------------------------ (f) the property
#: Two windows, as on Binance: every call weighs in "weight"; entries also count in "orders"
#: (protective calls here do not, so that a stop's only window is the one reads use).
TWO_WINDOWS = (Window("weight", 40, 1_000), Window("orders", 12, 3_000))

call_st = st.tuples(
    st.integers(min_value=0, max_value=1500),  # arrival, ms
    st.sampled_from(list(Priority)),
    st.integers(min_value=1, max_value=6),  # weight
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(call_st, min_size=1, max_size=60), share=st.sampled_from([0.5, 0.8, 1.0]), reserve=st.sampled_from([0.1, 0.2, 0.4]))
def test_budget_is_never_exceeded_and_protect_never_waits_behind_earlier_reads(calls: list[tuple[int, Priority, int]], share: float, reserve: float):
    costs = {f"op{i}": {"weight": w, **({"orders": 1} if cls is Priority.ENTRY else {})} for i, (_, cls, w) in enumerate(calls)}
    limits = VenueLimits(style="prop", windows=TWO_WINDOWS, costs=costs, default_cost={})
    seq = itertools.count()
    log: list[dict[str, Any]] = []

    async def go() -> RateLimiter:
        clock = ManualTime()
        lim = limiter(limits, clock, share=share, reserve=reserve)

        async def call(i: int, arrive_ms: int, cls: Priority) -> None:
            await clock.sleep(arrive_ms / 1000)
            entry = {"cls": cls, "cost": costs[f"op{i}"], "arrived": next(seq)}
            log.append(entry)
            permit = await lim.acquire(f"op{i}", cls)
            entry["granted"] = (permit.granted_at, next(seq))

        tasks = [asyncio.create_task(call(i, arrive, cls)) for i, (arrive, cls, _) in enumerate(calls)]
        await drive(clock, tasks)
        return lim

    lim = run(go())
    assert len(log) == len(calls) and all("granted" in e for e in log)  # nobody starved
    assert all(v["queued"] == 0 for v in lim.stats()["classes"].values())
    for w in TWO_WINDOWS:
        budget, span = w.limit * share, w.window_ms / 1000
        for t, _ in (e["granted"] for e in log):
            in_window = [e for e in log if e["granted"][0] <= t < e["granted"][0] + span]
            assert sum(e["cost"].get(w.name, 0) for e in in_window) <= budget + 1e-9, (w.name, t)
            # the reserve: what reads and entries took in any window stays below (1 - reserve) of it
            others = sum(e["cost"].get(w.name, 0) for e in in_window if e["cls"] is not Priority.PROTECT)
            assert others <= budget * (1 - reserve) + 1e-9, (w.name, t, others)
    for p in (e for e in log if e["cls"] is Priority.PROTECT):
        for r in (e for e in log if e["cls"] is Priority.READ):
            if r["arrived"] < p["arrived"] < r["granted"][1]:  # r was still waiting when p came
                assert p["granted"] < r["granted"], (p, r)


# ------------------------------------------------------------ overhead guard
def test_an_unthrottled_acquire_does_not_sleep():
    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def go() -> None:
        lim = RateLimiter(BINANCE, monotonic_s=lambda: 0.0, sleep=no_sleep)
        for _ in range(100):
            assert (await lim.acquire("fetch_order")).waited_s == 0

    run(go())
    assert slept == []
