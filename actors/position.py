"""The position actor: one per position, the only code that touches its orders.

Atomic open: size from the mark price -> market entry (client order id,
recorded before it is sent) -> a stop for the *filled* quantity at once, up
to ``stop_attempts`` tries -> if it cannot be protected, close it again
(reduce-only market, verified flat); if even that fails, a wide emergency
stop and a critical event. Every step is an event folded by
:mod:`actors.position_state`, so a crash at any step is resumed from the
store, and the exchange is asked before anything is repeated.

One exchange operation is in flight at a time; its result comes back as an
``IOCompleted`` tagged with an operation number, so a late answer to an old
operation is never mistaken for the current one. Retries are scheduled
messages; nothing sleeps here.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Coroutine
from decimal import Decimal
from typing import Any

import msgspec
import pykka

from actors.exchange_truth import ExchangeTruth
from actors.messages import EnsureProtected, MarkPrice, OpenRequest, PositionOpened, PositionOpenFailed, ProtectionReport, RetryStep, SubscribeMarks, UnsubscribeMarks
from actors.position_exit import Exits
from actors.position_state import P, PositionState, apply, rebuild
from actors.stop_moves import StopMoves
from actors.take_profits import TakeProfits
from adapters.errors import Outcome, VenueError, classify
from adapters.venue import OrderReport, OrderStatus, PositionReport, Venue
from core.events import Event, Severity
from core.messages import IOCompleted, Tick
from supervision.actor import ActorContext, ManagedActor, handles

#: Crash-test hook: "before:<event type>" or "after:<event type>" makes the
#: process SIGKILL itself at that exact step of a position's life (the tests
#: use it to prove recovery from a kill at every step; unset in normal runs).
_CRASH_POINT = os.environ.get("TRADEBOT_CRASH_POINT", "")


def _crash_if(when: str, type_: str) -> None:
    if _CRASH_POINT and _CRASH_POINT == f"{when}:{type_}":
        os.kill(os.getpid(), signal.SIGKILL)


def position_actor_name(symbol: str, position_id: str) -> str:
    return f"position:{symbol}:{position_id}"


class PositionActor(Exits, ExchangeTruth, TakeProfits, StopMoves, ManagedActor):
    def __init__(self, *, name: str, ctx: ActorContext, venue: Venue, position_id: str, request: OpenRequest | None = None, price_feed: Any = None, report_to: Any = None) -> None:
        super().__init__(name=name, ctx=ctx)
        self.report_to = report_to  # who hears about a recovered position (no requester after a restart)
        self.venue = venue
        self.pid = position_id
        self.request = request
        self.price_feed = price_feed
        self.state: PositionState | None = None
        self.last_mark: Decimal | None = None
        self._op: tuple[int, str] | None = None  # (number, purpose) of the operation in flight
        self._op_seq = 0
        self._pending_fill: OrderReport | None = None
        self._stop_fill: OrderReport | None = None
        self._outside_reason = ""  # a close outside the bot: why (until its fills say more) ...
        self._outside_fill: OrderReport | None = None  # ... and at what price
        self._retries: dict[str, int] = {}
        self._leftovers: list[str] = []
        self._stray: list[str] = []
        self._flat_reason: str | None = None
        self._ensure_waiters: list[Any] = []
        self._ensure_check_due = False
        self._verify_round = 0

    @property
    def cfg(self):
        return self.ctx.config.position

    # ------------------------------------------------------------- start
    def started(self) -> None:
        history = self.load_events(position_id=self.pid)
        recovered = rebuild(history)  # None while the history holds no lifecycle event yet
        if recovered is not None:
            self.state = recovered
            self.log.info("recovered from {} events in state {}", len(history), self.state.state.value)
            self._resume()
        elif self.request is not None and self.request.adopt is not None:
            r = self.request
            self.state = PositionState(position_id=self.pid, exchange=r.exchange, symbol=r.symbol, side=r.adopt.side)
            self.begin_adoption(r.adopt)
        elif self.request is not None:
            r = self.request
            self.state = PositionState(position_id=self.pid, exchange=r.exchange, symbol=r.symbol, side=r.side)
            self.record("position.open_requested", {"side": r.side, "quote_amount": r.quote_amount, "leverage": r.leverage}, durable=True)
            self._io("size", self.venue.mark_price(r.symbol))
        else:
            raise RuntimeError(f"position {self.pid}: no events and nothing to open")
        self.every(self.cfg.verify_interval_secs * 1000, "verify")

    def _resume(self) -> None:
        s = self.state
        assert s is not None
        if not s.state.is_open:
            return self.stop()
        if s.state is P.PENDING_ENTRY:  # the entry was never sent (its write-ahead record is missing)
            return self._fail("interrupted before the entry was sent", Outcome.REJECTED)
        if s.state is P.ENTRY_PLACED:
            return self._io("entry", self.venue.fetch_order(s.symbol, client_id=s.entry_client_id))
        if s.state is P.PENDING_STOP:
            if s.pending_stop_client_id:
                return self._io("stop", self._lookup_stop(s.pending_stop_client_id))
            return self._place_stop(s.stop_kind or "initial")
        if s.state is P.PROTECTED:
            self._subscribe()
            if s.move_client_id is not None:
                return self.resume_move()
            if self.ctx.config.take_profit.enabled and not s.tps and s.stop_kind != "emergency":
                return self.start_take_profits()  # looked up by client id first: never doubled
            return self._io("check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))
        if s.state is P.CLOSING:
            return self._io("verify_flat", self.venue.position(s.symbol, s.side))

    # --------------------------------------------------------- recording
    def record(self, type_: str, data: dict[str, Any], *, durable: bool = False, severity: Severity = Severity.INFO) -> None:
        """Fold an event into the state and store it (with the new projection)."""
        s = self.state
        assert s is not None
        ev = Event(type=type_, ts_ms=self.ctx.clock.now_ms(), actor=self.name, severity=severity, position_id=self.pid, correlation_id=s.correlation_id or (self.request.correlation_id if self.request else None), symbol=s.symbol, exchange=s.exchange, data=data)
        new = apply(s, ev)
        ev = msgspec.structs.replace(ev, projection=new.projection())
        _crash_if("before", type_)
        if durable:
            self.ctx.store.append_durable(ev).result(timeout=30)
        else:
            self.ctx.store.append(ev)
        if _CRASH_POINT:
            self.ctx.store.flush()
            _crash_if("after", type_)
        self.state = new
        self.log.info("{} -> {} {}", type_, new.state.value, {k: str(v) for k, v in data.items()})

    def _client_id(self, kind: str) -> tuple[str, int]:
        seq = self.state.seq + 1
        return f"tb-{self.pid}-{kind}{seq}", seq

    # --------------------------------------------------------------- I/O
    def _io(self, purpose: str, coro: Coroutine[Any, Any, Any]) -> None:
        self._op_seq += 1
        self._op = (self._op_seq, purpose)
        self.io_call(purpose, coro, correlation_id=str(self._op_seq))

    @handles(IOCompleted)
    def _on_io(self, msg: IOCompleted) -> None:
        if self._op is None or msg.correlation_id != str(self._op[0]):
            self.log.debug("ignored a late result of {}", msg.purpose)
            return
        self._op = None
        handler = getattr(self, f"_after_{msg.purpose}")
        error = classify(msg.exception) if msg.exception is not None else None
        handler(None if error else msg.result, error)
        self._continue()
        self.finish_drain_if_idle()

    def _continue(self) -> None:
        """Between operations: a close asked for while busy, a guard's check, its answer."""
        s = self.state
        if self._op is not None or s is None:
            return
        if s.state is P.PROTECTED and s.close_requested and s.move_client_id is None:
            return self._close(s.close_requested)
        if self._ensure_check_due and s.state is P.PROTECTED:
            self._ensure_check_due = False
            return self._io("check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))
        if self._ensure_waiters and not self._ensure_check_due and (s.state is P.PROTECTED or not s.state.is_open):
            report = ProtectionReport(position_id=self.pid, symbol=s.symbol, state=s.state.value, protected=s.state is P.PROTECTED and s.stop_order_id is not None, stop_order_id=s.stop_order_id, stop_price=s.stop_price)
            waiters, self._ensure_waiters = self._ensure_waiters, []
            for ref in waiters:
                try:
                    ref.tell(report)
                except pykka.ActorDeadError:
                    pass

    @handles(EnsureProtected)
    def _on_ensure(self, msg: EnsureProtected) -> None:
        """Verify with the exchange (never from memory), restore if needed, then answer."""
        if msg.reply_to is not None:
            self._ensure_waiters.append(msg.reply_to)
        self._ensure_check_due = self.state is not None and self.state.state is P.PROTECTED
        self._continue()

    def busy(self) -> bool:
        return self._op is not None or (self.state is not None and self.state.state in (P.PENDING_ENTRY, P.ENTRY_PLACED, P.PENDING_STOP, P.CLOSING))

    @handles(RetryStep)
    def _on_retry(self, msg: RetryStep) -> None:
        if self._op is not None:
            return self.after(self.cfg.retry_delay_ms, msg)
        s = self.state
        if msg.step == "resolve_entry" and s.state is P.ENTRY_PLACED:
            self._io("entry", self.venue.fetch_order(s.symbol, client_id=s.entry_client_id))
        elif msg.step == "stop" and s.state is P.PENDING_STOP:
            self._place_stop(s.stop_kind or "initial")
        elif msg.step == "verify_flat" and s.state is P.CLOSING:
            self._io("verify_flat", self.venue.position(s.symbol, s.side))
        elif msg.step == "verify" and s.state is P.PROTECTED:
            self._io("check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))
        elif msg.step == "move" and s.state is P.PROTECTED and s.move_client_id is None:
            if not self.apply_adjustment():
                self.retry_move()
        elif msg.step == "move_cancel" and s.state is P.PROTECTED and s.move_order_id is not None:
            self._io("move_cancel_old", self.venue.cancel(s.symbol, s.stop_order_id, ctx=self._ctx()))
        elif msg.step == "resume" and s.state is P.PROTECTED and s.move_client_id is not None:
            self.resume_move()

    def _retry(self, step: str, delay_ms: int | None = None) -> None:
        n = self._retries[step] = self._retries.get(step, 0) + 1
        self.after(delay_ms if delay_ms is not None else min(60_000, self.cfg.retry_delay_ms * 2 ** min(n, 7)), RetryStep(step=step, attempt=n))

    # -------------------------------------------------------------- entry
    def _after_size(self, mark: Decimal | None, error: VenueError | None) -> None:
        r = self.request
        if error is not None:
            return self._fail(f"no mark price to size the entry: {error}", error.outcome)
        m = self.venue.market(r.symbol)
        qty = m.round_qty(r.quote_amount * r.leverage / mark)
        if problem := m.check_order(qty, mark):
            return self._fail(f"size {qty} at {mark}: {problem}", Outcome.REJECTED)
        cid, seq = self._client_id("e")
        self.last_mark = mark
        self.record("position.entry_sent", {"client_id": cid, "qty": qty, "ref_price": mark, "seq": seq}, durable=True)
        self._io("entry", self.venue.open_market(r.symbol, self.state.entry_side, qty, cid, ref_price=mark, ctx=self._ctx()))
        self._entry_ref_price = mark

    def _after_entry(self, order: OrderReport | None, error: VenueError | None) -> None:
        if error is not None:
            if error.outcome in (Outcome.UNKNOWN, Outcome.RETRYABLE, Outcome.RATE_LIMITED):
                self.emit("position.entry_unresolved", {"error": str(error)}, severity=Severity.WARNING, position_id=self.pid, symbol=self.state.symbol)
                return self._retry("resolve_entry")
            return self._fail(str(error), error.outcome, error.skip_symbol_ms)
        if order is None:  # looked up by client id: the venue does not know it
            if self._retries.get("resolve_entry", 0) < self.cfg.entry_lookups:
                return self._retry("resolve_entry")
            return self._fail("entry never reached the exchange", Outcome.REJECTED)
        if order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
            return self._retry("resolve_entry", self.cfg.retry_delay_ms)
        if order.filled <= 0:
            return self._fail(f"entry {order.status.value} without a fill", Outcome.REJECTED)
        self.record("position.entry_filled", {"order_id": order.order_id, "qty": order.filled, "price": order.average or self._entry_ref_price, "status": order.status.value})
        self._place_stop("initial")

    def _fail(self, reason: str, outcome: Outcome, skip_ms: int = 0) -> None:
        self.record("position.entry_failed", {"reason": reason, "outcome": outcome.value}, severity=Severity.WARNING)
        self._tell_requester(PositionOpenFailed(position_id=self.pid, symbol=self.state.symbol, reason=reason, outcome=outcome.value, skip_symbol_ms=skip_ms))
        self.stop()

    # --------------------------------------------------------------- stop
    def _stop_price(self, kind: str) -> Decimal:
        s = self.state
        pct = (self.cfg.emergency_stop_percent if kind == "emergency" else self.cfg.initial_stop_percent) / Decimal(100)
        wanted = s.entry_price * (1 - pct) if s.side == "long" else s.entry_price * (1 + pct)
        return self.protective_stop_price(wanted) if kind == "initial" else wanted

    def _place_stop(self, kind: str) -> None:
        s = self.state
        cid, seq = self._client_id("s")
        price = self.venue.market(s.symbol).stop_price(self._stop_price(kind), closing_side=s.closing_side)
        self.record("position.stop_sent", {"client_id": cid, "price": price, "qty": s.qty, "kind": kind, "attempt": s.stop_attempts + 1, "seq": seq}, durable=True)
        self._stop_kind = kind
        self._sent_stop_price = price  # on the tick grid, as sent
        self._io("stop", self.venue.place_stop(s.symbol, s.closing_side, s.qty, price, cid, ctx=self._ctx()))

    async def _lookup_stop(self, client_id: str) -> OrderReport | None:
        return await self.venue.fetch_order(self.state.symbol, client_id=client_id)

    def _after_stop(self, order: OrderReport | None, error: VenueError | None) -> None:
        s = self.state
        kind = getattr(self, "_stop_kind", s.stop_kind or "initial")
        if error is None and order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
            self.record("position.stop_placed", {"order_id": order.order_id, "client_id": order.client_id or s.pending_stop_client_id, "price": order.trigger_price or getattr(self, "_sent_stop_price", None) or self.venue.market(s.symbol).stop_price(self._stop_price(kind), closing_side=s.closing_side), "kind": kind, "qty": order.amount or s.qty})
            return self._on_protected(kind)
        if error is None and order is not None and order.status is OrderStatus.FILLED:
            return self._record_exit("position.stop_filled", order, "stop filled")
        if error is not None and error.outcome is Outcome.WOULD_TRIGGER:
            self.record("position.stop_failed", {"attempt": s.stop_attempts, "reason": str(error)}, severity=Severity.WARNING)
            return self._close("price already through the stop")
        reason = str(error) if error else f"stop not on the exchange ({order.status.value if order else 'not found'})"
        self.record("position.stop_failed", {"attempt": s.stop_attempts, "reason": reason}, severity=Severity.WARNING)
        if s.stop_attempts < self.cfg.stop_attempts:
            return self._retry("stop", self.cfg.retry_delay_ms)
        if kind == "initial":
            return self._close("rollback")
        self.emit("position.unprotected", {"reason": reason, "attempts": s.stop_attempts}, severity=Severity.CRITICAL, position_id=self.pid, symbol=s.symbol)
        self._retry("stop")

    def _on_protected(self, kind: str) -> None:
        s = self.state
        if kind == "emergency":
            self.emit("position.emergency_stop", {"stop_price": s.stop_price}, severity=Severity.CRITICAL, position_id=self.pid, symbol=s.symbol)
        self._tell_requester(PositionOpened(position_id=self.pid, symbol=s.symbol, side=s.side, qty=s.qty, entry_price=s.entry_price, stop_price=s.stop_price, stop_order_id=s.stop_order_id, emergency_stop=kind == "emergency"))
        self._subscribe()
        if s.close_requested:
            return self._close(s.close_requested)
        self.start_take_profits()

    # ------------------------------------------------------------ prices
    @handles(MarkPrice)
    def _on_mark(self, msg: MarkPrice) -> None:
        self.last_mark = msg.price
        s = self.state
        if s.state is not P.PROTECTED or self._op is not None or s.stop_price is None:
            return  # one operation at a time; the next mark is considered afresh
        crossed = msg.price <= s.stop_price if s.side == "long" else msg.price >= s.stop_price
        if crossed:
            return self._io("check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))
        if (tp := self.tp_due(msg.price)) is not None:
            return self.check_tp(tp)
        if s.move_client_id is None and not s.close_requested and not self.apply_adjustment():
            self.consider_trailing(msg.price)

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        s = self.state
        if msg.name == "verify" and s is not None and s.state is P.PROTECTED and self._op is None:
            self._verify_round += 1
            open_tps = [tp for tp in s.tps if not tp["filled"]]
            if open_tps and self._verify_round % 2 == 0:  # every other check: the take-profits
                return self.check_tp(open_tps[0])
            if self.apply_adjustment():
                return
            self._io("check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))

    def _after_check_stop(self, order: OrderReport | None, error: VenueError | None) -> None:
        if error is not None:
            return  # checked again on the next tick
        if order is not None and order.status is OrderStatus.FILLED:
            # A fired stop is not yet a closed position (a Binance stop's market child can be
            # refused; a human may have added to the position): the position decides.
            self._stop_fill = order
            return self._io("stop_fill_position", self.venue.position(self.state.symbol, self.state.side))
        if order is None or order.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED):
            self._lost_stop_status = order.status.value if order else "not found"
            self._io("check_position", self.venue.position(self.state.symbol, self.state.side))

    def _after_stop_fill_position(self, pos: PositionReport | None, error: VenueError | None) -> None:
        s, fill = self.state, self._stop_fill
        if error is not None:
            return  # the next check asks again
        if pos is None:
            return self._record_exit("position.stop_filled", fill, "stop filled")
        if pos.qty != s.qty:
            self.record("position.qty_corrected", {"qty": pos.qty, "was": s.qty, "source": "exchange"}, severity=Severity.WARNING)
        self.record("position.stop_lost", {"order_id": s.stop_order_id, "status": f"filled, but {pos.qty} still open"}, severity=Severity.CRITICAL)
        self._place_stop("initial")

    def _after_check_position(self, pos: PositionReport | None, error: VenueError | None) -> None:
        """Our stop is gone: is the position gone too (closed elsewhere), or naked?"""
        s = self.state
        if error is not None:
            return self._retry("verify", self.cfg.retry_delay_ms)
        if pos is None:
            return self.closed_elsewhere("gone on the exchange (closed outside the bot)")
        self.record("position.stop_lost", {"order_id": s.stop_order_id, "status": self._lost_stop_status}, severity=Severity.ERROR)
        self._place_stop("initial")

    # ------------------------------------------------------------ helpers
    def _subscribe(self) -> None:
        if self.price_feed is not None:
            self.price_feed.tell(SubscribeMarks(symbol=self.state.symbol, subscriber=self.actor_ref, name=self.name))

    def stopping(self) -> None:
        if self.price_feed is not None and self.state is not None:
            try:
                self.price_feed.tell(UnsubscribeMarks(symbol=self.state.symbol, name=self.name))
            except pykka.ActorDeadError:
                pass

    def _tell_requester(self, msg: Any) -> None:
        ref = self.request.requested_by if self.request and self.request.requested_by is not None else self.report_to
        if ref is not None:
            try:
                ref.tell(msg)
            except pykka.ActorDeadError:
                self.log.warning("requester gone; {} not delivered", type(msg).__name__)

    def _ctx(self) -> dict[str, Any]:
        return {"actor": self.name, "position_id": self.pid, "symbol": self.state.symbol, "correlation_id": self.state.correlation_id}

