"""A position's lifecycle as data: states, a transition table, and a fold.

The position actor never mutates its state directly: it records an event,
and :func:`apply` folds that event into a new state. Rebuilding after a crash
is the same fold over the stored events (:func:`rebuild`). An event that the
table does not allow from the current state is a bug in our code
(:class:`InvalidTransition` is raised), never silently ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from core.events import Event


class PState(enum.Enum):
    PENDING_ENTRY = "pending_entry"  # recorded the intent, entry not sent yet
    ENTRY_PLACED = "entry_placed"  # entry sent (write-ahead), result not known
    PENDING_STOP = "pending_stop"  # position open, stop being placed
    PROTECTED = "protected"  # live stop on the exchange
    CLOSING = "closing"  # a close is being executed (user, rollback)
    CLOSED = "closed"
    FAILED = "failed"  # entry never opened a position
    ROLLED_BACK = "rolled_back"  # opened, could not be protected, closed again

    @property
    def is_open(self) -> bool:
        return self not in (PState.CLOSED, PState.FAILED, PState.ROLLED_BACK)


P = PState

#: (state, event type) -> next state. Comments mark the rows that are not obvious.
TRANSITIONS: dict[tuple[PState, str], PState] = {
    (P.PENDING_ENTRY, "position.entry_sent"): P.ENTRY_PLACED,
    (P.PENDING_ENTRY, "position.entry_failed"): P.FAILED,  # refused before sending (size, symbol)
    (P.ENTRY_PLACED, "position.entry_filled"): P.PENDING_STOP,
    (P.ENTRY_PLACED, "position.entry_failed"): P.FAILED,
    (P.PENDING_STOP, "position.stop_sent"): P.PENDING_STOP,
    (P.PENDING_STOP, "position.stop_failed"): P.PENDING_STOP,
    (P.PENDING_STOP, "position.stop_placed"): P.PROTECTED,
    (P.PENDING_STOP, "position.close_sent"): P.CLOSING,  # rollback, or price already through the stop
    (P.PENDING_STOP, "position.stop_filled"): P.CLOSED,  # an emergency stop filled before confirmation
    (P.PENDING_STOP, "position.closed"): P.CLOSED,  # found flat on the exchange while unprotected
    (P.PROTECTED, "position.close_sent"): P.CLOSING,
    (P.PROTECTED, "position.stop_filled"): P.CLOSED,
    (P.PROTECTED, "position.stop_lost"): P.PENDING_STOP,  # stop cancelled/expired on the venue: re-protect
    (P.PROTECTED, "position.closed"): P.CLOSED,  # closed elsewhere (by hand, liquidation)
    (P.CLOSING, "position.closed"): P.CLOSED,
    (P.CLOSING, "position.rolled_back"): P.ROLLED_BACK,
    (P.CLOSING, "position.stop_filled"): P.CLOSED,  # the stop won the race against our close
    (P.CLOSING, "position.close_failed"): P.PROTECTED,  # the stop is still live
    (P.CLOSING, "position.rollback_failed"): P.PENDING_STOP,  # no stop: emergency stop next
    # Zero-gap stop moves: the new stop is placed, then the old one cancelled.
    (P.PROTECTED, "position.stop_move_sent"): P.PROTECTED,
    (P.PROTECTED, "position.stop_move_placed"): P.PROTECTED,  # two stops live for one replacement step
    (P.PROTECTED, "position.stop_moved"): P.PROTECTED,
    (P.PROTECTED, "position.stop_move_failed"): P.PROTECTED,  # the old stop stays
    (P.PROTECTED, "position.moves_disabled"): P.PROTECTED,
    (P.PROTECTED, "position.tp_filled"): P.PROTECTED,
    (P.PROTECTED, "position.qty_corrected"): P.PROTECTED,  # the exchange says otherwise: it is the truth
    # Adoption: a position found on the exchange that no actor owned.
    (P.PENDING_ENTRY, "position.adopted"): P.PENDING_STOP,
}

#: Events that record facts without changing the lifecycle state.
NOTES = frozenset(
    {
        "position.open_requested",
        "position.stop_cancelled",
        "position.close_requested",
        "position.trailing_activated",
        "position.trail_best",
        "position.tp_placed",
    }
)


#: Every event type that is part of the lifecycle. Other events about a
#: position (exchange requests, alerts) are commentary and never folded.
LIFECYCLE = frozenset(t for _, t in TRANSITIONS) | NOTES


class InvalidTransition(RuntimeError):
    pass


class PositionState(msgspec.Struct, frozen=True, kw_only=True):
    position_id: str
    exchange: str
    symbol: str
    side: str  # long / short
    state: PState = P.PENDING_ENTRY
    correlation_id: str | None = None
    requested_qty: Decimal = Decimal(0)
    qty: Decimal = Decimal(0)
    entry_price: Decimal | None = None
    entry_client_id: str | None = None
    entry_order_id: str | None = None
    stop_price: Decimal | None = None
    stop_order_id: str | None = None
    stop_client_id: str | None = None
    stop_kind: str | None = None  # initial / emergency
    stop_attempts: int = 0
    pending_stop_client_id: str | None = None
    close_client_id: str | None = None
    close_reason: str | None = None
    close_requested: str | None = None  # a close asked for before the position was protected
    exit_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    opened_ts_ms: int | None = None
    closed_ts_ms: int | None = None
    seq: int = 0  # client order id counter
    adopted: bool = False
    # stop moves
    stop_reason: str | None = None  # initial / emergency / trailing / breakeven / ...
    stop_qty: Decimal | None = None  # what the live stop covers (less after a take-profit)
    last_move_ms: int | None = None
    move_client_id: str | None = None  # a move in flight: the new stop's client id
    move_order_id: str | None = None  # ... and its order id once it is live
    move_price: Decimal | None = None
    move_qty: Decimal | None = None
    move_reason: str | None = None
    move_attempts: int = 0
    moves_disabled_until_ms: int | None = None
    # trailing (the fold keeps what survives a restart)
    trail_active: bool = False
    trail_best: Decimal | None = None
    trail_activated_ms: int | None = None
    breakeven_reached: bool = False
    # take-profit ladder: level -> {"order_id", "client_id", "price", "qty", "filled"}
    tps: tuple[dict[str, Any], ...] = ()

    @property
    def closing_side(self) -> str:
        return "sell" if self.side == "long" else "buy"

    @property
    def entry_side(self) -> str:
        return "buy" if self.side == "long" else "sell"

    def projection(self) -> dict[str, Any]:
        out = msgspec.to_builtins(self, builtin_types=(Decimal,))
        out["state"] = self.state.value
        out["is_open"] = self.state.is_open
        out["quantity"] = out.pop("qty")
        return out


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def apply(s: PositionState, ev: Event) -> PositionState:
    """The state after ``ev``; raises InvalidTransition if ``ev`` is not allowed now."""
    d = ev.data
    if ev.type in NOTES:
        nxt = s.state
    else:
        nxt = TRANSITIONS.get((s.state, ev.type))
        if nxt is None:
            raise InvalidTransition(f"{s.position_id}: {ev.type} is not allowed in state {s.state.value}")
    u: dict[str, Any] = {"state": nxt, "seq": max(s.seq, int(d.get("seq", 0)))}
    t = ev.type
    if t == "position.open_requested":
        u.update(correlation_id=ev.correlation_id, adopted=bool(d.get("adopted", False)))
    elif t == "position.entry_sent":
        u.update(entry_client_id=d["client_id"], requested_qty=Decimal(d["qty"]))
    elif t == "position.entry_filled":
        u.update(qty=Decimal(d["qty"]), entry_price=Decimal(d["price"]), entry_order_id=d["order_id"], opened_ts_ms=ev.ts_ms)
    elif t == "position.stop_sent":
        u.update(pending_stop_client_id=d["client_id"], stop_attempts=int(d["attempt"]))
    elif t == "position.stop_placed":
        u.update(stop_price=Decimal(d["price"]), stop_order_id=d["order_id"], stop_client_id=d["client_id"], stop_kind=d["kind"], stop_reason=d["kind"], stop_qty=Decimal(d.get("qty", s.qty)), pending_stop_client_id=None, stop_attempts=0)
    elif t == "position.stop_move_sent":
        u.update(move_client_id=d["client_id"], move_price=Decimal(d["price"]), move_qty=Decimal(d["qty"]), move_reason=d["reason"], move_order_id=None)
    elif t == "position.stop_move_placed":
        u.update(move_order_id=d["order_id"])
    elif t == "position.stop_moved":
        u.update(
            stop_price=Decimal(d["price"]), stop_order_id=d["order_id"], stop_client_id=d["client_id"], stop_reason=d["reason"],
            stop_qty=Decimal(d.get("qty", s.qty)), last_move_ms=ev.ts_ms, move_client_id=None, move_order_id=None, move_price=None,
            move_qty=None, move_reason=None, move_attempts=0, trail_best=_dec(d.get("best")) or s.trail_best,
        )
    elif t == "position.stop_move_failed":
        u.update(move_client_id=None, move_order_id=None, move_price=None, move_qty=None, move_attempts=s.move_attempts + 1)
    elif t == "position.moves_disabled":
        u.update(moves_disabled_until_ms=int(d["until_ms"]), move_attempts=0)
    elif t == "position.trailing_activated":
        u.update(trail_active=True, trail_best=Decimal(d["best"]), trail_activated_ms=ev.ts_ms)
    elif t == "position.trail_best":
        u.update(trail_best=Decimal(d["best"]), breakeven_reached=bool(d.get("breakeven_reached", s.breakeven_reached)))
    elif t == "position.qty_corrected":
        u.update(qty=Decimal(d["qty"]))
    elif t == "position.adopted":
        u.update(qty=Decimal(d["qty"]), entry_price=Decimal(d["entry_price"]), opened_ts_ms=ev.ts_ms, adopted=True)
    elif t == "position.tp_placed":
        u.update(tps=tuple(d["levels"]))
    elif t == "position.tp_filled":
        levels = tuple({**tp, "filled": True} if tp["level"] == d["level"] else tp for tp in s.tps)
        u.update(tps=levels, qty=s.qty - Decimal(d["qty"]), realized_pnl=(s.realized_pnl or Decimal(0)) + Decimal(d.get("pnl") or 0))
    elif t == "position.stop_lost":
        u.update(stop_order_id=None, stop_client_id=None)
    elif t == "position.close_requested":
        u.update(close_requested=d["reason"])
    elif t == "position.close_sent":
        u.update(close_client_id=d["client_id"], close_reason=d["reason"])
    elif t == "position.close_failed":
        u.update(close_client_id=None, close_reason=None, close_requested=None)
    elif t == "position.rollback_failed":
        u.update(close_client_id=None, stop_attempts=0)
    elif t in ("position.closed", "position.rolled_back", "position.stop_filled"):
        u.update(exit_price=_dec(d.get("exit_price")), realized_pnl=_dec(d.get("pnl")), closed_ts_ms=ev.ts_ms, close_reason=d.get("reason", s.close_reason))
    elif t == "position.stop_cancelled":
        if d.get("order_id") == s.stop_order_id:
            u.update(stop_order_id=None)
    return msgspec.structs.replace(s, **u)


def rebuild(events: Iterable[Event]) -> PositionState | None:
    """Fold a position's stored lifecycle events (oldest first) into its state."""
    state: PositionState | None = None
    for ev in events:
        if ev.type not in LIFECYCLE:
            continue
        if state is None:
            if ev.type != "position.open_requested":
                raise InvalidTransition(f"{ev.position_id}: history starts with {ev.type}, not position.open_requested")
            state = PositionState(position_id=ev.position_id or "", exchange=ev.exchange or "", symbol=ev.symbol or "", side=ev.data["side"])
        state = apply(state, ev)
    return state


def realized_pnl(side: str, entry: Decimal, exit_: Decimal, qty: Decimal) -> Decimal:
    sign = 1 if side == "long" else -1
    return (exit_ - entry) * qty * sign
