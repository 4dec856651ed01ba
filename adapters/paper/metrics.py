"""What the user cares about, integrated over engine time.

The engine calls :meth:`Measurements.advance` with the new time *before* every
state change and on every mark: the interval since the previous call is
charged to the state that held during it. That state is kept per symbol: after
a change the engine re-assesses only the symbols it touched (:func:`assess` over
that symbol's positions and open orders) and hands the result to
:meth:`Measurements.set_symbol`, so a call costs O(1) in the number of positions,
not O(N). The global sums move at every ``advance`` (counts x elapsed); a
position's episode and a symbol's totals are charged lazily, when their state
changes or before anything reads them (:meth:`Measurements.settle`).

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
    #: The state being charged since ``charged_ms`` (None: not assessed yet, or closed).
    unprotected_now: bool = False
    overlap_now: bool = False
    charged_ms: int | None = None

    def settle(self, to_ms: int) -> None:
        """Charge the time since ``charged_ms`` to the state that held."""
        if self.closed_ms is not None:
            to_ms = min(to_ms, self.closed_ms)  # nothing is charged after the close
        if self.charged_ms is None or to_ms <= self.charged_ms:
            return
        dt = to_ms - self.charged_ms
        self.charged_ms = to_ms
        self.open_ms += dt
        if self.unprotected_now:
            self.unprotected_ms += dt
            self.current_stretch_ms += dt
            if self.current_stretch_ms > self.max_unprotected_stretch_ms:
                self.max_unprotected_stretch_ms = self.current_stretch_ms
                self.max_stretch_started_ms = to_ms - self.current_stretch_ms
        else:
            self.current_stretch_ms = 0
        if self.overlap_now:
            self.overlap_ms += dt


#: Fields of the lazy charging, persisted with the rest but never part of a report.
BOOKKEEPING = frozenset({"unprotected_now", "overlap_now", "charged_ms", "unprotected_count", "overlap_count", "orphan_count"})


def public(record: msgspec.Struct) -> dict:
    """An episode or a symbol's totals as reported: without the charging bookkeeping."""
    return {k: v for k, v in msgspec.to_builtins(record).items() if k not in BOOKKEEPING}


class SymbolTotals(msgspec.Struct, kw_only=True):
    unprotected_ms: int = 0
    overlap_ms: int = 0
    orphan_ms: int = 0
    #: What is being charged since ``charged_ms``: positions unprotected / overlapping, orphan orders.
    unprotected_count: int = 0
    overlap_count: int = 0
    orphan_count: int = 0
    charged_ms: int | None = None

    def settle(self, to_ms: int) -> None:
        if self.charged_ms is not None and to_ms > self.charged_ms:
            dt = to_ms - self.charged_ms
            self.unprotected_ms += dt * self.unprotected_count
            self.overlap_ms += dt * self.overlap_count
            self.orphan_ms += dt * self.orphan_count
        self.charged_ms = to_ms


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

    #: Positions unprotected / overlapping and orphan orders now, over every symbol.
    unprotected_count: int = 0
    overlap_count: int = 0
    orphan_count: int = 0

    def advance(self, now_ms: int) -> None:
        """Charge the interval since the last call to the state that held during it (O(1))."""
        if self.last_ms is None or now_ms <= self.last_ms:
            self.last_ms = now_ms if self.last_ms is None else self.last_ms
            return
        dt = now_ms - self.last_ms
        self.last_ms = now_ms
        self.unprotected_ms += dt * self.unprotected_count
        self.overlap_ms += dt * self.overlap_count
        self.orphan_ms += dt * self.orphan_count

    def set_symbol(self, symbol: str, status: dict[str, tuple[bool, bool]], orphans: int, keys: Iterable[str]) -> None:
        """The state of ``symbol`` from now (``last_ms``) on: ``status`` of its open position keys,
        ``orphans`` open orders without their position; ``keys``: every key it may have had."""
        at = self.last_ms
        if at is None:
            return
        tot = self._sym(symbol)
        tot.settle(at)
        for key in keys:
            ep = self.episodes.get(key)
            if ep is None:
                continue
            ep.settle(at)
            new = status.get(key)
            if ep.charged_ms is not None:  # it was being charged: take its old state out of the counts
                self._count(tot, ep.unprotected_now, ep.overlap_now, -1)
            if new is None or ep.closed_ms is not None:
                ep.charged_ms = None
                continue
            ep.unprotected_now, ep.overlap_now = new
            ep.charged_ms = at if ep.charged_ms is None else ep.charged_ms
            self._count(tot, ep.unprotected_now, ep.overlap_now, 1)
        self.orphan_count += orphans - tot.orphan_count
        tot.orphan_count = orphans

    def _count(self, tot: SymbolTotals, unprotected: bool, overlap: bool, sign: int) -> None:
        if unprotected:
            tot.unprotected_count += sign
            self.unprotected_count += sign
        if overlap:
            tot.overlap_count += sign
            self.overlap_count += sign

    def settle(self, symbol: str | None = None) -> None:
        """Charge every episode and symbol (or only ``symbol``'s) up to ``last_ms``, before anything reads them."""
        if self.last_ms is None:
            return
        for ep in self.episodes.values():
            if symbol is None or ep.symbol == symbol:
                ep.settle(self.last_ms)
        for name, tot in self.symbols.items():
            if symbol is None or name == symbol:
                tot.settle(self.last_ms)

    def _sym(self, symbol: str) -> SymbolTotals:
        tot = self.symbols.get(symbol)
        if tot is None:
            tot = self.symbols[symbol] = SymbolTotals()
        return tot

    def position_opened(self, pos: Position, now_ms: int) -> None:
        key = f"{pos.symbol}|{pos.pos_side}"
        old = self.episodes.get(key)
        if old is not None:
            if old.charged_ms is not None:  # closed and reopened before its symbol was re-assessed
                old.settle(now_ms)
                self._count(self._sym(old.symbol), old.unprotected_now, old.overlap_now, -1)
                old.charged_ms = None
            self.closed_episodes.append(old)
        self.episodes[key] = Episode(symbol=pos.symbol, pos_side=pos.pos_side, side=pos.side, opened_ms=now_ms)
        self.positions_opened += 1
        self._sym(pos.symbol)

    def position_closed(self, pos: Position, now_ms: int, *, liquidated: bool = False) -> None:
        ep = self.episodes[f"{pos.symbol}|{pos.pos_side}"]
        ep.settle(now_ms)  # charged up to the close; the symbol's next assessment takes it out of the counts
        ep.closed_ms = now_ms
        ep.liquidated = liquidated
        ep.current_stretch_ms = 0

    def max_unprotected_stretch_ms(self) -> int:
        self.settle()
        eps = list(self.episodes.values()) + self.closed_episodes
        return max((e.max_unprotected_stretch_ms for e in eps), default=0)

    def snapshot(self) -> dict:
        self.settle()
        return msgspec.to_builtins(self)

    @classmethod
    def restore(cls, data: dict) -> Measurements:
        return msgspec.convert(data, cls)
