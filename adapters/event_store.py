"""The event store: an append-only SQLite log (WAL) behind aiosqlite.

Appends come from any thread and never block: they go into a FIFO that one
writer task on the I/O loop drains in batches, one transaction per batch, in
arrival order. Event ids are assigned by the writer, so id order *is* commit
order. A failed write is retried with backoff, never dropped; while it keeps
failing the store reports itself critical (see :meth:`EventStore.health`).

Group commit: everything waiting when the writer takes a batch (events,
durable ones included, incarnation records, flush barriers; up to
``batch_max`` events) goes into *one* transaction, and each durable caller is
released when that transaction has committed (WAL, ``synchronous=NORMAL``:
committed means it survives the process being killed; an OS crash may lose
the last commits). Only maintenance jobs (:meth:`run_job`) end a batch.

Reads run on their own read-only connection (WAL: readers never wait for the
writer's transaction, nor it for them), so a burst of writes never queues a
read behind it. ``consistent=True`` (the default) first waits until everything
appended before the read is committed (read-your-writes, what a rebuild
needs); ``consistent=False`` answers at once from what is committed (a status
read, the reconcile's projection: write-ahead records are committed before
their exchange call by construction).

Fan-out of committed events: :meth:`EventStore.subscribe` registers a
subscriber (alerts, metrics). After each commit the writer hands the batch,
with ids, to every subscriber's own bounded buffer and goes on: it never
waits for one. Each subscriber is drained by its own task on the I/O loop; a
buffer that overflows drops its oldest events and counts them
(:attr:`Subscription.dropped`), so a slow subscriber never slows the writer,
and the log itself (the store) keeps everything.

One bot process owns a database at a time (an ``flock`` on ``<db>.lock``);
readers such as ``tradebot events`` open it read-only.

Fencing. Each incarnation of a named actor takes an epoch
(:meth:`EventStore.begin_incarnation`: numbered at once, above every epoch this
database ever had, and recorded in ``incarnations`` by the writer, in queue
order). An append carrying a :class:`Fence` older than its name's current epoch
is refused *by the writer* (never written; an ``actor.fenced`` event is written
instead), and :meth:`EventStore.fenced` refuses an I/O coroutine on the loop
thread, the thread where epochs change. So an incarnation that wakes up after
its replacement started cannot write or act once the new epoch is in effect,
and whatever it wrote before that is committed first, where the new
incarnation's rebuild reads it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import fcntl
import inspect
import os
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import msgspec
from loguru import logger

from adapters.io_loop import IOLoop
from adapters.store_schema import BOOTSTRAP, MIGRATIONS
from core.events import PROJECTION_REQUIRED, Event, Severity

_encode = msgspec.json.Encoder().encode
_decode_data = msgspec.json.Decoder(dict[str, Any]).decode

_EVENT_INSERT = (
    "INSERT INTO events (id, ts_ms, type, actor, position_id, correlation_id, symbol, exchange, severity, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_POSITION_UPSERT = (
    "INSERT INTO positions (position_id, exchange, symbol, state, is_open, data, updated_ts_ms, last_event_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(position_id) DO UPDATE SET "
    "exchange=excluded.exchange, symbol=excluded.symbol, state=excluded.state, is_open=excluded.is_open, "
    "data=excluded.data, updated_ts_ms=excluded.updated_ts_ms, last_event_id=excluded.last_event_id"
)
_INCARNATION_INSERT = "INSERT INTO incarnations (epoch, name, started_ms, urn) VALUES (?, ?, ?, ?)"
_COLUMNS = "id, ts_ms, type, actor, position_id, correlation_id, symbol, exchange, severity, data"


T = TypeVar("T")
FENCED_EVENT = "actor.fenced"


class StoreLocked(RuntimeError):
    """Another process already owns this database."""


class Fence(msgspec.Struct, frozen=True, kw_only=True):
    """One incarnation of a named actor: its writes and exchange calls are checked against it."""

    name: str
    epoch: int
    urn: str


class Fenced(Exception):
    """Refused: the operation came from an incarnation that is no longer current for its name."""

    def __init__(self, fence: Fence, current: int | None, operation: str) -> None:
        now = f"epoch {current} is current" if current is not None else "no incarnation is current"
        super().__init__(f"{fence.name} epoch {fence.epoch} is fenced ({now}); refused {operation}")
        self.fence = fence
        self.current = current
        self.operation = operation


class StoreHealth(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    backlog: int
    committed: int
    failing_since_ms: int | None
    last_error: str | None
    #: How long the oldest durable write still waiting has waited (0: none waiting).
    durable_wait_ms: int = 0
    #: The last batch: events in it and how long its transaction took.
    last_batch: int = 0
    last_commit_ms: float = 0.0


class _Barrier:
    __slots__ = ("future",)

    def __init__(self, future: concurrent.futures.Future[None]) -> None:
        self.future = future


class _Incarnate:
    __slots__ = ("fence", "started_ms")

    def __init__(self, fence: Fence, started_ms: int) -> None:
        self.fence = fence
        self.started_ms = started_ms


class _Retire:
    __slots__ = ("fence",)

    def __init__(self, fence: Fence) -> None:
        self.fence = fence


class _Job:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[aiosqlite.Connection], Coroutine[Any, Any, Any]], future: concurrent.futures.Future[Any]) -> None:
        self.fn = fn
        self.future = future


class Subscription:
    """One subscriber to committed events: its bounded buffer, its task, its counters."""

    def __init__(self, name: str, callback: Callable[[list[Event]], Awaitable[None] | None], maxlen: int) -> None:
        self.name = name
        self.callback = callback
        self.maxlen = maxlen
        self.buffer: collections.deque[Event] = collections.deque()
        self.delivered = 0
        self.dropped = 0
        self.failures = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def offer(self, events: list[Event]) -> None:
        """On the loop thread, from the writer: never blocks; overflow drops the oldest."""
        buffer = self.buffer
        buffer.extend(events)
        over = len(buffer) - self.maxlen
        if over > 0:
            for _ in range(over):
                buffer.popleft()
            self.dropped += over
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.buffer:
                events = list(self.buffer)
                self.buffer.clear()
                try:
                    result = self.callback(events)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.failures += 1
                    logger.opt(exception=exc).error("event store: subscriber {} failed on {} events", self.name, len(events))
                self.delivered += len(events)


class EventStore:
    """Append events from any thread; query and maintain them on the I/O loop."""

    def __init__(
        self,
        path: Path,
        io: IOLoop,
        *,
        readonly: bool = False,
        batch_max: int = 1000,
        busy_timeout_ms: int = 1000,
        retry_max_ms: int = 2000,
        critical_after_ms: int = 3000,
    ) -> None:
        self.path = Path(path)
        self._io = io
        self._readonly = readonly
        self._batch_max = batch_max
        self._busy_timeout_ms = busy_timeout_ms
        self._retry_max_ms = retry_max_ms
        self._critical_after_ms = critical_after_ms
        self._db: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: collections.deque[Any] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._wake_scheduled = False
        self._writer: asyncio.Task[None] | None = None
        self._writing = False  # a batch is being taken or committed (loop thread)
        self._next_id = 1
        self._committed = 0
        self._uncommitted = 0  # events appended and not yet committed (queued or being retried)
        self._count_lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_error: str | None = None
        self._durable_waiting: collections.deque[tuple[float, concurrent.futures.Future[int]]] = collections.deque()
        self._last_batch = 0
        self._last_commit_ms = 0.0
        self._lock_fd: int | None = None
        self._closed = False
        # name -> its newest epoch in effect, and names whose newest incarnation
        # retired. Written only on the I/O loop thread; read anywhere (a dict get is atomic).
        self._epochs: dict[str, int] = {}
        self._retired: dict[str, int] = {}
        self._last_epoch = 0
        self._first_epoch = 1  # epochs below it belong to earlier processes: always refused
        self._epoch_lock = threading.Lock()
        self._subscribers: list[Subscription] = []

    # ------------------------------------------------------------ fan-out
    def subscribe(
        self,
        name: str,
        callback: Callable[[list[Event]], Awaitable[None] | None],
        *,
        maxlen: int = 10_000,
    ) -> Subscription:
        """Hand every event committed from now on (with its id, in commit order) to ``callback``.

        ``callback(events)`` runs on the I/O loop in the subscriber's own task
        (it may be a coroutine function); at most ``maxlen`` events wait for it,
        beyond that the oldest are dropped and counted. Thread-safe.
        """
        sub = Subscription(name, callback, maxlen)

        def start() -> None:
            sub.task = asyncio.get_running_loop().create_task(sub.run(), name=f"store-subscriber-{name}")
            self._subscribers = [*self._subscribers, sub]

        self._io.run(_call(start), 10)
        return sub

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscribers)

    def unsubscribe(self, sub: Subscription) -> None:
        def stop() -> None:
            self._subscribers = [s for s in self._subscribers if s is not sub]
            if sub.task is not None:
                sub.task.cancel()

        self._io.run(_call(stop), 10)

    def _fan_out(self, first_id: int, batch: list[_Prepared]) -> None:
        subscribers = self._subscribers
        if not subscribers:
            return
        replace = msgspec.structs.replace
        events = [replace(item.event, id=first_id + offset, projection=None) for offset, item in enumerate(batch)]
        for sub in subscribers:
            sub.offer(events)

    # ----------------------------------------------------------- lifecycle
    def open(self, timeout: float = 10.0) -> EventStore:
        if not self._readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        elif not self.path.exists():
            raise FileNotFoundError(f"no event store at {self.path}")
        try:
            self._io.run(self._open(), timeout)
        except BaseException:
            self._release_lock()
            raise
        return self

    def _take_lock(self) -> None:
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLocked(f"{self.path} is in use by another tradebot (pid {owner})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _open(self) -> None:
        if self._readonly:
            self._db = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
        else:
            self._db = await aiosqlite.connect(self.path)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        if self._readonly:
            return
        await self._migrate()
        # sqlite_sequence keeps the high-water mark even after retention
        # deleted the newest rows, so an id is never reused.
        async with self._db.execute(
            "SELECT MAX(COALESCE((SELECT MAX(id) FROM events), 0), COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))"
        ) as cur:
            (max_id,) = await _one(cur)
        self._next_id = max_id + 1
        async with self._db.execute(
            "SELECT MAX(COALESCE((SELECT MAX(epoch) FROM incarnations), 0), COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'incarnations'), 0))"
        ) as cur:
            (self._last_epoch,) = await _one(cur)
        self._first_epoch = self._last_epoch + 1
        self._reader = await aiosqlite.connect(f"file:{self.path}?mode=ro", uri=True)
        await self._reader.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        self._wake = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="event-store-writer")

    async def _migrate(self) -> None:
        db = self._db
        assert db is not None
        await db.executescript(BOOTSTRAP)
        async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
            (current,) = await _one(cur)
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            await db.executescript(f"BEGIN;\n{sql}\nINSERT INTO schema_migrations VALUES ({version}, '{description}', {int(time.time() * 1000)});\nCOMMIT;")
            logger.info("event store: applied migration {} ({})", version, description)

    def schema_version(self, timeout: float = 5.0) -> int:
        async def _q(db: aiosqlite.Connection) -> int:
            async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
                return int((await _one(cur))[0])

        return self._io.run(self._read(_q), timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush everything appended so far, then close the connection."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._db is not None:
                self._io.run(self._close(timeout), timeout + 1)
        finally:
            self._release_lock()

    async def _close(self, timeout: float) -> None:
        for sub in self._subscribers:
            if sub.task is not None:
                sub.task.cancel()
        self._subscribers = []
        if self._writer is not None:
            barrier: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._enqueue(_Barrier(barrier))
            try:
                await asyncio.wait_for(asyncio.wrap_future(barrier), timeout)
            except TimeoutError:
                logger.critical("event store: {} events could not be written before close", self._uncommitted)
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    # ------------------------------------------------------------- writing
    def append(self, event: Event, *, fence: Fence | None = None, on_refused: Callable[[Fenced], None] | None = None) -> None:
        """Queue ``event`` for the next batch. Thread-safe, never blocks.

        Encoding happens here, on the caller's thread, so an event that cannot
        be stored raises in the code that made it instead of wedging the writer.
        With a ``fence``, the writer drops the event if that incarnation has been
        superseded and calls ``on_refused`` (on the I/O loop thread: it may only
        ``tell``).
        """
        self._enqueue(_prepare(event, None, fence, on_refused))
        with self._count_lock:
            self._uncommitted += 1

    def append_durable(self, event: Event, *, fence: Fence | None = None) -> concurrent.futures.Future[int]:
        """Queue ``event``; the future resolves to its id once committed (or raises :class:`Fenced`)."""
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._enqueue(_prepare(event, future, fence, None))
        with self._count_lock:
            self._uncommitted += 1
            self._durable_waiting.append((time.monotonic(), future))
        return future

    # ------------------------------------------------------------- fencing
    def begin_incarnation(self, name: str, urn: str, started_ms: int) -> Fence:
        """A new incarnation of ``name``: its :class:`Fence`, at once (never blocks).

        The epoch is above every epoch this database has had, across restarts.
        It is recorded by the writer in queue order: everything appended before
        this call is committed first, and from then on (or from this fence's
        first I/O call, if sooner) older incarnations of ``name`` are refused.
        """
        with self._epoch_lock:
            self._last_epoch += 1
            fence = Fence(name=name, epoch=self._last_epoch, urn=urn)
        self._enqueue(_Incarnate(fence, started_ms))
        return fence

    def retire(self, fence: Fence) -> None:
        """The incarnation stopped on purpose: from now on its late writes and calls are refused."""
        self._enqueue(_Retire(fence))

    def current_epoch(self, name: str) -> int | None:
        """The newest epoch of ``name`` in effect (None if none yet, or it retired)."""
        epoch = self._epochs.get(name)
        return None if epoch is None or self._retired.get(name) == epoch else epoch

    def admits(self, fence: Fence) -> bool:
        """Is ``fence`` not older than the newest epoch of its name in effect (and not retired)?

        A newer fence whose record the writer has not reached yet is admitted.
        Authoritative on the I/O loop thread, where epochs change (see
        :meth:`_claim`); elsewhere an early answer that the writer and
        :meth:`fenced` confirm.
        """
        if fence.epoch < self._first_epoch:
            return False
        epoch = self._epochs.get(fence.name)
        if epoch is None or fence.epoch > epoch:
            return True
        return fence.epoch == epoch and self._retired.get(fence.name) != epoch

    def _claim(self, fence: Fence) -> bool:
        """On the loop thread: admit ``fence``, putting a newer epoch in effect at once."""
        if not self.admits(fence):
            return False
        if fence.epoch > self._epochs.get(fence.name, 0):
            self._epochs[fence.name] = fence.epoch
            self._retired.pop(fence.name, None)
        return True

    def refuse(self, fence: Fence, operation: str, ts_ms: int) -> Fenced:
        """Record that ``operation`` of a fenced incarnation was refused; the exception to raise."""
        exc = Fenced(fence, self.current_epoch(fence.name), operation)
        self.append(_fenced_event(exc, ts_ms))
        return exc

    async def fenced(self, fence: Fence, coro: Coroutine[Any, Any, T], operation: str, ts_ms: int) -> T:
        """Run ``coro`` only if ``fence`` is current when it starts on the loop; else raise :class:`Fenced`.

        The check runs on the I/O loop thread, the thread that records new
        epochs, so it cannot interleave with one.
        """
        if not self._claim(fence):
            coro.close()
            raise self.refuse(fence, operation, ts_ms)
        return await coro

    def idle(self) -> bool:
        """Nothing queued or being written (a replay's test of quiet; racy by nature, read it twice)."""
        return not (self._queue or self._writing or self._wake_scheduled)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until every event appended before this call is committed."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._enqueue(_Barrier(future))
        future.result(timeout)

    def _enqueue(self, item: Any) -> None:
        if self._readonly:
            raise RuntimeError("event store opened read-only")
        if self._wake is None:
            raise RuntimeError("event store is not open")
        self._queue.append(item)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._io.call_soon(self._wake.set)

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._wake_scheduled = False
            self._writing = True
            try:
                while self._queue:
                    await self._write_some()
            finally:
                self._writing = False

    async def _write_some(self) -> None:
        """Take one batch (everything waiting up to ``batch_max`` events or a job) and commit it in one
        transaction, retrying until it lands; then release every caller waiting on it."""
        batch: list[_Prepared] = []
        incarnations: list[_Incarnate] = []
        barriers: list[_Barrier] = []
        queue = self._queue
        while queue and len(batch) < self._batch_max:
            head = queue[0]
            if isinstance(head, _Job):
                break
            queue.popleft()
            if isinstance(head, _Prepared):
                batch.append(head if head.fence is None or self._claim(head.fence) else self._refused(head))
            elif isinstance(head, _Incarnate):
                self._claim(head.fence)  # in effect from here: what is queued behind it is checked against it
                incarnations.append(head)
            elif isinstance(head, _Retire):
                if self._epochs.get(head.fence.name) == head.fence.epoch:
                    self._retired[head.fence.name] = head.fence.epoch
            else:
                barriers.append(head)
        if batch or incarnations:
            await self._with_retry(f"write of {len(batch)} events", lambda: self._commit(batch, incarnations))
        for barrier in barriers:
            if not barrier.future.done():
                barrier.future.set_result(None)
        if batch or incarnations or barriers or not queue:
            return
        job = queue.popleft()
        try:
            job.future.set_result(await job.fn(self._db))
        except Exception as exc:
            job.future.set_exception(exc)

    def _refused(self, item: _Prepared) -> _Prepared:
        """A fenced event: tell its writer, and store the refusal in its place."""
        assert item.fence is not None
        exc = Fenced(item.fence, self.current_epoch(item.fence.name), f"event {item.row[1]}")
        logger.bind(actor=item.fence.name).debug("event store: {}", exc)
        if item.future is not None:
            item.future.set_exception(exc)
        elif item.on_refused is not None:
            try:
                item.on_refused(exc)
            except Exception as err:
                logger.error("event store: on_refused callback failed: {}", err)
        return _prepare(_fenced_event(exc, item.row[0]), None, None, None)

    async def _with_retry(self, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        delay_s = 0.02
        while True:
            try:
                await attempt()
            except Exception as exc:
                await self._rollback()
                now = time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                self._last_error = f"{type(exc).__name__}: {exc}"
                level = "CRITICAL" if not self._healthy_now(now) else "WARNING"
                logger.log(level, "event store: {} failed ({}); retrying in {:.0f} ms", what, self._last_error, delay_s * 1000)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self._retry_max_ms / 1000)
                continue
            if self._failing_since is not None:
                logger.warning("event store: writes recovered after {:.1f} s", time.monotonic() - self._failing_since)
            self._failing_since = None
            return

    async def _commit(self, batch: list[_Prepared], incarnations: list[_Incarnate] | None = None) -> None:
        db = self._db
        assert db is not None
        started = time.perf_counter()
        first_id = self._next_id
        rows = []
        upserts = []
        for offset, item in enumerate(batch):
            event_id = first_id + offset
            rows.append((event_id, *item.row))
            if item.upsert is not None:
                upserts.append((*item.upsert, event_id))
        if incarnations:  # in the same transaction: an epoch is recorded with the events queued around it
            await db.executemany(_INCARNATION_INSERT, [(i.fence.epoch, i.fence.name, i.started_ms, i.fence.urn) for i in incarnations])
        if rows:
            await db.executemany(_EVENT_INSERT, rows)
        if upserts:
            await db.executemany(_POSITION_UPSERT, upserts)
        await db.commit()
        self._last_batch, self._last_commit_ms = len(batch), (time.perf_counter() - started) * 1000
        self._next_id = first_id + len(batch)
        self._committed += len(batch)
        self._fan_out(first_id, batch)
        with self._count_lock:
            self._uncommitted -= len(batch)
            waiting = self._durable_waiting
            for offset, item in enumerate(batch):
                if item.future is not None and not item.future.done():
                    item.future.set_result(first_id + offset)
            while waiting and waiting[0][1].done():
                waiting.popleft()

    async def _rollback(self) -> None:
        try:
            if self._db is not None and self._db.in_transaction:
                await self._db.rollback()
        except Exception as exc:
            logger.error("event store: rollback failed: {}", exc)

    def _healthy_now(self, now: float) -> bool:
        return self._failing_since is None or (now - self._failing_since) * 1000 < self._critical_after_ms

    def health(self) -> StoreHealth:
        failing = self._failing_since
        return StoreHealth(
            ok=self._db is not None and self._healthy_now(time.monotonic()),
            backlog=max(0, self._uncommitted),
            committed=self._committed,
            failing_since_ms=None if failing is None else int((time.time() - (time.monotonic() - failing)) * 1000),
            last_error=self._last_error if failing is not None else None,
            durable_wait_ms=self.durable_wait_ms(),
            last_batch=self._last_batch,
            last_commit_ms=round(self._last_commit_ms, 2),
        )

    def durable_wait_ms(self) -> int:
        """How long the oldest durable write still waiting for its commit has waited."""
        with self._count_lock:
            waiting = self._durable_waiting
            while waiting and waiting[0][1].done():
                waiting.popleft()
            return int((time.monotonic() - waiting[0][0]) * 1000) if waiting else 0

    # ------------------------------------------------------------- reading
    def run_job(self, fn: Callable[[aiosqlite.Connection], Coroutine[Any, Any, Any]]) -> concurrent.futures.Future[Any]:
        """Run ``fn(db)`` in the writer's order (after everything appended before it)."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._enqueue(_Job(fn, future))
        return future

    async def _read(self, fn: Callable[[aiosqlite.Connection], Coroutine[Any, Any, Any]], consistent: bool = True) -> Any:
        """``fn`` on the reader connection; ``consistent``: once everything appended before is committed."""
        if self._readonly or self._writer is None:
            assert self._db is not None, "event store is not open"
            return await fn(self._db)
        if consistent and (self._queue or self._writing):
            barrier: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._enqueue(_Barrier(barrier))
            await asyncio.wrap_future(barrier)
        assert self._reader is not None, "event store is not open"
        return await fn(self._reader)

    async def query(
        self,
        *,
        position_id: str | None = None,
        types: tuple[str, ...] = (),
        type_prefixes: tuple[str, ...] = (),
        actor: str | None = None,
        correlation_id: str | None = None,
        since_ms: int | None = None,
        after_id: int | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        consistent: bool = True,
    ) -> list[Event]:
        """Events matching every given filter, oldest first (``consistent``: sees all prior appends;
        else what is committed, at once)."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("position_id", position_id), ("actor", actor), ("correlation_id", correlation_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        type_terms = []
        if types:
            type_terms.append(f"type IN ({', '.join('?' * len(types))})")
            args.extend(types)
        for prefix in type_prefixes:
            type_terms.append("substr(type, 1, ?) = ?")  # exact and case-sensitive, unlike LIKE
            args.extend((len(prefix), prefix))
        if type_terms:
            where.append("(" + " OR ".join(type_terms) + ")")
        if since_ms is not None:
            where.append("ts_ms >= ?")
            args.append(since_ms)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        sql = f"SELECT {_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"

        async def _q(db: aiosqlite.Connection) -> list[Event]:
            async with db.execute(sql, args) as cur:
                return [_row_to_event(tuple(r)) for r in await cur.fetchall()]

        rows = await self._read(_q, consistent)
        return rows[::-1] if newest_first else rows

    async def event_types(self, *, consistent: bool = False) -> list[str]:
        """Every event type the store holds, sorted (``tradebot events --type`` lists their families)."""

        async def _q(db: aiosqlite.Connection) -> list[str]:
            async with db.execute("SELECT DISTINCT type FROM events ORDER BY type") as cur:
                return [str(r[0]) for r in await cur.fetchall()]

        return await self._read(_q, consistent)

    async def positions(self, *, open_only: bool = True, consistent: bool = True) -> list[dict[str, Any]]:
        """The projection: one dict per position (its latest snapshot); ``consistent`` as in :meth:`query`."""
        sql = "SELECT position_id, data, last_event_id FROM positions"
        if open_only:
            sql += " WHERE is_open = 1"
        sql += " ORDER BY position_id"

        async def _q(db: aiosqlite.Connection) -> list[dict[str, Any]]:
            async with db.execute(sql) as cur:
                return [{**_decode_data(data), "position_id": pid, "last_event_id": last} for pid, data, last in await cur.fetchall()]

        return await self._read(_q, consistent)

    async def prune(self, older_than_ms: int) -> int:
        """Retention: delete events older than the cut-off, except those of open positions."""

        async def _q(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
                "DELETE FROM events WHERE ts_ms < ? AND (position_id IS NULL OR position_id NOT IN "
                "(SELECT position_id FROM positions WHERE is_open = 1))",
                (older_than_ms,),
            )
            await db.execute("DELETE FROM positions WHERE is_open = 0 AND updated_ts_ms < ?", (older_than_ms,))
            # The history of incarnations; current epochs live in memory, and
            # AUTOINCREMENT never hands out a deleted epoch again.
            await db.execute("DELETE FROM incarnations WHERE started_ms < ?", (older_than_ms,))
            await db.commit()
            return cur.rowcount

        if self._readonly or self._writer is None:
            raise RuntimeError("event store is not open for writing")
        return await asyncio.wrap_future(self.run_job(_q))


class _Prepared:
    """An event encoded for insertion (id and last_event_id added by the writer)."""

    __slots__ = ("event", "fence", "future", "on_refused", "row", "upsert")

    def __init__(
        self,
        event: Event,
        row: tuple[Any, ...],
        upsert: tuple[Any, ...] | None,
        future: concurrent.futures.Future[int] | None,
        fence: Fence | None,
        on_refused: Callable[[Fenced], None] | None,
    ) -> None:
        self.event = event
        self.row = row
        self.upsert = upsert
        self.future = future
        self.fence = fence
        self.on_refused = on_refused


def _fenced_event(exc: Fenced, ts_ms: int) -> Event:
    fence = exc.fence
    return Event(
        type=FENCED_EVENT,
        ts_ms=ts_ms,
        actor=fence.name,
        severity=Severity.WARNING,
        data={"epoch": fence.epoch, "current_epoch": exc.current, "urn": fence.urn, "refused": exc.operation},
    )


def _prepare(
    ev: Event,
    future: concurrent.futures.Future[int] | None,
    fence: Fence | None = None,
    on_refused: Callable[[Fenced], None] | None = None,
) -> _Prepared:
    row = (ev.ts_ms, ev.type, ev.actor, ev.position_id, ev.correlation_id, ev.symbol, ev.exchange, int(ev.severity), _encode(ev.data).decode())
    upsert = None
    if ev.projection is not None:
        proj = ev.projection
        missing = [k for k in PROJECTION_REQUIRED if k not in proj]
        if missing or not ev.position_id:
            raise ValueError(f"event {ev.type}: a projection needs position_id and {', '.join(PROJECTION_REQUIRED)}; missing {', '.join(missing) or 'position_id'}")
        bad = [k for k in ("exchange", "symbol", "state") if not isinstance(proj[k], str) or not proj[k]]
        if bad or not isinstance(proj["is_open"], bool):
            raise ValueError(f"event {ev.type}: projection {', '.join(bad) or 'is_open'} must be {'a non-empty string' if bad else 'true or false'}")
        upsert = (ev.position_id, proj["exchange"], proj["symbol"], proj["state"], int(bool(proj["is_open"])), _encode(proj).decode(), ev.ts_ms)
    return _Prepared(ev, row, upsert, future, fence, on_refused)


async def _call(fn: Callable[[], None]) -> None:
    fn()


async def _one(cur: aiosqlite.Cursor) -> tuple[Any, ...]:
    row = await cur.fetchone()
    assert row is not None, "an aggregate query returns one row"
    return tuple(row)


def _row_to_event(row: tuple[Any, ...]) -> Event:
    event_id, ts_ms, type_, actor, position_id, correlation_id, symbol, exchange, severity, data = row
    return Event(
        id=event_id,
        ts_ms=ts_ms,
        type=type_,
        actor=actor,
        position_id=position_id,
        correlation_id=correlation_id,
        symbol=symbol,
        exchange=exchange,
        severity=Severity(severity),
        data=_decode_data(data),
    )
