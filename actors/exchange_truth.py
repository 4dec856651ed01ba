"""The owner's side of reconciliation: the exchange is the truth, the owner acts on it.

Mixed into :class:`~actors.position.PositionActor`. The sync actor only
*reports* (``ExchangeView``); the owner verifies with a fresh read of its own
before acting, because a snapshot taken a moment ago can be stale:

* flat on the exchange -> was it our stop? (filled -> recorded with its fill
  price) otherwise recorded as closed outside the bot; then whatever of ours
  is still live is cancelled and the actor stops;
* another quantity -> recorded (``qty_corrected``) and the stop re-sized by
  the same zero-gap move as any other;
* stray orders carrying our client id that we no longer reference (a left-
  over of an interrupted step) -> cancelled by us, their owner.

Adoption (a position on the exchange that no actor owned) starts here too:
record it, then protect it at once, by the guard's rule: a stop that would
trigger immediately goes 0.5 % beyond the mark instead; beyond the emergency
level the position is closed.
"""

from __future__ import annotations

from decimal import Decimal

from actors.messages import ExchangeView
from actors.position_state import P
from actors.trailing import better
from adapters.errors import VenueError
from adapters.venue import OrderReport, OrderStatus, PositionReport
from core.events import Severity
from supervision.actor import handles

_HUNDRED = Decimal(100)


class ExchangeTruth:
    """Expects the PositionActor's ``state``, ``record``, ``_io``, ``venue``, ``_place_stop``."""

    _stray: list[str]

    # ------------------------------------------------------------- sync
    @handles(ExchangeView)
    def _on_exchange_view(self, msg: ExchangeView) -> None:
        s = self.state
        if s is None or self._op is not None or s.state not in (P.PROTECTED, P.PENDING_STOP) or s.move_client_id is not None:
            return  # busy or mid-step: the next reconcile will tell us again
        referenced = {s.stop_order_id, s.move_order_id, *(tp.get("order_id") for tp in s.tps)}
        self._stray = [oid for oid in msg.stray_orders if oid not in referenced]
        pos: PositionReport | None = msg.position
        if pos is None or pos.qty != s.qty:
            return self._io("verify_view", self.venue.position(s.symbol, s.side))
        self._cancel_strays()

    def _after_verify_view(self, pos: PositionReport | None, error: VenueError | None) -> None:
        s = self.state
        if error is not None:
            return
        if pos is None:
            self._pending_fill = None
            self._flat_reason = "closed outside the bot (found flat by reconciliation)"
            if s.stop_order_id:
                return self._io("exit_check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))
            return self.closed_elsewhere(self._flat_reason)
        if pos.qty < s.qty and s.state is P.PROTECTED and any(not tp["filled"] for tp in s.tps):
            self._view_qty = pos.qty  # smaller: our own take-profits may explain it; they are recorded first
            return self._io("view_tps", self.fetch_open_tps())
        self._correct_qty(pos.qty)

    def _after_view_tps(self, found: list[tuple[int, OrderReport | None]] | None, error: VenueError | None) -> None:
        if error is not None:
            return  # the next report asks again
        for level, order in found or ():
            if order is not None and order.status is OrderStatus.FILLED:
                self.record_tp_fill(level, order)
        if self.state.qty <= 0:
            return self._record_exit("position.closed", None, "take-profits filled")
        self._correct_qty(self._view_qty)

    def _correct_qty(self, qty: Decimal) -> None:
        s = self.state
        if qty != s.qty and s.state is P.PROTECTED:
            self.record("position.qty_corrected", {"qty": qty, "was": s.qty, "source": "exchange"}, severity=Severity.WARNING)
        if self.apply_adjustment():  # a resize, or the breakeven after TP1
            return
        self._cancel_strays()

    def _cancel_strays(self) -> None:
        if self._stray:
            self._io("cancel_stray", self.venue.cancel(self.state.symbol, self._stray[0], ctx=self._ctx()))

    def _after_cancel_stray(self, order: OrderReport | None, error: VenueError | None) -> None:
        order_id = self._stray.pop(0)
        self.emit("position.stray_order_cancelled" if error is None else "position.stray_order_left", {"order_id": order_id, "error": str(error) if error else None}, severity=Severity.WARNING, position_id=self.pid, symbol=self.state.symbol)
        self._cancel_strays()

    # ---------------------------------------------------------- adoption
    def begin_adoption(self, found: PositionReport) -> None:
        self.record("position.open_requested", {"side": found.side, "adopted": True, "quote_amount": None, "leverage": None}, durable=True)
        self.record("position.adopted", {"qty": found.qty, "entry_price": found.entry_price, "side": found.side}, severity=Severity.WARNING)
        self._io("adopt_mark", self.venue.mark_price(self.state.symbol))

    def _after_adopt_mark(self, mark: Decimal | None, error: VenueError | None) -> None:
        if error is None:
            self.last_mark = mark
        s = self.state
        if self.last_mark is not None and _loss_percent(s.side, s.entry_price, self.last_mark) >= self.ctx.config.guard.emergency_loss_percent:
            return self._close(f"emergency: adopted {_loss_percent(s.side, s.entry_price, self.last_mark):.2f} % in loss, beyond the emergency level")
        self._place_stop("initial")

    def protective_stop_price(self, wanted: Decimal) -> Decimal:
        """``wanted``, unless the mark is already through it: then 0.5 % beyond the mark."""
        s, mark = self.state, self.last_mark
        if mark is None or better(s.side, mark, wanted):
            return wanted
        offset = self.ctx.config.guard.restore_offset_percent / _HUNDRED
        return mark * (1 - offset) if s.side == "long" else mark * (1 + offset)


def _loss_percent(side: str, entry: Decimal, mark: Decimal) -> Decimal:
    move = (mark - entry) / entry * _HUNDRED
    return -move if side == "long" else move
