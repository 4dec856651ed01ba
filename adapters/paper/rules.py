"""Order validation of the paper venue: what it refuses, and with which code.

Checked in roughly the venue's order: symbol availability, client id, quantity
rules (step, minimum, market maximum), trigger price (tick, would trigger
immediately), reduce-only, minimum notional (not for reduce-only orders, as
on Binance and Bybit), stop-order count and duplicate closePosition stops.
Quantities and prices off the grid are refused (-1111 / 10001) rather than
silently rounded as ccxt's client-side ``amount_to_precision`` would: the bot
must round them itself.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import ccxt

from adapters.markets import Market
from adapters.paper.errors import paper_error
from adapters.paper.model import FALLING, Order, OrderRequest

if TYPE_CHECKING:
    from adapters.paper.engine import PaperEngine


def resolve_pos_side(e: PaperEngine, req: OrderRequest) -> str:
    """The position side an order acts on: "both" in one-way mode, long/short in hedge mode."""
    if e.config.hedge_mode:
        if req.pos_side not in ("long", "short"):
            raise e._err("position_side_mismatch")
        return req.pos_side
    if req.pos_side not in (None, "both"):
        raise e._err("position_side_mismatch")
    return "both"


def validate(e: PaperEngine, m: Market, o: Order) -> None:
    """Raise the venue's refusal for ``o``, checked in roughly the venue's order."""
    closing = o.is_closing()
    if m.symbol in e.restricted and (e.config.flavour == "bybit" or not closing):
        raise e._err("restricted")
    if m.symbol in e.not_trading and not closing:
        raise e._err("not_trading")
    if o.client_id and e.client_ids.get(o.client_id) in e.open_orders:
        raise e._err("duplicate_client_id")
    if o.close_position and not o.is_stop:
        raise paper_error(e.config.flavour, ccxt.BadRequest, "closePosition is only for stop-market orders")
    if not o.close_position:
        check_qty(e, m, o.amount)
    mark = e._mark(m)
    trig = o.trigger_price  # set: o is a stop
    if trig is not None:
        if trig <= 0 or m.round_price(trig) != trig:
            raise e._err("price_precision")
        if o.trigger_direction == FALLING and trig >= mark:
            raise e._err("would_trigger_falling", trigger=trig, mark=mark)
        if o.trigger_direction != FALLING and trig <= mark:
            raise e._err("would_trigger_rising", trigger=trig, mark=mark)
    if o.limit_price is not None:
        check_limit_price(e, m, o.side, o.limit_price, mark)
    if o.reduce_only or (closing and not o.is_stop):
        if e._target(o) is None:
            raise e._err("reduce_only_flat" if f"{o.symbol}|{o.pos_side}" not in e.positions else "reduce_only_increase")
    if not closing and m.min_notional and o.amount * (o.trigger_price or mark) * m.contract_size < m.min_notional:
        raise e._err("min_notional", min=m.min_notional.normalize())
    if o.is_stop:
        stops = [x for x in e.open_by_symbol.get(m.symbol, {}).values() if x.is_stop]
        if len(stops) >= e.config.max_stop_orders_per_symbol:
            raise e._err("max_stop_orders")
        if o.close_position and any(x.close_position and x.side == o.side and x.pos_side == o.pos_side for x in stops):
            raise e._err("close_position_exists")


def check_limit_price(e: PaperEngine, m: Market, side: str, price: Decimal, mark: Decimal) -> None:
    """Grid, one tick at least, min/max price and the percent-price band (aggressive side only)."""
    if price <= 0 or m.round_price(price) != price:
        raise e._err("price_precision")
    low, high = m.limit_bounds(side, mark)
    if price < low:
        raise e._err("price_below_band", limit=low)
    if high is not None and price > high:
        raise e._err("price_above_band", limit=high)


def check_qty(e: PaperEngine, m: Market, qty: Decimal) -> None:
    """Step, minimum and market maximum of an order quantity."""
    if qty is None or qty <= 0:
        raise e._err("qty_zero")
    if qty != m.round_qty(qty):
        raise e._err("qty_precision")
    if qty < m.min_qty:
        raise e._err("qty_below_min")
    limit = m.max_market_qty or m.max_qty
    if limit is not None and qty > limit:
        raise e._err("qty_above_max")
