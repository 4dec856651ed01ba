"""A position's life as a timeline (pure): its stored events in, steps and protection intervals out.

Used by ``tradebot trace`` (and meant for the dashboard's position page). The
durations a trader asks about are read off the events, nothing is invented:

- ``entry_to_stop_ms``: entry fill (or adoption) -> the first stop live on the exchange;
- ``overlaps``: per stop move, the time both stops were live (the new one placed ->
  the old one cancelled), the move's price change and reason;
- ``unprotected``: every interval with the position open and no stop live after the
  first one (a stop lost, cancelled without a replacement), with what began and ended it.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import msgspec

from core.events import Event

EXITS = frozenset({"position.closed", "position.stop_filled", "position.rolled_back", "position.aged_exit_filled"})
#: The exits that end the position (an aged exit fill is one chunk of it).
FINAL_EXITS = frozenset({"position.closed", "position.stop_filled", "position.rolled_back"})
#: Our fills, each with the fee the venue reported for it (``fee``, absent or None where it reported none).
FILLS = frozenset({"position.entry_filled", "position.tp_filled", "position.aged_exit_filled"}) | FINAL_EXITS


class Step(msgspec.Struct, frozen=True, kw_only=True):
    ts_ms: int
    type: str
    since_prev_ms: int  # since the previous step (0 for the first)
    since_open_ms: int  # since the first step
    data: dict[str, Any]


class Interval(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int
    end_ms: int | None  # None: still going at the last event
    duration_ms: int | None
    began: str  # the event type that opened it
    ended: str | None


class Overlap(msgspec.Struct, frozen=True, kw_only=True):
    placed_ms: int  # the new stop live
    old_gone_ms: int  # the move finished (old stop cancelled or left)
    duration_ms: int
    old_price: str | None
    new_price: str | None
    reason: str | None


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    position_id: str | None
    symbol: str | None
    side: str | None
    opened_ms: int | None  # entry fill / adoption
    closed_ms: int | None
    exit_reason: str | None
    exit_price: str | None
    pnl: str | None  # realised, before fees (the figure stored with the final exit: take-profits included)
    #: The fees recorded on the position's fills up to its end (entry, take-profits, aged chunks, the exit);
    #: None when no fill has one.
    fees: str | None
    fills_without_fee: int  # those fills whose venue reported no fee (never counted as zero)
    net_pnl: str | None  # pnl - fees; None unless every fill has its fee
    entry_to_stop_ms: int | None
    overlaps: list[Overlap]
    unprotected: list[Interval]
    unprotected_ms: int  # total of the finished unprotected intervals
    steps: list[Step]


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def build_timeline(events: Iterable[Event]) -> Timeline:
    """The timeline of one position's events (any order; sorted by time then id)."""
    evs = sorted(events, key=lambda e: (e.ts_ms, e.id or 0))
    steps: list[Step] = []
    first_ts = evs[0].ts_ms if evs else 0
    prev_ts = first_ts
    opened_ms = closed_ms = stop_first_ms = None
    side = exit_reason = exit_price = pnl = None
    stop_live = False
    gap_start: tuple[int, str] | None = None
    unprotected: list[Interval] = []
    overlaps: list[Overlap] = []
    move_placed: int | None = None
    fees: Decimal | None = None
    without_fee = 0
    for e in evs:
        d = dict(e.data)
        steps.append(Step(ts_ms=e.ts_ms, type=e.type, since_prev_ms=e.ts_ms - prev_ts, since_open_ms=e.ts_ms - first_ts, data=d))
        prev_ts = e.ts_ms
        t = e.type
        if t in FILLS and closed_ms is None:
            fee = d.get("fee")
            if fee is None:
                without_fee += 1
            else:
                fees = (fees or Decimal(0)) + Decimal(str(fee))
        if t in ("position.open_requested", "position.adopted") and side is None:
            side = d.get("side")
        if t in ("position.entry_filled", "position.adopted") and opened_ms is None:
            opened_ms = e.ts_ms
        elif t == "position.stop_placed":
            if stop_first_ms is None:
                stop_first_ms = e.ts_ms
            elif gap_start is not None:
                unprotected.append(Interval(start_ms=gap_start[0], end_ms=e.ts_ms, duration_ms=e.ts_ms - gap_start[0], began=gap_start[1], ended=t))
            gap_start = None
            stop_live = True
        elif t == "position.stop_move_placed":
            move_placed = e.ts_ms
        elif t == "position.stop_moved":
            start = move_placed if move_placed is not None else e.ts_ms
            overlaps.append(Overlap(placed_ms=start, old_gone_ms=e.ts_ms, duration_ms=e.ts_ms - start, old_price=_s(d.get("old_price")), new_price=_s(d.get("price")), reason=d.get("reason")))
            move_placed = None
        elif t in ("position.stop_lost", "position.stop_cancelled") and stop_live and closed_ms is None:
            stop_live = False
            gap_start = (e.ts_ms, t)
        elif t in FINAL_EXITS and closed_ms is None:
            closed_ms = e.ts_ms
            exit_reason, exit_price, pnl = d.get("reason"), _s(d.get("exit_price") or d.get("price")), _s(d.get("pnl"))
            if gap_start is not None:
                unprotected.append(Interval(start_ms=gap_start[0], end_ms=e.ts_ms, duration_ms=e.ts_ms - gap_start[0], began=gap_start[1], ended=t))
                gap_start = None
    if gap_start is not None:
        unprotected.append(Interval(start_ms=gap_start[0], end_ms=None, duration_ms=None, began=gap_start[1], ended=None))
    first = evs[0] if evs else None
    net = str(Decimal(pnl) - (fees or Decimal(0))) if pnl is not None and without_fee == 0 else None
    return Timeline(
        position_id=first.position_id if first else None, symbol=next((e.symbol for e in evs if e.symbol), None), side=side,
        opened_ms=opened_ms, closed_ms=closed_ms, exit_reason=exit_reason, exit_price=exit_price, pnl=pnl,
        fees=_s(fees), fills_without_fee=without_fee, net_pnl=net,
        entry_to_stop_ms=(stop_first_ms - opened_ms) if stop_first_ms is not None and opened_ms is not None else None,
        overlaps=overlaps, unprotected=unprotected, unprotected_ms=sum(i.duration_ms or 0 for i in unprotected), steps=steps,
    )


