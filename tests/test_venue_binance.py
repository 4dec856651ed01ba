"""The real bot path against the Binance USDⓈ-M-like venue server, judged by the venue's own records.

Real ccxt ``binanceusdm`` (signing, routing to the algo book, parsing, error
mapping) and our whole trading tree (position actors, sync, guard, price feed,
executor and its limiter) run against ``tests/venue/binance_server.py`` on
loopback with streams off (polling: the streams-down path). Assertions are on
the server's request log and its timeline of positions and live stops:
unprotected intervals, two-stop overlaps, orphan stops, duplicate entries.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import ccxt
import pytest

from actors.messages import PositionClosed
from adapters.ccxt_exchange import build_ccxt_exchange, build_ccxt_venue
from core.config import parse_config
from core.messages import ClosePosition
from tests.venue.binance_server import FUTURES_URL_KEYS, BinanceVenueServer, Limits, urls_toml
from tests.venue.bot import API_KEY, API_SECRET, ENV, FAST, Bot, close_bot, exchange_toml, server, start_bot, wait_for

D = Decimal
ROOT = Path(__file__).resolve().parents[1]
#: The entry fill -> stop live bound on loopback (one round trip is ~2-5 ms here; CI is slower and shared).
STOP_LIVE_BOUND_MS = 1_000


@pytest.fixture
def venue() -> Iterator[BinanceVenueServer]:
    s = server()
    yield s
    s.stop()


@pytest.fixture
def bot(tmp_path: Path, venue: BinanceVenueServer) -> Iterator[Bot]:
    b = start_bot(tmp_path / "bot", venue)
    yield b
    close_bot(b)


def protected(venue: BinanceVenueServer, n: int) -> bool:
    """``n`` positions open, each covered by exactly one live stop of its size."""
    snaps = venue.timeline.snapshots
    if not snaps or len(snaps[-1].positions) != n:
        return False
    last = snaps[-1]
    return all(len(last.covering(k)) == 1 and last.protected(k) for k in last.positions)


def assert_clean(venue: BinanceVenueServer, *, initial_only: bool = True) -> None:
    """Nothing naked but the entry -> stop gaps, no orphans, no duplicate entries."""
    tl = venue.timeline
    assert not tl.duplicate_entries()
    assert not tl.orphans(), tl.orphans()
    if initial_only:
        firsts: dict[tuple[str, str], int] = {}
        for iv in tl.unprotected():
            assert iv.end_ms is not None, f"{iv.key} still unprotected"
            assert firsts.setdefault(iv.key, iv.start_ms) == iv.start_ms, f"{iv.key} unprotected again at {iv.start_ms}: {tl.unprotected()}"


# ------------------------------------------------------------------ the server alone
def test_server_speaks_binance_to_ccxt_and_limits_like_binance():
    """Wire format, the algo book, a fired stop's child order, weights, 429 -1003 then 418."""
    s = BinanceVenueServer(api_key=API_KEY, secret=API_SECRET, limits=Limits(weight_1m=60, ban_after=2, ban_ms=60_000)).start()

    async def go() -> None:
        e = build_ccxt_exchange(parse_config(exchange_toml(s.url)), env=ENV)
        try:
            await e.load_markets()
            entry = await e.create_order("BTC/USDT:USDT", "market", "buy", 0.01, None, {"newClientOrderId": "tb-x-e1"})
            assert entry["status"] == "closed" and entry["average"] == 40000.0
            stop = await e.create_order("BTC/USDT:USDT", "STOP_MARKET", "sell", 0.01, None, {"stopPrice": "39000", "workingType": "MARK_PRICE", "reduceOnly": True, "newClientOrderId": "tb-x-s1"})
            assert stop["info"]["algoType"] == "CONDITIONAL" and stop["triggerPrice"] == 39000.0
            with pytest.raises(ccxt.BaseError, match="-2021"):
                await e.create_order("BTC/USDT:USDT", "STOP_MARKET", "sell", 0.01, None, {"stopPrice": "40100", "workingType": "MARK_PRICE", "reduceOnly": True})
            s.set_mark("BTCUSDT", "38900")  # through the stop: it fires, its child market order fills
            fired = await e.fetch_order(stop["id"], "BTC/USDT:USDT", {"trigger": True})
            child = await e.fetch_order(fired["info"]["actualOrderId"], "BTC/USDT:USDT")
            assert fired["status"] == "closed" and child["filled"] == 0.01 and child["average"] == 38900.0
            assert await e.fetch_positions(["BTC/USDT:USDT"]) == []
            with pytest.raises(ccxt.DDoSProtection) as limited:
                for _ in range(40):
                    await e.fetch_open_orders(None, None, None, {"trigger": True})  # weight 40 each
            assert "-1003" in str(limited.value) or "418" in str(limited.value)
            with pytest.raises(ccxt.DDoSProtection, match="banned until"):
                for _ in range(3):
                    await e.fetch_mark_price("BTC/USDT:USDT")
        finally:
            await e.close()

    try:
        asyncio.run(go())
    finally:
        s.stop()
    tl = s.timeline
    assert {r.code for r in tl.requests if r.status == 429} == {-1003}
    assert any(r.status == 418 for r in tl.requests)
    assert tl.first("GET /fapi/v1/openAlgoOrders").weight == 40  # type: ignore[union-attr]
    assert tl.first("POST /fapi/v1/order").weight == 0 and tl.first("POST /fapi/v1/order").orders == 1  # type: ignore[union-attr]
    assert [iv.length_ms(0) >= 0 for iv in tl.unprotected()] == [True]  # entry -> stop, then closed by the stop


