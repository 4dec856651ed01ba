"""The aged-position policy: phases, the accepted loss, the exit's price and size (pure).

A position is *aged* once it is ``aged.max_age_hours`` old (from the entry
fill; an adopted one from the exchange's own open time where the venue reports
it, else from its adoption). Then:

* **grace** (``grace_hours``): at breakeven including both sides' taker fees;
* **progressive**: the accepted loss grows by ``loss_step_percent_per_hour``,
  times ``acceleration`` for the hours after the position is older than
  ``accelerate_after_hours`` (counted from open, like the age), up to
  ``max_loss_percent``;
* **cap**: the loss stays at ``max_loss_percent``.

The loss is *net of fees*, as a share of the entry notional: a long's exit is
``entry x (1 + f - L) / (1 - f)``, a short's ``entry x (1 - f + L) / (1 + f)``
(``f`` the taker fee per side: the market's where the market data has it, else
``aged.fallback_fee_percent``). The price is put on the tick grid in the
direction that accepts *less* loss (a long's sell rounds up, a short's buy
down), is at least one tick, and is kept inside the venue's price limits:
where the percent-price band bounds the aggressive side it is moved towards
the market (less loss, and the order fills at once); where the venue's
min/max price would force more loss the exit is refused with the reason.
The planner that places and moves the exit is :mod:`actors.plan_aged`.
"""

from __future__ import annotations

import enum
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from actors.position_state import PositionState
from adapters.markets import Market, Rounding
from core.ids import Side

HOUR_MS = 3_600_000
_HUNDRED = Decimal(100)
_LOSS_QUANTUM = Decimal("0.01")  # the allowance is rounded down to 0.01 % (never more loss than allowed)

class Phase(enum.StrEnum):
    GRACE = "grace"
    PROGRESSIVE = "progressive"
    CAP = "cap"


#: Phases in which the position is on the aged path (after them: left / gave_up).
ACTIVE = frozenset({None, Phase.GRACE.value, Phase.PROGRESSIVE.value, Phase.CAP.value})


# ------------------------------------------------------------------ policy
def _ms(hours: Decimal) -> Decimal:
    return hours * HOUR_MS


def phase_at(cfg: Any, age_ms: int) -> Phase | None:
    """The aged phase of a position ``age_ms`` old (None: not aged yet)."""
    if age_ms < _ms(cfg.max_age_hours):
        return None
    if age_ms < _ms(cfg.max_age_hours + cfg.grace_hours):
        return Phase.GRACE
    return Phase.CAP if raw_loss(cfg, age_ms) >= cfg.max_loss_percent else Phase.PROGRESSIVE


def raw_loss(cfg: Any, age_ms: int) -> Decimal:
    """The accepted loss by the schedule alone (percent, uncapped, exact)."""
    start = _ms(cfg.max_age_hours + cfg.grace_hours)
    if age_ms <= start:
        return Decimal(0)
    turn = max(start, _ms(cfg.accelerate_after_hours))
    slow = min(Decimal(age_ms), turn) - start
    fast = max(Decimal(age_ms) - turn, Decimal(0))
    return cfg.loss_step_percent_per_hour * (slow + fast * cfg.acceleration) / HOUR_MS


def allowed_loss(cfg: Any, age_ms: int, widen: Decimal = Decimal(0)) -> Decimal:
    """The accepted loss (percent, net of fees) at ``age_ms``: schedule plus fallback widening, never above the cap."""
    if phase_at(cfg, age_ms) is None:
        return Decimal(0)
    loss = min(raw_loss(cfg, age_ms) + widen, cfg.max_loss_percent)
    return loss.quantize(_LOSS_QUANTUM, rounding=ROUND_FLOOR)


def fee_rate(market: Market, cfg: Any) -> Decimal:
    """The taker fee per side: the market's where the market data has it, else the config's."""
    return market.taker_fee if market.taker_fee is not None else cfg.fallback_fee_percent / _HUNDRED


def target_price(side: Side, entry: Decimal, fee: Decimal, loss_percent: Decimal) -> Decimal:
    """The exit price at which the loss net of both taker fees is ``loss_percent`` of the entry notional (off the grid)."""
    loss = loss_percent / _HUNDRED
    if side is Side.LONG:
        return entry * (1 + fee - loss) / (1 - fee)
    return entry * (1 - fee + loss) / (1 + fee)


def exit_price(market: Market, side: Side, target: Decimal, mark: Decimal | None) -> tuple[Decimal | None, str]:
    """``target`` on the grid, never accepting more loss, inside the venue's limits: (price, note) or (None, why not)."""
    closing = side.closing_side
    if not target.is_finite() or target <= 0:
        return None, f"target {target} is not a positive price"
    ticks = (target / market.tick_size).to_integral_value(rounding=(Rounding.UP if side is Side.LONG else Rounding.DOWN).value)
    if ticks < 1:
        return None, f"target {target} is below one tick {market.tick_size}: a buy at one tick would accept more loss"
    price = ticks * market.tick_size
    low, high = market.limit_bounds(closing, mark)
    note = ""
    if side is Side.LONG:
        if high is not None and price > high:
            return None, f"sell price {price} above the venue's maximum {high}: any lower price accepts more loss"
        if price < low:
            price, note = low, f"raised to the venue's lowest sell price {low} (less loss; fills at once)"
    else:
        if price < low:
            return None, f"buy price {price} below the venue's minimum {low}: any higher price accepts more loss"
        if high is not None and price > high:
            if high < low:
                return None, f"the venue's price band leaves no buy price between {low} and {high}"
            price, note = high, f"lowered to the venue's highest buy price {high} (less loss; fills at once)"
    return price, note


def reason_of(phase: Phase, loss: Decimal) -> str:
    """The close reason an exit records: ``aged: grace``, ``aged: progressive 2.5%``, ``aged: cap 10%``."""
    if phase is Phase.GRACE and loss == 0:
        return "aged: grace"
    return f"aged: {phase.value} {pct(loss)}%"


def pct(value: Decimal) -> str:
    """A percentage as written in reasons: exact, without trailing zeros (``2.5``, ``10``)."""
    text = format(value.normalize(), "f")
    return text


def age_of(s: PositionState, now_ms: int) -> int | None:
    start = s.aged_from_ms or s.opened_ts_ms
    return None if start is None else max(0, now_ms - start)


def chunk_qty(market: Market, qty: Decimal, chunks: int, price: Decimal) -> Decimal:
    """One chunk of ``qty``: on the step grid, above min quantity and notional; else the whole of it."""
    if chunks <= 1:
        return qty
    part = market.round_qty(qty / chunks)
    rest = qty - part
    ok = part >= market.min_qty and part * price * market.contract_size >= market.min_notional
    rest_ok = rest >= market.min_qty and rest * price * market.contract_size >= market.min_notional
    return part if ok and rest_ok else qty
