"""Prices on a market's tick grid: the one rounding rule every stop goes through.

A protective stop is rounded *away from the market* (a long's sell stop down,
a short's buy stop up), so rounding never tightens it past what was decided;
no price is ever below one tick. ``adapters.markets.Market`` and the pure
rules in ``actors`` (trailing, take-profits) both use these, so a stop the
planner decided is the stop the venue unit sends.
"""

from __future__ import annotations

import enum
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal


class Rounding(enum.Enum):
    DOWN = ROUND_FLOOR
    UP = ROUND_CEILING
    NEAREST = ROUND_HALF_EVEN


_ONE = Decimal(1)


def to_grid(price: Decimal, tick: Decimal, rounding: Rounding = Rounding.NEAREST) -> Decimal:
    """``price`` on the grid of ``tick``; never below one tick. Refuses a non-finite price."""
    if not price.is_finite():
        raise ValueError(f"price is not a finite number: {price}")
    ticks = (price / tick).to_integral_value(rounding=rounding.value)
    return (ticks if ticks >= _ONE else _ONE) * tick  # on every mark: no max(), no new Decimal


def stop_on_grid(side: str, price: Decimal, tick: Decimal) -> Decimal:
    """A stop for a ``side`` ("long"/"short") position on the grid, rounded away from the market."""
    return to_grid(price, tick, Rounding.DOWN if side == "long" else Rounding.UP)
