"""Which planner answers which step, where a restarted owner resumes, what a retry does (pure).

The position actor (:mod:`actors.position`) runs one command at a time; its
answer goes to the planner function :data:`AFTER` names for the command's
:class:`~actors.position_commands.Step`. A retry the actor scheduled comes
back as a :class:`~actors.position_commands.Retry` and :func:`retry_plan`
says what it means in the position's state *now* (a retry that no longer
applies does nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors import plan_aged, plan_exit, plan_moves, plan_open, plan_tps, plan_truth
from actors import position_commands as pc
from actors.position_state import P, PositionState
from adapters.errors import Outcome, VenueError

S = pc.Step
#: What each step's answer goes to: (state, command, result, error, env) -> Plan.
AFTER: dict[pc.Step, Callable[[PositionState, Any, Any, VenueError | None, pc.Env], pc.Plan]] = {
    S.SIZE: lambda s, c, r, e, env: plan_open.after_size(s, r, e, env),
    S.ENTRY: lambda s, c, r, e, env: plan_open.after_entry(s, r, e, getattr(c, "attempt", 0), env),
    S.STOP: plan_open.after_stop,
    S.RESTORE_MARK: lambda s, c, r, e, env: plan_open.after_restore_mark(s, r, e, env),
    S.ADOPT_MARK: lambda s, c, r, e, env: plan_open.after_adopt_mark(s, r, e, env),
    S.CHECK_STOP: lambda s, c, r, e, env: plan_truth.after_check_stop(s, r, e, env),
    S.STOP_FILL_POSITION: plan_truth.after_stop_fill_position,
    S.LOST_STOP_POSITION: plan_truth.after_lost_stop_position,
    S.MOVE_PLACE: plan_moves.after_place,
    S.MOVE_CANCEL_OLD: plan_moves.after_cancel_old,
    S.MOVE_CHECK_OLD: plan_moves.after_check_old,
    S.MOVE_LOOKUP: plan_moves.after_lookup,
    S.TP_LOOKUP: lambda s, c, r, e, env: plan_tps.after_lookup(s, c, r, e),
    S.TP_PLACE: lambda s, c, r, e, env: plan_tps.after_place(s, c, r, e),
    S.CHECK_TP: plan_tps.after_check,
    S.CLOSE_READ: plan_exit.after_close_read,
    S.CLOSE: lambda s, c, r, e, env: plan_exit.after_close(s, r, e),
    S.VERIFY_FLAT: plan_exit.after_verify_flat,
    S.EXIT_CHECK_STOP: plan_exit.after_exit_check_stop,
    S.OUTSIDE_FILLS: plan_exit.after_outside_fills,
    S.OUTSIDE_ORDER: plan_exit.after_outside_order,
    S.LEFTOVER: lambda s, c, r, e, env: plan_exit.after_leftover(s, c, r, e),
    S.VERIFY_VIEW: plan_truth.after_verify_view,
    S.VIEW_TPS: plan_truth.after_view_tps,
    S.STRAY: lambda s, c, r, e, env: plan_truth.after_stray(s, c, r, e),
    S.AGED_READ: plan_aged.after_read,
    S.AGED_PLACE: plan_aged.after_place,
    S.AGED_CANCEL_OLD: plan_aged.after_cancel_old,
    S.AGED_CHECK_OLD: plan_aged.after_check_old,
    S.AGED_CHECK: plan_aged.after_check,
    S.AGED_FILL_READ: plan_aged.after_fill_read,
    S.AGED_LOOKUP: plan_aged.after_lookup,
    S.AGED_LEAVE: plan_aged.after_leave,
}


def retry_plan(s: PositionState, r: pc.Retry, env: pc.Env) -> pc.Plan:
    """What a scheduled retry does now, if it still applies to the position's state."""
    A = pc.Again
    if r.step is A.RESOLVE_ENTRY and s.state is P.ENTRY_PLACED:
        return pc.Plan(next=plan_open.resolve_entry(s, r.attempt))
    if r.step is A.STOP and s.state is P.PENDING_STOP:
        return plan_open.retry_stop(s, env)
    if r.step is A.VERIFY_FLAT and s.state is P.CLOSING:
        return pc.Plan(next=pc.ReadPosition(step=S.VERIFY_FLAT))
    if r.step is A.CLOSE and s.state in (P.PROTECTED, P.PENDING_STOP):
        return plan_exit.begin_close(s, r.reason or s.close_requested or "close", env)
    if s.state is not P.PROTECTED:
        return pc.NOTHING
    if r.step is A.VERIFY:
        return plan_truth.check_stop(s)
    if r.step is A.MOVE and s.move_client_id is None:
        return plan_moves.retry(s, r.move, env)
    if r.step is A.MOVE_CANCEL and s.move_order_id is not None and s.stop_order_id is not None:
        return pc.Plan(next=pc.CancelOrder(step=S.MOVE_CANCEL_OLD, order_id=s.stop_order_id, attempt=r.attempt))
    if r.step is A.RESUME and s.move_client_id is not None:
        return pc.Plan(next=pc.LookUpOrder(step=S.MOVE_LOOKUP, client_id=s.move_client_id, attempt=r.attempt))
    if r.step is A.AGED_LOOKUP and s.aged_pending_client_id is not None:
        return pc.Plan(next=pc.LookUpOrder(step=S.AGED_LOOKUP, client_id=s.aged_pending_client_id, attempt=r.attempt))
    if r.step is A.AGED_CANCEL and s.aged_old_order_id is not None:
        return pc.Plan(next=pc.CancelOrder(step=S.AGED_CANCEL_OLD, order_id=s.aged_old_order_id, attempt=r.attempt))
    if r.step is A.AGED:
        return plan_aged.review(s, env)
    return pc.NOTHING


def resume_plan(s: PositionState, env: pc.Env) -> pc.Plan:
    """Where a (re)started owner picks up, from its folded state: it asks the exchange before acting."""
    if not s.state.is_open:
        return pc.Plan(stop=True)
    if s.state is P.PENDING_ENTRY:  # the entry was never sent (its write-ahead record is missing)
        return plan_open.fail(s, "interrupted before the entry was sent", Outcome.REJECTED)
    if s.state is P.ENTRY_PLACED:
        return pc.Plan(next=plan_open.resolve_entry(s))
    if s.state is P.PENDING_STOP:
        if s.pending_stop_client_id:
            return pc.Plan(next=pc.LookUpOrder(step=pc.Step.STOP, client_id=s.pending_stop_client_id))
        return plan_open.retry_stop(s, env)
    if s.state is P.PROTECTED:
        head = pc.Plan(subscribe=True)
        if s.move_client_id is not None:
            return head.then(plan_moves.resume(s, env))
        if s.aged_pending_client_id is not None or s.aged_old_order_id is not None:
            return head.then(plan_aged.review(s, env))  # the same exit, looked up by client id: never a second one
        if s.aged_order_id is not None:
            return head.then(plan_aged.check(s))
        tps = plan_tps.start(s, env)
        if tps.next is not None:
            return head.then(tps)  # looked up by client id first: never doubled
        return head.then(plan_truth.check_stop(s))
    return pc.Plan(next=pc.ReadPosition(step=pc.Step.VERIFY_FLAT))  # CLOSING
