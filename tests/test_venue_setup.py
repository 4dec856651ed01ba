"""Leverage and margin mode from the config, set before the first entry on a symbol, verified, cached.

Binance: the real bot (position actors, executor, real ccxt) against the
loopback venue (``tests/venue/binance_server.py``: symbolConfig, marginType,
leverage, -4028 / -4048), judged by the venue's request log. Bybit: the Venue
over real ccxt with its HTTP intercepted (``intercept_http``), answered by the
scripted v5 fake of ``tests/test_ccxt_flow.py`` plus the account and leverage
endpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from actors.messages import PositionOpened, PositionOpenFailed
from adapters.ccxt_exchange import ExchangeSetupError, build_ccxt_venue
from adapters.errors import Outcome, VenueError
from core.clock import VirtualClock
from tests.conftest import make_config
from tests.test_ccxt_flow import FakeBybitLinear, exchange_toml, make_exchange
from tests.venue.binance_server import BinanceVenueServer
from tests.venue.bot import FAST, Bot, close_bot, server, start_bot, wait_for

D = Decimal
SETUP_ROUTES = ("GET /fapi/v1/symbolConfig", "POST /fapi/v1/marginType", "POST /fapi/v1/leverage")


@pytest.fixture
def venue() -> Iterator[BinanceVenueServer]:
    s = server()
    yield s
    s.stop()


def routes(venue: BinanceVenueServer, *, symbol: str | None = None) -> list[str]:
    return [r.route for r in venue.timeline.requests if (r.route in SETUP_ROUTES or r.route == "POST /fapi/v1/order") and (symbol is None or r.params.get("symbol") == symbol)]


def outcome(bot: Bot, pid: str) -> Any:
    return wait_for(lambda: next((r for r in bot.reports() if isinstance(r, (PositionOpened, PositionOpenFailed)) and r.position_id == pid), None), what=f"{pid} opened or refused")


# ============================================================ Binance, on the venue-like server
def test_binance_first_entry_sets_isolated_and_the_leverage_reads_them_back_and_caches(tmp_path: Path, venue: BinanceVenueServer):
    toml = FAST.replace("[position]\n", '[position]\nleverage = 10\nmargin_mode = "isolated"\n') + "[position.leverage_by_symbol]\nETHUSDT = 5\n"
    b = start_bot(tmp_path / "bot", venue, toml=toml)
    try:
        b.open("BTCUSDT", pid="p1")
        assert isinstance(outcome(b, "p1"), PositionOpened)
        # a fresh account: CROSSED at 20x -> read, set both, read back, then the entry
        assert routes(venue, symbol="BTCUSDT") == ["GET /fapi/v1/symbolConfig", "POST /fapi/v1/marginType", "POST /fapi/v1/leverage", "GET /fapi/v1/symbolConfig", "POST /fapi/v1/order"]
        assert venue.margin_type["BTCUSDT"] == "ISOLATED" and venue.leverage["BTCUSDT"] == 10
        sets = [r for r in venue.timeline.requests if r.route in ("POST /fapi/v1/marginType", "POST /fapi/v1/leverage")]
        assert [(r.params.get("marginType"), r.params.get("leverage")) for r in sets] == [("ISOLATED", None), (None, "10")]
        b.open("BTCUSDT", pid="p2", quote="20")  # the same symbol again: cached, not a request more
        assert isinstance(outcome(b, "p2"), PositionOpened)
        assert routes(venue, symbol="BTCUSDT")[5:] == ["POST /fapi/v1/order"]
        eth = b.ctx.config.position.leverage_for("ETHUSDT")
        assert eth == 5
        b.open("ETHUSDT", pid="p3", leverage=eth, quote="50")  # as the intake sizes it: what is set
        assert isinstance(outcome(b, "p3"), PositionOpened)
        assert venue.leverage["ETHUSDT"] == 5
    finally:
        close_bot(b)


def test_binance_already_set_costs_one_read(tmp_path: Path, venue: BinanceVenueServer):
    venue.margin_type["BTCUSDT"], venue.leverage["BTCUSDT"] = "ISOLATED", 10
    b = start_bot(tmp_path / "bot", venue)
    try:
        b.open("BTCUSDT", pid="p1")
        assert isinstance(outcome(b, "p1"), PositionOpened)
        assert routes(venue, symbol="BTCUSDT") == ["GET /fapi/v1/symbolConfig", "POST /fapi/v1/order"]
    finally:
        close_bot(b)


def test_binance_a_position_open_in_cross_margin_refuses_the_entry_with_a_clear_event(tmp_path: Path, venue: BinanceVenueServer):
    with venue._lock:  # a human's position on ETHUSDT, in the account's cross margin
        venue.engine.create_order("ETH/USDT:USDT", "market", "buy", D("0.1"), None, {}, now_ms=int(time.time() * 1000))
    b = start_bot(tmp_path / "bot", venue)
    try:
        b.open("ETHUSDT", pid="p1", quote="20")
        failed = outcome(b, "p1")
        assert isinstance(failed, PositionOpenFailed) and failed.outcome == Outcome.REJECTED.value
        assert "trading setup refused, entry not sent" in failed.reason and "a position is open" in failed.reason and "-4048" in failed.reason
        (event,) = b.events(types=["position.entry_failed"], position_id="p1")
        assert event.data["reason"] == failed.reason
        assert [r for r in venue.timeline.requests if r.route == "POST /fapi/v1/order" and str(r.params.get("newClientOrderId", "")).startswith("tb-p1-")] == []
        assert "POST /fapi/v1/leverage" not in routes(venue, symbol="ETHUSDT")  # nothing half done
        assert "ETHUSDT" not in b.venue.setup.done
    finally:
        close_bot(b)


def test_binance_leverage_above_the_bracket_refuses_the_entry(tmp_path: Path, venue: BinanceVenueServer):
    venue.max_leverage["BTCUSDT"] = 5
    venue.margin_type["BTCUSDT"] = "ISOLATED"
    b = start_bot(tmp_path / "bot", venue)
    try:
        b.open("BTCUSDT", pid="p1")
        failed = outcome(b, "p1")
        assert isinstance(failed, PositionOpenFailed) and "-4028" in failed.reason and "above its bracket" in failed.reason
        assert routes(venue, symbol="BTCUSDT") == ["GET /fapi/v1/symbolConfig", "POST /fapi/v1/leverage"]
        assert venue.positions() == {}
    finally:
        close_bot(b)


# ============================================================ Bybit, ccxt's HTTP intercepted
class FakeBybitAccount(FakeBybitLinear):
    """The v5 fake plus what the setup reads and writes: account info (margin mode, account-wide on a
    unified account), set-margin-mode, set-leverage, and positions listing the leverage set."""

    def __init__(self, *, margin: str = "REGULAR_MARGIN", leverage: dict[str, int] | None = None, refuse_margin: bool = False) -> None:
        super().__init__()
        self.margin, self.lev = margin, dict(leverage or {})
        self.refuse_margin = refuse_margin
        for s in ("ETHUSDT",):
            self.marks[s] = D("2000")

    def routes(self):
        return {
            **super().routes(),
            "GET /v5/account/info": lambda p: self.envelope({"marginMode": self.margin, "updatedTime": str(self.now_ms), "unifiedMarginStatus": 5, "dcpStatus": "OFF", "timeWindow": 0, "smpGroup": 0, "isMasterTrader": False, "spotHedgingStatus": "OFF"}),
            "POST /v5/account/set-margin-mode": self.set_margin_mode,
            "POST /v5/position/set-leverage": self.set_leverage,
        }

    def set_margin_mode(self, p):
        if self.refuse_margin:
            return {"retCode": 3400045, "retMsg": "Set margin mode failed", "result": {"reasons": [{"reasonCode": "3400045", "reasonMsg": "position or open orders exist"}]}, "retExtInfo": {}, "time": self.now_ms}
        self.margin = p["setMarginMode"]
        return self.envelope({"reasons": []})

    def set_leverage(self, p):
        if p["buyLeverage"] != p["sellLeverage"]:
            return self.refusal("10001", "buy and sell leverage differ")
        if int(p["buyLeverage"]) == self.lev.get(p["symbol"], 10):
            return self.refusal("110043", "Set leverage not modified")
        self.lev[p["symbol"]] = int(p["buyLeverage"])
        return self.envelope({})

    def position_list(self, p):
        out = super().position_list(p)
        for row in out["result"]["list"]:
            row["leverage"] = str(self.lev.get(row["symbol"], 10))
        return out


def bybit_venue(fake: FakeBybitAccount, extra: str = "") -> Any:
    cfg = make_config(Path("/tmp"), exchange_toml("bybit") + extra)
    return asyncio.run(build_ccxt_venue(cfg, VirtualClock(start_ms=1_700_000_000_000), None, exchange=make_exchange(cfg, fake))), cfg


def bybit_paths(fake: FakeBybitAccount) -> list[str]:
    return [p for p in fake.paths() if p != "GET /v5/order/realtime"]  # the market order's read-back


def test_bybit_first_entry_sets_the_accounts_margin_mode_once_and_each_symbols_leverage():
    fake = FakeBybitAccount(margin="REGULAR_MARGIN", leverage={"BTCUSDT": 20, "ETHUSDT": 20})
    v, _ = bybit_venue(fake, '[position]\nleverage = 10\nmargin_mode = "isolated"\n')
    del fake.requests[:]

    async def go() -> None:
        await v.open_market("BTCUSDT", "buy", D("0.025"), "tb-p1-e1", ref_price=D("40000"), leverage=10)
        await v.open_market("ETHUSDT", "buy", D("0.5"), "tb-p2-e1", ref_price=D("2000"), leverage=10)
        await v.open_market("ETHUSDT", "sell", D("0.5"), "tb-p3-e1", ref_price=D("2000"), leverage=10)

    asyncio.run(go())
    assert bybit_paths(fake) == [
        "GET /v5/account/info", "GET /v5/position/list",  # what the account and BTCUSDT have
        "POST /v5/account/set-margin-mode", "POST /v5/position/set-leverage",
        "GET /v5/account/info", "GET /v5/position/list",  # read back
        "POST /v5/order/create",
        "GET /v5/position/list", "POST /v5/position/set-leverage", "GET /v5/account/info", "GET /v5/position/list",  # ETHUSDT: margin known
        "POST /v5/order/create",
        "POST /v5/order/create",  # cached
    ]  # fmt: skip
    margin = next(r for r in fake.requests if r.path == "/v5/account/set-margin-mode")
    lev = next(r for r in fake.requests if r.path == "/v5/position/set-leverage")
    assert margin.params == {"setMarginMode": "ISOLATED_MARGIN"}
    assert {k: lev.params[k] for k in ("category", "symbol", "buyLeverage", "sellLeverage")} == {"category": "linear", "symbol": "BTCUSDT", "buyLeverage": "10", "sellLeverage": "10"}
    assert fake.margin == "ISOLATED_MARGIN" and fake.lev == {"BTCUSDT": 10, "ETHUSDT": 10}


def test_bybit_a_refused_margin_mode_refuses_the_entry_before_it_is_sent():
    fake = FakeBybitAccount(margin="REGULAR_MARGIN", refuse_margin=True)
    v, _ = bybit_venue(fake)
    del fake.requests[:]
    with pytest.raises(VenueError) as refused:
        asyncio.run(v.open_market("BTCUSDT", "buy", D("0.025"), "tb-p1-e1", ref_price=D("40000"), leverage=10))
    assert refused.value.outcome is Outcome.REJECTED and refused.value.code == "setup"
    assert "trading setup refused, entry not sent" in str(refused.value) and "3400045" in str(refused.value) and "margin mode cannot be changed" in str(refused.value)
    assert "POST /v5/order/create" not in fake.paths() and "POST /v5/position/set-leverage" not in fake.paths()


def test_bybit_leverage_above_the_instruments_maximum_is_refused_without_a_request():
    fake = FakeBybitAccount(margin="ISOLATED_MARGIN")
    v, _ = bybit_venue(fake)
    del fake.requests[:]
    with pytest.raises(VenueError, match="leverage 150 is above the symbol's maximum of 100"):
        asyncio.run(v.open_market("BTCUSDT", "buy", D("0.025"), "tb-p1-e1", ref_price=D("40000"), leverage=150))
    assert fake.paths() == []


@pytest.mark.parametrize(("extra", "message"), [
    ('[position]\nmargin_mode = "isolated"\n[position.margin_mode_by_symbol]\nBTCUSDT = "cross"\n', "one margin mode for the whole account"),
    ("[position.leverage_by_symbol]\nNOPEUSDT = 5\n", "position.leverage_by_symbol.NOPEUSDT: bybit has no such linear market"),
])
def test_bybit_setup_config_that_cannot_hold_is_refused_at_start(extra: str, message: str):
    with pytest.raises(ExchangeSetupError, match=message):
        bybit_venue(FakeBybitAccount(), extra)


def test_per_symbol_leverage_is_validated_and_sizes_the_intakes_requests(tmp_path: Path):
    from core.config import ConfigError

    cfg = make_config(tmp_path, "[position]\nleverage = 10\n[position.leverage_by_symbol]\nBTCUSDT = 20\n")
    assert cfg.position.leverage_for("BTCUSDT") == 20 and cfg.position.leverage_for("BTC/USDT:USDT") == 20 and cfg.position.leverage_for("ETHUSDT") == 10
    with pytest.raises(ConfigError, match=r"position\.leverage_by_symbol\.BTCUSDT: expected an integer >= 1 and <= 125, got 200"):
        make_config(tmp_path, "[position.leverage_by_symbol]\nBTCUSDT = 200\n")
