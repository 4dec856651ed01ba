"""The done-when of the operations issue, with real processes: the paper exchange in its own process
is killed and restarted; /health goes 200 -> 503 -> 200, and a local webhook receives one alert and
one resolved message. The same when the event store is locked by another connection past its critical
threshold. Also: a second `paper serve` on the same data folder is refused, naming the pid."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.io_loop import IOLoop
from tests.alert_fakes import FakeReceiver
from tests.conftest import SHARED, eventually
from tests.test_crash_recovery import ENV, SIGNALS, Site, stop_processes, tradebot

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    io = IOLoop("webhook-fake").start()
    r = FakeReceiver(io).start()
    yield r
    r.stop()
    io.stop()


@pytest.fixture
def ops_site(receiver: FakeReceiver) -> Iterator[Site]:
    import shutil
    import tempfile

    path = Site(tempfile.mkdtemp(prefix="tbo-", dir="/tmp"))
    (path / "signals.jsonl").write_text("\n".join(json.dumps(s) for s in SIGNALS) + "\n")
    (path / "config.toml").write_text(
        f'[paper]\nmode = "process"\ndata_dir = "{SHARED / "data"}"\nspeed = 1\n'
        '[demo]\nsignals_file = "signals.jsonl"\n[signals]\nsource = "file"\n'
        "[feeds]\nmark_interval_ms = 200\n[position]\nverify_interval_secs = 2\n"
        "[venue_health]\nunreachable_after_failures = 2\nunreachable_after_secs = 1\n"
        "[http]\nport = 0\n"
        "[store]\ncritical_after_ms = 1000\nbusy_timeout_ms = 100\n[alerts]\ncheck_ms = 100\n"
        f'[[alerts.sinks]]\nkind = "webhook"\nurl = "{receiver.url}/alerts"\nbackoff_ms = 50\n'
    )
    path.procs = []
    yield path
    stop_processes(path.procs)
    shutil.rmtree(path, ignore_errors=True)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def test_paper_exchange_killed_and_restarted_turns_health_503_then_200_with_one_alert_and_one_resolved(ops_site: Site, receiver: FakeReceiver):
    site = ops_site
    sock = site / "var" / "paper.sock"
    exchange = tradebot(site, "paper", "serve", log="paper.log")
    site.procs.append(exchange)
    eventually(lambda: sock.exists(), timeout=20, what="paper exchange socket")
    # A second exchange on the same data folder is refused, naming the first one's pid.
    second = subprocess.run([sys.executable, "-m", "tradebot", "paper", "serve"], cwd=site, env=ENV, capture_output=True, text=True, timeout=60)
    assert second.returncode == 3 and f"pid {exchange.pid}" in second.stderr, second.stderr
    assert sock.exists()

    bot = tradebot(site, "run", log="bot.log")
    site.procs.append(bot)
    port_file = site / "var" / "http.port"
    eventually(lambda: port_file.exists() and port_file.read_text().strip(), timeout=30, what="http port file")
    base = f"http://127.0.0.1:{port_file.read_text().strip()}"
    eventually(lambda: get(f"{base}/health")[0] == 200, timeout=40, what="/health 200")

    assert receiver.received == [], receiver.received  # nothing to tell yet
    exchange.send_signal(signal.SIGKILL)
    exchange.wait(10)
    def unreachable() -> list[str]:
        status, body = get(f"{base}/health")
        problems = json.loads(body)["problems"] if status == 503 else []
        return [p for p in problems if p.startswith("exchange paper unreachable")]

    # 503 at once (the order stream is down first); the venue's own problem once calls fail.
    assert "failed calls in a row" in eventually(unreachable, timeout=40, what="/health 503 naming the exchange unreachable")[0]
    eventually(lambda: receiver.received, timeout=30, what="the alert at the webhook")

    exchange2 = tradebot(site, "paper", "serve", log="paper2.log")
    site.procs.append(exchange2)
    last: list[bytes] = []
    try:
        eventually(lambda: (r := get(f"{base}/health"), last.append(r[1]))[0][0] == 200, timeout=60, what="/health 200 again")
    except AssertionError:
        raise AssertionError(f"/health not 200 again: {last[-1]!r}") from None
    eventually(lambda: any(r["body"]["resolved"] for r in receiver.received), timeout=30, what="the resolved message")
    # Exactly one alert while it was down, exactly one resolved message: nothing else reached the webhook.
    hooks = [(r["body"]["rule"], r["body"]["subject"], r["body"]["resolved"]) for r in receiver.received]
    assert hooks == [("exchange_unreachable", "paper", False), ("exchange_unreachable", "paper", True)], hooks

    # /metrics parses with prometheus_client's own parser, and counts what the store holds.
    status, text = get(f"{base}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text.decode())}
    sent = [s for s in families["tradebot_alerts"].samples if s.name == "tradebot_alerts_total" and s.labels["outcome"] == "sent"]
    events = subprocess.run([sys.executable, "-m", "tradebot", "events", "--type", "alert.sent", "--json", "--limit", "0"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
    assert sum(s.value for s in sent) == len(json.loads(events.stdout)) >= 2
    assert families["tradebot_healthy"].samples[0].value == 1
    # ctl status: exit 0 healthy (4 when not, see README)
    ok = subprocess.run([sys.executable, "-m", "tradebot", "ctl", "status"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def start_bot(site: Site) -> str:
    """The paper exchange (own process) and the bot; the bot's base URL once /health says 200."""
    sock = site / "var" / "paper.sock"
    site.procs.append(tradebot(site, "paper", "serve", log="paper.log"))
    eventually(lambda: sock.exists(), timeout=20, what="paper exchange socket")
    site.procs.append(tradebot(site, "run", log="bot.log"))
    port_file = site / "var" / "http.port"
    eventually(lambda: port_file.exists() and port_file.read_text().strip(), timeout=30, what="http port file")
    base = f"http://127.0.0.1:{port_file.read_text().strip()}"
    eventually(lambda: get(f"{base}/health")[0] == 200, timeout=40, what="/health 200")
    return base


