"""Trailing and zero-gap stop moves in the position actor, on the paper exchange (seed 000's scenarios)."""

from __future__ import annotations

from decimal import Decimal

import ccxt

from actors.messages import PositionClosed
from adapters.paper import FaultPlan
from core.messages import RestartChild
from tests.conftest import eventually
from tests.world import BTC, STOP_REFUSED, World, advance_until, is_stop, opened

D = Decimal


def stops(world: World) -> list[tuple[str, Decimal]]:
    """The live stop-loss orders (take-profits have trigger prices too, and are left out)."""
    return sorted((o["id"], D(str(o["triggerPrice"] or o["stopPrice"]))) for o in world.open_orders() if "take_profit" not in str(o["type"]))


def mark(world: World, price: str, advance_ms: int = 1_000) -> None:
    """Set the mark and let the price feed deliver it (one feed interval of virtual time)."""
    world.exchange.set_mark(BTC, D(price))
    world.ctx.clock.advance(advance_ms)


def types(world: World) -> list[str]:
    return [e.type for e in world.events() if e.type.startswith("position.")]


def zero_gap(world: World, old_stop_id: str) -> bool:
    """In the exchange's own request log: a new stop was created before the old one was cancelled."""
    log = list(world.exchange.requests)
    created = [i for i, r in enumerate(log) if r["method"] == "create_order" and "stopPrice" in (r["args"].get("params") or {}) and r["outcome"] == "ok"]
    cancelled = [i for i, r in enumerate(log) if r["method"] == "cancel_order" and r["args"].get("id") == old_stop_id]
    return bool(cancelled) and len(created) >= 2 and created[1] < cancelled[0]


def protected(world: World):
    world.open()
    return opened(world)


def moved_to(world: World, price: str) -> bool:
    return [p for _, p in stops(world)] == [D(price)] and world.state().stop_price == D(price) and world.state().move_client_id is None


def test_trailing_activates_and_moves_the_stop_with_no_gap(world: World):
    o = protected(world)
    assert o.stop_price == D("39200.0")
    mark(world, "40600")  # +1.5 %: activation; stop to 0.5 % below the best
    advance_until(world, lambda: moved_to(world, "40397.0"), "trailing move")
    t = types(world)
    assert t[t.index("position.trailing_activated"):] == ["position.trailing_activated", "position.stop_move_sent", "position.stop_move_placed", "position.stop_moved"]
    s = world.state()
    assert s.trail_active and s.trail_best == D("40600") and s.stop_reason == "trailing"
    assert zero_gap(world, o.stop_order_id)
    m = world.engine(lambda e, now: e.metrics(now))
    assert m["unprotected_ms"] == 0 and m["unprotected_now"] == 0 and m["orphan_orders"] == 0


def test_rate_limit_emergency_override_and_never_looser(world: World):
    protected(world)
    mark(world, "40600")
    advance_until(world, lambda: moved_to(world, "40397.0"), "first move")
    mark(world, "40700")  # wants 40496.5 (+0.25 %) but inside the 60 s window
    for _ in range(5):
        world.ctx.clock.advance(1_000)
    assert moved_to(world, "40397.0")
    world.ctx.clock.advance(60_000)
    advance_until(world, lambda: moved_to(world, "40496.5"), "move after the window")
    mark(world, "41500")  # wanted 41292.5 is 1.97 % past the live stop: emergency, inside the window
    advance_until(world, lambda: moved_to(world, "41292.5"), "emergency move")
    sent = [e for e in world.events() if e.type == "position.stop_move_sent"]
    assert [e.data["emergency"] for e in sent] == [False, False, True]
    mark(world, "41350")  # back down, above the stop: nothing moves
    world.ctx.clock.advance(120_000)
    assert moved_to(world, "41292.5")
    mark(world, "41200")  # through the stop: the venue fills it; closed in profit
    closed = advance_until(world, lambda: [r for r in world.reports() if isinstance(r, PositionClosed)], "stop fill")[0]
    assert closed.pnl > 0 and world.positions() == [] and world.open_orders() == []
    prices = [D(e.data["price"]) for e in world.events() if e.type == "position.stop_moved"]
    assert prices == sorted(prices)  # only ever up for a long


