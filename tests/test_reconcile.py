"""Sync, guard and zombies on the paper exchange: a human acts on the UI, the bot notices and fixes it."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from actors.messages import ExchangeView, OpenRequest
from actors.position import PositionActor
from actors.sync import zombie_reason
from adapters.paper import FaultPlan
from adapters.venue import OrderReport, OrderStatus, PositionReport
from core.messages import Message, ReconcileNow, StartChild
from supervision.actor import handles
from supervision.supervisor import ChildSpec
from tests.conftest import eventually
from tests.world import BTC, World, advance_until, opened
from tradebot.wiring import NamedRef

D = Decimal
ETH = "ETH/USDT:USDT"


def event_types(world: World, prefix: str = "") -> list[str]:
    return [e.type for e in world.ctx.io.run(world.ctx.store.query(type_prefixes=(prefix,) if prefix else ()), 5)]


def findings(world: World) -> list[dict[str, Any]]:
    return [e.data for e in world.ctx.io.run(world.ctx.store.query(types=("sync.reconciled",)), 5)]


def stop_ids(world: World, symbol: str = BTC) -> list[str]:
    return [o["id"] for o in world.open_orders() if o["symbol"] == symbol and o["reduceOnly"]]


def test_startup_reconcile_opens_the_intake(world: World):
    status = eventually(lambda: (s := world.sup.proxy().status().get()) and "startup-reconcile" not in s["intake"]["blocked"] and s, what="gate opened")
    assert status["intake"]["open"] is True
    assert findings(world)[0]["ok"] is True


def test_exchange_unreachable_at_start_keeps_intake_closed(world: World):
    """No new entries until the exchange has been read; status says why."""
    for _ in range(50):
        world.exchange.faults.fail_next("fetch_positions", "exchange_unavailable")
    world.ctx.directory.tell("sync", ReconcileNow())
    status = eventually(lambda: (s := world.sup.proxy().status().get()) and "failed" in s["intake"]["blocked"].get("startup-reconcile", "") and s, what="blocked with a reason")
    assert status["intake"]["open"] is False and "opening nothing new" in status["intake"]["blocked"]["startup-reconcile"]


def test_human_closes_a_position_the_stream_tells_at_once(world: World):
    """With the venue's stream, the close is noticed without any time passing on the bot's clock."""
    name = world.open()
    opened(world)
    t0 = time.perf_counter()
    world.exchange.set_mark(BTC, D(40500))
    world.engine(lambda e, now: e.external_close_position(BTC, now))
    eventually(lambda: world.ctx.directory.lookup(name) is None, what="noticed through the stream")
    detected_ms = (time.perf_counter() - t0) * 1000
    s = world.state()
    assert s.state.value == "closed" and "outside the bot" in s.close_reason
    # the price and result come from the exchange's own fills
    assert s.exit_price == D(40500) and s.realized_pnl == (D(40500) - s.entry_price) * s.qty
    assert world.open_orders() == [] and world.positions() == []
    print(f"\nexternal close detected through the stream in {detected_ms:.1f} ms (real time)")


@pytest.mark.parametrize("extra_toml", ["[sync]\nuse_streams = false\n"])
def test_human_closes_a_position_polling_finds_it(world: World):
    """Without a stream, the periodic full read finds it within one sync interval."""
    name = world.open()
    o = opened(world)
    t0 = world.ctx.clock.now_ms()
    world.engine(lambda e, now: e.external_close_position(BTC, now))
    assert stop_ids(world) == [o.stop_order_id]  # our stop is left behind on the exchange
    advance_until(world, lambda: world.ctx.directory.lookup(name) is None, "noticed and recorded", step_ms=1_000)
    detected_ms = world.ctx.clock.now_ms() - t0
    s = world.state()
    assert s.state.value == "closed" and "outside the bot" in s.close_reason
    assert world.open_orders() == [] and world.positions() == []
    assert detected_ms <= world.ctx.config.sync.interval_secs * 1000 + 2_000
    assert any(f["phantoms"] for f in findings(world))
    print(f"\nexternal close detected by polling after {detected_ms} ms of bot time (sync every {world.ctx.config.sync.interval_secs} s)")


def test_human_cancels_the_stop_guard_restores_it(world: World):
    name = world.open()
    o = opened(world)
    t0 = world.ctx.clock.now_ms()
    world.engine(lambda e, now: e.external_cancel_order(o.stop_order_id, now))
    advance_until(world, lambda: stop_ids(world) and stop_ids(world) != [o.stop_order_id], "stop restored", step_ms=1_000)
    restored_ms = world.ctx.clock.now_ms() - t0
    assert len(stop_ids(world)) == 1
    assert world.ctx.directory.lookup(name) is not None
    eventually(lambda: world.state().state.value == "protected", what="the restored stop recorded")  # live before it is in the store
    assert restored_ms <= world.ctx.config.guard.interval_secs * 1000 + 2_000
    # Whoever noticed first (the owner's own check or the guard), the owner restored it.
    assert "position.stop_lost" in event_types(world, "position.")


def test_human_opens_a_position_it_is_adopted_and_protected(world: World):
    world.exchange.set_mark(ETH, D(3000))
    world.engine(lambda e, now: e.external_open_position(ETH, "buy", D("0.5"), now))
    advance_until(world, lambda: stop_ids(world, ETH), "adopted and protected", step_ms=1_000)
    adopted = [e for e in event_types(world) if e == "sync.untracked_adopted"]
    assert len(adopted) == 1
    stop = next(o for o in world.open_orders() if o["symbol"] == ETH)
    assert D(str(stop["amount"])) == D("0.5") and stop["side"] == "sell" and stop["clientOrderId"].startswith("tb-")
    world.ctx.clock.advance(120_000)
    assert len([o for o in world.open_orders() if o["symbol"] == ETH]) == 1  # adopted once, one stop


@pytest.mark.parametrize("extra_toml", ["[zombies]\ndry_run = true\n"])
def test_zombie_orders_are_cancelled_and_dry_run_only_reports(world: World):
    """Orders left behind after a position closed: ours (owner gone) and a human's stop are zombies;
    a human's stop on a symbol the bot never trades is left alone. Dry run by config (so the
    reconciles the clock's advance sets off only report), then one asked for without it cancels."""
    name = world.open()
    opened(world)
    world.exchange.set_mark(ETH, D(3000))
    world.exchange.set_mark("LTC/USDT:USDT", D(150))

    def leave_orders_behind(e, now):  # one atomic step on the exchange, as a human would leave it
        e.external_open_position(ETH, "buy", D("0.1"), now)
        e.external_place_order(ETH, "STOP_MARKET", "sell", D("0.1"), now, {"stopPrice": 2900, "reduceOnly": True, "newClientOrderId": "tb-deadbeef00-s4"})
        e.external_place_order(ETH, "STOP_MARKET", "sell", D("0.1"), now, {"stopPrice": 2800, "reduceOnly": True})
        e.external_close_position(ETH, now)
        e.external_open_position("LTC/USDT:USDT", "buy", D("1"), now)
        e.external_place_order("LTC/USDT:USDT", "STOP_MARKET", "sell", D("1"), now, {"stopPrice": 140, "reduceOnly": True})
        e.external_close_position("LTC/USDT:USDT", now)

    world.engine(leave_orders_behind)
    assert len([o for o in world.open_orders() if o["symbol"] == ETH]) == 2
    world.ctx.clock.advance(60_000)  # past the grace window (timers run their reconciles too)
    world.ctx.directory.tell("sync", ReconcileNow(dry_run=True))
    dry = eventually(lambda: [f for f in findings(world) if f.get("dry_run") and f["zombies"]], what="dry-run findings")[-1]
    assert {z["client_id"] for z in dry["zombies"] if z["client_id"]} == {"tb-deadbeef00-s4"}
    assert len(dry["zombies"]) == 2 and all(z["symbol"] == "ETHUSDT" for z in dry["zombies"])
    world.ctx.directory.tell("sync", ReconcileNow(dry_run=False))
    eventually(lambda: [o for o in world.open_orders() if o["symbol"] == ETH] == [], what="zombies cancelled")
    assert [o["symbol"] for o in world.open_orders() if o["symbol"] == "LTC/USDT:USDT"] == ["LTC/USDT:USDT"]  # not ours to touch
    assert world.ctx.directory.lookup(name) is not None and len(stop_ids(world)) == 1  # our live stop untouched


