"""Take-profit ladder inside the position actor: TP1/TP2, then the stop to breakeven.

Mixed into :class:`~actors.position.PositionActor`. Once the position is
protected, each level (distance from entry, share of the opened quantity)
becomes a reduce-only take-profit order. A share that rounds below the
market's minimum quantity is merged into the next level (seed 000's
degradation case: 0.01/0.01/0.01 of a tiny position); a level that still
cannot be placed is dropped with a reason.

When a TP fills, the stop must follow what is left: :func:`wanted_adjustment`
derives from the state alone (not from memory, so a restart resumes it) the
stop the position should have: breakeven after TP1 (entry plus fees), and the
remaining quantity. The stop move itself is the zero-gap, verified, bounded
move of :mod:`actors.stop_moves` (at most ``trailing.max_move_attempts`` in a
row, then paused for ``trailing.disable_secs`` with a critical event).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from actors.position_state import P
from actors.trailing import better, breakeven_price, on_grid
from adapters.errors import VenueError
from adapters.venue import OrderReport, OrderStatus
from core.events import Severity


def plan_levels(cfg: Any, market: Any, side: str, entry: Decimal, qty: Decimal) -> tuple[list[dict[str, Any]], list[str]]:
    """TP levels to place (level, price, qty) and why any were merged or dropped."""
    notes: list[str] = []
    raw = [(1, cfg.tp1_percent, cfg.tp1_share), (2, cfg.tp2_percent, cfg.tp2_share)]
    levels: list[dict[str, Any]] = []
    carry = Decimal(0)
    for i, (level, pct, share) in enumerate(raw):
        share = share + carry
        carry = Decimal(0)
        if share <= 0:
            continue
        q = market.round_qty(qty * share)
        if q < market.min_qty:
            if i + 1 < len(raw):
                carry = share
                notes.append(f"TP{level}: {qty * share} rounds below the minimum {market.min_qty}; merged into TP{level + 1}")
            else:
                notes.append(f"TP{level}: {qty * share} rounds below the minimum {market.min_qty}; dropped")
            continue
        q = min(q, qty - sum((lv["qty"] for lv in levels), Decimal(0)))
        if q <= 0:
            notes.append(f"TP{level}: nothing left to take")
            continue
        f = pct / Decimal(100)
        price = market.round_price(entry * (1 + f) if side == "long" else entry * (1 - f))
        levels.append({"level": level, "price": price, "qty": q, "order_id": None, "client_id": None, "filled": False})
    return levels, notes


class TakeProfits:
    """Expects the PositionActor's ``state``, ``record``, ``_io``, ``venue``, ``move_stop``."""

    _tp_plan: list[dict[str, Any]] | None = None

    def start_take_profits(self) -> None:
        s, cfg = self.state, self.ctx.config.take_profit
        if not cfg.enabled or s.tps or s.stop_kind == "emergency":
            return
        levels, notes = plan_levels(cfg, self.venue.market(s.symbol), s.side, s.entry_price, s.qty)
        for note in notes:
            self.emit("position.tp_replanned", {"note": note}, severity=Severity.WARNING, position_id=self.pid, symbol=s.symbol)
        self._tp_plan = levels
        self._place_next_tp()

    def _place_next_tp(self) -> None:
        """Look the next level up by its client id first: placing is idempotent across restarts."""
        s = self.state
        todo = [lv for lv in self._tp_plan or [] if lv["order_id"] is None]
        if not todo or s.state is not P.PROTECTED:
            return
        lv = todo[0]
        lv["client_id"] = f"tb-{self.pid}-t{lv['level']}"
        self._io("tp_lookup", self.venue.fetch_order(s.symbol, client_id=lv["client_id"]))

    def _after_tp_lookup(self, order: OrderReport | None, error: VenueError | None) -> None:
        s = self.state
        lv = next(lv for lv in self._tp_plan if lv["order_id"] is None)
        if error is None and order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN, OrderStatus.FILLED):
            return self._after_tp_place(order, None)
        self._io("tp_place", self.venue.place_take_profit(s.symbol, s.closing_side, lv["qty"], lv["price"], lv["client_id"], ctx=self._ctx()))

    def _after_tp_place(self, order: OrderReport | None, error: VenueError | None) -> None:
        lv = next(lv for lv in self._tp_plan if lv["order_id"] is None)
        if error is not None or order is None:
            self.emit("position.tp_failed", {"level": lv["level"], "error": str(error) if error else "not placed"}, severity=Severity.WARNING, position_id=self.pid, symbol=self.state.symbol)
            self._tp_plan.remove(lv)  # optional exits: never retried into a storm
        else:
            lv["order_id"] = order.order_id
        placed = [dict(x) for x in self._tp_plan if x["order_id"] is not None]
        if len(placed) == len(self._tp_plan):
            if placed:
                self.record("position.tp_placed", {"levels": placed})
            return
        self._place_next_tp()

    # --------------------------------------------------------- fills
    def tp_due(self, mark: Decimal) -> dict[str, Any] | None:
        """The first open TP level the mark has reached (worth asking the venue about)."""
        s = self.state
        for tp in s.tps:
            if not tp["filled"] and (mark >= Decimal(tp["price"]) if s.side == "long" else mark <= Decimal(tp["price"])):
                return tp
        return None

    def check_tp(self, tp: dict[str, Any]) -> None:
        self._checking_tp = tp["level"]
        self._io("check_tp", self.venue.fetch_order(self.state.symbol, order_id=tp["order_id"]))

    def _after_check_tp(self, order: OrderReport | None, error: VenueError | None) -> None:
        if error is not None or order is None or order.status is not OrderStatus.FILLED:
            return
        self.record_tp_fill(self._checking_tp, order)
        if self.state.qty <= 0:
            return self._record_exit("position.closed", order, "take-profits filled")
        self.apply_adjustment()

    def record_tp_fill(self, level: int, order: OrderReport) -> None:
        s = self.state
        price = order.average
        sign = 1 if s.side == "long" else -1
        pnl = (price - s.entry_price) * order.filled * sign if price is not None else None
        self.record("position.tp_filled", {"level": level, "qty": order.filled, "price": price, "pnl": pnl, "order_id": order.order_id})

    async def fetch_open_tps(self) -> list[tuple[int, OrderReport | None]]:
        """Every take-profit of ours not yet known as filled, as the venue has it now."""
        s = self.state
        return [(tp["level"], await self.venue.fetch_order(s.symbol, order_id=tp["order_id"])) for tp in s.tps if not tp["filled"] and tp.get("order_id")]

    # ---------------------------------------------------- stop follows
    def wanted_adjustment(self) -> tuple[Decimal, Decimal, str] | None:
        """The stop this position should have now (price, qty, reason), derived from state."""
        s, cfg = self.state, self.ctx.config
        if s.state is not P.PROTECTED or s.stop_price is None or s.move_client_id is not None:
            return None
        price, reason = s.stop_price, "resize"
        tp1_done = any(tp["level"] == 1 and tp["filled"] for tp in s.tps)
        if tp1_done and cfg.take_profit.breakeven_after_tp1:
            be = on_grid(s.side, breakeven_price(s.side, s.entry_price, cfg.trailing.breakeven_fee_percent), self.venue.market(s.symbol).tick_size)
            if better(s.side, be, price):
                price, reason = be, "tp1_breakeven"
        if price == s.stop_price and (s.stop_qty is None or s.stop_qty == s.qty):
            return None
        return price, s.qty, reason

    def apply_adjustment(self) -> bool:
        """Start the wanted adjustment if there is one and moves are allowed; True if started."""
        wanted = self.wanted_adjustment()
        if wanted is None or self._op is not None or self._moves_paused(self.ctx.clock.now_ms()):
            return False
        self.move_stop(*wanted)
        return True
