"""The real bot path against the Bybit v5-like venue server, judged by the venue's own records.

Real ccxt ``bybit`` (v5 signing, routing, parsing, error mapping) and the whole
trading tree run against ``tests/venue/bybit_server.py`` on loopback with
streams off (polling). One regression test per bug of issue 19 (each fails on
the code before its fix), plus the behaviour the issue found right (stop shape,
restore after a human cancel, a real price path).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from actors.messages import PositionClosed
from actors.sync import ZOMBIE_RULES, order_kind, zombie_reason
from adapters.ccxt_exchange import ExchangeSetupError, build_ccxt_exchange, build_ccxt_venue
from adapters.errors import Outcome, translate
from adapters.venue import Venue
from core.clock import RealClock
from core.config import parse_config
from tests.venue.binance_server import BinanceVenueServer
from tests.venue.bot import API_KEY, API_SECRET, ENV, Bot, bybit_server, close_bot, exchange_toml, server, start_bot, wait_for
from tests.venue.bybit_server import BybitLimits, BybitVenueServer, history_series

D = Decimal
#: Entry fill -> stop live on loopback (a round trip is a few ms here; CI is slower and shared).
STOP_LIVE_BOUND_MS = 1_000
ORDER = "POST /v5/order/create"


@pytest.fixture
def venue() -> Iterator[BybitVenueServer]:
    s = bybit_server()
    yield s
    s.stop()


@pytest.fixture
def bot(tmp_path: Path, venue: BybitVenueServer) -> Iterator[Bot]:
    b = start_bot(tmp_path / "bot", venue)
    yield b
    close_bot(b)


def protected(venue: BybitVenueServer | BinanceVenueServer, n: int) -> bool:
    """``n`` positions open, each covered by exactly one live stop of its size."""
    snaps = venue.timeline.snapshots
    if not snaps or len(snaps[-1].positions) != n:
        return False
    last = snaps[-1]
    return all(len(last.covering(k)) == 1 and last.protected(k) for k in last.positions)


def closed(bot: Bot) -> list[PositionClosed]:
    return [r for r in bot.reports() if isinstance(r, PositionClosed)]


def market_closes(venue: BybitVenueServer) -> list[Any]:
    return [r for r in venue.timeline.requests if r.route == ORDER and r.params.get("reduceOnly") == "true" and not r.params.get("triggerPrice")]


def assert_clean(venue: BybitVenueServer) -> None:
    """No orphans, no duplicate entries, each position naked only before its first stop."""
    tl = venue.timeline
    assert not tl.duplicate_entries()
    assert not tl.orphans(), tl.orphans()
    firsts: dict[tuple[str, str], int] = {}
    for iv in tl.unprotected():
        assert iv.end_ms is not None, f"{iv.key} still unprotected"
        assert firsts.setdefault(iv.key, iv.start_ms) == iv.start_ms, f"{iv.key} unprotected again at {iv.start_ms}: {tl.unprotected()}"


def with_venue(s: BybitVenueServer | BinanceVenueServer, body: Any, *, name: str = "bybit", hedge_mode: bool = False) -> Any:
    """``await body(venue)`` with our Venue over real ccxt on ``s`` (start-up included)."""
    clock = RealClock()

    async def go() -> Any:
        cfg = parse_config(exchange_toml(s.url, name=name, hedge_mode=hedge_mode))
        v = await build_ccxt_venue(cfg, clock, None, env=ENV)
        try:
            return await body(v)
        finally:
            await v.exchange.close()

    try:
        return asyncio.run(go())
    finally:
        clock.close()


# ------------------------------------------------------------------ the server alone
def test_server_speaks_bybit_v5_to_ccxt():
    """Wire format, a conditional order firing on the mark, 110093 with the current price, pages of
    50 newest first, 10006 per endpoint and HTTP 403 for a broken IP limit (both RateLimitExceeded in ccxt)."""
    s = BybitVenueServer(api_key=API_KEY, secret=API_SECRET, limits=BybitLimits(ip_5s=100, ban_ms=60_000, per_second_scale=0.5)).start()

    async def go() -> None:
        e = build_ccxt_exchange(parse_config(exchange_toml(s.url, name="bybit")), env=ENV)
        try:
            await e.load_markets()
            entry = await e.create_order("BTC/USDT:USDT", "market", "buy", 0.01, None, {"orderLinkId": "tb-x-e1", "positionIdx": 0})
            assert entry["status"] is None and entry["filled"] is None  # an acknowledgement: ids only
            back = await e.fetch_order(entry["id"], "BTC/USDT:USDT", {"acknowledged": True})
            assert back["status"] == "closed" and back["filled"] == 0.01 and back["average"] == 40000.0
            params = {"triggerDirection": 2, "triggerBy": "MarkPrice", "reduceOnly": True, "positionIdx": 0}
            stop = await e.create_order("BTC/USDT:USDT", "market", "sell", 0.01, None, {**params, "triggerPrice": "39000", "orderLinkId": "tb-x-s1"})
            with pytest.raises(ccxt.InvalidOrder, match=r"110093.*current\[40000\]") as refused:
                await e.create_order("BTC/USDT:USDT", "market", "sell", 0.01, None, {**params, "triggerPrice": "40100"})
            err = translate(refused.value)
            assert err is not None and err.outcome is Outcome.WOULD_TRIGGER and err.current_price == D("40000")
            [live] = await e.fetch_open_orders("BTC/USDT:USDT")
            assert (live["info"]["orderStatus"], live["triggerPrice"], live["reduceOnly"], live["info"]["triggerBy"]) == ("Untriggered", 39000.0, True, "MarkPrice")
            s.set_mark("BTCUSDT", "38900")  # through the stop: it fires and fills at the mark
            fired = await e.fetch_order(stop["id"], "BTC/USDT:USDT", {"acknowledged": True})
            assert fired["status"] == "closed" and fired["filled"] == 0.01 and fired["average"] == 38900.0
            assert [p["contracts"] for p in await e.fetch_positions(["BTC/USDT:USDT"])] == [0.0]  # Bybit lists the flat slot with size 0
            for i in range(60):
                s.human_order("ETHUSDT", "buy", "0.1", trigger=str(2100 + i), direction=1)
            first = await e.fetch_open_orders(None, None, 50)
            assert len(first) == 50 and first[-1]["info"].get("nextPageCursor") and not first[0]["info"].get("nextPageCursor")  # ccxt sorted it to the end
            with pytest.raises(ccxt.RateLimitExceeded, match="10006"):
                for _ in range(40):
                    await e.fetch_open_orders("ETHUSDT")  # 50/s per endpoint, scaled to 25/s here
            with pytest.raises(ccxt.RateLimitExceeded, match="403"):
                for _ in range(120):
                    await e.fetch_tickers()  # the IP limit, scaled to 100 per 5 s: 403 and a ban
        finally:
            await e.close()

    try:
        asyncio.run(go())
    finally:
        s.stop()
    tl = s.timeline
    assert {r.code for r in tl.requests if r.fault == "limit"} == {10006} and all(r.status == 200 for r in tl.requests if r.fault == "limit")
    banned = [r for r in tl.requests if r.fault == "ban"]
    assert banned and all(r.status == 403 for r in banned)
    [refusal] = [r for r in tl.requests if r.code == 110093]
    assert refusal.params["triggerDirection"] == "2" and refusal.params["positionIdx"] == "0"


# ------------------------------------------------------------- bug 1: every page
@pytest.mark.parametrize("n", [0, 1, 50, 51, 120])
def test_open_orders_are_read_past_the_first_page(n: int):
    """Bybit lists 50 newest first with a cursor that ccxt moves to the page's last order: a full
    read must follow it wherever it is (before the fix: 50 of 51, 50 of 120)."""
    s = bybit_server()
    qty = {"ETHUSDT": "0.1", "XRPUSDT": "100", "LTCUSDT": "1", "ADAUSDT": "100"}
    symbols = list(qty)
    try:
        for i in range(n):
            sym = symbols[i % 4]
            mark = s.mark(sym)
            if i % 2:
                s.human_order(sym, "buy", qty[sym], limit=(mark * D("0.9")).quantize(D("0.0001")))
            else:
                s.human_order(sym, "buy", qty[sym], trigger=(mark * D("1.05")).quantize(D("0.0001")), direction=1)

        async def read(v: Venue) -> list[Any]:
            return await v.open_orders()

        since = int(time.time() * 1000)
        found = with_venue(s, read)
        pages = [r for r in s.timeline.requests if r.route == "GET /v5/order/realtime" and r.t_ms >= since and not r.params.get("orderId")]
    finally:
        s.stop()
    assert sorted(o.order_id for o in found) == sorted(s._wid(o.id) for o in s.open_orders())
    assert len(found) == n
    assert len(pages) == max(1, -(-n // 50)) and all(p.params["limit"] == "50" for p in pages)


# ----------------------------------------------- bug 2: the user's own orders left alone
def _place_kinds(s: BybitVenueServer | BinanceVenueServer, symbol: str, qty: str) -> dict[str, str]:
    """One order of each kind a person may leave on ``symbol`` (the closing ones while a position of
    theirs was open: then it was closed); client id -> its kind."""
    with s._lock:
        s.engine.external_open_position(symbol, "long", D(qty), int(time.time() * 1000))
    try:
        return _kinds(s, symbol, qty)
    finally:
        s.human_close(symbol)


def _kinds(s: BybitVenueServer | BinanceVenueServer, symbol: str, qty: str) -> dict[str, str]:
    mark = s.mark(symbol)
    up, down = (mark * D("1.05")).quantize(D("0.1")), (mark * D("0.95")).quantize(D("0.1"))
    if isinstance(s, BybitVenueServer):
        s.human_order(symbol, "buy", qty, trigger=up, direction=1, link_id="h-cond-entry")
        s.human_order(symbol, "sell", qty, trigger=down, direction=2, reduce_only=True, link_id="h-reduce-only")
        s.human_order(symbol, "sell", qty, trigger=down, direction=2, close_on_trigger=True, link_id="h-close-on-trigger")
        s.human_order(symbol, "buy", qty, limit=down, link_id="h-limit-entry")
        return {"h-cond-entry": "conditional entry", "h-reduce-only": "closing", "h-close-on-trigger": "closing", "h-limit-entry": "entry"}
    now = int(time.time() * 1000)
    with s._lock:
        e = s.engine
        e.external_place_order(symbol, "STOP_MARKET", "buy", D(qty), now, {"stopPrice": str(up), "newClientOrderId": "h-cond-entry"})
        e.external_place_order(symbol, "STOP_MARKET", "sell", D(qty), now, {"stopPrice": str(down), "reduceOnly": True, "newClientOrderId": "h-reduce-only"})
        e.external_place_order(symbol, "STOP_MARKET", "sell", D(0), now, {"stopPrice": str(down), "closePosition": True, "newClientOrderId": "h-close-position"})
        e.create_order(symbol, "limit", "buy", D(qty), down, {"newClientOrderId": "h-limit-entry"}, now_ms=now, origin="external")
    return {"h-cond-entry": "conditional entry", "h-reduce-only": "closing", "h-close-position": "closing", "h-limit-entry": "entry"}


@pytest.mark.parametrize("venue_name", ["binanceusdm", "bybit"])
def test_zombie_table_per_venue(venue_name: str):
    """Each venue's raw flags, read over the wire, give the order kinds of ``ZOMBIE_RULES``; on a flat
    symbol only the closing ones are zombies (Binance's conditional entries are left alone too)."""
    s: BybitVenueServer | BinanceVenueServer = bybit_server() if venue_name == "bybit" else server()
    try:
        expected = _place_kinds(s, "ETHUSDT", "0.1")

        async def read(v: Venue) -> list[Any]:
            return await v.open_orders("ETHUSDT")

        orders = with_venue(s, read, name=venue_name)
    finally:
        s.stop()
    by_cid = {o.client_id: o for o in orders}
    assert set(by_cid) == set(expected)
    for cid, kind in expected.items():
        o = by_cid[cid]
        assert order_kind(o) == kind, (cid, o)
        why = zombie_reason(o, {}, set(), D("1.5"))
        assert (why is not None) == (ZOMBIE_RULES[(kind, "flat")] is not None), (cid, why)
    # and with a position to reduce, none of them is (the closing ones protect it, nothing flips)
    from adapters.venue import PositionReport

    held = {("ETHUSDT", "long"): PositionReport(symbol="ETHUSDT", side="long", qty=D("0.1"), entry_price=D(2000))}
    assert [zombie_reason(o, held, {"ETHUSDT"}, D("1.5")) for o in orders] == [None] * len(orders)


def test_a_humans_conditional_entries_are_never_cancelled(bot: Bot, venue: BybitVenueServer):
    """A flat symbol the bot traded: 55 conditional entries a human placed stay; the closing
    leftovers there (reduce-only, closeOnTrigger) are cancelled. Before: all 57 (50, then 7)."""
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    ours = venue.timeline.live_stops()[0].order_id
    leftovers = [venue.human_order("BTCUSDT", "sell", "0.01", trigger=39000, direction=2, reduce_only=True), venue.human_order("BTCUSDT", "sell", "0.01", trigger=38900, direction=2, close_on_trigger=True)]
    entries = [venue.human_order("BTCUSDT", "buy" if i % 2 else "sell", "0.01", trigger=40500 + i if i % 2 else 39500 - i, direction=1 if i % 2 else 2) for i in range(55)]
    since = int(time.time() * 1000)
    venue.human_close("BTCUSDT")
    wait_for(lambda: closed(bot), what="the close noticed")
    wait_for(lambda: not {*leftovers, venue._wid(ours)} & {venue._wid(o.id) for o in venue.open_orders()}, timeout=30, what="our stop and the closing leftovers cancelled")
    after = int(time.time() * 1000)
    wait_for(lambda: venue.timeline.count("GET /v5/order/realtime", since_ms=after) >= 2, what="one more full read (two pages)")
    assert sorted(venue._wid(o.id) for o in venue.open_orders()) == sorted(entries)
    cancels = [r for r in venue.timeline.requests if r.route == "POST /v5/order/cancel" and r.t_ms >= since]
    assert sorted(r.params["orderId"] for r in cancels) == sorted([*leftovers, venue._wid(ours)])


# ------------------------------------------------------- bug 4: would trigger (110092/110093)
@pytest.mark.parametrize(("venue_price", "kept"), [("39150", True), ("38700", False)])
def test_would_trigger_applies_the_guard_rule_with_the_venues_price(bot: Bot, venue: BybitVenueServer, venue_price: str, kept: bool):
    """A lost stop is restored at 39200 by the bot's (lagging) mark of 40000; Bybit refuses with
    its current price in the message. 2.1 % in loss: the stop goes 0.5 % beyond that price and the
    position stays (before: the re-read mark said 40000 again, the second refusal closed it).
    3.25 % in loss, past the emergency level: closed."""
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    venue.set_ticker_lag("BTCUSDT", "40000")  # what every read of the mark says
    with venue._lock:  # at once: the guard must not restore in between at the old mark
        venue.human_cancel("BTCUSDT")
        venue.set_mark("BTCUSDT", venue_price)  # what the venue compares triggers with
    if kept:
        wait_for(lambda: protected(venue, 1), timeout=20, what="stop restored below the venue's price")
        assert venue.timeline.live_stops()[0].trigger == D("38954.2")  # 39150 * 0.995, rounded away from the market
        assert venue.positions() == {("BTCUSDT", "long"): D("0.025")} and market_closes(venue) == []
        assert len([r for r in venue.timeline.requests if r.code == 110093]) == 1
    else:
        wait_for(lambda: closed(bot), timeout=20, what="closed past the emergency level")
        assert venue.positions() == {} and len(market_closes(venue)) == 1
    assert not venue.timeline.orphans()


# --------------------------------------------------------- bug 5: entry fill -> stop live
def test_entry_read_back_falls_back_to_the_history(bot: Bot, venue: BybitVenueServer):
    """Realtime lists open orders only (as after a restart of Bybit's): the filled entry is read
    from the order history by its id, and the stop follows at once (before: a retry delay, then a
    look-up by client id in both lists)."""
    venue.realtime_open_only(True)
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    reqs = venue.timeline.requests
    entry = next(i for i, r in enumerate(reqs) if r.route == ORDER and r.params.get("orderLinkId", "").endswith("-e1"))
    stop = next(i for i, r in enumerate(reqs) if r.route == ORDER and r.params.get("triggerPrice"))
    between = [(r.route, sorted(k for k in r.params if k in ("orderId", "orderLinkId"))) for r in reqs[entry + 1 : stop] if r.params.get("symbol") == "BTCUSDT" and r.route != "GET /v5/market/tickers"]
    assert between == [("GET /v5/order/realtime", ["orderId"]), ("GET /v5/order/history", ["orderId"])]
    (gap,) = venue.timeline.unprotected()
    assert gap.length_ms(0) < STOP_LIVE_BOUND_MS
    assert_clean(venue)


def test_entries_get_stops_of_the_filled_size_in_one_read(tmp_path: Path):
    """Three entries at once (a short among them), two of them partly filled: each stop is the
    documented shape and covers exactly what filled; one read-back per entry, nothing by client id.
    (Three: six creates fit Bybit's 10 per second within our share; a larger burst waits for the
    window, see ``bench_venue_bybit``.)"""
    s = bybit_server(partial_fill_symbols=("ETHUSDT", "XRPUSDT"))
    b = start_bot(tmp_path / "bot", s)
    try:
        for symbol in ("ETHUSDT", "XRPUSDT"):
            b.open(symbol)
        b.open("ADAUSDT", side="short")
        wait_for(lambda: len(b.opened()) == 3 and protected(s, 3), what="3 protected positions")
    finally:
        close_bot(b)
        s.stop()
    tl = s.timeline
    gaps = [iv.length_ms(0) for iv in tl.unprotected()]
    assert len(gaps) == 3 and max(gaps) < STOP_LIVE_BOUND_MS, gaps
    stops = [r for r in tl.requests if r.route == ORDER and r.params.get("triggerPrice") and r.status == 200]
    assert len(stops) == 3
    for r in stops:
        short = r.params["symbol"] == "ADAUSDT"
        assert (r.params["side"], r.params["triggerDirection"]) == (("Buy", "1") if short else ("Sell", "2"))
        assert (r.params["reduceOnly"], r.params["triggerBy"], r.params["positionIdx"], r.params["orderType"]) == ("true", "MarkPrice", "0", "Market")
        assert r.params["orderLinkId"].startswith("tb-")
    sizes = s.positions()
    asked = {r.params["symbol"]: D(r.params["qty"]) for r in tl.entries()}
    for sym in ("ETHUSDT", "XRPUSDT"):
        assert 0 < sizes[(sym, "long")] < asked[sym]  # partly filled
    for r in stops:  # each stop covers exactly what filled
        assert D(r.params["qty"]) == sizes[(r.params["symbol"], "short" if r.params["symbol"] == "ADAUSDT" else "long")]
    assert [r for r in tl.requests if r.params.get("orderLinkId") and r.method == "GET"] == []  # nothing looked up by client id
    assert protected(s, 3)  # exactly one stop per position, covering it
    assert len([r for r in tl.requests if r.route == "GET /v5/order/realtime" and r.params.get("orderId")]) == 3 and tl.count("GET /v5/order/history") == 0
    assert_clean(s)


# --------------------------------------------------------- bug 6 (part): position mode
@pytest.mark.parametrize(("account_hedged", "config_hedged"), [(True, False), (False, True)])
def test_start_is_refused_on_a_position_mode_mismatch(tmp_path: Path, account_hedged: bool, config_hedged: bool):
    s = bybit_server(hedge_mode=account_hedged)
    try:
        cfg = parse_config(exchange_toml(s.url, name="bybit", hedge_mode=config_hedged), base_dir=tmp_path)
        with pytest.raises(ExchangeSetupError, match=f"in {'hedge' if account_hedged else 'one-way'} mode but exchange.hedge_mode = {str(config_hedged).lower()}"):
            asyncio.run(build_ccxt_venue(cfg, None, None, env=ENV))
    finally:
        s.stop()
    read = s.timeline.first("GET /v5/position/list")
    assert read is not None and read.params.get("symbol") and read.params["category"] == "linear"


def test_a_hedge_mode_account_starts_with_hedge_mode_set(tmp_path: Path):
    s = bybit_server(hedge_mode=True)
    try:
        async def mode(v: Venue) -> bool:
            return v.style.hedge_mode

        assert with_venue(s, mode, hedge_mode=True) is True
    finally:
        s.stop()


# ---------------------------------------------------------------- what passed already
def test_human_cancel_is_restored_within_the_guard_interval(bot: Bot, venue: BybitVenueServer):
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    cancelled_at = int(time.time() * 1000)
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="stop restored")
    naked = venue.timeline.unprotected()[-1]
    assert naked.start_ms >= cancelled_at - 5 and naked.end_ms is not None
    assert naked.length_ms(0) < 2 * bot.ctx.config.guard.interval_secs * 1000 + 1_000, naked
    assert venue.timeline.live_stops()[0].trigger == D("39200")


