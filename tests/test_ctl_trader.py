"""`tradebot ctl` for traders, against a real bot (tests/dashboard_bot.py): `positions` with mark, stop kind,
distance to the stop, unrealised PnL, trailing state and age (human and --json); `status` naming the venue
and mode; `close <position id>`, and a clear error for an id nothing has."""

from __future__ import annotations

import datetime
import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.dashboard_bot import BTC, Bot, protected, running_bot
from tests.test_cli import ENV, TRADEBOT
from tradebot import numbers as num


@pytest.fixture
def bot(short_tmp: Path) -> Iterator[Bot]:
    yield from running_bot(short_tmp, http=False)  # the marks do not depend on the dashboard


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def ctl(bot: Bot, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRADEBOT, "ctl", *args, "--config", str(bot.rt.config.data_dir.parent / "bot.toml")], env=ENV, capture_output=True, text=True, timeout=60)


def test_positions_shows_the_trader_figures_and_close_takes_a_position_id(bot: Bot):
    bot.open("a1b2c3d4e5")
    protected(bot, "a1b2c3d4e5")
    bot.exchange.set_mark(BTC, Decimal("40100"))
    # the mark the bot saw, by hand: entry 40000, qty 0.025, stop 39200 (initial, 2 % below)
    row = eventually(lambda: next((r for r in json.loads(ctl(bot, "positions", "--json").stdout)["result"] if r.get("mark") and Decimal(r["mark"]) == 40100), None), what="ctl positions shows mark 40100")
    assert (Decimal(row["entry_price"]), Decimal(row["quantity"]), Decimal(row["stop_price"])) == (Decimal(40000), Decimal("0.025"), Decimal(39200))
    assert row["stop_kind"] == "initial" and row["trailing"] == "armed"
    assert Decimal(row["unrealised_pnl"]) == Decimal("2.5")  # (40100 - 40000) x 0.025
    assert Decimal(row["unrealised_pnl_percent"]) == Decimal("0.25")
    assert Decimal(row["stop_distance_percent"]) == ((Decimal(40100) - Decimal(39200)) / Decimal(40100) * 100).quantize(Decimal("0.0001"))
    assert row["age_ms"] >= 0 and row["tick_size"] == "0.1"

    human = ctl(bot, "positions")
    assert human.returncode == 0, human.stderr
    head, line = human.stdout.splitlines()[:2]
    for col in ("mark", "stop_kind", "to_stop", "unrealised", "trailing", "age"):
        assert col in head
    assert "40100.0" in line and "39200.0" in line and "initial" in line and "2.24 %" in line and "2.50 USDT (0.25 %)" in line and "armed" in line

    # verified: the last reconcile after the entry that found nothing wrong (sync every second here)
    row = eventually(lambda: next((r for r in json.loads(ctl(bot, "positions", "--json").stdout)["result"] if r.get("last_verified_ms")), None), what="a verifying reconcile")
    clean = [e.ts_ms for e in bot.rt.io.run(bot.rt.store.query(types=("sync.reconciled",), consistent=False), 5) if not any(e.data.get(k) for k in ("untracked", "phantoms", "mismatches", "strays", "zombies"))]
    assert row["last_verified_ms"] in clean and row["last_verified_ms"] >= row["opened_ts_ms"]
    assert num.when(row["last_verified_ms"]) in ctl(bot, "positions").stdout

    status = ctl(bot, "status")
    assert "venue:      paper (paper)" in status.stdout, status.stdout
    seen = eventually(lambda: json.loads(ctl(bot, "status", "--json").stdout)["result"].get("last_reconcile"), what="a reconcile in ctl status")
    reconciled = bot.rt.io.run(bot.rt.store.query(types=("sync.reconciled",), consistent=False), 5)
    assert seen["ok"] is True and seen["at"] in {_iso(e.ts_ms) for e in reconciled}
    assert "last wave:  none yet" in ctl(bot, "status").stdout  # the file intake runs no waves

    unknown = ctl(bot, "close", "ffffffffff")
    assert unknown.returncode == 1
    assert "no open position for FFFFFFFFFF" in unknown.stderr and "a1b2c3d4e5 (BTCUSDT)" in unknown.stderr
    closing = ctl(bot, "close", "a1b2c3d4e5")
    assert closing.returncode == 0, closing.stderr
    # it waited for the committed exit and prints its fill: quantity at the exit price, the realised PnL
    closed = bot.events("a1b2c3d4e5", "position.closed")
    assert len(closed) == 1
    exit_price, pnl = Decimal(closed[0].data["exit_price"]), Decimal(closed[0].data["pnl"])
    assert exit_price == 40100 and pnl == Decimal("2.5")  # (40100 - 40000) x 0.025, no slippage
    assert closing.stdout.strip().startswith("closed BTCUSDT a1b2c3d4e5: 0.025 at 40100.0, realised PnL 2.50 USDT"), closing.stdout
    assert "(user command)" in closing.stdout
    assert json.loads(ctl(bot, "positions", "--json").stdout)["result"] == []
    assert num.plain(["x"]) == "x"  # the printer joins lists: no Python reprs in the closing line
    assert "[" not in closing.stdout and "'" not in closing.stdout


