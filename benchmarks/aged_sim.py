"""A synchronous position interpreter over a :class:`PaperEngine` (no actors, no I/O loop).

It runs the same pure planners and the same ``AFTER`` table as the position
actor, one command at a time, so a position's whole aged life (hours of
marks, refusals, restarts) can be replayed in milliseconds: the property
tests of ``tests/test_aged_properties.py`` and ``make bench`` (``bench_aged``)
use it. Retries are kept in a due-time list, nothing sleeps. ``restart()``
rebuilds the state from the recorded events (the fold) and resumes as the
actor does; ``crash`` hooks drop a command before it is sent or its answer
after it was executed, as a SIGKILL would.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt

from actors import plan_aged, plan_moves, plan_open, plan_truth
from actors import position_commands as pc
from actors import position_events as pe
from actors.position import AFTER
from actors.position_state import P, PositionState, apply
from adapters.errors import VenueError, classify
from adapters.markets import Market
from adapters.paper import PaperEngine
from adapters.paper.model import Order
from adapters.venue import OrderReport, OrderStatus, PositionReport
from core.ids import Side

_STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}

#: A hook deciding, per command, whether the process "dies" before sending it ("before"),
#: after the exchange executed it but before its answer is handled ("after"), or not (None).
Crash = Callable[[pc.Command], str | None]
#: A hook that may refuse an exit placement with a ccxt exception.
Refuse = Callable[[pc.PlaceExit], BaseException | None]


class SimPosition:
    def __init__(self, engine: PaperEngine, market: Market, config: Any, pid: str, side: str, now_ms: int, quote: Decimal = Decimal(100), leverage: int = 10) -> None:
        self.engine, self.market, self.config, self.pid = engine, market, config, pid
        self.now_ms = now_ms
        self.mark: Decimal | None = engine.marks.get(market.symbol)
        self.records: list[tuple[pe.PositionEvent, int]] = []
        self.retries: list[tuple[int, pc.Retry]] = []
        self.crash: Crash = lambda _cmd: None
        self.refuse: Refuse = lambda _cmd: None
        self.restarts = 0
        self.max_exits_live = 0
        self.state = PositionState(position_id=pid, exchange="paper", symbol=market.id, side=Side(side), quote_amount=quote, leverage=leverage)
        self._run(pc.Plan(events=(pe.OpenRequested(side=side, quote_amount=quote, leverage=leverage),), next=pc.ReadMark(step=pc.Step.SIZE)))

    # ------------------------------------------------------------- driving
    def env(self) -> pc.Env:
        return pc.Env(config=self.config, market=self.market, now_ms=self.now_ms, mark=self.mark, mark_ms=self.now_ms)

    def on_mark(self, price: Decimal, now_ms: int) -> None:
        """The engine moves first (stops, exits and liquidations fire), then the position hears the mark."""
        self.now_ms = now_ms
        self.engine.on_mark(self.market.symbol, price, now_ms)
        self.mark = price
        self._due()
        s = self.state
        if s.state is not P.PROTECTED or s.stop_price is None:
            return
        if s.side.through(price, s.stop_price):
            return self._run(plan_truth.check_stop(s))
        if plan_aged.due(s, price) and s.aged_pending_client_id is None:
            return self._run(plan_aged.check(s))
        if s.move_client_id is not None or s.close_requested:
            return
        adjusted = plan_moves.adjust(s, self.env())
        if adjusted.next is not None:
            return self._run(adjusted)
        self._run(plan_moves.consider(s, plan_moves.trail_of(s), price, self.env(), 0))
        if plan_aged.wants_leave(self.state):
            self._run(plan_aged.review(self.state, self.env()))

    def aged_tick(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self._due()
        if self.state.state is P.PROTECTED:
            self._run(plan_aged.review(self.state, self.env()))

    def verify_tick(self, now_ms: int) -> None:
        self.now_ms = now_ms
        if self.state.state is P.PROTECTED:
            self._run(plan_truth.check_stop(self.state))

    def restart(self) -> None:
        """As after a SIGKILL: the state from the stored events, scheduled retries lost, then resume."""
        self.restarts += 1
        self.retries = []
        s: PositionState | None = None
        for event, ts in self.records:
            s = PositionState(position_id=self.pid, exchange="paper", symbol=self.market.id, side=Side(event.side)) if s is None and isinstance(event, pe.OpenRequested) else s
            assert s is not None
            s = apply(s, event, ts)
        assert s is not None and s == self.state, "the fold of the stored events is the live state"
        self.state = s
        if s.state is P.PROTECTED:
            if s.move_client_id is not None:
                return self._run(plan_moves.resume(s))
            if s.aged_pending_client_id is not None or s.aged_old_order_id is not None:
                return self._run(plan_aged.review(s, self.env()))
            if s.aged_order_id is not None:
                return self._run(plan_aged.check(s))
            return self._run(plan_truth.check_stop(s))
        if s.state is P.PENDING_STOP:
            return self._run(plan_open.retry_stop(s, self.env()))
        if s.state is P.CLOSING:
            return self._run(pc.Plan(next=pc.ReadPosition(step=pc.Step.VERIFY_FLAT)))

    # ------------------------------------------------------------ internals
    def _due(self) -> None:
        due = [r for r in self.retries if r[0] <= self.now_ms]
        self.retries = [r for r in self.retries if r[0] > self.now_ms]
        for _ts, retry in due:
            self._run(self._plan_retry(retry))

    def _plan_retry(self, r: pc.Retry) -> pc.Plan:
        s, A, S = self.state, pc.Again, pc.Step
        if s.state is P.PENDING_STOP and r.step is A.STOP:
            return plan_open.retry_stop(s, self.env())
        if s.state is P.CLOSING and r.step is A.VERIFY_FLAT:
            return pc.Plan(next=pc.ReadPosition(step=S.VERIFY_FLAT))
        if r.step is A.CLOSE and s.state is P.PROTECTED:
            from actors import plan_exit

            return plan_exit.begin_close(s, r.reason or "close", self.env())
        if s.state is not P.PROTECTED:
            return pc.NOTHING
        if r.step is A.AGED:
            return plan_aged.review(s, self.env())
        if r.step is A.AGED_LOOKUP and s.aged_pending_client_id is not None:
            return pc.Plan(next=pc.LookUpOrder(step=S.AGED_LOOKUP, client_id=s.aged_pending_client_id, attempt=r.attempt))
        if r.step is A.AGED_CANCEL and s.aged_old_order_id is not None:
            return pc.Plan(next=pc.CancelOrder(step=S.AGED_CANCEL_OLD, order_id=s.aged_old_order_id, attempt=r.attempt))
        if r.step is A.MOVE and s.move_client_id is None:
            return plan_moves.retry(s, r.move, self.env())
        if r.step is A.VERIFY:
            return plan_truth.check_stop(s)
        return pc.NOTHING

    def _run(self, plan: pc.Plan) -> None:
        while True:
            for event in plan.events:
                self.state = apply(self.state, event, self.now_ms)
                self.records.append((event, self.now_ms))
            if plan.retry is not None:
                self.retries.append((self.now_ms + plan.retry.delay_ms, plan.retry))
            cmd = plan.next
            self.max_exits_live = max(self.max_exits_live, len(self.exits_live()))
            if cmd is None:
                return
            crash = self.crash(cmd)
            if crash == "before":
                return self.restart()
            result, error = self._execute(cmd)
            self.max_exits_live = max(self.max_exits_live, len(self.exits_live()))
            if crash == "after":
                return self.restart()
            plan = AFTER[cmd.step](self.state, cmd, None if error else result, error, self.env())

    def exits_live(self) -> list[Order]:
        prefix = f"tb-{self.pid}-x"
        return [o for o in self.engine.open_orders.values() if o.client_id.startswith(prefix)]

    def _report(self, o: Order) -> OrderReport:
        return OrderReport(
            order_id=o.id, client_id=o.client_id or None, symbol=self.market.id, side=o.side, status=_STATUS[o.status], amount=o.amount, filled=o.filled,
            average=o.average, trigger_price=o.trigger_price, limit_price=o.limit_price, reduce_only=o.reduce_only, ts_ms=o.created_ms,
        )

    def _position(self) -> PositionReport | None:
        p = self.engine.positions.get(f"{self.market.symbol}|both")
        if p is None or p.side != self.state.side:
            return None
        return PositionReport(symbol=self.market.id, side=p.side, qty=p.size, entry_price=p.entry_price, mark_price=self.mark, opened_ms=p.opened_ms)

    def _execute(self, cmd: pc.Command) -> tuple[Any, VenueError | None]:
        e, sym, s, t = self.engine, self.market.symbol, self.state, self.now_ms
        try:
            match cmd:
                case pc.ReadMark():
                    return e.marks[sym], None
                case pc.ReadPosition():
                    return self._position(), None
                case pc.LookUpOrder():
                    try:
                        return self._report(e.get_order(cmd.order_id, client_id=cmd.client_id if cmd.order_id is None else None)), None
                    except ccxt.OrderNotFound:
                        return None, None
                case pc.PlaceEntry():
                    return self._report(e.create_order(sym, "market", s.entry_side, cmd.qty, None, {"newClientOrderId": cmd.client_id}, now_ms=t)), None
                case pc.PlaceStop():
                    price = self.market.stop_price(cmd.price, closing_side=s.closing_side)
                    return self._report(e.create_order(sym, "STOP_MARKET", s.closing_side, cmd.qty, None, {"stopPrice": price, "reduceOnly": True, "newClientOrderId": cmd.client_id}, now_ms=t)), None
                case pc.PlaceExit():
                    refusal = self.refuse(cmd)
                    if refusal is not None:
                        raise refusal
                    params = {"timeInForce": "GTC", "reduceOnly": True, "newClientOrderId": cmd.client_id}
                    return self._report(e.create_order(sym, "limit", s.closing_side, cmd.qty, cmd.price, params, now_ms=t)), None
                case pc.SendClose():
                    return self._report(e.create_order(sym, "market", s.closing_side, cmd.qty, None, {"reduceOnly": True, "newClientOrderId": cmd.client_id}, now_ms=t)), None
                case pc.CancelOrder():
                    try:
                        return self._report(e.cancel_order(cmd.order_id, now_ms=t)), None
                    except ccxt.OrderNotFound:
                        return None, None
                case pc.ReadFills() | pc.ReadOpenTps():
                    return [], None
        except (ccxt.BaseError, KeyError) as exc:
            return None, classify(exc)
        raise TypeError(f"no simulation for {cmd!r}")

    # -------------------------------------------------------------- reading
    def events_of(self, cls: type[pe.PositionEvent]) -> list[Any]:
        return [e for e, _ in self.records if isinstance(e, cls)]
