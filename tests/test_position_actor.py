"""The position actor's atomic open, close and recovery on the paper exchange (real parts, no mocks)."""

from __future__ import annotations

from decimal import Decimal

import ccxt
import pytest

from actors.messages import PositionClosed, PositionOpened, PositionOpenFailed
from core.messages import ClosePosition
from tests.conftest import eventually
from tests.world import BTC, STOP_REFUSED, World, actor_gone, advance_until, is_close, is_stop, opened

WOULD_TRIGGER = lambda: ccxt.OrderImmediatelyFillable('binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}')  # noqa: E731


def test_open_puts_a_stop_for_the_filled_quantity_at_once(world: World):
    name = world.open()
    opened = eventually(lambda: [r for r in world.reports() if isinstance(r, PositionOpened)], what="PositionOpened")[0]
    assert opened.qty == Decimal("0.025")  # 100 USDT x 10 / 40000, on the 0.001 step
    assert opened.stop_price == Decimal("39200.0")  # 2 % below the fill, on the 0.1 tick
    orders = world.open_orders()
    assert len(orders) == 1
    stop = orders[0]
    assert stop["reduceOnly"] and stop["side"] == "sell" and Decimal(str(stop["amount"])) == opened.qty
    assert stop["clientOrderId"].startswith("tb-p1-s")
    s = world.state()
    assert s.state.value == "protected" and s.stop_order_id == stop["id"]
    assert world.engine(lambda e, now: e.metrics())["unprotected_ms"] == 0
    assert world.sup.proxy().refs.get().get(name) is not None
    types = [e.type for e in world.events() if e.type.startswith("position.")]
    assert types == ["position.open_requested", "position.entry_sent", "position.entry_filled", "position.stop_sent", "position.stop_placed"]
    requests = [e.data["op"] for e in world.events() if e.type == "exchange.request"]
    assert requests == ["create_order.entry", "create_order.stop"]
    projection = world.ctx.io.run(world.ctx.store.positions(), 5)
    assert projection[0]["state"] == "protected" and projection[0]["stop_order_id"] == stop["id"]


def test_entry_that_timed_out_after_placing_is_found_not_repeated(world: World):
    """Ambiguous timeout on the entry: looked up by client order id; exactly one position."""
    world.exchange.faults.fail_next("create_order", "timeout", ambiguous=True)
    opened(world) if world.open() else None
    positions = world.positions()
    assert len(positions) == 1 and Decimal(str(positions[0]["contracts"])) == Decimal("0.025")
    entries = [o for o in world.engine(lambda e, now: list(e.orders.values())) if not getattr(o, "reduce_only", False) and getattr(o, "trigger_price", None) is None]
    assert len(entries) == 1
    resolved = [e for e in world.events() if e.type == "exchange.outcome_resolved"]
    assert resolved and resolved[0].data["landed"] is True


@pytest.mark.parametrize("engine_knobs", [{"partial_fill_prob": 1.0, "seed": 3}])
def test_partial_fill_gets_a_stop_for_the_filled_quantity(world: World):
    world.open()
    o = opened(world)
    assert Decimal(0) < o.qty < Decimal("0.025")
    stop = world.open_orders()[0]
    assert Decimal(str(stop["amount"])) == o.qty == Decimal(str(world.positions()[0]["contracts"]))
    assert world.engine(lambda e, now: e.metrics())["unprotected_ms"] == 0


@pytest.mark.parametrize("engine_knobs", [{"not_trading": ["BTCUSDT"]}])
def test_symbol_not_trading_ends_the_attempt_cleanly(world: World):
    name = world.open()
    failed = eventually(lambda: [r for r in world.reports() if isinstance(r, PositionOpenFailed)], what="failure report")[0]
    assert failed.outcome == "symbol_unavailable" and "-4140" in failed.reason
    assert failed.skip_symbol_ms == 86_400_000
    assert world.positions() == [] and world.open_orders() == []
    eventually(lambda: world.state().state.value == "failed", what="the failure recorded")
    eventually(lambda: actor_gone(world, name), what="actor stopped")


