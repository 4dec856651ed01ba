"""The real bot with its streams live, against the Binance-like venue's websocket side.

REST and websocket are one server (``tests/venue/binance_server.py`` +
``binance_ws.py``): every push comes from the venue's own state changes, so
what the bot does with a push (or without one) shows in the venue's timeline.
Real time; fast cadences (guard every second, marks every 500 ms) so each
scenario takes a few seconds; every wait is a condition with a generous deadline.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.account_view import AccountView
from actors.messages import PositionClosed
from adapters.markets import Markets
from adapters.rate_tables import Priority
from adapters.venue_streams import FLAT_EITHER, position_updates
from adapters.venues import style_for
from tests.venue.binance_server import MARKETS_FILE, BinanceVenueServer
from tests.venue.bot import Bot, close_bot, server, start_bot, wait_for

D = Decimal

#: Streams on, fast cadences; a silent stream is owed a push within 2 s and probed after 4 s of quiet.
STREAMS = """
[sync]
use_streams = true
interval_secs = 2
grace_secs = 2
push_deadline_secs = 2
quiet_probe_secs = 4
[feeds]
use_streams = true
mark_interval_ms = 500
[position]
retry_delay_ms = 50
verify_interval_secs = 600
[trailing]
min_move_interval_secs = 0
[guard]
interval_secs = 1
[demo]
signals_file = ""
"""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture
def venue() -> Iterator[BinanceVenueServer]:
    s = server(streams=True, mark_push_ms=250)
    yield s
    s.stop()


@pytest.fixture
def bot(tmp_path: Path, venue: BinanceVenueServer) -> Iterator[Bot]:
    b = start_bot(tmp_path / "bot", venue, toml=STREAMS)
    yield b
    close_bot(b)


def ws(venue: BinanceVenueServer) -> Any:
    assert venue.ws is not None
    return venue.ws


def protected(venue: BinanceVenueServer, n: int) -> bool:
    snaps = venue.timeline.snapshots
    if not snaps or len(snaps[-1].positions) != n:
        return False
    last = snaps[-1]
    return all(len(last.covering(k)) == 1 and last.protected(k) for k in last.positions)


def streams_live(bot: Bot) -> bool:
    sync = bot.ctx.directory.lookup("sync")
    return bool(sync and sync.proxy().streams_live().get() and ws(bot.server).live("user"))


def open_protected(bot: Bot, symbol: str = "BTCUSDT", side: str = "long", n: int = 1) -> str:
    wait_for(lambda: streams_live(bot), timeout=20, what="user stream up")
    name = bot.open(symbol, side)
    wait_for(lambda: protected(bot.server, n), timeout=20, what=f"{n} protected")
    return name


def full_reads(venue: BinanceVenueServer, since_ms: int) -> int:
    """The sync actor's full reads (all-account order listing) since ``since_ms``."""
    return sum(1 for r in venue.timeline.requests if r.t_ms >= since_ms and r.route == "GET /fapi/v1/openAlgoOrders" and "symbol" not in r.params)


def events(bot: Bot, prefix: str) -> list[Any]:
    return bot.events(type_prefixes=(prefix,))


def false_alarms(bot: Bot, venue: BinanceVenueServer, slack_ms: int = 1_500) -> list[Any]:
    """``guard.unprotected`` events outside every stretch the venue really had the position naked."""
    naked = venue.timeline.unprotected()
    out = []
    for e in events(bot, "guard.unprotected"):
        if not any(iv.start_ms - slack_ms <= e.ts_ms <= (iv.end_ms if iv.end_ms is not None else now_ms()) + slack_ms for iv in naked):
            out.append(e)
    return out


def last_naked_ms(venue: BinanceVenueServer, after_ms: int) -> int:
    iv = [i for i in venue.timeline.unprotected() if i.start_ms >= after_ms - 5]
    assert iv and iv[-1].end_ms is not None, iv
    return iv[-1].length_ms(0)


