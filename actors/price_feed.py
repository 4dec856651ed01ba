"""Mark prices for the symbols that have open positions, fanned out to their actors.

Two sources, one output (``MarkPrice`` told to each subscriber):

* **The venue's stream** (``feeds.use_streams`` and a venue that has one:
  ccxt.pro's Binance ``<symbol>@markPrice@1s``, Bybit ``tickers``). A
  :class:`StreamPump` on the I/O loop subscribes to the symbols that have
  subscribers; when that set changes (checked once per tick, so a burst of
  subscriptions costs one change) only the difference is sent: the new
  symbols are subscribed, the pump's watch restarts on the new set
  (:meth:`StreamPump.rewatch`, same connection), then the symbols no longer
  wanted are unsubscribed. A symbol in both sets never stops streaming. While
  the stream is up nothing is polled: that is the point, fewer requests and
  fresher prices.
* **Reads** every ``feeds.mark_interval_ms`` (one read in flight at a time: a
  slow venue makes readings sparser, never piles requests up). They are the
  only source without a stream, the fallback while the stream is down (the
  supervisor is told ``HealthChanged("stream:marks", ...)``, shown by
  ``ctl status``, and told again with ``problem=None`` once it is up), and the
  stale guard while it is up: a symbol the stream has not updated for
  :data:`STALE_AFTER_INTERVALS` intervals (a new subscription, a silently
  lost one) is read anyway; when every symbol has been silent for twice that
  the connection is open but says nothing, and it is dropped so the pump dials anew.

A stream update is passed on when the price changed or an interval has passed
since the last one told (Bybit pushes its ticker every 100 ms, mostly with
the same mark).

Conflation: a position actor subscribes with ``conflate=True`` and is told
``MarkReady`` with its :class:`~actors.messages.MarkSlot` instead of every
mark: one that falls behind handles only the newest mark, never a backlog.
A mark inside the calm band the owner published on its slot is stored there
and told to nobody (:mod:`actors.mark_gate`): at a thousand positions most
marks wake no owner.

Freshness: a mark carries its own time (``MarkPrice.ts_ms``): the venue's event
time for a pushed one (never later than our clock: signed requests already need
the clocks within a second), the answer's time for a read. A mark older than
:attr:`PriceFeed.fresh_ms` (``STALE_AFTER_INTERVALS`` intervals) is never told
as current: a new subscriber gets the last mark only if it is that fresh, a
stale push is dropped, and the marks of a symbol nobody subscribes to any
more are forgotten (its stream is unsubscribed, so they would only freeze).
"""

from __future__ import annotations

import asyncio
import datetime
from decimal import Decimal
from typing import Any

import pykka

from actors.messages import MarkPrice, MarkReady, MarkSlot, SubscribeMarks, UnsubscribeMarks
from adapters.streams import StreamPump
from adapters.venue import Venue
from core.events import Severity
from core.messages import HealthChanged, IOCompleted, Message, Tick
from supervision.actor import ActorContext, ManagedActor, handles

#: A symbol without a stream update for this many mark intervals is read over REST.
STALE_AFTER_INTERVALS = 3
#: A silent mark connection is dropped at most this often (each redial costs a handshake).
REDIAL_SPACING_MS = 10_000
#: The component named in ``HealthChanged`` (and so in ``ctl status`` problems).
COMPONENT = "stream:marks"


class MarkStreamBatch(Message, frozen=True, kw_only=True):
    """From the mark pump: marks the stream delivered (``generation`` tells old pumps' leftovers apart)."""

    generation: int
    prices: tuple[tuple[str, Decimal, int | None], ...]  # (symbol, mark, venue time ms)


class MarkStreamState(Message, frozen=True, kw_only=True):
    generation: int
    state: str  # connecting / up / down
    error: str | None = None


