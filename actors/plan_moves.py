"""Planner: stop moves — trailing decisions and the zero-gap replacement (pure).

Every rule that moves a stop (trailing, breakeven, TP1 -> breakeven, a resize)
ends here, in the one actor that owns the stop, one message at a time: they
cannot fight. A move never leaves the position without a stop: the new stop is
placed and confirmed first, then the old one is cancelled and the cancel is
verified (unknown order = gone; FILLED = the old stop closed the position while
we were moving, so the new one is cancelled instead). If the new stop cannot be
placed the old one stays and the move is retried by a scheduled message; after
``trailing.max_move_attempts`` failures in a row moves pause for
``trailing.disable_secs`` with a critical event. A cancel of the old stop that
keeps failing is retried with backoff at most ``position.cancel_attempts``
times; then the position stays on the new, tighter stop, the old one is left
for reconciliation to clean, and a critical event says so.
"""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any

from actors import plan_tps
from actors import position_events as pe
from actors.position_commands import NOTHING, Again, CancelOrder, Env, LookUpOrder, Note, PlaceStop, Plan, Retry, Step, error_text, fold, next_client_id
from actors.position_state import P, PositionState
from actors.trailing import TrailingParams, TrailState, evaluate
from adapters.errors import Outcome, VenueError
from adapters.venue import OrderReport, OrderStatus
from core.events import Severity


class LooseningStop(RuntimeError):
    """A code path tried to move a stop away from the market: a bug, never sent."""


_PARAMS: dict[int, tuple[Any, TrailingParams]] = {}


def trailing_params(cfg: Any) -> TrailingParams:
    """The pure rules' parameters, built once per config section (not on every mark)."""
    cached = _PARAMS.get(id(cfg))
    if cached is None or cached[0] is not cfg:
        cached = (cfg, TrailingParams(**{f: getattr(cfg, f) for f in TrailingParams.__struct_fields__}))
        _PARAMS[id(cfg)] = cached
    return cached[1]


