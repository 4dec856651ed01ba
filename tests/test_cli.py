"""The `tradebot` console commands as a user runs them: real subprocesses, a
real config file, the real event store, logs and control socket.

The package is installed in editable mode, so ``python -m tradebot`` works from
any directory: every command runs with its cwd in a fresh temp dir."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED, eventually
from tradebot.cli import parse_since
from tradebot.control_client import BotNotRunning, send_command

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TRADEBOT = [sys.executable, "-m", "tradebot"]
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(REPO)}  # this checkout's code, not the installed one
#: shutdown_timeout_secs (15, the default) + the runtime's 5 s margin + process start/exit.
SHUTDOWN_BOUND_S = 15 + 5 + 5


def tb(cwd: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run one short `tradebot` command to completion (bounded)."""
    return subprocess.run([*TRADEBOT, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def new_bot_dir() -> Path:
    """A short temp dir holding a copy of the shipped config.toml (data_dir = "var", relative to it)."""
    path = Path(tempfile.mkdtemp(prefix="tbc-", dir="/tmp"))
    shutil.copy(REPO / "config.toml", path / "config.toml")
    shutil.copytree(REPO / "demo", path / "demo")
    text = (path / "config.toml").read_text().replace('data_dir = "../shared/data"', f'data_dir = "{SHARED / "data"}"')
    (path / "config.toml").write_text(text)
    return path


class Bot:
    """A `tradebot run` subprocess with its output in files (no pipe can fill up)."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.out = open(cwd / f"run-{time.monotonic_ns()}.out", "w+")
        self.err = open(cwd / f"run-{time.monotonic_ns()}.err", "w+")
        self.proc = subprocess.Popen([*TRADEBOT, "run", *args], cwd=cwd, env=ENV, stdout=self.out, stderr=self.err, text=True)

    def stderr(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text()

    def wait_ready(self, data_dir: Path, timeout: float = 20) -> None:
        """Wait until the control token exists and the bot answers `status` (bounded)."""
        token = data_dir / "control.token"
        eventually(lambda: token.exists() or self.proc.poll() is not None, timeout, "the bot's control token")
        assert self.proc.poll() is None, f"bot exited early ({self.proc.returncode}): {self.stderr()}"

        def answers() -> bool:
            # The token is written just before the socket starts listening: retry "not running" briefly.
            try:
                return send_command(data_dir / "control.sock", "status", timeout_s=10).ok
            except BotNotRunning:
                return False

        eventually(answers, timeout, "the bot to answer `status`")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.out.close()
        self.err.close()


@pytest.fixture
def bots() -> Iterator[Callable[..., Bot]]:
    """Start `tradebot run` subprocesses; any still running at the end is killed."""
    started: list[Bot] = []

    def start(cwd: Path, *args: str) -> Bot:
        bot = Bot(cwd, *args)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.kill()


@pytest.fixture
def bot_dir() -> Iterator[Path]:
    path = new_bot_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def events_json(cwd: Path, *args: str) -> list[dict[str, Any]]:
    res = tb(cwd, "events", "--json", "--limit", "0", *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# ------------------------------------------------------- 1. a whole run
@pytest.fixture(scope="module")
def finished_run() -> Iterator[dict[str, Any]]:
    """One `tradebot run --duration 3`, queried with `ctl status --json` while it runs."""
    cwd = new_bot_dir()
    bot = Bot(cwd, "--duration", "3")
    try:
        t0 = time.monotonic()
        token = cwd / "var" / "control.token"
        eventually(lambda: token.exists() or bot.proc.poll() is not None, 15, "the bot's control token")
        status = tb(cwd, "ctl", "status", "--json")
        code = bot.wait(20)
        yield {"cwd": cwd, "status": status, "code": code, "elapsed": time.monotonic() - t0, "stderr": bot.stderr()}
    finally:
        bot.kill()
        shutil.rmtree(cwd, ignore_errors=True)


def test_run_with_duration_exits_zero(finished_run: dict[str, Any]):
    """`tradebot run --duration 3` with the shipped config stops by itself with exit code 0 well within 20 s."""
    assert finished_run["code"] == 0, finished_run["stderr"]
    assert 3 <= finished_run["elapsed"] < 20
    assert (finished_run["cwd"] / "var" / "tradebot.db").exists()  # data_dir is relative to the config file
    assert not (finished_run["cwd"] / "var" / "control.sock").exists()
    assert not (finished_run["cwd"] / "var" / "control.token").exists()


def test_ctl_status_json_while_running(finished_run: dict[str, Any]):
    """`tradebot ctl status --json` against the running bot prints a JSON reply with ok true and the bot's status."""
    res = finished_run["status"]
    assert res.returncode == 0, res.stderr
    reply = json.loads(res.stdout)
    assert reply["ok"] is True and reply["error"] is None
    assert reply["result"]["healthy"] is True
    assert reply["result"]["intake"]["open"] is True
    assert isinstance(reply["result"]["pid"], int) and reply["result"]["pid"] != os.getpid()


def test_logs_list_and_show(finished_run: dict[str, Any]):
    """After the run `tradebot logs --list` lists combined, supervisor and system; `logs supervisor` prints its lines."""
    cwd = finished_run["cwd"]
    res = tb(cwd, "logs", "--list")
    assert res.returncode == 0, res.stderr
    listed = {line.split()[0] for line in res.stdout.splitlines() if line.strip()}
    assert {"combined", "supervisor", "system"} <= listed
    res = tb(cwd, "logs", "supervisor")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines and all("| supervisor |" in ln for ln in lines if ln.startswith("20"))
    assert any("shutting down" in ln for ln in lines)
    res = tb(cwd, "logs", "no-such-actor")
    assert res.returncode == 1 and res.stderr.startswith("tradebot logs:")


def test_events_json_records_the_whole_lifecycle(finished_run: dict[str, Any]):
    """`tradebot events --json` prints a JSON array with the start, the control command, the shutdown and the stop, in order."""
    evs = events_json(finished_run["cwd"])
    types = [e["type"] for e in evs]
    wanted = ["runtime.started", "supervisor.started", "control.command", "supervisor.shutdown_started", "runtime.stopped"]
    for t in wanted:
        assert t in types, f"{t} missing from {types}"
    assert [types.index(t) for t in wanted] == sorted(types.index(t) for t in wanted)
    stopped = evs[types.index("runtime.stopped")]
    assert stopped["data"]["exit_code"] == 0 and stopped["data"]["reason"] == "--duration 3 s elapsed"
    assert [e["id"] for e in evs] == sorted(e["id"] for e in evs)


def test_events_type_prefix_filter(finished_run: dict[str, Any]):
    """`tradebot events --type 'control.*'` returns only control events, both in JSON and as text."""
    evs = events_json(finished_run["cwd"], "--type", "control.*")
    assert {e["type"] for e in evs} == {"control.command", "control.reply"}
    res = tb(finished_run["cwd"], "events", "--type", "control.*")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == len(evs) and all(" control." in ln for ln in lines)


@pytest.mark.parametrize("since", ["15m", "2026-01-01T00:00:00", "1"])
def test_events_since_accepts_ages_iso_and_epoch(finished_run: dict[str, Any], since: str):
    """`--since` takes an age, an ISO time or epoch ms; a run that just happened is included in all three."""
    evs = events_json(finished_run["cwd"], "--since", since)
    assert "runtime.started" in {e["type"] for e in evs}


def test_events_since_in_the_future_finds_nothing(finished_run: dict[str, Any]):
    """`--since` really filters: a time after the run matches no event (text mode says so on stderr)."""
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    assert events_json(finished_run["cwd"], "--since", later) == []
    res = tb(finished_run["cwd"], "events", "--since", later)
    assert res.returncode == 0 and "no matching events" in res.stderr


def test_events_bad_since_is_a_usage_error(finished_run: dict[str, Any]):
    """`--since xyz` exits 2 with a one-line message naming --since."""
    res = tb(finished_run["cwd"], "events", "--since", "xyz")
    assert res.returncode == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "--since" in res.stderr and "'xyz'" in res.stderr


# ------------------------------------------------------------- 2. signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_bot_gracefully(bot_dir: Path, bots: Callable[..., Bot], sig: signal.Signals):
    """SIGTERM / SIGINT to `tradebot run` shut it down gracefully: exit 0 within the bound, runtime.stopped recorded."""
    bot = bots(bot_dir)
    bot.wait_ready(bot_dir / "var")
    t0 = time.monotonic()
    bot.proc.send_signal(sig)
    assert bot.wait(SHUTDOWN_BOUND_S) == 0, bot.stderr()
    assert time.monotonic() - t0 < SHUTDOWN_BOUND_S
    (stopped,) = events_json(bot_dir, "--type", "runtime.stopped")
    assert stopped["data"] == {"exit_code": 0, "reason": sig.name}
    (shutdown,) = events_json(bot_dir, "--type", "supervisor.shutdown_started")
    assert shutdown["data"]["reason"] == sig.name
    assert not (bot_dir / "var" / "control.sock").exists()


def test_sigterm_during_startup_is_graceful(bot_dir: Path, bots: Callable[..., Bot]):
    """A SIGTERM that arrives while the bot is starting (its log exists, the tree is being built) still stops it cleanly with exit 0."""
    bot = bots(bot_dir)
    log = bot_dir / "var" / "logs" / "combined.log"
    eventually(lambda: log.exists() or bot.proc.poll() is not None, 20, "the bot to start logging")
    bot.proc.send_signal(signal.SIGTERM)
    assert bot.wait(SHUTDOWN_BOUND_S) == 0, bot.stderr()
    (stopped,) = events_json(bot_dir, "--type", "runtime.stopped")
    assert stopped["data"]["exit_code"] == 0


# --------------------------------------------------------- 3. config errors
@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[supervisor]\nmax_restarts = -1\n", "config.toml: supervisor.max_restarts: expected an integer >= 1, got -1"),
        ("[supervisor]\nmax_restartz = 5\n", "config.toml: supervisor.max_restartz: unknown key (did you mean `supervisor.max_restarts`?)"),
        ('[supervisor]\nmax_restarts = "five"\n', 'config.toml: supervisor.max_restarts: expected an integer, got "five"'),
        ("[supervisor]\nmax_restarts = 1.5\n", "config.toml: supervisor.max_restarts: expected an integer, got 1.5"),
        ('[logging]\nlevel = "LOUD"\n', "config.toml: logging.level: expected one of 'TRACE', 'DEBUG', 'INFO', 'SUCCESS', 'WARNING', 'ERROR', 'CRITICAL', got \"LOUD\""),
        ('[runtime]\napi_key = "abc"\n', "config.toml: runtime.api_key: unknown key (secrets are read from environment variables only, never from this file)"),
        ("[supervisor\nmax_restarts = 5\n", "config.toml: not valid TOML: Expected ']' at the end of a table declaration (at line 1, column 12)"),
    ],
    ids=["out-of-range", "unknown-key", "wrong-type", "float-for-int", "bad-enum", "secret-key", "invalid-toml"],
)
def test_run_with_bad_config_exits_2_with_one_line(bot_dir: Path, toml: str, message: str):
    """A bad config value stops `tradebot run` before anything starts: exit 2, exactly one stderr line naming the key."""
    (bot_dir / "config.toml").write_text(toml)
    res = tb(bot_dir, "run", "--duration", "1")
    assert res.returncode == 2
    assert res.stderr == message + "\n"
    assert res.stdout == ""
    assert not (bot_dir / "var").exists(), "something was started with a bad config"


