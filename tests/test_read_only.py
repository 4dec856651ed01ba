"""Read-only mode (``exchange.read_only = true``) against the loopback Binance venue: connect, reconcile,
report and alert, and not one order request reaches the venue, whatever asks for one.

The venue holds positions nobody in the bot owns, a human's stop, and a stop of
ours whose owner is gone (a zombie the bot would normally cancel); a demo
signal arrives; a position actor is even started by hand (a path past the
intake). The venue's own request log must show reads only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from actors.messages import PositionOpenFailed
from adapters.errors import VenueError
from adapters.paper.model import OrderRequest
from adapters.read_only import READ_ONLY_REASON, install_read_only
from core.config import ConfigError
from tests.conftest import make_config
from tests.venue.binance_server import BinanceVenueServer
from tests.venue.bot import FAST, close_bot, server, start_bot, wait_for
from tradebot.cli import _render

D = Decimal


@pytest.fixture
def venue() -> Iterator[BinanceVenueServer]:
    s = server()
    now = int(time.time() * 1000)
    with s._lock:
        s.engine.create_order("BTC/USDT:USDT", "market", "buy", D("0.01"), None, {}, now_ms=now)  # naked: nobody's
        s.engine.create_order("ETH/USDT:USDT", "market", "buy", D("0.5"), None, {}, now_ms=now)
        s.engine.place(OrderRequest(symbol="ETH/USDT:USDT", side="sell", kind="stop_market", amount=D("0.5"), trigger_price=D("1800"), reduce_only=True, trigger_direction="falling", client_id="web_human_1"), now_ms=now)
        s.engine.place(OrderRequest(symbol="ETH/USDT:USDT", side="sell", kind="stop_market", amount=D("0.5"), trigger_price=D("1700"), reduce_only=True, trigger_direction="falling", client_id="tb-deadbeef01-s1"), now_ms=now - 600_000)
    yield s
    s.stop()


def test_read_only_reports_and_alerts_and_sends_no_order(tmp_path: Path, venue: BinanceVenueServer):
    signals = tmp_path / "signals.jsonl"
    signals.write_text(json.dumps({"id": "s1", "wave": "w1", "symbol": "XRPUSDT", "side": "buy", "after_secs": 0}) + "\n")
    toml = FAST.replace('[demo]\nsignals_file = ""', f'[demo]\nsignals_file = "{signals}"') + "[zombies]\ndry_run = false\n[signals]\nsource = \"file\"\n"
    toml = toml.replace("[guard]\n", "[guard]\nunprotected_alert_secs = 1\n")
    b = start_bot(tmp_path / "bot", venue, toml=toml, exchange_extra="read_only = true\n")
    try:
        recon = wait_for(lambda: [e for e in b.events(types=["sync.reconciled"]) if e.data["zombies"]], what="a reconcile with findings")[0]
        assert {(u["symbol"], u["side"]) for u in recon.data["untracked"]} == {("BTCUSDT", "long"), ("ETHUSDT", "long")}
        assert [z["client_id"] for z in recon.data["zombies"]] == ["tb-deadbeef01-s1"] and recon.data["dry_run"] is True and recon.data["cancelled"] == 0
        (alert,) = wait_for(lambda: b.events(types=["alert.position_unprotected"]), what="the naked position alerted")
        assert alert.data["position"] == "BTCUSDT:long"
        skipped = wait_for(lambda: b.events(types=["intake.signal_skipped"]), what="the signal refused")
        assert skipped[0].data["reason"] == READ_ONLY_REASON
        b.open("LTCUSDT", pid="p1", quote="20")  # past the intake, straight to a position actor
        failed = wait_for(lambda: next((r for r in b.reports() if isinstance(r, PositionOpenFailed)), None), what="the entry refused")
        assert "read-only mode" in failed.reason and "POST order refused" in failed.reason
        status = b.sup.proxy().status().get(timeout=10)
        assert status["read_only"] is True and status["intake"]["blocked"]["read-only"] == READ_ONLY_REASON
        assert _render("status", status).splitlines()[1].startswith("mode:       READ-ONLY")
        n = len(venue.timeline.requests)
        wait_for(lambda: len(b.events(types=["sync.reconciled"])) >= 3 and len(venue.timeline.requests) > n + 5, what="more cycles")
        assert not b.events(types=["sync.untracked_adopted", "sync.zombie_cancelled"])
    finally:
        close_bot(b)
    writes = [r.route for r in venue.timeline.requests if r.method != "GET"]
    assert writes == [], writes  # no entry, no stop, no cancel, no leverage: reads only
    assert {o.client_id for o in venue.engine.open_order_list()} == {"web_human_1", "tb-deadbeef01-s1"}


def test_the_seam_refuses_every_write_whoever_calls_ccxt(venue: BinanceVenueServer):
    """Below the executor: ccxt called directly (as a bug would) is refused before signing."""
    import asyncio

    from adapters.ccxt_exchange import build_ccxt_exchange
    from tests.venue.bot import ENV, exchange_toml

    cfg = make_config(Path("/tmp"), exchange_toml(venue.url, extra="read_only = true\n"))
    ex = install_read_only(build_ccxt_exchange(cfg, env=ENV))

    async def go() -> list[str]:
        await ex.load_markets()
        out = []
        for call in (lambda: ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01), lambda: ex.cancel_order("1", "BTC/USDT:USDT"), lambda: ex.set_leverage(5, "BTC/USDT:USDT")):
            try:
                await call()
            except VenueError as err:
                out.append(err.code or "")
        await ex.fetch_positions()  # reads pass
        await ex.close()
        return out

    n = len(venue.timeline.requests)
    assert asyncio.run(go()) == ["read_only"] * 3
    assert [r.method for r in venue.timeline.requests[n:]] and all(r.method == "GET" for r in venue.timeline.requests[n:])


def test_read_only_is_for_real_venues(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"exchange\.read_only: only for a real venue"):
        make_config(tmp_path, "[exchange]\nread_only = true\n")