def persist_ms(cfg: Any, position_id: str) -> int:
    """How long an improved best may wait to be recorded: ``best_persist_interval_secs``, less a
    share of its second half fixed by the position's id. Owners that activated together (one
    market-wide move) so record their bests spread over half an interval, not all in one batch
    that a stop move's write-ahead record would queue behind; never later than the interval."""
    full = cfg.best_persist_interval_secs * 1000
    return full - zlib.crc32(position_id.encode()) % (full // 2 + 1)


def trail_of(s: PositionState) -> TrailState:
    return TrailState(active=s.trail_active, best=s.trail_best, activated_ms=s.trail_activated_ms, breakeven_reached=s.breakeven_reached)


def paused(s: PositionState, now_ms: int) -> bool:
    return s.moves_disabled_until_ms is not None and now_ms < s.moves_disabled_until_ms


def consider(s: PositionState, trail: TrailState, mark: Decimal, env: Env, saved_ms: int) -> Plan:
    """Feed a mark to the trailing rules: the trailing memory after it, and a move if they want one."""
    cfg = env.config.trailing
    if not cfg.enabled or s.stop_price is None or s.entry_price is None or paused(s, env.now_ms):
        return NOTHING
    new, decision = evaluate(
        trailing_params(cfg), side=s.side, entry=s.entry_price, opened_ms=s.opened_ts_ms or env.now_ms, stop=s.stop_price,
        last_move_ms=s.last_move_ms, state=trail, mark=mark, now_ms=env.now_ms, tick=env.market.tick_size,
    )
    events: tuple[pe.PositionEvent, ...] = ()
    if new.active and not trail.active:
        assert new.best is not None
        events = (pe.TrailingActivated(best=new.best, mark=mark, entry=s.entry_price),)
    elif (new.best != s.trail_best or new.breakeven_reached != s.breakeven_reached) and env.now_ms - saved_ms >= persist_ms(cfg, s.position_id):
        events = (pe.TrailBest(best=new.best, breakeven_reached=new.breakeven_reached),)
    plan = Plan(events=events, trail=new)
    if decision is not None:
        return plan.then(move(s, decision.price, s.qty, decision.reason, env, emergency=decision.emergency, best=new.best))
    return plan


def move(s: PositionState, price: Decimal, qty: Decimal, reason: str, env: Env, *, emergency: bool = False, best: Decimal | None = None) -> Plan:
    """Replace the live stop by one at ``price`` for ``qty`` (never looser)."""
    if s.state is not P.PROTECTED or s.stop_order_id is None:
        raise RuntimeError(f"{s.position_id}: cannot move a stop in state {s.state.value}")
    if s.side.better(s.stop_price, price) or (price == s.stop_price and qty == (s.stop_qty or s.qty)):
        raise LooseningStop(f"{s.position_id}: stop {s.stop_price} -> {price} ({reason}) would loosen it or change nothing")
    cid, seq = next_client_id(s, "s")
    sent = pe.StopMoveSent(client_id=cid, price=price, qty=qty, reason=reason, old_order_id=s.stop_order_id, old_price=s.stop_price, emergency=emergency, seq=seq)
    return Plan(events=(sent,), next=PlaceStop(step=Step.MOVE_PLACE, client_id=cid, price=price, qty=qty, kind="move"))


def after_place(s: PositionState, cmd: PlaceStop, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    from actors import plan_exit

    if error is None and order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
        placed = pe.StopMovePlaced(order_id=order.order_id)
        if order.order_id == s.stop_order_id:  # amended in place (a position-attached stop): nothing old to cancel
            return Plan(events=(placed,)).then(finish(fold(s, (placed,), env.now_ms), env))
        return Plan(events=(placed,), next=_cancel_old(s))
    if error is not None and error.outcome is Outcome.WOULD_TRIGGER:
        failed = pe.StopMoveFailed(reason=str(error), outcome=error.outcome.value, attempt=s.move_attempts + 1)
        return Plan(events=(failed,)).then(plan_exit.begin_close(s, "price already through the new stop", env))
    reason = error_text(error, f"new stop {order.status.value if order else 'not found'}")
    if error is not None and error.outcome is Outcome.INSUFFICIENT_FUNDS:
        reason = f"insufficient balance while the old stop still reserves the quantity; waiting ({error})"
    failed = pe.StopMoveFailed(reason=reason, outcome=error.outcome.value if error else "not_live", attempt=s.move_attempts + 1)
    attempts = s.move_attempts + 1
    tcfg = env.config.trailing
    if attempts >= tcfg.max_move_attempts:
        disabled = pe.MovesDisabled(until_ms=env.now_ms + tcfg.disable_secs * 1000, attempts=attempts, last_error=reason)
        return Plan(events=(failed, disabled))
    retry = Retry(step=Again.MOVE, delay_ms=env.config.position.retry_delay_ms * 2 ** min(attempts, 6), move=(cmd.price, cmd.qty, s.move_reason or "move"))
    if error is not None and error.outcome is Outcome.REJECTED:
        # A refused reduce-only stop often means the position is gone: the old stop may
        # have fired meanwhile. Ask before trying again.
        return Plan(events=(failed,), next=LookUpOrder(step=Step.CHECK_STOP, order_id=s.stop_order_id), retry=retry)
    return Plan(events=(failed,), retry=retry)


def _cancel_old(s: PositionState, attempt: int = 0) -> CancelOrder:
    assert s.stop_order_id is not None
    return CancelOrder(step=Step.MOVE_CANCEL_OLD, order_id=s.stop_order_id, attempt=attempt)


def after_cancel_old(s: PositionState, cmd: CancelOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None:  # both stops live meanwhile: bounded
        return _cancel_again(s, cmd.attempt, str(error), env)
    if order is not None and order.status is not OrderStatus.FILLED:
        return finish(s, env)
    return Plan(next=LookUpOrder(step=Step.MOVE_CHECK_OLD, order_id=s.stop_order_id, attempt=cmd.attempt))


def _cancel_again(s: PositionState, attempt: int, error: str, env: Env) -> Plan:
    attempt += 1
    note = Note(type="position.stop_cancel_retry", data={"order_id": s.stop_order_id, "error": error, "attempt": attempt}, severity=Severity.WARNING)
    if attempt >= env.config.position.cancel_attempts:
        gave_up = Note(
            type="position.old_stop_left", severity=Severity.CRITICAL,
            data={"order_id": s.stop_order_id, "attempts": attempt, "error": error, "kept": s.move_order_id, "note": "staying on the tighter stop; reconciliation cancels the old one"},
        )
        return Plan(notes=(note, gave_up)).then(finish(s, env, old_left=True))
    return Plan(notes=(note,), retry=Retry(step=Again.MOVE_CANCEL, delay_ms=env.config.position.retry_delay_ms * 2 ** min(attempt, 6), attempt=attempt))


def after_check_old(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    """The venue did not cancel the old stop: is it gone, live, or did it fire?"""
    from actors import plan_exit

    if error is not None or (order is not None and order.status is OrderStatus.OPEN):
        return _cancel_again(s, cmd.attempt, error_text(error, "the old stop is still open"), env)
    if order is not None and order.status is OrderStatus.FILLED:
        extra = (s.move_order_id,) if s.move_order_id else ()
        return plan_exit.record_exit(s, pe.StopFilled, order, "stop filled", env, leftovers=extra)
    return finish(s, env)  # unknown order, cancelled, expired: gone


def finish(s: PositionState, env: Env, *, old_left: bool = False) -> Plan:
    assert s.move_order_id is not None and s.move_client_id is not None and s.move_price is not None and s.move_qty is not None
    moved = pe.StopMoved(
        order_id=s.move_order_id, client_id=s.move_client_id, price=s.move_price, qty=s.move_qty, reason=s.move_reason or "move",
        old_order_id=s.stop_order_id, old_price=s.stop_price, best=env.trail_best or s.trail_best, old_left=old_left,
    )
    return Plan(events=(moved,))


def resume(s: PositionState, env: Env) -> Plan:
    """After a restart with a move in flight: finish it from what the exchange says."""
    if s.move_order_id is not None and s.move_order_id == s.stop_order_id:
        return finish(s, env)  # amended in place: the one stop is the new one (the owner's check follows)
    if s.move_order_id is not None:
        return Plan(next=_cancel_old(s))
    return Plan(next=LookUpOrder(step=Step.MOVE_LOOKUP, client_id=s.move_client_id))


def after_lookup(s: PositionState, cmd: LookUpOrder, order: OrderReport | None, error: VenueError | None, env: Env) -> Plan:
    if error is not None:
        return Plan(retry=Retry(step=Again.RESUME, delay_ms=env.config.position.retry_delay_ms, attempt=cmd.attempt + 1))
    if order is not None and order.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN):
        return Plan(events=(pe.StopMovePlaced(order_id=order.order_id),), next=_cancel_old(s))
    if order is None and cmd.attempt < env.config.position.entry_lookups:
        return Plan(retry=Retry(step=Again.RESUME, delay_ms=env.config.position.retry_delay_ms * 2 ** min(cmd.attempt + 1, 6), attempt=cmd.attempt + 1))  # a request of the previous incarnation may still land
    return Plan(events=(pe.StopMoveFailed(reason="interrupted by a restart before the new stop was live", outcome="not_live", attempt=s.move_attempts + 1),))


def retry(s: PositionState, wanted: tuple[Decimal, Decimal, str] | None, env: Env) -> Plan:
    """A scheduled retry: try the wanted move again if it is still an improvement."""
    if s.state is not P.PROTECTED or paused(s, env.now_ms) or s.move_client_id is not None:
        return NOTHING
    adjusted = adjust(s, env)
    if adjusted.next is not None or wanted is None:
        return adjusted
    price, qty, reason = wanted
    if s.side.better(price, s.stop_price) or qty != s.qty:
        return move(s, price if s.side.better(price, s.stop_price) else s.stop_price or price, s.qty, reason, env)
    return NOTHING


def adjust(s: PositionState, env: Env) -> Plan:
    """Start the stop this position should have (breakeven after TP1, a resize), if moves are allowed."""
    wanted = plan_tps.wanted_adjustment(s, env)
    if wanted is None or paused(s, env.now_ms):
        return NOTHING
    return move(s, *wanted, env)

