"""The venue registry: one unit per venue, found by name; an unknown name is refused.

Each unit is checked on what it exports (its style, rate table, error codes, ccxt
defaults) and on the rest of the bot reaching it only through the registry."""

from __future__ import annotations

import typing
from decimal import Decimal as D

import ccxt
import pytest

from adapters import venues
from adapters.ccxt_exchange import CCXT_IDS
from adapters.errors import Outcome, classify
from adapters.executor import _table_of
from adapters.rate_limit import RateLimiter
from adapters.venue_setup import TradingSetup
from adapters.venues import KNOWN_VENUES, UnknownVenue, style_for, unit_for
from adapters.venues.binance import BinanceStyle
from adapters.venues.bybit import BybitStyle
from core.config import ExchangeConfig, PaperConfig


@pytest.mark.parametrize(("name", "cls"), [("binanceusdm", BinanceStyle), ("binance", BinanceStyle), ("bybit", BybitStyle)])
def test_each_known_venue_gets_its_own_style_in_the_accounts_position_mode(name, cls):
    style = style_for(name, hedge_mode=True)
    assert type(style) is cls and style.hedge_mode is True


@pytest.mark.parametrize("name", ["okx", "Bybit", "binancecoinm", "", "paper"])
def test_an_unknown_venue_is_refused_naming_the_known_ones(name):
    with pytest.raises(UnknownVenue, match=r"no venue unit for .* \(known: binance, binanceusdm, bybit\)"):
        unit_for(name)
    with pytest.raises(ValueError, match="no venue unit"):
        style_for(name)
    assert name not in KNOWN_VENUES and venues.find(name) is None


def test_an_unknown_venue_gets_no_trading_setup_and_no_rate_table():
    with pytest.raises(UnknownVenue):
        TradingSetup("okx", lambda s: None, account_wide_margin=False)  # type: ignore[arg-type, return-value]
    assert _table_of("okx") is None and _table_of("paper") is None
    assert RateLimiter.for_style("okx").limits.windows == ()


def test_the_config_offers_exactly_the_registered_venues():
    """``exchange.name`` and ``paper.flavour`` are validated against the same names the registry answers to."""
    real = set(typing.get_args(typing.get_type_hints(ExchangeConfig)["name"])) - {"paper"}
    flavours = set(typing.get_args(typing.get_type_hints(PaperConfig)["flavour"]))
    assert real == set(venues.real_venues()) == set(CCXT_IDS)
    assert flavours == {u.name for u in venues.UNITS}


@pytest.mark.parametrize("unit", venues.UNITS, ids=lambda u: u.name)
def test_each_unit_exports_a_complete_venue(unit):
    """Style, rate table (every cost names one of its windows), codes, ccxt defaults, testnet switch."""
    style = unit.new_style()
    assert style.name == unit.name and unit.limits.style == unit.name
    windows = {w.name for w in unit.limits.windows}
    assert windows and all(set(cost) <= windows for cost in unit.limits.costs.values())
    assert set(unit.limits.cost("create_order.stop")) & windows
    assert unit.codes and all(isinstance(o, Outcome) for o, _ in unit.codes.values())
    assert unit.code_keys and unit.ban_statuses
    assert unit.ccxt_defaults["options"]["defaultType"] == "swap" and callable(unit.enable_testnet)
    assert unit.setup_already <= set(unit.setup_refusals)
    _kind, params = style.stop_order("sell", D("99.5"), "tb-1-s1")
    assert "99.5" in params.values()
    assert RateLimiter.for_style(unit.name).limits is unit.limits
    assert RateLimiter.for_style(unit.exchange_name).limits is unit.limits
    assert _table_of(unit.exchange_name) == unit.name


def test_codes_are_read_with_the_table_of_the_venue_that_answered():
    """Each venue's codes are its own: an answer is classified by the unit ccxt's message names."""
    would = classify(ccxt.InvalidOrder('binanceusdm {"code":-2021,"msg":"Order would immediately trigger."}'))
    assert would.outcome is Outcome.WOULD_TRIGGER and would.code == "-2021"
    limited = classify(ccxt.ExchangeError('bybit {"retCode":10006,"retMsg":"Too many visits!","result":{}}'))
    assert limited.outcome is Outcome.RATE_LIMITED
    # Bybit's answer keys are not Binance's: a Binance message's "retCode" is not a venue code.
    assert classify(ccxt.ExchangeError('binanceusdm {"retCode":10006}')).code is None
    # A Bybit code in a Binance answer means nothing there: ccxt's class decides.
    assert classify(ccxt.BadRequest('binanceusdm {"code":10006,"msg":"?"}')).outcome is Outcome.REJECTED
    # Bans by the answering venue's HTTP status.
    assert classify(ccxt.DDoSProtection("bybit GET https://x/v5/order/realtime 403 Forbidden ")).ban_ms == 600_000
    assert classify(ccxt.DDoSProtection("binanceusdm 418 I'm a teapot {}")).ban_ms == 120_000
    assert classify(ccxt.DDoSProtection("bybit GET https://x/v5/order/realtime 418 teapot ")).ban_ms is None


def test_no_code_means_different_things_on_two_venues():
    seen: dict[str, str] = {}
    for u in venues.UNITS:
        for code in u.codes:
            assert code not in seen, f"{code} is {seen.get(code)}'s and {u.name}'s"
            seen[code] = u.name
    assert dict(venues.all_codes()) == {c: m for u in venues.UNITS for c, m in u.codes.items()}
