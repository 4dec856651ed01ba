"""``tradebot soak``: the chaos run, as a command a user runs on their own machine.

It starts the paper exchange in its own process with a fault profile
(transient errors, ambiguous timeouts, rejects, latency, partial fills), a
signal server that publishes generated waves over the exchange's markets, and
the real bot (``tradebot run``) on real price history at the profile's speed.
It SIGKILLs the bot at random moments and at chosen crash points
(``TRADEBOT_CRASH_POINT``), lets position owners and the intake crash now and
then (a hook enabled only by the environment this command gives the bot), and
restarts it each time. At the end it stops the signals and the faults, starts
the bot once more, reconciles, shuts it down gracefully, and prints the
verdict (:mod:`tradebot.soak_verdict`): computed from the exchange's own
record and from the event store, independently. Exit code 1 on any violation.

Profiles: ``short`` (about a minute, deterministic seed; part of ``make
test``) and ``long`` (15 minutes, for releases). Every rate can be set on the
command line. Everything lives in one directory (``--dir``, else a temporary
one, removed unless ``--keep`` or a violation).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import msgspec

from tradebot.soak_verdict import Row, Verdict, compute

SYMBOLS = ("BTCUSDT", "ETHUSDT", "LTCUSDT", "ADAUSDT", "XRPUSDT", "DOGEUSDT", "TRXUSDT")
WAVE_LIMIT = 3


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """One soak's knobs (every one settable from the command line)."""

    duration_s: float  # chaos time (the final reconcile comes on top)
    kills: int  # SIGKILLs at random moments
    crash_points: tuple[str, ...]  # then one run per point that kills itself there
    actor_crash_rate: float  # per message, position owners and the intake
    error_rate: float  # transient errors (network, 503), every call
    timeout_rate: float  # ambiguous timeouts (executed, then RequestTimeout) of order calls
    reject_rate: float  # the venue refuses (rate limit), every call
    latency_ms: tuple[int, int]
    partial_fill: float  # share of market orders that fill only in part
    speed: int  # price history replay speed
    wave_every_s: float
    signals_per_wave: int
    seed: int
    budget_ms: int = 3_000  # longest unprotected stretch while the bot runs (one protective round trip, retries included)
    recovery_budget_ms: int = 20_000  # ... and after a restart, once a kill left a position unprotected


# The crash rate is per message: owners get few (a mark inside an owner's calm band wakes
# nobody), so the short run needs 0.02 for several crashes in its minute (7-15 in trials).
PROFILES = {
    "short": Profile(duration_s=50, kills=1, crash_points=("after:intake.signal_received", "after:position.stop_move_sent"), actor_crash_rate=0.02,
                     error_rate=0.03, timeout_rate=0.01, reject_rate=0.01, latency_ms=(5, 30), partial_fill=0.2, speed=600, wave_every_s=4,
                     signals_per_wave=5, seed=7),
    "long": Profile(duration_s=900, kills=3, crash_points=("after:position.entry_filled", "after:position.stop_move_sent", "before:position.stop_placed", "after:intake.signal_received"),
                    actor_crash_rate=0.001, error_rate=0.05, timeout_rate=0.01, reject_rate=0.01, latency_ms=(5, 50), partial_fill=0.2, speed=300,
                    wave_every_s=15, signals_per_wave=6, seed=11),
}


def fault_plan(p: Profile) -> dict[str, Any]:
    """The paper exchange's FaultPlan for a profile (start-up calls are spared: the bot must be able to start)."""
    transient = {"network": round(p.error_rate * 0.6, 6), "exchange_unavailable": round(p.error_rate * 0.4, 6), "rate_limit": p.reject_rate}
    order_calls = ("create_order", "cancel_order")
    return {
        "error_rates": {"*": transient, "load_markets": {}, "set_leverage": {}, "set_position_mode": {}},
        "ambiguous_timeout_rate": dict.fromkeys(order_calls, p.timeout_rate),
        "latency_ms_min": p.latency_ms[0], "latency_ms_max": p.latency_ms[1], "partial_fill_prob": p.partial_fill, "seed": p.seed,
    }


