"""The control mailbox end to end: a real Runtime (supervisor actor, I/O loop,
SQLite event store) served on the real Unix socket, driven by the real client."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import make_config
from supervision.actor import ManagedActor
from supervision.runtime import EXIT_OK, EXIT_SHUTDOWN_INCOMPLETE, Runtime
from supervision.supervisor import ChildSpec
from core.config import Config, load_config
from tradebot.control_client import BotNotRunning, send_command, send_raw
from core.control_protocol import COMMANDS, MAX_REQUEST_BYTES, PROTOCOL_VERSION, ControlRequest, encode
from core.events import Event


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def token_of(rt: Runtime) -> str:
    return rt.config.control_socket.with_suffix(".token").read_text().strip()


def events(rt: Runtime, **filters: Any) -> list[Event]:
    assert rt.store is not None
    return rt.io.run(rt.store.query(**filters), 5)


def raw_request(rt: Runtime, **overrides: Any) -> bytes:
    fields: dict[str, Any] = dict(
        v=PROTOCOL_VERSION, id="req-raw-1", token=token_of(rt), command="status", args={}, sent_at_ms=now_ms(), ttl_ms=10_000
    )
    fields.update(overrides)
    return encode(ControlRequest(**fields)) + b"\n"


@pytest.fixture
def start_runtime() -> Iterator[Callable[..., Runtime]]:
    """Start real runtimes; every one is stopped at the end, in reverse order."""
    started: list[Runtime] = []

    def start(config: Config, **kw: Any) -> Runtime:
        rt = Runtime(config, console=False, **kw)
        started.append(rt)
        return rt.start()

    yield start
    for rt in reversed(started):
        rt.stop()


@pytest.fixture
def rt(short_tmp: Path, start_runtime: Callable[..., Runtime]) -> Runtime:
    return start_runtime(make_config(short_tmp))


def ctl(rt: Runtime, command: str, args: dict[str, Any] | None = None, **kw: Any):
    return send_command(rt.config.control_socket, command, args, timeout_s=10, **kw)


def intake(rt: Runtime) -> dict[str, Any]:
    reply = ctl(rt, "status")
    assert reply.ok, reply.error
    return reply.result["intake"]


# --------------------------------------------------------------- 1. valid
def test_status_reports_health_pid_intake_and_children(rt: Runtime):
    """`status` is answered by the supervisor with its health, our pid, open intake and the children list."""
    reply = ctl(rt, "status")
    assert reply.ok is True and reply.error is None
    r = reply.result
    assert r["healthy"] is True and r["problems"] == []
    assert r["pid"] == os.getpid()
    assert r["intake"] == {"open": True, "paused_by_user": False, "blocked": {}}
    assert r["children"] == []
    assert r["store"]["ok"] is True
    assert r["shutting_down"] is None
    assert len(reply.id) == 16


def test_positions_round_trips_through_io_and_returns_empty_list(rt: Runtime):
    """`positions` (answered after an async store read on the I/O loop) returns [] when nothing is open."""
    reply = ctl(rt, "positions")
    assert reply.ok is True, reply.error
    assert reply.result == []
    # The answer really went through the supervisor, correlated to this request.
    replies = events(rt, types=("control.reply",), correlation_id=reply.id)
    assert [e.data["command"] for e in replies] == ["positions"]


# --------------------------------------------------------- 2. unknown command
def test_unknown_command_is_refused_with_the_known_list_and_changes_nothing(rt: Runtime):
    """An unknown command gets an error naming it and listing every known command; it never reaches the supervisor."""
    reply = ctl(rt, "frobnicate")
    assert reply.ok is False
    assert "'frobnicate'" in reply.error
    for name in COMMANDS:
        assert name in reply.error
    assert intake(rt)["open"] is True
    assert events(rt, types=("control.command",), correlation_id=reply.id) == []
    assert [e.data["command"] for e in events(rt, types=("control.rejected",), correlation_id=reply.id)] == ["frobnicate"]


# -------------------------------------------------------------- 3. malformed
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"this is not json\n", id="not-json"),
        pytest.param(b"[1, 2, 3]\n", id="json-not-an-object"),
        pytest.param(b'{"v": 1, "command": "status"}\n', id="missing-fields"),
        pytest.param(b'{"v": "1", "id": "x", "token": "t", "command": "status", "args": {}, "sent_at_ms": 1, "ttl_ms": 1}\n', id="v-is-a-string"),
        pytest.param(b'{"v": 1, "id": "x", "token": "t", "command": "status", "args": [], "sent_at_ms": 1, "ttl_ms": 1}\n', id="args-is-a-list"),
        pytest.param(b'{"v": 1, "id": "x", "token": "t", "command": 5, "args": {}, "sent_at_ms": 1, "ttl_ms": 1}\n', id="command-is-a-number"),
        pytest.param(b'{"v": 1, "id": "x", "token": "t", "command": "status", "args": {}, "sent_at_ms": 1, "ttl_ms": 1, "extra": 1}\n', id="unknown-field"),
        pytest.param(b"x" * (MAX_REQUEST_BYTES + 5000) + b"\n", id="over-64KiB"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\n", id="empty-line"),
    ],
)
def test_malformed_request_is_refused_and_server_keeps_serving(rt: Runtime, payload: bytes):
    """Each kind of malformed request is answered `malformed ...` (recorded as control.rejected) and the server still serves."""
    reply = send_raw(rt.config.control_socket, payload, timeout_s=10)
    assert reply.ok is False
    assert reply.error.startswith("malformed"), reply.error
    rejected = events(rt, types=("control.rejected",))
    assert [e.data["error"] for e in rejected] == [reply.error]
    assert events(rt, types=("control.command",)) == []
    assert ctl(rt, "status").ok is True


def test_very_large_request_still_gets_a_malformed_reply(rt: Runtime):
    """A 1 MiB request (bigger than the kernel socket buffer) is answered 'malformed ...', like a 70 KiB one."""
    try:
        reply = send_raw(rt.config.control_socket, b"x" * (1024 * 1024) + b"\n", timeout_s=10)
    finally:
        assert ctl(rt, "status").ok is True  # the server survives either way
    assert reply.ok is False and reply.error.startswith("malformed")


def test_unsupported_protocol_version_is_refused(rt: Runtime):
    """A request in another protocol version is refused with both versions named, and not executed."""
    reply = send_raw(rt.config.control_socket, raw_request(rt, v=99, command="pause"), timeout_s=10)
    assert reply.ok is False
    assert "unsupported protocol version 99" in reply.error and str(PROTOCOL_VERSION) in reply.error
    assert intake(rt)["open"] is True


# ---------------------------------------------------------- 4. bad arguments
@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ("close", {}, "close: missing symbol"),
        ("close", {"symbol": "btc usdt!"}, "close: symbol: expected a market symbol such as BTCUSDT or BTC/USDT:USDT, got 'btc usdt!'"),
        ("close", {"symbol": 42}, "close: symbol: expected"),
        ("status", {"verbose": True}, "status: unexpected argument(s) verbose"),
        ("close", {"symbol": "BTCUSDT", "qty": 1}, "close: unexpected argument(s) qty"),
    ],
)
def test_bad_arguments_get_a_clear_error(rt: Runtime, command: str, args: dict[str, Any], expected: str):
    """Missing, invalid and unexpected arguments are refused at the socket with an error naming command and argument."""
    reply = ctl(rt, command, args)
    assert reply.ok is False
    assert reply.error.startswith(expected), reply.error
    assert events(rt, types=("control.command",)) == []


def test_close_symbol_is_normalised_before_execution(rt: Runtime):
    """`close` with a lower-case, padded symbol is normalised (upper-case) and reaches the supervisor."""
    reply = ctl(rt, "close", {"symbol": " btcusdt "})
    assert reply.ok is False and reply.error == "no open position for BTCUSDT"
    (cmd,) = events(rt, types=("control.command",), correlation_id=reply.id)
    assert cmd.data["args"] == {"symbol": "BTCUSDT"}


# ----------------------------------------------------------------- 5. expired
def test_expired_command_is_refused_and_not_executed(rt: Runtime):
    """A `pause` sent 60 s ago with a 10 s TTL is refused as expired and the intake stays open."""
    reply = ctl(rt, "pause", sent_at_ms=now_ms() - 60_000, ttl_ms=10_000)
    assert reply.ok is False
    assert reply.error.startswith("expired"), reply.error
    assert "not executed" in reply.error
    assert intake(rt) == {"open": True, "paused_by_user": False, "blocked": {}}
    assert events(rt, types=("intake.paused",)) == []


def test_ttl_is_capped_by_the_configured_command_ttl(rt: Runtime):
    """A client cannot extend validity beyond `control.command_ttl_secs` (30 s) by asking for a longer TTL."""
    reply = ctl(rt, "pause", sent_at_ms=now_ms() - 40_000, ttl_ms=3_600_000)
    assert reply.ok is False and reply.error.startswith("expired"), reply.error
    assert "valid for 30000 ms" in reply.error
    assert intake(rt)["open"] is True


# ------------------------------------------------------------ 6. unauthorised
def test_wrong_token_is_unauthorised_and_not_executed(rt: Runtime):
    """A `pause` with a wrong token is refused as unauthorised and the intake stays open."""
    reply = ctl(rt, "pause", token="0" * 64)
    assert reply.ok is False
    assert reply.error.startswith("unauthorised"), reply.error
    assert intake(rt)["open"] is True
    assert events(rt, types=("control.command",), correlation_id=reply.id) == []


# ---------------------------------------------------------------- 7. recorded
def test_valid_command_and_reply_are_recorded_with_the_request_id(rt: Runtime):
    """A valid command leaves control.command and control.reply events whose correlation_id is the request id."""
    reply = ctl(rt, "status")
    assert reply.ok
    recorded = events(rt, correlation_id=reply.id)
    assert [e.type for e in recorded] == ["control.command", "control.reply"]
    command, answer = recorded
    assert command.actor == "supervisor" and command.data == {"command": "status", "args": {}}
    assert answer.data["ok"] is True and answer.data["command"] == "status"
    assert answer.data["result"]["pid"] == os.getpid()


def test_rejected_request_is_recorded_with_its_error(rt: Runtime):
    """A rejected request (bad token) leaves a control.rejected event with the error, command and request id."""
    reply = ctl(rt, "pause", token="nope")
    assert not reply.ok
    (rejected,) = events(rt, types=("control.rejected",))
    assert rejected.correlation_id == reply.id
    assert rejected.actor == "control"
    assert rejected.data["error"] == reply.error
    assert rejected.data["command"] == "pause"
    assert "nope" not in str(rejected.data)  # the token is not recorded


# ----------------------------------------------------------- 8. pause/resume
def test_pause_persists_across_restart_and_resume_reopens(short_tmp: Path, start_runtime: Callable[..., Runtime]):
    """`pause` closes intake (recorded as intake.paused); a new runtime on the same data dir comes back paused; `resume` reopens."""
    first = start_runtime(make_config(short_tmp))
    reply = ctl(first, "pause")
    assert reply.ok and reply.result["paused"] is True and reply.result["changed"] is True
    assert intake(first) == {"open": False, "paused_by_user": True, "blocked": {}}
    assert [e.data for e in events(first, types=("intake.paused",))] == [{"by": "control"}]
    again = ctl(first, "pause")
    assert again.ok and again.result["changed"] is False
    assert first.stop() == EXIT_OK

    second = start_runtime(make_config(short_tmp))
    assert intake(second) == {"open": False, "paused_by_user": True, "blocked": {}}
    (started,) = events(second, types=("supervisor.started",), newest_first=True, limit=1)
    assert started.data["intake_paused"] is True
    reply = ctl(second, "resume")
    assert reply.ok and reply.result["paused"] is False and reply.result["changed"] is True
    assert intake(second) == {"open": True, "paused_by_user": False, "blocked": {}}
    assert len(events(second, types=("intake.resumed",))) == 1


# ----------------------------------------------------------------- 9. reload
def test_reload_applies_live_keys_and_refuses_invalid_config(short_tmp: Path, start_runtime: Callable[..., Runtime]):
    """`reload` applies live-safe keys, lists those needing a restart, and an invalid file changes nothing."""
    path = short_tmp / "config.toml"
    path.write_text('[logging]\nlevel = "DEBUG"\n')
    rt = start_runtime(load_config(path), config_path=path)

    path.write_text('[logging]\nlevel = "INFO"\n\n[store]\nbatch_max = 7\n')
    reply = ctl(rt, "reload")
    assert reply.ok, reply.error
    assert reply.result == {"applied": ["logging.level"], "requires_restart": ["store.batch_max"], "unchanged": False}
    (reloaded,) = events(rt, types=("config.reloaded",))
    assert reloaded.data["applied"] == ["logging.level"]
    assert reloaded.data["requires_restart"] == ["store.batch_max"]
    assert reloaded.data["changes"]["logging.level"] == ["DEBUG", "INFO"]

    path.write_text("[supervisor]\nmax_restarts = 0\n")
    bad = ctl(rt, "reload")
    assert bad.ok is False
    assert "supervisor.max_restarts" in bad.error and "nothing changed" in bad.error
    status = ctl(rt, "status")
    assert status.ok and status.result["healthy"] is True
    assert len(events(rt, types=("config.reloaded",))) == 1


def test_reload_without_config_file_is_refused(rt: Runtime):
    """A bot started without a config file answers `reload` with an error saying there is nothing to reload."""
    reply = ctl(rt, "reload")
    assert reply.ok is False and "without a config file" in reply.error


def test_reloaded_command_ttl_is_enforced(short_tmp: Path, start_runtime: Callable[..., Runtime]):
    """After `reload` lowers control.command_ttl_secs 30 -> 5, a command sent 20 s ago is refused as expired."""
    path = short_tmp / "config.toml"
    path.write_text("[control]\ncommand_ttl_secs = 30\n")
    rt = start_runtime(load_config(path), config_path=path)
    assert ctl(rt, "status", sent_at_ms=now_ms() - 20_000, ttl_ms=60_000).ok  # within the 30 s limit
    path.write_text("[control]\ncommand_ttl_secs = 5\n")
    reply = ctl(rt, "reload")
    assert reply.ok and reply.result["applied"] == ["control.command_ttl_secs"]
    late = ctl(rt, "pause", sent_at_ms=now_ms() - 20_000, ttl_ms=60_000)
    assert intake(rt)["open"] is True, "a 20 s old pause ran although the TTL is now 5 s"
    assert late.ok is False and late.error.startswith("expired")


class NeverIdle(ManagedActor):
    """A child whose in-flight work never ends: a drain only ends at the supervisor's deadline."""

    def busy(self) -> bool:
        return True


