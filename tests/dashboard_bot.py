"""A real bot for dashboard and ctl tests: a Runtime (supervisor, store, control socket, HTTP server with
the dashboard) trading on an in-process paper exchange whose marks the test sets."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from actors.messages import OpenRequest
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.paper.exchange import MARKET_FILES
from adapters.venue import Venue
from core.messages import StartChild
from supervision.commands import status_notes
from supervision.runtime import Runtime
from tests.conftest import SHARED, eventually, make_config
from tradebot.control_client import send_command
from tradebot.ops import ops_children, start_http
from tradebot.wiring import NamedRef, build_executor, paper_style, position_spec, start_mark_book, trading_children

BTC = "BTC/USDT:USDT"


class Bot:
    def __init__(self, rt: Runtime, exchange: PaperExchange) -> None:
        self.rt, self.exchange = rt, exchange

    @property
    def url(self) -> str:
        return self.rt.http.url

    def ctl(self, command: str, args: dict[str, Any] | None = None) -> Any:
        reply = send_command(self.rt.config.control_socket, command, args or {}, timeout_s=10)
        assert reply.ok, reply.error
        return reply.result

    def open(self, pid: str) -> None:
        venue = self.rt.venue
        req = OpenRequest(position_id=pid, exchange="paper", symbol="BTCUSDT", side="long", quote_amount=Decimal(100), leverage=10, correlation_id=f"sig-{pid}",
                          requested_by=NamedRef(self.rt.directory, "intake"))
        self.rt.supervisor.tell(StartChild(spec=position_spec(venue, self.rt.directory, pid, "BTCUSDT", req)))

    def events(self, pid: str, etype: str) -> list[Any]:
        return self.rt.io.run(self.rt.store.query(position_id=pid, types=(etype,), consistent=False), 5)


def running_bot(short_tmp: Path, *, http: bool = True, extra_toml: str = "") -> Iterator[Bot]:
    """Yield a started bot (use from a fixture: ``yield from running_bot(short_tmp)``); stopped after."""
    toml = ("[runtime]\ndata_dir = \"var\"\n[demo]\nsignals_file = \"\"\n[signals]\nsource = \"file\"\n[feeds]\nmark_interval_ms = 100\n"
                      "[trailing]\nmin_move_interval_secs = 0\n[position]\nverify_interval_secs = 2\n[sync]\ninterval_secs = 1\ninterval_secs_streaming = 1\n[http]\nport = 0\n" + ("" if http else "enabled = false\n") + extra_toml)
    (short_tmp / "bot.toml").write_text(toml)  # the same config for `tradebot ctl --config` (same socket)
    cfg = make_config(short_tmp, toml)
    holder: dict[str, PaperExchange] = {}

    def children(rt: Runtime) -> list[Any]:
        markets = Markets.from_file(SHARED / "data" / "markets" / MARKET_FILES["binance"])
        exchange = PaperExchange(PaperEngine(markets, flavour="binance", slippage_bps=Decimal(0)), rt.clock, flavour="binance")
        rt.io.run(exchange.load_markets(), 5)
        exchange.set_mark(BTC, Decimal("40000"))
        holder["exchange"] = exchange
        rt.venue = venue = Venue("paper", exchange, markets, build_executor(rt.config, "paper", rt.clock, rt.store), paper_style(rt.config))
        rt.store.subscribe("status", status_notes(lambda: rt.supervisor), maxlen=1000)  # as the wiring does
        start_mark_book(rt)
        rt.after_start.append(lambda: start_http(rt) and None)
        return [*ops_children(rt), *trading_children(rt.config, venue, rt.directory, [])]

    rt = Runtime(cfg, console=False, children=children).start()
    try:
        assert (rt.http is not None) == http, f"http.enabled = {http}, yet the server is {rt.http}"
        yield Bot(rt, holder["exchange"])
    finally:
        rt.stop()


def protected(bot: Bot, pid: str) -> dict[str, Any]:
    return eventually(lambda: next((r for r in bot.ctl("positions") if r["position_id"] == pid and r.get("stop_price") and r.get("state") == "protected"), None), what=f"{pid} protected")