def waves(p: Profile, rng: random.Random) -> list[dict[str, Any]]:
    n = int(p.duration_s / p.wave_every_s) + 2
    out = []
    for i in range(n):
        chosen = rng.sample(SYMBOLS, min(p.signals_per_wave, len(SYMBOLS)))
        out.append({"wave_offset_min": 15 * i, "signals": [{"symbol": s, "action": rng.choice(("buy", "sell")), "score_week": round(rng.random(), 4), "score_month": round(rng.random(), 4)} for s in chosen]})
    return out


def bot_config(p: Profile, data_dir: Path, port: int, n_waves: int) -> str:
    return f"""# written by tradebot soak
[paper]
mode = "process"
data_dir = "{data_dir}"
speed = {p.speed}
seed = {p.seed}
[exchange]
retry_base_delay_ms = 50
retry_max_delay_ms = 500
rate_limit_delay_ms = 200
[signals]
source = "url"
url = "ws://127.0.0.1:{port}/ws"
process_on_arrival = true
process_after_secs = 2
wave_limit = {WAVE_LIMIT}
buffer_factor = 2
max_open_positions = {len(SYMBOLS)}
min_free_balance = 0
max_signal_age_secs = {(n_waves + 4) * 900}
[position]
initial_stop_percent = 0.8
retry_delay_ms = 100
verify_interval_secs = 20
[trailing]
activation_percent = 0.3
callback_percent = 0.3
min_move_interval_secs = 2
min_improvement_percent = 0.05
[aged]
enabled = false
[feeds]
mark_interval_ms = 500
[sync]
interval_secs = 10
grace_secs = 5
[guard]
interval_secs = 5
[supervisor]
max_restarts = 30
recovery_wait_secs = 30
[demo]
signals_file = ""
[http]
port = 0
[logging]
console_level = "ERROR"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Soak:
    def __init__(self, profile: Profile, site: Path, *, out: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.p = profile
        self.site = site
        self.out = out
        self.quiet = quiet
        self.rng = random.Random(profile.seed)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.downtimes: list[tuple[int, int]] = []
        self.notes: list[str] = []
        self.crash_points_hit: list[str] = []
        self.started = time.monotonic()
        self._last_progress = 0.0
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")) if p)}
        self.env.pop("TRADEBOT_CRASH_POINT", None)
        self.env.pop("TRADEBOT_SOAK_ACTOR_CRASHES", None)

    # ----------------------------------------------------------- processes
    def _spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out = open(self.site / log, "ab")
        proc = subprocess.Popen([sys.executable, "-m", "tradebot", *args], cwd=self.site, env=env or self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def paper(self, method: str, *args: Any) -> Any:
        from adapters.paper.client import PaperClient

        async def go() -> Any:
            client = PaperClient(self.site / "var" / "paper.sock")
            try:
                return await client.call(method, *args)
            finally:
                await client.close()

        return asyncio.run(go())

    def ctl(self, *args: str) -> dict[str, Any]:
        res = subprocess.run([sys.executable, "-m", "tradebot", "ctl", *args, "--json"], cwd=self.site, env=self.env, capture_output=True, text=True, timeout=60)
        try:
            return dict(json.loads(res.stdout))
        except ValueError:
            return {"ok": False, "error": res.stderr.strip()}

    def _wait(self, predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            self.progress(what)
            time.sleep(0.2)
        raise TimeoutError(f"soak: timed out after {timeout_s:.0f} s waiting for {what} (logs in {self.site})")

    def progress(self, doing: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self._last_progress < 5):
            return
        self._last_progress = now
        print(f"soak {now - self.started:5.0f} s: {doing}; kills {len(self.downtimes)}, crash points hit {len(self.crash_points_hit)}/{len(self.p.crash_points)}", file=self.out, flush=True)

    # ---------------------------------------------------------------- run
    def run(self) -> Verdict:
        p = self.p
        from core.config import parse_config

        data_dir = parse_config("", base_dir=Path.cwd()).paper_data_dir
        port = free_port()
        plan = waves(p, self.rng)
        (self.site / "waves.jsonl").write_text("".join(json.dumps(w) + "\n" for w in plan))
        (self.site / "faults.json").write_text(json.dumps(fault_plan(p)))
        (self.site / "config.toml").write_text(bot_config(p, data_dir, port, len(plan)))
        self._spawn(["paper", "serve", "--faults", "faults.json"], "paper.log")
        self._wait(lambda: (self.site / "var" / "paper.sock").exists(), 60, "the paper exchange")
        signals = self._spawn(["signals", "serve", "--replay", "waves.jsonl", "--port", str(port), "--every", str(p.wave_every_s)], "signals.log")
        self.chaos()
        signals.send_signal(signal.SIGTERM)
        signals.wait(20)
        self.paper("set_faults", {})
        return self.finish()

    def chaos(self) -> None:
        """Runs of the bot, each ended by a SIGKILL: at random moments, then at each crash point."""
        p = self.p
        runs: list[str | None] = [None] * p.kills + list(p.crash_points)
        self.rng.shuffle(runs)
        deadline = self.started + p.duration_s
        hook = {"TRADEBOT_SOAK_ACTOR_CRASHES": f"{p.actor_crash_rate}:{p.seed}"} if p.actor_crash_rate > 0 else {}
        for i, point in enumerate([*runs, None]):
            env = {**self.env, **hook, **({"TRADEBOT_CRASH_POINT": point} if point else {})}
            started_ms = time.time_ns() // 1_000_000
            if self.downtimes:
                self.downtimes[-1] = (self.downtimes[-1][0], started_ms)
            bot = self._spawn(["run"], f"bot{i + 1}.log", env)
            last = i == len(runs)
            slot = (deadline - time.monotonic()) / (len(runs) - i + 1)  # what is left, shared by the runs left
            until = deadline if last else time.monotonic() + max(1.0, slot) * self.rng.uniform(0.6, 1.4)
            what = f"run {i + 1}/{len(runs) + 1}" + (f" (crash point {point})" if point else "")
            while time.monotonic() < until and bot.poll() is None:
                self.progress(what)
                time.sleep(0.1)
            if bot.poll() is None:
                bot.send_signal(signal.SIGKILL)
                if point:
                    self.notes.append(f"crash point {point} not reached in its run; killed at a random moment instead")
            elif point and bot.returncode == -signal.SIGKILL:
                self.crash_points_hit.append(point)
            elif bot.returncode != -signal.SIGKILL:
                self.notes.append(f"run {i + 1} exited by itself with code {bot.returncode} (see bot{i + 1}.log)")
            bot.wait(30)
            self.downtimes.append((time.time_ns() // 1_000_000, 2**62))

    def finish(self) -> Verdict:
        """The last run: no faults, no hooks; recover, reconcile, shut down gracefully; then the verdict."""
        from adapters.event_store import EventStore
        from adapters.io_loop import IOLoop

        self.downtimes[-1] = (self.downtimes[-1][0], time.time_ns() // 1_000_000)
        bot = self._spawn(["run"], "bot-final.log")
        self._wait(lambda: (s := self.ctl("status")).get("ok") and s["result"]["intake"]["open"], 90, "the final run to recover (intake open)")
        keys = ("untracked", "phantoms", "mismatches", "strays", "zombies")
        for _ in range(10):
            reply = self.ctl("sync")
            findings = reply.get("result") or {}
            if reply.get("ok") and not any(findings.get(k) for k in keys):
                break
            self.progress("final reconcile", force=True)
            time.sleep(2)
        else:
            self.notes.append(f"the final reconcile still had findings: {json.dumps({k: findings.get(k) for k in keys}, default=str)[:300]}")
        self._wait(lambda: int(self.paper("metrics")["unprotected_now"]) == 0, 60, "every position protected")
        metrics = self.paper("metrics")
        open_orders = self.paper("fetch_open_orders")
        bot.send_signal(signal.SIGTERM)
        code = bot.wait(60)
        if code != 0:
            self.notes.append(f"the final graceful shutdown exited with code {code}")
        paper = self.procs[0]
        paper.send_signal(signal.SIGTERM)
        paper.wait(30)
        state = json.loads((self.site / "var" / "paper-state.json").read_text())
        io = IOLoop("soak-verdict").start()
        try:
            store = EventStore(self.site / "var" / "tradebot.db", io, readonly=True).open()
            try:
                events = io.run(store.query(), 120)
                positions = io.run(store.positions(open_only=True), 60)
            finally:
                store.close()
        finally:
            io.stop()
        verdict = compute(state, events, downtimes=self.downtimes, wave_limit=WAVE_LIMIT, budget_ms=self.p.budget_ms, recovery_budget_ms=self.p.recovery_budget_ms,
                          final_open_orders=open_orders, final_metrics=metrics, open_positions=positions)
        verdict.figures.update({"elapsed_s": round(time.monotonic() - self.started, 1), "crash_points_hit": self.crash_points_hit, "final_exit_code": code, "notes": self.notes,
                                "profile": msgspec.to_builtins(self.p)})
        verdict.rows.append(Row(name="final graceful shutdown not clean", value=0 if code == 0 else 1, limit=0, source="bot"))
        record = {"downtimes": self.downtimes, "wave_limit": WAVE_LIMIT, "budget_ms": self.p.budget_ms, "recovery_budget_ms": self.p.recovery_budget_ms,
                  "final_open_orders": open_orders, "final_metrics": metrics, "open_positions": positions, "verdict": verdict.to_dict()}
        (self.site / "soak.json").write_text(json.dumps(record, indent=1, default=str))  # what the verdict was computed from, besides the two records
        return verdict

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def profile_from_args(args: Any) -> Profile:
    p = PROFILES[args.profile]
    changes: dict[str, Any] = {}
    for name in ("duration_s", "kills", "actor_crash_rate", "error_rate", "timeout_rate", "reject_rate", "partial_fill", "speed", "wave_every_s", "seed", "budget_ms"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if args.crash_point is not None:
        changes["crash_points"] = tuple(x for x in args.crash_point if x)
    if args.latency_ms is not None:
        lo, _, hi = args.latency_ms.partition(",")
        changes["latency_ms"] = (int(lo), int(hi or lo))
    return msgspec.structs.replace(p, **changes)


def main(args: Any) -> int:
    try:
        profile = profile_from_args(args)
    except (ValueError, TypeError) as exc:
        print(f"tradebot soak: {exc}", file=sys.stderr)
        return 2
    site = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="tbsoak-", dir="/tmp"))
    site.mkdir(parents=True, exist_ok=True)
    soak = Soak(profile, site, quiet=args.quiet)
    print(f"tradebot soak: profile {args.profile}, seed {profile.seed}, {profile.duration_s:g} s of chaos, {profile.kills} random kill(s), crash points {', '.join(profile.crash_points) or 'none'}; in {site}", file=sys.stderr, flush=True)
    try:
        verdict = soak.run()
    except (TimeoutError, OSError, subprocess.SubprocessError) as exc:
        print(f"tradebot soak: {exc}", file=sys.stderr)
        return 3
    finally:
        soak.stop_all()
    if args.json:
        print(json.dumps(verdict.to_dict(), indent=1, default=str))
    else:
        print(verdict.table())
        print(f"figures: {json.dumps({k: v for k, v in verdict.figures.items() if k != 'profile'}, default=str)}")
    if verdict.ok and not args.keep and not args.dir:
        shutil.rmtree(site, ignore_errors=True)
    elif not verdict.ok:
        print(f"logs, exchange state and event store kept in {site}", file=sys.stderr)
    return 0 if verdict.ok else 1
