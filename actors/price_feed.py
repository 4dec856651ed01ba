"""Mark prices for the symbols that have open positions, fanned out to their actors.

Every ``feeds.mark_interval_ms`` it reads the mark price of each subscribed
symbol through the venue (one read in flight at a time: a slow venue makes
readings sparser, never piles requests up) and tells each subscriber a
``MarkPrice``. The reading runs on the I/O loop; the fan-out is tells.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pykka

from actors.messages import MarkPrice, SubscribeMarks, UnsubscribeMarks
from adapters.venue import Venue
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.messages import IOCompleted, Tick
from tradebot.events import Severity


class PriceFeed(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext, venue: Venue) -> None:
        super().__init__(name=name, ctx=ctx)
        self.venue = venue
        self.subscribers: dict[str, dict[str, Any]] = {}  # symbol -> {actor name: ref}
        self.last: dict[str, Decimal] = {}
        self._reading = False
        self._failures = 0

    def started(self) -> None:
        self.every(self.ctx.config.feeds.mark_interval_ms, "marks")

    def config_changed(self, applied: tuple[str, ...]) -> None:
        if "feeds.mark_interval_ms" in applied:
            self._cancel_timers()
            self.every(self.ctx.config.feeds.mark_interval_ms, "marks")

    @handles(SubscribeMarks)
    def _subscribe(self, msg: SubscribeMarks) -> None:
        self.subscribers.setdefault(msg.symbol, {})[msg.name] = msg.subscriber
        if msg.symbol in self.last:
            msg.subscriber.tell(MarkPrice(symbol=msg.symbol, price=self.last[msg.symbol], ts_ms=self.ctx.clock.now_ms()))

    @handles(UnsubscribeMarks)
    def _unsubscribe(self, msg: UnsubscribeMarks) -> None:
        subs = self.subscribers.get(msg.symbol, {})
        subs.pop(msg.name, None)
        if not subs:
            self.subscribers.pop(msg.symbol, None)

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        if msg.name == "marks" and self.subscribers and not self._reading:
            self._reading = True
            self.io_call("marks", self.venue.mark_prices(sorted(self.subscribers)))

    @handles(IOCompleted)
    def _on_marks(self, msg: IOCompleted) -> None:
        self._reading = False
        if msg.error is not None:
            self._failures += 1
            if self._failures in (1, 10) or self._failures % 100 == 0:
                self.emit("feed.marks_failed", {"error": msg.error, "consecutive": self._failures}, severity=Severity.WARNING)
            return
        if self._failures:
            self.emit("feed.marks_recovered", {"after_failures": self._failures})
            self._failures = 0
        now = self.ctx.clock.now_ms()
        for symbol, price in msg.result.items():
            self.last[symbol] = price
            for name, ref in list(self.subscribers.get(symbol, {}).items()):
                try:
                    ref.tell(MarkPrice(symbol=symbol, price=price, ts_ms=now))
                except pykka.ActorDeadError:
                    self.subscribers[symbol].pop(name, None)
