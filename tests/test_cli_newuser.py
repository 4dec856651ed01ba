"""What a new user hit when trying the CLI: each fixed, each checked as they would run it (real subprocesses,
a real config file and a real event store written by the store itself)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from core.config import ConfigError, load_config, parse_config
from core.events import Event
from tests.test_cli import ENV, TRADEBOT, new_bot_dir, tb


@pytest.fixture(scope="module")
def store_dir() -> Iterator[Path]:
    """A bot directory whose event store holds 3000 events (more than a pipe buffers) of two families (written through the real store)."""
    cwd = new_bot_dir()
    config = load_config(cwd / "config.toml")
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    io = IOLoop("newuser-test").start()
    store = EventStore(config.store_path, io).open()
    try:
        for i in range(3000):
            kind = "position.stop_placed" if i % 2 else "supervisor.started"
            store.append(Event(type=kind, ts_ms=1_700_000_000_000 + i, actor="test", position_id="p1" if i % 2 else None, data={"i": i}))
        store.flush()
    finally:
        store.close()
        io.stop()
    yield cwd
    shutil.rmtree(cwd, ignore_errors=True)


def test_events_piped_into_head_has_no_traceback(store_dir: Path):
    """`tradebot events | head -1`: the reader leaves early; the bot's CLI exits quietly, no BrokenPipeError."""
    cmd = " ".join([*TRADEBOT, "events", "--limit", "0"]) + " | head -1"
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=store_dir, env=ENV, capture_output=True, text=True, timeout=60)
    assert len(res.stdout.splitlines()) == 1
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert res.returncode == 0, res.stderr


def test_events_since_far_beyond_any_time_is_a_usage_error(store_dir: Path):
    res = tb(store_dir, "events", "--since", "99999999999999999999")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("tradebot events: --since: 99999999999999999999 is not an epoch time in ms")


def test_events_unknown_type_lists_the_known_families(store_dir: Path):
    res = tb(store_dir, "events", "--type", "postion.stop_placed")
    assert res.returncode == 1
    assert "no event type matches postion.stop_placed; known families: position.*, supervisor.*" in res.stderr
    ok = tb(store_dir, "events", "--type", "position.*", "--limit", "3")
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 3


def test_ctl_json_errors_are_json(tmp_path: Path):
    """`ctl --json` without a bot: the error is JSON on stdout (a script parses one shape), exit code kept."""
    cwd = new_bot_dir()
    try:
        res = tb(cwd, "ctl", "status", "--json")
        assert res.returncode == 3
        reply = json.loads(res.stdout)
        assert reply["ok"] is False and reply["error"].startswith("no running bot")
        usage = tb(cwd, "ctl", "frobnicate", "--json")
        assert usage.returncode == 2 and json.loads(usage.stdout)["error"].startswith("unknown command 'frobnicate'")
    finally:
        shutil.rmtree(cwd, ignore_errors=True)


def test_unknown_config_key_says_did_you_mean():
    with pytest.raises(ConfigError, match=r"trailing\.activaton_percent: unknown key \(did you mean `trailing\.activation_percent`\?\)"):
        parse_config("[trailing]\nactivaton_percent = 1\n")
    with pytest.raises(ConfigError, match=r"zzz: unknown key \(known keys: runtime, store"):
        parse_config("zzz = 1\n")


def test_missing_paper_data_dir_names_the_key(tmp_path: Path):
    """The shipped default `../shared/data` missing: `tradebot run` says which key to set."""
    (tmp_path / "config.toml").write_text(f'[paper]\ndata_dir = "{tmp_path / "nowhere"}"\n')
    env = {**ENV, "HOME": str(tmp_path)}
    res = subprocess.run([*TRADEBOT, "run", "--duration", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "paper.data_dir" in res.stderr and "Traceback" not in res.stderr, res.stderr