def test_an_order_left_behind_after_a_close_is_cleaned_without_waiting_for_a_full_read(world: World):
    """Streams live (full reads only every 600 s): a human's extra stop on our symbol is fine
    while the position lives; once the position is closed it is a zombie, cancelled seconds later."""
    name = world.open()
    o = opened(world)
    world.engine(lambda e, now: e.external_place_order(BTC, "STOP_MARKET", "sell", D("0.025"), now, {"stopPrice": 38000, "reduceOnly": True}))
    world.ctx.clock.advance(10_000)
    assert len(world.open_orders()) == 2  # not a zombie: it protects a live position
    world.engine(lambda e, now: e.external_close_position(BTC, now))
    eventually(lambda: world.ctx.directory.lookup(name) is None, what="close noticed")
    assert [x["id"] for x in world.open_orders() if x["id"] != o.stop_order_id] != []
    advance_until(world, lambda: world.open_orders() == [], "the human's leftover cancelled", step_ms=1_000)
    assert world.ctx.clock.now_ms() - world.state().closed_ts_ms <= 10_000
    assert any("without a position" in z["why"] for f in findings(world) for z in f["zombies"])


def test_a_close_reported_while_the_owner_is_busy_is_judged_once_its_operation_is_done(world: World):
    """Streams live: the one report of an outside close comes while the owner has an exchange call
    out (its stop check, every call 0.3 s); it is judged when the call is done, not at the next
    full read minutes later (the clock stands still here)."""
    name = world.open()
    opened(world)
    world.exchange.faults.plan = FaultPlan(latency_ms_min=300, latency_ms_max=300)
    owner = world.ctx.directory.lookup(name)
    world.ctx.clock.advance(world.ctx.config.position.verify_interval_secs * 1000)  # the owner's stop check goes out
    eventually(lambda: owner.proxy().busy().get(), what="the check under way")
    world.engine(lambda e, now: e.external_close_position(BTC, now))  # the stream reports it meanwhile
    eventually(lambda: world.ctx.directory.lookup(name) is None, what="close noticed", timeout=30)
    assert world.state().closed_ts_ms is not None


