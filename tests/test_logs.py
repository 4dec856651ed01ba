from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from loguru import logger

from core import logs
from core.logs import (
    ActorFileSink,
    actor_log_filename,
    actor_logger,
    follow,
    list_logs,
    resolve_log,
    set_level,
    setup_logging,
    shutdown_logging,
    tail_lines,
)


@pytest.fixture(autouse=True)
def _restore_loguru():
    yield
    shutdown_logging()
    logger.remove()


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_actor_log_filename():
    assert actor_log_filename("position:BTCUSDT:7f3a") == "position-BTCUSDT-7f3a.log"
    assert actor_log_filename("a b/c\\d.e_f-g") == "a-b-c-d.e_f-g.log"
    assert actor_log_filename("../etc") == "-etc.log"
    assert actor_log_filename("") == "system.log"


@given(st.text(max_size=40))
def test_actor_log_filename_safe_and_idempotent(name: str):
    fname = actor_log_filename(name)
    assert fname.endswith(".log") and not fname.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in fname)
    assert actor_log_filename(fname[:-4]) == fname  # a stem maps to itself


def test_routing_two_threads_and_system(tmp_path: Path):
    setup_logging(tmp_path, console_level=None)
    names = ["position:BTCUSDT:7f3a", "position:ETHUSDT:0001"]

    def work(name: str) -> None:
        log = actor_logger(name)
        for i in range(200):
            log.info("line {} from {}", i, name)

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logger.info("no actor here")
    shutdown_logging()

    actors = tmp_path / "actors"
    for name in names:
        lines = read(actors / actor_log_filename(name)).splitlines()
        assert len(lines) == 200
        assert all(f"| {name} | line " in ln and ln.endswith(f"from {name}") for ln in lines)
        assert lines[0].split(" | ")[1].strip() == "INFO"
    combined = read(tmp_path / "combined.log")
    assert combined.count("from position:BTCUSDT:7f3a") == 200
    assert combined.count("from position:ETHUSDT:0001") == 200
    assert "| system | no actor here" in combined
    system = read(actors / "system.log")
    assert "| system | no actor here" in system
    assert "from position" not in system


def test_line_format(tmp_path: Path):
    setup_logging(tmp_path, console_level=None)
    actor_logger("position:BTCUSDT:7f3a").info("hello {x}")  # braces in message are literal
    shutdown_logging()
    line = read(tmp_path / "actors" / "position-BTCUSDT-7f3a.log").rstrip("\n")
    ts, level, actor, msg = line.split(" | ")
    assert len(ts) == len("2026-11-21 19:30:01.123") and ts[4] == "-" and ts[19] == "."
    assert level == "INFO    "
    assert actor == "position:BTCUSDT:7f3a"
    assert msg == "hello {x}"


def test_rotation(tmp_path: Path):
    setup_logging(tmp_path, console_level=None, rotation_bytes=2048, retention_files=3)
    log = actor_logger("rot")
    total = 300
    for i in range(total):
        log.info("message number {:05d} padding padding padding", i)
    shutdown_logging()

    actors = tmp_path / "actors"
    base = actors / "rot.log"
    for p in [base, *(Path(f"{base}.{i}") for i in (1, 2, 3))]:
        assert p.exists(), p
        assert p.stat().st_size <= 2048
    assert not Path(f"{base}.4").exists()
    assert sorted(p.name for p in actors.glob("rot.log*")) == [
        "rot.log", "rot.log.1", "rot.log.2", "rot.log.3"]
    # Newest file + rotated ones hold a contiguous, gap-free tail ending with the last line.
    numbers: list[int] = []
    for p in [Path(f"{base}.3"), Path(f"{base}.2"), Path(f"{base}.1"), base]:
        numbers += [int(ln.split("number ")[1][:5]) for ln in read(p).splitlines()]
    assert numbers == list(range(numbers[0], total))
    assert read(base).splitlines()[-1].endswith("message number 00299 padding padding padding")
    # combined.log is rotated by loguru with the same size limit
    assert (tmp_path / "combined.log").stat().st_size <= 2048


def test_stdlib_logging_intercepted(tmp_path: Path):
    setup_logging(tmp_path, console_level=None)
    logging.getLogger("pykka").warning("pykka says %s", "hi")
    logging.getLogger("asyncio").info("loop detail")
    logging.getLogger("aiosqlite").debug("executing statement")  # library chatter: filtered
    logging.getLogger().error("root error")
    shutdown_logging()
    combined = read(tmp_path / "combined.log")
    system = read(tmp_path / "actors" / "system.log")
    for text in ("WARNING  | system | pykka says hi", "INFO     | system | loop detail",
                 "ERROR    | system | root error"):
        assert text in combined
        assert text in system
    assert "executing statement" not in combined


