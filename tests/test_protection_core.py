"""The protection bugs found end to end (issue: position core), each pinned by a test.

Actor scenarios run on the paper exchange with real actors and store; the
planners are pure, so the rules themselves are also tested directly.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from actors import plan_aged, plan_exit, plan_open
from actors import position_commands as pc
from actors import position_events as pe
from actors.position_state import P, PositionState, apply
from adapters.errors import Outcome, VenueError
from adapters.markets import Markets
from adapters.paper.exchange import MARKET_FILES
from adapters.venue import FillReport, OrderReport, OrderStatus
from core.ids import Side
from core.messages import ClosePosition
from tests.conftest import SHARED, make_config
from tests.test_stop_moves import mark, moved_to, protected, stops
from tests.world import BTC, World, advance_until

D = Decimal
MARKETS = Markets.from_file(SHARED / "data" / "markets" / MARKET_FILES["binance"])
CFG = make_config(Path("."), "")


def env(mark_price: str | None, symbol: str = "BTCUSDT") -> pc.Env:
    return pc.Env(config=CFG, market=MARKETS.resolve(symbol), now_ms=10_000, mark=D(mark_price) if mark_price else None)


def position(side: str = "long", entry: str = "40000", stop: str | None = "40397.0", qty: str = "0.025") -> PositionState:
    s = PositionState(position_id="p1", exchange="paper", symbol="BTCUSDT", side=Side(side))
    for e in (
        pe.OpenRequested(side=side, quote_amount=D(100), leverage=10),
        pe.EntrySent(client_id="tb-p1-e1", qty=D(qty), ref_price=D(entry), seq=1),
        pe.EntryFilled(order_id="1", qty=D(qty), price=D(entry)),
        pe.StopSent(client_id="tb-p1-s2", price=D(stop or entry), qty=D(qty), kind="initial", attempt=1, seq=2),
        pe.StopPlaced(order_id="2", client_id="tb-p1-s2", price=D(stop or entry), kind="initial", qty=D(qty), reason="trailing"),
    ):
        s = apply(s, e, 1_000)
    return s


# ------------------------------------------------- 1: a lost stop comes back looser
def test_a_lost_trailed_stop_is_restored_at_its_trailed_level(world: World):
    o = protected(world)
    mark(world, "40600")
    advance_until(world, lambda: moved_to(world, "40397.0"), "trailing move")
    trailed_id = world.state().stop_order_id
    world.engine(lambda e, now: e.external_cancel_order(trailed_id, now))  # a human cancels it on the UI
    advance_until(world, lambda: world.state().state is P.PROTECTED and world.state().stop_order_id not in (None, trailed_id), "stop restored")
    assert [p for _, p in stops(world)] == [D("40397.0")]  # not the initial 39200.0
    s = world.state()
    assert s.stop_price == D("40397.0") and s.stop_kind == "restore" and s.stop_reason == "trailing"
    sent_after = [e.data["price"] for e in world.events() if e.type == "position.stop_sent"][1:]
    assert sent_after and all(D(p) >= D("40397.0") for p in sent_after)
    assert o.stop_price == D("39200.0")


@pytest.mark.parametrize(("side", "stop", "mark_price", "expected"), [("long", "40397.0", "40300", "40098.5"), ("short", "39603.0", "39700", "39898.5")])
def test_a_restore_through_the_mark_goes_half_a_percent_beyond_it(side, stop, mark_price, expected):
    s = position(side, stop=stop)
    plan = plan_open.lost_stop(s, "canceled", env(mark_price))
    sent = [e for e in plan.events if isinstance(e, pe.StopSent)]
    assert isinstance(plan.next, pc.PlaceStop) and sent[0].kind == "restore"
    assert plan.next.price == D(expected)


@pytest.mark.parametrize(("side", "stop", "mark_price", "restore_at"), [("long", "40397.0", "40600", "40397.0"), ("short", "39603.0", "39400", "39603.0"), ("long", "39000.0", "40050", "39200.0")])
def test_a_restore_is_never_looser_than_the_last_stop_nor_the_initial(side, stop, mark_price, restore_at):
    plan = plan_open.lost_stop(position(side, stop=stop), "canceled", env(mark_price))
    assert isinstance(plan.next, pc.PlaceStop) and plan.next.price == D(restore_at)


def test_a_restore_beyond_the_emergency_level_closes_instead():
    plan = plan_open.lost_stop(position("long", stop="39200.0"), "canceled", env("38700"))  # 3.25 % in loss
    assert isinstance(plan.next, pc.ReadPosition) and plan.next.step is pc.Step.CLOSE_READ
    assert "emergency" in plan.next.reason


# ------------------------------------- 7: an unbounded cancel loop during a move
def test_a_cancel_that_keeps_failing_is_bounded_and_stays_on_the_tighter_stop(world: World):
    o = protected(world)
    world.exchange.faults.fail_next("cancel_order", "network", count=1000)
    mark(world, "40600")
    advance_until(world, lambda: [e for e in world.events() if e.type == "position.old_stop_left"], "gave up on the old stop", step_ms=500)
    s = world.state()
    assert s.stop_price == D("40397.0") and s.stop_order_id != o.stop_order_id and s.move_client_id is None
    left = [e for e in world.events() if e.type == "position.old_stop_left"]
    assert left[0].severity.label == "critical" and left[0].data["order_id"] == o.stop_order_id
    cancels = [r for r in world.exchange.requests if r["method"] == "cancel_order" and r["args"].get("id") == o.stop_order_id]
    world.ctx.clock.advance(60_000)
    later = [r for r in world.exchange.requests if r["method"] == "cancel_order" and r["args"].get("id") == o.stop_order_id]
    assert len(later) == len(cancels) <= world.ctx.config.position.cancel_attempts * world.ctx.config.exchange.max_attempts  # bounded: no more tries


# --------------------------------------------- 8: closes send the stored quantity
def close_amounts(world: World) -> list[Decimal]:
    return [D(str(r["args"]["amount"])) for r in world.exchange.requests if r["method"] == "create_order" and (r["args"].get("params") or {}).get("reduceOnly") and "stopPrice" not in (r["args"].get("params") or {})]


@pytest.mark.parametrize("extra_toml", ["[sync]\nuse_streams = false\ninterval_secs = 3600\n"])
@pytest.mark.parametrize(("human_qty", "side", "expected"), [("0.010", "sell", "0.015"), ("0.010", "buy", "0.035")])
def test_a_close_reads_the_position_and_closes_its_real_size(world: World, human_qty, side, expected):
    protected(world)
    world.engine(lambda e, now: e.external_place_order(BTC, "market", side, float(human_qty), now, {"reduceOnly": side == "sell"}))
    world.ctx.directory.tell("position:BTCUSDT:p1", ClosePosition(reason="user command"))
    advance_until(world, lambda: not world.state().state.is_open, "closed")
    assert close_amounts(world) == [D(expected)]
    assert world.positions() == []
    corrected = [e for e in world.events() if e.type == "position.qty_corrected"]
    assert corrected and D(corrected[0].data["qty"]) == D(expected)


def test_a_close_of_a_position_already_gone_records_it_closed_elsewhere():
    s = position()
    first = plan_exit.begin_close(s, "user command", env("40100"))
    assert isinstance(first.next, pc.ReadPosition)
    then = plan_exit.after_close_read(s, first.next, None, None, env("40100"))
    assert isinstance(then.next, pc.LookUpOrder) and then.next.step is pc.Step.EXIT_CHECK_STOP  # what closed it?


def aged_exit_live(s: PositionState) -> PositionState:
    for e in (
        pe.AgedExitSent(client_id="tb-p1-x3", price=D("40040.1"), qty=D("0.025"), loss_percent=D(0), reason="aged: grace", seq=3),
        pe.AgedExitPlaced(order_id="3", client_id="tb-p1-x3", price=D("40040.1"), qty=D("0.025"), loss_percent=D(0), reason="aged: grace"),
    ):
        s = apply(s, e, 2_000)
    return s


def test_found_flat_asks_the_live_aged_exit_before_the_stop():
    s = aged_exit_live(position())
    plan = plan_exit.found_flat(s, "closed outside the bot (found flat by reconciliation)")
    assert isinstance(plan.next, pc.LookUpOrder) and plan.next.step is pc.Step.AGED_CHECK and plan.next.order_id == "3"
    gone = plan_aged.after_check(s, plan.next, None, None, env("40100"))  # not found: the stop is asked next
    assert isinstance(gone.next, pc.LookUpOrder) and gone.next.step is pc.Step.EXIT_CHECK_STOP
    assert gone.next.reason == "closed outside the bot (found flat by reconciliation)"


def test_outside_fills_of_our_own_live_exit_record_that_exit():
    """The fills say our own aged exit closed it (its report was missed): recorded as that exit, with its price."""
    s = aged_exit_live(position())
    fills = [FillReport(trade_id="t1", order_id="3", client_id="tb-p1-x3", symbol="BTCUSDT", side="sell", price=D("40040.1"), qty=D("0.025"))]
    cmd = pc.ReadFills(step=pc.Step.OUTSIDE_FILLS, since_ms=1_000, reason="closed outside the bot")
    plan = plan_exit.after_outside_fills(s, cmd, fills, None, env("40100"))
    closed = [e for e in plan.events if isinstance(e, pe.Closed)]
    assert closed and closed[0].reason == "aged: grace" and closed[0].outside is False
    assert closed[0].exit_price == D("40040.1") and closed[0].pnl == D("1.0025")


# ------------------------------- 9: a restart in ENTRY_PLACED with no average price
def test_an_entry_fill_without_an_average_uses_the_folded_reference_price():
    s = PositionState(position_id="p1", exchange="paper", symbol="BTCUSDT", side=Side.LONG)
    for e in (pe.OpenRequested(side="long", quote_amount=D(100), leverage=10), pe.EntrySent(client_id="tb-p1-e1", qty=D("0.025"), ref_price=D("40000.0"), seq=1)):
        s = apply(s, e, 1_000)  # what a fresh incarnation rebuilds: nothing else in memory
    order = OrderReport(order_id="1", client_id="tb-p1-e1", symbol="BTCUSDT", side="buy", status=OrderStatus.FILLED, amount=D("0.025"), filled=D("0.025"), average=None)
    plan = plan_open.after_entry(s, order, None, 0, env("40000"))
    filled = [e for e in plan.events if isinstance(e, pe.EntryFilled)]
    assert filled[0].price == D("40000.0") and isinstance(plan.next, pc.PlaceStop)


# ----------------------------- would trigger with the venue's price in the answer (Bybit 110092/110093)
@pytest.mark.parametrize(("current", "expected"), [("40300", "40098.5"), (None, "read the mark"), ("38700", "close")])
def test_would_trigger_with_the_venues_price_applies_the_guard_rule_at_once(current, expected):
    """The restore at 40397.0 is refused as "would trigger": with the venue's current price in the
    answer the guard's rule applies at once (0.5 % beyond it; closed past the emergency level); our
    own mark (40600) says nothing is through. Without a price (Binance -2021): re-read the mark."""
    s = position("long", stop="40397.0")
    first = plan_open.lost_stop(s, "canceled", env("40600"))
    assert isinstance(first.next, pc.PlaceStop) and first.next.price == D("40397.0")
    s = pc.fold(s, first.events, 10_000)
    err = VenueError(Outcome.WOULD_TRIGGER, "expect Falling", code="110093", current_price=D(current) if current else None)
    plan = plan_open.after_stop(s, first.next, None, err, env("40600"))
    if expected == "read the mark":
        assert isinstance(plan.next, pc.ReadMark) and plan.next.step is pc.Step.RESTORE_MARK
    elif expected == "close":
        assert isinstance(plan.next, pc.ReadPosition) and "emergency" in plan.next.reason
    else:
        assert isinstance(plan.next, pc.PlaceStop) and plan.next.price == D(expected) and plan.next.reread
        assert [type(e).__name__ for e in plan.events] == ["StopFailed", "StopSent"]
