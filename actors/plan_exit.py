"""Planner: how a position ends — close, verify, record, clean up (pure).

A close first reads the position and closes its *real* size (seed 002: 5
expected, 3 on the exchange -> close 3; a human added -> close all of it). It
is a reduce-only market order; the position is then verified flat *before* its
stop is cancelled, so it is never naked while open. Flat without our close
having filled: our own stop is asked what happened (filled -> recorded with its
fill), else it was closed outside the bot, and the exchange's fills say at what
price and whether it was a liquidation. After the exit is recorded every order
of ours still live (stop, a move's new stop, open take-profits) is cancelled
and the actor stops. A close that fails is tried again (at most 3 times), the
stop staying live meanwhile.
"""

from __future__ import annotations

from decimal import Decimal

from actors import position_events as pe
from actors.messages import PositionClosed, PositionOpenFailed
from actors.position_commands import NOTHING, Again, CancelOrder, Env, LookUpOrder, Note, Plan, ReadFills, ReadPosition, Retry, SendClose, Step, fold, next_client_id
from actors.position_state import P, PositionState
from adapters.errors import Outcome, VenueError
from adapters.venue import FillReport, OrderReport, OrderStatus, PositionReport
from core.events import Severity

MAX_CLOSE_TRIES = 3


def begin_close(s: PositionState, reason: str, env: Env) -> Plan:
    """Read the position first: the close sends what is really open."""
    return Plan(next=ReadPosition(step=Step.CLOSE_READ, reason=reason))


