"""What the user cares about, integrated over engine time.

The engine calls :meth:`Measurements.accrue` with the new time *before* every
state change and on every mark: the interval since the previous call is
charged to the state that held during it (:func:`assess`, cached by the
engine until the next change).

- **unprotected**: a position is open and the live closing stops on its
  protective side (reduce-only or closePosition stop-loss orders, or
  hedge-mode stops on the side they close) cover less than its size
  (a closePosition stop covers any size). Summed over positions
  (position-ms), with the longest single stretch.
- **overlap**: two or more such stops are live on the same position
  (duplicate stops).
- **orphans**: open reduce-only / closePosition orders, or any open stop,
  whose target position (symbol + the side it would close) is flat.
  Summed over orders (order-ms).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import msgspec

from adapters.paper.model import FALLING, RISING, Order, Position


class Episode(msgspec.Struct, kw_only=True):
    """One position's life on one (symbol, position side) key, from open to flat."""

    symbol: str
    pos_side: str
    side: str
    opened_ms: int
    closed_ms: int | None = None
    open_ms: int = 0
    unprotected_ms: int = 0
    overlap_ms: int = 0
    max_unprotected_stretch_ms: int = 0
    current_stretch_ms: int = 0
    #: When the longest stretch began (engine ms), to tell one across a bot's downtime from one it caused.
    max_stretch_started_ms: int | None = None
    liquidated: bool = False


class SymbolTotals(msgspec.Struct, kw_only=True):
    unprotected_ms: int = 0
    overlap_ms: int = 0
    orphan_ms: int = 0


def protects(order: Order, pos: Position) -> bool:
    """Whether ``order`` is a live stop-loss that closes ``pos``."""
    if order.status != "open" or not order.is_stop or order.symbol != pos.symbol:
        return False
    if order.reduces_side() != pos.side or not order.is_closing():
        return False
    if pos.pos_side != "both" and order.pos_side != pos.pos_side:
        return False
    stop_dir = FALLING if pos.side == "long" else RISING
    return order.trigger_direction == stop_dir


def assess(positions: Iterable[Position], open_orders: Iterable[Order]) -> tuple[dict[str, tuple[bool, bool]], list[Order]]:
    """Per position key: (unprotected, overlapping); and the orphan orders."""
    orders = list(open_orders)
    by_symbol: dict[str, list[Order]] = {}
    for o in orders:  # one pass, so each position only looks at its own symbol's orders
        by_symbol.setdefault(o.symbol, []).append(o)
    status: dict[str, tuple[bool, bool]] = {}
    live_targets: set[tuple[str, str, str]] = set()
    for pos in positions:
        live_targets.add((pos.symbol, pos.pos_side, pos.side))
        stops = [o for o in by_symbol.get(pos.symbol, ()) if protects(o, pos)]
        covered = any(o.close_position for o in stops) or sum((o.amount for o in stops), Decimal(0)) >= pos.size
        status[f"{pos.symbol}|{pos.pos_side}"] = (not covered, len(stops) >= 2)
    orphans = []
    for o in orders:
        if not (o.is_stop or o.reduce_only or o.close_position):
            continue
        target_side = o.reduces_side() if o.pos_side == "both" else o.pos_side
        if (o.symbol, o.pos_side, target_side) not in live_targets:
            orphans.append(o)
    return status, orphans


class Measurements(msgspec.Struct, kw_only=True):
    """Accumulators, JSON-able through msgspec."""

    last_ms: int | None = None
    unprotected_ms: int = 0
    overlap_ms: int = 0
    orphan_ms: int = 0
    positions_opened: int = 0
    episodes: dict[str, Episode] = {}
    symbols: dict[str, SymbolTotals] = {}
    closed_episodes: list[Episode] = []

    def accrue(self, now_ms: int, status: dict[str, tuple[bool, bool]], orphans: list[Order]) -> None:
        """Charge the interval since the last call to ``status``/``orphans`` (what held during it)."""
        if self.last_ms is None or now_ms <= self.last_ms:
            self.last_ms = now_ms if self.last_ms is None else self.last_ms
            return
        dt = now_ms - self.last_ms
        self.last_ms = now_ms
        for key, (unprotected, overlap) in status.items():
            ep = self.episodes[key]
            tot = self._sym(ep.symbol)
            ep.open_ms += dt
            if unprotected:
                ep.unprotected_ms += dt
                ep.current_stretch_ms += dt
                if ep.current_stretch_ms > ep.max_unprotected_stretch_ms:
                    ep.max_unprotected_stretch_ms = ep.current_stretch_ms
                    ep.max_stretch_started_ms = now_ms - ep.current_stretch_ms
                self.unprotected_ms += dt
                tot.unprotected_ms += dt
            else:
                ep.current_stretch_ms = 0
            if overlap:
                ep.overlap_ms += dt
                self.overlap_ms += dt
                tot.overlap_ms += dt
        for o in orphans:
            self.orphan_ms += dt
            self._sym(o.symbol).orphan_ms += dt

    def _sym(self, symbol: str) -> SymbolTotals:
        tot = self.symbols.get(symbol)
        if tot is None:
            tot = self.symbols[symbol] = SymbolTotals()
        return tot

    def position_opened(self, pos: Position, now_ms: int) -> None:
        key = f"{pos.symbol}|{pos.pos_side}"
        old = self.episodes.get(key)
        if old is not None:
            self.closed_episodes.append(old)
        self.episodes[key] = Episode(symbol=pos.symbol, pos_side=pos.pos_side, side=pos.side, opened_ms=now_ms)
        self.positions_opened += 1
        self._sym(pos.symbol)

    def position_closed(self, pos: Position, now_ms: int, *, liquidated: bool = False) -> None:
        ep = self.episodes[f"{pos.symbol}|{pos.pos_side}"]
        ep.closed_ms = now_ms
        ep.liquidated = liquidated
        ep.current_stretch_ms = 0

    def max_unprotected_stretch_ms(self) -> int:
        eps = list(self.episodes.values()) + self.closed_episodes
        return max((e.max_unprotected_stretch_ms for e in eps), default=0)

    def snapshot(self) -> dict:
        return msgspec.to_builtins(self)

    @classmethod
    def restore(cls, data: dict) -> Measurements:
        return msgspec.convert(data, cls)