def never_idle_child(rt: Runtime) -> list[ChildSpec]:
    return [ChildSpec("never-idle", lambda name, ctx: NeverIdle.start(name=name, ctx=ctx))]


def test_drain_deadline_ends_shutdown_cleanly(short_tmp: Path, start_runtime: Callable[..., Runtime]):
    """With shutdown_timeout_secs = 1, a child that never drains is given up at the deadline and stop() still returns 0."""
    path = short_tmp / "config.toml"
    path.write_text("[supervisor]\nshutdown_timeout_secs = 1\n")
    rt = start_runtime(load_config(path), config_path=path, children=never_idle_child)
    assert [c["name"] for c in ctl(rt, "status").result["children"]] == ["never-idle"]
    assert rt.stop() == EXIT_OK
    types = [e.type for e in events_after_stop(rt.config, "supervisor.drain_timeout", "supervisor.stopped", "runtime.stopped")]
    assert types == ["supervisor.drain_timeout", "supervisor.stopped", "runtime.stopped"]


def test_reloaded_shutdown_timeout_is_honoured_by_the_runtime(short_tmp: Path, start_runtime: Callable[..., Runtime]):
    """After `reload` raises shutdown_timeout_secs 1 -> 8, stop() waits for the supervisor's drain deadline and returns 0 (takes ~6-8 s)."""
    path = short_tmp / "config.toml"
    path.write_text("[supervisor]\nshutdown_timeout_secs = 1\n")
    rt = start_runtime(load_config(path), config_path=path, children=never_idle_child)
    path.write_text("[supervisor]\nshutdown_timeout_secs = 8\n")
    reply = ctl(rt, "reload")
    assert reply.ok and reply.result["applied"] == ["supervisor.shutdown_timeout_secs"]
    code = rt.stop()
    assert code != EXIT_SHUTDOWN_INCOMPLETE, "the runtime gave up before the supervisor's (reloaded) drain deadline"
    assert code == EXIT_OK


