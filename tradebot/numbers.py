"""One number format for every human line the CLI prints (pure functions).

- prices on the market's tick (``price(v, tick)``), quantities on its step
  (``qty(v, step)``); without a known tick/step the exact value, normalised
  (``13150.0`` and ``13150`` both print ``13150``; never an exponent);
- money with the quote currency and fixed decimals (``money(v, "USDT")`` ->
  ``-1.25 USDT``); percentages with two decimals (``percent(v)`` -> ``1.50 %``);
- ``plain(v)`` for any other value: lists joined with ", ", no Python reprs.

``--json`` output does not come through here: it keeps the exact Decimal strings.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

MONEY_DECIMALS = 2
PERCENT_DECIMALS = 2


def to_decimal(value: Any) -> Decimal | None:
    """``value`` as a Decimal (strings, ints, floats through their str), or None when it is not a finite number."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _fixed(d: Decimal, places: int) -> str:
    q = d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN) if places > 0 else d.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return f"{abs(q) if q == 0 else q:f}"  # never "-0.00"


def exact(value: Any) -> str:
    """The exact value without trailing zeros or exponent (``1E+1`` -> ``10``); '' when not a number."""
    d = to_decimal(value)
    if d is None:
        return "" if value is None else str(value)
    text = f"{d.normalize():f}" if d != 0 else "0"
    return text


def places_of(increment: Any) -> int | None:
    """Decimal places of a tick or step (``0.10`` -> 1, ``0.001`` -> 3, ``5`` -> 0)."""
    d = to_decimal(increment)
    if d is None or d <= 0:
        return None
    exp = d.normalize().as_tuple().exponent
    return max(0, -int(exp))


def on_increment(value: Any, increment: Any) -> str:
    """``value`` with exactly the decimals of ``increment`` (exact value if the increment is unknown)."""
    d = to_decimal(value)
    if d is None:
        return "" if value is None else str(value)
    places = places_of(increment)
    return exact(d) if places is None else _fixed(d, places)


def price(value: Any, tick: Any = None) -> str:
    """A price on the market's tick."""
    return on_increment(value, tick)


def qty(value: Any, step: Any = None) -> str:
    """A quantity on the market's step."""
    return on_increment(value, step)


def money(value: Any, currency: str | None = "USDT", decimals: int = MONEY_DECIMALS) -> str:
    """Money: fixed decimals and the quote currency (``-0.13 USDT``)."""
    d = to_decimal(value)
    if d is None:
        return ""
    text = _fixed(d, decimals)
    return f"{text} {currency}" if currency else text


def fees(fees: str | None, without_fee: int, quote: str = "USDT") -> str:
    """The recorded fees, and how many fills have none recorded (never shown as zero)."""
    missing = f"{without_fee} fill{'s' if without_fee != 1 else ''} without a recorded fee"
    if fees is None:
        return f"not recorded ({missing})" if without_fee else "none"
    return money(fees, quote) + (f" + {missing}" if without_fee else "")


def percent(value: Any, decimals: int = PERCENT_DECIMALS) -> str:
    """A percentage (already in percent) with two decimals: ``1.50 %``."""
    d = to_decimal(value)
    return "" if d is None else f"{_fixed(d, decimals)} %"


def duration(ms: Any) -> str:
    """A duration: ``850 ms``, ``12.3 s``, ``4 m 05 s``, ``3 h 02 m``, ``2 d 04 h``."""
    d = to_decimal(ms)
    if d is None:
        return ""
    ms_i = int(d)
    sign, ms_i = ("-", -ms_i) if ms_i < 0 else ("", ms_i)
    if ms_i < 1_000:
        return f"{sign}{ms_i} ms"
    s = ms_i / 1000
    if s < 60:
        return f"{sign}{s:.1f} s"
    total = int(s)
    if total < 3600:
        return f"{sign}{total // 60} m {total % 60:02d} s"
    if total < 86400:
        return f"{sign}{total // 3600} h {total % 3600 // 60:02d} m"
    return f"{sign}{total // 86400} d {total % 86400 // 3600:02d} h"


def when(ts_ms: Any) -> str:
    """An epoch-ms time as ``YYYY-MM-DD HH:MM:SS`` UTC ('' when unknown)."""
    d = to_decimal(ts_ms)
    if d is None:
        return ""
    try:
        return dt.datetime.fromtimestamp(int(d) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ts_ms)


def plain(value: Any) -> str:
    """Any value for a human: numbers exact, lists joined, tables as ``k=v``; never a Python repr."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal | int | float):
        return exact(value)
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(plain(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain(v)}" for k, v in value.items()) if value else "none"
    return str(value)


def table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip() for r in [list(header), *rows])
