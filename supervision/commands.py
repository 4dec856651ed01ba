"""Control commands as the supervisor executes them.

The control server (adapters/control_server.py) has already authenticated
and validated each command; here it is recorded, checked for expiry at the
moment of execution, executed and answered. A command that fails changes
nothing. Commands that need I/O (positions) answer later, when the I/O
result comes back as a message, matched by request id.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pykka

from actors.position_view import trader_row
from adapters.venue_health import HealthReport, VenueHealthChanged
from core import logs
from core.config import LIVE_SAFE_KEYS, ConfigError, config_diff, load_config, merge_live
from core.events import Severity
from core.messages import BalanceSeen, ClosePosition, CommandReplied, ConfigChanged, ExecuteCommand, IntakeChanged, IOCompleted, Message, ReconcileNow, Shutdown, StatusAnswered, StatusQuery
from supervision.actor import handles

if TYPE_CHECKING:
    from supervision.actor import ManagedActor
    from supervision.supervisor import ChildSpec

    _Base = ManagedActor
else:
    _Base = object


class IntakeBlock(Message, frozen=True, kw_only=True):
    """From an actor: block new entries for ``reason`` (None: lift that block). ``key`` names the block."""

    key: str
    reason: str | None = None


class LastSeen(Message, frozen=True, kw_only=True):
    """From the store's fan-out: the latest committed event of a kind ``ctl status`` reports (reconcile, wave)."""

    kind: str
    ts_ms: int
    ok: bool = True


#: What a reconcile reports that it found wrong (any of them: not every position was verified).
_FINDINGS = ("untracked", "phantoms", "mismatches", "strays", "zombies")
#: event type -> (status key, ok)
_SEEN = {"sync.reconciled": ("reconcile", True), "sync.failed": ("reconcile", False), "intake.wave_processed": ("wave", True)}


def status_notes(supervisor: Callable[[], Any]) -> Callable[[list[Any]], None]:
    """A store subscriber (on the I/O loop, only tells): the supervisor hears of each reconcile and wave."""

    def note(events: list[Any]) -> None:
        ref = supervisor()
        if ref is None:
            return
        for e in events:
            seen = _SEEN.get(e.type)
            if seen is not None:
                try:
                    ref.tell(LastSeen(kind=seen[0], ts_ms=e.ts_ms, ok=seen[1]))
                    if e.type == "sync.reconciled" and not any(e.data.get(k) for k in _FINDINGS):
                        ref.tell(LastSeen(kind="verified", ts_ms=e.ts_ms))  # the exchange agreed with every position
                except pykka.ActorDeadError:
                    return

    return note


