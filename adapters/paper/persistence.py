"""Reading the engine out: measurement reports, and snapshot / restore of all its state.

A snapshot is JSON-able (Decimals as strings) and holds everything, RNG state
included, so a separate process can persist it and continue exactly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from adapters.markets import Markets
from adapters.paper.metrics import Measurements, public
from adapters.paper.model import OPEN, Fill, Order, Position

if TYPE_CHECKING:
    from adapters.paper.engine import PaperEngine


def metrics_report(e: PaperEngine) -> dict[str, Any]:
    """Totals: ms as int, money as Decimal."""
    ms = e.metrics_state
    _status, orphans = e._assess()
    return {
        "now_ms": e.now_ms,
        "unprotected_ms": ms.unprotected_ms,
        "max_unprotected_stretch_ms": ms.max_unprotected_stretch_ms(),
        "overlap_ms": ms.overlap_ms,
        "orphan_orders": len(orphans),
        "orphan_order_ids": [o.id for o in orphans],
        "orphan_ms": ms.orphan_ms,
        "positions_open": len(e.positions),
        "positions_opened": ms.positions_opened,
        "unprotected_now": sum(1 for unprot, _ in _status.values() if unprot),
        "liquidations": e.totals["liquidations"],
        "liquidated_margin": e.totals["liquidated_margin"],
        "realized_pnl": e.totals["realized_pnl"],
        "fees": e.totals["fees"],
        "wallet": e.wallet,
        "initial_balance": e.config.initial_balance,
        "orders": len(e.orders),
        "fills": len(e.fills),
    }


def position_report(e: PaperEngine, symbol: str, side: str | None = None) -> dict[str, Any]:
    """The current (or last) position episode on ``symbol`` (hedge: ``side`` long/short)."""
    sym = e._market(symbol).symbol
    _status, orphans = e._assess()  # the symbol's state is current, then its lazy charges settled
    e.metrics_state.settle(sym)
    eps = [ep for ep in e.metrics_state.episodes.values() if ep.symbol == sym and (side is None or ep.side == side)]
    eps.sort(key=lambda ep: (ep.closed_ms is None, ep.opened_ms))
    out: dict[str, Any] = public(eps[-1]) if eps else {"symbol": sym}
    tot = e.metrics_state.symbols.get(sym)
    out["open"] = bool(eps) and eps[-1].closed_ms is None
    out["orphan_orders"] = sum(1 for o in orphans if o.symbol == sym)
    out["symbol_totals"] = public(tot) if tot else {}
    return out


def snapshot_engine(e: PaperEngine) -> dict[str, Any]:
    """All state as JSON-able data (Decimals as strings)."""
    b = msgspec.to_builtins
    version, state, gauss = e.rng.getstate()
    return {
        "version": 1,
        "config": b(e.config),
        "not_trading": sorted(e.not_trading),
        "restricted": sorted(e.restricted),
        "now_ms": e.now_ms,
        "wallet": str(e.wallet),
        "leverage": dict(e.leverage),
        "positions": {k: b(p) for k, p in e.positions.items()},
        "closed_positions": {k: b(p) for k, p in e.closed_positions.items()},
        "orders": [b(o) for o in e.orders.values()],
        "client_ids": dict(e.client_ids),
        "fills": [b(f) for f in e.fills],
        "marks": {s: str(p) for s, p in e.marks.items()},
        "next_id": e.next_id,
        "rng": [version, list(state), gauss],
        "metrics": e.metrics_state.snapshot(),
        "totals": b(e.totals),
    }


def restore_engine(cls: type[PaperEngine], snapshot: dict[str, Any], markets: Markets) -> PaperEngine:
    """An engine exactly as it was when ``snapshot`` was taken."""
    from adapters.paper.engine import EngineConfig  # engine imports this module

    s = snapshot
    eng = cls(markets, msgspec.convert(s["config"], EngineConfig), not_trading=s["not_trading"], restricted=s["restricted"])
    eng.now_ms = s["now_ms"]
    eng.wallet = Decimal(s["wallet"])
    eng.leverage = dict(s["leverage"])
    eng.positions = {k: msgspec.convert(p, Position) for k, p in s["positions"].items()}
    eng.closed_positions = {k: msgspec.convert(p, Position) for k, p in s["closed_positions"].items()}
    eng.orders = {o["id"]: msgspec.convert(o, Order) for o in s["orders"]}
    eng.open_orders = {k: o for k, o in eng.orders.items() if o.status == OPEN}
    for o in eng.open_orders.values():
        eng.open_by_symbol.setdefault(o.symbol, {})[o.id] = o
    eng.client_ids = dict(s["client_ids"])
    eng.fills = [msgspec.convert(f, Fill) for f in s["fills"]]
    eng.fills_by_id = {f.id: f for f in eng.fills}
    eng.marks = {k: Decimal(v) for k, v in s["marks"].items()}
    eng.next_id = s["next_id"]
    version, state, gauss = s["rng"]
    eng.rng.setstate((version, tuple(state), gauss))
    eng.metrics_state = Measurements.restore(s["metrics"])
    t = s["totals"]
    eng.totals = {"realized_pnl": Decimal(t["realized_pnl"]), "fees": Decimal(t["fees"]), "liquidated_margin": Decimal(t["liquidated_margin"]), "liquidations": int(t["liquidations"])}
    return eng