def test_intercept_caller_depth(tmp_path: Path):
    seen: list[dict] = []
    setup_logging(tmp_path, console_level=None)
    logger.add(lambda m: seen.append(m.record), level="DEBUG")
    logging.getLogger("pykka").warning("where am I")
    logger.complete()
    assert seen[-1]["function"] == "test_intercept_caller_depth"
    assert seen[-1]["file"].path == __file__


def test_setup_twice_no_duplicates(tmp_path: Path):
    setup_logging(tmp_path / "a", console_level=None)
    setup_logging(tmp_path / "b", console_level=None)
    actor_logger("x").info("once")
    logging.getLogger("pykka").info("stdlib once")
    shutdown_logging()
    assert read(tmp_path / "b" / "combined.log").count("once") == 2
    assert read(tmp_path / "b" / "actors" / "x.log").count("once") == 1
    assert read(tmp_path / "b" / "actors" / "system.log").count("stdlib once") == 1
    assert "once" not in read(tmp_path / "a" / "combined.log")
    shutdown_logging()  # safe twice


def test_lru_cap(tmp_path: Path):
    sink = ActorFileSink(tmp_path / "actors", max_open=4)
    hid = logger.add(sink, format=logs._format, level=0)
    names = [f"actor:{i}" for i in range(10)]
    for round_ in range(3):
        for name in names:
            actor_logger(name).info("round {} {}", round_, name)
            assert sink.open_count <= 4
    assert sink.peak_open == 4
    logger.remove(hid)  # calls sink.stop()
    assert sink.open_count == 0
    for name in names:
        lines = read(tmp_path / "actors" / actor_log_filename(name)).splitlines()
        assert [ln.split(" | ")[-1] for ln in lines] == [f"round {r} {name}" for r in range(3)]


def test_lru_cap_via_setup(tmp_path: Path):
    setup_logging(tmp_path, console_level=None, max_open_files=2)
    for i in range(5):
        actor_logger(f"a{i}").info("hi")
    assert logs._state.sink is not None and logs._state.sink.peak_open == 2
    shutdown_logging()
    assert len(list((tmp_path / "actors").glob("a*.log"))) == 5


def test_set_level(tmp_path: Path):
    setup_logging(tmp_path, console_level=None)
    log = actor_logger("lvl")
    log.info("info before")
    set_level("WARNING")
    log.info("info after")
    log.warning("warning after")
    logging.getLogger("pykka").info("stdlib info after")
    set_level("debug")
    log.debug("debug again")
    shutdown_logging()
    for path in (tmp_path / "actors" / "lvl.log", tmp_path / "combined.log"):
        text = read(path)
        assert "info before" in text and "warning after" in text and "debug again" in text
        assert "info after" not in text
    assert "stdlib info after" not in read(tmp_path / "combined.log")


def test_console_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    setup_logging(tmp_path, console_level="INFO")
    actor_logger("c").debug("hidden on console")
    actor_logger("c").info("shown on console")
    shutdown_logging()
    err = capsys.readouterr().err
    assert "| c | shown on console" in err
    assert "hidden on console" not in err
    assert "hidden on console" in read(tmp_path / "actors" / "c.log")


def _make_logs(tmp_path: Path) -> None:
    setup_logging(tmp_path, console_level=None)
    for name in ("position:BTCUSDT:7f3a", "position:ETHUSDT:0001", "watchdog", "exchange:binance"):
        actor_logger(name).info("x")
    shutdown_logging()


def test_list_logs(tmp_path: Path):
    assert list_logs(tmp_path) == []
    _make_logs(tmp_path)
    found = list_logs(tmp_path)
    # the names status shows, not the file stems (a file name cannot keep ':')
    assert [f.actor for f in found] == sorted(
        ["combined", "exchange:binance", "position:BTCUSDT:7f3a", "position:ETHUSDT:0001",
         "watchdog"])
    assert {f.path.name for f in found} >= {"position-BTCUSDT-7f3a.log", "exchange-binance.log"}
    by = {f.actor: f for f in found}
    assert by["combined"].path == tmp_path / "combined.log"
    assert by["watchdog"].size_bytes == (tmp_path / "actors" / "watchdog.log").stat().st_size
    assert by["watchdog"].modified_ms > 1_600_000_000_000
    with pytest.raises(Exception):
        by["watchdog"].actor = "y"  # frozen


