"""Take-profit ladder, TP1 -> breakeven (seed 000's safeguards) and EnsureProtected, on the paper exchange."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from actors.messages import EnsureProtected, ProtectionReport
from actors.plan_tps import plan_levels
from adapters.markets import Markets
from core.messages import RestartChild
from tests.conftest import SHARED, eventually, make_config
from actors.position_timeline import build_timeline
from tests.world import BTC, STOP_REFUSED, Collector, World, advance_until, fees_by_hand, is_stop, opened
from tests.test_stop_moves import mark, stops, types

D = Decimal
MARKETS = Markets.from_file(SHARED / "data" / "markets" / "binanceusdm-linear.json")
TP_CFG = make_config(Path("."), "[take_profit]\nenabled = true\n").take_profit


def test_plan_splits_by_share_on_the_step():
    levels, notes = plan_levels(TP_CFG, MARKETS.resolve("BTCUSDT"), "long", D(40000), D("0.025"))
    assert [(lv.level, lv.price, lv.qty) for lv in levels] == [(1, D("40400.0"), D("0.012")), (2, D("40800.0"), D("0.006"))]
    assert notes == []


def test_plan_merges_a_level_that_rounds_below_the_minimum():
    """Seed 000's degradation: TP1 too small -> merged into TP2 instead of a zero-quantity order."""
    cfg = make_config(Path("."), "[take_profit]\nenabled = true\ntp1_share = 0.1\ntp2_share = 0.4\n").take_profit
    levels, notes = plan_levels(cfg, MARKETS.resolve("BTCUSDT"), "short", D(40000), D("0.005"))
    assert [(lv.level, lv.qty) for lv in levels] == [(2, D("0.002"))]  # (0.1 + 0.4) x 0.005 on the step
    assert levels[0].price == D("39200.0")
    assert "merged into TP2" in notes[0]


def test_plan_drops_what_cannot_be_placed():
    levels, notes = plan_levels(TP_CFG, MARKETS.resolve("DOGEUSDT"), "long", D("0.17"), D("1"))
    assert levels == [] and "dropped" in notes[-1]


@pytest.fixture
def tp_world(world: World) -> World:
    return world


tp_enabled = pytest.mark.parametrize("extra_toml", ["[take_profit]\nenabled = true\n"])


def open_with_tps(world: World):
    world.open()
    o = opened(world)
    eventually(lambda: len(world.state().tps) == 2, what="TP orders placed")
    return o


@tp_enabled
def test_tp1_fill_moves_the_stop_to_breakeven_for_the_rest(tp_world: World):
    w = tp_world
    o = open_with_tps(w)
    assert len(w.open_orders()) == 3  # stop + TP1 + TP2
    mark(w, "40400")  # TP1 fills on the exchange at the mark
    advance_until(w, lambda: [p for _, p in stops(w)] == [D("40040.0")] and w.state().move_client_id is None, "breakeven move")
    s = w.state()
    assert s.qty == D("0.013") and s.stop_qty == D("0.013") and s.stop_reason == "tp1_breakeven"
    stop = next(x for x in w.open_orders() if x["id"] == s.stop_order_id)
    assert D(str(stop["amount"])) == D("0.013")
    assert [tp.filled for tp in s.tps] == [True, False]
    t = types(w)
    assert t.index("position.tp_filled") < t.index("position.stop_move_sent") < t.index("position.stop_moved")
    assert o.stop_order_id not in {x["id"] for x in w.open_orders()}


@tp_enabled
def test_breakeven_move_pauses_after_max_attempts_and_resumes(tp_world: World):
    """5 failed attempts: a critical event, the old full-size stop keeps protecting, retried after an hour."""
    w = tp_world
    o = open_with_tps(w)
    for _ in range(5):
        w.exchange.faults.fail_next("create_order", STOP_REFUSED(), when=is_stop)
    mark(w, "40400")
    advance_until(w, lambda: any(e.type == "position.moves_disabled" for e in w.events()), "moves paused")
    assert [oid for oid, _ in stops(w)] == [o.stop_order_id]  # still protected by the old stop
    w.ctx.clock.advance(30 * 60_000)
    assert [oid for oid, _ in stops(w)] == [o.stop_order_id]
    w.ctx.clock.advance(31 * 60_000)
    advance_until(w, lambda: [p for _, p in stops(w)] == [D("40040.0")], "breakeven after the pause")


