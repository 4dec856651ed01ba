"""Per-actor logging on top of loguru.

Layout under ``log_dir``::

    combined.log              every record (rotated by loguru itself)
    actors/<actor>.log        one file per actor, ``actors/system.log`` for unbound records
    actors/<actor>.log.1..N   rotated per-actor files (newest is ``.1``)

Actors log through ``actor_logger(name)`` (i.e. ``logger.bind(actor=name)``).  All
per-actor files are written by ONE loguru handler (:class:`ActorFileSink`), which
routes on ``record["extra"]["actor"]`` and keeps an LRU cache of open file handles.
Every ``ManagedActor`` logs its start and every event it writes (at the event's
severity), so every actor has its file. The console shows WARNING and above
(``logging.console_level``), plus records bound with ``console=True`` (the
process's own start and stop lines).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from loguru import logger

__all__ = [
    "ActorFileSink",
    "LogFile",
    "actor_log_filename",
    "actor_logger",
    "console_logger",
    "follow",
    "list_logs",
    "resolve_log",
    "set_level",
    "setup_logging",
    "shutdown_logging",
    "tail_lines",
]

SYSTEM_ACTOR = "system"
COMBINED = "combined"
_FMT_HEAD = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | "
_FMT_ACTOR = _FMT_HEAD + "{extra[actor]} | {message}\n{exception}"
_FMT_SYSTEM = _FMT_HEAD + SYSTEM_ACTOR + " | {message}\n{exception}"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _format(record: Any) -> str:
    """Loguru format function: unbound records are shown as actor ``system``."""
    return _FMT_ACTOR if "actor" in record["extra"] else _FMT_SYSTEM


def actor_log_filename(actor: str) -> str:
    """File name for an actor: keep ``[A-Za-z0-9._-]``, replace anything else with ``-``.

    ``position:BTCUSDT:7f3a`` -> ``position-BTCUSDT-7f3a.log``; empty -> ``system.log``.
    """
    safe = _UNSAFE.sub("-", actor).lstrip(".") or SYSTEM_ACTOR  # no hidden files
    return f"{safe}.log"


def actor_logger(name: str) -> Any:
    """Return ``logger.bind(actor=name)``: records go to ``actors/<name>.log`` and combined."""
    return logger.bind(actor=name)


class ActorFileSink:
    """One loguru sink routing records to per-actor files, with LRU handles and rotation.

    Thread safety: loguru calls ``write``/``stop`` under the handler's own lock when
    ``enqueue=False`` (our setup), so calls are already serialized.  We also take our own
    (uncontended, cheap) lock so ``close``/``open_count`` are safe from any thread and the
    sink stays correct if someone adds it with ``enqueue=True`` or calls it directly.
    """

    def __init__(self, actors_dir: Path, *, rotation_bytes: int = 100 * 1024 * 1024,
                 retention_files: int = 10, max_open: int = 128) -> None:
        if max_open < 1:
            raise ValueError("max_open must be >= 1")
        self.actors_dir = Path(actors_dir)
        self.actors_dir.mkdir(parents=True, exist_ok=True)
        self.rotation_bytes = rotation_bytes
        self.retention_files = max(0, retention_files)
        self.max_open = max_open
        self.peak_open = 0  # highest number of simultaneously open files (for tests/metrics)
        self._files: OrderedDict[str, tuple[BinaryIO, int]] = OrderedDict()  # name -> (fh, size)
        self._lock = threading.Lock()

    @property
    def open_count(self) -> int:
        """Number of currently open per-actor file handles."""
        return len(self._files)

    def write(self, message: Any) -> None:
        """Loguru entry point: ``message`` is the formatted line with a ``.record``."""
        actor = message.record["extra"].get("actor") or SYSTEM_ACTOR
        data = str(message).encode("utf-8", errors="replace")
        with self._lock:
            name = actor_log_filename(str(actor))
            fh, size = self._get(name)
            if size > 0 and size + len(data) > self.rotation_bytes:
                self._files.pop(name)[0].close()
                self._rotate(self.actors_dir / name)
                fh, size = self._get(name)
            fh.write(data)
            fh.flush()  # line-at-a-time so `follow`/tail see complete lines promptly
            self._files[name] = (fh, size + len(data))

    def _get(self, name: str) -> tuple[BinaryIO, int]:
        entry = self._files.get(name)
        if entry is not None:
            self._files.move_to_end(name)
            return entry
        while len(self._files) >= self.max_open:
            _, (old, _) = self._files.popitem(last=False)  # least recently used
            old.close()
        fh = open(self.actors_dir / name, "ab")
        entry = (fh, os.fstat(fh.fileno()).st_size)
        self._files[name] = entry
        self.peak_open = max(self.peak_open, len(self._files))
        return entry

    def _rotate(self, path: Path) -> None:
        """x.log -> x.log.1, .1 -> .2, ... keeping at most ``retention_files`` old files."""
        keep = self.retention_files
        if keep == 0:
            path.unlink(missing_ok=True)
            return
        Path(f"{path}.{keep}").unlink(missing_ok=True)
        for i in range(keep - 1, 0, -1):
            src = Path(f"{path}.{i}")
            if src.exists():
                os.replace(src, f"{path}.{i + 1}")
        os.replace(path, f"{path}.1")

    def close(self) -> None:
        """Close every open handle (idempotent); later writes reopen files as needed."""
        with self._lock:
            while self._files:
                _, (fh, _) = self._files.popitem()
                fh.close()

    stop = close  # called by loguru on logger.remove(handler_id)


class InterceptHandler(logging.Handler):
    """Standard loguru recipe: forward stdlib ``logging`` records into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = inspect.currentframe(), 0
        # Skip this frame and every frame inside the logging module to reach the caller.
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame = frame.f_back
            depth += 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())