def after_close_read(s: PositionState, cmd: ReadPosition, pos: PositionReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None:
        return Plan(retry=Retry(step=Again.CLOSE, delay_ms=env.config.position.retry_delay_ms, attempt=1, reason=cmd.reason))
    if pos is None:  # nothing to close: what closed it?
        return found_flat(s, f"{cmd.reason} (found flat before the close)")
    events: tuple[pe.PositionEvent, ...] = ()
    if pos.qty != s.qty:
        events = (pe.QtyCorrected(qty=pos.qty, was=s.qty, source="exchange"),)
    cid, seq = next_client_id(s, "c")
    events += (pe.CloseSent(client_id=cid, reason=cmd.reason, qty=pos.qty, seq=seq),)
    return Plan(events=events, next=SendClose(step=Step.CLOSE, client_id=cid, qty=pos.qty))


def after_close(s: PositionState, order: OrderReport | None, error: VenueError | None) -> Plan:
    notes = (Note(type="position.close_order_failed", data={"error": str(error)}, severity=Severity.WARNING),) if error is not None else ()
    return Plan(notes=notes, next=ReadPosition(step=Step.VERIFY_FLAT, fill=order if error is None else None))


def after_verify_flat(s: PositionState, cmd: ReadPosition, pos: PositionReport | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_open

    if error is not None:
        return Plan(retry=Retry(step=Again.VERIFY_FLAT, delay_ms=plan_open.backoff_ms(env, 1)))
    if pos is None:
        fill = cmd.fill
        if (fill is None or fill.filled <= 0) and s.stop_order_id:
            return Plan(next=LookUpOrder(step=Step.EXIT_CHECK_STOP, order_id=s.stop_order_id))
        if s.close_reason == "rollback":
            return record_exit(s, pe.RolledBack, fill, "rollback", env)
        return record_exit(s, pe.Closed, fill, s.close_reason or "closed", env)
    if s.close_reason == "rollback":
        failed = pe.RollbackFailed(remaining=pos.qty)
        after = fold(s, (failed,), env.now_ms)
        return Plan(events=(failed,)).then(plan_open.place_stop(after, "emergency", env, env.mark))
    reason = s.close_reason or "close"
    failed_close = pe.CloseFailed(remaining=pos.qty)
    if s.close_failures + 1 < MAX_CLOSE_TRIES:  # tried again (the stop stays live meanwhile)
        return Plan(events=(failed_close, pe.CloseRequested(reason=reason)))
    note = Note(type="position.close_gave_up", data={"reason": reason, "attempts": s.close_failures + 1}, severity=Severity.CRITICAL)
    return Plan(events=(failed_close,), notes=(note,))


def after_exit_check_stop(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    """Flat, but our close did not fill: did our stop close it?"""
    if order is not None and order.status is OrderStatus.FILLED:
        return record_exit(s, pe.StopFilled, order, "stop filled", env)
    if s.state is P.CLOSING and s.close_reason == "rollback":
        return record_exit(s, pe.RolledBack, None, "rollback", env)
    return closed_elsewhere(s, cmd.reason or f"{s.close_reason or 'closed'} (found flat)")


def found_flat(s: PositionState, reason: str) -> Plan:
    """Flat, and not by a close of ours we know filled: ask our own exits first, in turn —
    the live aged exit (a limit order that may have filled), then the stop — and only
    then record it as closed outside the bot (``reason``)."""
    from actors import plan_aged

    if s.aged_order_id is not None:
        return plan_aged.check_flat(s, reason)
    if s.stop_order_id:
        return Plan(next=LookUpOrder(step=Step.EXIT_CHECK_STOP, order_id=s.stop_order_id, reason=reason))
    return closed_elsewhere(s, reason)


def closed_elsewhere(s: PositionState, reason: str) -> Plan:
    """Flat, and not by an order of ours: the exchange's own fills say at what price, and
    whether it was a liquidation (Bybit marks those; Binance's trade list does not)."""
    return Plan(next=ReadFills(step=Step.OUTSIDE_FILLS, since_ms=s.opened_ts_ms, reason=reason))


def after_outside_fills(s: PositionState, cmd: ReadFills, fills: list[FillReport] | None, error: VenueError | None, env: Env) -> Plan:
    ours = s.order_refs() | {s.entry_order_id}
    closing = [f for f in fills or () if f.side == s.closing_side and f.kind in ("trade", "liquidation", "adl") and f.order_id not in ours]
    if error is None and not closing:
        exits: dict[str, str] = {tp.order_id: f"take-profit {tp.level}" for tp in s.open_tps if tp.order_id}
        if s.aged_order_id is not None:
            exits[s.aged_order_id] = s.aged_reason or "aged exit"
        own = [(f, f.order_id) for f in fills or () if f.side == s.closing_side and f.order_id in exits]
        if own:  # a live exit order of ours closed it after all (its fill seen only here)
            qty = sum((f.qty for f, _ in own), Decimal(0))
            average = sum((f.price * f.qty for f, _ in own), Decimal(0)) / qty
            last_id = own[-1][1] or ""
            fee = _fills_fee([f for f, _ in own], env)
            fill = OrderReport(order_id=last_id, client_id=None, symbol=s.symbol, side=s.closing_side, status=OrderStatus.FILLED, amount=qty, filled=qty, average=average, fee=fee)
            return record_exit(s, pe.Closed, fill, exits[last_id], env)
    if error is not None or not closing:
        return record_exit(s, pe.Closed, None, cmd.reason, env, outside=True)  # no price to be had: recorded without one
    qty = sum((f.qty for f in closing), Decimal(0))
    average = sum((f.price * f.qty for f in closing), Decimal(0)) / qty
    last = closing[-1]
    fill = OrderReport(order_id=last.order_id or last.trade_id, client_id=None, symbol=s.symbol, side=s.closing_side, status=OrderStatus.FILLED, amount=qty, filled=qty, average=average, fee=_fills_fee(closing, env))
    kinds = {f.kind for f in closing}
    if kinds <= {"trade"} and last.order_id:  # the fills do not say who closed it: the order does
        return Plan(next=LookUpOrder(step=Step.OUTSIDE_ORDER, order_id=last.order_id, fill=fill, reason=cmd.reason))
    return _record_outside(s, kinds, fill, cmd.reason, env)


def _fills_fee(fills: list[FillReport], env: Env) -> Decimal | None:
    """The fills' fees in the quote currency; None unless every fill reports one in it."""
    if not fills or any(f.fee is None or (f.fee_currency is not None and f.fee_currency != env.market.quote) for f in fills):
        return None
    return sum((f.fee for f in fills if f.fee is not None), Decimal(0))


def after_outside_order(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    kind = env.forced_close_kind(order.client_id) if order is not None else None
    return _record_outside(s, {kind} if kind else set(), cmd.fill, cmd.reason, env)


def _record_outside(s: PositionState, kinds: set[str], fill: OrderReport | None, reason: str, env: Env) -> Plan:
    forced = "liquidation" if "liquidation" in kinds else "adl" if "adl" in kinds else None
    text = {"liquidation": "liquidated", "adl": "auto-deleveraged"}.get(forced or "", reason)
    return record_exit(s, pe.Closed, fill, text, env, outside=True, forced=forced)


def record_exit(
    s: PositionState, cls: type[pe.Closed] | type[pe.StopFilled] | type[pe.RolledBack], fill: OrderReport | None, reason: str, env: Env,
    *, leftovers: tuple[str, ...] = (), outside: bool = False, forced: str | None = None,
) -> Plan:
    """Record the end of the position, then cancel whatever of ours is still live."""
    price = fill.average if fill is not None else None
    pnl = s.side.pnl(s.entry_price, price, s.qty) if price is not None and s.entry_price is not None else None
    if pnl is not None and s.realized_pnl:  # partial exits (take-profits) before this one
        pnl += s.realized_pnl
    exit_ = cls(reason=reason, exit_price=price, pnl=pnl, order_id=fill.order_id if fill else None, outside=outside, forced=forced, fee=fill.fee if fill else None)
    report: PositionOpenFailed | PositionClosed
    if cls is pe.RolledBack:
        report = PositionOpenFailed(position_id=s.position_id, symbol=s.symbol, reason="stop could not be placed; position closed again", outcome=Outcome.REJECTED.value)
    else:
        report = PositionClosed(position_id=s.position_id, symbol=s.symbol, reason=reason, exit_price=price, pnl=pnl)
    filled_id = fill.order_id if fill is not None else None
    ours = (s.stop_order_id, s.move_order_id, s.aged_order_id, s.aged_old_order_id, *(tp.order_id for tp in s.tps if not tp.filled), *leftovers)
    ids = [i for i in dict.fromkeys(ours) if i and i != filled_id]
    return Plan(events=(exit_,), tell=(report,)).then(_cancel_leftovers(tuple(ids)))


def _cancel_leftovers(ids: tuple[str, ...]) -> Plan:
    if not ids:
        return Plan(stop=True)
    return Plan(next=CancelOrder(step=Step.LEFTOVER, order_id=ids[0], rest=ids[1:]))


def after_leftover(s: PositionState, cmd: CancelOrder, order: OrderReport | None, error: VenueError | None) -> Plan:
    if error is not None:
        note = Note(type="position.order_left_behind", data={"order_id": cmd.order_id, "error": str(error)}, severity=Severity.WARNING)
        return Plan(notes=(note,)).then(_cancel_leftovers(cmd.rest))
    return Plan(events=(pe.StopCancelled(order_id=cmd.order_id),)).then(_cancel_leftovers(cmd.rest))


def close_on_request(s: PositionState, reason: str, env: Env, busy: bool) -> Plan:
    """A close asked for (user, guard): now if the position can act, else recorded for later."""
    if s.state is P.PROTECTED and not busy and s.move_client_id is None:
        return begin_close(s, reason, env)
    if not s.state.is_open or s.state is P.CLOSING:
        return NOTHING
    return Plan(events=(pe.CloseRequested(reason=reason),))
