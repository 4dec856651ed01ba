"""The event store against real SQLite files, a real I/O loop and real processes."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from adapters.event_store import EventStore, StoreLocked
from adapters.io_loop import IOLoop
from adapters.store_schema import LATEST_VERSION
from tests.conftest import eventually
from core.events import Event

PROJECT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000


def ev(type_: str = "test.event", *, ts_ms: int = T0, actor: str = "tester", **kw: Any) -> Event:
    return Event(type=type_, ts_ms=ts_ms, actor=actor, **kw)


def proj(state: str, is_open: bool, **extra: Any) -> dict[str, Any]:
    return {"exchange": "bybit", "symbol": "BTCUSDT", "state": state, "is_open": is_open, **extra}


def query(io: IOLoop, store: EventStore, **filters: Any) -> list[Event]:
    return io.run(store.query(**filters), 10)


def ids(events: list[Event]) -> list[int]:
    return [e.id for e in events]


@pytest.fixture
def open_store(io_loop: IOLoop) -> Iterator[Any]:
    """Open extra stores on demand (read-only or with custom settings); all closed at teardown."""
    opened: list[EventStore] = []

    def _open(path: Path, **kw: Any) -> EventStore:
        s = EventStore(path, io_loop, **kw).open()
        opened.append(s)
        return s

    yield _open
    for s in reversed(opened):
        s.close(timeout=2)


# ------------------------------------------------------------------ ordering
def test_concurrent_appends_get_contiguous_ids_in_per_thread_order(store: EventStore, io_loop: IOLoop):
    """4 threads x 2,000 appends: ids are 1..N with no gaps, and each thread's events keep their order."""
    threads, per_thread = 4, 2000
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait(5)
            for seq in range(per_thread):
                store.append(ev("order.test", data={"t": t, "seq": seq}))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not errors
    assert not any(w.is_alive() for w in workers)
    store.flush()

    events = query(io_loop, store)
    assert ids(events) == list(range(1, threads * per_thread + 1))
    for t in range(threads):
        seqs = [e.data["seq"] for e in events if e.data["t"] == t]
        assert seqs == list(range(per_thread)), f"thread {t} events out of order or missing"


def test_decimals_are_stored_exactly_as_text(store: EventStore, io_loop: IOLoop):
    """Decimals round-trip as their exact text, trailing zeros included, and are TEXT in the row."""
    eid = store.append_durable(ev(data={"price": Decimal("0.00000123"), "qty": Decimal("1.10")})).result(5)
    (got,) = query(io_loop, store)
    assert got.id == eid
    assert got.data == {"price": "0.00000123", "qty": "1.10"}
    with sqlite3.connect(store.path) as raw:
        (data,) = raw.execute("SELECT data FROM events WHERE id = ?", (eid,)).fetchone()
    assert '"0.00000123"' in data and '"1.10"' in data


def test_append_durable_resolves_to_id_after_commit(store: EventStore, io_loop: IOLoop, open_store):
    """The durable future yields the event's id, and by then a separate read-only store sees the row."""
    store.append(ev("first"))
    eid = store.append_durable(ev("second", data={"k": 1})).result(5)
    assert eid == 2
    reader = open_store(store.path, readonly=True)
    (got,) = query(io_loop, reader, after_id=1)
    assert (got.id, got.type, got.data) == (2, "second", {"k": 1})