def test_every_request_goes_to_the_overridden_urls(tmp_path: Path, venue: BinanceVenueServer):
    """The futures keys redirect everything the bot sends, start-up included, streams too:
    the server's log holds every HTTP request ccxt made; no spot-wallet (sapi) call, no other host."""
    streams = FAST.replace("use_streams = false", "use_streams = true")
    cfg = parse_config(exchange_toml(venue.url) + streams, base_dir=tmp_path)
    ex = build_ccxt_exchange(cfg, env=ENV, streams=True)
    sent: list[str] = []
    fetch = ex.fetch

    async def recording_fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        sent.append(url)
        return await fetch(url, method, headers, body)

    ex.fetch = recording_fetch
    b = start_bot(tmp_path / "bot", venue, toml=streams, exchange=ex)
    try:
        b.open("BTCUSDT")
        wait_for(lambda: protected(venue, 1), what="a protected position")
        wait_for(lambda: venue.timeline.count("GET /fapi/v1/openAlgoOrders") >= 2, what="two full reads")
    finally:
        close_bot(b)
    assert sent and all(u.startswith(venue.url + "/") for u in sent), [u for u in sent if not u.startswith(venue.url)]
    dials = [r for r in venue.timeline.requests if r.path in ("/private/ws", "/market/ws/0") or r.path.startswith("/ws")]
    http = [r for r in venue.timeline.requests if r not in dials]
    assert len(http) == len(sent)
    assert not any("/sapi/" in u or "/api/v3" in u for u in sent)
    assert venue.timeline.first("GET /fapi/v1/exchangeInfo") is not None
    # ccxt.pro derived its user-data and market stream URLs from the overridden ``ws.linear``
    # (the server refuses the upgrade: streams down, the bot polls)
    assert {r.path for r in dials} >= {"/private/ws"} and all(r.status == 404 for r in dials)


def test_config_example_names_the_futures_keys():
    """config.toml's urls example uses the keys that redirect futures traffic (not spot's public/private)."""
    text = (ROOT / "config.toml").read_text()
    example = text[text.index("[exchange.ccxt_options]") - 1200 : text.index("[exchange.ccxt_options]\n\n")]
    for key in ("fapiPublic", "fapiPrivate", "fapiPrivateV2", "fapiPrivateV3"):
        assert key in example and key in FUTURES_URL_KEYS
    assert "urls" in urls_toml("http://127.0.0.1:1")


# ---------------------------------------------------------------- the bot on the venue
def test_entries_get_their_stops_within_a_round_trip(bot: Bot, venue: BinanceVenueServer):
    """Five entries at once: each position's only naked time is entry fill -> stop live, short."""
    for symbol in ("BTCUSDT", "ETHUSDT", "XRPUSDT", "LTCUSDT", "ADAUSDT"):
        bot.open(symbol)
    wait_for(lambda: len(bot.opened()) == 5 and protected(venue, 5), what="5 protected positions")
    gaps = [iv.length_ms(0) for iv in venue.timeline.unprotected()]
    assert len(gaps) == 5 and max(gaps) < STOP_LIVE_BOUND_MS, gaps
    assert not venue.timeline.overlaps()
    assert_clean(venue)
    assert len(venue.timeline.entries()) == 5
    assert venue.timeline.first("GET /fapi/v1/order") is None  # a stop is never looked up in the regular book