def test_resolve_log(tmp_path: Path):
    with pytest.raises(LookupError, match="no logs yet"):
        resolve_log(tmp_path, "watchdog")
    _make_logs(tmp_path)
    actors = tmp_path / "actors"
    assert resolve_log(tmp_path, "position:BTCUSDT:7f3a") == actors / "position-BTCUSDT-7f3a.log"
    assert resolve_log(tmp_path, "position-BTCUSDT-7f3a") == actors / "position-BTCUSDT-7f3a.log"
    assert resolve_log(tmp_path, "combined") == tmp_path / "combined.log"
    assert resolve_log(tmp_path, "watch") == actors / "watchdog.log"
    assert resolve_log(tmp_path, "position:ETH") == actors / "position-ETHUSDT-0001.log"
    with pytest.raises(LookupError) as ei:
        resolve_log(tmp_path, "position")
    assert "position:BTCUSDT:7f3a" in str(ei.value) and "position:ETHUSDT:0001" in str(ei.value)
    with pytest.raises(LookupError) as ei:
        resolve_log(tmp_path, "watchdgo")
    assert "watchdog" in str(ei.value)
    with pytest.raises(LookupError):
        resolve_log(tmp_path, "nothing-like-this-zzz")


def test_tail_lines(tmp_path: Path):
    p = tmp_path / "big.log"
    p.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert tail_lines(p, 3, block_size=16) == ["line 997", "line 998", "line 999"]
    assert tail_lines(p, 50, block_size=64) == [f"line {i}" for i in range(950, 1000)]
    assert tail_lines(p, 5000, block_size=64) == [f"line {i}" for i in range(1000)]
    assert tail_lines(p, 0) == []
    q = tmp_path / "nonl.log"
    q.write_text("a\nb\nc")
    assert tail_lines(q, 2, block_size=1) == ["b", "c"]
    e = tmp_path / "empty.log"
    e.write_text("")
    assert tail_lines(e, 5) == []


def _run_follow(path: Path, want: int):
    stop = threading.Event()
    got: list[str] = []
    done = threading.Event()
    started = threading.Event()

    def consume() -> None:
        gen = follow(path, poll_s=0.01, stop=stop)
        started.set()
        for line in gen:
            got.append(line)
            if len(got) >= want:
                done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    started.wait(5)
    return stop, got, done, t


def test_follow_appends(tmp_path: Path):
    p = tmp_path / "f.log"
    p.write_text("old 1\nold 2\n")
    stop = threading.Event()
    got: list[str] = []
    done = threading.Event()
    gen = follow(p, poll_s=0.01, stop=stop)

    def consume() -> None:
        for line in gen:
            got.append(line)
            if len(got) >= 5:
                done.set()

    t = threading.Thread(target=consume, daemon=True)

    def writer() -> None:
        with open(p, "a") as f:
            for i in range(5):
                f.write(f"new {i}\n")
                f.flush()

    # follow() takes the end position when called, so old lines are skipped.
    t.start()
    w = threading.Thread(target=writer)
    w.start()
    w.join(5)
    assert done.wait(5), got
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert got == [f"new {i}" for i in range(5)]


def test_follow_rotation_and_partial_lines(tmp_path: Path):
    p = tmp_path / "r.log"
    p.write_text("")
    stop = threading.Event()
    got: list[str] = []
    cond = threading.Condition()
    gen = follow(p, poll_s=0.01, stop=stop)

    def consume() -> None:
        for line in gen:
            with cond:
                got.append(line)
                cond.notify_all()

    t = threading.Thread(target=consume, daemon=True)
    t.start()

    def wait_for(n: int) -> None:
        with cond:
            assert cond.wait_for(lambda: len(got) >= n, timeout=5), got

    with open(p, "a") as f:
        f.write("a1\npart")
        f.flush()
        wait_for(1)
        f.write("ial\n")
    wait_for(2)
    p.rename(tmp_path / "r.log.1")  # rotate: new inode
    p.write_text("b1\nb2\n")
    wait_for(4)
    p.write_text("")  # truncate then append
    with open(p, "a") as f:
        f.write("c1\n")
    wait_for(5)
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert got == ["a1", "partial", "b1", "b2", "c1"]


