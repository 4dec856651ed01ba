"""The calm gate: the feed does not wake an owner for a mark inside the band it published,
and nothing the rules would act on is ever kept back (actors/mark_gate.py, MarkSlot).

End to end on the paper exchange with the real price feed (polling), the real
position actor and store, on virtual time."""

from __future__ import annotations

from decimal import Decimal

from actors.messages import MarkPrice, MarkSlot
from actors.plan_mark import Calm
from adapters.paper import FaultPlan
from tests.conftest import eventually
from tests.test_stop_moves import mark, moved_to, protected
from tests.world import BTC, World, advance_until

D = Decimal


def test_a_mark_inside_the_published_band_is_kept_in_the_slot_without_telling() -> None:
    slot = MarkSlot()
    slot.calm = Calm(long=True, lo=D(100), hi=None, best=D(110), until_ms=1_000)
    inside, beyond, later = (MarkPrice(symbol="X", price=D(p), ts_ms=t) for p, t in (("105", 1), ("111", 2), ("105", 3)))
    assert slot.put(inside, now_ms=10) is False and slot.peek() is inside  # kept, the newest, not told
    assert slot.put(beyond, now_ms=10) is True  # a new best: told
    assert slot.take() is beyond
    assert slot.put(later, now_ms=1_000) is True  # the band's clock ran out: told even inside it
    slot.take()
    slot.calm = None
    assert slot.put(inside, now_ms=10) is True  # withdrawn: every mark is told again


def owner_slot(world: World) -> MarkSlot:
    feed = world.ctx.directory.lookup("price_feed")
    slots = eventually(lambda: [v for k, v in feed.proxy().slots.get().items() if k[1].startswith("position:")], what="the owner's slot")
    return slots[0]


def test_marks_inside_the_band_do_not_wake_the_owner_and_one_beyond_it_moves_the_stop(world: World) -> None:
    protected(world)
    mark(world, "40600")  # trailing activates, the stop goes to 40397.0
    advance_until(world, lambda: moved_to(world, "40397.0"), "first move")
    slot = owner_slot(world)
    advance_until(world, lambda: slot.calm is not None, "the band published")
    band = slot.calm
    assert isinstance(band, Calm) and band.lo == D("40397.0") and band.best == D(40600)  # from the stop up to the best
    now = world.ctx.clock.now_ms()
    for price in ("40500", "40450", "40600"):  # inside: the feed stores them and tells nobody
        assert slot.put(MarkPrice(symbol="BTCUSDT", price=D(price), ts_ms=now), now) is False
        assert slot.peek().price == D(price)
    for price in ("40397.0", "40600.1"):  # through the stop, a new best: told
        assert band.holds(D(price), now) is False
    for price in ("40500", "40450", "40590"):  # through the real feed: the stop stays
        mark(world, price)
        eventually(lambda p=price: (world.ctx.clock.advance(50), slot.peek() is not None and slot.peek().price == D(p))[1], what=f"{price} in the slot")
    assert moved_to(world, "40397.0")
    world.ctx.clock.advance(61_000)
    mark(world, "41500")  # far past the best: told, and the stop moves at once
    advance_until(world, lambda: moved_to(world, "41292.5"), "the move beyond the band")


def test_a_mark_the_owner_ignored_while_busy_is_considered_once_the_operation_is_done(world: World) -> None:
    """A mark told while a move is in flight is ignored then; once the move is done the owner
    looks at the newest mark in its slot without waiting for the feed to tell another."""
    protected(world)
    mark(world, "40600")
    advance_until(world, lambda: moved_to(world, "40397.0"), "first move")
    slot = owner_slot(world)
    world.ctx.clock.advance(61_000)
    world.exchange.faults.plan = FaultPlan(latency_ms_min=300, latency_ms_max=300)  # every call takes 0.3 s (wall)
    mark(world, "41000")  # a move to 40795.0 starts ...
    eventually(lambda: (world.ctx.clock.advance(10), world.state().move_client_id is not None)[1], what="the move under way")
    world.exchange.set_mark(BTC, D(41500))  # ... and while it is out the market runs on
    eventually(lambda: (world.ctx.clock.advance(50), slot.peek() is not None and slot.peek().price == D(41500))[1], what="41500 told while busy")
    world.exchange.faults.fail_next("fetch_mark_price", "network", count=10_000)  # from now on the feed tells nothing new
    eventually(lambda: moved_to(world, "41292.5"), what="the newest mark considered after the move", timeout=60)
    assert [e.data["price"] for e in world.events() if e.type == "position.stop_moved"][-2:] == ["40795.0", "41292.5"]


def test_a_band_withdrawn_or_replaced_hands_back_what_it_kept_and_judges_only_later_marks() -> None:
    slot = MarkSlot()
    old = Calm(long=True, lo=D(100), hi=None, best=D(110), until_ms=10**12)
    slot.calm = old
    kept = MarkPrice(symbol="X", price=D(104), ts_ms=1)
    assert slot.put(kept, now_ms=5) is False
    assert slot.gate(Calm(long=True, lo=D(105), hi=None, best=D(110), until_ms=10**12)) is kept  # the new state looks at it
    assert slot.put(MarkPrice(symbol="X", price=D(104), ts_ms=2), now_ms=5) is True  # through the new stop: told
    slot.take()
    assert slot.gate(None) is not None and slot.put(kept, now_ms=5) is True  # withdrawn: every mark told
