"""The trader's figures (pure), by hand; the dashboard's live hub: coalesced pushes, a slow browser's
queue bounded (oldest dropped); and the page markup escapes what it shows."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D

from actors.position_view import trader_row
from tradebot import dashboard_pages as pages
from tradebot.dashboard import CLIENT_QUEUE, LiveHub, offer

LONG = {"position_id": "p1", "symbol": "BTCUSDT", "side": "long", "state": "protected", "is_open": True, "entry_price": "40000", "quantity": "0.025",
        "stop_price": "39200", "stop_reason": "initial", "opened_ts_ms": 1_000, "aged_from_ms": 1_000}


def test_long_figures_by_hand():
    r = trader_row(LONG, (5_000, D("40400")), 3_601_000)
    assert (r["mark"], r["mark_ts_ms"], r["stop_kind"], r["trailing"]) == ("40400", 5_000, "initial", "armed")
    assert D(r["unrealised_pnl"]) == D("10.000")  # (40400 - 40000) x 0.025
    assert D(r["unrealised_pnl_percent"]) == D("1.0000")  # 400 / 40000
    assert D(r["stop_distance_percent"]) == D("2.9703")  # (40400 - 39200) / 40400, four places
    assert (r["age_ms"], r["age_h"]) == (3_600_000, 1.0)


def test_short_figures_by_hand_and_kinds():
    short = {**LONG, "side": "short", "stop_price": "40800", "stop_reason": "tp1_breakeven", "trail_active": True, "trail_best": D("39000")}
    r = trader_row(short, (5_000, D("39500")), 6_000)
    assert D(r["unrealised_pnl"]) == D("12.500")  # (40000 - 39500) x 0.025
    assert D(r["stop_distance_percent"]) == D("3.2911")  # (40800 - 39500) / 39500
    assert (r["stop_kind"], r["trailing"], r["trail_best"]) == ("breakeven", "active", "39000")
    assert trader_row({**LONG, "stop_reason": "trailing"}, None, 0)["stop_kind"] == "trailing"


def test_without_a_mark_or_a_stop_nothing_is_made_up():
    r = trader_row({**LONG, "stop_price": None}, None, 2_000)
    assert r["mark"] is r["unrealised_pnl"] is r["stop_distance_percent"] is r["stop_kind"] is None
    assert trader_row(LONG, None, 2_000, trailing_enabled=False)["trailing"] == "off"


def test_markup_in_a_row_is_escaped():
    row = trader_row({**LONG, "symbol": "<script>x()</script>", "state": "<b>"}, None, 0)
    html = pages.position_rows([row], lambda _s: (None, None))
    assert "<script>" not in html and "&lt;script&gt;x()&lt;/script&gt;" in html and "&lt;b&gt;" in html


async def until(cond, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)  # yield to the hub's task


def test_the_hub_coalesces_and_a_slow_browser_keeps_only_the_newest():
    async def run() -> tuple[int, list[str], int]:
        renders = 0

        async def render() -> str:
            nonlocal renders
            renders += 1
            return f"r{renders}"

        hub = LiveHub(render)
        slow: asyncio.Queue[str | None] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        hub.attach(slow)  # first push: the current table
        await until(lambda: hub.pushed >= 1)
        for _ in range(50):
            hub.poke()  # a burst: one more rendering, not fifty
        await until(lambda: hub.pushed >= 2)
        assert hub._wake is not None and not hub._wake.is_set()  # nothing more pending
        for i in range(10):  # the browser never reads: its queue stays bounded, newest last
            offer(slow, f"x{i}")
        items = [slow.get_nowait() for _ in range(slow.qsize())]
        await hub.close()
        return renders, items, hub.pushed

    renders, items, pushed = asyncio.run(run())
    assert renders == pushed == 2
    assert items == ["x6", "x7", "x8", "x9"]
