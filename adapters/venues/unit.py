"""The shape of a venue unit: what each venue module exports for the rest of the bot."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.errors import Outcome
    from adapters.rate_tables import VenueLimits
    from adapters.venues.style import VenueStyle

DAY_MS = 86_400_000


@dataclass(frozen=True)
class VenueUnit:
    """Everything the bot knows about one venue, as data and small functions.

    Nothing outside :mod:`adapters.venues` names a venue: the venue layer asks
    the unit (through :func:`adapters.venues.unit_for`)."""

    #: The unit's name: the paper exchange's flavour and the rate table's style (``binance``).
    name: str
    #: ``exchange.name`` in config.toml, which is also the ccxt exchange id (``binanceusdm``).
    exchange_name: str
    #: The request style (instantiated per account, in its position mode).
    style: type[VenueStyle]
    #: The published request limits, and what each executor op costs in them.
    limits: VenueLimits
    #: Error codes that say more than ccxt's exception class: code -> (outcome, skip the symbol for ms).
    codes: Mapping[str, tuple[Outcome, int]]
    #: The JSON keys of the venue's error code in an answer body (``code``, ``retCode``).
    code_keys: tuple[str, ...]
    #: HTTP statuses that are hard IP bans, with the wait (ms) to honour when the answer names none.
    ban_statuses: Mapping[int, int]
    #: Would-trigger codes whose message carries the venue's current price, and where.
    current_price_codes: Mapping[str, re.Pattern[str]]
    #: Codes that mean maintenance when their message matches (otherwise what :attr:`codes` says).
    maintenance_codes: Mapping[str, re.Pattern[str]]
    #: Refusals of a leverage / margin change, in words a user can act on.
    setup_refusals: Mapping[str, str]
    #: Answers to a setup change that mean "already so".
    setup_already: frozenset[str]
    #: One margin mode for the whole account (read and set once, not per symbol)?
    account_wide_margin: bool
    #: What we always want from the ccxt constructor (deep-merged under ``exchange.ccxt_options``).
    ccxt_defaults: Mapping[str, Any]
    #: Switch a built ccxt exchange to the venue's test environment.
    enable_testnet: Callable[[Any], None]
    #: (HTTP method, ccxt path) writes that change nothing on the account (stream keys), let through in read-only mode.
    read_only_writes: frozenset[tuple[str, str]] = frozenset()

    def new_style(self, *, hedge_mode: bool = False) -> VenueStyle:
        """The unit's request style in the account's position mode."""
        return self.style(hedge_mode=hedge_mode)