# ---------------------------------------------------------------- projection
def test_projection_upserts_positions_with_the_event(store: EventStore, io_loop: IOLoop):
    """A projection upserts `positions` by position_id; later events update it; open_only hides closed ones."""
    a1 = store.append_durable(ev("position.opened", position_id="A", projection=proj("open", True, qty="0.5"))).result(5)
    with sqlite3.connect(store.path) as raw:  # committed together with its event
        assert raw.execute("SELECT state, is_open, last_event_id FROM positions WHERE position_id='A'").fetchone() == ("open", 1, a1)
    b1 = store.append_durable(ev("position.opened", position_id="B", projection=proj("open", True))).result(5)
    store.append(ev("signal.tick", position_id="A", data={"no": "projection"}))  # no projection: row untouched
    a2 = store.append_durable(ev("position.closed", position_id="A", projection=proj("closed", False, qty="0"))).result(5)

    open_now = io_loop.run(store.positions(open_only=True), 5)
    assert [p["position_id"] for p in open_now] == ["B"]
    assert open_now[0]["last_event_id"] == b1

    everything = {p["position_id"]: p for p in io_loop.run(store.positions(open_only=False), 5)}
    assert set(everything) == {"A", "B"}
    assert everything["A"] == {**proj("closed", False, qty="0"), "position_id": "A", "last_event_id": a2}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(ev(position_id="P", projection={"exchange": "bybit", "symbol": "BTCUSDT", "state": "open"}), id="missing-is_open"),
        pytest.param(ev(projection=proj("open", True)), id="no-position_id"),
    ],
)
def test_invalid_projection_raises_at_append_and_writes_nothing(store: EventStore, io_loop: IOLoop, bad: Event):
    """A projection missing a required key or a position_id raises ValueError in the caller; nothing is written."""
    with pytest.raises(ValueError):
        store.append(bad)
    with pytest.raises(ValueError):
        store.append_durable(bad)
    assert store.append_durable(ev("after")).result(5) == 1
    assert [e.type for e in query(io_loop, store)] == ["after"]
    assert io_loop.run(store.positions(open_only=False), 5) == []
    assert store.health().ok


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(ev(data={"obj": object()}), id="data"),
        pytest.param(ev(position_id="P", projection=proj("open", True, obj=object())), id="projection"),
    ],
)
def test_unencodable_data_raises_at_append_and_store_keeps_working(store: EventStore, io_loop: IOLoop, bad: Event):
    """Data msgspec cannot encode raises in the caller and never reaches the writer."""
    with pytest.raises(TypeError):
        store.append(bad)
    assert store.append_durable(ev("after")).result(5) == 1
    assert [e.type for e in query(io_loop, store)] == ["after"]
    assert store.health().ok and store.health().backlog == 0


def test_projection_with_null_required_value_is_rejected_at_append(tmp_path: Path, io_loop: IOLoop):
    """A projection whose required value is None cannot be stored, so it must fail in the caller, not in the writer."""
    s = EventStore(tmp_path / "events.db", io_loop, retry_max_ms=50).open()
    try:
        bad = ev("position.opened", position_id="P", projection={"exchange": None, "symbol": "BTCUSDT", "state": "open", "is_open": True})
        with pytest.raises((ValueError, TypeError)):
            s.append(bad)
        assert s.append_durable(ev("after")).result(3) >= 1  # the store must keep working either way
    finally:
        s.close(timeout=1)


# -------------------------------------------------------------------- schema
def test_schema_is_created_once_and_ids_continue_after_reopen(tmp_path: Path, io_loop: IOLoop):
    """A new file is at LATEST_VERSION; reopening applies no migration again and continues ids from max(id)+1."""
    path = tmp_path / "events.db"
    s = EventStore(path, io_loop).open()
    assert s.schema_version() == LATEST_VERSION
    for i in range(5):
        s.append(ev(data={"i": i}))
    s.close()

    with sqlite3.connect(path) as raw:
        migrations = raw.execute("SELECT version, description, applied_ts_ms FROM schema_migrations ORDER BY version").fetchall()
        assert [m[0] for m in migrations] == list(range(1, LATEST_VERSION + 1))
        # a gap in ids (e.g. after retention) must not make the next id collide or go backwards
        raw.execute("INSERT INTO events (id, ts_ms, type, actor, severity, data) VALUES (41, ?, 'manual', 'x', 20, '{}')", (T0,))

    s = EventStore(path, io_loop).open()
    try:
        assert s.schema_version() == LATEST_VERSION
        assert s.append_durable(ev("next")).result(5) == 42
    finally:
        s.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version, description, applied_ts_ms FROM schema_migrations ORDER BY version").fetchall() == migrations


# --------------------------------------------------------- crash and locking
_CHILD_WRITER = """
import sys
from pathlib import Path
from adapters.io_loop import IOLoop
from adapters.event_store import EventStore
from core.events import Event
io = IOLoop("child-io").start()
store = EventStore(Path(sys.argv[1]), io).open()
n = 0
while True:
    n += 1
    eid = store.append_durable(Event(type="crash.test", ts_ms=1_700_000_000_000 + n, actor="child", data={"n": n, "pad": "x" * 200})).result(10)
    print(eid, flush=True)
"""

_CHILD_HOLDER = """
import sys
from pathlib import Path
from adapters.io_loop import IOLoop
from adapters.event_store import EventStore
io = IOLoop("child-io").start()
store = EventStore(Path(sys.argv[1]), io).open()
print("ready", flush=True)
sys.stdin.readline()
store.close()
"""


def _spawn(script: str, db: Path, log: Path) -> tuple[subprocess.Popen[str], "queue.Queue[str | None]"]:
    """Start a child Python on ``script``; its stdout lines arrive on the returned queue (None at EOF)."""
    err = open(log, "w")  # noqa: SIM115 - child's stderr for debugging; closed with the test's tmp dir
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(db)], cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
    )
    err.close()
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, name="child-stdout", daemon=True).start()
    return proc, lines


