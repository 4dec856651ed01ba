"""``tradebot ctl close`` / ``close-all``: wait for the exit to be committed, then report the fill.

The bot answers ``close`` at once (``{"closing": [child names]}``): the position's owner sends the
order and records the exit when the venue confirms it. Waiting happens here, in the client: it reads
the event store (read-only, as ``tradebot events`` does) until each position's exit event
(``position.closed``, ``position.stop_filled`` or ``position.rolled_back``) is committed, bounded by
``--wait``. No actor waits for anyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradebot import numbers as num

#: The events that end a position (what the owner records once the venue confirmed the exit).
EXIT_TYPES = ("position.closed", "position.stop_filled", "position.rolled_back")

EXIT_STILL_CLOSING = 5


def position_ids(closing: list[str]) -> dict[str, str]:
    """``position:<SYMBOL>:<id>`` child names -> {id: SYMBOL}."""
    out = {}
    for name in closing:
        parts = str(name).split(":")
        if len(parts) >= 3:
            out[parts[-1]] = parts[1]
    return out


def exit_row(event: Any, projection: dict[str, Any] | None) -> dict[str, Any]:
    """One closed position as ``--json`` prints it: exact Decimal strings (None where unknown)."""
    from actors.position_events import from_record

    data = event.data or {}
    try:
        typed: Any = from_record(event)
    except Exception:  # an old or foreign row: the raw data still holds the figures
        typed = None
    fee = getattr(typed, "fee", None) if typed is not None else data.get("fee")
    qty = _close_qty(projection)
    return {
        "position_id": event.position_id,
        "symbol": event.symbol or (projection or {}).get("symbol"),
        "event": event.type,
        "event_id": event.id,
        "ts_ms": event.ts_ms,
        "reason": data.get("reason"),
        "exit_price": _s(getattr(typed, "exit_price", None) if typed is not None else data.get("exit_price")),
        "quantity": _s(qty),
        "pnl": _s(getattr(typed, "pnl", None) if typed is not None else data.get("pnl")),
        "fee": _s(fee),
        "outside": bool(data.get("outside")),
    }


def _close_qty(projection: dict[str, Any] | None) -> Any:
    """The quantity the exit took: the position's quantity as its record holds it at the exit."""
    if not projection:
        return None
    return projection.get("quantity")


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def wait_for_exits(store_path: Path, ids: dict[str, str], wait_s: float, *, since_ms: int, poll_s: float = 0.2,
                   monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Poll the store until every position in ``ids`` has a committed exit event, or ``wait_s`` passed.

    Returns (closed rows, ids still closing, the last close failure seen for those, if any)."""
    from adapters.event_store import EventStore
    from adapters.io_loop import IOLoop

    io = IOLoop("ctl-close").start()
    store = None
    try:
        deadline = monotonic() + wait_s
        done: dict[str, dict[str, Any]] = {}
        while True:
            if store is None and Path(store_path).exists():
                store = EventStore(store_path, io, readonly=True).open()
            if store is not None:
                for pid in [p for p in ids if p not in done]:
                    found = io.run(store.query(position_id=pid, types=EXIT_TYPES, limit=1, consistent=False), 10)
                    if found:
                        rows = io.run(store.positions(open_only=False, consistent=False), 10)
                        projection = next((r for r in rows if r.get("position_id") == pid), None)
                        done[pid] = exit_row(found[0], projection)
            pending = [p for p in ids if p not in done]
            if not pending or monotonic() >= deadline:
                break
            sleep(poll_s)
        failure = None
        if pending and store is not None:
            failed = io.run(store.query(types=("position.close_failed",), since_ms=since_ms, newest_first=True, limit=50, consistent=False), 10)
            last = next((e for e in failed if e.position_id in pending), None)
            if last is not None:
                failure = f"{last.position_id}: a close attempt failed at {num.when(last.ts_ms)} ({num.exact(last.data.get('remaining'))} left); the bot keeps trying"
        return [done[p] for p in ids if p in done], pending, failure
    finally:
        if store is not None:
            store.close()
        io.stop()


def render_exits(closed: list[dict[str, Any]], increments: Callable[[str | None], tuple[Any, Any]]) -> str:
    """Human lines: ``closed BTCUSDT a1b2c3d4e5: 0.025 at 40100.0, realised PnL 2.50 USDT, fee 0.40 USDT (user command)``."""
    lines = []
    for r in closed:
        tick, step = increments(r.get("symbol"))
        ccy = "USDC" if str(r.get("symbol") or "").replace("/", "").split(":")[0].endswith("USDC") else "USDT"
        parts = [f"{num.qty(r['quantity'], step) or '?'} at {num.price(r['exit_price'], tick) or '?'}",
                 f"realised PnL {num.money(r['pnl'], ccy) or 'unknown'}"]
        if r.get("fee") is not None:
            parts.append(f"fee {num.money(r['fee'], ccy)}")
        how = {"position.stop_filled": "stopped out", "position.rolled_back": "rolled back"}.get(r["event"], "closed")
        lines.append(f"{how} {r.get('symbol') or ''} {r['position_id']}: {', '.join(parts)}" + (f" ({r['reason']})" if r.get("reason") else ""))
    return "\n".join(lines)
