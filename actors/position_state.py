"""A position's lifecycle as data: states, a transition table, and a fold.

The position actor never mutates its state: a planner returns typed events
(:mod:`actors.position_events`) and :func:`apply` folds each into a new state.
Rebuilding after a crash is the same fold over the stored events
(:func:`rebuild`), so live and replayed state are identical. An event the
table does not allow from the current state is a bug in our code
(:class:`InvalidTransition`), never silently ignored.

The same struct is the typed read model other actors use: the store's
``positions`` projection decodes back into it (:func:`from_projection`), with
the questions they ask (:attr:`PositionState.is_protected`,
:meth:`PositionState.order_refs`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from actors import position_events as pe
from core.events import Event
from core.ids import Side


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

#: (state, event) -> next state. Comments mark the rows that are not obvious.
TRANSITIONS: dict[tuple[PState, type[pe.PositionEvent]], PState] = {
    (P.PENDING_ENTRY, pe.EntrySent): P.ENTRY_PLACED,
    (P.PENDING_ENTRY, pe.EntryFailed): P.FAILED,  # refused before sending (size, symbol)
    (P.ENTRY_PLACED, pe.EntryFilled): P.PENDING_STOP,
    (P.ENTRY_PLACED, pe.EntryFailed): P.FAILED,
    (P.PENDING_STOP, pe.StopSent): P.PENDING_STOP,
    (P.PENDING_STOP, pe.StopFailed): P.PENDING_STOP,
    (P.PENDING_STOP, pe.StopPlaced): P.PROTECTED,
    (P.PENDING_STOP, pe.CloseSent): P.CLOSING,  # rollback, or price already through the stop
    (P.PENDING_STOP, pe.StopFilled): P.CLOSED,  # an emergency stop filled before confirmation
    (P.PENDING_STOP, pe.Closed): P.CLOSED,  # found flat on the exchange while unprotected
    (P.PENDING_STOP, pe.QtyCorrected): P.PENDING_STOP,  # read before re-protecting: the exchange is the truth
    (P.PROTECTED, pe.CloseSent): P.CLOSING,
    (P.PROTECTED, pe.StopFilled): P.CLOSED,
    (P.PROTECTED, pe.StopLost): P.PENDING_STOP,  # stop cancelled/expired on the venue: re-protect
    (P.PROTECTED, pe.Closed): P.CLOSED,  # closed elsewhere (by hand, liquidation)
    (P.CLOSING, pe.Closed): P.CLOSED,
    (P.CLOSING, pe.RolledBack): P.ROLLED_BACK,
    (P.CLOSING, pe.StopFilled): P.CLOSED,  # the stop won the race against our close
    (P.CLOSING, pe.CloseFailed): P.PROTECTED,  # the stop is still live
    (P.CLOSING, pe.RollbackFailed): P.PENDING_STOP,  # no stop: emergency stop next
    (P.CLOSING, pe.QtyCorrected): P.CLOSING,  # the close reads the position first and closes its real size
    # Zero-gap stop moves: the new stop is placed, then the old one cancelled.
    (P.PROTECTED, pe.StopMoveSent): P.PROTECTED,
    (P.PROTECTED, pe.StopMovePlaced): P.PROTECTED,  # two stops live for one replacement step
    (P.PROTECTED, pe.StopMoved): P.PROTECTED,
    (P.PROTECTED, pe.StopMoveFailed): P.PROTECTED,  # the old stop stays
    (P.PROTECTED, pe.MovesDisabled): P.PROTECTED,
    (P.PROTECTED, pe.TpFilled): P.PROTECTED,
    (P.PROTECTED, pe.QtyCorrected): P.PROTECTED,  # the exchange says otherwise: it is the truth
    # Aged positions: one reduce-only exit order beside the stop (actors.plan_aged).
    (P.PROTECTED, pe.AgedPhase): P.PROTECTED,
    (P.PROTECTED, pe.AgedExitSent): P.PROTECTED,
    (P.PROTECTED, pe.AgedExitPlaced): P.PROTECTED,  # the replaced exit is live for one replacement step
    (P.PROTECTED, pe.AgedExitFailed): P.PROTECTED,  # the previous exit (if any) stays
    (P.PROTECTED, pe.AgedExitCancelled): P.PROTECTED,
    (P.PROTECTED, pe.AgedExitFilled): P.PROTECTED,  # a chunk: the rest stays protected
    (P.PROTECTED, pe.AgedFallback): P.PROTECTED,
    (P.PENDING_STOP, pe.AgedExitCancelled): P.PENDING_STOP,  # a human cancelled it while the stop is restored
    # Adoption: a position found on the exchange that no actor owned.
    (P.PENDING_ENTRY, pe.Adopted): P.PENDING_STOP,
}

#: Events that record facts without changing the lifecycle state.
NOTES: frozenset[type[pe.PositionEvent]] = frozenset(
    {pe.OpenRequested, pe.StopCancelled, pe.CloseRequested, pe.TrailingActivated, pe.TrailBest, pe.TpPlaced}
)


class InvalidTransition(RuntimeError):
    pass


class PositionState(msgspec.Struct, frozen=True, kw_only=True):
    position_id: str
    exchange: str
    symbol: str
    side: Side
    state: PState = P.PENDING_ENTRY
    correlation_id: str | None = None
    quote_amount: Decimal | None = None  # what the open was asked for (margin, leverage)
    leverage: int | None = None
    requested_qty: Decimal = Decimal(0)
    entry_ref_price: Decimal | None = None  # the mark the entry was sized at (its price if the venue gives none)
    qty: Decimal = Decimal(0)
    entry_price: Decimal | None = None
    entry_client_id: str | None = None
    entry_order_id: str | None = None
    stop_price: Decimal | None = None  # the live stop's level; kept after the stop is lost (a restore never goes looser)
    stop_order_id: str | None = None
    stop_client_id: str | None = None
    stop_kind: str | None = None  # initial / restore / emergency (how the stop was placed)
    stop_attempts: int = 0
    pending_stop_client_id: str | None = None
    pending_stop_kind: str | None = None
    close_client_id: str | None = None
    close_reason: str | None = None
    close_requested: str | None = None  # a close asked for before the position could act on it
    close_failures: int = 0
    exit_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    opened_ts_ms: int | None = None
    closed_ts_ms: int | None = None
    seq: int = 0  # client order id counter
    adopted: bool = False
    # stop moves
    stop_reason: str | None = None  # initial / emergency / trailing / breakeven / tp1_breakeven / resize
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
    tps: tuple[pe.TpLevel, ...] = ()
    # aged (actors.plan_aged): the phase, the one exit order, a replacement in flight
    aged_from_ms: int | None = None  # what the age counts from (entry fill / exchange open time / adoption)
    aged_since: str | None = None
    aged_phase: str | None = None  # None / grace / progressive / cap / left / gave_up
    aged_loss: Decimal | None = None  # the accepted loss of the live exit (percent)
    aged_order_id: str | None = None
    aged_client_id: str | None = None
    aged_price: Decimal | None = None
    aged_qty: Decimal | None = None
    aged_reason: str | None = None  # the close reason the live exit records when it fills
    aged_old_order_id: str | None = None  # the replaced exit, until its cancel is verified
    aged_pending_client_id: str | None = None  # an exit sent, not yet confirmed live
    aged_pending_price: Decimal | None = None
    aged_pending_qty: Decimal | None = None
    aged_pending_reason: str | None = None
    aged_pending_loss: Decimal | None = None
    aged_failures: int = 0
    aged_retry_at_ms: int | None = None
    aged_chunks: int = 0  # > 0: the exit is split into this many chunks (fallback) ...
    aged_chunk_qty: Decimal | None = None  # ... of this size (the last takes the rest)
    aged_widen: Decimal = Decimal(0)  # extra accepted loss from the fallback (within the cap)
    aged_mark: Decimal | None = None  # the mark the last exit was priced at (ctl aged: distance)
    aged_mark_ms: int | None = None

    # --------------------------------------------------------- read model
    @property
    def closing_side(self) -> str:
        return self.side.closing_side

    @property
    def entry_side(self) -> str:
        return self.side.entry_side

    @property
    def is_protected(self) -> bool:
        return self.state is P.PROTECTED and self.stop_order_id is not None

    @property
    def open_tps(self) -> tuple[pe.TpLevel, ...]:
        return tuple(tp for tp in self.tps if not tp.filled and tp.order_id)

    def order_refs(self) -> set[str]:
        """Every order id of ours this position still references (stop, a move's new stop, take-profits)."""
        ids = {self.stop_order_id, self.move_order_id, self.aged_order_id, self.aged_old_order_id, *(tp.order_id for tp in self.tps if not tp.filled)}
        return {i for i in ids if i}

    def client_refs(self) -> set[str]:
        """Client ids of orders that may be live for this position (an interrupted step's too)."""
        ids = {
            self.stop_client_id, self.pending_stop_client_id, self.move_client_id, self.close_client_id, self.aged_client_id, self.aged_pending_client_id,
            *(tp.client_id for tp in self.tps if not tp.filled),
        }
        return {i for i in ids if i}

    def projection(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self, builtin_types=(Decimal,))
        out["state"] = self.state.value
        out["is_open"] = self.state.is_open
        out["quantity"] = out.pop("qty")
        return out


def from_projection(row: dict[str, Any]) -> PositionState:
    """The typed view of a row of the store's ``positions`` projection."""
    data = {k: v for k, v in row.items() if k in PositionState.__struct_fields__ or k == "quantity"}
    if "quantity" in data:
        data["qty"] = data.pop("quantity")
    return msgspec.convert(data, PositionState, strict=False)


def _dec(value: Decimal | None, default: Decimal | None) -> Decimal | None:
    return default if value is None else value


def _fold(s: PositionState, e: pe.PositionEvent, ts_ms: int) -> dict[str, Any]:
    match e:
        case pe.OpenRequested():
            return {"adopted": e.adopted, "quote_amount": e.quote_amount, "leverage": e.leverage}
        case pe.EntrySent():
            return {"entry_client_id": e.client_id, "requested_qty": e.qty, "entry_ref_price": e.ref_price}
        case pe.EntryFilled():
            return {"qty": e.qty, "entry_price": e.price, "entry_order_id": e.order_id, "opened_ts_ms": ts_ms, "aged_from_ms": ts_ms, "aged_since": "entry fill"}
        case pe.StopSent():
            return {"pending_stop_client_id": e.client_id, "pending_stop_kind": e.kind, "stop_attempts": e.attempt}
        case pe.StopPlaced():
            return {
                "stop_price": e.price, "stop_order_id": e.order_id, "stop_client_id": e.client_id, "stop_kind": e.kind,
                "stop_reason": e.reason or e.kind, "stop_qty": e.qty, "pending_stop_client_id": None, "pending_stop_kind": None, "stop_attempts": 0,
            }
        case pe.StopMoveSent():
            return {"move_client_id": e.client_id, "move_price": e.price, "move_qty": e.qty, "move_reason": e.reason, "move_order_id": None}
        case pe.StopMovePlaced():
            return {"move_order_id": e.order_id}
        case pe.StopMoved():
            return {
                "stop_price": e.price, "stop_order_id": e.order_id, "stop_client_id": e.client_id, "stop_reason": e.reason, "stop_qty": e.qty,
                "last_move_ms": ts_ms, "move_client_id": None, "move_order_id": None, "move_price": None, "move_qty": None, "move_reason": None,
                "move_attempts": 0, "trail_best": _dec(e.best, s.trail_best),
            }
        case pe.StopMoveFailed():
            return {"move_client_id": None, "move_order_id": None, "move_price": None, "move_qty": None, "move_attempts": s.move_attempts + 1}
        case pe.MovesDisabled():
            return {"moves_disabled_until_ms": e.until_ms, "move_attempts": 0}
        case pe.TrailingActivated():
            return {"trail_active": True, "trail_best": e.best, "trail_activated_ms": ts_ms}
        case pe.TrailBest():
            return {"trail_best": e.best, "breakeven_reached": e.breakeven_reached}
        case pe.QtyCorrected():
            return {"qty": e.qty}
        case pe.Adopted():
            since = "exchange open time" if e.opened_ms else "adoption"
            return {"qty": e.qty, "entry_price": e.entry_price, "opened_ts_ms": ts_ms, "adopted": True, "aged_from_ms": e.opened_ms or ts_ms, "aged_since": since}
        case pe.AgedPhase():
            return {} if e.phase == "aged" else {"aged_phase": e.phase}
        case pe.AgedExitSent():
            return {
                "aged_pending_client_id": e.client_id, "aged_pending_price": e.price, "aged_pending_qty": e.qty, "aged_pending_reason": e.reason,
                "aged_pending_loss": e.loss_percent, "aged_mark": e.mark or s.aged_mark, "aged_mark_ms": ts_ms if e.mark is not None else s.aged_mark_ms,
            }
        case pe.AgedExitPlaced():
            return {
                "aged_order_id": e.order_id, "aged_client_id": e.client_id, "aged_price": e.price, "aged_qty": e.qty, "aged_reason": e.reason,
                "aged_loss": e.loss_percent, "aged_old_order_id": e.replaces, "aged_pending_client_id": None, "aged_pending_price": None,
                "aged_pending_qty": None, "aged_pending_reason": None, "aged_pending_loss": None, "aged_failures": 0, "aged_retry_at_ms": None,
            }
        case pe.AgedExitFailed():
            return {
                "aged_pending_client_id": None, "aged_pending_price": None, "aged_pending_qty": None, "aged_pending_reason": None, "aged_pending_loss": None,
                "aged_failures": e.attempt, "aged_retry_at_ms": e.retry_at_ms,
            }
        case pe.AgedExitCancelled():
            if e.order_id == s.aged_old_order_id:
                return {"aged_old_order_id": None}
            if e.order_id == s.aged_order_id:
                return {"aged_order_id": None, "aged_client_id": None, "aged_price": None, "aged_qty": None}
            return {}
        case pe.AgedExitFilled():
            done = {"aged_order_id": None, "aged_client_id": None, "aged_price": None, "aged_qty": None} if e.order_id == s.aged_order_id else {}
            old = {"aged_old_order_id": None} if e.order_id == s.aged_old_order_id else {}
            return {"qty": s.qty - e.qty, "realized_pnl": (s.realized_pnl or Decimal(0)) + (e.pnl or Decimal(0)), **done, **old}
        case pe.AgedFallback():
            chunk = {"aged_chunks": e.chunks, "aged_chunk_qty": e.chunk_qty} if e.kind == "chunks" else {}
            return {**chunk, "aged_widen": e.widen_percent if e.kind == "widen" else s.aged_widen}
        case pe.TpPlaced():
            return {"tps": e.levels}
        case pe.TpFilled():
            levels = tuple(msgspec.structs.replace(tp, filled=True) if tp.level == e.level else tp for tp in s.tps)
            return {"tps": levels, "qty": s.qty - e.qty, "realized_pnl": (s.realized_pnl or Decimal(0)) + (e.pnl or Decimal(0))}
        case pe.StopLost():
            return {"stop_order_id": None, "stop_client_id": None}  # the level stays: the restore starts from it
        case pe.CloseRequested():
            return {"close_requested": e.reason}
        case pe.CloseSent():
            return {"close_client_id": e.client_id, "close_reason": e.reason}
        case pe.CloseFailed():
            return {"close_client_id": None, "close_reason": None, "close_requested": None, "close_failures": s.close_failures + 1}
        case pe.RollbackFailed():
            return {"close_client_id": None, "stop_attempts": 0}
        case pe.Closed() | pe.StopFilled() | pe.RolledBack():
            return {"exit_price": e.exit_price, "realized_pnl": e.pnl, "closed_ts_ms": ts_ms, "close_reason": e.reason}
        case pe.StopCancelled():
            if e.order_id == s.aged_order_id:
                return {"aged_order_id": None}
            return {"stop_order_id": None} if e.order_id == s.stop_order_id else {}
    return {}


def apply(s: PositionState, e: pe.PositionEvent, ts_ms: int) -> PositionState:
    """The state after ``e`` (at ``ts_ms``); raises InvalidTransition if ``e`` is not allowed now."""
    if type(e) in NOTES:
        nxt = s.state
    else:
        found = TRANSITIONS.get((s.state, type(e)))
        if found is None:
            raise InvalidTransition(f"{s.position_id}: {pe.type_of(e)} is not allowed in state {s.state.value}")
        nxt = found
    changes = _fold(s, e, ts_ms)
    seq = getattr(e, "seq", 0)
    return msgspec.structs.replace(s, state=nxt, seq=max(s.seq, seq), **changes)


def initial(ev: Event, e: pe.OpenRequested) -> PositionState:
    return PositionState(position_id=ev.position_id or "", exchange=ev.exchange or "", symbol=ev.symbol or "", side=Side(e.side), correlation_id=ev.correlation_id)


def rebuild(events: Iterable[Event]) -> PositionState | None:
    """Fold a position's stored lifecycle events (oldest first) into its state."""
    state: PositionState | None = None
    for ev in events:
        if ev.type not in pe.LIFECYCLE:
            continue
        typed = pe.from_record(ev)
        if state is None:
            if not isinstance(typed, pe.OpenRequested):
                raise InvalidTransition(f"{ev.position_id}: history starts with {ev.type}, not position.open_requested")
            state = initial(ev, typed)
        state = apply(state, typed, ev.ts_ms)
    return state


def realized_pnl(side: str, entry: Decimal, exit_: Decimal, qty: Decimal) -> Decimal:
    return Side(side).pnl(entry, exit_, qty)