@pytest.mark.parametrize("command", [["run"], ["ctl", "status"], ["events"], ["logs", "--list"]])
def test_missing_config_path_is_a_one_line_error(bot_dir: Path, command: list[str]):
    """Every subcommand given a --config path that does not exist fails with one line naming the file, exit 2."""
    res = tb(bot_dir, *command, "--config", "nope.toml")
    assert res.returncode == 2
    assert res.stderr == "nope.toml: file not found: nope.toml\n"
    assert not (bot_dir / "var").exists()


# ------------------------------------------------------------------ 4. ctl
def test_ctl_without_a_running_bot_exits_3(bot_dir: Path):
    """`tradebot ctl status` with no bot running exits 3 and says no bot is running."""
    res = tb(bot_dir, "ctl", "status")
    assert res.returncode == 3
    assert res.stderr.startswith("tradebot ctl: no running bot")
    assert res.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["close"], "tradebot ctl close: expected SYMBOL, got 0 argument(s)"),
        (["status", "extra"], "tradebot ctl status: expected no arguments, got 1 argument(s)"),
        (["frobnicate"], "tradebot ctl: unknown command 'frobnicate'; known: status, positions, close, close-all, pause, resume, reload, shutdown, sync, zombies, aged"),
    ],
)
def test_ctl_usage_errors_exit_2(bot_dir: Path, args: list[str], message: str):
    """Usage errors of `tradebot ctl` are caught locally (no bot needed): exit 2 and a one-line message."""
    res = tb(bot_dir, "ctl", *args)
    assert res.returncode == 2
    assert res.stderr == message + "\n"