class _State:
    def __init__(self) -> None:
        self.handler_ids: list[int] = []
        self.sink: ActorFileSink | None = None
        self.intercept: InterceptHandler | None = None
        self.level_no: int = logger.level("DEBUG").no


_state = _State()


def _file_filter(record: Any) -> bool:
    return record["level"].no >= _state.level_no


def _console_filter(level_no: int) -> Any:
    def accept(record: Any) -> bool:
        return record["level"].no >= level_no or bool(record["extra"].get("console"))

    return accept


def console_logger() -> Any:
    """A logger whose records reach the console whatever its level (start/stop of the process)."""
    return logger.bind(console=True)


def set_level(level: str) -> None:
    """Change the level of the file logs (combined + per-actor) live; console is unaffected."""
    _state.level_no = logger.level(level.upper()).no


_LIBRARY_LEVELS = {"pykka": logging.INFO, "asyncio": logging.INFO, "aiosqlite": logging.WARNING}


def setup_logging(log_dir: Path, *, level: str = "DEBUG", console_level: str | None = "WARNING",
                  rotation_bytes: int = 100 * 1024 * 1024, retention_files: int = 10,
                  max_open_files: int = 128) -> None:
    """Install combined + per-actor file sinks, optional stderr console, stdlib interception.

    Removes loguru's default stderr handler. Calling it again first tears down the previous
    configuration (only handlers installed here), so handlers are never duplicated.
    """
    shutdown_logging()
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        logger.remove(0)  # loguru's default stderr handler
    except ValueError:
        pass
    set_level(level)
    sink = ActorFileSink(log_dir / "actors", rotation_bytes=rotation_bytes,
                         retention_files=retention_files, max_open=max_open_files)
    common: dict[str, Any] = dict(format=_format, level=0, filter=_file_filter, enqueue=False)
    _state.sink = sink
    _state.handler_ids = [
        logger.add(sink, colorize=False, **common),
        logger.add(log_dir / f"{COMBINED}.log", rotation=rotation_bytes,
                   retention=retention_files, encoding="utf-8", **common),
    ]
    if console_level:
        console_no = logger.level(console_level.upper()).no
        _state.handler_ids.append(logger.add(sys.stderr, level=0, filter=_console_filter(console_no),
                                             format=_format, enqueue=False))
    _state.intercept = InterceptHandler()
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, InterceptHandler)]
    root.addHandler(_state.intercept)
    # Libraries log at INFO and above; their DEBUG chatter (aiosqlite logs every
    # statement) would cost more than the events it describes.
    root.setLevel(logging.INFO)
    for name, lib_level in _LIBRARY_LEVELS.items():
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.setLevel(lib_level)
        lg.propagate = True


def shutdown_logging() -> None:
    """Flush and close all log files and detach stdlib interception. Safe to call twice."""
    logger.complete()
    for hid in _state.handler_ids:
        try:
            logger.remove(hid)  # also calls ActorFileSink.stop() and closes combined.log
        except ValueError:
            pass
    _state.handler_ids = []
    if _state.sink is not None:
        _state.sink.close()
        _state.sink = None
    if _state.intercept is not None:
        logging.getLogger().removeHandler(_state.intercept)
        _state.intercept = None


@dataclass(frozen=True, slots=True)
class LogFile:
    """A current (non-rotated) log file.

    ``actor`` is the actor's name as status shows it (``position:BTCUSDT:7f3a``),
    read from the file's first line; ``combined`` for the combined log.
    """

    actor: str
    path: Path
    size_bytes: int
    modified_ms: int


