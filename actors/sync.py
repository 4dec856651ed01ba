"""The sync actor: the exchange is the truth; tell the owners, adopt orphans, clean zombies.

Every ``sync.interval_secs`` (and at start, on ``ctl sync`` / ``ctl zombies``,
or when the guard asks) it reads the exchange's positions and *all* open
orders, then the store's projection of what our actors own (exchange first:
every order of ours was recorded before it was sent, so it is always
explainable by what is read after). Findings:

* phantom (ours, flat on the exchange) and quantity mismatch -> the owner is
  told (``ExchangeView``); it verifies with its own read and acts;
* untracked position (no owner) -> adopted: the supervisor starts a position
  actor for it that protects it at once;
* stray order (our client id, the owner alive but no longer referencing it,
  older than ``sync.grace_secs``) -> its owner cancels it;
* zombie order (nobody owns it): ours with the owner gone; a *closing* order
  (reduce-only, closePosition / closeOnTrigger, an attached TP/SL) on a symbol
  without a position; an order that would flip a position (:data:`ZOMBIE_RULES`)
  -> cancelled here (executor retries, at most ``zombies.max_cancels_per_run``),
  or only reported in dry-run. An order that can only open or add to a
  position (a conditional entry included) is never cancelled. Other people's
  orders on symbols we do not trade are left alone unless
  ``zombies.include_foreign``.

It never touches an order whose owner is alive: only owners touch their orders.

Streams: where the venue pushes order and position updates, each push goes
to the owner at once and into an :class:`~actors.account_view.AccountView`.
While both streams are live the guard's checks are answered from that view
(no request) and the full read drops to every ``sync.interval_secs_streaming``
(a backstop for a lost push). A stream that fails is a health problem in
``ctl status`` and everything falls back to reads (``interval_secs``, and the
guard's own interval); when it comes back, a full read covers what was missed.

A stream can also fail silently: the connection stays open, nothing is pushed
(a venue-side stall, a proxy, a half-dead TCP path). Two checks catch it
while the streams count as live:

* **Expected pushes.** Every order action of ours the venue accepted (a
  placement, a cancel; :meth:`Venue.add_order_listener`) must be confirmed
  by a push about that order within ``sync.push_deadline_secs``. The venue's
  answer itself goes into the view at once, so the guard judges our own
  stops right even before their push arrives.
* **Quiet probes.** With orders or positions live and no push for
  ``sync.quiet_probe_secs``, a full read is made and compared with the view:
  every difference not explained by a push or an action during the read is a
  push owed, due within the same deadline.

A push owed and not received: the streams are marked down (a health
problem in ``ctl status``), everything is read in full, and their connection
is dropped so the pumps dial anew (a new listenKey on Binance). The next
push, or the pumps' reconnect, clears it.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec
import pykka

from actors.account_view import LIVE, AccountView, Snapshot
from actors.messages import EnsureProtected, ExchangeView, OpenRequest
from actors.position_state import P, PositionState, from_projection
from adapters.errors import VenueError
from adapters.streams import StreamPump
from adapters.venue import OrderReport, OrderStatus, PositionReport, Venue
from core.events import Severity
from core.ids import POSITION_PREFIX, PositionName, new_position_id, owner_of, position_actor_name
from core.messages import BalanceSeen, HealthChanged, IOCompleted, Message, ReconcileFinished, ReconcileNow, StartChild, Tick
from supervision.actor import ActorContext, ManagedActor, handles


class StreamBatch(Message, frozen=True, kw_only=True):
    kind: str  # orders / positions
    items: tuple[Any, ...]


class ZombieCheck(Message, frozen=True, kw_only=True):
    pass


#: Symbols of positions closed this recently (before a restart) still count as traded.
TRADED_MEMORY_MS = 86_400_000

#: How long after a push that may leave a zombie (a close, someone else's order) the check runs.
ZOMBIE_CHECK_DELAY_MS = 2_000


class StreamState(Message, frozen=True, kw_only=True):
    kind: str
    state: str
    error: str | None = None


class OrderActed(Message, frozen=True, kw_only=True):
    """From the venue's order listener: an order action of ours the venue accepted."""

    action: str  # place / cancel
    order_id: str
    report: OrderReport | None = None