def test_follow_waits_for_missing_file(tmp_path: Path):
    p = tmp_path / "later.log"
    stop, got, done, t = _run_follow(p, 2)
    p.write_text("x\ny\n")
    assert done.wait(5), got
    stop.set()
    t.join(5)
    assert got == ["x", "y"]


# ------------------------------------------------- events at their severity (bug 10)
from core.events import Severity  # noqa: E402
from core.messages import Message  # noqa: E402
from supervision.actor import ActorContext, ManagedActor, handles  # noqa: E402
from tests.conftest import eventually  # noqa: E402


class Say(Message, frozen=True, kw_only=True):
    event: str
    severity: Severity


class Speaker(ManagedActor):
    @handles(Say)
    def _say(self, msg: Say) -> None:
        self.emit(msg.event, {"covered": 0}, severity=msg.severity, symbol="TRXUSDT")


def _lines(path: Path) -> list[tuple[str, str]]:
    """(level, rest) of every record line."""
    out = []
    for line in read(path).splitlines():
        fields = line.split(" | ", 3)
        if len(fields) == 4:
            out.append((fields[1].strip(), f"{fields[2]} | {fields[3]}"))
    return out


def test_events_are_logged_at_their_severity(tmp_path: Path, ctx: ActorContext, capsys: pytest.CaptureFixture[str]):
    """A warning event is a WARNING line in the actor's file and in combined.log, a critical one
    a CRITICAL line; the console shows both and not the INFO event."""
    setup_logging(tmp_path / "logs", console_level="WARNING")
    ref = Speaker.start(name="position:TRXUSDT:p1", ctx=ctx)
    try:
        ref.tell(Say(event="position.moved", severity=Severity.INFO))
        ref.tell(Say(event="guard.unprotected", severity=Severity.WARNING))
        ref.ask(Say(event="alert.position_unprotected", severity=Severity.CRITICAL), timeout=5)
    finally:
        ref.stop()
    shutdown_logging()
    actor_file = tmp_path / "logs" / "actors" / "position-TRXUSDT-p1.log"
    for path in (actor_file, tmp_path / "logs" / "combined.log"):
        lines = _lines(path)
        assert ("INFO", 'position:TRXUSDT:p1 | position.moved TRXUSDT {"covered":0}') in lines
        assert ("WARNING", 'position:TRXUSDT:p1 | guard.unprotected TRXUSDT {"covered":0}') in lines
        assert ("CRITICAL", 'position:TRXUSDT:p1 | alert.position_unprotected TRXUSDT {"covered":0}') in lines
    err = capsys.readouterr().err
    assert "WARNING  | position:TRXUSDT:p1 | guard.unprotected" in err
    assert "CRITICAL | position:TRXUSDT:p1 | alert.position_unprotected" in err
    assert "position.moved" not in err and "started (epoch" not in err


def test_console_shows_warnings_not_info_but_the_process_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The default console level is WARNING; lines bound with console=True still show."""
    setup_logging(tmp_path)
    actor_logger("sync").info("read 3 positions")
    actor_logger("sync").warning("exchange unreachable: retrying")
    logger.error("store slow")
    logs.console_logger().info("tradebot running")
    shutdown_logging()
    err = capsys.readouterr().err
    assert "exchange unreachable" in err and "store slow" in err and "tradebot running" in err
    assert "read 3 positions" not in err
    assert "read 3 positions" in read(tmp_path / "actors" / "sync.log")


@pytest.fixture
def logs_on(tmp_path: Path):
    """File logs under tmp_path/logs, set up before the world starts."""
    setup_logging(tmp_path / "logs", console_level=None)
    yield tmp_path / "logs"
    shutdown_logging()


def test_every_actor_of_the_tree_has_its_file_named_as_status_names_it(logs_on: Path, world):
    """guard, sync, intake and the price feed log through the base class (their start, their
    events), so each has a file; `tradebot logs --list` shows the names status shows."""
    pos = world.open()
    eventually(lambda: world.sup.proxy().refs.get().get(pos), what="position started")
    names = {c["name"] for c in world.sup.proxy().status().get()["children"]}
    assert {"guard", "sync", "intake", "price_feed", pos} <= names

    def listed() -> set[str]:
        return {f.actor for f in list_logs(logs_on)}

    eventually(lambda: names | {"supervisor", "combined"} <= listed(), what=f"a log for every child of {sorted(names)}; have {sorted(listed())}")
    assert (logs_on / "actors" / "price_feed.log").stat().st_size > 0
    assert resolve_log(logs_on, pos) == logs_on / "actors" / actor_log_filename(pos)
