"""SIGKILL during an aged exit move (the paper exchange in its own process), then restart.

The bot kills itself right before it records that the replaced exit is cancelled: the new exit
is live and recorded, the old one still live. After the restart the same phase resumes with the
same exit order (looked up by client id), the old one is cancelled, and there is never a second
exit for longer than that one replacement step.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED, eventually
from tests.test_crash_recovery import paper_call, stop_processes, tradebot

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
#: This tree's code in the subprocesses (the shared launcher strips PYTHONPATH).
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CONFIG = """
[paper]
mode = "process"
data_dir = "{data}"
speed = 1
[demo]
signals_file = "signals.jsonl"
[signals]
source = "file"
[feeds]
mark_interval_ms = 200
[position]
verify_interval_secs = 2
[trailing]
activation_percent = 20
[aged]
max_age_hours = 0.004
grace_hours = 0.002
loss_step_percent_per_hour = 36
recompute_interval_secs = 2
"""


def ctl(site: Path, *args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "tradebot", "ctl", *args, "--json"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
    return json.loads(res.stdout) if res.stdout.strip() else {"ok": False, "error": res.stderr}


def exits(sock: Path) -> list[dict]:
    return [o for o in paper_call(sock, "fetch_open_orders") if "-x" in (o.get("clientOrderId") or "")]


POINTS = [
    # killed after the old exit's cancel was answered, before it was recorded: the move is finished on restart
    "before:position.aged_exit_cancelled",
    # the exit is live on the exchange, not recorded: found by its client id, never placed twice
    "before:position.aged_exit_placed",
]


def events(site: Path, pid: str) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "tradebot", "events", "--position", pid, "--json"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
    return json.loads(res.stdout)


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_during_an_exit_step_resumes_the_same_exit_and_never_doubles_it(point: str):
    site = Path(tempfile.mkdtemp(prefix="tba-", dir="/tmp"))
    (site / "signals.jsonl").write_text(json.dumps({"id": "a-btc", "wave": "w1", "symbol": "BTCUSDT", "side": "long", "after_secs": 0.1}) + "\n")
    (site / "config.toml").write_text(CONFIG.format(data=SHARED / "data"))
    procs: list[subprocess.Popen] = []
    sock = site / "var" / "paper.sock"
    try:
        procs.append(tradebot(site, "paper", "serve", log="paper.log", env=ENV))
        eventually(lambda: sock.exists(), timeout=20, what="paper exchange")
        bot = tradebot(site, "run", env={**ENV, "TRADEBOT_CRASH_POINT": point}, log="bot1.log")
        procs.append(bot)
        assert bot.wait(90) == -signal.SIGKILL, (site / "bot1.log").read_text()[-3000:]
        assert "unknown key" not in (site / "bot1.log").read_text()  # this tree's code ran, [aged] and all
        at_kill = exits(sock)
        assert len(at_kill) == 1, at_kill

        bot2 = tradebot(site, "run", log="bot2.log", env=ENV)
        procs.append(bot2)
        kinds = subprocess.run([sys.executable, "-m", "tradebot", "events", "--type", "position.aged_exit_sent", "--json"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
        pid = json.loads(kinds.stdout)[0]["position_id"]

        def settled() -> list[dict] | None:
            log = events(site, pid)
            done = any(e["type"] == "position.closed" for e in log)
            placed = [e["data"]["order_id"] for e in log if e["type"] == "position.aged_exit_placed"]
            finished = point != "before:position.aged_exit_cancelled" or any(e["type"] == "position.aged_exit_cancelled" for e in log)
            return log if (done or at_kill[0]["id"] in placed) and finished and len(exits(sock)) <= 1 else None

        log: list[dict[str, Any]] = eventually(settled, timeout=60, what="the exit resumed after the restart")  # type: ignore[assignment]
        placed = [e["data"]["order_id"] for e in log if e["type"] == "position.aged_exit_placed"]
        closed = [e["data"] for e in log if e["type"] == "position.closed"]
        assert at_kill[0]["id"] in placed or (closed and closed[0]["order_id"] == at_kill[0]["id"])  # the same exit, looked up: not doubled
        if closed:
            assert closed[0]["reason"].startswith("aged: ")
        sent = [e["data"]["client_id"] for e in log if e["type"] == "position.aged_exit_sent"]
        assert len(sent) == len(set(sent))
        if point == "before:position.aged_exit_cancelled":
            cancelled = [e for e in log if e["type"] == "position.aged_exit_cancelled"]
            assert cancelled, "the replaced exit is recorded gone after the restart"
        for _ in range(5):  # a few more reviews (moves) later: still one exit at a time
            eventually(lambda: len(exits(sock)) <= 1, timeout=20, what="one exit")
        bot2.send_signal(signal.SIGTERM)
        bot2.wait(30)
    finally:
        stop_processes(procs)
        shutil.rmtree(site, ignore_errors=True)
