"""PaperEngine: a deterministic USDⓈ-M linear perpetual venue (matching + account).

Pure and synchronous: no asyncio, no clock, no locks. Every call takes
``now_ms`` (engine time never goes backwards: an earlier time is read as the
latest one seen). Not thread-safe; :class:`~adapters.paper.exchange.PaperExchange`
guards it with one lock.

Semantics, in short:

- Market orders fill at once at mark ± ``slippage_bps`` (against the taker,
  rounded to the tick) and pay ``taker_fee_rate``. With probability
  ``partial_fill_prob`` only a random part fills (at least one step) and the
  rest expires, like a Binance IOC remainder.
- Stop orders rest until the **mark** crosses the trigger, then execute as
  market orders. A reduce-only (or closePosition, or hedge-mode closing)
  order only ever reduces: it fills what is left of the position, and
  expires if the position is flat.
- Isolated margin per position: opening needs notional / leverage + fee of
  free balance. When the mark crosses the liquidation price (long:
  entry·(1 − 1/lev + mmr), short: entry·(1 + 1/lev − mmr), rounded to the
  tick towards the mark) the position is closed at that price and its whole
  margin is lost (realised loss + a clearance fee); its reduce-only orders
  stay open as orphans, as on the real venues.
- Refusals raise the real ccxt exceptions (:mod:`adapters.paper.errors`).
- Measurements (:mod:`adapters.paper.metrics`) are integrated over engine time.
- Limit orders (GTC) rest until the mark reaches their price and fill there
  in full (a marketable one fills at once, at its price or better); they pay
  the taker fee too (conservative). Prices must be on the grid, at least one
  tick, and inside the market's min/max price and percent-price band.
- Not simulated: funding, order books, partial limit fills, cross margin.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import ccxt
import msgspec

from adapters.markets import Market, Markets, Rounding
from adapters.paper import persistence, rules
from adapters.paper.errors import paper_error, venue_error
from adapters.paper.human import HumanActions
from adapters.paper.metrics import Measurements, assess
from adapters.paper.model import CANCELED, CLOSED, D0, EXPIRED, FALLING, OPEN, Fill, Order, OrderRequest, Position, parse_order_request

#: A position's key is ``SYMBOL|pos_side``: one-way ``both``, hedge ``long`` / ``short``.
POS_SIDES = ("both", "long", "short")

Listener = Callable[[str, str], None]
_FEE_QUANTUM = Decimal("1e-8")
_DECIMAL_KNOBS = {"initial_balance", "taker_fee_rate", "slippage_bps", "maintenance_margin_rate"}


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Knobs of the simulated venue."""

    flavour: str = "binance"  # binance | bybit: error codes and parameter names
    initial_balance: Decimal = Decimal("10000")  # USDT wallet at start
    leverage: int = 10  # default leverage of every symbol
    taker_fee_rate: Decimal = Decimal("0.0005")
    slippage_bps: Decimal = Decimal("1")  # market fills at mark ± this
    maintenance_margin_rate: Decimal = Decimal("0.005")
    partial_fill_prob: float = 0.0
    seed: int = 0
    hedge_mode: bool = False
    max_stop_orders_per_symbol: int = 10