class CommandsMixin(_Base):
    """Mixed into :class:`Supervisor`; kept apart to keep each module small.

    (For the type checker it is a ``ManagedActor`` with the supervisor's state below.)
    """

    if TYPE_CHECKING:
        specs: dict[str, ChildSpec]
        refs: dict[str, pykka.ActorRef[Any]]
        restart_total: dict[str, int]
        given_up: dict[str, str]
        intake_blocks: dict[str, str]
        user_paused: bool
        config_path: str | None
        started_ms: int
        shutting_down: str | None
        feed: dict[str, Any]
        degraded: dict[str, str]
        on_config: Callable[[Any], None]
        _pending: dict[str, Any]

        @property
        def intake_open(self) -> bool: ...
        def children_of(self, kind: str) -> dict[str, pykka.ActorRef[Any]]: ...

    def __init__(self, **kwargs: Any) -> None:
        #: The latest health of each venue, as its executor reported it (``VenueHealthChanged``).
        self.venue_health: dict[str, HealthReport] = {}
        #: The latest reconcile and wave (``LastSeen``): kind -> (ts_ms, ok).
        self.last_seen: dict[str, tuple[int, bool]] = {}
        #: The account balance per venue, as the sync actor last read it (``BalanceSeen``).
        self.balances: dict[str, BalanceSeen] = {}
        super().__init__(**kwargs)

    @handles(BalanceSeen)
    def _on_balance_seen(self, msg: BalanceSeen) -> None:
        last = self.balances.get(msg.venue)
        if last is not None and msg.ts_ms < last.ts_ms:
            return
        if msg.balance is None and last is not None and last.balance is not None:
            msg = BalanceSeen(venue=msg.venue, ts_ms=last.ts_ms, balance=last.balance, error=msg.error)  # keep the last figures, say the read failed
        self.balances[msg.venue] = msg

    @handles(LastSeen)
    def _on_last_seen(self, msg: LastSeen) -> None:
        if msg.ts_ms >= self.last_seen.get(msg.kind, (0, True))[0]:
            self.last_seen[msg.kind] = (msg.ts_ms, msg.ok)

    @handles(ExecuteCommand)
    def _on_command(self, msg: ExecuteCommand) -> None:
        self.emit("control.command", {"command": msg.command, "args": msg.args}, correlation_id=msg.request_id)
        now = self.ctx.wall_ms()
        if now > msg.deadline_wall_ms:
            return self.reply(msg, error=f"command expired {now - msg.deadline_wall_ms} ms before it could run; not executed")
        handler = getattr(self, f"cmd_{msg.command.replace('-', '_')}", None)
        if handler is None:
            return self.reply(msg, error=f"unknown command {msg.command!r}")
        try:
            handler(msg)
        except Exception as exc:
            self.log.opt(exception=exc).error("command {} failed", msg.command)
            self.reply(msg, error=f"{msg.command} failed: {type(exc).__name__}: {exc}")

    def reply(self, msg: ExecuteCommand, result: Any = None, *, error: str | None = None) -> None:
        ok = error is None
        self.emit(
            "control.reply",
            {"command": msg.command, "ok": ok, "result": result, "error": error},
            correlation_id=msg.request_id,
            severity=Severity.INFO if ok else Severity.WARNING,
        )
        msg.reply_to.tell(CommandReplied(request_id=msg.request_id, ok=ok, result=result, error=error, correlation_id=msg.request_id))

    # ---------------------------------------------------------- queries
    @handles(StatusQuery)
    def _on_status_query(self, msg: StatusQuery) -> None:
        """The HTTP /health: the same status as ``ctl status``, without recording a command."""
        msg.reply_to.tell(StatusAnswered(status=self.status(), correlation_id=msg.correlation_id))

    def cmd_status(self, msg: ExecuteCommand) -> None:
        self.reply(msg, self.status())

    def status(self) -> dict[str, Any]:
        store = self.ctx.store.health()
        children = []
        for name, spec in self.specs.items():
            ref = self.refs.get(name)
            children.append(
                {
                    "name": name,
                    "kind": spec.kind,
                    "alive": bool(ref and ref.is_alive()),
                    "restarts": self.restart_total.get(name, 0),
                    "given_up": self.given_up.get(name),
                }
            )
        problems = []
        if not store.ok:
            problems.append(f"event store failing: {store.last_error} (backlog {store.backlog})")
        problems += [f"gave up on {n}: {r}" for n, r in self.given_up.items()]
        if self.feed.get("state") in ("dead", "disconnected", "backoff", "connect_failed"):
            problems.append(f"signal feed {self.feed['state']}")
        problems += [f"{c}: {p}" for c, p in sorted(self.degraded.items())]
        now = self.ctx.clock.now_ms()
        problems += [p for r in self.venue_health.values() for p in _venue_problems(r, now)]
        return {
            "healthy": not problems,
            "problems": problems,
            "pid": os.getpid(),
            "started_at_ms": self.started_ms,
            "uptime_s": round((now - self.started_ms) / 1000, 1),
            "intake": {"open": self.intake_open, "paused_by_user": self.user_paused, "blocked": dict(self.intake_blocks)},
            "positions": len(self.children_of("position")),
            "children": children,
            "store": {"ok": store.ok, "backlog": store.backlog, "committed": store.committed, "last_error": store.last_error, "last_commit_ms": store.last_commit_ms},
            "signal_feed": self.feed,
            "exchanges": {v: _venue_status(r, now) for v, r in sorted(self.venue_health.items())},
            "read_only": self.ctx.config.exchange.read_only,
            "venue": self.ctx.config.exchange.name,
            "mode": _mode(self.ctx.config),
            "last_reconcile": _seen(self.last_seen.get("reconcile"), now),
            "last_wave": _seen(self.last_seen.get("wave"), now),
            "last_verified": _seen(self.last_seen.get("verified"), now),
            "balance": {v: _balance(b, now) for v, b in sorted(self.balances.items())} or None,
            "shutting_down": self.shutting_down,
        }

    def cmd_positions(self, msg: ExecuteCommand) -> None:
        self._pending[msg.request_id] = msg
        self.io_call("positions", self.ctx.store.positions(open_only=True, consistent=False), correlation_id=msg.request_id)

    @handles(IOCompleted)
    def _on_io_completed(self, msg: IOCompleted) -> None:
        if msg.purpose == "positions":
            request = self._pending.pop(msg.correlation_id, None)
            if request is not None:
                self.reply(request, self.trader_rows(with_age(msg.result or [], self.ctx.clock.now_ms())), error=msg.error and f"could not read positions: {msg.error}")
        elif msg.purpose == "aged":
            request = self._pending.pop(msg.correlation_id, None)
            if request is not None:
                rows = aged_rows(msg.result or [], self.ctx.clock.now_ms())
                self.reply(request, rows, error=msg.error and f"could not read positions: {msg.error}")
        elif msg.purpose == "retention":
            if msg.error:
                self.emit("store.prune_failed", {"error": msg.error}, severity=Severity.ERROR)
            else:
                self.emit("store.pruned", {"deleted": msg.result, "retention_days": self.ctx.config.store.retention_days})

    def trader_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows with mark, stop kind, distance to the stop, unrealised PnL, trailing state (the dashboard's figures).

        Marks come from the mark book the dashboard registers (``mark_book``: what the price feed told
        it, read without waiting); without one the mark-based figures are None."""
        book = self.ctx.directory.lookup("mark_book") if self.ctx.directory is not None else None
        now, enabled = self.ctx.clock.now_ms(), self.ctx.config.trailing.enabled
        verified = self.last_seen.get("verified")
        out = []
        for r in rows:
            symbol = str(r.get("symbol"))
            tick, step = book.increments(symbol) if book is not None else (None, None)
            row = trader_row(r, book.latest(symbol) if book is not None else None, now, trailing_enabled=enabled, verified_ms=verified[0] if verified else None)
            out.append({**row, "tick_size": _s(tick), "step_size": _s(step)})
        return out

    def cmd_aged(self, msg: ExecuteCommand) -> None:
        self._pending[msg.request_id] = msg
        self.io_call("aged", self.ctx.store.positions(open_only=True, consistent=False), correlation_id=msg.request_id)

    def start_retention(self) -> None:
        cutoff = self.ctx.clock.now_ms() - self.ctx.config.store.retention_days * 86_400_000
        self.io_call("retention", self.ctx.store.prune(cutoff))

    # --------------------------------------------------------- positions
    def cmd_close(self, msg: ExecuteCommand) -> None:
        """``close TARGET``: the open position whose id is TARGET (any case), else every open one on the symbol TARGET."""
        symbol = msg.args["symbol"]
        positions = self.children_of("position")
        targets = {n: r for n, r in positions.items() if _id_matches(self.specs[n].name, symbol)}
        targets = targets or {n: r for n, r in positions.items() if _symbol_matches(self.specs[n].name, symbol)}
        if not targets:
            return self.reply(msg, error=f"no open position for {symbol}" + _open_ids(self.specs[n].name for n in positions))
        self._tell_close(targets, msg)
        self.reply(msg, {"closing": sorted(targets)})

    def cmd_close_all(self, msg: ExecuteCommand) -> None:
        targets = self.children_of("position")
        self._tell_close(targets, msg)
        self.reply(msg, {"closing": sorted(targets)})

    def _tell_close(self, targets: dict[str, pykka.ActorRef], msg: ExecuteCommand) -> None:
        for ref in targets.values():
            try:
                ref.tell(ClosePosition(reason="user command", correlation_id=msg.request_id))
            except pykka.ActorDeadError:
                pass

    # ------------------------------------------------------------ intake
    def cmd_pause(self, msg: ExecuteCommand) -> None:
        changed = not self.user_paused
        if changed:
            self.user_paused = True
            self.emit("intake.paused", {"by": "control"}, durable=True)
            self.publish_intake()
        self.reply(msg, {"paused": True, "changed": changed, "note": "open positions stay protected"})

    def cmd_resume(self, msg: ExecuteCommand) -> None:
        changed = self.user_paused
        if changed:
            self.user_paused = False
            self.emit("intake.resumed", {"by": "control"}, durable=True)
            self.publish_intake()
        self.reply(msg, {"paused": False, "changed": changed, "still_blocked_by": dict(self.intake_blocks)})

    @handles(IntakeBlock)
    def _on_intake_block(self, msg: IntakeBlock) -> None:
        self._set_blocks({msg.key: msg.reason}, cause=msg.key)

    @handles(VenueHealthChanged)
    def _on_venue_health(self, msg: VenueHealthChanged) -> None:
        """A venue's executor says its health changed: FATAL, unreachable or maintenance block intake."""
        r = msg.report
        self.venue_health[r.venue] = r
        blocks = {
            f"exchange-fatal:{r.venue}": f"exchange {r.venue} refuses our key (FATAL: {'; '.join(r.fatal.values())}); stops stay as they are; clears when an authenticated call succeeds" if r.fatal else None,
            f"exchange-unreachable:{r.venue}": f"exchange {r.venue} unreachable since {_iso(r.unreachable_since_ms)}; open positions keep their stops" if r.unreachable_since_ms is not None else None,
            f"exchange-maintenance:{r.venue}": f"exchange {r.venue} in maintenance since {_iso(r.maintenance_since_ms)}; probing" if r.maintenance_since_ms is not None else None,
            f"exchange-banned:{r.venue}": f"exchange {r.venue} banned our IP until {_iso(r.banned_until_ms)}; reads and entries wait, stops on the venue stay live" if r.banned_until_ms is not None else None,
        }
        self._set_blocks(blocks, cause=f"exchange:{r.venue}")

    def _set_blocks(self, blocks: dict[str, str | None], *, cause: str) -> None:
        """Add (reason) or lift (None) intake blocks; the intake hears of it if that changed anything."""
        before, changed = self.intake_open, False
        for key, reason in blocks.items():
            if reason is None:
                changed |= self.intake_blocks.pop(key, None) is not None
            elif self.intake_blocks.get(key) != reason:
                self.intake_blocks[key] = reason
                changed = True
        if changed:
            self.emit("intake.blocks_changed", {"cause": cause, "open": self.intake_open, "was_open": before, "blocked": dict(self.intake_blocks)}, severity=Severity.INFO if self.intake_open else Severity.WARNING)
            self.publish_intake()

    def publish_intake(self) -> None:
        note = IntakeChanged(open=self.intake_open, reasons=tuple(self.intake_blocks.values()) + (("paused by user",) if self.user_paused else ()))
        for ref in self.children_of("intake").values():
            try:
                ref.tell(note)
            except pykka.ActorDeadError:
                pass

    # ------------------------------------------------------------ config
    def cmd_reload(self, msg: ExecuteCommand) -> None:
        if not self.config_path:
            return self.reply(msg, error="this bot was started without a config file; nothing to reload")
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            return self.reply(msg, error=f"config not reloaded, nothing changed: {exc}")
        changed = config_diff(self.ctx.config, new)
        applied = sorted(k for k in changed if k in LIVE_SAFE_KEYS)
        needs_restart = sorted(k for k in changed if k not in LIVE_SAFE_KEYS)
        if applied:
            effective = merge_live(self.ctx.config, new, applied)
            self.ctx = dataclasses.replace(self.ctx, config=effective)
            self.on_config(effective)
            logs.set_level(effective.logging.level)
            for ref in self.refs.values():
                try:
                    ref.tell(ConfigChanged(config=effective, applied=tuple(applied)))
                except pykka.ActorDeadError:
                    pass
        self.emit("config.reloaded", {"applied": applied, "requires_restart": needs_restart, "changes": {k: [str(a), str(b)] for k, (a, b) in changed.items()}})
        self.reply(msg, {"applied": applied, "requires_restart": needs_restart, "unchanged": not changed})

    # ------------------------------------------------------ reconcile
    def cmd_sync(self, msg: ExecuteCommand) -> None:
        self._ask_sync(msg, None)

    def cmd_zombies(self, msg: ExecuteCommand) -> None:
        self._ask_sync(msg, msg.args.get("dry_run"))

    def _ask_sync(self, msg: ExecuteCommand, dry_run: bool | None) -> None:
        if self.ctx.directory is None or not self.ctx.directory.tell("sync", ReconcileNow(request=msg, dry_run=dry_run)):
            self.reply(msg, error="no sync actor is running")

    # ---------------------------------------------------------- shutdown
    def cmd_shutdown(self, msg: ExecuteCommand) -> None:
        self.reply(msg, {"shutting_down": True, "stops": "left on the exchange"})
        self.actor_ref.tell(Shutdown(reason="control command"))


def _symbol_matches(child_name: str, symbol: str) -> bool:
    """Position children are named ``position:<SYMBOL>:<id>`` (SYMBOL without separators)."""
    parts = child_name.split(":")
    plain = symbol.split(":")[0].replace("/", "")
    return len(parts) >= 2 and parts[1] == plain


def _id_matches(child_name: str, position_id: str) -> bool:
    """``position:<SYMBOL>:<id>``: the id, compared without case (the control path upper-cases its argument)."""
    parts = child_name.split(":")
    return len(parts) >= 3 and parts[-1].upper() == position_id.upper()


def _open_ids(child_names: Any) -> str:
    ids = sorted(f"{n.split(':')[-1]} ({n.split(':')[1]})" for n in child_names if n.count(":") >= 2)
    return f" (no open position has that id or symbol; open: {', '.join(ids)})" if ids else ""


def _iso(ms: int | None) -> str:
    if ms is None:
        return "never"
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _s(value: Any) -> str | None:
    return None if value is None else str(value)


def _seen(seen: tuple[int, bool] | None, now_ms: int) -> dict[str, Any] | None:
    if seen is None:
        return None
    return {"at": _iso(seen[0]), "ts_ms": seen[0], "ago_s": max(0, now_ms - seen[0]) // 1000, "ok": seen[1]}


def _balance(b: BalanceSeen, now_ms: int) -> dict[str, Any]:
    """``ctl status``'s balance of one venue: exact Decimal strings, when it was read (None: unknown)."""
    r = b.balance
    return {
        "asset": getattr(r, "asset", None),
        "free": _s(getattr(r, "free", None)),
        "used": _s(getattr(r, "used", None)),
        "total": _s(getattr(r, "total", None)),
        "at": _iso(b.ts_ms) if r is not None else None,
        "ts_ms": b.ts_ms if r is not None else None,
        "ago_s": max(0, now_ms - b.ts_ms) // 1000 if r is not None else None,
        "last_error": b.error,
    }


def _mode(config: Any) -> str:
    """paper / testnet / live: what money the bot trades with."""
    if config.exchange.name == "paper":
        return "paper"
    return "testnet" if config.exchange.testnet else "live"


def _venue_problems(r: HealthReport, now_ms: int) -> list[str]:
    """What ``ctl status`` says of a venue that is not fine (a FATAL one first: it needs a human)."""
    out = []
    if r.fatal:
        out.append(f"CRITICAL: exchange {r.venue} refuses our API key/permissions since {_iso(r.fatal_since_ms)}: {'; '.join(r.fatal.values())} (new entries blocked; stops left in place)")
    if r.unreachable_since_ms is not None:
        out.append(
            f"exchange {r.venue} unreachable for {(now_ms - r.unreachable_since_ms) // 1000} s: last answer at {_iso(r.last_answer_ms)}, "
            f"{r.consecutive_failures} failed calls in a row ({r.last_error}); no new entries, open positions keep their stops"
        )
    if r.maintenance_since_ms is not None:
        out.append(f"exchange {r.venue} in maintenance for {(now_ms - r.maintenance_since_ms) // 1000} s: calls held, probing; no new entries")
    if r.banned_until_ms is not None:
        out.append(
            f"CRITICAL: exchange {r.venue} banned our IP until {_iso(r.banned_until_ms)} ({max(0, r.banned_until_ms - now_ms) // 1000} s left): {r.ban_reason}; "
            "reads and entries wait it out, a waiting stop or close probes slowly, stops already on the venue stay live; no new entries"
        )
    return out


def _venue_status(r: HealthReport, now_ms: int) -> dict[str, Any]:
    return {
        "ok": r.ok,
        "fatal": dict(r.fatal),
        "unreachable_for_s": None if r.unreachable_since_ms is None else (now_ms - r.unreachable_since_ms) // 1000,
        "maintenance_for_s": None if r.maintenance_since_ms is None else (now_ms - r.maintenance_since_ms) // 1000,
        "banned_until": None if r.banned_until_ms is None else _iso(r.banned_until_ms),
        "consecutive_failures": r.consecutive_failures,
        "last_answer_at": _iso(r.last_answer_ms),
        "last_success_at": _iso(r.last_success_ms),
    }


# ------------------------------------------------------------ aged positions
_HOUR_MS = 3_600_000


def with_age(rows: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """Position rows with their age (hours, from what the aged rule counts from), aged phase and exit price."""
    out = []
    for row in rows:
        start = row.get("aged_from_ms") or row.get("opened_ts_ms")
        age = round((now_ms - int(start)) / _HOUR_MS, 2) if start else None
        out.append({**row, "age_h": age, "aged_phase": row.get("aged_phase") or "", "aged_price": row.get("aged_price") or ""})
    return out


def aged_rows(rows: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    """``ctl aged``: positions on (or off) the aged path: phase, age, allowed loss, exit price, distance to the mark."""
    out = []
    for row in with_age(rows, now_ms):
        if not row.get("aged_phase"):
            continue
        price, mark = row.get("aged_price"), row.get("aged_mark")
        distance = None
        if price and mark and Decimal(str(mark)) > 0:
            distance = str(((Decimal(str(price)) - Decimal(str(mark))) / Decimal(str(mark)) * 100).quantize(Decimal("0.01")))
        mark_ms = row.get("aged_mark_ms")
        out.append({
            "position_id": row.get("position_id"), "symbol": row.get("symbol"), "side": row.get("side"), "phase": row["aged_phase"], "age_h": row["age_h"],
            "since": row.get("aged_since"), "loss_percent": row.get("aged_loss"), "exit_price": price or None, "exit_qty": row.get("aged_qty"),
            "exit_order_id": row.get("aged_order_id"), "mark": mark, "mark_age_s": round((now_ms - int(mark_ms)) / 1000) if mark_ms else None,
            "distance_percent": distance, "failures": row.get("aged_failures", 0),
            "tick_size": row.get("tick_size"), "step_size": row.get("step_size"),  # for printing on the market's grid
        })
    return out
