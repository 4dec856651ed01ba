"""Realised PnL over closed positions (pure): timelines in, totals out.

Used by ``tradebot pnl``. Figures come only from the stored exit events: the exit's
``pnl`` (the bot's realised figure), entry fill -> exit for the hold time, the exit's
``reason``. The stored events carry no fees, so ``fees`` is ``None`` ("not recorded").
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
    pnl: str  # exact Decimal string
    fees: str | None  # None: the stored events carry no fees
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
    return Summary(
        key=key,
        count=len(trades),
        pnl=str(sum(pnls, Decimal(0))),
        fees=None,
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
