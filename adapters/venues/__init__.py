"""One unit per venue, and the registry that finds them by name.

Each venue module (:mod:`~adapters.venues.binance`, :mod:`~adapters.venues.bybit`)
exports ``UNIT``, a :class:`VenueUnit`: its request style (order shapes,
routing, raw field names of REST and stream answers), its rate table, its
error codes, its leverage / margin refusals, its ccxt defaults and testnet
switch. The rest of the bot asks the registry:

* :func:`unit_for` (``binanceusdm`` / ``bybit``, or a paper flavour ``binance`` /
  ``bybit``): the unit; an unknown name is an :class:`UnknownVenue` error
  naming the known ones, never another venue's unit;
* :func:`find`: the unit or None (the paper exchange itself has no rate table);
* :func:`style_for`: the unit's style in the account's position mode;
* :func:`real_venues`: ``exchange.name`` -> unit, for the ccxt set-up;
* :func:`all_codes`: every unit's error codes, for an error that names no venue.

Adding a venue means adding one module with its ``UNIT`` to :data:`UNITS` (and
its tests). The paper exchange is not a unit: it imitates one (its flavour).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from adapters.venues import binance, bybit
from adapters.venues.style import FLAT_EITHER, VenueStyle
from adapters.venues.unit import VenueUnit

if TYPE_CHECKING:
    from adapters.errors import Outcome

#: Every venue the bot speaks.
UNITS: tuple[VenueUnit, ...] = (binance.UNIT, bybit.UNIT)

#: Each unit under its own name (the paper flavour) and its ``exchange.name`` (the ccxt id).
_BY_NAME: dict[str, VenueUnit] = {n: u for u in UNITS for n in (u.name, u.exchange_name)}

#: One style per unit, one-way mode, by unit name (the paper flavours' default styles).
STYLES: dict[str, VenueStyle] = {u.name: u.new_style() for u in UNITS}

#: Every name the registry answers to.
KNOWN_VENUES: tuple[str, ...] = tuple(sorted(_BY_NAME))


class UnknownVenue(ValueError):
    """A venue name no unit answers to."""


def unit_for(name: str) -> VenueUnit:
    """The unit of ``name``; an unknown name is refused, naming the known ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownVenue(f"no venue unit for {name!r} (known: {', '.join(KNOWN_VENUES)})") from None


def find(name: str | None) -> VenueUnit | None:
    """The unit of ``name``, or None (``paper``, a test's own name)."""
    return _BY_NAME.get(name or "")


def style_for(name: str, *, hedge_mode: bool = False) -> VenueStyle:
    """The request style of a venue, in the account's position mode (unknown names refused)."""
    return unit_for(name).new_style(hedge_mode=hedge_mode)


def real_venues() -> dict[str, VenueUnit]:
    """``exchange.name`` -> unit: the real exchanges the ccxt set-up can build."""
    return {u.exchange_name: u for u in UNITS}


def _merged_codes() -> dict[str, tuple[Outcome, int]]:
    out: dict[str, tuple[Outcome, int]] = {}
    for u in UNITS:
        for code, meaning in u.codes.items():
            if code in out and out[code] != meaning:
                raise AssertionError(f"venue code {code} means different things on two venues; errors must name their venue")
            out[code] = meaning
    return out


_ALL_CODES = _merged_codes()


def all_codes() -> Mapping[str, tuple[Outcome, int]]:
    """Every unit's codes at once (they do not collide), for an error that names no venue."""
    return _ALL_CODES


__all__ = ["FLAT_EITHER", "KNOWN_VENUES", "STYLES", "UNITS", "UnknownVenue", "VenueStyle", "VenueUnit", "all_codes", "find", "real_venues", "style_for", "unit_for"]
