"""The venue registry: every venue the bot speaks has its style; an unknown name is refused."""

from __future__ import annotations

import pytest

from adapters.venue_styles import KNOWN_VENUES, BybitStyle, VenueStyle, style_for


@pytest.mark.parametrize(("name", "cls"), [("binanceusdm", VenueStyle), ("binance", VenueStyle), ("bybit", BybitStyle)])
def test_each_known_venue_gets_its_own_style_in_the_accounts_position_mode(name, cls):
    style = style_for(name, hedge_mode=True)
    assert type(style) is cls and style.hedge_mode is True


@pytest.mark.parametrize("name", ["okx", "Bybit", "binancecoinm", ""])
def test_an_unknown_venue_is_refused_naming_the_known_ones(name):
    with pytest.raises(ValueError, match=r"no venue style for .* \(known: binance, binanceusdm, bybit\)"):
        style_for(name)
    assert name not in KNOWN_VENUES