# ------------------------------------------------------------------ 10. close
def test_close_without_positions_and_close_all(rt: Runtime):
    """`close BTCUSDT` with nothing open is an error naming the symbol; `close-all` succeeds closing nothing."""
    reply = ctl(rt, "close", {"symbol": "BTCUSDT"})
    assert reply.ok is False
    assert reply.error == "no open position for BTCUSDT"
    reply = ctl(rt, "close-all")
    assert reply.ok is True, reply.error
    assert reply.result == {"closing": []}


# --------------------------------------------------------------- 11. shutdown
def test_shutdown_via_control_stops_the_supervisor_cleanly(rt: Runtime):
    """`shutdown` replies ok, the supervisor then stops by itself cleanly, stop() returns 0 and removes socket and token."""
    sock = rt.config.control_socket
    token = sock.with_suffix(".token")
    reply = ctl(rt, "shutdown")
    assert reply.ok is True, reply.error
    assert reply.result["shutting_down"] is True
    assert rt.supervisor.actor_stopped.wait(10), "supervisor did not stop after `shutdown`"
    assert rt.clean_stop.is_set()
    # Between the supervisor stopping and the process exiting, commands are refused, not lost.
    late = ctl(rt, "status")
    assert late.ok is False and "shutting down" in late.error
    assert sock.exists() and token.exists()
    assert rt.stop() == EXIT_OK
    assert not sock.exists() and not token.exists()
    by_type = {e.type: e for e in events_after_stop(rt.config)}
    assert by_type["supervisor.stopped"].data == {"reason": "control command"}
    assert by_type["runtime.stopped"].data["exit_code"] == 0


