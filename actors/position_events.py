"""A position's lifecycle events: one frozen Struct per fact, a tagged union.

The tag is the event's type as stored (``position.stop_moved``), so the store
keeps plain JSON (Decimals as text) and ``tradebot events --type`` works as
before. :func:`to_record` turns a typed event into the store's row data;
:func:`from_record` decodes a stored row back into the typed event. The fold
(:mod:`actors.position_state`) only ever sees typed events, live and replayed
alike, so both give the same state.

Events marked ``WRITE_AHEAD`` are intents recorded (durably) *before* the
exchange is asked to act, so a crash never leaves an order without its record.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import msgspec

from core.events import Event, Severity


class TpLevel(msgspec.Struct, frozen=True, kw_only=True):
    """One take-profit rung: distance from entry, its order once placed, and whether it filled."""

    level: int
    price: Decimal
    qty: Decimal
    order_id: str | None = None
    client_id: str | None = None
    filled: bool = False


class PositionEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    WRITE_AHEAD: ClassVar[bool] = False
    SEVERITY: ClassVar[Severity] = Severity.INFO

    @property
    def severity(self) -> Severity:
        return self.SEVERITY


class OpenRequested(PositionEvent, frozen=True, kw_only=True, tag="position.open_requested"):
    WRITE_AHEAD = True
    side: str
    quote_amount: Decimal | None = None
    leverage: int | None = None
    adopted: bool = False


class Adopted(PositionEvent, frozen=True, kw_only=True, tag="position.adopted"):
    SEVERITY = Severity.WARNING
    qty: Decimal
    entry_price: Decimal
    side: str
    #: The exchange's own open time where the venue reports it (the aged rule counts from it).
    opened_ms: int | None = None


class EntrySent(PositionEvent, frozen=True, kw_only=True, tag="position.entry_sent"):
    WRITE_AHEAD = True
    client_id: str
    qty: Decimal
    ref_price: Decimal
    seq: int


class EntryFilled(PositionEvent, frozen=True, kw_only=True, tag="position.entry_filled"):
    order_id: str
    qty: Decimal
    price: Decimal
    status: str = "filled"
    #: What the venue charged for this fill (quote currency), as it reported it; None: it reported none.
    fee: Decimal | None = None


class EntryFailed(PositionEvent, frozen=True, kw_only=True, tag="position.entry_failed"):
    SEVERITY = Severity.WARNING
    reason: str
    outcome: str


class StopSent(PositionEvent, frozen=True, kw_only=True, tag="position.stop_sent"):
    WRITE_AHEAD = True
    client_id: str
    price: Decimal
    qty: Decimal
    kind: str  # initial / restore / emergency
    attempt: int
    seq: int
    reason: str | None = None  # what the stop protects as (trailing, breakeven, ...): kept on a restore


class StopFailed(PositionEvent, frozen=True, kw_only=True, tag="position.stop_failed"):
    SEVERITY = Severity.WARNING
    attempt: int
    reason: str


class StopPlaced(PositionEvent, frozen=True, kw_only=True, tag="position.stop_placed"):
    order_id: str
    client_id: str
    price: Decimal
    kind: str
    qty: Decimal
    reason: str | None = None


class StopLost(PositionEvent, frozen=True, kw_only=True, tag="position.stop_lost"):
    SEVERITY = Severity.ERROR
    order_id: str | None
    status: str


class StopMoveSent(PositionEvent, frozen=True, kw_only=True, tag="position.stop_move_sent"):
    WRITE_AHEAD = True
    client_id: str
    price: Decimal
    qty: Decimal
    reason: str
    old_order_id: str | None
    old_price: Decimal | None
    emergency: bool = False
    seq: int


class StopMovePlaced(PositionEvent, frozen=True, kw_only=True, tag="position.stop_move_placed"):
    order_id: str


class StopMoved(PositionEvent, frozen=True, kw_only=True, tag="position.stop_moved"):
    order_id: str
    client_id: str
    price: Decimal
    qty: Decimal
    reason: str
    old_order_id: str | None
    old_price: Decimal | None
    best: Decimal | None = None
    old_left: bool = False  # the old stop could not be cancelled: left for reconciliation


class StopMoveFailed(PositionEvent, frozen=True, kw_only=True, tag="position.stop_move_failed"):
    SEVERITY = Severity.WARNING
    reason: str
    outcome: str
    attempt: int = 0


class MovesDisabled(PositionEvent, frozen=True, kw_only=True, tag="position.moves_disabled"):
    SEVERITY = Severity.CRITICAL
    until_ms: int
    attempts: int
    last_error: str


class TrailingActivated(PositionEvent, frozen=True, kw_only=True, tag="position.trailing_activated"):
    best: Decimal
    mark: Decimal
    entry: Decimal


class TrailBest(PositionEvent, frozen=True, kw_only=True, tag="position.trail_best"):
    best: Decimal | None
    breakeven_reached: bool = False


class TpPlaced(PositionEvent, frozen=True, kw_only=True, tag="position.tp_placed"):
    levels: tuple[TpLevel, ...]


class TpFilled(PositionEvent, frozen=True, kw_only=True, tag="position.tp_filled"):
    level: int
    qty: Decimal
    price: Decimal | None
    pnl: Decimal | None
    order_id: str
    #: What the venue charged for this fill (quote currency), as it reported it; None: it reported none.
    fee: Decimal | None = None


class QtyCorrected(PositionEvent, frozen=True, kw_only=True, tag="position.qty_corrected"):
    SEVERITY = Severity.WARNING
    qty: Decimal
    was: Decimal
    source: str = "exchange"


class CloseRequested(PositionEvent, frozen=True, kw_only=True, tag="position.close_requested"):
    reason: str


class CloseSent(PositionEvent, frozen=True, kw_only=True, tag="position.close_sent"):
    WRITE_AHEAD = True
    client_id: str
    reason: str
    qty: Decimal
    seq: int


class CloseFailed(PositionEvent, frozen=True, kw_only=True, tag="position.close_failed"):
    SEVERITY = Severity.ERROR
    remaining: Decimal


class RollbackFailed(PositionEvent, frozen=True, kw_only=True, tag="position.rollback_failed"):
    SEVERITY = Severity.CRITICAL
    remaining: Decimal


class StopCancelled(PositionEvent, frozen=True, kw_only=True, tag="position.stop_cancelled"):
    order_id: str


class _Exit(PositionEvent, frozen=True, kw_only=True):
    reason: str
    exit_price: Decimal | None = None
    pnl: Decimal | None = None
    order_id: str | None = None
    outside: bool = False  # closed by something other than an order of ours (a human, the venue)
    forced: str | None = None  # liquidation / adl, where the venue says so
    #: The fee of this exit's fill (quote currency; not the take-profits' or the entry's); None: none reported.
    fee: Decimal | None = None

    @property
    def severity(self) -> Severity:
        return Severity.CRITICAL if self.forced else Severity.WARNING if self.outside else Severity.INFO


class Closed(_Exit, frozen=True, kw_only=True, tag="position.closed"):
    pass


class StopFilled(_Exit, frozen=True, kw_only=True, tag="position.stop_filled"):
    pass


class RolledBack(_Exit, frozen=True, kw_only=True, tag="position.rolled_back"):
    pass


# ---------------------------------------------------------------- aged positions
class AgedPhase(PositionEvent, frozen=True, kw_only=True, tag="position.aged_phase"):
    """The aged path's phase changed: aged / grace / progressive / cap / left / gave_up."""

    phase: str
    age_ms: int
    loss_percent: Decimal  # the accepted loss now (net of fees, percent of the entry notional)
    reason: str = ""
    since: str | None = None  # what the age counts from: entry fill / exchange open time / adoption
    from_ms: int | None = None

    @property
    def severity(self) -> Severity:
        return Severity.CRITICAL if self.phase in ("cap", "gave_up") else Severity.WARNING if self.phase == "aged" else Severity.INFO


