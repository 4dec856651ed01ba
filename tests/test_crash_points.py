"""SIGKILL at every step of the atomic open, then restart: nothing unprotected, nothing doubled.

The bot kills itself (SIGKILL, no clean-up of any kind) at an exact step via
TRADEBOT_CRASH_POINT while the paper exchange runs on in its own process.
"""

from __future__ import annotations

import json

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import SHARED, eventually
from tests.test_crash_recovery import ENV, ctl_json, paper_call, stop_processes, tradebot

pytestmark = pytest.mark.slow

POINTS = [
    # (crash point, positions expected after the restart)
    ("after:position.entry_sent", 0),  # recorded, never sent: found missing, the attempt ends
    ("before:position.entry_filled", 1),  # filled on the exchange, not recorded: found by client id
    ("after:position.entry_filled", 1),  # open, no stop yet: protected on restart
    ("after:position.stop_sent", 1),  # stop recorded, never sent: placed on restart, once
    ("before:position.stop_placed", 1),  # stop live, not recorded: found by client id, not doubled
]


@pytest.mark.parametrize(("point", "expected"), POINTS, ids=[p for p, _ in POINTS])
def test_sigkill_at_each_step_of_the_atomic_open(point: str, expected: int):
    site = Path(tempfile.mkdtemp(prefix="tbp-", dir="/tmp"))
    (site / "signals.jsonl").write_text(json.dumps({"id": "c-btc", "wave": "w1", "symbol": "BTCUSDT", "side": "long", "after_secs": 0.1}) + "\n")
    (site / "config.toml").write_text(
        f'[paper]\nmode = "process"\ndata_dir = "{SHARED / "data"}"\nspeed = 1\n[demo]\nsignals_file = "signals.jsonl"\n[signals]\nsource = "file"\n'
        "[position]\nretry_delay_ms = 20\nentry_lookups = 3\n[feeds]\nmark_interval_ms = 200\n"
    )
    procs: list[subprocess.Popen] = []
    sock = site / "var" / "paper.sock"
    try:
        procs.append(tradebot(site, "paper", "serve", log="paper.log"))
        eventually(lambda: sock.exists(), timeout=20, what="paper exchange")
        bot = tradebot(site, "run", env={**ENV, "TRADEBOT_CRASH_POINT": point}, log="bot1.log")
        procs.append(bot)
        assert bot.wait(30) == -signal.SIGKILL, (site / "bot1.log").read_text()[-2000:]

        bot2 = tradebot(site, "run", log="bot2.log")
        procs.append(bot2)

        def settled() -> bool:
            positions = paper_call(sock, "fetch_positions")
            reply = ctl_json(site, "positions")
            ours = reply.get("result") if reply.get("ok") else None
            if ours is None:
                return False
            if expected == 0:
                return positions == [] and ours == []
            return len(positions) == 1 and len(ours) == 1 and ours[0]["state"] == "protected"

        eventually(settled, timeout=40, what=f"settled after the kill at {point}")
        orders = paper_call(sock, "fetch_open_orders")
        stops = [o for o in orders if o["reduceOnly"]]
        assert len(stops) == expected, f"expected {expected} stop(s), found {len(stops)}: no duplicates"
        trades = paper_call(sock, "fetch_my_trades")
        entries = {t["order"] for t in trades if t["side"] == "buy"}
        assert len(entries) <= 1, "never a second entry"
        metrics = paper_call(sock, "metrics")
        assert metrics["unprotected_now"] == 0
        if expected:
            assert metrics["max_unprotected_stretch_ms"] < 20_000  # bounded by the restart, then protected
        bot2.send_signal(signal.SIGTERM)
        assert bot2.wait(30) == 0
    finally:
        stop_processes(procs)
        shutil.rmtree(site, ignore_errors=True)

