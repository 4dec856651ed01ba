"""``tradebot trace``: read a position's events from the store and print its timeline."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from actors.position_timeline import Timeline, build_timeline, describe
from tradebot import numbers as num


def _norm(symbol: str) -> str:
    """``BTC/USDT:USDT``, ``BTCUSDT`` and ``btcusdt`` all compare equal."""
    s = symbol.upper().split(":", 1)[0]
    return s.replace("/", "").replace("-", "")


def pick_position(rows: list[dict[str, Any]], wanted: str) -> tuple[dict[str, Any] | None, str | None]:
    """The projection row for an id (exact or unique prefix) or a symbol (its open one, else its newest)."""
    exact = [r for r in rows if r.get("position_id") == wanted]
    if exact:
        return exact[0], None
    prefix = [r for r in rows if str(r.get("position_id", "")).startswith(wanted)]
    if len(prefix) == 1:
        return prefix[0], None
    by_symbol = [r for r in rows if r.get("symbol") and _norm(str(r["symbol"])) == _norm(wanted)]
    if not by_symbol:
        return None, f"no position with id or symbol {wanted!r}"
    open_rows = [r for r in by_symbol if r.get("is_open")]
    pool = open_rows or by_symbol
    pool.sort(key=lambda r: int(r.get("last_event_id") or 0))
    note = None
    if len(pool) > 1:
        note = f"{len(pool)} {'open ' if open_rows else ''}positions on {wanted}; showing the newest ({pool[-1]['position_id']}); others: {', '.join(str(r['position_id']) for r in pool[:-1])}"
    return pool[-1], note


def market_increments(config: Any) -> Callable[[str | None], tuple[Any, Any]]:
    """``symbol -> (tick, step)`` from the market data the CLI can read without the exchange (the paper
    venue's market file); ``(None, None)`` where unknown, and numbers then print exact."""
    markets = None
    if config.exchange.name == "paper":
        try:
            from adapters.markets import Markets
            from adapters.paper.hosting import markets_path

            markets = Markets.from_file(markets_path(config))
        except (OSError, ValueError, KeyError):
            markets = None

    def look(symbol: str | None) -> tuple[Any, Any]:
        if markets is None or not symbol:
            return None, None
        try:
            m = markets.resolve(symbol)
        except KeyError:
            return None, None
        return m.tick_size, m.step_size

    return look


def render_timeline(tl: Timeline, row: dict[str, Any] | None = None, tick: Any = None, step: Any = None) -> str:
    row = row or {}
    state = "closed" if tl.closed_ms is not None else str(row.get("state") or "open")
    lines = [f"position {tl.position_id}  {tl.symbol or ''} {tl.side or ''}  {state}".rstrip()]
    if row.get("entry_price") is not None:
        lines.append(f"entry:      {num.qty(row.get('quantity'), step)} at {num.price(row.get('entry_price'), tick)}")
    if tl.closed_ms is not None:
        lines.append(f"exit:       {tl.exit_reason or '?'}" + (f" at {num.price(tl.exit_price, tick)}" if tl.exit_price else "") + (f", pnl {num.money(tl.pnl, _quote(tl.symbol))}" if tl.pnl else ""))
    if tl.closed_ms is not None:
        lines.append(f"fees:       {num.fees(tl.fees, tl.fills_without_fee, _quote(tl.symbol))}" + (f", net pnl {num.money(tl.net_pnl, _quote(tl.symbol))}" if tl.net_pnl is not None else ""))
    if tl.opened_ms is not None:
        end = tl.closed_ms if tl.closed_ms is not None else tl.steps[-1].ts_ms
        lines.append(f"held:       {num.duration(end - tl.opened_ms)}{'' if tl.closed_ms is not None else ' (to the last event)'}")
    lines.append(f"entry fill -> stop live: {num.duration(tl.entry_to_stop_ms) if tl.entry_to_stop_ms is not None else 'no stop seen'}")
    for o in tl.overlaps:
        lines.append(f"stop move {num.price(o.old_price, tick)} -> {num.price(o.new_price, tick)} ({o.reason}): two stops for {num.duration(o.duration_ms)}")
    if tl.unprotected:
        for i in tl.unprotected:
            took = num.duration(i.duration_ms) if i.duration_ms is not None else "still"
            lines.append(f"UNPROTECTED {took} from {num.when(i.start_ms)} ({i.began.removeprefix('position.')}" + (f" -> {i.ended.removeprefix('position.')})" if i.ended else ")"))
    else:
        lines.append("unprotected after the first stop: never")
    lines.append("")
    for s in tl.steps:
        lines.append(f"{num.when(s.ts_ms)}  +{num.duration(s.since_prev_ms):>9}  {describe(s)}")
    return "\n".join(lines)


def _quote(symbol: str | None) -> str:
    if symbol and ":" in symbol:
        return symbol.rsplit(":", 1)[1]
    if symbol and "/" in symbol:
        return symbol.split("/", 1)[1]
    return "USDT"


def cmd_trace(args: argparse.Namespace, config: Any) -> int:
    from adapters.event_store import EventStore
    from adapters.io_loop import IOLoop

    io = IOLoop("trace-cli").start()
    try:
        store = EventStore(config.store_path, io, readonly=True).open()
    except FileNotFoundError:
        io.stop()
        print(f"tradebot trace: no event store at {config.store_path} (has the bot run yet?)", file=sys.stderr)
        return 1
    try:
        rows = io.run(store.positions(open_only=False, consistent=False), 30)
        row, note = pick_position(rows, args.position)
        events = io.run(store.query(position_id=row["position_id"], limit=None), 30) if row else []
    finally:
        store.close()
        io.stop()
    if row is None:
        print(f"tradebot trace: {note}", file=sys.stderr)
        return 1
    if note:
        print(f"tradebot trace: {note}", file=sys.stderr)
    tl = build_timeline(events)
    if args.json:
        print(json.dumps(msgspec.to_builtins(tl), indent=1, default=str))
    else:
        tick, step = market_increments(config)(tl.symbol or row.get("symbol"))
        print(render_timeline(tl, row, tick, step))
    return 0


# ----------------------------------------------------------------- pnl
def render_pnl(summaries: list[Any], by: str | None) -> str:
    from actors.pnl_summary import Summary

    rows: list[list[str]] = []
    missing = 0
    for s in summaries:
        assert isinstance(s, Summary)
        missing += s.fills_without_fee
        rows.append([
            s.key, str(s.count), num.money(s.pnl, "USDT"), num.fees(s.fees, s.fills_without_fee),
            num.money(s.net_pnl, "USDT") if s.net_pnl is not None else "-", num.percent(s.win_rate) if s.win_rate is not None else "-",
            num.duration(s.avg_hold_ms) if s.avg_hold_ms is not None else "-",
            ", ".join(f"{r} {n}" for r, n in s.exits_by_reason.items()) or "-",
        ])
    head = [by or "trades", "count", "realised pnl (gross)", "fees", "net pnl", "win rate", "avg hold", "exits by reason"]
    note = "\ngross: the realised figure stored with each exit; fees: what the venue reported on each fill (entry and exits); net: gross - fees"
    if missing:
        note += f"\n{missing} fill{'s' if missing != 1 else ''} without a recorded fee (the venue reported none, or stored before fees were recorded): net not shown where fees are incomplete"
    return num.table(head, rows) + note


def cmd_pnl(args: argparse.Namespace, config: Any) -> int:
    import time

    from actors.pnl_summary import closed_trades, grouped
    from adapters.event_store import EventStore
    from adapters.io_loop import IOLoop
    from tradebot.cli import parse_since

    try:
        since = parse_since(args.since, time.time_ns() // 1_000_000) if args.since else None
    except ValueError as exc:
        print(f"tradebot pnl: {exc}", file=sys.stderr)
        return 2
    io = IOLoop("pnl-cli").start()
    try:
        store = EventStore(config.store_path, io, readonly=True).open()
    except FileNotFoundError:
        io.stop()
        print(f"tradebot pnl: no event store at {config.store_path} (has the bot run yet?)", file=sys.stderr)
        return 1
    try:
        rows = io.run(store.positions(open_only=False, consistent=False), 30)
        timelines = [build_timeline(io.run(store.query(position_id=r["position_id"], limit=None), 30)) for r in rows]
    finally:
        store.close()
        io.stop()
    summaries = grouped(closed_trades(timelines, since), args.by)
    if args.json:
        print(json.dumps(msgspec.to_builtins(summaries), indent=1, default=str))
    else:
        print(render_pnl(summaries, args.by))
    return 0