def _utc(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PriceFeed(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext, venue: Venue) -> None:
        super().__init__(name=name, ctx=ctx)
        self.venue = venue
        self.subscribers: dict[str, dict[str, Any]] = {}  # symbol -> {actor name: ref}
        self.slots: dict[tuple[str, str], MarkSlot] = {}  # (symbol, name) -> the conflating subscriber's slot
        self.last: dict[str, Decimal] = {}
        self.last_ms: dict[str, int] = {}  # the time of each last mark (the venue's, for a pushed one)
        self.reading = False  # one read in flight at a time
        self._failures = 0
        # The stream (only where the venue has one).
        self.streaming = False
        self.stream_state = "off"  # off / connecting / up / down
        self._generation = 0
        self._pump: StreamPump | None = None
        self._pump_symbols: tuple[str, ...] = ()
        self._watching: list[tuple[str, ...]] = [()]  # what the pump watches (set on the I/O loop)
        self._down_since_ms: int | None = None
        self._stream_seen_ms: dict[str, int] = {}  # symbol -> when the stream last updated it
        self._told_ms: dict[str, int] = {}
        self._stale: set[str] = set()
        self._redialled_ms = -(10**15)
        self._watched_ms: dict[str, int] = {}  # symbol -> since when the stream carries it
        self._swap_lock: asyncio.Lock | None = None  # created on the I/O loop

    @property
    def interval_ms(self) -> int:
        return self.ctx.config.feeds.mark_interval_ms

    @property
    def fresh_ms(self) -> int:
        """The freshness bound: no mark older than this is told as current."""
        return STALE_AFTER_INTERVALS * self.interval_ms

    def started(self) -> None:
        self.every(self.interval_ms, "marks")
        self.streaming = self.ctx.config.feeds.use_streams and self.venue.mark_streams_supported()
        if self.streaming:
            self._report(None)  # a restarted feed starts afresh; a new outage is reported anew

    def stopping(self) -> None:
        if self._pump is not None:
            self.ctx.io.submit(self._swap(self._pump, self._pump_symbols, None))

    def config_changed(self, applied: tuple[str, ...]) -> None:
        if "feeds.mark_interval_ms" in applied:
            self._cancel_timers()
            self.every(self.interval_ms, "marks")
            if self._down_since_ms is not None:
                self._report(self._problem())

    @handles(SubscribeMarks)
    def _subscribe(self, msg: SubscribeMarks) -> None:
        self.subscribers.setdefault(msg.symbol, {})[msg.name] = msg.subscriber
        if msg.conflate:
            self.slots[(msg.symbol, msg.name)] = MarkSlot()  # a new incarnation: a new, empty slot
        else:
            self.slots.pop((msg.symbol, msg.name), None)
        ts = self.last_ms.get(msg.symbol)
        if msg.symbol in self.last and ts is not None and self.ctx.clock.now_ms() - ts <= self.fresh_ms:
            self._tell_one(msg.symbol, msg.name, msg.subscriber, MarkPrice(symbol=msg.symbol, price=self.last[msg.symbol], ts_ms=ts))  # fresh, with its own time

    @handles(UnsubscribeMarks)
    def _unsubscribe(self, msg: UnsubscribeMarks) -> None:
        subs = self.subscribers.get(msg.symbol, {})
        subs.pop(msg.name, None)
        self.slots.pop((msg.symbol, msg.name), None)
        if not subs:
            self.subscribers.pop(msg.symbol, None)
            for known in (self.last, self.last_ms, self._told_ms):
                known.pop(msg.symbol, None)  # nobody follows it: its last mark would only freeze

    # ------------------------------------------------------------ reads
    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        if msg.name != "marks":
            return
        if self.streaming:
            self._follow_subscribers()
        due = self._due_reads()
        if due and not self.reading:
            self.reading = True
            self.io_call("marks", self.venue.mark_prices(due))

    def _due_reads(self) -> list[str]:
        """Every subscribed symbol, unless the stream is up: then only the stale ones."""
        symbols = sorted(self.subscribers)
        if not self.streaming or self.stream_state != "up":
            return symbols
        now, limit = self.ctx.clock.now_ms(), STALE_AFTER_INTERVALS * self.interval_ms
        stale = [s for s in symbols if now - self._stream_seen_ms.get(s, -(10**15)) > limit]
        for s in set(stale) - self._stale:
            if s in self._stream_seen_ms:  # a new subscription is expected to be read until its first update
                self.emit("feed.mark_stale", {"stream": COMPONENT, "silent_ms": now - self._stream_seen_ms[s]}, severity=Severity.WARNING, symbol=s, exchange=self.venue.name)
        self._stale = set(stale)
        quiet = all(now - self._stream_seen_ms.get(s, self._watched_ms.get(s, now)) > 2 * limit for s in symbols)
        if stale and len(stale) == len(symbols) and quiet and now - self._redialled_ms > max(limit, REDIAL_SPACING_MS):
            # every symbol silent at once: the connection is open but says nothing; dial anew
            self._redialled_ms = now
            self.emit("feed.stream_silent", {"stream": COMPONENT, "symbols": len(symbols)}, severity=Severity.WARNING, exchange=self.venue.name)
            self.ctx.io.submit(self._redial())
        return stale

    async def _redial(self) -> None:
        self.venue.redial_streams(("marks",), "no mark pushed for any symbol")

    @handles(IOCompleted)
    def _on_marks(self, msg: IOCompleted) -> None:
        self.reading = False
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
            if symbol in self.subscribers:  # one that left while the read was out is not remembered
                self._tell(symbol, price, now, now)

    def _tell(self, symbol: str, price: Decimal, ts: int, now: int) -> None:
        self.last[symbol], self.last_ms[symbol] = price, ts
        self._told_ms[symbol] = now
        mark = MarkPrice(symbol=symbol, price=price, ts_ms=ts)
        for name, ref in list(self.subscribers.get(symbol, {}).items()):
            self._tell_one(symbol, name, ref, mark, now)

    def _tell_one(self, symbol: str, name: str, ref: Any, mark: MarkPrice, now_ms: int | None = None) -> None:
        slot = self.slots.get((symbol, name))
        try:
            if slot is None:
                ref.tell(mark)
            elif slot.put(mark, now_ms):
                ref.tell(MarkReady(symbol=symbol, slot=slot))
        except pykka.ActorDeadError:  # it stopped (was replaced) meanwhile: its successor subscribes itself
            self.subscribers[symbol].pop(name, None)
            self.slots.pop((symbol, name), None)

    # ----------------------------------------------------------- stream
    def _follow_subscribers(self) -> None:
        """Follow the set of symbols with subscribers: the first starts the pump, a change
        sends only the difference, none left stops it."""
        wanted = tuple(sorted(self.subscribers))
        if wanted == self._pump_symbols:
            return
        old, old_symbols = self._pump, self._pump_symbols
        self._pump_symbols = wanted
        self._stream_seen_ms = {s: t for s, t in self._stream_seen_ms.items() if s in wanted}
        now = self.ctx.clock.now_ms()
        self._watched_ms = {s: self._watched_ms.get(s, now) for s in wanted}
        if not wanted:
            self._pump, self.stream_state = None, "off"
            if self._down_since_ms is not None:
                self._down_since_ms = None
                self._report(None)  # nothing to stream: nothing degraded
            self.ctx.io.submit(self._swap(old, old_symbols, None))
        elif old is None:
            self._generation += 1
            self._pump, self.stream_state = self._new_pump(self._generation), "connecting"
            self.ctx.io.submit(self._swap(None, (), self._pump, wanted))
        else:
            self.ctx.io.submit(self._retarget(old, old_symbols, wanted))

    def _new_pump(self, generation: int) -> StreamPump:
        ref, venue, watching = self.actor_ref, self.venue, self._watching

        def on_batch(prices: dict[str, tuple[Decimal, int | None]]) -> None:
            ref.tell(MarkStreamBatch(generation=generation, prices=tuple((s, p, t) for s, (p, t) in prices.items())))

        def on_state(state: str, error: str | None) -> None:
            ref.tell(MarkStreamState(generation=generation, state=state, error=error))

        return StreamPump("marks", lambda: venue.watch_mark_prices(list(watching[0])), on_batch, on_state, connected=lambda: venue.stream_connected("marks"))

    def _lock(self) -> asyncio.Lock:
        self._swap_lock = self._swap_lock or asyncio.Lock()
        return self._swap_lock

    async def _swap(self, old: StreamPump | None, old_symbols: tuple[str, ...], new: StreamPump | None, symbols: tuple[str, ...] = ()) -> None:
        """On the I/O loop, one change at a time in the order asked: stop the old pump and end
        its subscription, or start a new one on ``symbols``."""
        async with self._lock():
            if old is not None:
                await old.stop()
                await self.venue.unwatch_mark_prices(list(old_symbols))
            if new is not None:
                self._watching[0] = symbols
                new.spawn()

    async def _retarget(self, pump: StreamPump, old_symbols: tuple[str, ...], wanted: tuple[str, ...]) -> None:
        """The running pump to ``wanted``: its watch restarts on the new set (subscribing only
        the new symbols), then the symbols dropped are unsubscribed, on the same connection."""
        async with self._lock():
            self._watching[0] = wanted
            pump.rewatch()
            await asyncio.sleep(0)  # the old watch is off before its symbols' futures are ended
            gone = sorted(set(old_symbols) - set(wanted))
            if gone:
                await self.venue.unwatch_mark_prices(gone)

    @handles(MarkStreamBatch)
    def _on_stream_batch(self, msg: MarkStreamBatch) -> None:
        if msg.generation != self._generation:
            return
        now = self.ctx.clock.now_ms()
        for symbol, price, venue_ms in msg.prices:
            if symbol not in self.subscribers:
                continue  # unsubscribed meanwhile
            ts = min(venue_ms, now) if venue_ms is not None else now
            if now - ts > self.fresh_ms:
                continue  # a stale push is no current mark (the stale guard reads it instead)
            self._stream_seen_ms[symbol] = now
            if price != self.last.get(symbol) or now - self._told_ms.get(symbol, -(10**15)) >= self.interval_ms:
                self._tell(symbol, price, ts, now)
            else:
                self.last_ms[symbol] = ts  # the same mark, confirmed at a later time

    @handles(MarkStreamState)
    def _on_stream_state(self, msg: MarkStreamState) -> None:
        if msg.generation != self._generation:
            return
        self.stream_state = msg.state
        now = self.ctx.clock.now_ms()
        if msg.state == "down" and self._down_since_ms is None:
            self._down_since_ms = now
            self.emit("feed.stream_down", {"stream": COMPONENT, "error": msg.error, "polling_every_ms": self.interval_ms}, severity=Severity.WARNING, exchange=self.venue.name)
            self._report(self._problem())
        elif msg.state == "up" and self._down_since_ms is not None:
            self.emit("feed.stream_up", {"stream": COMPONENT, "down_ms": now - self._down_since_ms}, exchange=self.venue.name)
            self._down_since_ms = None
            self._report(None)

    def _problem(self) -> str:
        return f"down since {_utc(self._down_since_ms or 0)}: polling every {self.interval_ms} ms"

    def _report(self, problem: str | None) -> None:
        if self.ctx.supervisor is not None:
            try:
                self.ctx.supervisor.tell(HealthChanged(component=COMPONENT, problem=problem))
            except pykka.ActorDeadError:
                pass