def test_store_locked_past_its_critical_threshold_turns_health_503_naming_it_with_one_alert_then_resolved(ops_site: Site, receiver: FakeReceiver):
    site = ops_site
    base = start_bot(site)
    eventually(lambda: json.loads(get(f"{base}/health")[1]).get("positions") == 3, timeout=40, what="the three demo positions open")
    # Another connection takes SQLite's write lock and keeps it: every commit of the bot's writer
    # fails "database is locked" until it is let go.
    other = sqlite3.connect(site / "var" / "tradebot.db", timeout=5, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        def store_problem() -> list[str]:
            status, body = get(f"{base}/health")
            return [p for p in json.loads(body)["problems"] if p.startswith("event store failing")] if status == 503 else []

        assert "database is locked" in eventually(store_problem, timeout=40, what="/health 503 naming the store")[0]
        eventually(lambda: receiver.received, timeout=30, what="the store alert at the webhook")
        assert [(r["body"]["rule"], r["body"]["resolved"]) for r in receiver.received] == [("store_unavailable", False)], receiver.received
        assert "database is locked" in receiver.received[0]["body"]["details"]["error"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    eventually(lambda: get(f"{base}/health")[0] == 200, timeout=40, what="/health 200 once the lock is let go")
    eventually(lambda: len(receiver.received) == 2, timeout=30, what="the resolved message")
    assert [(r["body"]["rule"], r["body"]["resolved"]) for r in receiver.received] == [("store_unavailable", False), ("store_unavailable", True)]
    # The audit trail: both deliveries are in the log once the store takes writes again.
    def sent() -> list[dict]:
        out = subprocess.run([sys.executable, "-m", "tradebot", "events", "--type", "alert.sent", "--json", "--limit", "0"], cwd=site, env=ENV, capture_output=True, text=True, timeout=30)
        return [e["data"] for e in json.loads(out.stdout) if e["data"]["rule"] == "store_unavailable"]
    eventually(lambda: len(sent()) == 2, timeout=30, what="both alert.sent events committed")
