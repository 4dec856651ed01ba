"""Records of the paper venue (orders, positions, fills) and ccxt request parsing.

All money is Decimal. Records are mutable ``msgspec.Struct``s so the engine
can update them in place and :func:`msgspec.to_builtins` turns them into
JSON-able data (Decimals as strings) for snapshots.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ccxt
import msgspec

from adapters.paper.errors import paper_error

D0 = Decimal(0)

OPEN, CLOSED, CANCELED, EXPIRED, REJECTED = "open", "closed", "canceled", "expired", "rejected"
FALLING, RISING = "falling", "rising"


class Order(msgspec.Struct, kw_only=True):
    """One order. ``kind``: market, limit, stop_market, take_profit_market or liquidation."""

    id: str
    symbol: str
    side: str  # buy | sell
    kind: str
    amount: Decimal  # executed-qty cap; 0 for a closePosition stop until it fires
    pos_side: str  # both (one-way) | long | short (hedge)
    created_ms: int
    updated_ms: int
    requested_amount: Decimal = D0  # as sent (a reduce-only fill may cut ``amount`` to the position)
    client_id: str = ""
    trigger_price: Decimal | None = None
    trigger_direction: str | None = None  # falling: fires when mark <= trigger; rising: mark >= trigger
    reduce_only: bool = False
    close_position: bool = False
    limit_price: Decimal | None = None  # a resting GTC limit order (kind limit)
    status: str = OPEN
    triggered: bool = False
    filled: Decimal = D0
    cost: Decimal = D0
    fee: Decimal = D0
    last_trade_ms: int | None = None
    trade_ids: list[str] = []
    origin: str = "api"  # api | external | liquidation
    reason: str = ""  # why it ended without a full fill

    @property
    def is_stop(self) -> bool:
        return self.trigger_price is not None

    @property
    def is_limit(self) -> bool:
        return self.limit_price is not None

    @property
    def remaining(self) -> Decimal:
        """amount - filled, as ccxt computes it (also for canceled/expired orders)."""
        return max(self.amount - self.filled, D0)

    @property
    def average(self) -> Decimal | None:
        return self.cost / self.filled if self.filled else None

    def reduces_side(self) -> str:
        """The position side (long/short) that this order's side reduces: a sell reduces a long."""
        return "long" if self.side == "sell" else "short"

    def is_closing(self) -> bool:
        """Reduce-only, closePosition, or a hedge-mode order on the side it reduces."""
        if self.reduce_only or self.close_position:
            return True
        return self.pos_side != "both" and self.reduces_side() == self.pos_side


class Position(msgspec.Struct, kw_only=True):
    """An isolated-margin position; ``size`` > 0, ``side`` long or short."""

    symbol: str
    pos_side: str  # both | long | short
    side: str
    size: Decimal
    entry_price: Decimal
    leverage: int
    margin: Decimal
    opened_ms: int
    updated_ms: int
    realized_pnl: Decimal = D0
    fees: Decimal = D0


