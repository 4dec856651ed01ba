"""The one number format (tradebot.numbers): pure functions, checked value by value."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tradebot import numbers as num


@pytest.mark.parametrize(
    ("value", "tick", "expected"),
    [
        ("13150", "0.10", "13150.0"),
        ("13150.0", "0.1", "13150.0"),
        (Decimal("0.1673"), "0.00001", "0.16730"),
        ("0.16730", None, "0.1673"),
        ("13150.0", None, "13150"),
        ("1E+1", None, "10"),
        (13150.5, "1", "13150"),  # half-even onto a whole tick
        ("abc", "0.1", "abc"),
        (None, "0.1", ""),
    ],
)
def test_price_on_the_tick_or_exact(value, tick, expected):
    assert num.price(value, tick) == expected


def test_quantity_on_the_step():
    assert num.qty("0.5", "0.001") == "0.500"
    assert num.qty("12", "1") == "12"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("-1.2549", "-1.25 USDT"), ("0", "0.00 USDT"), ("-0.001", "0.00 USDT"), (Decimal("13.005"), "13.00 USDT"), ("2", "2.00 USDT")],
)
def test_money_has_fixed_decimals_and_the_currency(value, expected):
    assert num.money(value, "USDT") == expected


def test_percent_has_two_decimals():
    assert num.percent("1.5") == "1.50 %"
    assert num.percent(Decimal("-0.126")) == "-0.13 %"
    assert num.percent(None) == ""


@pytest.mark.parametrize(("ms", "expected"), [(850, "850 ms"), (12_340, "12.3 s"), (245_000, "4 m 05 s"), (10_920_000, "3 h 02 m"), (187_200_000, "2 d 04 h")])
def test_duration(ms, expected):
    assert num.duration(ms) == expected


def test_plain_never_prints_a_python_repr():
    assert num.plain(["position:BTCUSDT:ab12", "position:ETHUSDT:cd34"]) == "position:BTCUSDT:ab12, position:ETHUSDT:cd34"
    assert num.plain([]) == "none"
    assert num.plain({"a": Decimal("1.50"), "b": True}) == "a=1.5, b=yes"
    assert "[" not in num.plain(("x",)) and "'" not in num.plain(["x"])


def test_table_aligns_columns():
    out = num.table(("a", "bb"), [["1", "2"], ["333", "4"]]).splitlines()
    assert out == ["a    bb", "1    2", "333  4"]