def describe(step: Step) -> str:
    """One step in words (numbers exact; the CLI formats the line around it)."""
    d, t = step.data, step.type.removeprefix("position.")

    def n(key: str) -> str:
        v = d.get(key)
        if v is None:
            return "?"
        try:
            return f"{Decimal(str(v)).normalize():f}"
        except ArithmeticError:
            return str(v)

    def fee() -> str:
        return f", fee {n('fee')}" if d.get("fee") is not None else ", fee not reported" if step.type in FILLS else ""

    match step.type:
        case "position.open_requested":
            return f"open requested: {d.get('side')}" + (f", {n('quote_amount')} quote" if d.get("quote_amount") is not None else "")
        case "position.entry_sent":
            return f"entry sent: {n('qty')} at ~{n('ref_price')}"
        case "position.entry_filled":
            return f"entry filled: {n('qty')} at {n('price')}{fee()}"
        case "position.adopted":
            return f"adopted: {d.get('side')} {n('qty')} at {n('entry_price')}"
        case "position.stop_sent":
            return f"stop sent ({d.get('kind')}): {n('price')}"
        case "position.stop_placed":
            return f"stop live ({d.get('reason') or d.get('kind')}): {n('price')}"
        case "position.stop_move_sent":
            return f"stop move sent ({d.get('reason')}): {n('old_price')} -> {n('price')}"
        case "position.stop_move_placed":
            return "new stop live (two stops now)"
        case "position.stop_moved":
            return f"stop moved ({d.get('reason')}): {n('old_price')} -> {n('price')}" + (" (old stop left)" if d.get("old_left") else "")
        case "position.trailing_activated":
            return f"trailing active: best {n('best')}, mark {n('mark')}"
        case "position.tp_filled":
            return f"take-profit filled: {n('qty')} at {n('price')}{fee()}"
        case "position.stop_lost":
            return f"STOP LOST ({d.get('status')})"
        case _ if step.type in EXITS:
            return f"{t.replace('_', ' ')}: {d.get('reason')}" + (f" at {n('exit_price')}" if d.get("exit_price") is not None else "") + (f", pnl {n('pnl')}" if d.get("pnl") is not None else "") + fee()
    rest = ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, dict | list))
    return f"{t.replace('_', ' ')}" + (f": {rest}" if rest else "")