#: How many order ids (and client ids) pushed lately are remembered, to match expectations.
PUSHED_MEMORY = 5_000
#: How often the expected pushes and the quiet probe are checked.
WATCHDOG_MS = 1_000


@dataclasses.dataclass
class _Expected:
    """A push owed: about any of ``keys`` (order id, client id, ``pos:<symbol>``); ``done``: one
    saying the order ended."""

    keys: frozenset[str]
    done: bool
    deadline_ms: int
    what: str


def references(s: PositionState) -> set[str]:
    """Every order id and client id a position still stands behind (its entry's too)."""
    return s.order_refs() | s.client_refs() | {i for i in (s.entry_order_id, s.entry_client_id) if i}


def _reply(ref: Any, message: Any) -> None:
    """Answer whoever asked; one that has stopped meanwhile (a restart, the shutdown) is not our failure."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


#: Which foreign order (nobody's of ours alive owns it, on a symbol we trade) the bot cancels, by
#: what the order can do and what the symbol holds (one-way mode). Per venue, the venue style says
#: which raw flags make an order *closing* (``VenueStyle.closing_flags``: Binance ``reduceOnly`` /
#: ``closePosition``, Bybit ``reduceOnly`` / ``closeOnTrigger``; Bybit's position-attached TP/SL too);
#: every other order, conditional or not, can open a position. ``None``: left alone.
#:
#: ================== ============== ================================ ==================
#: order              symbol flat    order reduces the position       order adds to it
#: ================== ============== ================================ ==================
#: closing            cancel         left alone                       left alone
#: conditional entry  left alone     cancel if it would flip it       left alone
#: entry (plain)      left alone     cancel if it would flip it       left alone
#: ================== ============== ================================ ==================
#:
#: "Would flip": its amount exceeds ``zombies.flip_ratio`` times the position. Hedge mode: a closing
#: order for a side (``positionIdx`` / ``positionSide``) that holds nothing is cancelled, an opening one
#: never. A foreign order that can only open or add to a position is never the bot's to cancel.
ZOMBIE_RULES: dict[tuple[str, str], str | None] = {
    ("closing", "flat"): "{what} order on a symbol without a position",
    ("closing", "reduces"): None,
    ("closing", "adds"): None,
    ("conditional entry", "flat"): None,
    ("conditional entry", "reduces"): "would flip the position ({amount} against {qty})",
    ("conditional entry", "adds"): None,
    ("entry", "flat"): None,
    ("entry", "reduces"): "would flip the position ({amount} against {qty})",
    ("entry", "adds"): None,
}


def order_kind(o: OrderReport) -> str:
    """closing (reduce-only / closePosition / closeOnTrigger / an attached TP/SL), conditional entry, or entry."""
    if o.reduce_only or o.attached:
        return "closing"
    return "conditional entry" if o.is_stop else "entry"


def zombie_reason(o: OrderReport, by_key: dict[tuple[str, str], PositionReport], held: set[str], flip_ratio: Decimal) -> str | None:
    """Why an order nobody owns (on a symbol we trade) is a leftover to cancel (:data:`ZOMBIE_RULES`); None: leave it.

    In hedge mode an order is tied to one side (``position_side``); a *closing* order for a side
    that holds nothing is a zombie even when the other side is open (the "wrong positionIdx"
    rule), while an opening order, as in one-way mode, is someone's entry and left alone."""
    if o.position_side is not None:
        closes = (o.position_side == "long") == (o.side == "sell")
        if closes and (o.symbol, o.position_side) not in by_key:
            return f"closes the {o.position_side} side (hedge mode, position index {1 if o.position_side == 'long' else 2}), which holds no position"
        return None  # hedge-mode sides are separate positions: nothing can flip
    kind = order_kind(o)
    reduced = by_key.get((o.symbol, "long" if o.side == "sell" else "short"))  # the position this order would reduce
    if o.symbol not in held:
        situation = "flat"
    elif reduced is not None:
        situation = "reduces"
        if o.amount <= reduced.qty * flip_ratio:
            return None  # reduces without flipping: someone's partial exit or scale-out
    else:
        situation = "adds"
    rule = ZOMBIE_RULES[(kind, situation)]
    if rule is None:
        return None
    what = o.attached or ("stop" if o.is_stop else "reduce-only")
    return rule.format(what=what, amount=o.amount, qty=reduced.qty if reduced is not None else 0)


