"""The process: wires the tree in dependency order and takes it down again.

Start order: logging -> I/O loop -> event store -> supervisor (which starts
its children: exchange-facing services, feeds, then actors) -> control
socket. Stop order is the reverse, and every step is bounded, so a stuck
actor can delay exit by at most ``shutdown_timeout_secs`` plus a margin.
aiosqlite's worker thread is non-daemon: the store is always closed, or the
process would hang on exit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
from loguru import logger

from adapters.control_server import ControlServer
from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from core import logs
from core.clock import Clock, RealClock
from core.config import Config
from core.events import Event, Severity
from core.messages import Shutdown
from supervision.actor import ActorContext
from supervision.directory import Directory
from supervision.supervisor import ChildSpec, Supervisor

EXIT_OK = 0
EXIT_SHUTDOWN_INCOMPLETE = 3
EXIT_SUPERVISOR_DIED = 70

ChildrenFactory = Callable[["Runtime"], list[ChildSpec]]


class Runtime:
    """Owns every long-lived resource of one bot process."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | Path | None = None,
        clock: Clock | None = None,
        children: ChildrenFactory | None = None,
        console: bool = True,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.config_path = str(config_path) if config_path else None
        self.clock: Clock = clock or RealClock()
        self._children = children or (lambda rt: [])
        self._console = console
        self._wall_ms = wall_ms or (lambda: time.time_ns() // 1_000_000)
        self.io = IOLoop()
        self.store: EventStore | None = None
        self.control: ControlServer | None = None
        self.supervisor: pykka.ActorRef | None = None
        self.directory = Directory()
        self.venue: Any = None  # set by the wiring
        self.metrics: Any = None  # set by the wiring (tradebot.ops)
        self.http: Any = None  # the HTTP server, if the wiring started one
        self.resources: list[Callable[[], None]] = []  # closers registered by the wiring, run in reverse
        self.after_start: list[Callable[[], None]] = []  # run once the tree is up (e.g. connect the signal feed)
        self.clean_stop = threading.Event()
        self._shutdown_requested: str | None = None
        self._stopped = False
        self._live = config

    # ------------------------------------------------------------- start
    def start(self) -> Runtime:
        cfg = self.config
        sys.setswitchinterval(cfg.runtime.gil_switch_interval_us / 1_000_000)
        logs.setup_logging(
            cfg.log_dir,
            level=cfg.logging.level,
            console_level=cfg.logging.console_level if self._console else None,
            rotation_bytes=cfg.logging.rotation_mb * 1024 * 1024,
            retention_files=cfg.logging.retention_files,
        )
        try:
            self.io.start()
            self.store = EventStore(
                cfg.store_path,
                self.io,
                batch_max=cfg.store.batch_max,
                busy_timeout_ms=cfg.store.busy_timeout_ms,
                critical_after_ms=cfg.store.critical_after_ms,
            ).open()
            self.store.append(Event(type="runtime.started", ts_ms=self.clock.now_ms(), actor="runtime", data={"pid": os.getpid(), "config": self.config_path, "data_dir": str(cfg.data_dir)}))
            ctx = ActorContext(clock=self.clock, io=self.io, store=self.store, config=cfg, directory=self.directory, wall_ms=self._wall_ms)
            self.supervisor = Supervisor.start(ctx=ctx, children=self._children(self), config_path=self.config_path, clean_stop=self.clean_stop, on_config=self._on_config, on_stopped=self._on_supervisor_stopped)
            self.control = ControlServer(
                cfg.control_socket,
                self.io,
                self.store,
                lambda: self.supervisor,
                max_ttl_ms=lambda: self.live_config().control.command_ttl_secs * 1000,
                wall_ms=self._wall_ms,
            )
            self.control.start()
            for hook in self.after_start:
                hook()
        except BaseException:
            self.stop()
            raise
        logs.console_logger().info("tradebot running (pid {}); data in {}", os.getpid(), cfg.data_dir)
        return self

    def live_config(self) -> Config:
        """The config in force (after any live reload)."""
        return self._live

    def _on_config(self, config: Config) -> None:
        self._live = config

    def _on_supervisor_stopped(self, reason: str) -> None:
        if self._shutdown_requested is None:
            self._shutdown_requested = reason

    # -------------------------------------------------------------- wait
    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM request a graceful shutdown (also during start-up)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: self.request_shutdown(signal.Signals(signum).name))

    def request_shutdown(self, reason: str) -> None:
        if self._shutdown_requested is None:
            self._shutdown_requested = reason
            logs.console_logger().info("shutdown requested: {}", reason)
        if self.supervisor is not None:
            try:
                self.supervisor.tell(Shutdown(reason=reason))
            except pykka.ActorDeadError:
                pass

    def run_until_stopped(self, duration_s: float | None = None, *, install_signals: bool = True) -> int:
        """Block until the supervisor stops (signal, ``ctl shutdown``, duration, crash)."""
        if install_signals:
            self.install_signal_handlers()
        if self._shutdown_requested is not None:  # asked for while we were starting
            self.request_shutdown(self._shutdown_requested)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        assert self.supervisor is not None
        stopped = self.supervisor.actor_stopped
        while not stopped.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline and self._shutdown_requested is None:
                self.request_shutdown(f"--duration {duration_s:g} s elapsed")
        return self.stop()

    # -------------------------------------------------------------- stop
    def stop(self) -> int:
        """Bounded teardown in reverse start order; returns the exit code."""
        if self._stopped:
            return EXIT_OK
        self._stopped = True
        code = EXIT_OK
        budget_s = self.live_config().supervisor.shutdown_timeout_secs + 5
        if self.supervisor is not None:
            if self.supervisor.is_alive():
                self.request_shutdown(self._shutdown_requested or "runtime stop")
                if not self.supervisor.actor_stopped.wait(budget_s):
                    logger.error("supervisor did not finish shutting down within {} s", budget_s)
                    code = EXIT_SHUTDOWN_INCOMPLETE
            if not self.clean_stop.is_set() and code == EXIT_OK:
                logger.critical("the supervisor died; escalating: the process exits so it can be restarted and recover")
                code = EXIT_SUPERVISOR_DIED
        stragglers = [ref for ref in pykka.ActorRegistry.get_all()]
        for ref in stragglers:
            ref.stop(block=False)
        for ref in stragglers:
            ref.actor_stopped.wait(1.0)
        stuck = [str(ref) for ref in stragglers if ref.is_alive()]
        if stuck:
            logger.error("actors still running at exit (daemon threads, abandoned): {}", stuck)
            code = code or EXIT_SHUTDOWN_INCOMPLETE
        if self.control is not None:
            self.control.stop()
        for close in reversed(self.resources):
            try:
                close()
            except Exception as exc:
                logger.error("closing a resource failed: {}", exc)
        if self.store is not None:
            try:
                if self.io.loop.is_running():
                    self.store.append(Event(type="runtime.stopped", ts_ms=self.clock.now_ms(), actor="runtime", severity=Severity.INFO if code == EXIT_OK else Severity.ERROR, data={"exit_code": code, "reason": self._shutdown_requested}))
                self.store.close()
            except Exception as exc:
                logger.critical("event store did not close cleanly: {}", exc)
                code = code or EXIT_SHUTDOWN_INCOMPLETE
        self.io.stop()
        self.clock.close()
        logs.console_logger().info("tradebot stopped (exit code {})", code)
        logs.shutdown_logging()
        return code