class AgedExitSent(PositionEvent, frozen=True, kw_only=True, tag="position.aged_exit_sent"):
    WRITE_AHEAD = True
    client_id: str
    price: Decimal
    qty: Decimal
    loss_percent: Decimal
    reason: str  # the close reason it would record: "aged: grace", "aged: progressive 2.5%"
    mark: Decimal | None = None
    replaces: str | None = None  # the live exit it replaces (cancelled once the new one is live)
    seq: int


class AgedExitPlaced(PositionEvent, frozen=True, kw_only=True, tag="position.aged_exit_placed"):
    order_id: str
    client_id: str
    price: Decimal
    qty: Decimal
    loss_percent: Decimal
    reason: str
    replaces: str | None = None  # still live for one replacement step


class AgedExitFailed(PositionEvent, frozen=True, kw_only=True, tag="position.aged_exit_failed"):
    SEVERITY = Severity.WARNING
    reason: str
    outcome: str
    attempt: int
    retry_at_ms: int | None = None
    known: str | None = None  # a refusal with a known meaning (symbol not trading, region, reduce-only)
    price: Decimal | None = None


class AgedExitCancelled(PositionEvent, frozen=True, kw_only=True, tag="position.aged_exit_cancelled"):
    order_id: str
    reason: str
    left: bool = False  # could not be cancelled: left for reconciliation


