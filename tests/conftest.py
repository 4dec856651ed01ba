"""Shared test fixtures: real parts (SQLite file, I/O loop, actors), injected time."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pykka
import pytest

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from supervision.actor import ActorContext
from core.clock import VirtualClock
from core.config import Config, parse_config

SHARED = Path(__file__).resolve().parents[2] / "shared"


def eventually(predicate: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Wait until ``predicate()`` is truthy (polling, bounded); fail with ``what``.

    The default deadline is generous for a loaded 2-core CI machine: a passing
    condition returns as soon as it holds, only a failing one waits it out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temp dir (Unix socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tb-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_config(base_dir: Path, toml: str = "") -> Config:
    if "[http]" not in toml:  # tests run side by side: any free port, never the shipped 8787
        toml += "\n[http]\nport = 0\n"
    return parse_config(toml, base_dir=base_dir)


@pytest.fixture
def io_loop() -> Iterator[IOLoop]:
    io = IOLoop("test-io").start()
    yield io
    io.stop()


@pytest.fixture
def store(tmp_path: Path, io_loop: IOLoop) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "events.db", io_loop).open()
    yield s
    s.close()


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock(start_ms=1_700_000_000_000)


@pytest.fixture
def ctx(tmp_path: Path, io_loop: IOLoop, store: EventStore, vclock: VirtualClock) -> ActorContext:
    return ActorContext(clock=vclock, io=io_loop, store=store, config=make_config(tmp_path))


@pytest.fixture(autouse=True)
def _no_leaked_actors() -> Iterator[None]:
    """Every test ends with no actor alive and no non-daemon thread left behind."""
    yield
    leaked = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
    assert not leaked, f"test leaked running actors: {leaked}"
    lingering = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    for t in lingering:
        t.join(2)
    lingering = [t.name for t in lingering if t.is_alive()]
    assert not lingering, f"non-daemon threads still running: {lingering}"


from tests.world import engine_knobs, extra_toml, world  # noqa: E402,F401 - shared fixtures