class Fill(msgspec.Struct, kw_only=True):
    """One execution (a ccxt trade). A liquidation's ``fee`` is the clearance fee."""

    id: str
    order_id: str
    symbol: str
    side: str
    pos_side: str
    price: Decimal
    qty: Decimal
    fee: Decimal
    realized_pnl: Decimal
    ts_ms: int
    client_id: str = ""
    liquidation: bool = False


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A create_order call reduced to what the venue acts on."""

    symbol: str
    side: str
    kind: str  # market | limit | stop_market | take_profit_market
    amount: Decimal | None
    price: Decimal | None = None  # a limit order's price
    trigger_price: Decimal | None = None
    trigger_direction: str | None = None
    reduce_only: bool = False
    close_position: bool = False
    client_id: str = ""
    pos_side: str | None = None  # None: not given; both | long | short


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _stop_direction(side: str, take_profit: bool) -> str:
    stop = FALLING if side == "sell" else RISING
    return ({FALLING: RISING, RISING: FALLING}[stop]) if take_profit else stop


def parse_order_request(flavour: str, symbol: str, type: str, side: str, amount: Any, price: Any = None, params: dict | None = None) -> OrderRequest:
    """Read ccxt's unified ``create_order`` arguments the way ccxt maps them for ``flavour``.

    Stop-market: type ``market`` with ``triggerPrice`` / ``stopPrice`` /
    ``stopLossPrice`` (or ``takeProfitPrice``), or type ``STOP_MARKET`` /
    ``TAKE_PROFIT_MARKET`` with ``stopPrice``. On bybit a bare
    ``triggerPrice`` needs ``triggerDirection`` (ccxt raises
    ArgumentsRequired) and ``stopLossPrice``/``takeProfitPrice`` force
    reduce-only, as ccxt does. Limit orders (type ``limit`` with a price) rest
    GTC until the mark reaches their price.
    """
    p = dict(params or {})
    side_l = str(side).lower()
    if side_l not in ("buy", "sell"):
        raise paper_error(flavour, ccxt.BadRequest, f"createOrder() invalid side {side!r}")
    t = str(type).lower()
    sl, tp = _dec(p.get("stopLossPrice")), _dec(p.get("takeProfitPrice"))
    trig = _dec(p.get("triggerPrice")) or _dec(p.get("stopPrice"))
    reduce_only = _flag(p.get("reduceOnly", False))
    direction: str | None = None
    if t in ("stop_market", "stop", "take_profit_market", "take_profit"):
        if trig is None and sl is None and tp is None:
            raise paper_error(flavour, ccxt.InvalidOrder, f"createOrder() requires a stopPrice for {type} orders")
        take_profit = t.startswith("take_profit")
        trig = trig or sl or tp
        kind = "take_profit_market" if take_profit else "stop_market"
        direction = _stop_direction(side_l, take_profit)
    elif t == "market":
        if sl is not None or tp is not None:
            take_profit = sl is None
            trig = sl if sl is not None else tp
            kind = "take_profit_market" if take_profit else "stop_market"
            direction = _stop_direction(side_l, take_profit)
            if flavour == "bybit":
                reduce_only = True
        elif trig is not None:
            kind = "stop_market"
            if flavour == "bybit":
                td = p.get("triggerDirection")
                if td is None:
                    raise paper_error(flavour, ccxt.ArgumentsRequired, 'stop/trigger orders require a triggerDirection parameter, either "ascending" or "descending" to determine the direction of the trigger.')
                direction = RISING if str(td).lower() in ("ascending", "above", "1") else FALLING
                if direction != _stop_direction(side_l, False):
                    kind = "take_profit_market"
            else:
                direction = _stop_direction(side_l, False)
        else:
            kind = "market"
    elif t == "limit":
        if _dec(price) is None:
            raise paper_error(flavour, ccxt.ArgumentsRequired, "createOrder() requires a price argument for limit orders")
        kind = "limit"
    else:
        raise paper_error(flavour, ccxt.NotSupported, f"paper exchange supports market, limit and stop-market orders only, not {type!r}")
    close_position = _flag(p.get("closePosition", False))
    if close_position and flavour != "binance":
        raise paper_error(flavour, ccxt.NotSupported, "closePosition is a Binance parameter")
    if flavour == "binance":
        cid = p.get("newClientOrderId") or p.get("clientOrderId") or ""
    else:
        cid = p.get("orderLinkId") or p.get("clientOrderId") or ""
    pos_side: str | None = None
    if "positionSide" in p and p["positionSide"] is not None:
        pos_side = {"LONG": "long", "SHORT": "short", "BOTH": "both"}.get(str(p["positionSide"]).upper(), "invalid")
    elif "positionIdx" in p and p["positionIdx"] is not None:
        pos_side = {"0": "both", "1": "long", "2": "short"}.get(str(p["positionIdx"]), "invalid")
    elif _flag(p.get("hedged", False)):
        opens_long = side_l == "buy"
        pos_side = ("short" if opens_long else "long") if reduce_only else ("long" if opens_long else "short")
    return OrderRequest(
        symbol=symbol,
        side=side_l,
        kind=kind,
        amount=_dec(amount),
        price=_dec(price) if kind == "limit" else None,
        trigger_price=trig,
        trigger_direction=direction,
        reduce_only=reduce_only,
        close_position=close_position,
        client_id=str(cid),
        pos_side=pos_side,
    )