# ----------------------------------------------------------------- the happy paths
def test_pushes_follow_the_venue_state(bot: Bot, venue: BinanceVenueServer):
    """Entry, stop: the user stream carried ORDER_TRADE_UPDATE (NEW, TRADE), ACCOUNT_UPDATE and
    ALGO_UPDATE NEW; the mark stream is subscribed to the position's symbol; nothing silent."""
    open_protected(bot)
    kinds = [e for _t, e, _f in ws(venue).pushes]
    assert {"ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ALGO_UPDATE"} <= set(kinds)
    wait_for(lambda: any("btcusdt@markPrice@1s" in c.subscribed for c in ws(venue).live("market")), what="mark stream subscribed")
    assert not events(bot, "sync.stream_silent")


def test_human_cancel_is_restored_from_the_push(bot: Bot, venue: BinanceVenueServer):
    open_protected(bot)
    t0 = now_ms()
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1) and venue.timeline.unprotected()[-1].start_ms >= t0 - 5, timeout=10, what="restored")
    assert last_naked_ms(venue, t0) < 1_500  # the push, not the guard's next check
    assert venue.timeline.live_stops()[0].trigger == D("39200")
    assert not false_alarms(bot, venue)


def test_human_close_leftover_stop_is_cancelled(bot: Bot, venue: BinanceVenueServer):
    open_protected(bot)
    t0 = now_ms()
    venue.human_close("BTCUSDT")
    wait_for(lambda: [r for r in bot.reports() if isinstance(r, PositionClosed)], timeout=10, what="closed recorded")
    wait_for(lambda: not venue.live_algos(), timeout=10, what="the leftover stop cancelled")
    cancel = venue.timeline.first("DELETE /fapi/v1/algoOrder", after_ms=t0)
    assert cancel is not None and cancel.t_ms - t0 < 1_500


def test_stop_trigger_is_recorded(bot: Bot, venue: BinanceVenueServer):
    open_protected(bot)
    venue.set_mark("BTCUSDT", "39000")
    closed = wait_for(lambda: [r for r in bot.reports() if isinstance(r, PositionClosed)], timeout=10, what="closed")[0]
    assert closed.reason == "stop filled" and closed.exit_price == D("39000")
    assert venue.positions() == {} and not venue.timeline.orphans()
    assert any(f["o"].get("X") == "FINISHED" for _t, e, f in ws(venue).pushes if e == "ALGO_UPDATE")


def test_flat_one_way_push_closes_a_short_in_the_view(bot: Bot, venue: BinanceVenueServer):
    """Bug 3: ACCOUNT_UPDATE ``ps = BOTH``, ``pa = 0`` after a human closes a short: the view
    drops the short at the push, before any full read."""
    open_protected(bot, side="short")
    sync = bot.ctx.directory.lookup("sync")
    wait_for(lambda: sync.proxy().view.get().positions, what="the short in the view")
    t0 = now_ms()
    venue.human_close("BTCUSDT")
    wait_for(lambda: not sync.proxy().view.get().positions, timeout=1.5, what="the short gone from the view at the push")
    assert full_reads(venue, t0) == 0  # the push did it (sync's zombie check reads 2 s after a close)


def test_flat_one_way_position_parses_as_either_side():
    """ccxt's parse of ``{"ps": "BOTH", "pa": "0"}`` has side "both": it closes a short as well as a long."""
    markets = Markets.from_ccxt(json.loads(MARKETS_FILE.read_text()))
    flat = {"symbol": "BTC/USDT:USDT", "contracts": 0.0, "side": "both", "hedged": False, "info": {"s": "BTCUSDT", "pa": "0", "ps": "BOTH"}}
    short = {"symbol": "BTC/USDT:USDT", "contracts": 0.025, "side": "short", "hedged": False, "info": {"s": "BTCUSDT", "pa": "-0.025", "ps": "BOTH"}}
    assert position_updates([short, flat], markets, style_for("binanceusdm")) == [("BTCUSDT", "short", D("0.025")), ("BTCUSDT", FLAT_EITHER, D(0))]
    for side in ("long", "short"):
        view = AccountView()
        view.on_stream("positions", [("BTCUSDT", side, D("0.025"))], 1)
        view.on_stream("positions", position_updates([flat], markets, style_for("binanceusdm")), 2)
        assert view.positions == {}