def test_trailing_move_has_no_zero_stop_moment(bot: Bot, venue: BinanceVenueServer):
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    first = venue.timeline.live_stops()[0]
    venue.set_mark("BTCUSDT", "41200")  # +3 %: trailing is active, the stop follows 0.5 % below
    wait_for(lambda: protected(venue, 1) and venue.timeline.live_stops()[0].trigger > first.trigger, what="the stop moved up")
    assert venue.timeline.live_stops()[0].trigger == D("40994")
    assert_clean(venue)  # no unprotected moment after the first stop, through the move
    assert len(venue.timeline.overlaps()) <= 1  # new stop first, old one cancelled after


def test_stop_trigger_is_recorded_and_leaves_nothing(bot: Bot, venue: BinanceVenueServer):
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    venue.set_mark("BTCUSDT", "39000")  # through the 39200 stop
    closed = wait_for(lambda: [r for r in bot.reports() if isinstance(r, PositionClosed)], what="position closed")[0]
    assert closed.reason == "stop filled" and closed.exit_price == D("39000")
    assert venue.positions() == {} and not venue.timeline.orphans()
    assert len(venue.timeline.entries()) == 1


def test_human_close_leftover_stop_is_cancelled(bot: Bot, venue: BinanceVenueServer):
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    venue.human_close("BTCUSDT")
    wait_for(lambda: [r for r in bot.reports() if isinstance(r, PositionClosed)], what="closed recorded")
    wait_for(lambda: not venue.live_algos(), what="the leftover stop cancelled")
    assert venue.positions() == {} and len(venue.timeline.entries()) == 1


def test_human_cancel_is_restored_within_the_guard_interval(bot: Bot, venue: BinanceVenueServer):
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    cancelled_at = int(time.time() * 1000)
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="stop restored")
    naked = venue.timeline.unprotected()[-1]
    assert naked.start_ms >= cancelled_at - 5 and naked.end_ms is not None
    guard_ms = bot.ctx.config.guard.interval_secs * 1000
    assert naked.length_ms(0) < 2 * guard_ms + 1_000, naked  # one guard cycle (two with its 10/20 s cadence) + round trips
    assert venue.timeline.live_stops()[0].trigger == D("39200")  # restored at its level, never looser


