"""Trailing-stop rules as pure functions: a mark price in, maybe a stop move out.

No I/O and no clock of its own, so every rule is unit- and property-tested.
The position actor calls :func:`evaluate` on each mark price and executes the
decision (a zero-gap stop move); it records activation and moves as events,
so the trailing state survives restarts.

Rules (long; a short mirrors them):

* activation when profit >= ``activation_percent`` (mark price), or, with
  ``time_activation_minutes``, once the position is that old and in profit;
* once active the stop follows the best mark since activation at
  ``callback_percent`` below it;
* optional breakeven step: at ``breakeven_at_percent`` profit the stop goes to
  entry plus round-trip fees (at once: a safety floor ignores the rate limit
  and the minimum improvement), and stays at least there;
* the stop only tightens; a move is sent only if it improves the stop by
  ``min_improvement_percent``, at most once per ``min_move_interval_secs``,
  unless the wanted stop is ``emergency_percent`` or more past the live one
  (the market ran away from a rate-limited stop: move now).
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from core.grid import stop_on_grid

_HUNDRED = Decimal(100)


class TrailingParams(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool = True
    activation_percent: Decimal = Decimal("1.5")
    callback_percent: Decimal = Decimal("0.5")
    min_move_interval_secs: int = 60
    min_improvement_percent: Decimal = Decimal("0.1")
    emergency_percent: Decimal = Decimal("1.0")
    breakeven_at_percent: Decimal = Decimal(0)  # 0 = off
    breakeven_fee_percent: Decimal = Decimal("0.1")  # entry + exit taker fees
    time_activation_minutes: int = 0  # 0 = off


class TrailState(msgspec.Struct, frozen=True, kw_only=True):
    active: bool = False
    best: Decimal | None = None  # best mark since activation
    activated_ms: int | None = None
    breakeven_reached: bool = False


class StopDecision(msgspec.Struct, frozen=True, kw_only=True):
    price: Decimal  # on the tick grid, rounded away from the market
    reason: str  # trailing / breakeven
    emergency: bool  # the rate limit was overridden


def better(side: str, a: Decimal, b: Decimal) -> bool:
    """True if stop ``a`` protects more than stop ``b`` (long: higher, short: lower)."""
    return a > b if side == "long" else a < b


def profit_percent(side: str, entry: Decimal, mark: Decimal) -> Decimal:
    move = (mark - entry) / entry * _HUNDRED
    return move if side == "long" else -move


def breakeven_price(side: str, entry: Decimal, fee_percent: Decimal) -> Decimal:
    f = fee_percent / _HUNDRED
    return entry * (1 + f) if side == "long" else entry * (1 - f)


on_grid = stop_on_grid  # the one rule (core.grid); the name the rules and tests use


def evaluate(
    p: TrailingParams,
    *,
    side: str,
    entry: Decimal,
    opened_ms: int,
    stop: Decimal,
    last_move_ms: int | None,
    state: TrailState,
    mark: Decimal,
    now_ms: int,
    tick: Decimal,
) -> tuple[TrailState, StopDecision | None]:
    """The trailing state after ``mark``, and the stop move to make now (if any)."""
    if not p.enabled or not mark.is_finite() or mark <= 0:
        return state, None
    profit = profit_percent(side, entry, mark)
    s = state
    if s.active:
        if s.best is None or better(side, mark, s.best):  # out-of-order or worse ticks never lower the best
            s = msgspec.structs.replace(s, best=mark)
    elif profit >= p.activation_percent or (p.time_activation_minutes and now_ms - opened_ms >= p.time_activation_minutes * 60_000 and profit > 0):
        s = msgspec.structs.replace(s, active=True, best=mark, activated_ms=now_ms)
    if p.breakeven_at_percent > 0 and not s.breakeven_reached and profit >= p.breakeven_at_percent:
        s = msgspec.structs.replace(s, breakeven_reached=True)

    candidates: list[tuple[Decimal, str]] = []
    if s.active and s.best is not None:
        cb = p.callback_percent / _HUNDRED
        candidates.append((s.best * (1 - cb) if side == "long" else s.best * (1 + cb), "trailing"))
    if s.breakeven_reached:
        candidates.append((breakeven_price(side, entry, p.breakeven_fee_percent), "breakeven"))
    if not candidates:
        return s, None
    wanted, reason = max(candidates, key=lambda c: c[0]) if side == "long" else min(candidates, key=lambda c: c[0])
    wanted = on_grid(side, wanted, tick)
    if not better(side, wanted, stop):
        return s, None
    # Breakeven is a safety floor: once reached, a stop still worse than it moves
    # at once, whatever the rate limit and the minimum improvement say.
    below_breakeven = s.breakeven_reached and better(side, on_grid(side, breakeven_price(side, entry, p.breakeven_fee_percent), tick), stop)
    improvement = abs(wanted - stop) / stop * _HUNDRED
    if improvement < p.min_improvement_percent and not below_breakeven:
        return s, None
    held = last_move_ms is not None and now_ms - last_move_ms < p.min_move_interval_secs * 1000
    emergency = improvement >= p.emergency_percent or below_breakeven
    if held and not emergency:
        return s, None
    return s, StopDecision(price=wanted, reason=reason, emergency=emergency and held)