class AgedExitFilled(PositionEvent, frozen=True, kw_only=True, tag="position.aged_exit_filled"):
    """Part of the position left by an aged exit (a chunk); the whole of it is a ``position.closed``."""

    order_id: str
    qty: Decimal
    price: Decimal | None
    pnl: Decimal | None
    reason: str
    #: What the venue charged for this fill (quote currency), as it reported it; None: it reported none.
    fee: Decimal | None = None


class AgedFallback(PositionEvent, frozen=True, kw_only=True, tag="position.aged_fallback"):
    SEVERITY = Severity.WARNING
    kind: str  # chunks / widen
    failures: int
    widen_percent: Decimal = Decimal(0)
    chunks: int = 0
    chunk_qty: Decimal | None = None  # each chunk's size (the last one takes the rest)


AnyPositionEvent = (
    OpenRequested | Adopted | EntrySent | EntryFilled | EntryFailed | StopSent | StopFailed | StopPlaced | StopLost
    | StopMoveSent | StopMovePlaced | StopMoved | StopMoveFailed | MovesDisabled | TrailingActivated | TrailBest
    | TpPlaced | TpFilled | QtyCorrected | CloseRequested | CloseSent | CloseFailed | RollbackFailed | StopCancelled
    | Closed | StopFilled | RolledBack
    | AgedPhase | AgedExitSent | AgedExitPlaced | AgedExitFailed | AgedExitCancelled | AgedExitFilled | AgedFallback
)

EXITS = (Closed, StopFilled, RolledBack)


def _tag(cls: type[PositionEvent]) -> str:
    return str(cls.__struct_config__.tag)


#: Every lifecycle event type as stored. Other events about a position (exchange
#: requests, alerts, notes) are commentary and never folded.
LIFECYCLE: frozenset[str] = frozenset(_tag(c) for c in AnyPositionEvent.__args__)


def type_of(event: PositionEvent) -> str:
    return _tag(type(event))


def to_record(event: PositionEvent) -> dict[str, Any]:
    """The event's data as stored (JSON builtins, Decimals as text), without its type."""
    data = msgspec.to_builtins(event)
    data.pop("type", None)
    return data


def from_record(ev: Event) -> AnyPositionEvent:
    """The typed event a stored lifecycle row holds (raises msgspec.ValidationError if malformed)."""
    event: AnyPositionEvent = msgspec.convert({**ev.data, "type": ev.type}, AnyPositionEvent, strict=False)
    return event
