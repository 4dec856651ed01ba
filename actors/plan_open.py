"""Planner: opening and protecting a position (pure; the actor interprets).

Atomic open: size from the mark -> market entry (client id recorded before it
is sent) -> a stop for the *filled* quantity at once, up to
``position.stop_attempts`` tries -> if it cannot be protected, close it again
(reduce-only, verified flat); if even that fails, a wide emergency stop and a
critical event. Adoption (a position found on the exchange that nobody owned)
and a lost stop's restore use the same stop placement.

Where a stop goes (:func:`stop_level`): the initial stop at entry ∓
``initial_stop_percent``; a *restore* at the last level the position had
(trailed, breakeven, after TP1), never looser; an emergency stop wide. If the
mark is already through that level, the guard's rule: 0.5 % beyond the mark, or
close the position when it is past the emergency loss level.
"""

from __future__ import annotations

from decimal import Decimal

from actors import position_events as pe
from actors.messages import PositionOpened, PositionOpenFailed
from actors.position_commands import NOTHING, Again, Env, LookUpOrder, Note, PlaceEntry, PlaceStop, Plan, ReadMark, Retry, Step, error_text, fold, next_client_id
from actors.position_state import P, PositionState
from adapters.errors import Outcome, VenueError
from adapters.venue import OrderReport, OrderStatus, PositionReport
from core.events import Severity

_HUNDRED = Decimal(100)


def loss_percent(s: PositionState, mark: Decimal) -> Decimal:
    """How far ``mark`` is in loss from the entry, in percent (negative in profit)."""
    assert s.entry_price is not None
    return -(mark - s.entry_price) / s.entry_price * _HUNDRED * s.side.sign


def beyond_emergency(s: PositionState, env: Env, mark: Decimal | None) -> bool:
    return mark is not None and s.entry_price is not None and loss_percent(s, mark) >= env.config.guard.emergency_loss_percent


def stop_level(s: PositionState, kind: str, env: Env, mark: Decimal | None) -> Decimal:
    """The stop price for ``kind`` (initial / restore / emergency), on the grid, away from the market."""
    assert s.entry_price is not None
    cfg = env.config.position
    if kind == "emergency":
        pct = cfg.emergency_stop_percent / _HUNDRED
        return env.market.stop_price(s.entry_price * (1 - pct * s.side.sign), closing_side=s.closing_side)
    pct = cfg.initial_stop_percent / _HUNDRED
    wanted = s.entry_price * (1 - pct * s.side.sign)
    if kind == "restore" and s.stop_price is not None:
        wanted = s.side.tighter(s.stop_price, wanted)  # never looser than the last stop it had
    if mark is not None and s.side.through(mark, wanted):
        offset = env.config.guard.restore_offset_percent / _HUNDRED
        wanted = mark * (1 - offset * s.side.sign)
    return env.market.stop_price(wanted, closing_side=s.closing_side)