def _order(side: str, *, reduce_only=False, trigger=None, position_side=None, attached=None, amount="0.1") -> OrderReport:
    return OrderReport(order_id="x", client_id=None, symbol="ETHUSDT", side=side, status=OrderStatus.OPEN, amount=D(amount), filled=D(0),
                       trigger_price=D(trigger) if trigger else None, reduce_only=reduce_only, position_side=position_side, attached=attached)


def _pos(side: str, qty="0.1") -> PositionReport:
    return PositionReport(symbol="ETHUSDT", side=side, qty=D(qty), entry_price=D(3000))


ZOMBIE_CASES = [
    # (order, positions on ETHUSDT, expected reason fragment or None)
    (_order("sell", reduce_only=True, trigger="2900"), [], "stop order on a symbol without a position"),
    (_order("sell", reduce_only=True), [], "reduce-only order on a symbol without a position"),
    (_order("sell", reduce_only=True, trigger="2900", attached="StopLoss"), [], "StopLoss order on a symbol without a position"),
    (_order("sell", reduce_only=True, trigger="2900"), [_pos("long")], None),  # a human's extra stop on a held position
    (_order("buy"), [], None),  # a human's entry: not ours to judge
    (_order("buy", trigger="3100"), [], None),  # a human's conditional entry (no reduce-only): it can only open
    (_order("sell", trigger="2900"), [], None),  # the same, selling
    (_order("buy", trigger="3100"), [_pos("long")], None),  # adds to a position: not a zombie either
    (_order("sell", amount="0.2"), [_pos("long")], "would flip the position"),
    (_order("sell", amount="0.15"), [_pos("long")], None),  # within the flip ratio
    # hedge mode: orders belong to one side
    (_order("sell", trigger="2900", position_side="long"), [_pos("short")], "closes the long side (hedge mode, position index 1)"),
    (_order("buy", trigger="3100", position_side="short"), [_pos("long")], "closes the short side (hedge mode, position index 2)"),
    (_order("sell", trigger="2900", position_side="long"), [_pos("long"), _pos("short")], None),
    (_order("buy", position_side="long"), [_pos("short")], None),  # opens the long side: an entry
    (_order("sell", amount="5", position_side="short"), [_pos("long")], None),  # hedge sides never flip
]


@pytest.mark.parametrize(("order", "positions", "expected"), ZOMBIE_CASES)
def test_zombie_rules(order, positions, expected):
    by_key = {(p.symbol, p.side): p for p in positions}
    why = zombie_reason(order, by_key, {p.symbol for p in positions}, D("1.5"))
    assert (why is None) if expected is None else (why is not None and expected in why), why


