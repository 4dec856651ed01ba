"""Bybit's position-attached stop (``exchange.stop_mode = "position"``), judged by the venue's own record.

The whole trading tree over real ccxt ``bybit`` against ``tests/venue/bybit_server.py``:
the stop is the position's ``stopLoss`` (``/v5/position/trading-stop``), so a
trailing move is one request that amends it in place; the default mode
(place the new stop, then cancel the old) is measured next to it in
``benchmarks/bench_venue_bybit.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors.messages import PositionClosed
from core.config import ConfigError, parse_config
from tests.venue.bot import Bot, bybit_server, close_bot, exchange_toml, start_bot, wait_for
from tests.venue.bybit_server import BybitVenueServer

D = Decimal
TRADING_STOP = "POST /v5/position/trading-stop"
ORDER_ROUTES = ("POST /v5/order/create", "POST /v5/order/cancel")
POSITION_STOP = 'stop_mode = "position"\n'


@pytest.fixture
def venue() -> Iterator[BybitVenueServer]:
    s = bybit_server()
    yield s
    s.stop()


@pytest.fixture
def bot(tmp_path: Path, venue: BybitVenueServer) -> Iterator[Bot]:
    b = start_bot(tmp_path / "bot", venue, exchange_extra=POSITION_STOP)
    yield b
    close_bot(b)


def stop_at(venue: BybitVenueServer, price: Decimal | None = None) -> bool:
    o = venue.attached_stop("BTCUSDT")
    return o is not None and (price is None or o.trigger_price == price)


def test_a_trailing_move_is_one_request_amending_the_one_stop_that_fires_on_the_mark(bot: Bot, venue: BybitVenueServer):
    bot.open("BTCUSDT")  # long at the mark, 40000; the stop 2 % below
    wait_for(lambda: stop_at(venue, D("39200")), what="the position's stop")
    tl = venue.timeline
    first = venue.attached_stop("BTCUSDT")
    assert first is not None and first.client_id == "" and tl.count(TRADING_STOP) == 1
    orders_before = sum(tl.count(r) for r in ORDER_ROUTES)  # the entry (and nothing for the stop)
    assert orders_before == 1

    # The mark climbs: past activation (1.5 %) the stop trails 0.5 % behind the best mark.
    stops = []
    for mark in ("40700", "41000", "41300", "41600"):
        venue.set_mark("BTCUSDT", mark)
        want = (D(mark) * D("0.995")).quantize(D("0.1"))
        wait_for(lambda want=want: stop_at(venue, want), timeout=10, what=f"the stop at {want}")
        stops.append(want)
    moves = [r for r in tl.requests if r.route == TRADING_STOP][1:]
    assert len(moves) == len(stops), [r.params for r in moves]  # one request per move
    assert [D(r.params["stopLoss"]) for r in moves] == stops and all(r.params["slTriggerBy"] == "MarkPrice" for r in moves)
    assert sum(tl.count(r) for r in ORDER_ROUTES) == orders_before  # no order placed or cancelled for a move
    # The venue's record: one stop, the same order amended in place; never none after the first, never two.
    assert venue.attached_stop("BTCUSDT") is first
    naked = tl.unprotected()
    assert len(naked) == 1 and naked[0].end_ms is not None and naked[0].end_ms <= tl.first(TRADING_STOP).done_ms  # type: ignore[union-attr]
    assert not tl.overlaps() and all(len(s.covering(k)) <= 1 for s in tl.snapshots for k in s.positions)
    assert {s.order_id for snap in tl.snapshots for stops_ in snap.stops.values() for s in stops_} == {first.id}

    # The mark falls through the stop: the venue closes the position at the mark, the bot records it.
    venue.set_mark("BTCUSDT", "41300")
    wait_for(lambda: not venue.positions(), what="the stop fired")
    assert first.status == "closed" and first.filled > 0
    wait_for(lambda: any(isinstance(r, PositionClosed) for r in bot.reports()), timeout=15, what="the close recorded")
    closed = next(r for r in bot.reports() if isinstance(r, PositionClosed))
    assert closed.exit_price == D("41300") and "stop" in closed.reason, closed
    assert sum(tl.count(r) for r in ORDER_ROUTES) == orders_before  # the venue closed it: no market close of ours
    assert not tl.orphans() and venue.attached_stop("BTCUSDT") is None


def test_a_human_removing_the_position_stop_gets_it_restored(bot: Bot, venue: BybitVenueServer):
    bot.open("BTCUSDT")
    wait_for(lambda: stop_at(venue, D("39200")), what="the position's stop")
    o = venue.attached_stop("BTCUSDT")
    assert o is not None
    venue.human_cancel(order_id=venue._wid(o.id))
    wait_for(lambda: stop_at(venue, D("39200")), timeout=15, what="the stop restored")
    assert venue.timeline.unprotected()[-1].end_ms is not None


@pytest.mark.parametrize(
    ("extra", "toml", "message"),
    [
        ("hedge_mode = true\n", "", "for one-way positions"),
        ("", "[take_profit]\nenabled = true\n", "without take-profit orders"),
    ],
)
def test_the_position_stop_is_refused_where_it_cannot_cover_the_position(extra: str, toml: str, message: str):
    text = exchange_toml("http://127.0.0.1:1", name="bybit", extra=POSITION_STOP).replace("hedge_mode = false\n", extra or "hedge_mode = false\n")
    with pytest.raises(ConfigError, match=message):
        parse_config(text + toml)
    with pytest.raises(ConfigError, match="offered on bybit only"):
        parse_config(exchange_toml("http://127.0.0.1:1", name="binanceusdm", extra=POSITION_STOP))
    with pytest.raises(ConfigError, match="stop_mode"):
        parse_config(exchange_toml("http://127.0.0.1:1", name="bybit", extra='stop_mode = "attached"\n'))
