"""Messages of the runtime itself: timers, supervision, control.

Commands are imperative, events past tense, read-outs reports. All are frozen
msgspec Structs (pykka does not copy messages), each with a process-unique
``msg_id`` and an optional ``correlation_id`` tying a reply to its request.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgspec

_ids = itertools.count(1)


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    msg_id: int = msgspec.field(default_factory=lambda: next(_ids))
    correlation_id: str = ""


# --------------------------------------------------------------- timers
class Tick(Message, frozen=True, kw_only=True):
    """A timer fired; ``name`` says which one."""

    name: str
    ts_ms: int


# ---------------------------------------------------------- supervision
class ChildFailed(Message, frozen=True, kw_only=True):
    """Told to the supervisor by a child that is dying (or died in on_start)."""

    name: str
    actor_urn: str
    error: str
    during_start: bool = False


class StartChild(Message, frozen=True, kw_only=True):
    """Ask the supervisor to start (and from then on supervise) a dynamic child."""

    spec: Any  # supervision.supervisor.ChildSpec (holds a factory, so not serialisable)


class RestartChild(Message, frozen=True, kw_only=True):
    """Ask the supervisor to replace a stuck child with a fresh one."""

    name: str
    reason: str


class ChildStopped(Message, frozen=True, kw_only=True):
    """A dynamic child finished its job and stopped on purpose (not a failure)."""

    name: str
    actor_urn: str


class OwnerRecovered(Message, frozen=True, kw_only=True):
    """Told to the supervisor by an owner rebuilt at start-up once it has checked its orders on the
    exchange (its recovery plan done): the intake waits for every recovered owner."""

    name: str
    state: str
    protected: bool


class Shutdown(Message, frozen=True, kw_only=True):
    reason: str


class Drain(Message, frozen=True, kw_only=True):
    """Shutdown request to a child: finish in-flight work, then stop."""

    reason: str


class DrainDeadline(Message, frozen=True, kw_only=True):
    """The supervisor's bound on how long children may take to drain."""


class IntakeChanged(Message, frozen=True, kw_only=True):
    """Told to intake children whenever opening new positions is allowed or not."""

    open: bool
    reasons: tuple[str, ...] = ()


class ClosePosition(Message, frozen=True, kw_only=True):
    """Close this position at market (from a user command or the guard)."""

    reason: str


class FeedStatus(Message, frozen=True, kw_only=True):
    """From the intake: the signal feed's connection state (shown in status and health)."""

    state: str
    info: dict[str, Any] = {}


class HealthChanged(Message, frozen=True, kw_only=True):
    """From any actor: one of its components is degraded (``problem``) or fine again (None).

    Shown in ``ctl status`` under ``problems`` (status turns unhealthy) until cleared,
    e.g. ``component="stream:orders"``, ``problem="down for 12 s: polling every 30 s"``."""

    component: str
    problem: str | None = None


class BalanceSeen(Message, frozen=True, kw_only=True):
    """From the sync actor after each full read: the account balance it read with it (``ctl status``).

    ``balance`` is the venue's report (free / used / total as Decimals), None when the read failed
    (``error`` says why); ``ts_ms`` is when it was read."""

    venue: str
    ts_ms: int
    balance: Any = None
    error: str | None = None


class ConfigChanged(Message, frozen=True, kw_only=True):
    """Broadcast after a reload: the new config and the keys applied live."""

    config: Any
    applied: tuple[str, ...]


# -------------------------------------------------------------- control
class ExecuteCommand(Message, frozen=True, kw_only=True):
    """A validated control command for the supervisor; reply goes to ``reply_to``."""

    command: str
    args: dict[str, Any]
    request_id: str
    deadline_wall_ms: int
    reply_to: Any  # anything with tell(CommandReplied)


class StatusQuery(Message, frozen=True, kw_only=True):
    """Ask the supervisor for its status (what ``ctl status`` shows); the answer goes to ``reply_to``."""

    reply_to: Any  # anything with tell(StatusAnswered)


class StatusAnswered(Message, frozen=True, kw_only=True):
    status: dict[str, Any]


class CommandReplied(Message, frozen=True, kw_only=True):
    request_id: str
    ok: bool
    result: Any = None
    error: str | None = None


class IOCompleted(Message, frozen=True, kw_only=True):
    """Result of work an actor handed to the I/O loop (see ManagedActor.io_call)."""

    purpose: str
    result: Any = None
    error: str | None = None
    exception: Any = None  # the exception itself, for the receiver to classify


# ------------------------------------------------------------ reconcile
class ReconcileNow(Message, frozen=True, kw_only=True):
    """Run a full reconcile now (timer, startup, `tradebot ctl sync` / `zombies`)."""

    reply_to: Any = None
    request: Any = None  # the ExecuteCommand to answer, if a user asked
    dry_run: bool | None = None  # zombies: None = configured default
    #: The guard's check: the sync actor's stream-fed view will do, if the streams are live.
    cached_ok: bool = False


class ReconcileFinished(Message, frozen=True, kw_only=True):
    """To the supervisor (and the guard): a full reconcile ended."""

    ok: bool
    findings: dict[str, Any]
    snapshot: Any = None  # account_view.Snapshot: positions and open orders (read, or the stream-fed view)
    request: Any = None  # the ExecuteCommand that asked for it, if any


# ------------------------------------------------------------- liveness
class Probe(Message, frozen=True, kw_only=True):
    """Are you alive and handling messages? Answered by ``ManagedActor`` itself from its mailbox,
    so an actor stuck in a handler (or blocked on I/O) does not answer in time."""

    probe_id: int
    reply_to: Any  # ActorRef that gets ProbeAnswered


class ProbeAnswered(Message, frozen=True, kw_only=True):
    name: str
    probe_id: int
    actor_urn: str