# ----------------------------------------------------------------- connections
@pytest.mark.parametrize("how", ["close", "abort"])
def test_dropped_connections_reconnect_and_keep_protecting(bot: Bot, venue: BinanceVenueServer, how: str):
    open_protected(bot)
    wait_for(lambda: any(c.subscribed for c in ws(venue).live("market")), what="marks subscribed")
    first_user = ws(venue).live("user")[0]
    assert ws(venue).drop(None, how=how) == 2
    wait_for(lambda: [c for c in ws(venue).live("user") if c is not first_user] and streams_live(bot), timeout=20, what="user stream redialled")
    wait_for(lambda: any("btcusdt@markPrice@1s" in c.subscribed for c in ws(venue).live("market")), timeout=20, what="marks resubscribed")
    t0 = now_ms()
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1) and venue.timeline.unprotected()[-1].start_ms >= t0 - 5, timeout=10, what="restored after the reconnect")
    assert last_naked_ms(venue, t0) < 1_500
    wait_for(lambda: not [p for p in bot.sup.proxy().status().get()["problems"] if p.startswith("stream:")], timeout=20, what="no stream problem left")


def test_silent_user_stream_is_detected_redialled_and_nothing_is_missed(bot: Bot, venue: BinanceVenueServer):
    """Bug 1: the user connection stays open and pushes nothing. A human cancels the stop
    meanwhile: the quiet probe's read finds it (and the restore's push never comes), the
    streams are marked down, read in full, redialled; the stop is back well within 30 s and
    the guard raises no false alarm about the restored stop."""
    open_protected(bot)
    silent_conn = ws(venue).live("user")[0]
    assert ws(venue).silence("user") == 1
    t0 = now_ms()
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1) and venue.timeline.unprotected()[-1].start_ms >= t0 - 5, timeout=25, what="restored despite the silent stream")
    silent = wait_for(lambda: events(bot, "sync.stream_silent"), timeout=25, what="silence detected")
    assert silent[0].ts_ms - t0 < 30_000
    wait_for(lambda: [c for c in ws(venue).live("user") if c is not silent_conn], timeout=20, what="a new user connection")
    wait_for(lambda: events(bot, "sync.stream_recovered") and streams_live(bot), timeout=20, what="streams live again")
    # the new connection carries pushes: a second human cancel is restored at push speed
    t1 = now_ms()
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1) and venue.timeline.unprotected()[-1].start_ms >= t1 - 5, timeout=10, what="restored from the new stream")
    assert last_naked_ms(venue, t1) < 1_500
    assert not false_alarms(bot, venue)
    assert not events(bot, "alert.")


def test_silent_mark_stream_falls_back_to_reads_and_redials(bot: Bot, venue: BinanceVenueServer):
    open_protected(bot)
    wait_for(lambda: any(c.subscribed for c in ws(venue).live("market")), what="marks subscribed")
    silent_conn = ws(venue).live("market")[0]
    ws(venue).silence("market")
    venue.set_mark("BTCUSDT", "41200")  # trailing: the stop follows 0.5 % below, if the bot learns the mark
    wait_for(lambda: protected(venue, 1) and venue.timeline.live_stops()[0].trigger == D("40994"), timeout=15, what="the stop trailed on read marks")
    wait_for(lambda: [c for c in ws(venue).live("market") if c is not silent_conn and c.subscribed], timeout=20, what="the mark stream redialled")
    assert events(bot, "feed.stream_silent")


def test_listen_key_expired_logs_in_again(bot: Bot, venue: BinanceVenueServer):
    open_protected(bot)
    first_user = ws(venue).live("user")[0]
    t0 = now_ms()
    assert ws(venue).expire_listen_key()
    wait_for(lambda: [c for c in ws(venue).live("user") if c is not first_user] and streams_live(bot), timeout=20, what="a new user connection")
    assert venue.timeline.count("POST /fapi/v1/listenKey", since_ms=t0) >= 1
    t1 = now_ms()
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1) and venue.timeline.unprotected()[-1].start_ms >= t1 - 5, timeout=10, what="restored on the new key")
    assert last_naked_ms(venue, t1) < 1_500


