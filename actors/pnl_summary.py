"""Realised PnL over closed positions (pure): timelines in, totals out.

Used by ``tradebot pnl`` and the dashboard's history. Figures come only from the stored
events: the final exit's ``pnl`` (the bot's realised figure, before fees), entry fill -> exit
for the hold time, the exit's ``reason``, and the ``fee`` the venue reported on each fill
(entry, take-profits, aged chunks, the exit). A fill without one (the venue reported none,
or an event stored before fees were recorded) is counted in ``fills_without_fee``, never
taken as zero: ``net_pnl`` is then ``None``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

import msgspec

from actors.position_timeline import Timeline


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    key: str  # "all", a day (YYYY-MM-DD, UTC) or a symbol
    count: int
    pnl: str  # exact Decimal string: realised, before fees
    fees: str  # the fees recorded on the trades' fills (exact)
    fills_without_fee: int  # fills whose venue reported no fee: ``fees`` leaves them out
    net_pnl: str | None  # pnl - fees; None while any fill lacks its fee
    wins: int
    losses: int
    win_rate: str | None  # percent, exact; None without trades
    avg_hold_ms: int | None
    exits_by_reason: dict[str, int]


def closed_trades(timelines: Iterable[Timeline], since_ms: int | None = None) -> list[Timeline]:
    """Closed positions with a realised PnL, closed at or after ``since_ms``."""
    return [t for t in timelines if t.closed_ms is not None and t.pnl is not None and (since_ms is None or t.closed_ms >= since_ms)]


def summarize(trades: list[Timeline], key: str = "all") -> Summary:
    pnls = [Decimal(t.pnl) for t in trades if t.pnl is not None]
    holds = [t.closed_ms - t.opened_ms for t in trades if t.closed_ms is not None and t.opened_ms is not None]
    reasons: dict[str, int] = {}
    for t in trades:
        reasons[t.exit_reason or "?"] = reasons.get(t.exit_reason or "?", 0) + 1
    wins = sum(1 for p in pnls if p > 0)
    fees = sum((Decimal(t.fees) for t in trades if t.fees is not None), Decimal(0))
    without_fee = sum(t.fills_without_fee for t in trades)
    gross = sum(pnls, Decimal(0))
    return Summary(
        key=key,
        count=len(trades),
        pnl=str(gross),
        fees=str(fees),
        fills_without_fee=without_fee,
        net_pnl=str(gross - fees) if without_fee == 0 else None,
        wins=wins,
        losses=sum(1 for p in pnls if p < 0),
        win_rate=str(Decimal(wins) * 100 / len(pnls)) if pnls else None,
        avg_hold_ms=sum(holds) // len(holds) if holds else None,
        exits_by_reason=dict(sorted(reasons.items())),
    )


def _day(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d")


def grouped(trades: list[Timeline], by: str | None) -> list[Summary]:
    """One summary per day (UTC) or symbol, sorted by key; the whole set when ``by`` is None."""
    if by is None:
        return [summarize(trades)]
    groups: dict[str, list[Timeline]] = {}
    for t in trades:
        k = _day(t.closed_ms or 0) if by == "day" else (t.symbol or "?")
        groups.setdefault(k, []).append(t)
    return [summarize(v, k) for k, v in sorted(groups.items())]