def events_after_stop(config: Config, *types: str) -> list[Event]:
    """Read shutdown events from the closed store (read-only, like `tradebot events`)."""
    from adapters.event_store import EventStore
    from adapters.io_loop import IOLoop

    io = IOLoop("test-reader").start()
    try:
        store = EventStore(config.store_path, io, readonly=True).open()
        try:
            return io.run(store.query(types=types or ("supervisor.stopped", "runtime.stopped")), 5)
        finally:
            store.close()
    finally:
        io.stop()


# ------------------------------------------------------------ 12. not running
def test_no_bot_raises_bot_not_running(short_tmp: Path):
    """With no bot, send_command raises BotNotRunning (no token file), and so does send_raw (no socket)."""
    sock = short_tmp / "control.sock"
    with pytest.raises(BotNotRunning, match="no running bot"):
        send_command(sock, "status", timeout_s=2)
    with pytest.raises(BotNotRunning, match="no running bot"):
        send_command(sock, "status", token="x", timeout_s=2)


def test_stale_socket_does_not_prevent_start(short_tmp: Path, start_runtime: Callable[..., Runtime]):
    """A socket file left by a killed bot answers nothing (BotNotRunning) and is replaced by a new runtime's server."""
    config = make_config(short_tmp)
    sock_path = config.control_socket
    sock_path.parent.mkdir(parents=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))
    stale.close()
    assert stat.S_ISSOCK(sock_path.stat().st_mode)
    with pytest.raises(BotNotRunning):
        send_command(sock_path, "status", token="x", timeout_s=2)

    rt = start_runtime(config)
    reply = ctl(rt, "status")
    assert reply.ok and reply.result["pid"] == os.getpid()


# ------------------------------------------------------------ 13. permissions
def test_socket_token_and_directory_permissions(rt: Runtime):
    """The socket and token files are 0600 and their directory 0700: only the bot's user can send commands."""
    sock = rt.config.control_socket
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.with_suffix(".token").stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert len(token_of(rt)) == 64