def test_symbol_set_changes_send_only_the_difference(bot: Bot, venue: BinanceVenueServer):
    """Bug 6: a second position subscribes its symbol alone; BTC is never unsubscribed; closing
    ETH unsubscribes ETH alone. Marks of BTC keep arriving throughout."""
    open_protected(bot)
    wait_for(lambda: any("btcusdt@markPrice@1s" in c.subscribed for c in ws(venue).live("market")), what="BTC subscribed")
    bot.open("ETHUSDT")
    wait_for(lambda: protected(venue, 2), timeout=20, what="2 protected")
    wait_for(lambda: any("ethusdt@markPrice@1s" in c.subscribed for c in ws(venue).live("market")), what="ETH subscribed")
    venue.human_close("ETHUSDT")
    wait_for(lambda: any(c.frames("UNSUBSCRIBE") for c in ws(venue).live("market")), timeout=15, what="ETH unsubscribed")
    [conn] = ws(venue).live("market")
    assert [f["params"] for f in conn.frames("SUBSCRIBE")] == [["btcusdt@markPrice@1s"], ["ethusdt@markPrice@1s"]]
    assert [f["params"] for f in conn.frames("UNSUBSCRIBE")] == [["ethusdt@markPrice@1s"]]
    assert conn.subscribed == {"btcusdt@markPrice@1s"}


def test_trailing_run_with_streams_has_no_false_unprotected(bot: Bot, venue: BinanceVenueServer):
    """Bug 4: a rising then falling market with several trailing moves, streams live: the guard
    never calls the position unprotected while the venue has its stop live."""
    open_protected(bot)
    series = [("BTCUSDT", str(40000 + 60 * i)) for i in range(1, 41)] + [("BTCUSDT", str(42400 - 20 * i)) for i in range(1, 8)]
    done = venue.replay(series, every_ms=150)
    assert done.wait(30)
    wait_for(lambda: protected(venue, 1), timeout=10, what="protected at the end")
    moves = [r for r in venue.timeline.requests if r.route == "POST /fapi/v1/algoOrder" and r.status == 200]
    assert len(moves) >= 3, len(moves)  # the stop trailed several times
    assert not false_alarms(bot, venue, slack_ms=0)
    assert not events(bot, "alert.")


# ------------------------------------------------- the read budget spent
def spend_read_budget(bot: Bot) -> Any:
    """Take the weight a minute of routine reads may use (what a storm of reconciles does);
    returns a routine read started after it: it waits for the window to slide (~60 s)."""
    lim = bot.venue.executor.limiter

    async def spend() -> None:
        w = lim.stats()["windows"]["weight_1m"]
        for _ in range(int((w["cap_non_protect"] - w["used"]) // 40) + 1):
            if not lim._fits(lim.limits.cost("fetch_open_orders"), Priority.READ, lim.now()):
                break
            await lim.acquire("fetch_open_orders")

    bot.ctx.io.run(spend(), 10)
    routine = bot.ctx.io.submit(bot.venue.open_orders())  # as heavy as the reads that spent it
    wait_for(lambda: lim.stats()["classes"]["read"]["queued"] >= 1, timeout=10, what="a routine read queued")
    return routine


def test_a_human_cancel_is_restored_while_routine_reads_wait_for_budget(bot: Bot, venue: BinanceVenueServer):
    """The owner's reads that decide protection (its stop, its size, the mark) are protective
    calls: a lost stop is restored at once even when reconciles have spent the read weight."""
    open_protected(bot)
    routine = spend_read_budget(bot)
    t0 = now_ms()
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1) and venue.timeline.unprotected()[-1].start_ms >= t0 - 5, timeout=15, what="restored")
    assert last_naked_ms(venue, t0) < 5_000
    assert not routine.done()  # the routine read is still waiting: the budget really was spent


def test_a_human_close_leftover_is_cancelled_while_routine_reads_wait_for_budget(bot: Bot, venue: BinanceVenueServer):
    open_protected(bot)
    routine = spend_read_budget(bot)
    venue.human_close("BTCUSDT")
    wait_for(lambda: [r for r in bot.reports() if isinstance(r, PositionClosed)], timeout=15, what="closed recorded")
    wait_for(lambda: not venue.live_algos(), timeout=15, what="the leftover stop cancelled")
    assert not routine.done()