def list_logs(log_dir: Path) -> list[LogFile]:
    """Current log files (``combined`` + every ``actors/*.log``), sorted by actor."""
    log_dir = Path(log_dir)
    paths = [log_dir / f"{COMBINED}.log", *(log_dir / "actors").glob("*.log")]
    out = []
    for p in paths:
        try:
            st = p.stat()
            actor = COMBINED if p.parent == log_dir else _actor_in(p)
        except FileNotFoundError:
            continue
        out.append(LogFile(actor, p, st.st_size, st.st_mtime_ns // 1_000_000))
    return sorted(out, key=lambda f: (f.actor, str(f.path)))


def _actor_in(path: Path) -> str:
    """The actor named on the first line of a per-actor file (file names lose ``:``); else the stem."""
    with open(path, "rb") as fh:
        head = fh.readline(4096).decode("utf-8", errors="replace")
    fields = head.split(" | ", 3)
    if len(fields) == 4 and fields[2] and actor_log_filename(fields[2]) == path.name:
        return fields[2]
    return path.stem


def resolve_log(log_dir: Path, actor: str) -> Path:
    """Map an actor name, file stem, ``combined`` or a unique stem prefix to a log path.

    Raises ``LookupError`` naming candidates when ambiguous or unknown.
    """
    log_dir = Path(log_dir)
    combined = log_dir / f"{COMBINED}.log"
    if actor == COMBINED and combined.exists():
        return combined
    exact = log_dir / "actors" / actor_log_filename(actor)
    if actor and exact.exists():
        return exact
    logs = list_logs(log_dir)
    if not logs:
        raise LookupError(f"no logs yet (looked in {log_dir} and {log_dir / 'actors'})")
    stem = actor_log_filename(actor)[:-4] if actor else ""
    matches = [f for f in logs if f.path.stem.startswith(stem) or f.actor.startswith(actor)]
    if len(matches) == 1:
        return matches[0].path
    if matches:
        names = ", ".join(f.actor for f in matches[:20])
        raise LookupError(f"{actor!r} is ambiguous; matches: {names}")
    stems = [f.actor for f in logs]
    close = [s for s in stems if stem.lower() in s.lower()]
    close += [s for s in difflib.get_close_matches(stem, stems, n=5, cutoff=0.5) if s not in close]
    hint = f"; did you mean: {', '.join(close[:10])}" if close else f"; available: {', '.join(stems[:20])}"
    raise LookupError(f"no log for {actor!r} in {log_dir}{hint}")


def tail_lines(path: Path, n: int, *, block_size: int = 64 * 1024) -> list[str]:
    """Last ``n`` lines of ``path`` (without newlines), reading backwards in blocks."""
    if n <= 0:
        return []
    with open(path, "rb") as f:
        pos = f.seek(0, os.SEEK_END)
        chunks: list[bytes] = []
        newlines = 0
        while pos > 0 and newlines <= n:  # n+1 newlines guarantee n complete lines
            step = min(block_size, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8", errors="replace") for line in lines[-n:]]


def follow(path: Path, *, poll_s: float = 0.25,
           stop: threading.Event | None = None) -> Iterator[str]:
    """Yield lines appended to ``path`` after this call (like ``tail -f``), without newlines.

    The end position is taken eagerly, when ``follow`` is called (not on first ``next``).
    If the file is renamed away (inode changes) its remaining data is drained, then the new
    file is read from the start; a truncated file is re-read from the start. A missing file
    is waited for. Stops once ``stop`` is set (checked at least every ``poll_s``).
    """
    path = Path(path)
    fh: BinaryIO | None
    try:
        fh = opened = open(path, "rb")
        opened.seek(0, os.SEEK_END)
    except FileNotFoundError:
        fh = None
    return _follow(path, fh, poll_s, stop or threading.Event())


def _split(buf: bytes) -> tuple[list[str], bytes]:
    *lines, rest = buf.split(b"\n")
    return [ln.decode("utf-8", errors="replace") for ln in lines], rest


def _follow(path: Path, fh: BinaryIO | None, poll_s: float,
            stop: threading.Event) -> Iterator[str]:
    inode = os.fstat(fh.fileno()).st_ino if fh else -1
    buf = b""
    try:
        while not stop.is_set():
            if fh is None:
                try:
                    fh = open(path, "rb")
                except FileNotFoundError:
                    stop.wait(poll_s)
                    continue
                inode, buf = os.fstat(fh.fileno()).st_ino, b""
            chunk = fh.read()
            if chunk:
                lines, buf = _split(buf + chunk)
                yield from lines
                continue
            try:
                st = os.stat(path)
                moved, truncated = st.st_ino != inode, st.st_size < fh.tell()
            except FileNotFoundError:
                moved, truncated = True, False
            if moved or truncated:
                if moved:  # drain what was written just before the rename
                    lines, rest = _split(buf + fh.read())
                    yield from lines if not rest else [*lines, rest.decode(errors="replace")]
                fh.close()
                fh = None
                continue
            stop.wait(poll_s)
    finally:
        if fh is not None:
            fh.close()
