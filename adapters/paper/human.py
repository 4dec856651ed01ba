"""What a human does on the venue's UI, behind the bot's back (mixed into the paper engine).

Tests and the demo use these to act as that human: every action is an ordinary
order or cancel of the engine with ``origin="external"``, so it is measured,
pushed on the streams and persisted like any other.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from adapters.paper.model import Order, OrderRequest

if TYPE_CHECKING:
    from adapters.markets import Market
    from adapters.paper.engine import EngineConfig
    from adapters.paper.model import Position


class HumanActions:
    """Expects the engine's ``place``, ``cancel_order``, ``create_order``, ``positions``, ``config``, ``_begin``, ``_market``."""

    if TYPE_CHECKING:  # what the engine provides (declared for the type checker only)
        config: EngineConfig
        positions: dict[str, Position]

        def _begin(self, now_ms: int) -> int: ...
        def _market(self, symbol: str) -> Market: ...
        def place(self, req: OrderRequest, *, now_ms: int, partial_fill_prob: float | None = None, origin: str = "api") -> Order: ...
        def cancel_order(self, order_id: str | None, *, now_ms: int, symbol: str | None = None, client_id: str | None = None, origin: str = "api") -> Order: ...
        def create_order(self, symbol: str, type: str, side: str, amount: Any, price: Any = None, params: dict | None = None, *, now_ms: int, partial_fill_prob: float | None = None, origin: str = "api") -> Order: ...

    def external_close_position(self, symbol: str, now_ms: int, side: str | None = None) -> list[Order]:
        """A human closes the position(s) on ``symbol`` (hedge: only ``side`` if given) at market."""
        self._begin(now_ms)
        sym = self._market(symbol).symbol
        done = []
        for pos in [p for p in self.positions.values() if p.symbol == sym and (side is None or p.side == side)]:
            req = OrderRequest(symbol=sym, side="sell" if pos.side == "long" else "buy", kind="market", amount=pos.size, reduce_only=True, pos_side=None if pos.pos_side == "both" else pos.pos_side)
            done.append(self.place(req, now_ms=now_ms, partial_fill_prob=0.0, origin="external"))
        return done

    def external_cancel_order(self, order_id: str, now_ms: int) -> Order:
        """A human cancels an order on the venue's UI."""
        return self.cancel_order(order_id, now_ms=now_ms, origin="external")

    def external_open_position(self, symbol: str, side: str, qty: Decimal, now_ms: int) -> Order:
        """A human opens (or adds to) a position; ``side`` is long/short (or buy/sell)."""
        buy = side in ("long", "buy")
        pos_side = ("long" if buy else "short") if self.config.hedge_mode else None
        req = OrderRequest(symbol=symbol, side="buy" if buy else "sell", kind="market", amount=Decimal(str(qty)), pos_side=pos_side)
        return self.place(req, now_ms=now_ms, partial_fill_prob=0.0, origin="external")

    def external_place_order(self, symbol: str, type: str, side: str, amount: Any, now_ms: int, params: dict | None = None) -> Order:
        """A human places any order (ccxt-style arguments)."""
        return self.create_order(symbol, type, side, amount, None, params, now_ms=now_ms, partial_fill_prob=0.0, origin="external")
