"""Aged positions on the paper exchange, on the virtual clock: grace, progressive, the exit fills; real
sizes; chunks; known refusals; trailing takes over; at the cap; restarts."""

from __future__ import annotations

import time
from decimal import Decimal

import ccxt
import pytest

from actors.messages import ExchangeView
from actors.position_state import P
from core.clock import VirtualClock
from core.ids import ClientOrderId
from actors.pnl_summary import closed_trades, summarize
from actors.position_timeline import build_timeline
from tests.world import BTC, World, fees_by_hand, opened

D = Decimal
#: Minutes instead of hours: aged after 36 s, grace for 36 s, then 1 % more accepted loss per minute.
FAST = """
[aged]
max_age_hours = 0.01
grace_hours = 0.01
loss_step_percent_per_hour = 60
acceleration = 1
accelerate_after_hours = 0
max_loss_percent = 5
recompute_interval_secs = 5
retry_delay_secs = 1
chunk_after_failures = 2
widen_after_failures = 3
max_failures = 6
[sync]
use_streams = false
interval_secs = 3600
"""


def run_until(world: World, predicate, what: str, step_ms: int = 1000, timeout: float = 60.0):
    """Advance the virtual clock step by step until ``predicate()`` holds (a generous real-time deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        clock = world.ctx.clock
        assert isinstance(clock, VirtualClock)
        clock.advance(step_ms)
        time.sleep(0.003)


def types(world: World, pid: str = "p1") -> list[str]:
    return [e.type for e in world.events(pid)]


def of(world: World, type_: str, pid: str = "p1") -> list:
    return [e for e in world.events(pid) if e.type == type_]


def exit_orders(world: World) -> list[dict]:
    return [o for o in world.open_orders() if (ClientOrderId.parse(o.get("clientOrderId")) or ClientOrderId("", "", 0)).kind == "x"]


def assert_one_exit_at_a_time(world: World, pid: str = "p1") -> None:
    """From the log: a replaced exit is cancelled (or gone) before any further exit is sent."""
    live: set[str] = set()
    for e in world.events(pid):
        if e.type == "position.aged_exit_placed":
            live.add(e.data["order_id"])
            assert len(live) <= 2, "more than two exits live"
        elif e.type == "position.aged_exit_sent":
            assert len(live) <= 1, f"an exit sent while {live} are live"
        elif e.type in ("position.aged_exit_cancelled", "position.aged_exit_filled", "position.stop_cancelled"):
            live.discard(e.data["order_id"])
        elif e.type == "position.closed" and e.data.get("order_id"):
            live.discard(e.data["order_id"])
    assert len(live) <= 1


@pytest.mark.parametrize("extra_toml", [FAST])
def test_a_position_ages_through_grace_into_progressive_and_is_closed_by_its_exit(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39800"))  # 0.5 % in loss: above the stop, far from trailing
    run_until(world, lambda: of(world, "position.aged_exit_placed"), "the grace exit")
    phases = [e.data["phase"] for e in of(world, "position.aged_phase")]
    assert phases == ["aged", "grace"]
    grace = of(world, "position.aged_exit_placed")[0].data
    assert D(grace["price"]) == D("40040.1") and grace["reason"] == "aged: grace"  # entry 40000 x 1.0005 / 0.9995, up
    assert [D(str(o["price"])) for o in exit_orders(world)] == [D("40040.1")]
    assert of(world, "position.aged_phase")[0].data["since"] == "entry fill"
    run_until(world, lambda: not world.state().state.is_open, "closed by its exit")
    s = world.state()
    assert s.close_reason.startswith("aged: progressive ") and s.close_reason.endswith("%")
    assert "progressive" in [e.data["phase"] for e in of(world, "position.aged_phase")]
    closed = of(world, "position.closed")[0].data
    assert closed["reason"] == s.close_reason and D(closed["exit_price"]) == D("39800")
    loss = D(s.close_reason.split()[-1].rstrip("%"))
    assert D("0.5") < loss < D(1)  # moved as the allowance grew, filled once it passed the mark
    assert len(of(world, "position.aged_exit_placed")) >= 3
    assert_one_exit_at_a_time(world)
    assert world.open_orders() == [] and world.positions() == []


@pytest.mark.parametrize("extra_toml", [FAST])
def test_the_exit_uses_the_size_on_the_exchange(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39800"))
    world.engine(lambda e, now: e.external_place_order(BTC, "market", "sell", 0.01, now, {"reduceOnly": True}))  # a human sells 0.010 of 0.025
    run_until(world, lambda: of(world, "position.aged_exit_placed"), "the exit")
    assert D(of(world, "position.qty_corrected")[0].data["qty"]) == D("0.015")
    assert D(of(world, "position.aged_exit_placed")[0].data["qty"]) == D("0.015")
    assert [D(str(o["amount"])) for o in exit_orders(world)] == [D("0.015")]


@pytest.mark.parametrize("extra_toml", [FAST])
def test_a_position_gone_before_the_exit_is_recorded_closed_elsewhere(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39800"))
    run_until(world, lambda: world.ctx.clock.now_ms() > 30_000, "nearly aged")
    world.engine(lambda e, now: e.external_close_position(BTC, now))
    run_until(world, lambda: not world.state().state.is_open, "recorded closed")
    assert world.state().state is P.CLOSED
    assert of(world, "position.closed")[0].data["outside"] is True
    assert not of(world, "position.aged_exit_placed")


@pytest.mark.parametrize("extra_toml", [FAST])
def test_an_aged_exit_that_fills_before_the_owner_notices_is_its_close_not_an_outside_one(world: World):
    """Reconciliation reports the position flat before the owner has seen its own exit fill (no mark
    tick reached it): the owner asks its live exit first and records the close as the aged exit,
    with its price and PnL. Before: "closed outside the bot (found flat by reconciliation)", no price."""
    name = world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39800"))
    run_until(world, lambda: of(world, "position.aged_exit_placed"), "the grace exit")
    grace = of(world, "position.aged_exit_placed")[0].data
    world.exchange.set_mark(BTC, D("40100"))  # the exit fills on the exchange; the clock stands still
    assert world.positions() == []
    ref = world.ctx.directory.lookup(name)
    assert ref is not None
    ref.tell(ExchangeView(position=None, read_ms=world.ctx.clock.now_ms()))  # what the sync actor reports
    run_until(world, lambda: not world.state().state.is_open, "recorded closed")
    closed = of(world, "position.closed")[0].data
    assert closed["reason"] == "aged: grace" and closed["outside"] is False
    assert D(closed["exit_price"]) == D(grace["price"]) and closed["order_id"] == grace["order_id"]
    assert D(closed["pnl"]) == (D(grace["price"]) - D(40000)) * D("0.025")
    assert world.open_orders() == []


LIMIT = lambda args: args.get("type") == "limit"  # noqa: E731


@pytest.mark.parametrize("extra_toml", [FAST])
def test_a_refused_exit_falls_back_to_chunks_then_a_wider_loss(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39800"))
    refusal = ccxt.InvalidOrder('binanceusdm {"code":-2022,"msg":"ReduceOnly Order is rejected."}')
    world.exchange.faults.fail_next("create_order", refusal, count=3, when=LIMIT)
    run_until(world, lambda: of(world, "position.aged_exit_placed"), "an exit after the refusals")
    failed = of(world, "position.aged_exit_failed")
    assert [f.data["attempt"] for f in failed] == [1, 2, 3]
    assert failed[0].data["known"] == "reduce-only would not reduce (position smaller or gone)"
    assert all(f.data["retry_at_ms"] for f in failed)
    kinds = [e.data["kind"] for e in of(world, "position.aged_fallback")]
    assert kinds == ["chunks", "widen"]
    placed = of(world, "position.aged_exit_placed")[0].data
    assert D(placed["qty"]) == D("0.008")  # 0.025 / 3 on the step grid
    assert D(placed["loss_percent"]) == D(2)  # grace widened by 2 %
    run_until(world, lambda: not world.state().state.is_open, "closed in chunks")
    assert len(of(world, "position.aged_exit_filled")) == 2  # two chunks, then the last closes it
    assert of(world, "position.closed")[0].data["reason"].startswith("aged: grace 2")
    assert_one_exit_at_a_time(world)
    # each chunk and the close carry the fee the paper exchange charged (by hand: rate x notional); the trade
    # ends at the close (not at the first chunk), its fees the entry's and every exit's
    for e in [*of(world, "position.aged_exit_filled"), *of(world, "position.closed")]:
        assert D(str(e.data["fee"])) == fees_by_hand(world, e.data["order_id"]) > 0
    tl = build_timeline(world.events())
    assert tl.closed_ms == of(world, "position.closed")[0].ts_ms and tl.fills_without_fee == 0
    s = summarize(closed_trades([tl]))
    assert D(s.fees) == fees_by_hand(world) and D(s.net_pnl or "nan") == D(s.pnl) - fees_by_hand(world)


@pytest.mark.parametrize("extra_toml", [FAST])
def test_a_region_restricted_symbol_ends_each_attempt_with_a_reason_and_gives_up_bounded(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39800"))
    restricted = ccxt.RestrictedLocation('bybit {"retCode":170209,"retMsg":"This trading pair is only available to the China region.","result":{},"retExtInfo":{},"time":0}')
    world.exchange.faults.fail_next("create_order", restricted, count=100, when=LIMIT)
    run_until(world, lambda: [e for e in of(world, "position.aged_phase") if e.data["phase"] == "gave_up"], "gave up", step_ms=5000)
    failed = of(world, "position.aged_exit_failed")
    assert len(failed) == 6 and all("region" in f.data["known"] for f in failed)
    assert [e for e in world.events() if e.type == "alert.aged_unclosable"]
    assert [e for e in world.events() if e.type == "alert.aged_gave_up" and e.severity.name == "CRITICAL"]
    n = len(failed)
    run_until(world, lambda: world.ctx.clock.now_ms() > 600_000, "ten more minutes", step_ms=10_000)
    assert len(of(world, "position.aged_exit_failed")) == n  # bounded: no loop
    assert world.state().state is P.PROTECTED and world.state().stop_order_id


@pytest.mark.parametrize("extra_toml", [FAST + "[trailing]\nactivation_percent = 0.05\n"])
def test_trailing_activation_cancels_the_exit_and_says_so(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39800"))
    run_until(world, lambda: of(world, "position.aged_exit_placed"), "the grace exit")
    world.exchange.set_mark(BTC, D("40030"))  # +0.075 %: trailing activates, below the exit at 40040.1
    run_until(world, lambda: world.state().aged_phase == "left" and world.state().aged_order_id is None, "left the aged path")
    left = next(e for e in of(world, "position.aged_phase") if e.data["phase"] == "left")
    assert "trailing" in left.data["reason"]
    assert exit_orders(world) == []
    run_until(world, lambda: world.ctx.clock.now_ms() > 200_000, "later", step_ms=5000)
    assert len(of(world, "position.aged_exit_placed")) == 1  # never back on the aged path


@pytest.mark.parametrize("extra_toml", [FAST.replace("max_loss_percent = 5", 'max_loss_percent = 1\nat_cap = "market"')])
def test_at_the_cap_with_market_it_closes_at_market_with_a_critical_event(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39300"))  # 1.75 % in loss (the stop is at 39200): the 1 % cap cannot fill
    run_until(world, lambda: not world.state().state.is_open, "closed at market")
    cap = [e for e in of(world, "position.aged_phase") if e.data["phase"] == "cap"]
    assert cap and cap[0].severity.name == "CRITICAL"
    assert [e for e in world.events() if e.type == "alert.aged_cap"]
    assert world.state().close_reason == "aged: cap 1% (market)"
    assert world.open_orders() == []


@pytest.mark.parametrize("extra_toml", [FAST.replace("max_loss_percent = 5", "max_loss_percent = 1")])
def test_at_the_cap_with_hold_the_exit_stays_at_the_cap_price(world: World):
    world.open()
    opened(world)
    world.exchange.set_mark(BTC, D("39300"))
    run_until(world, lambda: [e for e in of(world, "position.aged_phase") if e.data["phase"] == "cap"], "the cap")
    run_until(world, lambda: world.ctx.clock.now_ms() > 200_000, "later", step_ms=5000)
    settled = lambda: (s := world.state()).aged_price == D("39639.9") and s.aged_old_order_id is None and s.aged_pending_client_id is None  # noqa: E731
    run_until(world, settled, "the exit settled at the cap")
    orders = exit_orders(world)
    assert [D(str(o["price"])) for o in orders] == [D("39639.9")]  # 40000 x (1.0005 - 0.01) / 0.9995 = 39639.81..., up
    assert world.state().state is P.PROTECTED
    assert_one_exit_at_a_time(world)