def test_failed_placement_keeps_the_old_stop_and_retries(world: World):
    o = protected(world)
    world.exchange.faults.fail_next("create_order", STOP_REFUSED(), when=is_stop)
    mark(world, "40600")
    advance_until(world, lambda: moved_to(world, "40397.0"), "retried move")
    t = types(world)
    assert t.index("position.stop_move_failed") < t.index("position.stop_moved")
    assert zero_gap(world, o.stop_order_id)  # the old stop stayed until the retried new one was live
    assert world.engine(lambda e, now: e.metrics(now))["unprotected_ms"] == 0


def test_insufficient_balance_then_success(world: World):
    protected(world)
    world.exchange.faults.fail_next("create_order", ccxt.InvalidOrder('binanceusdm {"code":-2010,"msg":"Account has insufficient balance for requested action."}'), when=is_stop)
    mark(world, "40600")
    advance_until(world, lambda: moved_to(world, "40397.0"), "move after waiting")
    failed = [e for e in world.events() if e.type == "position.stop_move_failed"]
    assert len(failed) == 1 and "old stop still reserves" in failed[0].data["reason"]


def test_max_attempts_pause_moves_for_an_hour(world: World):
    o = protected(world)
    for _ in range(5):
        world.exchange.faults.fail_next("create_order", STOP_REFUSED(), when=is_stop)
    mark(world, "40600")
    disabled = advance_until(world, lambda: [e for e in world.events() if e.type == "position.moves_disabled"], "moves disabled")[0]
    assert disabled.severity.name == "CRITICAL" and disabled.data["attempts"] == 5
    assert stops(world) == [(o.stop_order_id, D("39200.0"))]
    mark(world, "42000", advance_ms=30 * 60_000)  # far past the stop, but moves are paused
    assert stops(world) == [(o.stop_order_id, D("39200.0"))]
    world.ctx.clock.advance(31 * 60_000)
    advance_until(world, lambda: moved_to(world, "41790.0"), "moves resume after an hour")


def test_unknown_order_on_the_status_check_counts_as_gone(world: World):
    """-2011 on cancel and -2013 on the status check: the old stop is gone; the move completes."""
    o = protected(world)
    world.engine(lambda e, now: e.external_cancel_order(o.stop_order_id, now))  # gone behind our back
    world.exchange.faults.fail_next("fetch_order", ccxt.OrderNotFound('binanceusdm {"code":-2013,"msg":"Order does not exist."}'), when=lambda a: a.get("id") == o.stop_order_id)
    mark(world, "40600")
    advance_until(world, lambda: moved_to(world, "40397.0"), "move completed")
    assert "position.stop_moved" in types(world)


def test_old_stop_filled_during_the_move_closes_the_position(world: World):
    """The old stop fires while the new one is on its way: abort, record the fill, leave no orphan."""
    protected(world)
    world.exchange.faults.plan = FaultPlan(latency_ms_min=300, latency_ms_max=300)
    mark(world, "40600")
    eventually(lambda: "position.stop_move_sent" in types(world), what="move sent")
    world.exchange.set_mark(BTC, D("39000"))  # the old stop (39200) fills before the new stop lands
    advance_until(world, lambda: world.state().state.value == "closed", "closed by the old stop", step_ms=100)
    s = world.state()
    assert s.close_reason == "stop filled" and s.exit_price is not None
    eventually(lambda: world.open_orders() == [] and world.positions() == [], what="no orphan stop")


def test_restart_in_the_middle_of_a_move(world: World):
    """A fresh actor finds the move's new stop by its client id and finishes the move."""
    o = protected(world)
    name = f"position:BTCUSDT:{o.position_id}"
    world.exchange.faults.plan = FaultPlan(latency_ms_min=300, latency_ms_max=300)
    mark(world, "40600")
    eventually(lambda: "position.stop_move_sent" in types(world), what="move sent")
    old = world.ctx.directory.lookup(name)
    world.sup.tell(RestartChild(name=name, reason="test: restart mid-move"))
    advance_until(world, lambda: (r := world.ctx.directory.lookup(name)) is not None and r.actor_urn != old.actor_urn, "restarted", step_ms=10)
    advance_until(world, lambda: moved_to(world, "40397.0"), "move finished by the new actor", step_ms=20)
    assert len(world.open_orders()) == 1