def test_close_command_closes_then_cancels_the_stop(world: World):
    """The stop is cancelled only after the close is confirmed: never naked while open."""
    name = world.open()
    opened(world)
    world.ctx.directory.lookup(name).tell(ClosePosition(reason="user command"))
    closed = eventually(lambda: [r for r in world.reports() if isinstance(r, PositionClosed)], what="closed")[0]
    assert closed.reason == "user command" and closed.exit_price == Decimal("40000.0")
    assert world.positions() == [] and world.open_orders() == []
    types = [e.type for e in world.events() if e.type.startswith("position.")]
    assert types[-3:] == ["position.close_sent", "position.closed", "position.stop_cancelled"]
    assert world.engine(lambda e, now: e.metrics())["unprotected_ms"] == 0
    eventually(lambda: actor_gone(world, name), what="actor stopped")
    assert world.ctx.io.run(world.ctx.store.positions(open_only=True), 5) == []


def test_stop_fill_is_noticed_and_recorded_with_pnl(world: World):
    name = world.open()
    o = opened(world)
    world.exchange.set_mark(BTC, Decimal("39000"))  # through the stop: the venue triggers it
    assert world.positions() == []
    eventually(lambda: (world.ctx.clock.advance(1_000), [r for r in world.reports() if isinstance(r, PositionClosed)])[1], what="stop fill noticed")
    s = world.state()
    assert s.state.value == "closed" and s.close_reason == "stop filled"
    assert s.realized_pnl == (s.exit_price - o.entry_price) * o.qty < 0
    eventually(lambda: actor_gone(world, name), what="actor stopped")


def test_a_fired_stop_that_leaves_a_position_is_not_taken_for_a_close(world: World):
    """A human added to the position just before our stop fired: the stop closed only its own
    quantity. The position decides, not the stop's status: the rest is not forgotten. The price
    is already through the old stop level, so the rest gets a stop beyond the mark (if the actor
    has seen the new mark) or is closed at market (if the venue refuses the old level first).
    Which one depends on what reaches the owner first (its stop check, the stream, the mark)."""
    name = world.open()
    opened(world)

    def add_then_fall(e, now):  # one step: no reconcile in between
        e.external_open_position(BTC, "buy", Decimal("0.01"), now)
        e.on_mark(BTC, Decimal("39100"), now)

    world.engine(add_then_fall)
    [left] = world.positions()
    assert Decimal(str(left["contracts"])) == Decimal("0.01") and world.open_orders() == []

    def handled() -> bool:
        state = world.state().state.value
        return (state == "closed" and world.positions() == []) or (state == "protected" and len(world.open_orders()) == 1)

    advance_until(world, handled, "the rest handled", step_ms=1_000)
    types = [e.type for e in world.events()]
    assert "position.stop_filled" not in types
    assert "position.qty_corrected" in types, types  # by the owner's stop check or by the stream's view first
    s = world.state()
    if s.state.value == "closed":
        assert s.close_reason.startswith("price already through the")  # the stop, or the resized one
        eventually(lambda: actor_gone(world, name), what="actor stopped")
    else:
        [stop] = world.open_orders()
        assert s.qty == Decimal("0.01") and Decimal(str(stop["amount"])) == Decimal("0.01") and Decimal(str(stop["triggerPrice"])) < Decimal("39100")


def test_restarted_actor_resumes_from_events_with_the_same_stop(world: World):
    name = world.open()
    o = opened(world)
    old = world.ctx.directory.lookup(name)
    from core.messages import RestartChild

    world.sup.tell(RestartChild(name=name, reason="test"))
    fresh = eventually(lambda: (world.ctx.clock.advance(100), (r := world.ctx.directory.lookup(name)) is not None and r.actor_urn != old.actor_urn and r)[1], what="restart")
    eventually(lambda: fresh.proxy().state.get() is not None, what="fresh actor rebuilt its state")
    assert fresh.proxy().state.get() == world.state()
    orders = world.open_orders()
    assert len(orders) == 1 and orders[0]["id"] == o.stop_order_id
    assert world.state().stop_order_id == o.stop_order_id
    fresh.tell(ClosePosition(reason="after restart"))
    eventually(lambda: world.positions() == [] and world.open_orders() == [], what="closed after restart")


def test_stop_cancelled_by_a_human_is_put_back(world: World):
    """Someone cancels our stop on the exchange UI: the next check re-protects the position."""
    o = opened(world) if world.open() else None
    world.engine(lambda e, now: e.external_cancel_order(o.stop_order_id, now))
    assert world.open_orders() == []
    eventually(lambda: (world.ctx.clock.advance(5_000), world.open_orders())[1], what="stop re-placed")
    new_stop = world.open_orders()[0]
    assert new_stop["id"] != o.stop_order_id and Decimal(str(new_stop["amount"])) == o.qty
    eventually(lambda: world.state().state.value == "protected", what="the new stop recorded")  # live on the venue before it is in the store
    assert any(e.type == "position.stop_lost" for e in world.events())


