"""The supervisor: builds the actor tree, restarts what fails, shuts down cleanly.

pykka gives actors but no supervision. This is ours, after Erlang/OTP:

* children start in the order given (dependencies first) and are registered
  by name; dynamic children (one per position) join with ``StartChild``;
* a failed child (``ChildFailed``, or found dead by the liveness check, which
  also catches a death in ``on_start``) is replaced one-for-one by a fresh
  actor, which rebuilds its state from the event store in ``started()``;
* restart intensity: more than ``max_restarts`` within ``restart_window_secs``
  and the child is given up: new entries stop (intake blocked), protection of
  what is open continues, and a critical event is recorded;
* start-up gate: intake stays closed until the first reconcile succeeded *and*
  every position owner rebuilt at start has checked its orders on the exchange
  (``OwnerRecovered``, or it stopped: the position was closed), at most
  ``supervisor.recovery_wait_secs`` (then it opens with an error event naming
  the owners that never reported);
* ``Shutdown`` stops intake, asks every child to drain (finish in-flight work,
  then stop), waits for them up to ``shutdown_timeout_secs`` and stops itself.
  Stop orders on the exchange are left alone on purpose.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import pykka

from adapters.read_only import READ_ONLY_REASON
from core.events import Severity
from core.messages import (
    ChildFailed,
    ChildStopped,
    Drain,
    DrainDeadline,
    FeedStatus,
    HealthChanged,
    Message,
    OwnerRecovered,
    ReconcileFinished,
    RestartChild,
    Shutdown,
    StartChild,
    Tick,
)
from supervision.actor import ActorContext, ManagedActor, handles
from supervision.commands import CommandsMixin
from supervision.directory import Directory


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """How to (re)start one child.

    ``factory(name, ctx)`` starts the actor and returns its ref. ``kind``
    groups children in status and in shutdown order (positions drain last).
    ``restart``: "permanent" children are replaced when they stop or fail;
    "transient" ones only when they fail (a closed position stays stopped).
    """

    name: str
    factory: Callable[[str, ActorContext], pykka.ActorRef]
    kind: str = "service"
    restart: str = "permanent"


class _RestartDue(Message, frozen=True, kw_only=True):
    """Internal: the restart back-off of a child has elapsed."""

    name: str


class _RecoveryDeadline(Message, frozen=True, kw_only=True):
    """Internal: the bounded wait for the recovered owners has elapsed."""


_DRAIN_ORDER = {"intake": 0, "service": 1, "position": 2}
_STARTUP = "startup-reconcile"
_RECOVERY = "startup-recovery"


class Supervisor(CommandsMixin, ManagedActor):
    """Root of the tree. Its own failure is escalated to the runtime (process exit)."""

    def __init__(
        self,
        *,
        ctx: ActorContext,
        children: list[ChildSpec],
        config_path: str | None = None,
        clean_stop: threading.Event | None = None,
        on_config: Callable[[Any], None] | None = None,
        on_stopped: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(name="supervisor", ctx=ctx)
        self.clean_stop = clean_stop or threading.Event()
        self.on_config = on_config or (lambda config: None)
        self.on_stopped = on_stopped or (lambda reason: None)
        self._initial = list(children)
        self.specs: dict[str, ChildSpec] = {}
        self.refs: dict[str, pykka.ActorRef] = {}
        self.restarts: dict[str, collections.deque[int]] = collections.defaultdict(collections.deque)
        self.restart_total: dict[str, int] = collections.defaultdict(int)
        self.given_up: dict[str, str] = {}
        self.intake_blocks: dict[str, str] = {}
        self.user_paused = False
        self.config_path = config_path
        self.started_ms = 0
        self.shutting_down: str | None = None
        self._draining: set[str] = set()
        self._pending: dict[str, Any] = {}
        self._suspects: set[str] = set()
        self.feed: dict[str, Any] = {"state": "none"}
        self.degraded: dict[str, str] = {}  # component -> problem (HealthChanged)
        self.recovering: set[str] = set()  # owners rebuilt at start that have not reported yet
        self._recovery_started_ms = 0

    # ----------------------------------------------------------- start
    def started(self) -> None:
        self.started_ms = self.ctx.clock.now_ms()
        self.user_paused = self._restore_pause()
        if any(c.name == "sync" for c in self._initial):
            self.intake_blocks[_STARTUP] = "waiting for the first reconcile with the exchange"
        if self.ctx.config.exchange.read_only:
            self.intake_blocks["read-only"] = READ_ONLY_REASON
        self.recovering = {c.name for c in self._initial if c.kind == "position"}
        if self.recovering:
            self._recovery_started_ms = self.started_ms
            self.intake_blocks[_RECOVERY] = self._recovery_reason()
            self.after(self.ctx.config.supervisor.recovery_wait_secs * 1000, _RecoveryDeadline())
        self.emit("supervisor.started", {"children": [c.name for c in self._initial], "intake_paused": self.user_paused})
        for spec in self._initial:
            self._start(spec)
        cfg = self.ctx.config
        self.every(cfg.supervisor.child_check_interval_ms, "child_check")
        self.every(cfg.store.prune_interval_secs * 1000, "retention", first_delay_ms=5_000)

    def _restore_pause(self) -> bool:
        last = self.load_events(actor=self.name, types=("intake.paused", "intake.resumed"), newest_first=True, limit=1)
        return bool(last) and last[0].type == "intake.paused"

    def _ctx_for_children(self) -> ActorContext:
        if self.ctx.directory is None:
            self.ctx = dataclasses.replace(self.ctx, directory=Directory())
        return dataclasses.replace(self.ctx, supervisor=self.actor_ref)

    def _start(self, spec: ChildSpec) -> None:
        self.specs[spec.name] = spec
        try:
            ref = spec.factory(spec.name, self._ctx_for_children())
        except Exception as exc:
            self.emit("supervisor.child_start_failed", {"child": spec.name, "error": f"{type(exc).__name__}: {exc}"}, severity=Severity.ERROR)
            self._on_child_down(spec.name, f"{type(exc).__name__}: {exc}")
            return
        self.refs[spec.name] = ref
        self.ctx.directory.register(spec.name, ref)
        self.log.debug("started {} ({})", spec.name, ref.actor_urn)
        if spec.kind == "intake":
            self.publish_intake()

    # --------------------------------------------------------- failures
    @handles(ChildFailed)
    def _on_child_failed(self, msg: ChildFailed) -> None:
        ref = self.refs.get(msg.name)
        if ref is None or ref.actor_urn != msg.actor_urn:
            return  # an older incarnation; already replaced
        self._forget(msg.name)
        where = " during start" if msg.during_start else ""
        self.emit("supervisor.child_failed", {"child": msg.name, "error": msg.error, "during_start": msg.during_start}, severity=Severity.ERROR)
        self.log.error("child {} failed{}: {}", msg.name, where, msg.error)
        self._on_child_down(msg.name, msg.error)

    @handles(ChildStopped)
    def _on_child_stopped(self, msg: ChildStopped) -> None:
        ref = self.refs.get(msg.name)
        if ref is None or ref.actor_urn != msg.actor_urn:
            return
        self._forget(msg.name)
        if self.shutting_down:
            self._draining.discard(msg.name)
            return self._finish_shutdown_if_done()
        spec = self.specs.get(msg.name)
        self._recovered(msg.name)  # an owner that stopped on purpose (its position closed) has reported
        if spec is not None and spec.restart == "permanent":
            self.emit("supervisor.child_exited", {"child": msg.name}, severity=Severity.WARNING)
            self._on_child_down(msg.name, "stopped unexpectedly")
        else:
            self.specs.pop(msg.name, None)
            self.emit("supervisor.child_done", {"child": msg.name}, severity=Severity.DEBUG)

    @handles(RestartChild)
    def _on_restart_request(self, msg: RestartChild) -> None:
        ref = self.refs.get(msg.name)
        if ref is None:
            return
        self._forget(msg.name)
        self.emit("supervisor.child_restart_requested", {"child": msg.name, "reason": msg.reason}, severity=Severity.WARNING)
        try:
            ref.stop(block=False)  # a stuck actor never reads this; it is fenced out by its urn
        except pykka.ActorDeadError:
            pass
        self._on_child_down(msg.name, msg.reason)

    def _forget(self, name: str) -> None:
        ref = self.refs.pop(name, None)
        if ref is not None and self.ctx.directory is not None:
            self.ctx.directory.unregister(name, ref)

    def _on_child_down(self, name: str, reason: str) -> None:
        if self.shutting_down:
            self._draining.discard(name)
            return self._finish_shutdown_if_done()
        now = self.ctx.clock.now_ms()
        window_ms = self.ctx.config.supervisor.restart_window_secs * 1000
        history = self.restarts[name]
        while history and history[0] <= now - window_ms:
            history.popleft()
        if len(history) >= self.ctx.config.supervisor.max_restarts:
            self.given_up[name] = reason
            self.intake_blocks[f"restart-intensity:{name}"] = f"{name} failed {len(history) + 1} times within {window_ms // 1000} s"
            self.emit(
                "supervisor.restart_intensity_exceeded",
                {"child": name, "restarts": len(history), "window_secs": window_ms // 1000, "last_error": reason, "intake": "blocked"},
                severity=Severity.CRITICAL,
            )
            self.log.critical("giving up on {}: restart intensity exceeded; new entries stopped, protection continues", name)
            return
        history.append(now)
        self.after(self.ctx.config.supervisor.restart_backoff_ms, _RestartDue(name=name))

    @handles(_RestartDue)
    def _restart_now(self, msg: _RestartDue) -> None:
        name = msg.name
        spec = self.specs.get(name)
        if spec is None or self.shutting_down or name in self.refs:
            return
        self.restart_total[name] += 1
        self.emit("supervisor.child_restarted", {"child": name, "restarts_in_window": len(self.restarts[name])}, severity=Severity.WARNING)
        self._start(spec)

    @handles(StartChild)
    def _on_start_child(self, msg: StartChild) -> None:
        spec: ChildSpec = msg.spec
        if self.shutting_down:
            self.emit("supervisor.child_refused", {"child": spec.name, "reason": "shutting down"}, severity=Severity.WARNING)
            return
        if spec.name in self.refs:
            self.emit("supervisor.child_refused", {"child": spec.name, "reason": "already running"}, severity=Severity.WARNING)
            return
        self._start(spec)

    @handles(Tick)
    def _on_tick(self, msg: Tick) -> None:
        if msg.name == "child_check":
            self._check_liveness()
            self._check_store()
        elif msg.name == "retention":
            self.start_retention()

    def _check_liveness(self) -> None:
        """Find children that died without a report.

        pykka marks an actor stopped *before* its on_stop/on_failure hook runs,
        so a dead ref may have its report still on the way: it is only a
        silent death if it is still unreported at the next check.
        """
        if self.shutting_down:
            return
        suspects, self._suspects = self._suspects, set()
        for name, ref in list(self.refs.items()):
            if ref.is_alive():
                continue
            if ref.actor_urn in suspects:
                self._on_child_failed(ChildFailed(name=name, actor_urn=ref.actor_urn, error="died without reporting (found by liveness check)"))
            else:
                self._suspects.add(ref.actor_urn)

    def _check_store(self) -> None:
        """A slow store is a health problem (``store.slow``), not a failure: owners wait for their records."""
        limit_ms = self.ctx.config.store.durable_wait_secs * 1000
        h = self.ctx.store.health()
        slow = h.durable_wait_ms > limit_ms
        if slow and "store" not in self.degraded:
            self.degraded["store"] = f"durable writes waiting {h.durable_wait_ms / 1000:.1f} s (over store.durable_wait_secs = {limit_ms // 1000}); backlog {h.backlog} events; actors wait, nothing acts without its record"
            self.emit("store.slow", {"durable_wait_ms": h.durable_wait_ms, "backlog": h.backlog, "last_batch": h.last_batch, "last_commit_ms": h.last_commit_ms}, severity=Severity.WARNING)
        elif not slow and "store" in self.degraded and h.durable_wait_ms < limit_ms // 2:
            del self.degraded["store"]
            self.emit("store.recovered", {"backlog": h.backlog, "last_commit_ms": h.last_commit_ms})

    # ---------------------------------------------------------- intake
    @handles(FeedStatus)
    def _on_feed_status(self, msg: FeedStatus) -> None:
        self.feed = {"state": msg.state, **msg.info, "since_ms": self.ctx.clock.now_ms()}

    @handles(HealthChanged)
    def _on_health_changed(self, msg: HealthChanged) -> None:
        if msg.problem is None:
            self.degraded.pop(msg.component, None)
        else:
            self.degraded[msg.component] = msg.problem

    @handles(ReconcileFinished)
    def _on_reconcile_finished(self, msg: ReconcileFinished) -> None:
        """Intake opens only after a reconcile succeeded; a user's ctl sync is answered here."""
        if msg.request is not None:
            return self.reply(msg.request, msg.findings, error=None if msg.ok else f"reconcile failed: {msg.findings.get('error')}")
        before = self.intake_open
        if msg.ok:
            self.intake_blocks.pop(_STARTUP, None)
        elif _STARTUP in self.intake_blocks:
            self.intake_blocks[_STARTUP] = f"first reconcile failed ({msg.findings.get('error')}): protecting what is known, opening nothing new"
        if self.intake_open != before:
            self.emit("intake.reconcile_gate", {"open": self.intake_open, "ok": msg.ok, "by": "reconcile"})
            self.publish_intake()

    # -------------------------------------------------------- recovery
    def _recovery_reason(self) -> str:
        return f"waiting for {len(self.recovering)} recovered position(s) to check their stops on the exchange"

    @handles(OwnerRecovered)
    def _on_owner_recovered(self, msg: OwnerRecovered) -> None:
        self._recovered(msg.name)

    def _recovered(self, name: str) -> None:
        if name not in self.recovering:
            return
        self.recovering.discard(name)
        if self.recovering:
            self.intake_blocks[_RECOVERY] = self._recovery_reason()
            return
        before = self.intake_open
        self.intake_blocks.pop(_RECOVERY, None)
        self.emit("supervisor.recovery_complete", {"owners": sum(1 for c in self._initial if c.kind == "position"), "ms": self.ctx.clock.now_ms() - self._recovery_started_ms})
        self._gate_changed(before, "recovery")

    @handles(_RecoveryDeadline)
    def _on_recovery_deadline(self, msg: _RecoveryDeadline) -> None:
        if not self.recovering:
            return
        before = self.intake_open
        missing, self.recovering = sorted(self.recovering), set()
        self.intake_blocks.pop(_RECOVERY, None)
        wait_s = self.ctx.config.supervisor.recovery_wait_secs
        self.emit("supervisor.recovery_incomplete", {"missing": missing, "waited_secs": wait_s, "intake": "opens anyway; these owners keep trying and the guard checks them"}, severity=Severity.ERROR)
        self.log.error("{} recovered position(s) did not report within {} s: {}", len(missing), wait_s, ", ".join(missing))
        self._gate_changed(before, "recovery deadline")

    def _gate_changed(self, before: bool, by: str) -> None:
        if self.intake_open != before:
            self.emit("intake.reconcile_gate", {"open": self.intake_open, "ok": True, "by": by})
            self.publish_intake()

    @property
    def intake_open(self) -> bool:
        return not self.user_paused and not self.intake_blocks and not self.shutting_down

    def children_of(self, kind: str) -> dict[str, pykka.ActorRef]:
        return {n: r for n, r in self.refs.items() if self.specs[n].kind == kind}

    # -------------------------------------------------------- shutdown
    @handles(Shutdown)
    def _on_shutdown(self, msg: Shutdown) -> None:
        if self.shutting_down:
            return
        self.shutting_down = msg.reason
        self.emit("supervisor.shutdown_started", {"reason": msg.reason, "children": sorted(self.refs)})
        self.log.info("shutting down ({}): draining {} children; stop orders stay on the exchange", msg.reason, len(self.refs))
        self._draining = set(self.refs)
        for name, ref in sorted(self.refs.items(), key=lambda kv: _DRAIN_ORDER.get(self.specs[kv[0]].kind, 1)):
            try:
                ref.tell(Drain(reason=msg.reason))
            except pykka.ActorDeadError:
                self._draining.discard(name)
        self.after(self.ctx.config.supervisor.shutdown_timeout_secs * 1000, DrainDeadline())
        self._finish_shutdown_if_done()

    @handles(DrainDeadline)
    def _on_drain_deadline(self, msg: DrainDeadline) -> None:
        if self._draining:
            self.emit("supervisor.drain_timeout", {"still_running": sorted(self._draining)}, severity=Severity.ERROR)
            self._draining.clear()
        self._finish_shutdown_if_done()

    def _finish_shutdown_if_done(self) -> None:
        if self.shutting_down and not self._draining:
            self.emit("supervisor.stopped", {"reason": self.shutting_down})
            self.on_stopped(self.shutting_down)
            self.clean_stop.set()
            self.stop()