def _next_line(lines: "queue.Queue[str | None]", log: Path, timeout: float = 20) -> str:
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"child said nothing for {timeout} s; stderr:\n{log.read_text()}") from None
    assert line is not None, f"child exited early; stderr:\n{log.read_text()}"
    return line


@pytest.mark.slow
def test_reopen_after_sigkill_keeps_every_acknowledged_event(tmp_path: Path, io_loop: IOLoop):
    """SIGKILL a writer mid-stream: every acknowledged id survives, ids are contiguous from 1, data intact."""
    db, log = tmp_path / "events.db", tmp_path / "child.err"
    proc, lines = _spawn(_CHILD_WRITER, db, log)
    acked: list[int] = []
    try:
        while len(acked) < 200:
            acked.append(int(_next_line(lines, log)))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert acked == list(range(1, len(acked) + 1))

    s = EventStore(db, io_loop).open()  # the OS released the dead child's flock
    try:
        events = query(io_loop, s)
        got = ids(events)
        assert got == list(range(1, len(got) + 1)), "gap or disorder in ids after crash"
        assert set(acked) <= set(got)
        for e in events:
            assert (e.type, e.actor, e.ts_ms, e.data) == ("crash.test", "child", T0 + e.id, {"n": e.id, "pad": "x" * 200})
        assert s.append_durable(ev("after.crash")).result(5) == len(got) + 1
    finally:
        s.close()


@pytest.mark.slow
def test_open_while_another_process_holds_the_lock_names_its_pid(tmp_path: Path, io_loop: IOLoop):
    """While another process owns the DB, open() raises StoreLocked naming that pid; once it exits, open() works."""
    db, log = tmp_path / "events.db", tmp_path / "child.err"
    proc, lines = _spawn(_CHILD_HOLDER, db, log)
    try:
        assert _next_line(lines, log) == "ready"
        with pytest.raises(StoreLocked, match=rf"\(pid {proc.pid}\)"):
            EventStore(db, io_loop).open()
    finally:
        proc.kill()
        proc.wait(10)
    EventStore(db, io_loop).open().close()


def test_second_writer_in_same_process_is_refused(store: EventStore, io_loop: IOLoop):
    """A second writable EventStore on the same path in this process raises StoreLocked; the first keeps working."""
    with pytest.raises(StoreLocked, match=rf"\(pid {os.getpid()}\)"):
        EventStore(store.path, io_loop).open()
    assert store.append_durable(ev()).result(5) == 1