class SyncActor(ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext, venue: Venue, position_spec: Callable[[OpenRequest], Any]) -> None:
        super().__init__(name=name, ctx=ctx)
        self.venue = venue
        self.position_spec = position_spec
        self._reading = False
        self._waiting: list[ReconcileNow] = []
        self._cancels: list[tuple[OrderReport, str]] = []
        self._findings: dict[str, Any] = {}
        self._adopting: dict[tuple[str, str], int] = {}  # (symbol, side) -> when we asked
        self.last_snapshot: Snapshot | None = None
        self.view = AccountView()
        self.traded: set[str] = set()  # symbols we have traded since the start: others' leftovers there are zombies
        self._zombie_check_due = False
        self._view_waiting: list[ReconcileNow] = []
        self._balance_reading = False
        self._balance_asked_ms: int | None = None
        # silent-stream watchdog
        self._expected: list[_Expected] = []
        self._pushed: OrderedDict[str, bool] = OrderedDict()  # key -> a push said it ended
        self._last_push_ms = 0
        self._read_touched: set[str] | None = None  # keys pushed or acted on while a read is out
        self.silent: str | None = None  # why the streams were marked down for silence
        self.probes = 0  # quiet probes made (status, tests, benchmarks)
        self._listener: Callable[[str, OrderReport | None, str], None] | None = None

    def started(self) -> None:
        self.every(self.ctx.config.sync.interval_secs * 1000, "reconcile")
        self.actor_ref.tell(ReconcileNow())  # the startup reconcile: intake waits for it
        self.streams: dict[str, str] = {}
        self._pumps: list[StreamPump] = []
        if self.ctx.config.sync.use_streams and self.venue.streams_supported():  # else: polling only
            ref = self.actor_ref
            watches: tuple[tuple[str, Callable[[], Any]], ...] = (("orders", self.venue.watch_orders), ("positions", self.venue.watch_positions))
            for kind, watch in watches:
                on_batch, on_state = self._stream_callbacks(ref, kind)
                # connected: up again on reconnect, not at the next order
                pump = StreamPump(kind, watch, on_batch, on_state, connected=functools.partial(self.venue.stream_connected, kind))
                pump.start(self.ctx.io.loop)
                self._pumps.append(pump)
            self._last_push_ms = self.ctx.clock.now_ms()

            def acted(action: str, report: OrderReport | None, order_id: str) -> None:
                ref.tell(OrderActed(action=action, order_id=order_id, report=report))

            self._listener = acted
            self.venue.add_order_listener(acted)
            self.every(WATCHDOG_MS, "watchdog")

    def _stream_callbacks(self, ref: Any, kind: str) -> tuple[Callable[[Any], None], Callable[[str, str | None], None]]:
        """The pump's batch and state callbacks (run on the I/O loop: they only tell)."""

        def on_batch(batch: Any) -> None:
            ref.tell(StreamBatch(kind=kind, items=tuple(batch)))

        def on_state(state: str, error: str | None) -> None:
            ref.tell(StreamState(kind=kind, state=state, error=error))

        return on_batch, on_state

    def stopping(self) -> None:
        for pump in self._pumps:
            self.ctx.io.submit(pump.stop())
        if self._listener is not None:
            self.venue.remove_order_listener(self._listener)

    @handles(StreamState)
    def _on_stream_state(self, msg: StreamState) -> None:
        was_down = self.streams.get(msg.kind) == "down"
        self.streams[msg.kind] = msg.state
        if msg.state in ("up", "down"):
            self.emit(f"sync.stream_{msg.state}", {"stream": msg.kind, "error": msg.error}, severity=Severity.INFO if msg.state == "up" else Severity.WARNING, exchange=self.venue.name)
        if msg.state == "down" and not was_down:
            problem = f"{self.venue.name} {msg.kind} stream down ({msg.error}): polling every {self.ctx.config.sync.interval_secs} s, guard reads every {self.ctx.config.guard.interval_secs} s"
            self.ctx.supervisor.tell(HealthChanged(component=f"stream:{msg.kind}", problem=problem))
        elif msg.state != "down" and was_down:
            self._stream_back(msg.kind)

    def _stream_back(self, kind: str) -> None:
        self.ctx.supervisor.tell(HealthChanged(component=f"stream:{kind}", problem=None))
        if self.silent is not None and all(self.streams.get(k) != "down" for k in ("orders", "positions")):
            self.emit("sync.stream_recovered", {"was": self.silent}, exchange=self.venue.name)
            self.silent = None
            self._last_push_ms = self.ctx.clock.now_ms()
        self._on_reconcile(ReconcileNow())  # pushes were missed while it was down: read everything

    def streams_live(self) -> bool:
        """Both streams subscribed and not failing: the view is as fresh as the exchange's pushes.

        A subscribed stream that has nothing to say is still live (a ``watch_*`` call waits
        for the next change); a failure flips it to "down" until it resubscribes."""
        return bool(self._pumps) and all(self.streams.get(k) in ("connecting", "up") for k in ("orders", "positions"))

    # ------------------------------------------------------ silent streams
    def _keys(self, kind: str, item: Any) -> tuple[set[str], bool]:
        """The expectation keys a pushed item answers, and whether it says an order ended."""
        if kind == "orders":
            return {k for k in (item.order_id, item.client_id) if k}, item.status not in LIVE
        return {f"pos:{item[0]}"}, False

    def _pushed_now(self, kind: str, items: tuple[Any, ...]) -> None:
        self._last_push_ms = self.ctx.clock.now_ms()
        for item in items:
            keys, done = self._keys(kind, item)
            for k in keys:
                self._pushed[k] = self._pushed.get(k, False) or done
                self._pushed.move_to_end(k)
            if self._read_touched is not None:
                self._read_touched |= keys
            self._expected = [e for e in self._expected if not (e.keys & keys and (done or not e.done))]
        while len(self._pushed) > PUSHED_MEMORY:
            self._pushed.popitem(last=False)
        if self.silent is not None:  # a push: the stream speaks again
            for k in ("orders", "positions"):
                if self.streams.get(k) == "down":
                    self.streams[k] = "up"
                    self._stream_back(k)

    def _expect(self, keys: set[str], *, done: bool, what: str) -> None:
        if any(k in self._pushed and (self._pushed[k] or not done) for k in keys):
            return  # the push came first
        deadline = self.ctx.clock.now_ms() + self.ctx.config.sync.push_deadline_secs * 1000
        self._expected.append(_Expected(frozenset(keys), done, deadline, what))

    @handles(OrderActed)
    def _on_acted(self, msg: OrderActed) -> None:
        """Our order action, as the venue answered it: into the view now, and a push is owed."""
        now = self.ctx.clock.now_ms()
        if msg.action == "cancel":
            self.view.on_own("cancel", msg.order_id, now)
            keys, done, what = {msg.order_id}, True, f"our cancel of {msg.order_id}"
        elif msg.report is not None:
            self.view.on_own("place", msg.report, now)
            keys, done, what = {k for k in (msg.report.order_id, msg.report.client_id) if k}, False, f"our order {msg.report.client_id or msg.order_id}"
        else:
            return
        if self._read_touched is not None:
            self._read_touched |= keys
        if self.streams_live():
            self._expect(keys, done=done, what=what)

    def _on_watchdog(self) -> None:
        if not self.streams_live():
            self._expected.clear()  # down: nothing is owed, the reads are the source
            return
        now, cfg = self.ctx.clock.now_ms(), self.ctx.config.sync
        overdue = [e for e in self._expected if now >= e.deadline_ms]
        if overdue:
            return self._silent_streams(overdue[0], len(overdue), now)
        quiet_since = max(self._last_push_ms, self.view.read_ms or 0)
        if not self._reading and (self.view.orders or self.view.positions) and now - quiet_since >= cfg.quiet_probe_secs * 1000:
            self.probes += 1
            self._on_reconcile(ReconcileNow())  # the probe: a read compared with the view

    def _silent_streams(self, first: _Expected, n: int, now: int) -> None:
        cfg = self.ctx.config.sync
        self.silent = f"no push for {first.what} within {cfg.push_deadline_secs} s"
        self.emit("sync.stream_silent", {"streams": ["orders", "positions"], "missing": first.what, "owed": n, "quiet_ms": now - self._last_push_ms}, severity=Severity.WARNING, exchange=self.venue.name)
        self._expected.clear()
        for kind in ("orders", "positions"):
            self.streams[kind] = "down"
            problem = f"{self.venue.name} {kind} stream silent ({self.silent}): redialling; polling every {cfg.interval_secs} s, guard reads every {self.ctx.config.guard.interval_secs} s"
            self.ctx.supervisor.tell(HealthChanged(component=f"stream:{kind}", problem=problem))
        self._on_reconcile(ReconcileNow())
        self.ctx.io.submit(self._redial(self.silent))

    async def _redial(self, reason: str) -> None:
        self.venue.redial_streams(("orders", "positions"), reason)

    def _owed_by_read(self, snap: Snapshot) -> None:
        """A read while the streams are live: what it shows that the view lacks (or the other
        way round) is owed a push, unless a push or an action of ours touched it meanwhile."""
        touched, self._read_touched = self._read_touched or set(), None
        if not self.streams_live() or self.view.read_ms is None:
            return
        read_orders = {o.order_id: o for o in snap.orders}
        for oid in read_orders.keys() ^ self.view.orders.keys():
            o = read_orders.get(oid) or self.view.orders[oid]
            keys = {k for k in (oid, o.client_id) if k}
            if not keys & touched:
                gone = oid in self.view.orders  # the view has it live, the venue does not: an end was not pushed
                self._expect(keys, done=gone, what=f"{'the end of ' if gone else ''}order {o.client_id or oid} ({o.symbol}), seen by a read")
        read_pos = {(p.symbol, p.side): p.qty for p in snap.positions}
        view_pos = {k: p.qty for k, p in self.view.positions.items()}
        for symbol in {k[0] for k in read_pos.keys() ^ view_pos.keys()} | {k[0] for k in read_pos.keys() & view_pos.keys() if read_pos[k] != view_pos[k]}:
            if f"pos:{symbol}" not in touched:
                self._expect({f"pos:{symbol}"}, done=False, what=f"the {symbol} position, changed as a read shows")

    @handles(StreamBatch)
    def _on_stream(self, msg: StreamBatch) -> None:
        """Exchange updates as they happen: owners verify at once, no need to wait for a read."""
        self._pushed_now(msg.kind, msg.items)
        self.view.on_stream(msg.kind, msg.items, self.ctx.clock.now_ms())
        owned = [p for n in (self.ctx.directory.names(POSITION_PREFIX) if self.ctx.directory else []) if (p := PositionName.parse(n)) is not None]
        if msg.kind == "orders":
            for o in msg.items:
                pid = owner_of(o.client_id)
                owner = next((position_actor_name(p.symbol, p.position_id) for p in owned if p.position_id == pid), None) if pid else None
                if pid:
                    self.traded.add(o.symbol)
                if owner and o.status in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED):
                    self.ctx.directory.tell(owner, EnsureProtected())  # the owner asks the exchange and acts
                elif pid is None and o.status is OrderStatus.OPEN and (o.symbol in self.traded or self.ctx.config.zombies.include_foreign):
                    self._zombie_check_soon()  # someone else's order on a symbol we trade: a leftover?
            return
        for symbol, side, qty in msg.items:
            owners = [position_actor_name(p.symbol, p.position_id) for p in owned if p.symbol == symbol]
            if not owners and qty > 0:
                self._on_reconcile(ReconcileNow())  # a position nobody owns: adopt it now, not in 30 s
            if qty == 0 and symbol in self.traded:
                self._zombie_check_soon()  # a position closed: orders left behind become zombies
            for owner in owners:
                pos = None if qty == 0 else PositionReport(symbol=symbol, side=side, qty=qty, entry_price=Decimal(0))
                self.ctx.directory.tell(owner, ExchangeView(position=pos, read_ms=self.ctx.clock.now_ms()))

    def _zombie_check_soon(self) -> None:
        """One full reconcile a moment after a push that can leave zombies behind (the owner
        cancels its own leftovers first), instead of waiting for the streaming backstop."""
        if not self._zombie_check_due:
            self._zombie_check_due = True
            self.after(ZOMBIE_CHECK_DELAY_MS, ZombieCheck())

    @handles(ZombieCheck)
    def _on_zombie_check(self, msg: ZombieCheck) -> None:
        self._zombie_check_due = False
        self._on_reconcile(ReconcileNow())

    def config_changed(self, applied: tuple[str, ...]) -> None:
        if "sync.interval_secs" in applied:
            self._cancel_timers()
            self.every(self.ctx.config.sync.interval_secs * 1000, "reconcile")

    def busy(self) -> bool:
        return self._reading or bool(self._cancels) or bool(self._view_waiting)

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        if msg.name == "watchdog":
            return self._on_watchdog()
        if msg.name != "reconcile":
            return
        read_ms = self.view.read_ms
        if self.streams_live() and read_ms is not None and self.ctx.clock.now_ms() - read_ms < self.ctx.config.sync.interval_secs_streaming * 1000:
            return  # the streams carry every change; the full read is only the backstop
        self._on_reconcile(ReconcileNow())

    @handles(ReconcileNow)
    def _on_reconcile(self, msg: ReconcileNow) -> None:
        if msg.cached_ok and msg.reply_to is not None and self.streams_live() and self.view.read_ms is not None:
            self._view_waiting.append(msg)  # the guard's check: the view, no request to the exchange
            if len(self._view_waiting) == 1:
                self.io_call("view", self.ctx.store.positions(open_only=True, consistent=False))
            return
        self._waiting.append(msg)
        if not self._reading and not self._cancels:
            self._reading = True
            self._started = time.perf_counter()
            self._read_touched = set()
            self.view.read_started()
            self.io_call("read", self._read(with_closed=self.view.read_ms is None))

    async def _read(self, with_closed: bool) -> tuple[Snapshot, set[str]]:
        """The exchange, then the projection; the first read also names the symbols of
        positions closed lately (before a restart), whose leftovers are ours to clean."""
        positions = await self.venue.positions()
        orders = await self.venue.open_orders()
        rows = [p for p in await self.ctx.store.positions(open_only=not with_closed, consistent=False) if p.get("exchange") == self.venue.name]
        since = self.ctx.clock.now_ms() - TRADED_MEMORY_MS
        recent = {p["symbol"] for p in rows if not p.get("is_open") and (p.get("closed_ts_ms") or since) >= since}
        owned = tuple(from_projection(p) for p in rows if p.get("is_open", True))
        now = self.ctx.clock.now_ms()
        return Snapshot(read_ms=now, positions=tuple(positions), orders=tuple(orders), owned=owned, marks_ms=now), recent

    def _balance_if_due(self, force: bool) -> None:
        """After a full read: the account balance for ``ctl status``, a READ-class call of its own
        (never part of the snapshot the guard waits for), when the last was asked for longer ago
        than ``sync.balance_interval_secs`` or a user's ``ctl sync`` asked for the read."""
        now = self.ctx.clock.now_ms()
        due = force or self._balance_asked_ms is None or now - self._balance_asked_ms >= self.ctx.config.sync.balance_interval_secs * 1000
        if due and not self._balance_reading and self.ctx.supervisor is not None:
            self._balance_reading, self._balance_asked_ms = True, now
            self.io_call("balance", self.venue.balance())

    def _on_balance(self, msg: IOCompleted) -> None:
        self._balance_reading = False
        if msg.error is not None and not isinstance(msg.exception, VenueError):
            raise msg.exception  # our bug, not the venue's answer: crash, be restarted
        if self.ctx.supervisor is not None:
            self.ctx.supervisor.tell(BalanceSeen(venue=self.venue.name, ts_ms=self.ctx.clock.now_ms(), balance=None if msg.error else msg.result, error=msg.error))

    @handles(IOCompleted)
    def _on_io(self, msg: IOCompleted) -> None:
        if msg.purpose == "balance":
            return self._on_balance(msg)
        if msg.purpose == "view":
            waiting, self._view_waiting = self._view_waiting, []
            if msg.error is not None:  # the store could not answer: do it the long way
                for w in waiting:
                    self._on_reconcile(msgspec.structs.replace(w, cached_ok=False))
                return None
            snap = self.view.snapshot(self.ctx.clock.now_ms(), tuple(from_projection(p) for p in msg.result if p.get("exchange") == self.venue.name))
            report = ReconcileFinished(ok=True, findings={"source": "streams", "positions": len(snap.positions), "orders": len(snap.orders)}, snapshot=snap)
            for w in waiting:
                _reply(w.reply_to, report)
            return self.finish_drain_if_idle()
        if msg.purpose == "read":
            self._reading = False
            if msg.error is not None:
                self.view.read_failed()
                self._read_touched = None
                return self._finish(False, {"error": msg.error})
            snap, recent = msg.result
            self._balance_if_due(force=any(w.request is not None for w in self._waiting))  # ctl sync: read it now
            self.traded |= recent
            self._owed_by_read(snap)
            self.view.apply_read(snap)
            return self._reconcile(snap)
        if msg.purpose == "cancel":
            order, why = self._cancels.pop(0)
            ok = msg.error is None and msg.result is not False  # False: the venue cannot clear attached TP/SL
            error = msg.error or (None if ok else "the venue has no trading-stop to clear an attached TP/SL")
            self.emit("sync.zombie_cancelled" if ok else "sync.zombie_cancel_failed", {"order_id": order.order_id, "client_id": order.client_id, "why": why, "error": error, "attached": order.attached}, severity=Severity.WARNING if ok else Severity.ERROR, symbol=order.symbol, exchange=self.venue.name)
            self._findings["cancelled" if ok else "cancel_failed"] += 1
            return self._next_cancel()

    # --------------------------------------------------------- findings
    def _reconcile(self, snap: Snapshot) -> None:
        self.last_snapshot = snap
        cfg, now = self.ctx.config, self.ctx.clock.now_ms()
        dry = any(w.dry_run for w in self._waiting if w.dry_run is not None) or (cfg.zombies.dry_run and not any(w.dry_run is False for w in self._waiting))
        dry = dry or cfg.exchange.read_only  # read-only: zombies are reported, never cancelled
        f: dict[str, Any] = {"positions": len(snap.positions), "orders": len(snap.orders), "untracked": [], "phantoms": [], "mismatches": [], "strays": [], "zombies": [], "cancelled": 0, "cancel_failed": 0, "dry_run": dry}
        by_key = {(p.symbol, p.side): p for p in snap.positions}
        owners = {(r.symbol, r.side.value): r for r in snap.owned}
        by_pid = {r.position_id: r for r in snap.owned}
        alive = {p.position_id for n in (self.ctx.directory.names(POSITION_PREFIX) if self.ctx.directory else []) if (p := PositionName.parse(n)) is not None}
        strays: dict[str, list[str]] = {}
        for key, pos in by_key.items():
            row = owners.get(key)
            if row is None:
                f["untracked"].append({"symbol": pos.symbol, "side": pos.side, "qty": str(pos.qty)})
                self._adopt(pos, now)
            elif row.qty != pos.qty and row.state is P.PROTECTED:
                f["mismatches"].append({"position_id": row.position_id, "ours": str(row.qty), "exchange": str(pos.qty)})
        for key, row in owners.items():
            if key not in by_key and row.state in (P.PROTECTED, P.PENDING_STOP):
                f["phantoms"].append({"position_id": row.position_id, "symbol": row.symbol, "owner_alive": row.position_id in alive})
        zombies: list[tuple[OrderReport, str]] = []
        held = {p.symbol for p in snap.positions}
        self.traded |= {r.symbol for r in snap.owned} | {o.symbol for o in snap.orders if owner_of(o.client_id)}
        traded = self.traded
        for o in snap.orders:
            young = o.ts_ms is not None and now - o.ts_ms < cfg.sync.grace_secs * 1000
            pid = owner_of(o.client_id)
            if pid is not None:
                row = by_pid.get(pid)
                if row is not None and not references(row).isdisjoint((o.order_id, o.client_id)):
                    continue
                if young:
                    continue
                if row is not None and pid in alive:
                    strays.setdefault(pid, []).append(o.order_id)
                    f["strays"].append({"order_id": o.order_id, "owner": pid})
                else:
                    zombies.append((o, "ours, and its owner is gone"))
                continue
            if o.symbol not in traded and not cfg.zombies.include_foreign:
                continue  # someone else's business
            if (why := zombie_reason(o, by_key, held, cfg.zombies.flip_ratio)) is not None:
                zombies.append((o, why))
        f["zombies"] = [{"order_id": o.order_id, "symbol": o.symbol, "client_id": o.client_id, "why": why} for o, why in zombies]
        self._tell_owners(snap, by_key, owners, alive, strays)
        self._findings = f
        if zombies and not dry:
            self._cancels = zombies[: cfg.zombies.max_cancels_per_run]
            return self._next_cancel()
        self._finish(True, f)

    def _tell_owners(self, snap: Snapshot, by_key: dict, owners: dict, alive: set[str], strays: dict[str, list[str]]) -> None:
        for key, row in owners.items():
            pid = row.position_id
            if pid not in alive:
                continue
            pos = by_key.get(key)
            mismatch = pos is None or row.qty != pos.qty
            if mismatch or pid in strays:
                self.ctx.directory.tell(position_actor_name(row.symbol, pid), ExchangeView(position=pos, stray_orders=tuple(strays.get(pid, ())), read_ms=snap.read_ms))

    def _adopt(self, pos: PositionReport, now: int) -> None:
        key = (pos.symbol, pos.side)
        if self.ctx.config.exchange.read_only:
            return  # read-only: reported in the findings (and by the guard), never acted on
        if not self.ctx.config.sync.adopt_untracked or now - self._adopting.get(key, -10**12) < self.ctx.config.sync.grace_secs * 1000:
            return
        self._adopting[key] = now
        pid = new_position_id()
        req = OpenRequest(position_id=pid, exchange=self.venue.name, symbol=pos.symbol, side=pos.side, quote_amount=Decimal(0), leverage=0, correlation_id=f"adopt-{pid}", adopt=pos)
        self.emit("sync.untracked_adopted", {"position_id": pid, "side": pos.side, "qty": pos.qty, "entry_price": pos.entry_price}, severity=Severity.WARNING, symbol=pos.symbol, exchange=self.venue.name, position_id=pid)
        self.ctx.supervisor.tell(StartChild(spec=self.position_spec(req)))

    def _next_cancel(self) -> None:
        if not self._cancels:
            return self._finish(True, self._findings)
        order, _why = self._cancels[0]
        ctx = {"actor": self.name}
        if order.attached:  # a position-attached TP/SL (Bybit): cleared through trading-stop, not cancelled
            return self.io_call("cancel", self.venue.clear_attached(order.symbol, order.position_side, ctx=ctx))
        self.io_call("cancel", self.venue.cancel(order.symbol, order.order_id, ctx=ctx))

    def _finish(self, ok: bool, findings: dict[str, Any]) -> None:
        findings = {**findings, "ok": ok, "duration_ms": round((time.perf_counter() - getattr(self, "_started", time.perf_counter())) * 1000, 1)}
        problems = sum(len(findings.get(k, ())) for k in ("untracked", "phantoms", "mismatches", "strays", "zombies"))
        self.emit("sync.reconciled" if ok else "sync.failed", findings, severity=Severity.INFO if ok and not problems else Severity.WARNING if ok else Severity.ERROR, exchange=self.venue.name)
        waiting, self._waiting = self._waiting, []
        snap = self.last_snapshot if ok else None
        report = ReconcileFinished(ok=ok, findings=findings, snapshot=snap)
        self.ctx.supervisor.tell(report)  # the intake gate
        self.ctx.directory.tell("guard", report)  # the guard checks every snapshot
        for w in waiting:
            if w.request is not None:  # a user asked (ctl sync / zombies): the supervisor answers
                self.ctx.supervisor.tell(msgspec.structs.replace(report, request=w.request))
            if w.reply_to is not None and w.reply_to is not self.ctx.directory.lookup("guard"):
                _reply(w.reply_to, report)
        self.finish_drain_if_idle()
