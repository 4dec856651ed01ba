"""Planner: the owner's side of reconciliation — the exchange is the truth (pure).

The sync actor and the guard only *report*; the owner verifies with a fresh
read of its own before acting, because a snapshot taken a moment ago can be
stale:

* its stop fired -> is the position flat? (recorded with the stop's fill) or
  is some of it still open (a human added, a refused market child)? then the
  rest is protected again;
* its stop is gone (cancelled by a human, expired) -> flat means closed outside
  the bot; otherwise the stop is restored at its last level, never looser;
* the exchange shows another quantity -> recorded (``qty_corrected``; our own
  take-profits are checked first) and the stop re-sized by a zero-gap move;
* stray orders with our client id that we no longer reference -> cancelled.
"""

from __future__ import annotations

from decimal import Decimal

from actors import position_events as pe
from actors.messages import ExchangeView
from actors.position_commands import NOTHING, Again, CancelOrder, Env, LookUpOrder, Note, Plan, ReadOpenTps, ReadPosition, Retry, Step, fold
from actors.position_state import P, PositionState
from adapters.errors import VenueError
from adapters.venue import OrderReport, OrderStatus, PositionReport
from core.events import Severity


def check_stop(s: PositionState) -> Plan:
    return Plan(next=LookUpOrder(step=Step.CHECK_STOP, order_id=s.stop_order_id))


def after_check_stop(s: PositionState, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None or s.state is not P.PROTECTED:
        return NOTHING  # checked again on the next tick
    if order is not None and order.status is OrderStatus.FILLED:
        # A fired stop is not yet a closed position (a Binance stop's market child can be
        # refused; a human may have added to the position): the position decides.
        return Plan(next=ReadPosition(step=Step.STOP_FILL_POSITION, fill=order))
    if order is None or order.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED):
        return Plan(next=ReadPosition(step=Step.LOST_STOP_POSITION, reason=order.status.value if order else "not found"))
    return NOTHING


def _corrected(s: PositionState, pos: PositionReport) -> tuple[pe.PositionEvent, ...]:
    return (pe.QtyCorrected(qty=pos.qty, was=s.qty, source="exchange"),) if pos.qty != s.qty else ()


def after_stop_fill_position(s: PositionState, cmd: ReadPosition, pos: PositionReport | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_exit, plan_open

    if error is not None:
        return NOTHING  # the next check asks again
    if pos is None:
        return plan_exit.record_exit(s, pe.StopFilled, cmd.fill, "stop filled", env)
    events = (*_corrected(s, pos), pe.StopLost(order_id=s.stop_order_id, status=f"filled, but {pos.qty} still open"))
    return Plan(events=events).then(plan_open.place_stop(fold(s, events, env.now_ms), "restore", env, env.mark))


def after_lost_stop_position(s: PositionState, cmd: ReadPosition, pos: PositionReport | None, error: VenueError | None, env: Env) -> Plan:
    """Our stop is gone: is the position gone too (closed elsewhere), or naked?"""
    from actors import plan_exit, plan_open

    if error is not None:
        return Plan(retry=Retry(step=Again.VERIFY, delay_ms=env.config.position.retry_delay_ms))
    if pos is None:
        return plan_exit.found_flat(s, "gone on the exchange (closed outside the bot)")
    head = Plan(events=_corrected(s, pos))
    return head.then(plan_open.lost_stop(fold(s, head.events, env.now_ms), cmd.reason, env))


def on_view(s: PositionState, view: ExchangeView) -> Plan:
    """A reconcile's view of this position (the owner keeps one that comes while it is busy)."""
    if s.state not in (P.PROTECTED, P.PENDING_STOP) or s.move_client_id is not None:
        return NOTHING  # mid-step: what it finds is judged once the step is done
    refs = s.order_refs()
    strays = tuple(oid for oid in view.stray_orders if oid not in refs)
    pos: PositionReport | None = view.position
    if pos is None or pos.qty != s.qty:
        return Plan(next=ReadPosition(step=Step.VERIFY_VIEW, orders=strays))
    return _cancel_strays(strays)


def after_verify_view(s: PositionState, cmd: ReadPosition, pos: PositionReport | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_exit

    if error is not None:
        return NOTHING
    if pos is None:
        return plan_exit.found_flat(s, "closed outside the bot (found flat by reconciliation)")
    if pos.qty < s.qty and s.state is P.PROTECTED and s.open_tps:
        # smaller: our own take-profits may explain it; they are recorded first
        return Plan(next=ReadOpenTps(step=Step.VIEW_TPS, qty=pos.qty, orders=cmd.orders))
    return correct_qty(s, pos.qty, cmd.orders, env)


def after_view_tps(s: PositionState, cmd: ReadOpenTps, found: list[tuple[int, OrderReport | None]] | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_exit, plan_tps

    if error is not None:
        return NOTHING  # the next report asks again
    events = tuple(plan_tps.fill_event(s, level, order) for level, order in found or () if order is not None and order.status is OrderStatus.FILLED)
    after = fold(s, events, env.now_ms)
    if after.qty <= 0:
        return Plan(events=events).then(plan_exit.record_exit(after, pe.Closed, None, "take-profits filled", env))
    return Plan(events=events).then(correct_qty(after, cmd.qty, cmd.orders, env))


def correct_qty(s: PositionState, qty: Decimal, strays: tuple[str, ...], env: Env) -> Plan:
    from actors import plan_moves

    events: tuple[pe.PositionEvent, ...] = ()
    if qty != s.qty and s.state in (P.PROTECTED, P.PENDING_STOP):
        events = (pe.QtyCorrected(qty=qty, was=s.qty, source="exchange"),)
    after = fold(s, events, env.now_ms)
    adjusted = plan_moves.adjust(after, env) if after.state is P.PROTECTED else NOTHING
    if adjusted.next is not None:
        return Plan(events=events).then(adjusted)
    return Plan(events=events).then(_cancel_strays(strays))


def _cancel_strays(strays: tuple[str, ...]) -> Plan:
    if not strays:
        return NOTHING
    return Plan(next=CancelOrder(step=Step.STRAY, order_id=strays[0], rest=strays[1:]))


def after_stray(s: PositionState, cmd: CancelOrder, order: OrderReport | None, error: VenueError | None) -> Plan:
    type_ = "position.stray_order_cancelled" if error is None else "position.stray_order_left"
    note = Note(type=type_, data={"order_id": cmd.order_id, "error": str(error) if error else None}, severity=Severity.WARNING)
    return Plan(notes=(note,)).then(_cancel_strays(cmd.rest))
