"""Conflation: a position actor that falls behind handles only the newest mark, never a backlog.

The real price feed (polling the paper exchange) tells one plain subscriber every
mark and one conflating subscriber ``MarkReady`` with its slot. The conflating
one is held busy while twenty marks pass; released, it handles one mark, the
newest; the plain one has every mark in order."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from actors.messages import MarkPrice, MarkReady, MarkSlot, SubscribeMarks, UnsubscribeMarks
from core.messages import Message
from supervision.actor import ActorContext, ManagedActor, handles
from tests.conftest import eventually
from tests.world import BTC, World, opened


class Hold(Message, frozen=True, kw_only=True):
    release: Any  # threading.Event


class Marks(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext) -> None:
        super().__init__(name=name, ctx=ctx)
        self.got: list[Decimal] = []

    @handles(MarkPrice)
    def _mark(self, msg: MarkPrice) -> None:
        self.got.append(msg.price)

    @handles(MarkReady)
    def _ready(self, msg: MarkReady) -> None:
        mark = msg.slot.take()
        if mark is not None:
            self.got.append(mark.price)

    @handles(Hold)
    def _hold(self, msg: Hold) -> None:
        msg.release.wait(30)


def test_a_subscriber_behind_gets_only_the_newest_mark(world: World):
    ctx = world.ctx
    feed = eventually(lambda: ctx.directory.lookup("price_feed"), what="price feed")
    plain, slow = Marks.start(name="plain", ctx=ctx), Marks.start(name="slow", ctx=ctx)
    release = threading.Event()
    try:
        feed.tell(SubscribeMarks(symbol="BTCUSDT", subscriber=plain, name="plain"))
        feed.tell(SubscribeMarks(symbol="BTCUSDT", subscriber=slow, name="slow", conflate=True))
        eventually(lambda: len(feed.proxy().subscribers.get().get("BTCUSDT", {})) == 2, what="both subscribed")
        interval = ctx.config.feeds.mark_interval_ms
        slow.tell(Hold(release=release))
        prices = [Decimal(40_000 + 10 * k) for k in range(1, 21)]
        for p in prices:
            world.exchange.set_mark(BTC, p)
            eventually(lambda p=p: (ctx.clock.advance(interval), p in plain.proxy().got.get())[1], what=f"mark {p} told")
        told = [p for p in plain.proxy().got.get() if p in prices]
        assert [p for i, p in enumerate(told) if i == 0 or told[i - 1] != p] == prices  # every mark, in order (each read tells it)
        release.set()
        eventually(lambda: prices[-1] in slow.proxy().got.get(), what="the slow one handled the newest")
        after_hold = slow.proxy().got.get()
        assert {p for p in after_hold if p in prices} == {prices[-1]}, after_hold  # none of the 19 stale ones (the newest maybe twice: told again meanwhile)
        assert len(told) > 20  # while the plain one was told each of them, some more than once
    finally:
        release.set()
        feed.tell(UnsubscribeMarks(symbol="BTCUSDT", name="plain"))
        feed.tell(UnsubscribeMarks(symbol="BTCUSDT", name="slow"))
        plain.stop()
        slow.stop()


def test_the_slot_tells_once_per_empty_to_full():
    slot = MarkSlot()
    m = [MarkPrice(symbol="BTCUSDT", price=Decimal(k), ts_ms=k) for k in range(3)]
    assert slot.put(m[0]) is True  # empty -> full: tell
    assert slot.put(m[1]) is False and slot.put(m[2]) is False  # already told: overwrite only
    assert slot.take() == m[2]
    assert slot.put(m[0]) is True  # taken: the next mark tells again


def test_position_actors_subscribe_conflated(world: World):
    """The owners themselves use the slot (the scale goal: no stale backlog at thousands)."""
    world.open()
    opened(world)
    feed = world.ctx.directory.lookup("price_feed")
    eventually(lambda: any(k[0] == "BTCUSDT" and k[1].startswith("position:") for k in feed.proxy().slots.get()), what="the owner's slot")
