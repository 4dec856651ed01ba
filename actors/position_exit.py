"""How a position ends, inside the position actor: close, verify, record, clean up.

Mixed into :class:`~actors.position.PositionActor`. A close is a reduce-only
market order; the position is then verified flat on the exchange *before*
its stop is cancelled, so it is never naked while still open. A position
found flat without our close having filled asks its own stop what happened
(filled -> recorded with the stop's fill). After the exit is recorded, every
order of ours that is still live (stop, a move's new stop, open take-profits)
is cancelled, and the actor stops. A failed close that was asked for is tried
again (at most 3 times), the stop staying live meanwhile.
"""

from __future__ import annotations

from decimal import Decimal

from actors.messages import PositionClosed, PositionOpenFailed
from actors.position_state import P, realized_pnl
from adapters.errors import Outcome, VenueError
from adapters.venue import FillReport, OrderReport, OrderStatus, PositionReport
from core.events import Severity
from core.messages import ClosePosition
from supervision.actor import handles


class Exits:
    """Expects the PositionActor's ``state``, ``record``, ``_io``, ``venue``, ``_place_stop``."""

    @handles(ClosePosition)
    def _on_close(self, msg: ClosePosition) -> None:
        s = self.state
        if s.state is P.PROTECTED and self._op is None:
            return self._close(msg.reason)
        if not s.state.is_open or s.state is P.CLOSING:
            return
        self.record("position.close_requested", {"reason": msg.reason})

    def _close(self, reason: str) -> None:
        s = self.state
        cid, seq = self._client_id("c")
        self.record("position.close_sent", {"client_id": cid, "reason": reason, "qty": s.qty, "seq": seq}, durable=True)
        self._io("close", self.venue.close_market(s.symbol, s.closing_side, s.qty, cid, ctx=self._ctx()))

    def _after_close(self, order: OrderReport | None, error: VenueError | None) -> None:
        self._pending_fill = order if error is None else None
        if error is not None:
            self.log.warning("close order failed: {}; checking whether the position is still open", error)
        self._io("verify_flat", self.venue.position(self.state.symbol, self.state.side))

    def _after_verify_flat(self, pos: PositionReport | None, error: VenueError | None) -> None:
        s = self.state
        if error is not None:
            return self._retry("verify_flat")
        if pos is None:
            fill = self._pending_fill
            self._pending_fill = None
            if (fill is None or fill.filled <= 0) and s.stop_order_id:
                return self._io("exit_check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))
            if s.close_reason == "rollback":
                self._record_exit("position.rolled_back", fill, "rollback")
                return
            return self._record_exit("position.closed", fill, s.close_reason or "closed")
        if s.close_reason == "rollback":
            self.record("position.rollback_failed", {"remaining": pos.qty}, severity=Severity.CRITICAL)
            return self._place_stop("emergency")
        reason = s.close_reason or "close"
        self.record("position.close_failed", {"remaining": pos.qty}, severity=Severity.ERROR)
        self._close_attempts = getattr(self, "_close_attempts", 0) + 1
        if self._close_attempts < 3:  # a close that was asked for is tried again (the stop stays live meanwhile)
            self.record("position.close_requested", {"reason": reason})
        else:
            self.emit("position.close_gave_up", {"reason": reason, "attempts": self._close_attempts}, severity=Severity.CRITICAL, position_id=self.pid, symbol=s.symbol)
            self._close_attempts = 0

    def _after_exit_check_stop(self, order: OrderReport | None, error: VenueError | None) -> None:
        """Flat, but our close did not fill: did our stop close it?"""
        s = self.state
        if order is not None and order.status is OrderStatus.FILLED:
            return self._record_exit("position.stop_filled", order, "stop filled")
        if s.close_reason == "rollback":
            return self._record_exit("position.rolled_back", None, "rollback")
        self.closed_elsewhere(self._flat_reason or f"{s.close_reason or 'closed'} (found flat)")

    def closed_elsewhere(self, reason: str) -> None:
        """Flat, and not by an order of ours: the exchange's own fills say at what price, and
        whether it was a liquidation (Bybit marks those; Binance's trade list does not)."""
        s = self.state
        self._outside_reason = reason
        self._io("outside_fills", self.venue.fills(s.symbol, since_ms=s.opened_ts_ms))

    def _after_outside_fills(self, fills: list[FillReport] | None, error: VenueError | None) -> None:
        s, reason = self.state, self._outside_reason
        closing = [f for f in fills or () if f.side == s.closing_side and f.kind in ("trade", "liquidation", "adl") and f.order_id not in self._our_order_ids()]
        if error is not None or not closing:
            return self._record_exit("position.closed", None, reason, severity=Severity.WARNING)  # no price to be had: recorded without one
        qty = sum((f.qty for f in closing), Decimal(0))
        average = sum((f.price * f.qty for f in closing), Decimal(0)) / qty
        self._outside_fill = OrderReport(order_id=closing[-1].order_id or closing[-1].trade_id, client_id=None, symbol=s.symbol, side=s.closing_side, status=OrderStatus.FILLED, amount=qty, filled=qty, average=average)
        kinds = {f.kind for f in closing}
        if kinds <= {"trade"} and closing[-1].order_id:  # the fills do not say who closed it: the order does
            return self._io("outside_order", self.venue.fetch_order(s.symbol, order_id=closing[-1].order_id))
        self._record_outside(kinds)

    def _after_outside_order(self, order: OrderReport | None, error: VenueError | None) -> None:
        kind = self.venue.style.forced_close_kind(order.client_id) if order is not None else None
        self._record_outside({kind} if kind else set())

    def _record_outside(self, kinds: set[str]) -> None:
        reason = "liquidated" if "liquidation" in kinds else "auto-deleveraged" if "adl" in kinds else self._outside_reason
        self._record_exit("position.closed", self._outside_fill, reason, severity=Severity.CRITICAL if kinds & {"liquidation", "adl"} else Severity.WARNING)

    def _our_order_ids(self) -> set[str | None]:
        s = self.state
        return {s.entry_order_id, s.stop_order_id, s.move_order_id, *(tp.get("order_id") for tp in s.tps)}

    def _record_exit(self, type_: str, fill: OrderReport | None, reason: str, leftovers: list[str | None] | None = None, severity: Severity = Severity.INFO) -> None:
        """Record the end of the position, then cancel whatever of ours is still live."""
        s = self.state
        price = fill.average if fill is not None else None
        pnl = realized_pnl(s.side, s.entry_price, price, s.qty) if price is not None and s.entry_price is not None else None
        if pnl is not None and s.realized_pnl:  # partial exits (take-profits) before this one
            pnl += s.realized_pnl
        self.record(type_, {"reason": reason, "exit_price": price, "pnl": pnl, "order_id": fill.order_id if fill else None}, severity=severity)
        if type_ == "position.rolled_back":
            self._tell_requester(PositionOpenFailed(position_id=self.pid, symbol=s.symbol, reason="stop could not be placed; position closed again", outcome=Outcome.REJECTED.value))
        else:
            self._tell_requester(PositionClosed(position_id=self.pid, symbol=s.symbol, reason=reason, exit_price=price, pnl=pnl))
        filled_id = fill.order_id if fill is not None else None
        ids = [s.stop_order_id, s.move_order_id, *[tp.get("order_id") for tp in s.tps if not tp.get("filled")], *(leftovers or [])]
        self._leftovers = [i for i in dict.fromkeys(ids) if i and i != filled_id]
        self._cancel_next_leftover()

    def _cancel_next_leftover(self) -> None:
        if not self._leftovers:
            return self.stop()
        self._io("cancel_leftover", self.venue.cancel(self.state.symbol, self._leftovers[0], ctx=self._ctx()))

    def _after_cancel_leftover(self, order: OrderReport | None, error: VenueError | None) -> None:
        order_id = self._leftovers.pop(0)
        if error is not None:
            self.emit("position.order_left_behind", {"order_id": order_id, "error": str(error)}, severity=Severity.WARNING, position_id=self.pid, symbol=self.state.symbol)
        else:
            self.record("position.stop_cancelled", {"order_id": order_id})
        self._cancel_next_leftover()