def test_ctl_error_reply_exits_1(bot_dir: Path, bots: Callable[..., Bot]):
    """A command the bot answers with an error (`close BTCUSDT` with nothing open) exits 1 and prints the error."""
    bot = bots(bot_dir)
    bot.wait_ready(bot_dir / "var")
    res = tb(bot_dir, "ctl", "close", "BTCUSDT")
    assert res.returncode == 1
    assert res.stderr == "error: no open position for BTCUSDT\n"
    res = tb(bot_dir, "ctl", "positions")
    assert res.returncode == 0 and res.stdout == "no open positions\n"
    bot.proc.send_signal(signal.SIGTERM)
    assert bot.wait(SHUTDOWN_BOUND_S) == 0


# --------------------------------------------------------------- 5. events
def test_events_without_a_store_exits_1(bot_dir: Path):
    """`tradebot events` before any run exits 1 saying there is no event store, and creates none."""
    res = tb(bot_dir, "events")
    assert res.returncode == 1
    assert res.stderr.startswith("tradebot events: no event store at ") and "has the bot run yet?" in res.stderr
    assert not (bot_dir / "var" / "tradebot.db").exists()


@pytest.mark.parametrize("since", ["xyz", "15 m", "-5m", "2026-13-01T00:00:00"])
def test_events_bad_since_exits_2_without_store(bot_dir: Path, since: str):
    """A bad --since is reported (exit 2, naming --since) before the store is even looked at."""
    res = tb(bot_dir, "events", f"--since={since}")
    assert res.returncode == 2
    assert res.stderr.startswith("tradebot events: --since: "), res.stderr


NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - 30_000),
        ("15m", NOW - 15 * 60_000),
        ("2h", NOW - 2 * 3_600_000),
        ("1d", NOW - 86_400_000),
        ("1.5h", NOW - 5_400_000),
        (" 15m ", NOW - 15 * 60_000),
        ("0s", NOW),
        ("1700000000000", 1_700_000_000_000),
        ("2026-01-01T00:00:00", NOW),
        ("2026-01-01", NOW),
        ("2026-01-01T00:00:00Z", NOW),
        ("2026-01-01T02:00:00+02:00", NOW),
        ("2025-12-31T23:59:59.500", NOW - 500),
    ],
)
def test_parse_since_valid(text: str, expected: int):
    """parse_since turns ages, epoch ms and ISO times (naive = UTC) into epoch ms."""
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["xyz", "", "15M", "15 m", "-15m", "1w", "2026-02-30", "15m ago"])
def test_parse_since_invalid(text: str):
    """Anything else is a ValueError whose message names --since and quotes the input."""
    with pytest.raises(ValueError, match=r"^--since: .*got "):
        parse_since(text, NOW)


def test_parse_since_unicode_digit_is_a_since_error():
    """'²' passes str.isdigit() but is no number: it must still be a --since error, not a bare int() error."""
    with pytest.raises(ValueError, match=r"^--since: "):
        parse_since("²", NOW)


# ----------------------------------------------------- 6. one bot per store
def test_second_bot_on_same_data_dir_is_refused(bot_dir: Path, bots: Callable[..., Bot]):
    """A second `tradebot run` on a data dir in use exits non-zero naming the first bot's pid; the first keeps running."""
    first = bots(bot_dir)
    first.wait_ready(bot_dir / "var")
    res = tb(bot_dir, "run", "--duration", "5")
    assert res.returncode == 2, res.stderr
    assert f"is in use by another tradebot (pid {first.proc.pid})" in res.stderr
    assert first.proc.poll() is None
    status = tb(bot_dir, "ctl", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["result"]["pid"] == first.proc.pid
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(SHUTDOWN_BOUND_S) == 0
    assert len(events_json(bot_dir, "--type", "runtime.started")) == 1  # the refused bot recorded nothing


def test_refused_bot_does_not_remove_the_running_bots_socket(bot_dir: Path, bots: Callable[..., Bot]):
    """A second bot with its own store but the same control socket is refused and leaves the first bot reachable."""
    (bot_dir / "a.toml").write_text('[store]\npath = "a.db"\n')
    (bot_dir / "b.toml").write_text('[store]\npath = "b.db"\n')
    first = bots(bot_dir, "--config", "a.toml")
    first.wait_ready(bot_dir / "var")
    res = tb(bot_dir, "run", "--config", "b.toml", "--duration", "5")
    assert res.returncode == 2
    assert "another tradebot is answering on" in res.stderr
    assert first.proc.poll() is None
    status = tb(bot_dir, "ctl", "status", "--config", "a.toml")
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait(SHUTDOWN_BOUND_S) == 0
    assert status.returncode == 0, status.stderr


def test_real_venue_without_keys_refuses_to_start_naming_the_variable(bot_dir: Path):
    """exchange.name = bybit goes down the real ccxt path; with no keys it stops before any request."""
    (bot_dir / "config.toml").write_text('[exchange]\nname = "bybit"\napi_key_env = "TB_TEST_NO_SUCH_KEY"\n')
    env = {k: v for k, v in ENV.items() if not k.startswith("TB_TEST_")}
    res = subprocess.run([*TRADEBOT, "run", "--duration", "1"], cwd=bot_dir, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "TB_TEST_NO_SUCH_KEY" in res.stderr