def test_position_closed_by_a_human_is_recorded_not_re_protected(world: World):
    """Position and stop gone on the exchange: recorded as closed elsewhere, no new orders."""
    name = world.open()
    o = opened(world)
    world.engine(lambda e, now: e.external_close_position(BTC, now))
    world.engine(lambda e, now: e.external_cancel_order(o.stop_order_id, now) if o.stop_order_id in e.open_orders else None)
    eventually(lambda: (world.ctx.clock.advance(5_000), actor_gone(world, name))[1], what="recorded as closed")
    s = world.state()
    assert s.state.value == "closed" and "outside the bot" in s.close_reason
    assert world.open_orders() == [] and world.positions() == []


def test_stop_refused_three_times_rolls_the_position_back(world: World):
    """No stop after 3 tries: closed again (reduce-only, verified flat), reported as a failed open."""
    for _ in range(3):
        world.exchange.faults.fail_next("create_order", STOP_REFUSED(), when=is_stop)
    name = world.open()
    failed = advance_until(world, lambda: [r for r in world.reports() if isinstance(r, PositionOpenFailed)], "rollback")[0]
    assert "rolled back" in failed.reason or "closed again" in failed.reason
    assert world.positions() == [] and world.open_orders() == []
    s = world.state()
    assert s.state.value == "rolled_back" and s.close_reason == "rollback"
    types = [e.type for e in world.events() if e.type.startswith("position.")]
    assert types.count("position.stop_failed") == 3 and types[-2:] == ["position.close_sent", "position.rolled_back"]
    assert not [r for r in world.reports() if isinstance(r, PositionOpened)]
    advance_until(world, lambda: actor_gone(world, name), "actor stopped")


def test_rollback_that_fails_too_gets_a_wide_emergency_stop(world: World):
    """Stop refused 3x and the close refused: a 10 % emergency stop and a critical event; counted as protected."""
    for _ in range(3):
        world.exchange.faults.fail_next("create_order", STOP_REFUSED(), when=is_stop)
    world.exchange.faults.fail_next("create_order", ccxt.InvalidOrder('binanceusdm {"code":-2022,"msg":"ReduceOnly Order is rejected."}'), when=is_close)
    world.open()
    got = advance_until(world, lambda: [r for r in world.reports() if isinstance(r, PositionOpened)], "emergency protection")[0]
    assert got.emergency_stop is True
    assert got.stop_price == Decimal("36000.0")  # 10 % below the 40000 fill
    stop = world.open_orders()[0]
    assert Decimal(str(stop["triggerPrice"] or stop["stopPrice"])) == Decimal("36000.0")
    s = world.state()
    assert s.state.value == "protected" and s.stop_kind == "emergency"
    critical = [e for e in world.events() if e.severity.name == "CRITICAL"]
    assert {e.type for e in critical} >= {"position.rollback_failed", "position.emergency_stop"}


def test_stop_that_would_trigger_immediately_closes_at_market(world: World):
    """Price through the stop (-2021) even after the mark was read again: close now, never an endless retry."""
    world.exchange.faults.fail_next("create_order", WOULD_TRIGGER(), count=2, when=is_stop)
    world.open()
    advance_until(world, lambda: [r for r in world.reports() if isinstance(r, PositionClosed)], "closed at market")
    s = world.state()
    assert s.state.value == "closed" and s.close_reason == "price already through the stop"
    assert world.positions() == [] and world.open_orders() == []


def test_would_trigger_with_the_mark_away_rereads_the_mark_and_protects(world: World):
    """One -2021 while the fresh mark puts the stop 2 % away: read the mark again and place the stop, no close."""
    world.exchange.faults.fail_next("create_order", WOULD_TRIGGER(), when=is_stop)
    world.open()
    o = opened(world)
    assert o.stop_price == Decimal("39200.0")
    s = world.state()
    assert s.state.value == "protected" and world.positions() != []
    requests = [e.data["op"] for e in world.events() if e.type == "exchange.request"]
    assert requests == ["create_order.entry", "create_order.stop", "create_order.stop"]
    assert [e.type for e in world.events() if e.type == "position.stop_failed"] == ["position.stop_failed"]
    assert not [e for e in world.events() if e.type == "position.close_sent"]
