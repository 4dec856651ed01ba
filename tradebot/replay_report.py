"""The figures of one replay, from the exchange's own record and the bot's events; the side-by-side table.

Money comes from the paper exchange's fills (what the venue charged and
paid: realised PnL of every reducing fill, every fee, liquidation included),
attributed to a position by the client order id the bot put on the order
(a liquidation fill, which carries none, to the position open on that symbol
then). Exit reasons, stop moves and times come from the position events.
The equity curve is the starting balance plus realised net PnL, stepped at
each instant with fills (one point per instant: the order of fills at the same
virtual time depends on thread scheduling, their sum does not; open positions
are not marked to market in it); its maximum
drawdown is the largest fall from a running peak. Nothing here depends on
wall time, so two replays of the same inputs give the same report.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from typing import Any

from core.ids import ClientOrderId

D0 = Decimal(0)
HOUR_MS = 3_600_000


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(str(v))


def _exit_reason(e: Any) -> str:
    d = e.data
    if d.get("forced"):
        return str(d["forced"])
    if d.get("outside"):
        return "outside"
    reason = str(d.get("reason") or "unknown")
    if e.type == "position.rolled_back":
        return "rolled back"
    if reason.startswith("aged"):
        return reason.split("%")[0].rstrip(" 0123456789.") if "progressive" in reason else reason
    return reason


#: A stop fill is named for what the stop was when it filled; the first stop (and its restores) is "stop".
_STOP_KINDS = {"initial": "stop", "restore": "stop", "emergency": "emergency stop"}


def build_report(cfg: Any, engine: Any, exchange: Any, events: list[Any], start_ms: int, end_ms: int, *, faults: str = "off") -> dict[str, Any]:
    pos: dict[str, dict[str, Any]] = {}
    stop_moves = 0
    tp_fills = 0
    for e in events:
        pid = e.position_id
        if not pid or not e.type.startswith("position."):
            continue
        p = pos.setdefault(pid, {"symbol": e.symbol, "entry_ms": None, "exit_ms": None, "reason": None, "side": None, "entry_price": None, "exit_price": None, "stops": []})
        if e.type == "position.entry_filled":
            p["entry_ms"] = p["entry_ms"] or e.ts_ms
            p["entry_price"] = p["entry_price"] or e.data.get("price")
        elif e.type == "position.open_requested":
            p["side"] = e.data.get("side")
        elif e.type in ("position.closed", "position.stop_filled", "position.rolled_back"):
            p["exit_ms"], p["reason"] = e.ts_ms, _exit_reason(e)
            if e.type == "position.stop_filled" and not e.data.get("forced") and not e.data.get("outside"):
                p["reason"] = _STOP_KINDS.get(p.get("stop_reason") or "initial", p.get("stop_reason"))  # what the stop was at: trailing, breakeven...
            p["exit_price"] = e.data.get("exit_price")
        elif e.type in ("position.stop_placed", "position.stop_moved"):
            p["stops"].append([e.ts_ms, str(e.data.get("price"))])
            p["stop_reason"] = e.data.get("reason") or e.data.get("kind")
            stop_moves += e.type == "position.stop_moved"
        elif e.type == "position.tp_filled":
            tp_fills += 1
    opened = {pid: p for pid, p in pos.items() if p["entry_ms"] is not None}
    net: dict[str, Decimal] = dict.fromkeys(opened, D0)
    fees = D0
    unattributed = D0
    curve: list[tuple[int, Decimal]] = []
    equity = Decimal(cfg.paper.starting_balance)
    for f in sorted(engine.fills, key=lambda f: (f.ts_ms, f.id)):
        amount = f.realized_pnl - f.fee
        fees += f.fee
        coid = ClientOrderId.parse(f.client_id)
        pid = coid.position_id if coid else _open_on(opened, f.symbol, f.ts_ms)
        if pid in net:
            net[pid] += amount
        else:
            unattributed += amount
        equity += amount
        if curve and curve[-1][0] == f.ts_ms:
            curve[-1] = (f.ts_ms, equity)  # one point per instant: fills at the same time come in the order threads ran
        else:
            curve.append((f.ts_ms, equity))
    peak, max_dd = Decimal(cfg.paper.starting_balance), D0
    for _ts, eq in curve:
        peak = max(peak, eq)
        max_dd = max(max_dd, peak - eq)
    closed = [pid for pid, p in opened.items() if p["exit_ms"] is not None]
    results = [net[pid] for pid in closed]
    losses = [r for r in results if r < 0]
    in_market_ms = sum((p["exit_ms"] or end_ms) - p["entry_ms"] for p in opened.values())
    position_hours = Decimal(in_market_ms) / HOUR_MS
    requests = len(exchange.requests)
    failed = sum(1 for r in exchange.requests if r["outcome"] != "ok")
    metrics = engine.metrics(end_ms)
    per_position = sorted(
        ({"symbol": p["symbol"], "side": p["side"], "entry_ms": p["entry_ms"], "exit_ms": p["exit_ms"], "exit": p["reason"] or "open at end", "net_pnl": str(net[pid]),
          "entry_price": _txt(p["entry_price"]), "exit_price": _txt(p["exit_price"]), "stops": p["stops"]} for pid, p in opened.items()),
        key=lambda r: (r["entry_ms"], r["symbol"] or ""),
    )

    def per_hour(n: int) -> str:
        return str((Decimal(n) / position_hours).quantize(Decimal("0.01"))) if position_hours else "0"

    return {
        "window": {"from_ms": start_ms, "to_ms": end_ms},
        "faults": faults,
        "positions_opened": len(opened),
        "positions_open_at_end": len(opened) - len(closed),
        "exits_by_reason": dict(sorted(Counter(opened[pid]["reason"] for pid in closed).items())),
        "take_profit_fills": tp_fills,
        "realised_pnl_net": str(sum(net.values(), D0) + unattributed),
        "fees": str(fees),
        "win_rate_percent": str((Decimal(sum(1 for r in results if r > 0)) * 100 / len(results)).quantize(Decimal("0.1"))) if results else "-",
        "average_loss": str((sum(losses, D0) / len(losses)).quantize(Decimal("0.0001"))) if losses else "0",
        "worst_loss": str(min(losses)) if losses else "0",
        "max_drawdown": str(max_dd),
        "time_in_market_hours": str(position_hours.quantize(Decimal("0.01"))),
        "stop_moves_per_position_hour": per_hour(stop_moves),
        "requests_per_position_hour": per_hour(requests),
        "requests": requests,
        "requests_failed": failed,
        "unprotected_ms": int(metrics["unprotected_ms"]),
        "max_unprotected_stretch_ms": int(metrics["max_unprotected_stretch_ms"]),
        "two_stop_overlap_ms": int(metrics["overlap_ms"]),
        "liquidations": int(metrics["liquidations"]),
        "positions": per_position,
        "equity_curve": [[start_ms, str(cfg.paper.starting_balance)], *([ts, str(eq)] for ts, eq in curve)],
    }


def _txt(v: Any) -> str | None:
    return None if v is None else str(v)


def _open_on(opened: dict[str, dict[str, Any]], symbol: str, ts: int) -> str | None:
    for pid, p in opened.items():
        if p["symbol"] and symbol.replace("/", "").split(":")[0] == p["symbol"].replace("/", "").split(":")[0] and p["entry_ms"] <= ts <= (p["exit_ms"] or ts):
            return pid
    return None


ROWS = (
    ("faults", "faults"),
    ("positions opened", "positions_opened"),
    ("open at end", "positions_open_at_end"),
    ("exits by reason", "exits_by_reason"),
    ("take-profit fills", "take_profit_fills"),
    ("realised PnL (net of fees)", "realised_pnl_net"),
    ("fees", "fees"),
    ("win rate %", "win_rate_percent"),
    ("average loss", "average_loss"),
    ("worst loss", "worst_loss"),
    ("max drawdown", "max_drawdown"),
    ("time in market (h)", "time_in_market_hours"),
    ("stop moves / position-hour", "stop_moves_per_position_hour"),
    ("requests / position-hour", "requests_per_position_hour"),
    ("requests", "requests"),
    ("failed requests", "requests_failed"),
    ("unprotected ms", "unprotected_ms"),
    ("two-stop overlap ms", "two_stop_overlap_ms"),
    ("liquidations", "liquidations"),
)


def _cell(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {n}" for k, n in v.items()) or "-"
    return str(v)


OBJECTIVES = ("pnl", "pnl_drawdown")


def score(report: dict[str, Any], objective: str) -> Decimal:
    """A run's figure of merit: net realised PnL, or that over the max drawdown (a run without a drawdown: its PnL)."""
    pnl = Decimal(report["realised_pnl_net"])
    if objective == "pnl":
        return pnl
    if objective == "pnl_drawdown":
        dd = Decimal(report["max_drawdown"])
        return pnl / dd if dd else pnl
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")


def best(results: list[Any], objective: str) -> int | None:
    """The index of the best run by ``objective`` (the first on a tie); None for a single run."""
    if len(results) < 2:
        return None
    scores = [score(r.report, objective) for r in results]
    return scores.index(max(scores))


WARNING = "a comparison on one window overfits: check the winner on another window before trusting it"


def table(results: list[Any], objective: str = "pnl") -> str:
    """Configurations side by side: one column each; the best by ``objective`` marked with ``*``.
    Only replayed figures (no wall time), so the same inputs print the same bytes."""
    top = best(results, objective)
    header = ["", *[("* " if i == top else "") + r.label for i, r in enumerate(results)]]
    rows = [[name, *[_cell(r.report[key]) for r in results]] for name, key in ROWS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out.extend("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
    if top is not None:
        out.append(f"\n* best by {objective}; {WARNING}")
    return "\n".join(out)


def to_json(results: list[Any], objective: str = "pnl") -> str:
    """The reports (no wall time: the same inputs give the same bytes), the objective and the best run."""
    top = best(results, objective)
    body = {"objective": objective, "best": None if top is None else results[top].label, "runs": [{"label": r.label, "report": r.report} for r in results]}
    return json.dumps(body, indent=1, sort_keys=True)