# ----------------------------------------------------------------- entry
def after_size(s: PositionState, mark: Decimal | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None or mark is None:
        return fail(s, f"no mark price to size the entry: {error_text(error, 'none')}", error.outcome if error else Outcome.REJECTED)
    assert s.quote_amount is not None and s.leverage is not None
    m = env.market
    qty = m.round_qty(s.quote_amount * s.leverage / mark)
    if problem := m.check_order(qty, mark):
        return fail(s, f"size {qty} at {mark}: {problem}", Outcome.REJECTED)
    cid, seq = next_client_id(s, "e")
    return Plan(events=(pe.EntrySent(client_id=cid, qty=qty, ref_price=mark, seq=seq),), next=PlaceEntry(step=Step.ENTRY, client_id=cid, qty=qty, ref_price=mark))


def resolve_entry(s: PositionState, attempt: int = 0) -> LookUpOrder:
    return LookUpOrder(step=Step.ENTRY, client_id=s.entry_client_id, attempt=attempt)


def after_entry(s: PositionState, order: OrderReport | None, error: VenueError | None, attempt: int, env: Env) -> Plan:
    cfg = env.config.position
    if error is not None:
        if error.outcome in (Outcome.UNKNOWN, Outcome.RETRYABLE, Outcome.RATE_LIMITED):
            note = Note(type="position.entry_unresolved", data={"error": str(error)}, severity=Severity.WARNING)
            return Plan(notes=(note,), retry=Retry(step=Again.RESOLVE_ENTRY, delay_ms=backoff_ms(env, attempt + 1), attempt=attempt + 1))
        return fail(s, str(error), error.outcome, error.skip_symbol_ms)
    if order is None:  # looked up by client id: the venue does not know it
        if attempt < cfg.entry_lookups:
            return Plan(retry=Retry(step=Again.RESOLVE_ENTRY, delay_ms=backoff_ms(env, attempt + 1), attempt=attempt + 1))
        return fail(s, "entry never reached the exchange", Outcome.REJECTED)
    if order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
        return Plan(retry=Retry(step=Again.RESOLVE_ENTRY, delay_ms=cfg.retry_delay_ms, attempt=attempt + 1))
    if order.filled <= 0:
        return fail(s, f"entry {order.status.value} without a fill", Outcome.REJECTED)
    price = order.average or s.entry_ref_price
    assert price is not None, "the entry's reference price is folded from position.entry_sent"
    filled = pe.EntryFilled(order_id=order.order_id, qty=order.filled, price=price, status=order.status.value, fee=order.fee)
    plan = Plan(events=(filled,))
    return plan.then(place_stop(fold(s, plan.events, env.now_ms), "initial", env, env.mark))


def fail(s: PositionState, reason: str, outcome: Outcome, skip_ms: int = 0) -> Plan:
    report = PositionOpenFailed(position_id=s.position_id, symbol=s.symbol, reason=reason, outcome=outcome.value, skip_symbol_ms=skip_ms)
    return Plan(events=(pe.EntryFailed(reason=reason, outcome=outcome.value),), tell=(report,), stop=True)


def backoff_ms(env: Env, attempt: int) -> int:
    return int(min(60_000, env.config.position.retry_delay_ms * 2 ** min(attempt, 7)))


# ------------------------------------------------------------------ stop
def place_stop(s: PositionState, kind: str, env: Env, mark: Decimal | None, *, reread: bool = False) -> Plan:
    """Protect what is open: the stop for ``kind``, or a close if a restore is past the emergency level."""
    from actors import plan_exit

    if kind != "emergency" and beyond_emergency(s, env, mark) and s.state is P.PENDING_STOP and kind != "initial":
        return plan_exit.begin_close(s, "emergency: unprotected and beyond the emergency loss level", env)
    price = stop_level(s, kind, env, mark)
    cid, seq = next_client_id(s, "s")
    sent = pe.StopSent(client_id=cid, price=price, qty=s.qty, kind=kind, attempt=s.stop_attempts + 1, seq=seq, reason=s.stop_reason if kind == "restore" else None)
    return Plan(events=(sent,), next=PlaceStop(step=Step.STOP, client_id=cid, price=price, qty=s.qty, kind=kind, reread=reread))


def after_stop(s: PositionState, cmd: PlaceStop | LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_exit

    kind = s.pending_stop_kind or "initial"
    if error is None and order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
        price = order.trigger_price or (cmd.price if isinstance(cmd, PlaceStop) else None)
        assert price is not None
        placed = pe.StopPlaced(order_id=order.order_id, client_id=order.client_id or s.pending_stop_client_id or "", price=price, kind=kind, qty=order.amount or s.qty, reason=_reason_of(s, kind))
        plan = Plan(events=(placed,))
        return plan.then(protected(fold(s, plan.events, env.now_ms), kind, env))
    if error is None and order is not None and order.status is OrderStatus.FILLED:
        return plan_exit.record_exit(s, pe.StopFilled, order, "stop filled", env)
    if error is not None and error.outcome is Outcome.WOULD_TRIGGER:
        failed = pe.StopFailed(attempt=s.stop_attempts, reason=str(error))
        if isinstance(cmd, PlaceStop) and not cmd.reread:
            if error.current_price is not None:
                # The venue said which price it compared with (Bybit 110092/110093): the guard's
                # rule with that price (or our own mark, if it is worse), no read needed.
                venue_price = error.current_price
                worse = env.mark if env.mark is not None and s.side.through(env.mark, venue_price) else venue_price
                return Plan(events=(failed,)).then(after_restore_mark(fold(s, (failed,), env.now_ms), worse, None, env))
            # Our mark may be stale: read it once, then apply the guard's rule with the fresh one.
            return Plan(events=(failed,), next=ReadMark(step=Step.RESTORE_MARK))
        return Plan(events=(failed,)).then(plan_exit.begin_close(fold(s, (failed,), env.now_ms), "price already through the stop", env))
    if error is not None and error.outcome is Outcome.FATAL:
        note = Note(type="position.unprotected", data={"reason": str(error), "attempts": s.stop_attempts, "fatal": True}, severity=Severity.CRITICAL)
        return Plan(events=(pe.StopFailed(attempt=s.stop_attempts, reason=str(error)),), notes=(note,), retry=Retry(step=Again.STOP, delay_ms=60_000))
    reason = error_text(error, f"stop not on the exchange ({order.status.value if order else 'not found'})")
    failed = pe.StopFailed(attempt=s.stop_attempts, reason=reason)
    if s.stop_attempts < env.config.position.stop_attempts:
        return Plan(events=(failed,), retry=Retry(step=Again.STOP, delay_ms=env.config.position.retry_delay_ms))
    after = fold(s, (failed,), env.now_ms)
    if kind == "initial":
        return Plan(events=(failed,)).then(plan_exit.begin_close(after, "rollback", env))
    if kind == "restore":
        return Plan(events=(failed,)).then(plan_exit.begin_close(after, "protection could not be restored", env))
    note = Note(type="position.unprotected", data={"reason": reason, "attempts": s.stop_attempts}, severity=Severity.CRITICAL)
    return Plan(events=(failed,), notes=(note,), retry=Retry(step=Again.STOP, delay_ms=backoff_ms(env, s.stop_attempts)))


def after_restore_mark(s: PositionState, mark: Decimal | None, error: VenueError | None, env: Env) -> Plan:
    """The venue said the stop would trigger at once: place it by the guard's rule with this fresh mark."""
    fresh = mark if error is None and mark is not None else env.mark
    kind = s.pending_stop_kind or "initial"
    if beyond_emergency(s, env, fresh):
        from actors import plan_exit

        return plan_exit.begin_close(s, "emergency: the stop would trigger and the mark is beyond the emergency loss level", env)
    return place_stop(s, "restore" if kind == "initial" and s.stop_price is not None else kind, env, fresh, reread=True)


def _reason_of(s: PositionState, kind: str) -> str:
    return (s.stop_reason or "initial") if kind == "restore" else kind


def protected(s: PositionState, kind: str, env: Env) -> Plan:
    """Just protected: tell the requester (first time), receive marks, then what was waiting."""
    from actors import plan_exit, plan_tps

    notes: tuple[Note, ...] = ()
    if kind == "emergency":
        notes = (Note(type="position.emergency_stop", data={"stop_price": s.stop_price}, severity=Severity.CRITICAL),)
    assert s.entry_price is not None and s.stop_price is not None and s.stop_order_id is not None
    report = PositionOpened(position_id=s.position_id, symbol=s.symbol, side=s.side, qty=s.qty, entry_price=s.entry_price, stop_price=s.stop_price, stop_order_id=s.stop_order_id, emergency_stop=kind == "emergency")
    head = Plan(notes=notes, tell=(report,), subscribe=True)
    if s.close_requested:
        return head.then(plan_exit.begin_close(s, s.close_requested, env))
    return head.then(plan_tps.start(s, env))


# -------------------------------------------------------------- adoption
def begin_adoption(s: PositionState, found: PositionReport) -> Plan:
    adopted = pe.Adopted(qty=found.qty, entry_price=found.entry_price, side=found.side, opened_ms=found.opened_ms)
    events = (pe.OpenRequested(side=found.side, adopted=True), adopted)
    return Plan(events=events, next=ReadMark(step=Step.ADOPT_MARK))


def after_adopt_mark(s: PositionState, mark: Decimal | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_exit

    fresh = mark if error is None else env.mark
    if fresh is not None and beyond_emergency(s, env, fresh):
        return plan_exit.begin_close(s, f"emergency: adopted {loss_percent(s, fresh):.2f} % in loss, beyond the emergency level", env)
    return place_stop(s, "initial", env, fresh)


def lost_stop(s: PositionState, status: str, env: Env) -> Plan:
    """Our stop is gone and the position is still open: restore it at its last level (never looser)."""
    lost = pe.StopLost(order_id=s.stop_order_id, status=status)
    after = fold(s, (lost,), env.now_ms)
    return Plan(events=(lost,)).then(place_stop(after, "restore", env, env.mark))


def retry_stop(s: PositionState, env: Env) -> Plan:
    if s.state is not P.PENDING_STOP:
        return NOTHING
    return place_stop(s, s.pending_stop_kind or ("restore" if s.stop_price is not None else "initial"), env, env.mark)