class PaperEngine(HumanActions):
    """Balance, positions, orders and fills of one paper account.

    ``PaperEngine(markets, flavour="binance", initial_balance=Decimal(10000), ...)``:
    keywords are :class:`EngineConfig` fields; ``not_trading`` / ``restricted``
    are sets of symbols refused for opening (-4140 / 10001) and, on bybit,
    for any order (170209).
    """

    def __init__(self, markets: Markets, config: EngineConfig | None = None, *, not_trading: Iterable[str] = (), restricted: Iterable[str] = (), **knobs: Any) -> None:
        fields: dict[str, Any] = {k: Decimal(str(v)) if k in _DECIMAL_KNOBS else v for k, v in knobs.items()}
        cfg = config or EngineConfig(**fields)
        if cfg.flavour not in ("binance", "bybit"):
            raise ValueError(f"flavour must be binance or bybit, not {cfg.flavour!r}")
        self.markets = markets
        self.config = cfg
        self.not_trading = {markets.resolve(s).symbol for s in not_trading}
        self.restricted = {markets.resolve(s).symbol for s in restricted}
        self.now_ms = 0
        self.wallet = cfg.initial_balance
        self.leverage: dict[str, int] = {}
        self.positions: dict[str, Position] = {}
        self.closed_positions: dict[str, Position] = {}
        self.orders: dict[str, Order] = {}
        self.open_orders: dict[str, Order] = {}
        #: The open orders of each symbol (the same objects as ``open_orders``): a mark, a stop's
        #: checks and the protection assessment look at one symbol's orders, not every order.
        self.open_by_symbol: dict[str, dict[str, Order]] = {}
        self.client_ids: dict[str, str] = {}
        self.fills: list[Fill] = []
        self.fills_by_id: dict[str, Fill] = {}
        self.marks: dict[str, Decimal] = {}
        self.next_id = 0
        self.rng = random.Random(cfg.seed)
        self.metrics_state = Measurements()
        self.totals: dict[str, Decimal | int] = {"realized_pnl": D0, "fees": D0, "liquidated_margin": D0, "liquidations": 0}
        self._listeners: list[Listener] = []
        #: Symbols changed since the last assessment (None: every symbol), and each symbol's last one.
        self._dirty: set[str] | None = None
        self._sym_status: dict[str, tuple[dict[str, tuple[bool, bool]], list[Order]]] = {}

    # ------------------------------------------------------------ plumbing
    def add_listener(self, fn: Listener) -> None:
        """``fn(kind, key)`` after each change: ("order", id) or ("position", "SYMBOL|side")."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    def _emit(self, kind: str, key: str) -> None:
        if self._dirty is not None:
            self._dirty.add(key.split("|", 1)[0] if kind == "position" else self.orders[key].symbol)
        for fn in list(self._listeners):
            fn(kind, key)

    def _err(self, condition: str, **fmt: Any) -> ccxt.BaseError:
        return venue_error(self.config.flavour, condition, self.now_ms, **fmt)

    def _begin(self, now_ms: int) -> int:
        """Advance engine time to ``now_ms``, charging the elapsed time to the measurements."""
        t = max(int(now_ms), self.now_ms)
        self._refresh()
        self.metrics_state.advance(t)
        self.now_ms = t
        return t

    def _refresh(self) -> None:
        """Re-assess the symbols changed since the last call (all of them the first time)."""
        ms = self.metrics_state
        if ms.last_ms is None:
            return  # nothing is charged before the first advance: assess everything after it
        dirty, self._dirty = self._dirty, set()
        if dirty is None:
            dirty = {p.symbol for p in self.positions.values()} | set(self.open_by_symbol) | set(self._sym_status) | {ep.symbol for ep in ms.episodes.values() if ep.charged_ms is not None}
        for sym in dirty:
            status, orphans = assess(self._positions_of(sym), self.open_by_symbol.get(sym, {}).values())
            if status or orphans:
                self._sym_status[sym] = (status, orphans)
            else:
                self._sym_status.pop(sym, None)
            ms.set_symbol(sym, status, len(orphans), [f"{sym}|{side}" for side in POS_SIDES])

    def _positions_of(self, symbol: str) -> list[Position]:
        return [p for side in POS_SIDES if (p := self.positions.get(f"{symbol}|{side}")) is not None]

    def _assess(self) -> tuple[dict[str, tuple[bool, bool]], list[Order]]:
        """Per position key: (unprotected, overlapping); and the orphan orders (every symbol)."""
        self._refresh()
        status: dict[str, tuple[bool, bool]] = {}
        orphans: list[Order] = []
        for st, orph in self._sym_status.values():
            status.update(st)
            orphans.extend(orph)
        return status, orphans

    def _market(self, symbol: str) -> Market:
        try:
            return self.markets.resolve(symbol)
        except KeyError:
            raise self._err("bad_symbol") from None

    def _new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def _mark(self, m: Market) -> Decimal:
        mark = self.marks.get(m.symbol)
        if mark is None:
            raise paper_error(self.config.flavour, ccxt.ExchangeNotAvailable, f"paper: no mark price yet for {m.symbol}")
        return mark

    def _taker_price(self, m: Market, mark: Decimal, side: str) -> Decimal:
        bps = self.config.slippage_bps
        if not bps:
            return mark
        up = side == "buy"
        raw = mark * (1 + bps / 10000) if up else mark * (1 - bps / 10000)
        return m.round_price(raw, Rounding.UP if up else Rounding.DOWN)

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(self._market(symbol).symbol, self.config.leverage)

    def _target(self, o: Order) -> Position | None:
        """The open position ``o`` would reduce, if any."""
        pos = self.positions.get(f"{o.symbol}|{o.pos_side}")
        return pos if pos is not None and pos.side == o.reduces_side() else None

    # -------------------------------------------------------------- orders
    def create_order(self, symbol: str, type: str, side: str, amount: Any, price: Any = None, params: dict | None = None, *, now_ms: int, partial_fill_prob: float | None = None, origin: str = "api") -> Order:
        """Place an order given ccxt's unified ``create_order`` arguments; returns the order record."""
        req = parse_order_request(self.config.flavour, symbol, type, side, amount, price, params)
        return self.place(req, now_ms=now_ms, partial_fill_prob=partial_fill_prob, origin=origin)

    def place(self, req: OrderRequest, *, now_ms: int, partial_fill_prob: float | None = None, origin: str = "api") -> Order:
        """Validate and place a parsed request (market orders execute at once)."""
        t = self._begin(now_ms)
        m = self._market(req.symbol)
        o = Order(id="", symbol=m.symbol, side=req.side, kind=req.kind, amount=req.amount or D0, requested_amount=req.amount or D0, pos_side=rules.resolve_pos_side(self, req), created_ms=t, updated_ms=t, client_id=req.client_id, trigger_price=req.trigger_price, trigger_direction=req.trigger_direction, reduce_only=req.reduce_only, close_position=req.close_position, limit_price=req.price if req.kind == "limit" else None, origin=origin)
        rules.validate(self, m, o)
        if o.is_limit:
            o.id = self._new_id()
            self._store(o)
            self._emit("order", o.id)
            mark = self._mark(m)
            if self._limit_reached(o, mark):
                self._fill_limit(m, o, mark, t, marketable=True)
            return o
        if o.is_stop:
            o.id = self._new_id()
            self._store(o)
            self._emit("order", o.id)
            return o
        return self._execute_market(m, o, t, self.config.partial_fill_prob if partial_fill_prob is None else partial_fill_prob)

    def _execute_market(self, m: Market, o: Order, t: int, partial_prob: float) -> Order:
        mark = self._mark(m)
        if o.is_closing():
            target = self._target(o)
            assert target is not None  # rules.validate refuses a closing market order with no position to reduce
            o.amount = min(o.amount, target.size)  # reduce-only: auto-reduced to the position
        qty = o.amount
        if partial_prob > 0 and self.rng.random() < partial_prob and qty > m.step_size:
            part = m.round_qty(qty * Decimal(str(self.rng.random())))
            qty = min(max(part, m.step_size), qty - m.step_size)
        price = self._taker_price(m, mark, o.side)
        self._check_margin(o, o.amount, price)
        o.id = self._new_id()
        self._store(o)
        self._fill(o, qty, price, t)
        self._finish(o, CLOSED if o.filled >= o.amount else EXPIRED, t, "" if o.filled >= o.amount else "IOC remainder expired")
        return o

    def _store(self, o: Order) -> None:
        self.orders[o.id] = o
        self.open_orders[o.id] = o
        self.open_by_symbol.setdefault(o.symbol, {})[o.id] = o
        if o.client_id:
            self.client_ids[o.client_id] = o.id

    def _finish(self, o: Order, status: str, t: int, reason: str = "") -> None:
        o.status, o.updated_ms = status, t
        o.reason = o.reason or reason
        self.open_orders.pop(o.id, None)
        by_symbol = self.open_by_symbol.get(o.symbol)
        if by_symbol is not None:
            by_symbol.pop(o.id, None)
            if not by_symbol:
                del self.open_by_symbol[o.symbol]
        self._emit("order", o.id)

    def _split(self, o: Order, qty: Decimal) -> tuple[Position | None, Decimal, Decimal]:
        """(position, qty that reduces it, qty that opens/increases) for ``qty`` of ``o``."""
        pos = self.positions.get(f"{o.symbol}|{o.pos_side}")
        if pos is not None and pos.side == o.reduces_side():
            reduce_q = min(qty, pos.size)
            return pos, reduce_q, D0 if o.is_closing() else qty - reduce_q
        return pos, D0, D0 if o.is_closing() else qty

    def _fee(self, notional: Decimal) -> Decimal:
        return (notional * self.config.taker_fee_rate).quantize(_FEE_QUANTUM, rounding=ROUND_HALF_UP)

    def _check_margin(self, o: Order, qty: Decimal, price: Decimal) -> None:
        pos, reduce_q, open_q = self._split(o, qty)
        if not open_q:
            return
        released = realized = D0
        if reduce_q:
            assert pos is not None  # _split reduces only an existing position
            released = pos.margin * reduce_q / pos.size
            realized = (price - pos.entry_price) * reduce_q * (1 if pos.side == "long" else -1)
        lev = pos.leverage if pos is not None and not reduce_q else self.leverage_of(o.symbol)
        needed = open_q * price / lev + self._fee(qty * price)
        if needed > self.free_balance() + released + realized:
            raise self._err("insufficient_margin")

    def _fill(self, o: Order, qty: Decimal, price: Decimal, t: int, *, clearance_fee: Decimal | None = None) -> Fill:
        pos, reduce_q, open_q = self._split(o, qty)
        key = f"{o.symbol}|{o.pos_side}"
        # Money settles on the venue's grid (1e-8 USDT), like fees: the ledger then adds up exactly.
        fee = self._fee(qty * price) if clearance_fee is None else clearance_fee.quantize(_FEE_QUANTUM, rounding=ROUND_HALF_UP)
        realized = D0
        if reduce_q:
            assert pos is not None  # _split reduces only an existing position
            realized = ((price - pos.entry_price) * reduce_q * (1 if pos.side == "long" else -1)).quantize(_FEE_QUANTUM, rounding=ROUND_HALF_UP)
            released = pos.margin if reduce_q == pos.size else pos.margin * reduce_q / pos.size
            pos.margin -= released
            pos.size -= reduce_q
            pos.realized_pnl += realized
            pos.updated_ms = t
            if not pos.size:
                self._close_position(pos, t, liquidated=clearance_fee is not None)
                pos = None
        if open_q:
            if pos is None:
                lev = self.leverage_of(o.symbol)
                pos = Position(symbol=o.symbol, pos_side=o.pos_side, side="long" if o.side == "buy" else "short", size=open_q, entry_price=price, leverage=lev, margin=open_q * price / lev, opened_ms=t, updated_ms=t)
                self.positions[key] = pos
                self.closed_positions.pop(key, None)
                self.metrics_state.position_opened(pos, t)
            else:
                pos.entry_price = (pos.entry_price * pos.size + price * open_q) / (pos.size + open_q)
                pos.size += open_q
                pos.margin += open_q * price / pos.leverage
                pos.updated_ms = t
        if pos is not None:
            pos.fees += fee
        self.wallet += realized - fee
        if clearance_fee is None:
            self.totals["realized_pnl"] += realized
            self.totals["fees"] += fee
        f = Fill(id=self._new_id(), order_id=o.id, symbol=o.symbol, side=o.side, pos_side=o.pos_side, price=price, qty=qty, fee=fee, realized_pnl=realized, ts_ms=t, client_id=o.client_id, liquidation=clearance_fee is not None)
        self.fills.append(f)
        self.fills_by_id[f.id] = f
        o.filled += qty
        o.cost += qty * price
        o.fee += fee
        o.last_trade_ms = o.updated_ms = t
        o.trade_ids.append(f.id)
        self._emit("position", key)
        return f

    def _close_position(self, pos: Position, t: int, *, liquidated: bool) -> None:
        key = f"{pos.symbol}|{pos.pos_side}"
        del self.positions[key]
        self.closed_positions[key] = pos
        self.metrics_state.position_closed(pos, t, liquidated=liquidated)

    def cancel_order(self, order_id: str | None, *, now_ms: int, symbol: str | None = None, client_id: str | None = None, origin: str = "api") -> Order:
        """Cancel an open order (by id or client id); unknown or no longer open: -2011 / 110001."""
        t = self._begin(now_ms)
        o = self._find(order_id, client_id)
        if o is None or o.status != OPEN or (symbol and self._market(symbol).symbol != o.symbol):
            raise self._err("cancel_unknown")
        self._finish(o, CANCELED, t, "canceled externally" if origin == "external" else "canceled")
        return o

    def _find(self, order_id: str | None, client_id: str | None) -> Order | None:
        if order_id not in (None, ""):
            return self.orders.get(str(order_id))
        if client_id:
            oid = self.client_ids.get(client_id)
            return self.orders.get(oid) if oid else None
        return None

    def get_order(self, order_id: str | None = None, *, client_id: str | None = None, symbol: str | None = None) -> Order:
        """An order in any state, by id or client id; unknown: -2013 / 110001."""
        o = self._find(order_id, client_id)
        if o is None or (symbol and self._market(symbol).symbol != o.symbol):
            raise self._err("fetch_unknown")
        return o

    def open_order_list(self, symbol: str | None = None) -> list[Order]:
        sym = self._market(symbol).symbol if symbol else None
        return list(self.open_orders.values()) if sym is None else list(self.open_by_symbol.get(sym, {}).values())

    # ------------------------------------------------------------- prices
    def on_mark(self, symbol: str, price: Decimal, now_ms: int) -> None:
        """A new mark price: fire crossed stops and liquidations in the order the path met them."""
        t = self._begin(now_ms)
        m = self._market(symbol)
        price = price if isinstance(price, Decimal) else Decimal(str(price))
        prev = self.marks.get(m.symbol)
        self.marks[m.symbol] = price
        events: list[tuple[Decimal, int, int, Order | Position]] = []
        here = list(self.open_by_symbol.get(m.symbol, {}).values())
        for o in here:
            trig = o.trigger_price  # set: o is a stop
            if trig is not None and ((price <= trig) if o.trigger_direction == FALLING else (price >= trig)):
                events.append((trig, 0, int(o.id), o))
        for o in here:
            if o.limit_price is not None and self._limit_reached(o, price):
                events.append((o.limit_price, 0, int(o.id), o))
        for pos in self._positions_of(m.symbol):
            liq = self.liquidation_price(pos)
            if (price <= liq) if pos.side == "long" else (price >= liq):
                events.append((liq, 1, 0, pos))
        falling = prev is None or price < prev
        events.sort(key=lambda e: (-e[0] if falling else e[0], e[1], e[2]))
        for _level, _kind, _oid, obj in events:
            if isinstance(obj, Order):  # kind 0
                if obj.status == OPEN and obj.is_limit:
                    self._fill_limit(m, obj, price, t, marketable=False)
                elif obj.status == OPEN:
                    self._trigger(m, obj, price, t)
            elif self.positions.get(f"{obj.symbol}|{obj.pos_side}") is obj:  # kind 1
                self._liquidate(m, obj, t)

    @staticmethod
    def _limit_reached(o: Order, mark: Decimal) -> bool:
        assert o.limit_price is not None
        return mark >= o.limit_price if o.side == "sell" else mark <= o.limit_price

    def _fill_limit(self, m: Market, o: Order, mark: Decimal, t: int, *, marketable: bool) -> None:
        """A limit order the mark reached: fills in full at its price (marketable: at the taker price if better)."""
        assert o.limit_price is not None
        price = o.limit_price
        if marketable:
            taker = self._taker_price(m, mark, o.side)
            price = max(price, taker) if o.side == "sell" else min(price, taker)
        if o.is_closing():
            pos = self._target(o)
            if pos is None:
                return self._finish(o, EXPIRED, t, "reduce-only: no position to reduce")
            o.amount = min(o.amount, pos.size)
        else:
            try:
                self._check_margin(o, o.amount, price)
            except ccxt.InsufficientFunds:
                return self._finish(o, EXPIRED, t, "margin insufficient at fill")
        self._fill(o, o.remaining, price, t)
        self._finish(o, CLOSED, t)

    def _trigger(self, m: Market, o: Order, mark: Decimal, t: int) -> None:
        o.triggered = True
        price = self._taker_price(m, mark, o.side)
        if o.is_closing():
            pos = self._target(o)
            if pos is None:
                return self._finish(o, EXPIRED, t, "reduce-only: no position to reduce")
            if o.close_position or pos.size < o.amount:
                o.amount = pos.size
        else:
            try:
                self._check_margin(o, o.amount, price)
            except ccxt.InsufficientFunds:
                return self._finish(o, EXPIRED, t, "margin insufficient at trigger")
        self._fill(o, o.amount, price, t)
        self._finish(o, CLOSED, t)

    def liquidation_price(self, pos: Position) -> Decimal:
        """Isolated-margin liquidation price, on the tick, rounded towards the mark."""
        m = self._market(pos.symbol)
        lev, mmr = Decimal(pos.leverage), self.config.maintenance_margin_rate
        if pos.side == "long":
            return m.round_price(pos.entry_price * (1 - 1 / lev + mmr), Rounding.UP)
        return m.round_price(pos.entry_price * (1 + 1 / lev - mmr), Rounding.DOWN)

    def _liquidate(self, m: Market, pos: Position, t: int) -> None:
        price = self.liquidation_price(pos)
        margin = pos.margin
        realized = ((price - pos.entry_price) * pos.size * (1 if pos.side == "long" else -1)).quantize(_FEE_QUANTUM, rounding=ROUND_HALF_UP)
        clearance = (margin + realized).quantize(_FEE_QUANTUM, rounding=ROUND_HALF_UP)
        side = "sell" if pos.side == "long" else "buy"
        o = Order(id=self._new_id(), symbol=pos.symbol, side=side, kind="liquidation", amount=pos.size, requested_amount=pos.size, pos_side=pos.pos_side, created_ms=t, updated_ms=t, client_id=f"autoclose-{t}" if self.config.flavour == "binance" else "", reduce_only=True, origin="liquidation")
        self.orders[o.id] = o
        self._fill(o, pos.size, price, t, clearance_fee=clearance)
        self._finish(o, CLOSED, t)
        self.totals["liquidated_margin"] += clearance - realized  # what the wallet lost, on the 1e-8 grid
        self.totals["liquidations"] += 1

    # ------------------------------------------------------------ account
    def used_margin(self) -> Decimal:
        return sum((p.margin for p in self.positions.values()), D0)

    def free_balance(self) -> Decimal:
        return self.wallet - self.used_margin()

    def unrealized_pnl(self, pos: Position) -> Decimal:
        mark = self.marks.get(pos.symbol, pos.entry_price)
        return (mark - pos.entry_price) * pos.size * (1 if pos.side == "long" else -1)

    def balance(self) -> dict[str, Decimal]:
        """wallet (realised), used (position margin), free, unrealized."""
        used = self.used_margin()
        upnl = sum((self.unrealized_pnl(p) for p in self.positions.values()), D0)
        return {"wallet": self.wallet, "used": used, "free": self.wallet - used, "unrealized": upnl}

    def position_list(self, symbols: Iterable[str] | None = None) -> list[Position]:
        wanted = {self._market(s).symbol for s in symbols} if symbols else None
        return [p for p in self.positions.values() if wanted is None or p.symbol in wanted]

    def position_record(self, key: str) -> Position | None:
        """The open position on ``SYMBOL|side`` or its last closed record (size 0)."""
        pos = self.positions.get(key)
        if pos is not None:
            return pos
        last = self.closed_positions.get(key)
        return msgspec.structs.replace(last, size=D0, margin=D0) if last is not None else None

    def set_leverage(self, symbol: str, leverage: int, *, now_ms: int) -> int:
        """Leverage for new positions on ``symbol`` (an open position keeps its own until flat)."""
        self._begin(now_ms)
        m = self._market(symbol)
        lev = int(leverage)
        if lev != leverage or not 1 <= lev <= (m.max_leverage or 125):
            raise self._err("invalid_leverage", leverage=leverage)
        if self.config.flavour == "bybit" and self.leverage_of(m.symbol) == lev:
            raise self._err("leverage_not_modified")
        self.leverage[m.symbol] = lev
        return lev

    # ------------------------------------------------------- measurements
    def metrics(self, now_ms: int | None = None) -> dict[str, Any]:
        """Totals (ms as int, money as Decimal); ``now_ms`` first charges time up to then."""
        if now_ms is not None:
            self._begin(now_ms)
        return persistence.metrics_report(self)

    def position_metrics(self, symbol: str, side: str | None = None, now_ms: int | None = None) -> dict[str, Any]:
        """The current (or last) position episode on ``symbol`` (hedge: ``side`` long/short)."""
        if now_ms is not None:
            self._begin(now_ms)
        return persistence.position_report(self, symbol, side)

    def snapshot(self) -> dict[str, Any]:
        """All state as JSON-able data (Decimals as strings)."""
        return persistence.snapshot_engine(self)

    @classmethod
    def restore(cls, snapshot: dict[str, Any], markets: Markets) -> PaperEngine:
        """An engine exactly as it was when ``snapshot`` was taken."""
        return persistence.restore_engine(cls, snapshot, markets)