# ------------------------------------------------------------ write failures
def test_locked_database_is_retried_never_dropped_and_shows_in_health(tmp_path: Path, open_store, io_loop: IOLoop):
    """While another connection holds the write lock, writes retry, health goes critical; afterwards all land in order."""
    s = open_store(tmp_path / "events.db", busy_timeout_ms=50, critical_after_ms=200, retry_max_ms=200)
    blocker = sqlite3.connect(s.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        for i in range(50):
            s.append(ev(data={"i": i}))
        eventually(lambda: not s.health().ok, 10, "store to report critical")
        health = s.health()
        assert "locked" in (health.last_error or "")
        assert health.failing_since_ms is not None and health.committed == 0
        for i in range(50, 100):  # the writer is stuck on the first batch: these wait in the queue
            s.append(ev(data={"i": i}))
        assert s.health().backlog >= 50
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    eventually(lambda: s.health().ok and s.health().backlog == 0 and s.health().committed == 100, 10, "store to recover")
    assert s.health().last_error is None
    events = query(io_loop, s)
    assert ids(events) == list(range(1, 101))
    assert [e.data["i"] for e in events] == list(range(100))


def test_backlog_counts_the_batch_being_retried(tmp_path: Path, open_store, io_loop: IOLoop):
    """Events taken into a failing batch are still unwritten, so backlog must count them."""
    s = open_store(tmp_path / "events.db", busy_timeout_ms=50, critical_after_ms=100, retry_max_ms=100)
    blocker = sqlite3.connect(s.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")

        async def append_all() -> None:  # on the loop thread: the writer cannot start a batch in between
            for i in range(20):
                s.append(ev(data={"i": i}))

        io_loop.run(append_all(), 5)
        eventually(lambda: not s.health().ok, 10, "store to report critical")
        assert s.health().backlog == 20
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


# ----------------------------------------------------------------- retention
def test_prune_keeps_open_positions_and_recent_events(store: EventStore, io_loop: IOLoop):
    """prune(cutoff) drops old events with no position or a closed one; keeps old events of open positions and new ones."""
    old, cutoff, new = T0, T0 + 1000, T0 + 2000
    store.append(ev("old.loose", ts_ms=old))
    store.append(ev("old.closed", ts_ms=old, position_id="C", projection=proj("open", True)))
    store.append(ev("old.closed", ts_ms=old, position_id="C", projection=proj("closed", False)))
    store.append(ev("old.open", ts_ms=old, position_id="O", projection=proj("open", True)))
    store.append(ev("old.open", ts_ms=old, position_id="O"))
    store.append(ev("new.loose", ts_ms=new))
    store.append(ev("new.closed", ts_ms=new, position_id="C"))
    store.append(ev("new.open", ts_ms=new, position_id="O"))

    assert io_loop.run(store.prune(cutoff), 5) == 3
    assert [(e.id, e.type) for e in query(io_loop, store)] == [
        (4, "old.open"),
        (5, "old.open"),
        (6, "new.loose"),
        (7, "new.closed"),
        (8, "new.open"),
    ]
    assert io_loop.run(store.prune(cutoff), 5) == 0


# --------------------------------------------------------------------- query
@pytest.fixture
def sample(store: EventStore) -> EventStore:
    rows = [
        ("order.placed", "pos:A", "A", "c1", T0 + 100),  # 1
        ("order.filled", "pos:A", "A", "c1", T0 + 200),  # 2
        ("ab_c.one", "pos:B", "B", "c2", T0 + 300),  # 3
        ("abXc.two", "pos:B", "B", None, T0 + 400),  # 4
        ("50%.off", "runtime", None, None, T0 + 500),  # 5
        ("50x.off", "runtime", None, None, T0 + 600),  # 6
        ("signal.tick", "feed", "A", None, T0 + 700),  # 7
    ]
    for type_, actor, pid, corr, ts in rows:
        store.append(ev(type_, ts_ms=ts, actor=actor, position_id=pid, correlation_id=corr))
    return store


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [1, 2, 3, 4, 5, 6, 7]),
        ({"position_id": "A"}, [1, 2, 7]),
        ({"types": ("signal.tick", "order.filled")}, [2, 7]),
        ({"type_prefixes": ("order.",)}, [1, 2]),
        ({"type_prefixes": ("ab_",)}, [3]),  # `_` is literal, not "any one character"
        ({"type_prefixes": ("50%",)}, [5]),  # `%` is literal, not "anything"
        ({"type_prefixes": ("ab_", "signal.")}, [3, 7]),
        ({"types": ("50x.off",), "type_prefixes": ("order.",)}, [1, 2, 6]),  # types OR prefixes
        ({"actor": "pos:B"}, [3, 4]),
        ({"correlation_id": "c1"}, [1, 2]),
        ({"since_ms": T0 + 500}, [5, 6, 7]),
        ({"after_id": 5}, [6, 7]),
        ({"limit": 3}, [1, 2, 3]),
        ({"limit": 3, "newest_first": True}, [5, 6, 7]),
        ({"position_id": "A", "type_prefixes": ("order.",), "after_id": 1}, [2]),  # filters AND together
    ],
)
def test_query_filters(sample: EventStore, io_loop: IOLoop, filters: dict[str, Any], expected: list[int]):
    """Each query filter selects exactly the matching events, oldest first."""
    assert ids(query(io_loop, sample, **filters)) == expected


def test_flush_is_a_barrier_for_other_readers(store: EventStore, io_loop: IOLoop, open_store):
    """After flush() returns, a read-only store on the same file sees every event appended before it."""
    for i in range(500):
        store.append(ev(data={"i": i}))
    store.flush()
    reader = open_store(store.path, readonly=True)
    events = query(io_loop, reader)
    assert ids(events) == list(range(1, 501))
    assert events[-1].data == {"i": 499}


def test_ids_are_never_reused_after_retention_deleted_the_newest(tmp_path: Path, io_loop: IOLoop):
    """Retention may delete the newest rows; after a reopen the next id still continues past them."""
    path = tmp_path / "events.db"
    s = EventStore(path, io_loop).open()
    for i in range(5):
        s.append(ev(f"e{i}", ts_ms=1000 + i))
    s.flush()
    assert io_loop.run(s.prune(10**12), 5) == 5
    s.close()
    s = EventStore(path, io_loop).open()
    try:
        assert s.append_durable(ev("after")).result(5) == 6
    finally:
        s.close()


def test_type_prefix_is_case_sensitive_like_exact_types(store: EventStore, io_loop: IOLoop):
    """`--type Order.*` must not match `order.placed` (exact types are case-sensitive too)."""
    store.append(ev("order.placed"))
    store.flush()
    assert io_loop.run(store.query(type_prefixes=("Order.",)), 5) == []
    assert len(io_loop.run(store.query(type_prefixes=("order.",)), 5)) == 1