@tp_enabled
def test_restart_between_tp1_fill_and_breakeven_resumes_the_move(tp_world: World):
    w = tp_world
    o = open_with_tps(w)
    w.exchange.faults.fail_next("create_order", STOP_REFUSED(), when=is_stop)
    mark(w, "40400")
    advance_until(w, lambda: "position.stop_move_failed" in types(w), "first attempt failed")
    name = f"position:BTCUSDT:{o.position_id}"
    old = w.ctx.directory.lookup(name)
    w.sup.tell(RestartChild(name=name, reason="test"))
    advance_until(w, lambda: (r := w.ctx.directory.lookup(name)) is not None and r.actor_urn != old.actor_urn, "restarted")
    advance_until(w, lambda: [p for _, p in stops(w)] == [D("40040.0")], "breakeven by the new actor")
    assert len([x for x in w.open_orders() if x["id"] != w.state().stop_order_id]) == 1  # TP2 only, no doubles


@tp_enabled
def test_all_take_profits_filled_closes_the_position(tp_world: World):
    w = tp_world
    open_with_tps(w)
    mark(w, "40400")
    advance_until(w, lambda: [p for _, p in stops(w)] == [D("40040.0")], "breakeven")
    mark(w, "40800")
    advance_until(w, lambda: w.state().stop_qty == D("0.007"), "stop resized after TP2")
    assert D(str(next(x for x in w.open_orders() if x["id"] == w.state().stop_order_id)["amount"])) == D("0.007")
    # each take-profit's fill carries the fee the paper exchange charged for it (by hand: rate x notional)
    tps = [e for e in w.events() if e.type == "position.tp_filled"]
    assert len(tps) == 2 and all(D(str(e.data["fee"])) == fees_by_hand(w, e.data["order_id"]) > 0 for e in tps)
    tl = build_timeline(w.events())
    assert D(tl.fees or "nan") == fees_by_hand(w) and tl.fills_without_fee == 0  # the entry's and both take-profits'


def test_ensure_protected_restores_a_missing_stop_and_answers(world: World):
    o = opened(world) if world.open() else None
    name = f"position:BTCUSDT:{o.position_id}"
    asker = Collector.start(name="guard-stand-in", ctx=world.ctx)
    try:
        world.ctx.directory.lookup(name).tell(EnsureProtected(reply_to=asker))
        first = eventually(lambda: [r for r in asker.proxy().got.get() if isinstance(r, ProtectionReport)], what="report")[0]
        assert first.protected and first.stop_order_id == o.stop_order_id
        world.engine(lambda e, now: e.external_cancel_order(o.stop_order_id, now))
        world.ctx.directory.lookup(name).tell(EnsureProtected(reply_to=asker))
        second = advance_until(world, lambda: [r for r in asker.proxy().got.get() if isinstance(r, ProtectionReport)][1:], "second report")[0]
        assert second.protected and second.stop_order_id != o.stop_order_id
        assert [oid for oid, _ in stops(world)] == [second.stop_order_id]  # restored, never doubled
    finally:
        asker.stop()


@tp_enabled
def test_a_pushed_position_smaller_by_our_take_profit_is_not_a_correction(tp_world: World):
    """The venue's position push (qty after TP1) reaches the owner before it learned of the TP1
    fill: the owner looks at its take-profits first, so TP1 is counted once, not twice."""
    w = tp_world
    open_with_tps(w)
    w.exchange.set_mark(BTC, D("40400"))  # TP1 fills; no clock advance: the feed has not told the owner
    eventually(lambda: [tp.filled for tp in w.state().tps] == [True, False], what="TP1 learned through the stream path")
    advance_until(w, lambda: w.state().move_client_id is None and w.state().stop_qty == D("0.013"), "stop resized to the rest")
    assert w.state().qty == D("0.013") and "position.qty_corrected" not in types(w)
