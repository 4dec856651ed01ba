"""The vocabulary between the position planners and their interpreter.

A planner is a pure function ``(state, input, env) -> Plan``: the events to
record (folded in order), commentary to emit, reports to tell, and at most one
exchange :class:`Command` to run next (or a :class:`Retry` to schedule). The
position actor (:mod:`actors.position`) interprets plans one command at a time
and hands each command's completion to the planner its :class:`Step` names, so
what happens after an exchange answer is a table, not string continuations.

Commands carry what their continuation needs (a fill seen, a reason, the orders
still to cancel), so the actor keeps no lazily created working attributes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import msgspec

from actors import position_events as pe
from actors.position_state import PositionState, apply
from actors.trailing import TrailState
from adapters.errors import VenueError
from adapters.markets import Market
from adapters.venue import OrderReport
from core.events import Severity
from core.ids import client_order_id


class Step(enum.Enum):
    """What a command's answer is for: the key of the interpreter's planner table."""

    SIZE = "size"
    ENTRY = "entry"
    STOP = "stop"
    RESTORE_MARK = "restore_mark"
    ADOPT_MARK = "adopt_mark"
    CHECK_STOP = "check_stop"
    STOP_FILL_POSITION = "stop_fill_position"
    LOST_STOP_POSITION = "lost_stop_position"
    MOVE_PLACE = "move_place"
    MOVE_CANCEL_OLD = "move_cancel_old"
    MOVE_CHECK_OLD = "move_check_old"
    MOVE_LOOKUP = "move_lookup"
    TP_LOOKUP = "tp_lookup"
    TP_PLACE = "tp_place"
    CHECK_TP = "check_tp"
    CLOSE_READ = "close_read"
    CLOSE = "close"
    VERIFY_FLAT = "verify_flat"
    EXIT_CHECK_STOP = "exit_check_stop"
    OUTSIDE_FILLS = "outside_fills"
    OUTSIDE_ORDER = "outside_order"
    LEFTOVER = "leftover"
    VERIFY_VIEW = "verify_view"
    VIEW_TPS = "view_tps"
    STRAY = "stray"
    AGED_READ = "aged_read"  # the position, read before an exit is placed or moved
    AGED_PLACE = "aged_place"
    AGED_CANCEL_OLD = "aged_cancel_old"  # the replaced exit
    AGED_CHECK_OLD = "aged_check_old"
    AGED_CHECK = "aged_check"  # the live exit: filled? gone?
    AGED_FILL_READ = "aged_fill_read"  # the position after an exit fill
    AGED_LOOKUP = "aged_lookup"  # an exit sent before a restart, by client id
    AGED_LEAVE = "aged_leave"  # cancelling the exit when the position leaves the aged path


#: Reads that decide whether the position is protected (its stop, its size, the mark a
#: restore is priced from): they go to the venue as protective calls, ahead of routine
#: reads (reconciliation, fills, take-profits), so a lost stop is not restored late
#: because the read budget is spent.
PROTECTIVE_READS = frozenset(
    {
        Step.STOP,
        Step.RESTORE_MARK,
        Step.CHECK_STOP,
        Step.STOP_FILL_POSITION,
        Step.LOST_STOP_POSITION,
        Step.MOVE_CHECK_OLD,
        Step.MOVE_LOOKUP,
        Step.CLOSE_READ,
        Step.VERIFY_FLAT,
        Step.EXIT_CHECK_STOP,
        Step.OUTSIDE_FILLS,  # found flat: these two reads stand between it and cancelling
        Step.OUTSIDE_ORDER,  # the orders of ours still live on a flat position
        Step.VERIFY_VIEW,
    }
)


# ------------------------------------------------------------- commands
class Command(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    step: Step


class ReadMark(Command, frozen=True, kw_only=True):
    pass


class ReadPosition(Command, frozen=True, kw_only=True):
    fill: OrderReport | None = None  # a fill seen before the read (our close, a fired stop)
    reason: str = ""  # why we read (a close's reason, a lost stop's status)
    orders: tuple[str, ...] = ()  # stray orders of ours to cancel afterwards


class LookUpOrder(Command, frozen=True, kw_only=True):
    order_id: str | None = None
    client_id: str | None = None
    attempt: int = 0
    reason: str = ""
    fill: OrderReport | None = None
    level: int = 0  # a take-profit's level
    levels: tuple[pe.TpLevel, ...] = ()  # the take-profit plan being placed


class PlaceEntry(Command, frozen=True, kw_only=True):
    client_id: str
    qty: Decimal
    ref_price: Decimal


class PlaceStop(Command, frozen=True, kw_only=True):
    client_id: str
    price: Decimal
    qty: Decimal
    kind: str = "initial"  # initial / restore / emergency
    reread: bool = False  # placed after re-reading the mark (a second "would trigger" closes)


class PlaceTakeProfit(Command, frozen=True, kw_only=True):
    levels: tuple[pe.TpLevel, ...]  # the whole plan; the first without an order id is the one to place
    price: Decimal
    qty: Decimal
    client_id: str


class PlaceExit(Command, frozen=True, kw_only=True):
    """The aged exit: a reduce-only GTC limit order."""

    client_id: str
    price: Decimal
    qty: Decimal


class SendClose(Command, frozen=True, kw_only=True):
    client_id: str
    qty: Decimal


class CancelOrder(Command, frozen=True, kw_only=True):
    order_id: str
    rest: tuple[str, ...] = ()  # more to cancel after this one
    attempt: int = 0


class ReadFills(Command, frozen=True, kw_only=True):
    since_ms: int | None
    reason: str


class ReadOpenTps(Command, frozen=True, kw_only=True):
    qty: Decimal  # the quantity the exchange showed
    orders: tuple[str, ...] = ()  # stray orders of ours to cancel afterwards


class Again(enum.Enum):
    """What a scheduled retry runs again (decided afresh from the state when it fires)."""

    RESOLVE_ENTRY = "resolve_entry"
    STOP = "stop"
    VERIFY_FLAT = "verify_flat"
    VERIFY = "verify"
    MOVE = "move"
    MOVE_CANCEL = "move_cancel"
    RESUME = "resume"
    CLOSE = "close"
    AGED = "aged"  # review the aged exit (after a refusal's delay)
    AGED_LOOKUP = "aged_lookup"  # look up an exit whose placement outcome is unknown
    AGED_CANCEL = "aged_cancel"  # cancel the replaced exit again


class Retry(msgspec.Struct, frozen=True, kw_only=True):
    """Run ``step`` again after ``delay_ms`` (a scheduled message; nothing sleeps)."""

    step: Again
    delay_ms: int
    reason: str = ""  # a close's reason
    attempt: int = 0
    move: tuple[Decimal, Decimal, str] | None = None  # the wanted move (price, qty, reason)


# ---------------------------------------------------------------- plans
class Note(msgspec.Struct, frozen=True, kw_only=True):
    """A commentary event about the position (not folded): an alert, a warning, a fact."""

    type: str
    data: dict[str, Any]
    severity: Severity = Severity.INFO


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    events: tuple[pe.PositionEvent, ...] = ()
    notes: tuple[Note, ...] = ()
    tell: tuple[Any, ...] = ()  # reports for the requester (PositionOpened / PositionOpenFailed / PositionClosed)
    next: Command | None = None
    retry: Retry | None = None
    trail: TrailState | None = None  # the trailing memory after this plan (None: unchanged)
    subscribe: bool = False  # start receiving marks
    stop: bool = False  # the position is over: the actor stops after this plan

    def then(self, other: Plan) -> Plan:
        """This plan's records followed by ``other``'s; ``other`` decides what runs next."""
        return Plan(
            events=self.events + other.events, notes=self.notes + other.notes, tell=self.tell + other.tell, next=other.next,
            retry=other.retry, trail=other.trail or self.trail, subscribe=self.subscribe or other.subscribe, stop=other.stop,
        )


NOTHING = Plan()


def _no_forced_kind(_cid: str | None) -> str | None:
    return None


class Env(msgspec.Struct, frozen=True, kw_only=True):
    """What a planner may know besides the state: config, the market's grid, the time, the last mark.

    Built for every mark a position handles: a frozen Struct (cheap to build, unlike a frozen dataclass)."""

    config: Any  # core.config.Config
    market: Market
    now_ms: int
    mark: Decimal | None = None
    mark_ms: int | None = None
    trail_best: Decimal | None = None  # the trailing memory's best mark (persisted only now and then)
    forced_close_kind: Callable[[str | None], str | None] = _no_forced_kind


def fold(s: PositionState, events: tuple[pe.PositionEvent, ...], now_ms: int) -> PositionState:
    for e in events:
        s = apply(s, e, now_ms)
    return s


def next_client_id(s: PositionState, kind: str) -> tuple[str, int]:
    seq = s.seq + 1
    return client_order_id(s.position_id, kind, seq), seq


def error_text(error: VenueError | None, fallback: str) -> str:
    return str(error) if error is not None else fallback
