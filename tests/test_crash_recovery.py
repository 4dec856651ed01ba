"""SIGKILL the bot while the paper exchange runs on in its own process, then restart.

Real processes (`tradebot paper serve`, `tradebot run`), real sockets, the
real store file. While the bot is dead, one position's stop is triggered on
the exchange; after the restart every position must be known, protected by
the same stop as before, and the stopped-out one recorded as closed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.paper.client import PaperClient
from tests.conftest import SHARED, eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRADEBOT_CRASH_POINT")}, "PYTHONPATH": str(ROOT)}  # this checkout's code
SIGNALS = [
    {"id": "k-btc", "wave": "w1", "symbol": "BTCUSDT", "side": "long", "after_secs": 0.2},
    {"id": "k-eth", "wave": "w1", "symbol": "ETHUSDT", "side": "short", "after_secs": 0.2},
    {"id": "k-xrp", "wave": "w1", "symbol": "XRPUSDT", "side": "long", "after_secs": 0.2},
]


def tradebot(cwd: Path, *args: str, log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(cwd / log, "ab")
    return subprocess.Popen([sys.executable, "-m", "tradebot", *args], cwd=cwd, env=env or ENV, stdout=out, stderr=subprocess.STDOUT)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM whatever still runs, bounded; SIGKILL what does not stop."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def ctl_json(cwd: Path, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "tradebot", "ctl", *args, "--json"], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=30)
    return json.loads(res.stdout) if res.stdout.strip() else {"ok": False, "error": res.stderr}


def paper_call(sock: Path, method: str, *args):
    async def go():
        client = PaperClient(sock)
        try:
            return await client.call(method, *args)
        finally:
            await client.close()

    return asyncio.run(go())


class Site(type(Path())):  # a Path that also remembers the processes it started
    procs: list[subprocess.Popen]


@pytest.fixture
def site() -> Iterator[Site]:
    path = Site(tempfile.mkdtemp(prefix="tbk-", dir="/tmp"))
    (path / "signals.jsonl").write_text("\n".join(json.dumps(s) for s in SIGNALS) + "\n")
    (path / "config.toml").write_text(
        f'[paper]\nmode = "process"\ndata_dir = "{SHARED / "data"}"\nspeed = 1\n'
        '[demo]\nsignals_file = "signals.jsonl"\n[signals]\nsource = "file"\n'
        "[feeds]\nmark_interval_ms = 200\n[position]\nverify_interval_secs = 2\n"
    )
    path.procs = []
    yield path
    stop_processes(path.procs)
    shutil.rmtree(path, ignore_errors=True)


def open_positions(cwd: Path) -> list[dict]:
    reply = ctl_json(cwd, "positions")
    return reply.get("result") or [] if reply.get("ok") else []


def test_sigkill_then_restart_resumes_every_position_with_its_stop(site: Site):
    sock = site / "var" / "paper.sock"
    exchange = tradebot(site, "paper", "serve", log="paper.log")
    site.procs.append(exchange)
    eventually(lambda: sock.exists(), timeout=20, what="paper exchange socket")

    bot = tradebot(site, "run", log="bot1.log")
    site.procs.append(bot)
    before = eventually(lambda: (p := open_positions(site)) and len(p) == 3 and all(x["state"] == "protected" for x in p) and p, timeout=30, what="3 protected positions")
    by_symbol = {p["symbol"]: p for p in before}
    # The only unprotected time allowed: entry fill -> stop live (one round trip), per position.
    gap_before = paper_call(sock, "metrics")
    assert int(gap_before["max_unprotected_stretch_ms"]) < 2_000

    bot.send_signal(signal.SIGKILL)
    bot.wait(10)

    # While the bot is dead, BTC falls through its stop: the exchange fills it.
    btc_stop = Decimal(by_symbol["BTCUSDT"]["stop_price"])
    paper_call(sock, "set_mark", "BTC/USDT:USDT", str(btc_stop - 100))
    assert all(p["symbol"] != "BTC/USDT:USDT" for p in paper_call(sock, "fetch_positions"))

    bot2 = tradebot(site, "run", log="bot2.log")
    site.procs.append(bot2)
    after = eventually(lambda: (p := open_positions(site)) and {x["symbol"] for x in p} == {"ETHUSDT", "XRPUSDT"} and p, timeout=30, what="restart: BTC recorded closed, the rest open")
    for p in after:
        old = by_symbol[p["symbol"]]
        assert p["state"] == "protected"
        assert (p["stop_order_id"], p["stop_price"], p["quantity"]) == (old["stop_order_id"], old["stop_price"], old["quantity"])

    # The exchange agrees: one stop per open position, nothing duplicated, and not a
    # millisecond unprotected while the bot was dead or restarting.
    orders = paper_call(sock, "fetch_open_orders")
    assert sorted(o["id"] for o in orders) == sorted(p["stop_order_id"] for p in after)
    metrics = paper_call(sock, "metrics")
    assert metrics["unprotected_ms"] == gap_before["unprotected_ms"]
    assert metrics["overlap_ms"] == 0 and metrics["orphan_orders"] == 0 and metrics["unprotected_now"] == 0

    events = subprocess.run([sys.executable, "-m", "tradebot", "events", "--position", by_symbol["BTCUSDT"]["position_id"], "--json"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
    btc_events = json.loads(events.stdout)
    final = [e for e in btc_events if e["type"] == "position.stop_filled"]
    assert final and final[0]["data"]["reason"] == "stop filled" and Decimal(final[0]["data"]["pnl"]) < 0

    # No second entry for anything: each position id appears once, each signal opened once.
    intake = subprocess.run([sys.executable, "-m", "tradebot", "events", "--type", "intake.signal_selected", "--json"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
    assert sorted(e["data"]["signal_id"] for e in json.loads(intake.stdout)) == ["k-btc", "k-eth", "k-xrp"]

    bot2.send_signal(signal.SIGTERM)
    assert bot2.wait(30) == 0
    assert len(paper_call(sock, "fetch_open_orders")) == 2  # graceful shutdown leaves stops on the exchange
