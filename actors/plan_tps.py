"""Planner: the take-profit ladder, and the stop that follows it (pure).

Once the position is protected, each level (distance from entry, share of the
opened quantity) becomes a reduce-only take-profit. A share that rounds below
the market's minimum quantity is merged into the next level (seed 000's
degradation case); a level that still cannot be placed is dropped with a
reason. Each level is looked up by its client id before it is placed, so a
restart never doubles one.

When a TP fills, :func:`wanted_adjustment` derives from the state alone the
stop the position should have: breakeven after TP1 (entry plus fees), for the
remaining quantity. The move itself is the zero-gap move of :mod:`actors.plan_moves`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from actors import position_events as pe
from actors.position_commands import NOTHING, Env, LookUpOrder, Note, PlaceTakeProfit, Plan, Step, fold
from actors.position_state import P, PositionState
from actors.trailing import breakeven_price, on_grid
from adapters.errors import VenueError
from adapters.markets import Market
from adapters.venue import OrderReport, OrderStatus
from core.events import Severity
from core.ids import Side, client_order_id


def plan_levels(cfg: Any, market: Market, side: str, entry: Decimal, qty: Decimal) -> tuple[list[pe.TpLevel], list[str]]:
    """TP levels to place (level, price, qty) and why any were merged or dropped."""
    notes: list[str] = []
    raw = [(1, cfg.tp1_percent, cfg.tp1_share), (2, cfg.tp2_percent, cfg.tp2_share)]
    levels: list[pe.TpLevel] = []
    carry = Decimal(0)
    sign = Side(side).sign
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
        q = min(q, qty - sum((lv.qty for lv in levels), Decimal(0)))
        if q <= 0:
            notes.append(f"TP{level}: nothing left to take")
            continue
        price = market.round_price(entry * (1 + pct / Decimal(100) * sign))
        levels.append(pe.TpLevel(level=level, price=price, qty=q))
    return levels, notes


def start(s: PositionState, env: Env) -> Plan:
    cfg = env.config.take_profit
    if not cfg.enabled or s.tps or s.stop_kind == "emergency" or s.state is not P.PROTECTED:
        return NOTHING
    assert s.entry_price is not None
    levels, why = plan_levels(cfg, env.market, s.side, s.entry_price, s.qty)
    notes = tuple(Note(type="position.tp_replanned", data={"note": n}, severity=Severity.WARNING) for n in why)
    levels = [msgspec.structs.replace(lv, client_id=client_order_id(s.position_id, "t", lv.level)) for lv in levels]
    return Plan(notes=notes).then(_next_level(s, tuple(levels)))


def _next_level(s: PositionState, levels: tuple[pe.TpLevel, ...]) -> Plan:
    todo = [lv for lv in levels if lv.order_id is None]
    if not levels:
        return NOTHING
    if not todo:
        return Plan(events=(pe.TpPlaced(levels=levels),))
    if s.state is not P.PROTECTED:
        return NOTHING
    return Plan(next=LookUpOrder(step=Step.TP_LOOKUP, client_id=todo[0].client_id, level=todo[0].level, levels=levels))


def after_lookup(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None) -> Plan:
    if error is None and order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN, OrderStatus.FILLED):
        return _placed(s, cmd.levels, cmd.level, order, None)
    lv = next(lv for lv in cmd.levels if lv.level == cmd.level)
    assert lv.client_id is not None
    return Plan(next=PlaceTakeProfit(step=Step.TP_PLACE, levels=cmd.levels, price=lv.price, qty=lv.qty, client_id=lv.client_id))


def after_place(s: PositionState, cmd: PlaceTakeProfit, order: OrderReport | None, error: VenueError | None) -> Plan:
    level = next(lv.level for lv in cmd.levels if lv.client_id == cmd.client_id)
    return _placed(s, cmd.levels, level, order, error)


def _placed(s: PositionState, levels: tuple[pe.TpLevel, ...], level: int, order: OrderReport | None, error: VenueError | None) -> Plan:
    if error is not None or order is None:
        note = Note(type="position.tp_failed", data={"level": level, "error": str(error) if error else "not placed"}, severity=Severity.WARNING)
        rest = tuple(lv for lv in levels if lv.level != level)  # optional exits: never retried into a storm
        return Plan(notes=(note,)).then(_next_level(s, rest))
    done = tuple(msgspec.structs.replace(lv, order_id=order.order_id) if lv.level == level else lv for lv in levels)
    return _next_level(s, done)


def due(s: PositionState, mark: Decimal) -> pe.TpLevel | None:
    """The first open TP level the mark has reached (worth asking the venue about)."""
    for tp in s.tps:  # (on every mark: the open levels without building open_tps)
        if not tp.filled and tp.order_id and not s.side.better(tp.price, mark):  # long: mark >= price; short: mark <= price
            return tp
    return None


def check(tp: pe.TpLevel) -> LookUpOrder:
    return LookUpOrder(step=Step.CHECK_TP, order_id=tp.order_id, level=tp.level)


def fill_event(s: PositionState, level: int, order: OrderReport) -> pe.TpFilled:
    assert s.entry_price is not None
    price = order.average
    pnl = s.side.pnl(s.entry_price, price, order.filled) if price is not None else None
    return pe.TpFilled(level=level, qty=order.filled, price=price, pnl=pnl, order_id=order.order_id, fee=order.fee)


def after_check(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_exit, plan_moves

    if error is not None or order is None or order.status is not OrderStatus.FILLED:
        return NOTHING
    plan = Plan(events=(fill_event(s, cmd.level, order),))
    after = fold(s, plan.events, env.now_ms)
    if after.qty <= 0:
        return plan.then(plan_exit.record_exit(after, pe.Closed, order, "take-profits filled", env))
    return plan.then(plan_moves.adjust(after, env))


def wanted_adjustment(s: PositionState, env: Env) -> tuple[Decimal, Decimal, str] | None:
    """The stop this position should have now (price, qty, reason), derived from state."""
    if s.state is not P.PROTECTED or s.stop_price is None or s.move_client_id is not None or s.entry_price is None:
        return None
    price, reason = s.stop_price, "resize"
    tp1_done = bool(s.tps) and any(tp.level == 1 and tp.filled for tp in s.tps)
    if tp1_done and env.config.take_profit.breakeven_after_tp1:
        be = on_grid(s.side, breakeven_price(s.side, s.entry_price, env.config.trailing.breakeven_fee_percent), env.market.tick_size)
        if s.side.better(be, price):
            price, reason = be, "tp1_breakeven"
    if price == s.stop_price and (s.stop_qty is None or s.stop_qty == s.qty):
        return None
    return price, s.qty, reason
