"""The dashboard in real headless Chromium against a real bot: a Runtime (supervisor, store, control
socket, HTTP server, dashboard) trading on the paper exchange, marks set by the test.

- positions page: the open position as ``ctl positions`` reports it (same numbers), and a stop
  move on the exchange shows up without a reload (server-sent events) within 2 s of being recorded;
- position page: the chart's series carry the stop steps (initial, trailing), the SVG is drawn and
  the screenshot is not blank;
- ``ctl close <position id>`` closes it; history then lists it with its realised PnL, its fees (by hand:
  the paper exchange's taker rate on each fill's notional) and net, and the totals with fees.
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.browser import browser_or_skip, not_blank, save_shot
from tests.conftest import eventually
from tests.dashboard_bot import BTC, Bot, protected, running_bot
from tradebot import numbers as num
from tradebot.control_client import send_command


@pytest.fixture
def bot(short_tmp: Path) -> Iterator[Bot]:
    yield from running_bot(short_tmp)


@pytest.fixture
def tp_bot(short_tmp: Path) -> Iterator[Bot]:
    yield from running_bot(short_tmp, extra_toml="[take_profit]\nenabled = true\n")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = browser_or_skip()
    yield driver
    driver.quit()


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:  # /health answers 503 with the same body when unhealthy
        return json.loads(err.read())


def cell(driver: Any, pid: str, field: str) -> str:
    return driver.execute_script(f"var r = document.querySelector('tr[data-position-id=\"{pid}\"] td[data-field=\"{field}\"]'); return r ? r.textContent : null;")


def test_positions_page_matches_ctl_and_a_stop_move_arrives_live_then_the_chart_draws_the_steps(bot: Bot, browser: Any, tmp_path: Path):
    bot.open("p1")
    protected(bot, "p1")
    browser.get(bot.url + "/")
    eventually(lambda: browser.execute_script("return document.body.getAttribute('data-live')") == "open", what="event stream open")
    # the mark reaches the book once the page follows the symbol: ctl and the page then agree
    row = eventually(lambda: next((r for r in bot.ctl("positions") if r["position_id"] == "p1" and r.get("mark")), None), what="ctl positions has the mark")
    m = bot.rt.venue.markets.resolve("BTCUSDT")
    expected = {
        "symbol": "BTCUSDT", "side": "long", "quantity": num.qty(row["quantity"], m.step_size), "entry": num.price(row["entry_price"], m.tick_size),
        "stop": num.price(row["stop_price"], m.tick_size), "stop_kind": "initial", "mark": num.price(row["mark"], m.tick_size),
        "distance": num.percent(row["stop_distance_percent"]), "upnl": num.money(row["unrealised_pnl"], "USDT"), "trailing": "armed",
    }
    eventually(lambda: all(cell(browser, "p1", f) == v for f, v in expected.items()), timeout=5, what=f"page row equals ctl positions: {expected}")
    assert Decimal(row["stop_distance_percent"]) == ((Decimal(row["mark"]) - Decimal(row["stop_price"])) / Decimal(row["mark"]) * 100).quantize(Decimal("0.0001"))
    moving = ("age_ms", "age_h", "mark_ts_ms")  # time passes between the two reads (a mark is re-read every 100 ms)
    api = {k: v for k, v in get_json(bot.url + "/api/positions")[0].items() if k not in moving}
    assert api == {k: v for k, v in bot.ctl("positions")[0].items() if k not in moving}  # the same rows, but for the clock
    listed = browser.execute_script("return Array.from(document.querySelectorAll('#positions-body tr[data-position-id]')).map(r => r.getAttribute('data-position-id'))")
    assert listed == [r["position_id"] for r in bot.ctl("positions")]
    health = get_json(bot.url + "/health")
    banner = browser.find_element("id", "banner")
    assert banner.get_attribute("data-healthy") == str(health["healthy"]).lower() and ("healthy" in banner.text) == health["healthy"]
    save_shot(browser, tmp_path, "dashboard-positions.png")

    # live: the trailing stop moves on the exchange; the page (not reloaded) shows it within 2 s of the record
    browser.execute_script("window.__not_reloaded = true;")
    old_stop = row["stop_price"]
    bot.exchange.set_mark(BTC, Decimal("40600"))
    eventually(lambda: bot.events("p1", "position.stop_moved"), what="trailing move recorded")
    recorded = time.monotonic()
    new_stop = bot.ctl("positions")[0]["stop_price"]
    assert Decimal(new_stop) > Decimal(old_stop)
    eventually(lambda: cell(browser, "p1", "stop") == num.price(new_stop, m.tick_size) and cell(browser, "p1", "stop_kind") == "trailing", timeout=2, what="stop move on the page within 2 s")
    assert time.monotonic() - recorded <= 2.0
    assert browser.execute_script("return window.__not_reloaded === true")
    assert (cell(browser, "p1", "trailing") or "").startswith("active")

    def verified_agrees() -> bool:
        when = bot.ctl("positions")[0].get("last_verified_ms")
        return when is not None and cell(browser, "p1", "verified") == num.when(when)

    eventually(verified_agrees, timeout=10, what="the page's 'verified' is ctl's (the last clean reconcile)")

    # the position page: chart series with the stop steps, an SVG path, a screenshot with something on it
    browser.get(bot.url + "/position/p1")
    series = json.loads(browser.execute_script("return document.getElementById('chart-data').textContent"))
    assert [Decimal(s[1]) for s in series["stops"]] == [Decimal(old_stop), Decimal(new_stop)]
    assert [s[2] for s in series["stops"]][1] == "trailing"
    assert Decimal(series["entry"]["price"]) == Decimal(row["entry_price"])
    assert series["marks"], "the marks the bot saw are on the chart"
    assert series["candles"] == []  # this paper exchange has no price history: nothing invented
    assert browser.execute_script("return document.querySelectorAll('#chart svg path.stop-steps').length") == 1
    assert browser.execute_script("return document.querySelectorAll('#chart svg circle.stop-level').length") == 2
    assert "stop moved (trailing)" in browser.find_element("id", "timeline").text
    assert not_blank(save_shot(browser, tmp_path, "dashboard-position.png"))


def test_close_by_position_id_then_history_shows_its_realised_pnl(bot: Bot, browser: Any, tmp_path: Path):
    bot.open("p2")
    protected(bot, "p2")
    bad = send_command(bot.rt.config.control_socket, "close", {"symbol": "nosuchid"}, timeout_s=10)
    assert bad.ok is False and bad.error.startswith("no open position for NOSUCHID") and "p2 (BTCUSDT)" in bad.error
    bot.exchange.set_mark(BTC, Decimal("40200"))
    assert bot.ctl("close", {"symbol": "p2"}) == {"closing": ["position:BTCUSDT:p2"]}
    eventually(lambda: bot.ctl("positions") == [], what="p2 closed")
    (closed,) = eventually(lambda: bot.events("p2", "position.closed"), what="close recorded")
    pnl = Decimal(str(closed.data["pnl"]))
    # by hand: 0.025 BTC bought at the 40000 mark, sold at the 40200 mark (no slippage), the taker rate on each
    rate = bot.exchange.with_engine(lambda e, now: e.config.taker_fee_rate)
    fills = bot.exchange.with_engine(lambda e, now: [(f.side, f.price, f.qty) for f in e.fills if f.client_id.startswith("tb-p2-")])
    qty = Decimal("0.025")
    assert fills == [("buy", Decimal(40000), qty), ("sell", Decimal(40200), qty)] and pnl == (Decimal(40200) - Decimal(40000)) * qty
    fees = qty * Decimal(40000) * rate + qty * Decimal(40200) * rate
    assert rate == Decimal("0.0005") and fees == Decimal("1.0025")
    browser.get(bot.url + "/history")
    row = browser.execute_script("var r = document.querySelector('#history tr[data-position-id=\"p2\"]'); return r ? r.textContent : null;")
    assert row is not None and num.money(pnl, "USDT") in row and "user command" in row
    assert cell(browser, "p2", "fees") == num.money(fees, "USDT") == "1.00 USDT"
    assert cell(browser, "p2", "net_pnl") == num.money(pnl - fees, "USDT") == "4.00 USDT"
    assert browser.find_element("css selector", "#totals td[data-field=total_pnl]").text == num.money(pnl, "USDT")
    assert browser.find_element("css selector", "#totals td[data-field=total_fees]").text == num.money(fees, "USDT")
    assert browser.find_element("css selector", "#totals td[data-field=total_net_pnl]").text == num.money(pnl - fees, "USDT")
    browser.get(bot.url + "/history?symbol=ETHUSDT")
    assert "no closed positions match" in browser.find_element("id", "history").text
    day = datetime.datetime.fromtimestamp(closed.ts_ms / 1000, datetime.UTC).strftime("%Y-%m-%d")
    browser.get(bot.url + f"/history?day={day}&symbol=BTCUSDT")
    assert browser.execute_script("return document.querySelectorAll('#history tbody tr[data-position-id]').length") == 1
    browser.get(bot.url + "/history?day=2001-01-01")
    assert "no closed positions match" in browser.find_element("id", "history").text
    browser.get(bot.url + "/history")
    assert not_blank(save_shot(browser, tmp_path, "dashboard-history.png"))


def test_text_from_outside_is_shown_as_text_on_load_and_live(bot: Bot, browser: Any):
    """An alert whose fields carry markup (text that came from the exchange or a signal) is escaped, loaded or pushed."""
    from core.events import Event

    def alert(rule: str) -> None:
        bot.rt.store.append(Event(type="alert.sent", ts_ms=bot.rt.clock.now_ms(), actor="alerts", data={"rule": rule, "subject": "<img src=x onerror=\"window.__pwned=2\">", "sink": "console"}))

    first = "<script>window.__pwned=1</script>first"
    alert(first)
    bot.rt.store.flush()
    browser.get(bot.url + "/")
    eventually(lambda: browser.execute_script("return document.body.getAttribute('data-live')") == "open", what="event stream open")
    assert first in browser.find_element("id", "alerts").text
    second = "<script>window.__pwned=3</script>second"
    alert(second)
    eventually(lambda: second in browser.find_element("id", "alerts").text, timeout=5, what="the pushed alert, as text")
    assert browser.execute_script("return window.__pwned === undefined && document.querySelectorAll('#alerts script, #alerts img').length === 0")
    browser.get(bot.url + "/position/%3Cscript%3Ewindow.__pwned%3D4%3C%2Fscript%3E")
    assert "No position <script>window.__pwned=4</script>" in browser.find_element("tag name", "h1").text
    assert browser.execute_script("return window.__pwned === undefined")


def test_take_profits_and_the_breakeven_stop_on_both_pages(tp_bot: Bot, browser: Any):
    """TP1 (1 %) fills, the stop goes to breakeven: the row says so, the chart has both TP levels, the fill and the step."""
    bot = tp_bot
    bot.open("p3")
    protected(bot, "p3")
    eventually(lambda: len([tp for tp in bot.ctl("positions")[0].get("take_profits") or () if tp["live"]]) == 2, what="both take-profits live")
    browser.get(bot.url + "/")
    eventually(lambda: browser.execute_script("return document.body.getAttribute('data-live')") == "open", what="event stream open")
    bot.exchange.set_mark(BTC, Decimal("40450"))
    eventually(lambda: bot.events("p3", "position.tp_filled"), what="TP1 filled")
    row = eventually(lambda: next((r for r in bot.ctl("positions") if r["stop_kind"] == "breakeven"), None), what="stop at breakeven")
    m = bot.rt.venue.markets.resolve("BTCUSDT")
    tp1, tp2 = row["take_profits"]
    want = f"TP1 {num.price(tp1['price'], m.tick_size)} filled, TP2 {num.price(tp2['price'], m.tick_size)}"
    eventually(lambda: cell(browser, "p3", "stop_kind") == "breakeven" and cell(browser, "p3", "tps") == want, timeout=5, what=f"live row: breakeven, {want}")
    browser.get(bot.url + "/position/p3")
    series = json.loads(browser.execute_script("return document.getElementById('chart-data').textContent"))
    assert [(t["level"], Decimal(t["price"]), t["filled"]) for t in series["take_profits"]] == [(1, Decimal(tp1["price"]), True), (2, Decimal(tp2["price"]), False)]
    assert [s[2] for s in series["stops"]][-1] in ("breakeven", "tp1_breakeven") and Decimal(series["stops"][-1][1]) == Decimal(row["stop_price"])
    assert [mk["kind"] for mk in series["markers"]].count("tp") == 1
    assert browser.execute_script("return document.querySelectorAll('#chart svg line.tp').length") == 2
