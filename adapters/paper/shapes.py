"""Engine records -> the dicts ccxt returns (floats), with the raw venue record in ``info`` (strings).

Flavour differences follow ccxt's parsers: Binance stop orders have type
``stop_market`` and raw statuses NEW/FILLED/CANCELED/EXPIRED; Bybit orders
are type ``market`` with a ``triggerPrice``, a resting stop is
``Untriggered`` and an order that ended without a full fill is ``Cancelled``
(ccxt: ``canceled``, with ``filled`` > 0 if it partly filled).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from adapters.markets import Market
from adapters.paper.model import CANCELED, CLOSED, D0, EXPIRED, FALLING, OPEN, Fill, Order, Position


def iso8601(ms: int | None) -> str | None:
    """ccxt's datetime text for epoch ms."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _f(d: Decimal | None) -> float | None:
    return None if d is None else float(d)


def _s(d: Decimal | None, quantum: Decimal | None = None) -> str:
    if d is None:
        return "0"
    if quantum is not None and d == d.quantize(quantum):
        d = d.quantize(quantum)
    return format(d, "f")


_BINANCE_STATUS = {OPEN: "NEW", CLOSED: "FILLED", CANCELED: "CANCELED", EXPIRED: "EXPIRED", "rejected": "REJECTED"}
_BINANCE_TYPE = {"limit": "LIMIT", "market": "MARKET", "stop_market": "STOP_MARKET", "take_profit_market": "TAKE_PROFIT_MARKET", "liquidation": "MARKET"}


def ccxt_status(flavour: str, o: Order) -> str:
    """The unified status ccxt reports for ``o`` on ``flavour``."""
    if flavour == "bybit" and o.status == EXPIRED:
        return CANCELED
    return o.status


def _bybit_raw_status(o: Order) -> str:
    if o.status == OPEN:
        return "Untriggered" if o.is_stop and not o.triggered else "New"
    if o.status == CLOSED:
        return "Filled"
    if o.status == CANCELED:
        return "Deactivated" if o.is_stop and not o.triggered else "Cancelled"
    return "Rejected" if o.status == "rejected" else "Cancelled"