def test_protected_through_a_real_price_path(bot: Bot, venue: BybitVenueServer):
    """Two positions while BTC's mark follows 100 real minutes (FTX BTC-PERP, January 2022, scaled
    to 40000) and ETH's 100 others: never naked after the first stop, new stop before the old goes."""
    bot.open("BTCUSDT")
    bot.open("ETHUSDT", side="short")
    wait_for(lambda: protected(venue, 2), what="2 protected")
    btc = history_series("BTCUSDT", "40000", 100)
    eth = history_series("ETHUSDT", "2000", 100, offset=20_000)
    done = venue.replay([p for pair in zip(btc, eth, strict=True) for p in pair], every_ms=15)
    wait_for(done.is_set, timeout=30, what="the replay")
    wait_for(lambda: all(venue.timeline.snapshots[-1].protected(k) for k in venue.positions()), what="settled")
    assert_clean(venue)
    assert len(venue.timeline.entries()) == 2


def test_the_first_entry_sets_the_accounts_margin_mode_and_the_symbols_leverage_before_it_is_sent(bot: Bot, venue: BybitVenueServer):
    """A new unified account is cross (REGULAR_MARGIN), its symbols at 10x; the config asks isolated, 10x
    (the defaults): the margin mode is set once, before the entry, and read back; the leverage already
    matches, so it is not touched. A second entry on another symbol costs no setup write."""
    assert venue.margin_mode == "REGULAR_MARGIN"
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    routes = venue.timeline.routes()
    assert routes.count("POST /v5/account/set-margin-mode") == 1 and "POST /v5/position/set-leverage" not in routes
    assert routes.index("POST /v5/account/set-margin-mode") < routes.index("POST /v5/order/create")
    assert venue.margin_mode == "ISOLATED_MARGIN"
    bot.open("ETHUSDT")
    wait_for(lambda: protected(venue, 2), what="both protected")
    assert venue.timeline.routes().count("POST /v5/account/set-margin-mode") == 1
