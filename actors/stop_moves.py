"""Stop moves inside the position actor: trailing decisions and zero-gap replacement.

Mixed into :class:`~actors.position.PositionActor`, so every rule that moves a
stop (trailing, breakeven, TP1 -> breakeven, a resize) runs in the one actor
that owns the stop, one message at a time: they cannot fight.

A move never leaves the position without a stop: the new stop is placed and
confirmed first, then the old one is cancelled, and the cancel is verified
(unknown order = gone; FILLED = the old stop closed the position while we were
moving, so the new one is cancelled instead). If the new stop cannot be
placed the old one simply stays, and the move is retried by a scheduled
message; after ``trailing.max_move_attempts`` failures in a row moves pause
for ``trailing.disable_secs`` with a critical event. "Would trigger
immediately" means the price is already through the wanted stop: close at
market instead.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from actors.position_state import P
from actors.trailing import TrailingParams, TrailState, better, evaluate
from adapters.errors import Outcome, VenueError
from adapters.venue import OrderReport, OrderStatus
from core.events import Severity


class LooseningStop(RuntimeError):
    """A code path tried to move a stop away from the market: a bug, never sent."""


def trailing_params(cfg: Any) -> TrailingParams:
    return TrailingParams(**{f: getattr(cfg, f) for f in TrailingParams.__struct_fields__})


class StopMoves:
    """Expects the PositionActor's ``state``, ``record``, ``_io``, ``_retry``, ``venue``."""

    _trail: TrailState | None = None
    _params: tuple[Any, TrailingParams] | None = None  # (the config they came from, the params)
    _trail_saved_ms: int = 0
    _wanted_move: tuple[Decimal, Decimal, str] | None = None

    # ---------------------------------------------------------- trailing
    def trail_state(self) -> TrailState:
        if self._trail is None:
            s = self.state
            self._trail = TrailState(active=s.trail_active, best=s.trail_best, activated_ms=s.trail_activated_ms, breakeven_reached=s.breakeven_reached)
        return self._trail

    def consider_trailing(self, mark: Decimal) -> None:
        """Feed a mark price to the trailing rules; start a move if they want one."""
        s, cfg, now = self.state, self.ctx.config.trailing, self.ctx.clock.now_ms()
        if not cfg.enabled or s.stop_price is None or s.entry_price is None or self._moves_paused(now):
            return
        if self._params is None or self._params[0] is not cfg:  # rebuilt only after a config reload
            self._params = (cfg, trailing_params(cfg))
        old = self.trail_state()
        new, decision = evaluate(
            self._params[1], side=s.side, entry=s.entry_price, opened_ms=s.opened_ts_ms or now, stop=s.stop_price,
            last_move_ms=s.last_move_ms, state=old, mark=mark, now_ms=now, tick=self.venue.market(s.symbol).tick_size,
        )
        self._trail = new
        if new.active and not old.active:
            self.record("position.trailing_activated", {"best": new.best, "mark": mark, "entry": s.entry_price})
            self._trail_saved_ms = now
        elif (new.best != s.trail_best or new.breakeven_reached != s.breakeven_reached) and now - self._trail_saved_ms >= cfg.best_persist_interval_secs * 1000:
            self.record("position.trail_best", {"best": new.best, "breakeven_reached": new.breakeven_reached})
            self._trail_saved_ms = now
        if decision is not None:
            self.move_stop(decision.price, s.qty, decision.reason, emergency=decision.emergency)

    def _moves_paused(self, now: int) -> bool:
        until = self.state.moves_disabled_until_ms
        return until is not None and now < until

    # -------------------------------------------------------------- move
    def move_stop(self, price: Decimal, qty: Decimal, reason: str, *, emergency: bool = False) -> None:
        """Replace the live stop by one at ``price`` for ``qty`` (never looser)."""
        s = self.state
        if s.state is not P.PROTECTED or s.stop_order_id is None:
            raise RuntimeError(f"{self.pid}: cannot move a stop in state {s.state.value}")
        if better(s.side, s.stop_price, price) or (price == s.stop_price and qty == (s.stop_qty or s.qty)):
            raise LooseningStop(f"{self.pid}: stop {s.stop_price} -> {price} ({reason}) would loosen it or change nothing")
        self._wanted_move = (price, qty, reason)
        cid, seq = self._client_id("s")
        self.record("position.stop_move_sent", {"client_id": cid, "price": price, "qty": qty, "reason": reason, "old_order_id": s.stop_order_id, "old_price": s.stop_price, "emergency": emergency, "seq": seq}, durable=True)
        self._io("move_place", self.venue.place_stop(s.symbol, s.closing_side, qty, price, cid, ctx=self._ctx()))

    def _after_move_place(self, order: OrderReport | None, error: VenueError | None) -> None:
        s = self.state
        if error is None and order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
            self.record("position.stop_move_placed", {"order_id": order.order_id})
            return self._io("move_cancel_old", self.venue.cancel(s.symbol, s.stop_order_id, ctx=self._ctx()))
        if error is not None and error.outcome is Outcome.WOULD_TRIGGER:
            self.record("position.stop_move_failed", {"reason": str(error), "outcome": error.outcome.value}, severity=Severity.WARNING)
            self._wanted_move = None
            return self._close("price already through the new stop")
        reason = str(error) if error else f"new stop {order.status.value if order else 'not found'}"
        if error is not None and error.outcome is Outcome.INSUFFICIENT_FUNDS:
            reason = f"insufficient balance while the old stop still reserves the quantity; waiting ({error})"
        self.record("position.stop_move_failed", {"reason": reason, "outcome": error.outcome.value if error else "not_live", "attempt": s.move_attempts + 1}, severity=Severity.WARNING)
        if error is not None and error.outcome is Outcome.REJECTED:
            # A refused reduce-only stop often means the position is gone: the old
            # stop may have fired meanwhile. Ask before trying again.
            self._io("check_stop", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))
        if self.state.move_attempts >= self.ctx.config.trailing.max_move_attempts:
            until = self.ctx.clock.now_ms() + self.ctx.config.trailing.disable_secs * 1000
            self.record("position.moves_disabled", {"until_ms": until, "attempts": self.state.move_attempts, "last_error": reason}, severity=Severity.CRITICAL)
            self._wanted_move = None
            return
        self._retry("move", self.cfg.retry_delay_ms * 2 ** min(self.state.move_attempts, 6))

    def retry_move(self) -> None:
        """A scheduled retry: try the wanted move again if it is still an improvement."""
        s = self.state
        if s.state is not P.PROTECTED or self._moves_paused(self.ctx.clock.now_ms()) or self._wanted_move is None:
            return
        price, qty, reason = self._wanted_move
        if better(s.side, price, s.stop_price) or qty != s.qty:
            self.move_stop(price, qty, reason)

    def _after_move_cancel_old(self, order: OrderReport | None, error: VenueError | None) -> None:
        s = self.state
        if error is not None:  # both stops live meanwhile: bounded by the retries
            self.emit("position.stop_cancel_retry", {"order_id": s.stop_order_id, "error": str(error)}, severity=Severity.WARNING, position_id=self.pid, symbol=s.symbol)
            return self._retry("move_cancel", self.cfg.retry_delay_ms)
        if order is not None and order.status is not OrderStatus.FILLED:
            return self._finish_move()
        self._io("move_check_old", self.venue.fetch_order(s.symbol, order_id=s.stop_order_id))

    def _after_move_check_old(self, order: OrderReport | None, error: VenueError | None) -> None:
        """The venue did not cancel the old stop: is it gone, live, or did it fire?"""
        s = self.state
        if error is not None or (order is not None and order.status is OrderStatus.OPEN):
            return self._retry("move_cancel", self.cfg.retry_delay_ms)
        if order is not None and order.status is OrderStatus.FILLED:
            self._wanted_move = None
            return self._record_exit("position.stop_filled", order, "stop filled", leftovers=[s.move_order_id])
        self._finish_move()  # unknown order, cancelled, expired: gone

    def _finish_move(self) -> None:
        s = self.state
        best = self.trail_state().best
        self.record(
            "position.stop_moved",
            {"order_id": s.move_order_id, "client_id": s.move_client_id, "price": s.move_price, "qty": s.move_qty, "reason": s.move_reason, "old_order_id": s.stop_order_id, "old_price": s.stop_price, "best": best},
        )
        self._wanted_move = None
        if best is not None:
            self._trail = msgspec.structs.replace(self.trail_state(), best=best)

    def resume_move(self) -> None:
        """After a restart with a move in flight: finish it from what the exchange says."""
        s = self.state
        if s.move_order_id is not None:
            return self._io("move_cancel_old", self.venue.cancel(s.symbol, s.stop_order_id, ctx=self._ctx()))
        self._io("move_lookup", self.venue.fetch_order(s.symbol, client_id=s.move_client_id))

    def _after_move_lookup(self, order: OrderReport | None, error: VenueError | None) -> None:
        if error is not None:
            return self._retry("resume", self.cfg.retry_delay_ms)
        if order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
            self.record("position.stop_move_placed", {"order_id": order.order_id})
            return self._io("move_cancel_old", self.venue.cancel(self.state.symbol, self.state.stop_order_id, ctx=self._ctx()))
        if order is None and self._retries.get("resume", 0) < self.cfg.entry_lookups:
            return self._retry("resume")  # a request of the previous incarnation may still land
        self.record("position.stop_move_failed", {"reason": "interrupted by a restart before the new stop was live", "outcome": "not_live", "attempt": self.state.move_attempts + 1}, severity=Severity.WARNING)