def order_dict(flavour: str, o: Order, m: Market, trades: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A ccxt order dict."""
    avg = o.average
    trig = o.trigger_price
    if flavour == "binance":
        info: dict[str, Any] = {
            "orderId": int(o.id), "symbol": m.id, "status": _BINANCE_STATUS[o.status], "clientOrderId": o.client_id,
            "price": _s(o.limit_price, m.tick_size) if o.is_limit else "0", "avgPrice": _s(avg or D0), "origQty": _s(o.amount, m.step_size), "executedQty": _s(o.filled, m.step_size),
            "cumQty": _s(o.filled, m.step_size), "cumQuote": _s(o.cost), "timeInForce": "GTC", "type": _BINANCE_TYPE[o.kind],
            "origType": _BINANCE_TYPE[o.kind], "reduceOnly": o.reduce_only or o.close_position, "closePosition": o.close_position,
            "side": o.side.upper(), "positionSide": o.pos_side.upper(), "stopPrice": _s(trig or D0, m.tick_size),
            "workingType": "MARK_PRICE", "priceProtect": False, "time": o.created_ms, "updateTime": o.updated_ms,
        }  # fmt: skip
        typ = "market" if o.kind == "liquidation" else o.kind
    else:
        info = {
            "orderId": o.id, "orderLinkId": o.client_id, "symbol": m.id, "side": o.side.capitalize(), "orderType": "Limit" if o.is_limit else "Market",
            "price": _s(o.limit_price, m.tick_size) if o.is_limit else "0", "qty": _s(o.amount, m.step_size), "leavesQty": _s(o.remaining if o.status == OPEN else D0, m.step_size),
            "cumExecQty": _s(o.filled, m.step_size), "cumExecValue": _s(o.cost), "cumExecFee": _s(o.fee),
            "avgPrice": _s(avg) if avg else "", "orderStatus": _bybit_raw_status(o),
            "stopOrderType": ("Stop" if o.is_stop else ""), "triggerPrice": _s(trig, m.tick_size) if trig else "",
            "triggerDirection": 0 if not trig else (2 if o.trigger_direction == FALLING else 1), "triggerBy": "MarkPrice" if trig else "",
            "reduceOnly": o.reduce_only, "closeOnTrigger": False, "positionIdx": {"both": 0, "long": 1, "short": 2}[o.pos_side],
            "timeInForce": "GTC" if o.is_limit else "IOC", "createType": "CreateByLiq" if o.origin == "liquidation" else "CreateByUser",
            "createdTime": str(o.created_ms), "updatedTime": str(o.updated_ms),
        }  # fmt: skip
        typ = "limit" if o.is_limit else "market"
    fee = {"cost": float(o.fee), "currency": "USDT"} if o.filled else None
    return {
        "info": info,
        "id": o.id,
        "clientOrderId": o.client_id or None,
        "timestamp": o.created_ms,
        "datetime": iso8601(o.created_ms),
        "lastTradeTimestamp": o.last_trade_ms,
        "lastUpdateTimestamp": o.updated_ms,
        "symbol": o.symbol,
        "type": typ,
        "timeInForce": "GTC" if flavour == "binance" or o.is_limit else "IOC",
        "postOnly": False,
        "reduceOnly": o.reduce_only or o.close_position,
        "side": o.side,
        "price": _f(o.limit_price) if o.is_limit else _f(avg),
        "triggerPrice": _f(trig),
        "stopPrice": _f(trig),
        "stopLossPrice": _f(trig) if o.kind == "stop_market" else None,
        "takeProfitPrice": _f(trig) if o.kind == "take_profit_market" else None,
        "amount": float(o.amount),
        "cost": float(o.cost),
        "average": _f(avg),
        "filled": float(o.filled),
        "remaining": float(o.remaining),
        "status": ccxt_status(flavour, o),
        "fee": fee,
        "fees": [fee] if fee else [],
        "trades": trades or [],
    }


def trade_dict(flavour: str, f: Fill, m: Market, fee_rate: Decimal) -> dict[str, Any]:
    """A ccxt trade dict (from ``fetch_my_trades``)."""
    cost = f.price * f.qty
    if flavour == "binance":
        info: dict[str, Any] = {
            "symbol": m.id, "id": int(f.id), "orderId": int(f.order_id), "side": f.side.upper(), "price": _s(f.price, m.tick_size),
            "qty": _s(f.qty, m.step_size), "realizedPnl": _s(f.realized_pnl), "marginAsset": "USDT", "quoteQty": _s(cost),
            "commission": _s(f.fee), "commissionAsset": "USDT", "time": f.ts_ms, "positionSide": f.pos_side.upper(),
            "maker": False, "buyer": f.side == "buy",
        }  # fmt: skip
    else:
        info = {
            "symbol": m.id, "orderId": f.order_id, "orderLinkId": f.client_id, "side": f.side.capitalize(), "orderType": "Market",
            "execId": f.id, "execPrice": _s(f.price, m.tick_size), "execQty": _s(f.qty, m.step_size), "execValue": _s(cost),
            "execFee": _s(f.fee), "feeRate": _s(fee_rate), "execType": "BustTrade" if f.liquidation else "Trade",
            "execTime": str(f.ts_ms), "isMaker": False, "closedSize": _s(f.qty, m.step_size) if f.realized_pnl else "0",
        }  # fmt: skip
    fee = {"cost": float(f.fee), "currency": "USDT", "rate": float(fee_rate)}
    return {
        "info": info, "id": f.id, "order": f.order_id, "timestamp": f.ts_ms, "datetime": iso8601(f.ts_ms), "symbol": f.symbol,
        "type": "market", "side": f.side, "takerOrMaker": "taker", "price": float(f.price), "amount": float(f.qty),
        "cost": float(cost), "fee": fee, "fees": [fee],
    }  # fmt: skip


def position_dict(flavour: str, p: Position, m: Market, *, mark: Decimal, liq: Decimal | None, upnl: Decimal, mmr: Decimal, hedged: bool) -> dict[str, Any]:
    """A ccxt position dict; a closed position has ``contracts`` 0."""
    notional = p.size * mark * m.contract_size
    sign = 1 if p.side == "long" else -1
    maint = notional * mmr
    if flavour == "binance":
        info: dict[str, Any] = {
            "symbol": m.id, "positionSide": p.pos_side.upper(), "positionAmt": _s(p.size * sign, m.step_size),
            "entryPrice": _s(p.entry_price), "breakEvenPrice": _s(p.entry_price), "markPrice": _s(mark, m.tick_size),
            "unRealizedProfit": _s(upnl), "liquidationPrice": _s(liq or D0), "isolatedMargin": _s(p.margin + upnl),
            "notional": _s(notional * sign), "marginAsset": "USDT", "isolatedWallet": _s(p.margin), "initialMargin": _s(p.margin),
            "maintMargin": _s(maint), "leverage": str(p.leverage), "marginType": "isolated", "updateTime": p.updated_ms,
        }  # fmt: skip
    else:
        info = {
            "symbol": m.id, "side": ("Buy" if p.side == "long" else "Sell") if p.size else "", "size": _s(p.size, m.step_size),
            "avgPrice": _s(p.entry_price), "positionValue": _s(p.size * p.entry_price), "markPrice": _s(mark, m.tick_size),
            "leverage": str(p.leverage), "liqPrice": _s(liq) if liq else "", "unrealisedPnl": _s(upnl),
            "cumRealisedPnl": _s(p.realized_pnl), "positionIdx": {"both": 0, "long": 1, "short": 2}[p.pos_side],
            "positionIM": _s(p.margin), "positionMM": _s(maint), "tradeMode": 1, "positionStatus": "Normal",
            "createdTime": str(p.opened_ms), "updatedTime": str(p.updated_ms),
        }  # fmt: skip
    return {
        "info": info, "id": None, "symbol": p.symbol, "timestamp": p.updated_ms, "datetime": iso8601(p.updated_ms),
        "lastUpdateTimestamp": p.updated_ms, "initialMargin": float(p.margin), "initialMarginPercentage": float(1 / Decimal(p.leverage)),
        "maintenanceMargin": float(maint), "maintenanceMarginPercentage": float(mmr), "entryPrice": float(p.entry_price),
        "notional": float(notional), "leverage": p.leverage, "unrealizedPnl": float(upnl), "realizedPnl": float(p.realized_pnl),
        "contracts": float(p.size), "contractSize": float(m.contract_size), "marginRatio": float(maint / (p.margin + upnl)) if p.size and p.margin + upnl > 0 else None,
        "liquidationPrice": _f(liq), "markPrice": float(mark), "lastPrice": None, "collateral": float(p.margin + upnl),
        "marginMode": "isolated", "side": p.side, "percentage": float(upnl / p.margin * 100) if p.margin else None,
        "stopLossPrice": None, "takeProfitPrice": None, "hedged": hedged,
    }  # fmt: skip


def balance_dict(flavour: str, bal: dict[str, Decimal], ts: int) -> dict[str, Any]:
    """A ccxt balance: free = wallet - position margin, used = position margin, total = wallet + unrealised."""
    free, used, total = bal["free"], bal["used"], bal["wallet"] + bal["unrealized"]
    if flavour == "binance":
        info: dict[str, Any] = {
            "totalWalletBalance": _s(bal["wallet"]), "totalUnrealizedProfit": _s(bal["unrealized"]), "totalMarginBalance": _s(total),
            "availableBalance": _s(free), "assets": [{"asset": "USDT", "walletBalance": _s(bal["wallet"]), "unrealizedProfit": _s(bal["unrealized"]),
            "marginBalance": _s(total), "initialMargin": _s(used), "availableBalance": _s(free), "updateTime": ts}],
        }  # fmt: skip
    else:
        info = {"retCode": 0, "retMsg": "OK", "result": {"list": [{"accountType": "UNIFIED", "totalEquity": _s(total), "totalWalletBalance": _s(bal["wallet"]),
                "coin": [{"coin": "USDT", "walletBalance": _s(bal["wallet"]), "equity": _s(total), "unrealisedPnl": _s(bal["unrealized"]),
                "totalPositionIM": _s(used), "availableToWithdraw": _s(free)}]}]}, "time": ts}  # fmt: skip
    acct = {"free": float(free), "used": float(used), "total": float(total)}
    return {"info": info, "timestamp": ts, "datetime": iso8601(ts), "USDT": acct, "free": {"USDT": acct["free"]}, "used": {"USDT": acct["used"]}, "total": {"USDT": acct["total"]}}


def ticker_dict(m: Market, mark: Decimal, ts: int) -> dict[str, Any]:
    """A ccxt ticker whose last price is the mark (the paper venue has no order book)."""
    px = float(mark)
    info = {"symbol": m.id, "markPrice": _s(mark, m.tick_size), "indexPrice": _s(mark, m.tick_size), "lastPrice": _s(mark, m.tick_size), "time": ts}
    return {
        "symbol": m.symbol, "timestamp": ts, "datetime": iso8601(ts), "high": None, "low": None, "bid": px, "bidVolume": None,
        "ask": px, "askVolume": None, "vwap": None, "open": None, "close": px, "last": px, "previousClose": None, "change": None,
        "percentage": None, "average": None, "baseVolume": None, "quoteVolume": None, "markPrice": px, "indexPrice": px, "info": info,
    }  # fmt: skip
