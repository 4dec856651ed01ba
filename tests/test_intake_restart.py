"""Issue 16, bug 1: a wave received just before a kill is processed after the restart, once.

Real processes: the paper exchange (`tradebot paper serve`), a signal server
(`tradebot signals serve`) and the bot (`tradebot run`, signals from the URL,
each wave processed a few seconds after it arrives). The bot is SIGKILLed
while a whole wave is recorded as received and not yet processed; after the
restart (the server does not send it again to a fresh subscriber; a re-sent id
would be a duplicate) the recorded wave must be processed, exactly once, every
signal decided.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from tests.conftest import SHARED, eventually
from tests.test_crash_recovery import ENV, ctl_json, stop_processes, tradebot

pytestmark = pytest.mark.slow

WAVE = {"wave_offset_min": 0, "signals": [
    {"symbol": "BTCUSDT", "action": "buy", "score_week": 0.9, "score_month": 0.8},
    {"symbol": "ETHUSDT", "action": "sell", "score_week": 0.8, "score_month": 0.7},
    {"symbol": "XRPUSDT", "action": "buy", "score_week": 0.7, "score_month": 0.6},
    {"symbol": "LTCUSDT", "action": "buy", "score_week": 0.6, "score_month": 0.5},
]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def store_events(db: Path, *types: str) -> list:
    io = IOLoop("test-reader").start()
    try:
        store = EventStore(db, io, readonly=True).open()
        try:
            return io.run(store.query(types=types), 10)
        finally:
            store.close()
    except (FileNotFoundError, sqlite3.OperationalError):  # not created yet, or its schema not yet written
        return []
    finally:
        io.stop()


def test_a_wave_pending_at_a_kill_is_processed_once_after_the_restart():
    site = Path(tempfile.mkdtemp(prefix="tbw-", dir="/tmp"))
    port = free_port()
    (site / "waves.jsonl").write_text(json.dumps(WAVE) + "\n")
    (site / "config.toml").write_text(
        f'[paper]\nmode = "process"\ndata_dir = "{SHARED / "data"}"\nspeed = 1\n[demo]\nsignals_file = ""\n'
        f'[signals]\nsource = "url"\nurl = "ws://127.0.0.1:{port}/ws"\nprocess_on_arrival = true\nprocess_after_secs = 12\n'
        "wave_limit = 2\nbuffer_factor = 2\nmin_free_balance = 0\n"
        "[feeds]\nmark_interval_ms = 500\n[position]\nverify_interval_secs = 30\n"
    )
    db = site / "var" / "tradebot.db"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(tradebot(site, "paper", "serve", log="paper.log"))
        eventually(lambda: (site / "var" / "paper.sock").exists(), timeout=30, what="paper exchange")
        server = subprocess.Popen([sys.executable, "-m", "tradebot", "signals", "serve", "--replay", str(site / "waves.jsonl"), "--port", str(port), "--every", "2"],
                                  cwd=site, env=ENV, stdout=open(site / "signals.log", "ab"), stderr=subprocess.STDOUT)
        procs.append(server)
        bot = tradebot(site, "run", log="bot1.log")
        procs.append(bot)
        received = eventually(lambda: (r := store_events(db, "intake.signal_received")) and len(r) == 4 and r, timeout=60, what="the wave received and recorded")
        assert not store_events(db, "intake.wave_processed"), "processed too early: the kill must find the wave pending"
        bot.send_signal(signal.SIGKILL)
        bot.wait(10)
        wave = received[0].data["wave_ts_ms"]

        procs.append(tradebot(site, "run", log="bot2.log"))
        processed = eventually(lambda: store_events(db, "intake.wave_processed"), timeout=60, what="the recovered wave processed (bot2.log)")
        eventually(lambda: store_events(db, "intake.wave_finished"), timeout=60, what="the wave finished")
        assert all("duplicate" in e.data["reason"] for e in store_events(db, "intake.signal_rejected")), "a re-sent id is a duplicate"
        processed = store_events(db, "intake.wave_processed")
        assert [e.data["wave_ts_ms"] for e in processed] == [wave], "processed exactly once"
        assert processed[0].data["signals"] == 4
        decided = [e.data["signal_id"] for e in store_events(db, "intake.signal_selected", "intake.signal_skipped")]
        assert sorted(set(decided)) == sorted(e.data["signal_id"] for e in received), "every received signal decided"
        selected = store_events(db, "intake.signal_selected")
        assert len(selected) == len({e.data["symbol"] for e in selected}) >= 2, "one position per symbol, never doubled"
        assert len(store_events(db, "intake.position_opened")) == 2  # the wave's limit
        reply = eventually(lambda: (r := ctl_json(site, "positions")).get("ok") and len(r["result"]) == 2 and all(p["state"] == "protected" for p in r["result"]) and r,
                           timeout=30, what="two protected positions")
        assert {p["symbol"] for p in reply["result"]} == {"BTCUSDT", "ETHUSDT"}  # the best two scores
    finally:
        stop_processes(procs)
        shutil.rmtree(site, ignore_errors=True)


def _intake_world(tmp_path: Path, ctx, wave_limit: int = 2):
    from actors.signal_intake import SignalIntake
    from adapters.paper import PaperEngine, PaperExchange
    from adapters.venue import STYLES, Venue
    from supervision.actor import ActorContext
    from supervision.directory import Directory
    from supervision.supervisor import ChildSpec
    from tests.conftest import make_config
    from tests.test_waves import markets
    from tradebot.wiring import build_executor, position_spec

    cfg = make_config(tmp_path, f'[signals]\nsource = "bundled"\nwave_limit = {wave_limit}\nmin_free_balance = 0\n[position]\nverify_interval_secs = 3600\n[feeds]\nmark_interval_ms = 600000\n[demo]\nsignals_file = ""\n')
    ctx = ActorContext(clock=ctx.clock, io=ctx.io, store=ctx.store, config=cfg, directory=Directory())
    ms = markets()
    exchange = PaperExchange(PaperEngine(ms, flavour="binance", initial_balance=Decimal(10**6)), ctx.clock, flavour="binance", markets_path=SHARED / "data" / "markets" / "binanceusdm-linear.json")
    for m in ms:
        exchange.set_mark(m.symbol, Decimal(40000))
    venue = Venue("paper", exchange, ms, build_executor(cfg, "paper", ctx.clock, ctx.store), STYLES["binance"])
    spec_for = lambda req: position_spec(venue, ctx.directory, req.position_id, req.symbol, req)  # noqa: E731
    intake = ChildSpec(name="intake", factory=lambda n, c: SignalIntake.start(name=n, ctx=c, venue=venue, markets_by_exchange={"paper": ms}, position_spec=spec_for), kind="intake")
    return ctx, intake


def _received(ctx, wave: int, i: int):
    from core.events import Event

    now = ctx.clock.now_ms()
    return Event(type="intake.signal_received", ts_ms=now, actor="intake", correlation_id=f"s-{i}", data={
        "signal_id": f"s-{i}", "wave_ts_ms": wave, "symbol": f"W{i:03d}USDT", "side": "long", "score_week": str(1 - i / 10), "score_month": "0.5",
        "exchange": "paper", "unified_symbol": f"W{i:03d}/USDT:USDT", "action": "buy", "created_ms": now})


def test_a_processed_wave_killed_before_its_candidates_were_decided_resumes_after_the_restart(tmp_path: Path, ctx):
    """Found by the long soak: the ranked buffer of a processed wave was memory only; candidates
    not yet decided at a kill were never opened nor skipped. Rebuilt from the events now."""
    from core.events import Event
    from core.messages import Shutdown
    from supervision.supervisor import Supervisor

    ctx, intake = _intake_world(tmp_path, ctx)
    wave = ctx.clock.now_ms() - ctx.clock.now_ms() % 900_000
    for i in (1, 2, 3):
        ctx.store.append(_received(ctx, wave, i))
    ctx.store.append(Event(type="intake.wave_processed", ts_ms=ctx.clock.now_ms(), actor="intake", data={"wave_ts_ms": wave, "signals": 3, "candidates": 3, "buffer": ["s-1", "s-2", "s-3"], "limit": 2}))
    sup = Supervisor.start(ctx=ctx, children=[intake])
    try:
        types = lambda *t: ctx.io.run(ctx.store.query(types=t), 5)  # noqa: E731
        eventually(lambda: (ctx.clock.advance(50), len(types("intake.position_opened")) == 2)[1], timeout=30, what="the rebuilt buffer filled to the limit")
        assert sorted(e.data["signal_id"] for e in types("intake.signal_selected")) == ["s-1", "s-2"]
        skipped = eventually(lambda: types("intake.signal_skipped"), what="the third decided")
        assert [e.data["signal_id"] for e in skipped] == ["s-3"] and "wave limit" in skipped[0].data["reason"]
        assert [e.data["wave_ts_ms"] for e in types("intake.wave_processed")] == [wave], "not processed again"
        assert types("intake.wave_resumed") and types("intake.wave_finished")
    finally:
        sup.tell(Shutdown(reason="test end"))
        if not sup.actor_stopped.wait(5):
            ctx.clock.advance(60_000)
            sup.actor_stopped.wait(10)


def test_a_selection_whose_owner_never_started_frees_its_slot_after_a_restart(tmp_path: Path, ctx):
    """The intake went down after recording a selection and before its owner started: nothing was
    sent for it (no write-ahead record of the position exists), so the restarted intake frees the slot."""
    from core.events import Event
    from core.messages import Shutdown
    from supervision.supervisor import Supervisor

    ctx, intake = _intake_world(tmp_path, ctx)
    wave = ctx.clock.now_ms() - ctx.clock.now_ms() % 900_000
    ctx.store.append(Event(type="intake.wave_processed", ts_ms=ctx.clock.now_ms(), actor="intake", data={"wave_ts_ms": wave, "signals": 1, "candidates": 1, "buffer": ["s-1"], "limit": 2}))
    ctx.store.append(Event(type="intake.signal_selected", ts_ms=ctx.clock.now_ms(), actor="intake", position_id="ghost1",
                           data={"signal_id": "s-1", "wave_ts_ms": wave, "symbol": "W001USDT", "side": "long", "position_id": "ghost1", "quote_amount": "100"}))
    sup = Supervisor.start(ctx=ctx, children=[intake])
    try:
        failed = eventually(lambda: ctx.io.run(ctx.store.query(types=("intake.position_failed",)), 5), what="the slot freed")
        assert failed[0].position_id == "ghost1" and "never started" in failed[0].data["reason"]
        ref = eventually(lambda: ctx.directory.lookup("intake"), what="intake")
        assert ref.proxy().in_flight.get() == {} and "W001USDT" not in ref.proxy().held.get()
    finally:
        sup.tell(Shutdown(reason="test end"))
        sup.actor_stopped.wait(10)


def test_a_position_protected_then_closed_while_the_intake_was_down_keeps_its_slot(tmp_path: Path, ctx):
    """Found by the long soak: killed after a stop was sent and before its placement was recorded,
    the position's stop then filled; the restarted intake read "ended as closed" as a failed open,
    freed its slot, and opened a fourth position in a wave limited to three. A position that had a
    stop live (placed, moved, or filled) was one of its wave's positions."""
    from core.events import Event
    from core.messages import Shutdown
    from supervision.supervisor import Supervisor

    ctx, intake = _intake_world(tmp_path, ctx)  # wave limit 2
    wave = ctx.clock.now_ms() - ctx.clock.now_ms() % 900_000
    for i in (1, 2, 3):
        ctx.store.append(_received(ctx, wave, i))
    now = ctx.clock.now_ms()
    ctx.store.append(Event(type="intake.wave_processed", ts_ms=now, actor="intake", data={"wave_ts_ms": wave, "signals": 3, "candidates": 3, "buffer": ["s-1", "s-2", "s-3"], "limit": 2}))
    ctx.store.append(Event(type="intake.signal_selected", ts_ms=now, actor="intake", position_id="p1",
                           data={"signal_id": "s-1", "wave_ts_ms": wave, "symbol": "W001USDT", "side": "long", "position_id": "p1", "quote_amount": "100"}))
    row = {"position_id": "p1", "exchange": "paper", "symbol": "W001USDT", "side": "long", "state": "closed", "is_open": False, "quantity": "0.0025",
           "entry_price": "40000", "close_reason": "stop filled", "exit_price": "39600", "realized_pnl": "-1"}
    owner = "position:W001USDT:p1"
    ctx.store.append(Event(type="position.entry_filled", ts_ms=now, actor=owner, position_id="p1", symbol="W001USDT", exchange="paper", data={"order_id": "1", "qty": "0.0025", "price": "40000"}))
    ctx.store.append(Event(type="position.stop_filled", ts_ms=now, actor=owner, position_id="p1", symbol="W001USDT", exchange="paper",
                           data={"reason": "stop filled", "exit_price": "39600", "pnl": "-1", "order_id": "2"}, projection=row))
    sup = Supervisor.start(ctx=ctx, children=[intake])
    try:
        types = lambda *t: ctx.io.run(ctx.store.query(types=t), 5)  # noqa: E731
        finished = eventually(lambda: (ctx.clock.advance(50), types("intake.wave_finished"))[1], timeout=30, what="the wave filled to its limit")
        assert finished[0].data["confirmed"] == 2
        opened = types("intake.position_opened")
        assert [e.position_id for e in opened][0] == "p1" and "protected, then closed" in opened[0].data["note"]
        assert sorted(e.data["signal_id"] for e in types("intake.signal_selected")) == ["s-1", "s-2"]  # one more, not two
        assert [e.data["signal_id"] for e in types("intake.signal_skipped")] == ["s-3"]
        assert not [e for e in types("intake.position_failed") if e.position_id == "p1"]
    finally:
        sup.tell(Shutdown(reason="test end"))
        if not sup.actor_stopped.wait(5):
            ctx.clock.advance(60_000)
            sup.actor_stopped.wait(10)