def test_would_trigger_on_a_restore_keeps_the_position(bot: Bot, venue: BinanceVenueServer):
    """-2021 on the restore with the mark 2 % away: re-read the mark, place again; no market close."""
    bot.open("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="protected")
    venue.fail_next("POST /fapi/v1/algoOrder", code=-2021, msg="Order would immediately trigger.")
    venue.human_cancel("BTCUSDT")
    wait_for(lambda: protected(venue, 1), what="stop restored after -2021")
    assert venue.positions() == {("BTCUSDT", "long"): D("0.025")}
    refused = [r for r in venue.timeline.requests if r.code == -2021]
    assert len(refused) == 1
    closes = [r for r in venue.timeline.requests if r.route == "POST /fapi/v1/order" and r.params.get("reduceOnly") == "true"]
    assert closes == []


def test_rate_limit_answer_on_the_first_stop(tmp_path: Path, venue: BinanceVenueServer):
    """HTTP 429 -1003 on the first stop: reads wait the 2 s pause, the stop probes after 100 ms and lands
    before any read goes out again (the venue's order endpoints are not what the IP weight limits)."""
    b = start_bot(tmp_path / "bot", venue, rate_limit_delay_ms=2000, exchange_extra="protect_probe_ms = 100\n")
    try:
        venue.fail_next("POST /fapi/v1/algoOrder", code=-1003, status=429, msg="Too many requests; current limit of IP(127.0.0.1) is 2400 requests per minute.")
        b.open("BTCUSDT")
        wait_for(lambda: protected(venue, 1), what="protected after the refusal")
        (gap,) = venue.timeline.unprotected()
        assert gap.length_ms(0) < 2_000, gap  # within the pause, not after it
        stops = [r for r in venue.timeline.requests if r.route == "POST /fapi/v1/algoOrder"]
        assert [r.status for r in stops] == [429, 200]
        between = [r.route for r in venue.timeline.requests if stops[0].t_ms < r.t_ms < stops[1].t_ms]
        assert between == [], between  # no look-up of the refused stop, no read before it
        assert not [e for e in b.events(types=["exchange.outcome_resolved"])]
        assert_clean(venue)
    finally:
        close_bot(b)


def test_a_418_ban_on_the_first_stop_holds_reads_and_the_stop_probes_at_the_ban_cadence(tmp_path: Path, venue: BinanceVenueServer):
    """HTTP 418 "banned until" on the stop: reads and entries wait for the venue's stated end; the stop
    probes once per ban_probe_secs (1 s here), and its success ends the ban for everyone (IP-wide)."""
    b = start_bot(tmp_path / "bot", venue, exchange_extra="ban_probe_secs = 1\n")
    try:
        until = int(time.time() * 1000) + 30_000
        venue.fail_next("POST /fapi/v1/algoOrder", code=-1003, status=418, msg=f"Way too many requests; IP(127.0.0.1) banned until {until}. Please use the websocket for live updates to avoid bans.")
        b.open("BTCUSDT")
        wait_for(lambda: protected(venue, 1), timeout=20, what="protected after the ban's probe")
        stops = [r for r in venue.timeline.requests if r.route == "POST /fapi/v1/algoOrder"]
        assert [r.status for r in stops] == [418, 200]
        assert stops[1].t_ms - stops[0].t_ms >= 900  # the ban's probe cadence, not the 250 ms rate-limit one
        assert [r.route for r in venue.timeline.requests if stops[0].t_ms < r.t_ms < stops[1].t_ms] == []  # reads held
        (alert,) = b.events(types=["alert.exchange_banned"])
        assert alert.data["status"] == 418 and alert.data["stated_by_venue"] and alert.data["until_ms"] == until
        wait_for(lambda: b.events(types=["exchange.ban_over"]), what="ban over")
        wait_for(lambda: b.venue.executor.health.report().banned_until_ms is None, what="health clear")
        n = len(venue.timeline.requests)
        wait_for(lambda: len(venue.timeline.requests) > n + 3, what="reads flowing again")  # long before the 30 s
        assert_clean(venue)
    finally:
        close_bot(b)


def test_late_answers_after_the_venue_executed_make_no_duplicates(tmp_path: Path, venue: BinanceVenueServer):
    """The entry, the stop and the close each answered after ccxt's timeout: looked up, never re-sent."""
    b = start_bot(tmp_path / "bot", venue, timeout_ms=400)
    try:
        venue.late_next("POST /fapi/v1/order", delay_s=1.0)
        venue.late_next("POST /fapi/v1/algoOrder", delay_s=1.0)
        name = b.open("BTCUSDT")
        wait_for(lambda: b.opened() and protected(venue, 1), what="opened despite two late answers")
        assert len(venue.live_algos()) == 1
        assert venue.positions() == {("BTCUSDT", "long"): D("0.025")}
        venue.late_next("POST /fapi/v1/order", delay_s=1.0, when=lambda p: p.get("reduceOnly") == "true")
        b.ctx.directory.lookup(name).tell(ClosePosition(reason="user command"))
        wait_for(lambda: [r for r in b.reports() if isinstance(r, PositionClosed)], what="closed")
        wait_for(lambda: not venue.live_algos(), what="stop cancelled after the close")
    finally:
        close_bot(b)
    def closes() -> list[Any]:
        return [r for r in venue.timeline.requests if r.route == "POST /fapi/v1/order" and r.params.get("reduceOnly") == "true" and r.status == 200]

    wait_for(lambda: closes() and all(r.fault is None or r.done_ms for r in venue.timeline.requests), what="the late close answered (and logged)")
    assert len(closes()) == 1 and closes()[0].fault == "late" and closes()[0].done_ms - closes()[0].t_ms >= 1_000 and venue.positions() == {}
    assert len(venue.timeline.entries()) == 1 and not venue.timeline.duplicate_entries()
    looked_up = [r for r in venue.timeline.requests if r.method == "GET" and (r.params.get("origClientOrderId") or r.params.get("clientAlgoId"))]
    assert len(looked_up) >= 3  # entry, stop, close: each resolved by its client id


def test_polling_marks_cost_does_not_grow_past_one_read(tmp_path: Path):
    """Streams down: at 12 positions (past Binance's weight break-even of 10 symbols) one
    premiumIndex without a symbol per interval, not one per position."""
    s = server(extra_symbols=12)
    b = start_bot(tmp_path / "bot", s)
    try:
        for i in range(12):
            b.open(f"X{i:02d}USDT", quote="20")
        wait_for(lambda: protected(s, 12), timeout=30, what="12 protected")
        since = int(time.time() * 1000)
        wait_for(lambda: sum(1 for r in s.timeline.requests if r.t_ms >= since and r.path == "/fapi/v1/premiumIndex" and "symbol" not in r.params) >= 5, what="5 all-symbol mark reads")
    finally:
        close_bot(b)
        s.stop()
    marks = [r for r in s.timeline.requests if r.t_ms >= since and r.path == "/fapi/v1/premiumIndex"]
    batch = [r for r in marks if "symbol" not in r.params]
    assert all(r.weight == 10 for r in batch)
    # A position actor may still read its own symbol's mark now and then (a restore's re-read);
    # the feed reading per symbol would be 12 per interval, 60 in this window.
    assert len(marks) - len(batch) < 12, [r.params for r in marks]


# --------------------------------------------------------------- SIGKILL and restart
def _bot_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **ENV, "PYTHONPATH": str(ROOT)}