@pytest.mark.parametrize("engine_knobs", [{"hedge_mode": True}])
def test_hedge_mode_order_for_the_side_without_a_position_is_a_zombie(world: World):
    """Hedge mode: our short is protected on its own side; a human's stop closing the (empty)
    long side is the seed's wrong-positionIdx zombie and is cancelled; ours stays."""
    name = world.open(side="short")
    o = opened(world)
    [stop] = world.open_orders()
    assert stop["id"] == o.stop_order_id and stop["info"]["positionSide"] == "SHORT" and stop["side"] == "buy"
    world.engine(lambda e, now: e.external_place_order(BTC, "STOP_MARKET", "sell", D("0.002"), now, {"stopPrice": 39000, "positionSide": "LONG"}))
    assert len(world.open_orders()) == 2
    world.ctx.clock.advance(60_000)  # past the grace window
    world.ctx.directory.tell("sync", ReconcileNow())
    z = eventually(lambda: [f for f in findings(world) if f["zombies"]], what="zombie found")[-1]["zombies"]
    assert len(z) == 1 and "closes the long side" in z[0]["why"]
    assert "guard.unprotected" not in event_types(world, "guard.")  # our hedge-mode stop counts as protection
    eventually(lambda: [x["id"] for x in world.open_orders()] == [o.stop_order_id], what="only our stop left")
    assert world.ctx.directory.lookup(name) is not None


def test_liquidation_is_recorded(world: World):
    name = world.open()
    o = opened(world)
    world.engine(lambda e, now: e.external_cancel_order(o.stop_order_id, now))
    world.exchange.set_mark(BTC, D(35000))  # through the liquidation price in one jump, no stop to stop it
    assert world.positions() == []
    advance_until(world, lambda: world.ctx.directory.lookup(name) is None, "liquidation noticed", step_ms=1_000)
    s = world.state()
    assert s.state.value == "closed" and s.exit_price is not None and s.realized_pnl < 0  # the exchange's fill, not a guess
    assert s.close_reason == "liquidated"  # Binance's own order for it: clientOrderId autoclose-...


class Hold(Message, frozen=True, kw_only=True):
    release: Any


class Boom(Message, frozen=True, kw_only=True):
    pass


class FragilePosition(PositionActor):
    """The real position actor, plus a way to make it hang or crash."""

    @handles(Hold)
    def _hold(self, msg: Hold) -> None:
        msg.release.wait(20)

    @handles(Boom)
    def _boom(self, msg: Boom) -> None:
        raise RuntimeError("boom")


def open_fragile(world: World) -> str:
    req = OpenRequest(position_id="f1", exchange="paper", symbol="BTCUSDT", side="long", quote_amount=D(100), leverage=10, correlation_id="f1", requested_by=world.collector)
    venue, feed = world.venue, NamedRef(world.ctx.directory, "price_feed")
    world.sup.tell(StartChild(spec=ChildSpec(name="position:BTCUSDT:f1", factory=lambda n, c: FragilePosition.start(name=n, ctx=c, venue=venue, position_id="f1", request=req, price_feed=feed), kind="position", restart="transient")))
    opened(world, "f1")
    return "position:BTCUSDT:f1"


@pytest.mark.parametrize("extra_toml", ["[guard]\ninterval_secs = 2\nreply_deadline_secs = 3\nmax_failures = 2\n[store]\ndurable_wait_secs = 2\n"])
def test_hung_position_actor_is_restarted_and_protection_restored(world: World):
    name = open_fragile(world)
    stop = world.state("f1").stop_order_id
    release = threading.Event()
    stuck = world.ctx.directory.lookup(name)
    stuck.tell(Hold(release=release))
    t0 = world.ctx.clock.now_ms()
    world.engine(lambda e, now: e.external_cancel_order(stop, now))
    try:
        advance_until(world, lambda: (r := world.ctx.directory.lookup(name)) is not None and r.actor_urn != stuck.actor_urn, "restarted by the guard", step_ms=500)
        advance_until(world, lambda: stop_ids(world) and stop_ids(world) != [stop], "protection restored", step_ms=500)
    finally:
        release.set()
    unprotected_ms = world.engine(lambda e, now: e.metrics(now))["unprotected_ms"]
    assert "guard.restart_requested" in event_types(world, "guard.")
    assert unprotected_ms <= world.ctx.clock.now_ms() - t0
    print(f"\nhung actor: unprotected for {unprotected_ms} ms of exchange time (guard interval 2 s, deadline 3 s, 2 failures)")


def test_crashed_position_actor_is_restarted_and_keeps_its_stop(world: World):
    name = open_fragile(world)
    stop = world.state("f1").stop_order_id
    old = world.ctx.directory.lookup(name)
    old.tell(Boom())
    advance_until(world, lambda: (r := world.ctx.directory.lookup(name)) is not None and r.actor_urn != old.actor_urn, "restarted", step_ms=100)
    world.ctx.clock.advance(10_000)
    assert stop_ids(world) == [stop] and world.state("f1").stop_order_id == stop
    assert world.engine(lambda e, now: e.metrics(now))["unprotected_now"] == 0


