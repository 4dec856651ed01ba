"""Planner: what one mark price means for a protected position (pure), and its calm band.

:func:`decide` is the whole rule a mark goes through, in order: a mark through
the stop asks the venue about the stop; one that reached a take-profit or the
aged exit asks about that order; then a wanted adjustment (breakeven after
TP1, a resize) and the trailing rules (:func:`actors.plan_moves.consider`).

Most marks change nothing: below the activation price, inside the trailing
best, short of every order's price. :func:`calm_band` says, after a mark that
changed nothing, for which marks (and until when) :func:`decide` provably
changes nothing either: the open price interval in which no rule's threshold
lies (the stop, each open take-profit, the aged exit, trailing activation, the
breakeven trigger, the trailing best) and the first moment a rule's clock
could change its answer (a held move's interval, a pause's end, time-based
activation, the trailing best's persist interval). The position actor skips
the rules for a mark inside the band of the unchanged state: a few comparisons
instead of the Decimal arithmetic of the trailing rules, on every mark of a
thousand owners. Property-tested against :func:`decide` itself
(``tests/test_plan_mark.py``).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from actors import plan_aged, plan_moves, plan_tps, plan_truth
from actors.position_commands import NOTHING, Env, Plan
from actors.position_state import PositionState
from actors.trailing import TrailState
from core.ids import Side

_HUNDRED = Decimal(100)
_MARGIN = Decimal("1e-12")  # a percent threshold as a price, pulled inwards: never decided by rounding
_FOREVER = 2**62


def decide(s: PositionState, trail: TrailState, mark: Decimal, env: Env, saved_ms: int) -> Plan:
    """The plan for ``mark`` of a protected position with a live stop and nothing in flight."""
    assert s.stop_price is not None
    if s.side.through(mark, s.stop_price):
        return plan_truth.check_stop(s)
    if (tp := plan_tps.due(s, mark)) is not None:
        return Plan(next=plan_tps.check(tp))
    if plan_aged.due(s, mark) and s.aged_pending_client_id is None:
        return plan_aged.check(s)
    if s.move_client_id is not None or s.close_requested:
        return NOTHING
    adjusted = plan_moves.adjust(s, env)
    if adjusted.next is not None:
        return adjusted
    return plan_moves.consider(s, trail, mark, env, saved_ms)


def changes_nothing(plan: Plan) -> bool:
    """No event, command, note, report, retry or subscription: at most the trailing memory."""
    return not (plan.events or plan.next or plan.notes or plan.tell or plan.retry or plan.subscribe or plan.stop)


class Calm(msgspec.Struct, frozen=True, kw_only=True):
    """Marks ``m`` with ``lo < m < hi`` (None: unbounded), and ``m <= best`` for a long
    (``m >= best`` for a short) when ``best`` is set, change nothing before ``until_ms``."""

    long: bool
    lo: Decimal | None
    hi: Decimal | None
    best: Decimal | None
    until_ms: int

    def holds(self, mark: Decimal, now_ms: int) -> bool:
        if now_ms >= self.until_ms or (self.lo is not None and mark <= self.lo) or (self.hi is not None and mark >= self.hi):
            return False
        b = self.best
        return b is None or (mark <= b if self.long else mark >= b)


def _percent_price(side: Side, entry: Decimal, percent: Decimal) -> Decimal:
    """The price at which ``side``'s profit reaches ``percent``, pulled towards the entry."""
    f = percent / _HUNDRED
    if side is Side.LONG:
        return entry * (1 + f) * (1 - _MARGIN)
    return entry * (1 - f) * (1 + _MARGIN)


def calm_band(s: PositionState, trail: TrailState, mark: Decimal, env: Env, saved_ms: int) -> Calm | None:
    """The calm band around ``mark``, given that :func:`decide` of ``mark`` changed nothing
    and left the trailing memory ``trail``; None when ``mark`` itself is outside it."""
    long = s.side is Side.LONG
    ahead: list[Decimal] = []  # thresholds on the profit side of the mark (long: above)
    behind: list[Decimal] = []  # on the loss side
    until = _FOREVER
    assert s.stop_price is not None
    behind.append(s.stop_price)
    ahead.extend(tp.price for tp in s.tps if not tp.filled and tp.order_id)
    if s.aged_order_id is not None and s.aged_price is not None and s.aged_pending_client_id is None:
        ahead.append(s.aged_price)
    best = None
    if s.move_client_id is None and not s.close_requested:
        if s.moves_disabled_until_ms is not None and s.moves_disabled_until_ms > env.now_ms:
            until = min(until, s.moves_disabled_until_ms)
        cfg = env.config.trailing
        if cfg.enabled and s.entry_price is not None:
            entry = s.entry_price
            if trail.active:
                if trail.best is None:
                    return None
                best = trail.best
            else:
                ahead.append(_percent_price(s.side, entry, cfg.activation_percent))
                if cfg.time_activation_minutes and s.opened_ts_ms is not None:
                    due = s.opened_ts_ms + cfg.time_activation_minutes * 60_000
                    if env.now_ms < due:
                        until = min(until, due)
                    else:
                        ahead.append(entry)  # old enough: any profit activates
            if cfg.breakeven_at_percent > 0 and not trail.breakeven_reached:
                ahead.append(_percent_price(s.side, entry, cfg.breakeven_at_percent))
            if s.last_move_ms is not None and env.now_ms < s.last_move_ms + cfg.min_move_interval_secs * 1000:
                until = min(until, s.last_move_ms + cfg.min_move_interval_secs * 1000)  # a held move may come due
            if trail.best != s.trail_best or trail.breakeven_reached != s.breakeven_reached:
                until = min(until, saved_ms + plan_moves.persist_ms(cfg, s.position_id))  # the memory is persisted then
    if long:
        band = Calm(long=True, lo=max(behind), hi=min(ahead) if ahead else None, best=best, until_ms=until)
    else:
        band = Calm(long=False, lo=max(ahead) if ahead else None, hi=min(behind), best=best, until_ms=until)
    return band if band.holds(mark, env.now_ms) else None