def _bot(site: Path, log: str) -> subprocess.Popen[bytes]:
    out = open(site / log, "ab")
    return subprocess.Popen([sys.executable, "-m", "tradebot", "run", "--config", "config.toml"], cwd=site, env=_bot_env(), stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_sigkill_and_restart_on_the_venue(tmp_path: Path, venue: BinanceVenueServer):
    """The bot in its own process, SIGKILLed while protected, restarted: same stops, no second
    entry, nothing naked after the first stops (the venue's timeline), no orphans."""
    site = tmp_path / "site"
    site.mkdir()
    signals = [{"id": f"k-{s}", "wave": "w1", "symbol": s, "side": "long", "after_secs": 0.2} for s in ("BTCUSDT", "ETHUSDT")]
    (site / "signals.jsonl").write_text("\n".join(json.dumps(s) for s in signals) + "\n")
    (site / "config.toml").write_text(exchange_toml(venue.url) + FAST.replace('signals_file = ""', 'signals_file = "signals.jsonl"') + '[signals]\nsource = "file"\n')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(_bot(site, "bot1.log"))
        wait_for(lambda: protected(venue, 2), timeout=60, what="2 protected positions", poll_s=0.05)
        before = sorted((s.order_id, s.trigger) for s in venue.timeline.live_stops())
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        restarted = int(time.time() * 1000)
        procs.append(_bot(site, "bot2.log"))
        wait_for(lambda: venue.timeline.count("GET /fapi/v1/openAlgoOrders", since_ms=restarted) >= 2, timeout=60, what="the restarted bot's full reads", poll_s=0.05)
        wait_for(lambda: venue.timeline.count("GET /fapi/v3/positionRisk", since_ms=restarted) >= 3, timeout=60, what="guard cycles after restart", poll_s=0.05)
        assert sorted((s.order_id, s.trigger) for s in venue.timeline.live_stops()) == before
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert len(venue.timeline.entries()) == 2
    assert_clean(venue)
    assert len(venue.live_algos()) == 2  # a graceful shutdown leaves the stops on the venue


def test_admin_hooks_over_http(venue: BinanceVenueServer):
    """A server in its own process is driven through /admin/<hook> (same hooks as in-process)."""

    async def go() -> Any:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{venue.url}/admin/mark", json={"symbol": "BTCUSDT", "price": "41000"})
            async with http.get(f"{venue.url}/admin/state") as r:
                return await r.json()

    state = asyncio.run(go())
    assert state["ok"] and venue.mark("BTCUSDT") == D("41000")


def test_start_up_is_refused_clearly_with_a_wrong_key(tmp_path: Path, venue: BinanceVenueServer):
    cfg = parse_config(exchange_toml(venue.url), base_dir=tmp_path)

    async def go() -> None:
        await build_ccxt_venue(cfg, None, None, env={"TB_VENUE_KEY": "x" * 64, "TB_VENUE_SECRET": API_SECRET})

    with pytest.raises(Exception, match="start-up failed"):
        asyncio.run(go())
