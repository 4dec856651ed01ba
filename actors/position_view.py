"""What a trader reads off an open position (pure): the projection row and the last mark in, numbers out.

Used by ``ctl positions`` and the dashboard, so both show the same figures.
Exact Decimal strings (the printer rounds them to the market's grid); ``None``
where a figure cannot be known (no mark seen yet, no stop live).

- ``stop_kind``: what the live stop protects as: initial / trailing / breakeven /
  emergency (a restore or resize keeps the kind it had; shown as it was recorded);
- ``stop_distance_percent``: from the mark to the stop, as a share of the mark;
  positive while the stop is on the losing side of the mark (room left);
- ``unrealised_pnl``: (mark - entry) x quantity for a long, the reverse for a short
  (quote currency, before fees); ``unrealised_pnl_percent`` of the entry notional;
- ``trailing``: ``active`` once activated (with the best mark), ``armed`` while
  trailing is enabled and waits for its activation, else ``off``;
- ``last_verified_ms``: the last reconcile after the entry that found nothing wrong
  anywhere (the exchange's positions and orders agreed with every position's own).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

_HUNDRED = Decimal(100)
_HOUR_MS = 3_600_000
_KINDS = {"tp1_breakeven": "breakeven", "breakeven": "breakeven", "trailing": "trailing", "emergency": "emergency", "initial": "initial"}


def _d(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _pct(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.0001")))


def stop_kind(row: dict[str, Any]) -> str | None:
    if row.get("stop_price") is None:
        return None
    reason = str(row.get("stop_reason") or row.get("stop_kind") or "initial")
    return _KINDS.get(reason, reason)


def trader_row(row: dict[str, Any], mark: tuple[int, Decimal] | None, now_ms: int, *, trailing_enabled: bool = True, verified_ms: int | None = None) -> dict[str, Any]:
    """``row`` (a projection row) with the trader's figures added; ``verified_ms``: the last reconcile
    that found the exchange agreeing with every position (it verified this one if it opened before)."""
    entry, qty, stop = _d(row.get("entry_price")), _d(row.get("quantity")), _d(row.get("stop_price"))
    long = row.get("side") == "long"
    price = mark[1] if mark else None
    distance = upnl = upnl_pct = None
    if price is not None and price > 0 and stop is not None:
        distance = _pct(((price - stop) if long else (stop - price)) / price * _HUNDRED)
    if price is not None and entry is not None and entry > 0 and qty is not None:
        diff = (price - entry) if long else (entry - price)
        upnl = str(diff * qty)
        upnl_pct = _pct(diff / entry * _HUNDRED)
    if row.get("trail_active"):
        trailing = "active"
    elif trailing_enabled and row.get("is_open", True):
        trailing = "armed"
    else:
        trailing = "off"
    start = row.get("aged_from_ms") or row.get("opened_ts_ms")
    tps = [
        {"level": tp.get("level"), "price": str(tp.get("price")), "qty": str(tp.get("qty")), "filled": bool(tp.get("filled")), "live": bool(tp.get("order_id")) and not tp.get("filled")}
        for tp in row.get("tps") or ()
    ]
    return {
        **row,
        "mark": None if price is None else str(price),
        "mark_ts_ms": None if mark is None else mark[0],
        "stop_kind": stop_kind(row),
        "stop_distance_percent": distance,
        "unrealised_pnl": upnl,
        "unrealised_pnl_percent": upnl_pct,
        "trailing": trailing,
        "trail_best": None if row.get("trail_best") is None else str(row["trail_best"]),
        "take_profits": tps,
        "age_ms": (now_ms - int(start)) if start else None,
        "age_h": round((now_ms - int(start)) / _HOUR_MS, 2) if start else None,
        "aged_phase": row.get("aged_phase") or "",
        "last_verified_ms": verified_ms if verified_ms is not None and row.get("opened_ts_ms") is not None and verified_ms >= int(row["opened_ts_ms"]) else None,
    }
