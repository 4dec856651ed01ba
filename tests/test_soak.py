"""`tradebot soak --profile short`: the project's own chaos regression run, and its verdict's teeth.

The soak runs for real (its own processes: paper exchange with faults, signal
server, the bot killed and restarted). Then the verdict is recomputed from the
same records with one violation planted in each, to show each row can fail.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from core.events import Event
from tradebot.soak_verdict import compute

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k not in ("TRADEBOT_CRASH_POINT", "TRADEBOT_SOAK_ACTOR_CRASHES")}, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def soak() -> Iterator[tuple[subprocess.CompletedProcess, Path]]:
    site = Path(tempfile.mkdtemp(prefix="tbs-", dir="/tmp"))
    res = subprocess.run([sys.executable, "-m", "tradebot", "soak", "--profile", "short", "--json", "--dir", str(site)], cwd=site, env=ENV, capture_output=True, text=True, timeout=600)
    yield res, site
    shutil.rmtree(site, ignore_errors=True)


def test_the_short_soak_passes_with_every_fault_exercised(soak):
    res, site = soak
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    verdict = json.loads(res.stdout)
    assert verdict["ok"] and all(r["ok"] for r in verdict["rows"])
    f = verdict["figures"]
    assert f["kills"] >= 3 and f["crash_points_hit"], f  # random kills, and the crash points reached
    assert f["actor_crashes"] >= 1 and f["restarts"] >= 1, f
    assert f["positions_opened"] >= 5 and f["stop_moves"] >= 1 and f["waves_processed"] >= 3, f
    assert "soak " in res.stderr  # the progress line


def _inputs(site: Path) -> tuple[dict, list[Event], dict]:
    state = json.loads((site / "var" / "paper-state.json").read_text())
    record = json.loads((site / "soak.json").read_text())
    io = IOLoop("test-soak").start()
    try:
        store = EventStore(site / "var" / "tradebot.db", io, readonly=True).open()
        events = io.run(store.query(), 60)
        store.close()
    finally:
        io.stop()
    return state, events, record


def _verdict(state: dict, events: list[Event], record: dict) -> dict[str, float]:
    v = compute(state, events, downtimes=[tuple(d) for d in record["downtimes"]], wave_limit=record["wave_limit"], budget_ms=record["budget_ms"],
                recovery_budget_ms=record["recovery_budget_ms"], final_open_orders=record["final_open_orders"], final_metrics=record["final_metrics"],
                open_positions=record["open_positions"])
    return {r.name: r.value for r in v.rows if not r.ok}


def test_the_verdict_catches_each_planted_violation(soak):
    res, site = soak
    state, events, record = _inputs(site)
    assert _verdict(state, events, record) == {}, "recomputed from the records: the same clean verdict"

    # an order of ours with no write-ahead record
    s = copy.deepcopy(state)
    s["engine"]["orders"].append({**s["engine"]["orders"][0], "id": "planted", "client_id": "tb-ghost-s1"})
    assert "orders without their write-ahead event" in _verdict(s, events, record)

    # a stop order that loosens its position's stop
    s = copy.deepcopy(state)
    stop = next(o for o in s["engine"]["orders"] if o.get("trigger_price") and o.get("reduce_only"))
    looser = str(float(stop["trigger_price"]) * (0.9 if stop["side"] == "sell" else 1.1))
    s["engine"]["orders"].append({**stop, "id": "planted", "created_ms": stop["created_ms"] + 1, "trigger_price": looser})
    assert "stop loosenings (exchange orders)" in _verdict(s, events, record)

    # a signal received and never decided
    received = next(e for e in events if e.type == "intake.signal_received")
    planted = Event(type="intake.signal_received", ts_ms=received.ts_ms, actor="intake", data={**received.data, "signal_id": "never-decided"})
    assert "signals received but never processed" in _verdict(state, [*events, planted], record)

    # a long unprotected stretch while the bot was running
    s = copy.deepcopy(state)
    ep = next(iter(s["engine"]["metrics"]["episodes"].values()), None) or s["engine"]["metrics"]["closed_episodes"][0]
    ep["max_unprotected_stretch_ms"], ep["max_stretch_started_ms"] = 60_000, 1_000
    assert "longest unprotected stretch, bot running (ms)" in _verdict(s, events, record)

    # a wave over its limit
    opened = [e for e in events if e.type == "intake.position_opened"]
    extra = [Event(type="intake.position_opened", ts_ms=opened[0].ts_ms, actor="intake", data={**opened[0].data, "position_id": f"x{i}"}) for i in range(record["wave_limit"])]
    assert "waves over the limit (store, confirmed)" in _verdict(state, [*events, *extra], record)