def test_exchange_view_with_another_quantity_resizes_the_stop(world: World):
    """Someone added to our position on the UI: the owner takes the exchange's quantity and re-sizes its stop."""
    name = world.open()
    o = opened(world)
    world.engine(lambda e, now: e.external_open_position(BTC, "buy", D("0.005"), now))
    advance_until(world, lambda: world.state().qty == D("0.030") and world.state().stop_qty == D("0.030"), "stop re-sized", step_ms=1_000)
    stop = next(x for x in world.open_orders() if x["id"] == world.state().stop_order_id)
    assert D(str(stop["amount"])) == D("0.030") and stop["id"] != o.stop_order_id
    _ = ExchangeView, name


# ------------------------------------------------ what reconciliation costs
READS = ("fetch_positions", "fetch_open_orders")


def reads(world: World) -> int:
    return sum(1 for r in world.exchange.requests if r["method"] in READS)


def run_for(world: World, ms: int, step_ms: int = 5_000) -> None:
    """Advance the virtual clock in steps, letting each step's reads finish (the I/O is in-process)."""
    for _ in range(ms // step_ms):
        world.ctx.clock.advance(step_ms)
        eventually(lambda: not world.ctx.directory.lookup("sync").proxy().busy().get(), what="sync idle")


@pytest.mark.parametrize("extra_toml", ["[sync]\nquiet_probe_secs = 3600\n"])
def test_live_streams_spare_the_exchange_reads(world: World):
    """Streams live: the guard's 10 s checks use the stream-fed view; only the 600 s backstop reads
    (quiet probes off here: see the next test)."""
    world.open()
    opened(world)
    run_for(world, 10_000)
    world.exchange.requests.clear()
    run_for(world, 540_000)
    assert reads(world) == 0, [r["method"] for r in world.exchange.requests]
    run_for(world, 60_000)
    per_read = 1 + len(world.venue.style.open_order_queries())  # positions + open orders (Binance: both books)
    assert reads(world) == per_read, [(r["method"], r["ts_ms"]) for r in world.exchange.requests if r["method"] in READS]  # one backstop full read


def test_quiet_streams_are_probed_every_quiet_probe_secs(world: World):
    """Streams live and nothing pushed: a full read every sync.quiet_probe_secs (15 s) checks that
    the quiet is real (a silent stream would differ from the view), no more."""
    world.open()
    opened(world)
    run_for(world, 10_000)
    world.exchange.requests.clear()
    run_for(world, 150_000, step_ms=1_000)
    per_read = 1 + len(world.venue.style.open_order_queries())
    assert 9 * per_read <= reads(world) <= 10 * per_read, reads(world)
    assert world.ctx.directory.lookup("sync").proxy().probes.get() >= 9


@pytest.mark.parametrize("extra_toml", ["[sync]\nuse_streams = false\n"])
def test_polling_reads_every_guard_interval(world: World):
    world.open()
    opened(world)
    run_for(world, 10_000)
    world.exchange.requests.clear()
    run_for(world, 60_000)
    per_read = 1 + len(world.venue.style.open_order_queries())
    # a full read per guard check (10 s); sync's own (every 30 s) counts as a check and the next
    # is due an interval after it. Exact cadence: tests/test_guard.py
    assert 3 * per_read <= reads(world) <= 7 * per_read


def test_stream_outage_is_a_health_problem_and_falls_back_to_reads(world: World):
    name = world.open()
    o = opened(world)
    run_for(world, 10_000)
    world.exchange.set_streams_down(True)
    problems = eventually(lambda: [p for p in world.sup.proxy().status().get()["problems"] if p.startswith("stream:")], what="health problem")
    assert any("polling every 30 s" in p for p in problems)
    world.exchange.requests.clear()
    run_for(world, 30_000, step_ms=1_000)  # fine steps: the guard's asks are not delayed by the stepping
    assert reads(world) >= 2 * (1 + len(world.venue.style.open_order_queries()))  # the guard's checks are full reads again
    world.engine(lambda e, now: e.external_cancel_order(o.stop_order_id, now))  # missed by the dead stream ...
    advance_until(world, lambda: len(stop_ids(world)) == 1, "stop restored by polling", step_ms=1_000)  # ... found by polling
    world.exchange.set_streams_down(False)
    world.exchange.set_mark(ETH, D(3000))
    world.engine(lambda e, now: e.external_open_position(ETH, "buy", D("0.1"), now))  # a push once the stream is back
    eventually(lambda: not [p for p in world.sup.proxy().status().get()["problems"] if p.startswith("stream:")], what="health problem cleared")
    assert world.ctx.directory.lookup(name) is not None