def test_close_waits_for_the_exit_and_json_has_the_exact_figures(bot: Bot):
    bot.open("b1b2c3d4e5")
    protected(bot, "b1b2c3d4e5")
    bot.exchange.set_mark(BTC, Decimal("39950.5"))
    eventually(lambda: next((r for r in bot.ctl("positions") if r.get("mark") and Decimal(r["mark"]) == Decimal("39950.5")), None), what="mark seen")
    out = ctl(bot, "close", "BTCUSDT", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    reply = json.loads(out.stdout)
    assert reply["ok"] is True and reply["error"] is None and reply["result"]["still_closing"] == []
    assert reply["result"]["closing"] == ["position:BTCUSDT:b1b2c3d4e5"]
    (row,) = reply["result"]["closed"]
    (event,) = bot.events("b1b2c3d4e5", "position.closed")
    assert row["event_id"] == event.id and row["event"] == "position.closed" and row["reason"] == "user command"
    assert row["exit_price"] == event.data["exit_price"] and row["pnl"] == event.data["pnl"]  # the stored strings, exactly
    assert Decimal(row["quantity"]) == Decimal("0.025") and Decimal(row["pnl"]) == (Decimal("39950.5") - 40000) * Decimal("0.025")
    assert "fee" in row  # None until the events carry a fee


def test_close_that_does_not_finish_in_time_says_so_and_exits_5(bot: Bot):
    bot.open("c1b2c3d4e5")
    protected(bot, "c1b2c3d4e5")
    # every market order (the close) fails as unreachable: the owner keeps retrying, no exit is recorded
    bot.exchange.fail_next("create_order", "exchange_unavailable", count=100_000)
    slow = ctl(bot, "close", "c1b2c3d4e5", "--wait", "1.5")
    assert slow.returncode == 5, slow.stdout + slow.stderr
    assert "still closing after 1.5 s: c1b2c3d4e5 (BTCUSDT)" in slow.stderr
    assert not bot.events("c1b2c3d4e5", "position.closed")
    as_json = json.loads(ctl(bot, "close", "c1b2c3d4e5", "--wait", "0.5", "--json").stdout)
    assert as_json["ok"] is False and as_json["result"]["still_closing"] == ["c1b2c3d4e5"] and "still closing" in as_json["error"]
    quick = ctl(bot, "close", "c1b2c3d4e5", "--no-wait")  # today's behaviour: the bot took it, nothing more
    assert quick.returncode == 0 and "position:BTCUSDT:c1b2c3d4e5" in quick.stdout
    bot.exchange.faults._script["create_order"].clear()
    closed = eventually(lambda: bot.events("c1b2c3d4e5", "position.closed"), what="closed once the venue takes orders", timeout=30)
    assert closed


def test_status_shows_the_account_balance_read_from_the_venue(bot: Bot):
    from tradebot.cli import _balance_lines

    assert _balance_lines({"balance": None}) == ["balance:    unknown (not read yet: the first full reconcile reads it)"]
    bot.open("d1b2c3d4e5")
    protected(bot, "d1b2c3d4e5")

    def engine_balance() -> dict[str, Decimal]:
        return bot.exchange.with_engine(lambda engine, _now: engine.balance())

    def read_with_margin() -> dict | None:
        b = (json.loads(ctl(bot, "status", "--json").stdout)["result"].get("balance") or {}).get("paper")
        return b if b and b["used"] is not None and Decimal(b["used"]) > 0 else None

    # read at start-up (before the entry), then every sync.balance_interval_secs (300 s); ctl sync reads it now
    assert ctl(bot, "sync").returncode == 0
    b = eventually(read_with_margin, what="a balance read showing the position's margin")
    venue = engine_balance()
    assert b["asset"] == "USDT" and b["last_error"] is None
    assert Decimal(b["used"]) == venue["used"] and Decimal(b["free"]) == venue["free"]  # the venue's figures (the mark has not moved)
    assert Decimal(b["total"]) == venue["wallet"] + venue["unrealized"]
    assert b["at"].endswith("Z") and b["ts_ms"] > 0
    human = ctl(bot, "status").stdout
    line = next(line for line in human.splitlines() if line.startswith("balance:"))
    assert f"{num.money(b['total'], 'USDT')} total, {num.money(b['free'], 'USDT')} free, {num.money(b['used'], 'USDT')} in use (read " in line, line


def test_close_all_waits_for_every_exit(bot: Bot):
    for pid in ("f1b2c3d4e5", "f2b2c3d4e5"):
        bot.open(pid)
        protected(bot, pid)
    out = ctl(bot, "close-all")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["closed BTCUSDT f1b2c3d4e5", "closed BTCUSDT f2b2c3d4e5"], out.stdout
    assert all(bot.events(pid, "position.closed") for pid in ("f1b2c3d4e5", "f2b2c3d4e5"))
    nothing = ctl(bot, "close-all")
    assert nothing.returncode == 0 and nothing.stdout == "no open positions\n"
