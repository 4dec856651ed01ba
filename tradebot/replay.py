"""``tradebot replay``: what would these protection settings have done, with the real bot on real history.

One run per configuration: the real actor tree (supervisor, price feed, sync,
guard, the signal intake with its wave limit, a position actor per entry) on
a :class:`~core.clock.VirtualClock`, against the in-process paper exchange
replaying recorded prices (``paper.data_dir``/prices; engine time is history
time), with signals read from a file and told to the intake at their wave's
time. Time moves only once the tree is quiet (:mod:`tradebot.replay_quiet`),
to the next due timer, price tick or signal: same inputs, same report.

The replay sets a few things on top of the embedded defaults, before the
user's files and ``--set`` (:data:`REPLAY_BASE`): no streams (the feed and the
sync poll on the clock), the feed polls and the exchange ticks once per price
tick, faults off unless ``--faults`` names a profile (:data:`FAULT_PROFILES`), the
signal intake processes a wave on arrival.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from core.signal_protocol import WAVE_MS, encode, wave_of

#: Settings the replay needs (under the user's files and --set).
REPLAY_BASE: dict[str, Any] = {
    "exchange": {"name": "paper", "retry_base_delay_ms": 50, "retry_max_delay_ms": 500},
    "paper": {"mode": "in_process", "tick_interval_ms": 15_000, "slippage_bps": Decimal(0)},
    "feeds": {"use_streams": False, "mark_interval_ms": 15_000},
    "sync": {"use_streams": False},
    "signals": {"source": "url", "process_on_arrival": True, "process_after_secs": 1},
    "demo": {"signals_file": ""},
    "logging": {"console_level": "ERROR"},
    # The supervisor's liveness sweep (a child dead without a report) once per price tick, not per second:
    # the same checks, a fifteenth of the clock steps.
    "supervisor": {"child_check_interval_ms": 15_000},
}
#: A signal is told to the intake this long after its wave opens.
DELIVERY_DELAY_MS = 1_000


# ------------------------------------------------------------------ config
def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, Decimal, float)):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ValueError(f"cannot write {v!r} as TOML")


def to_toml(raw: dict[str, Any]) -> str:
    lines = [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, body in raw.items():
        if isinstance(body, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in body.items())
    return "\n".join(lines) + "\n"


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``section.key=v1,v2``: the key and its values (each parsed as a TOML value, else a string)."""
    key, eq, values = text.partition("=")
    if not eq or "." not in key:
        raise ValueError(f"--set {text!r}: expected section.key=value[,value...]")
    out: list[Any] = []
    for part in values.split(","):
        try:
            out.append(tomllib.loads(f"v = {part.strip()}", parse_float=Decimal)["v"])
        except tomllib.TOMLDecodeError:
            out.append(part.strip())
    return key.strip(), out


def with_key(raw: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    *path, last = dotted.split(".")
    nested: dict[str, Any] = {last: value}
    for part in reversed(path):
        nested = {part: nested}
    return merge(raw, nested)


@dataclass
class Variant:
    """One configuration to replay: its label and its merged TOML."""

    label: str
    raw: dict[str, Any]
    #: A fault profile (a name in :func:`fault_profiles`) or a FaultPlan JSON file; "off": none.
    faults: str = "off"


def variants(config_files: list[Path], sets: list[str], faults: list[str] | None = None) -> list[Variant]:
    """One per --config file (or the defaults), times each value of each --set key (a grid), times each fault profile."""
    bases = [Variant("defaults", REPLAY_BASE)] if not config_files else [Variant(p.stem, merge(REPLAY_BASE, tomllib.loads(p.read_text(), parse_float=Decimal))) for p in config_files]
    out = bases
    for text in sets:
        key, values = parse_set(text)
        out = [Variant(v.label if len(values) == 1 and len(out) > 1 else (f"{key}={_show(x)}" if v.label == "defaults" else f"{v.label} {key}={_show(x)}"), with_key(v.raw, key, x)) for v in out for x in values]
    profiles = faults or ["off"]
    for name in profiles:
        fault_plan_of(name)  # an unknown profile fails before any run
    if len(profiles) > 1 or profiles != ["off"]:
        out = [Variant(v.label if len(profiles) == 1 and len(out) > 1 else (f"faults={name}" if v.label == "defaults" else f"{v.label} faults={name}"), v.raw, name) for v in out for name in profiles]
    return out


#: Start-up calls are spared, as ``tradebot soak`` spares them: the bot must be able to start.
_SPARED: dict[str, dict[str, float]] = {"load_markets": {}, "set_leverage": {}, "set_position_mode": {}}


def fault_profiles() -> dict[str, dict[str, Any]]:
    """Named fault profiles (FaultPlan fields) for ``--faults``.

    ``off``: none. ``short`` and ``long``: ``tradebot soak``'s profiles (:func:`tradebot.soak.fault_plan`:
    transient errors on every call, ambiguous timeouts of order calls, partial fills), without their
    rate-limit rejects (see below) and latency (a wall-clock wait moves no virtual time). ``transient``: only errors a retry
    gets past and that never executed: network errors, 503s and timeouts raised before the call runs
    (short's 3 % error rate plus its 1 % timeout rate), no rejects, no ambiguous timeouts, no partial fills."""
    from tradebot.soak import PROFILES, fault_plan

    out: dict[str, dict[str, Any]] = {"off": {}}
    for name, p in PROFILES.items():
        plan = fault_plan(p)
        # Without rate-limit rejects: the executor's pause after one waits on the virtual clock while the
        # call counts as work, so the replay would never see the tree quiet and never move time on.
        plan["error_rates"] = {m: {k: v for k, v in r.items() if k != "rate_limit"} for m, r in plan["error_rates"].items()}
        out[name] = {**plan, "latency_ms_min": 0, "latency_ms_max": 0}
    short = PROFILES["short"]
    rates = {"network": round(short.error_rate * 0.6, 6), "exchange_unavailable": round(short.error_rate * 0.4, 6), "timeout": short.timeout_rate}
    out["transient"] = {"error_rates": {"*": rates, **_SPARED}, "seed": short.seed}
    return out


def fault_plan_of(name: str) -> Any:
    """The FaultPlan of a profile name or of a JSON file holding FaultPlan fields; ValueError otherwise."""
    import msgspec

    from adapters.paper.faults import FaultPlan

    profiles = fault_profiles()
    if name in profiles:
        return msgspec.convert(profiles[name], FaultPlan)
    path = Path(name)
    if path.suffix == ".json" and path.exists():
        try:
            return msgspec.json.decode(path.read_bytes(), type=FaultPlan)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError) as exc:
            raise ValueError(f"--faults {name}: not a FaultPlan: {exc}") from None
    raise ValueError(f"--faults {name!r}: not a profile ({', '.join(profiles)}) nor a FaultPlan JSON file")


def _show(v: Any) -> str:
    return _toml_value(v).strip('"')


# ----------------------------------------------------------------- signals
@dataclass
class Frame:
    at_ms: int
    raw: str


def load_signal_frames(path: Path, start_ms: int) -> list[Frame]:
    """Frames to tell the intake, in time order.

    Two line formats (JSON lines; blank lines and ``#`` comments skipped):
    a replay wave as the bundled server reads it (``{"wave_offset_min": M,
    "signals": [...]}``; placed at the 15-minute wave ``M`` minutes after the
    window's first wave, stamped like the server does), or a batch frame of
    the signal protocol as recorded from a signal server (``{"type":
    "batch", "wave_ts_ms": ..., "signals": [...]}``, sent as it is at its
    wave time). A line that is neither (bad JSON, anything else) is sent
    verbatim with the next wave, as the server does, so the intake rejects it.
    """
    from adapters.signal_server import _aligned_offset_ms, _is_wave, load_replay

    first = wave_of(start_ms) + (WAVE_MS if wave_of(start_ms) < start_ms else 0)
    frames: list[Frame] = []
    loose: list[str] = []
    for entry in load_replay(Path(path)):
        if "raw" in entry and not _is_wave(entry):
            try:
                parsed = json.loads(entry["raw"])
            except ValueError:
                parsed = None
            if isinstance(parsed, dict) and parsed.get("type") == "batch" and isinstance(parsed.get("wave_ts_ms"), int):
                frames.append(Frame(parsed["wave_ts_ms"] + DELIVERY_DELAY_MS, entry["raw"]))
            else:
                loose.append(entry["raw"])
            continue
        wave_ts = first + _aligned_offset_ms(entry)
        at = wave_ts + DELIVERY_DELAY_MS
        frames.extend(Frame(at, raw) for raw in loose)
        loose = []
        stamped = [({"id": f"sig-{wave_ts}-{i:02d}", "exchange": "paper", **s, "wave_ts_ms": s.get("wave_ts_ms", wave_ts), "created_ms": s.get("created_ms", at)} if isinstance(s, dict) else s) for i, s in enumerate(entry["signals"])]
        frames.append(Frame(at, encode({"type": "batch", "wave_ts_ms": wave_ts, "signals": stamped}).decode()))
    frames.sort(key=lambda f: f.at_ms)
    return frames


def signal_symbols(frames: list[Frame]) -> set[str]:
    out: set[str] = set()
    for f in frames:
        try:
            body = json.loads(f.raw)
        except ValueError:
            continue
        for s in body.get("signals", []) if isinstance(body, dict) else []:
            if isinstance(s, dict) and isinstance(s.get("symbol"), str):
                out.add(s["symbol"])
    return out


# --------------------------------------------------------------------- run
@dataclass
class RunResult:
    label: str
    report: dict[str, Any]
    speed: dict[str, Any] = field(default_factory=dict)
    #: Per position (in the report's order): the mark path over its life, [ts_ms, price text], for the HTML charts.
    marks: list[list[list[Any]]] = field(default_factory=list)


def run_one(variant: Variant, frames: list[Frame], start_ms: int, end_ms: int, *, base_dir: Path, history: str | None = None) -> RunResult:
    """Replay one configuration over [start_ms, end_ms]; the report (deterministic) and the speed."""
    from actors.signal_intake import SignalFrame
    from adapters.event_store import EventStore
    from adapters.markets import Markets
    from adapters.paper.engine import PaperEngine
    from adapters.paper.exchange import PaperExchange
    from adapters.paper.faults import ClockedFaultInjector
    from adapters.paper.hosting import markets_path
    from adapters.venue import Venue
    from core.clock import VirtualClock
    from core.config import parse_config
    from core.ids import seeded_position_ids
    from core.messages import Shutdown
    from supervision.actor import ActorContext
    from supervision.directory import Directory
    from supervision.supervisor import Supervisor
    from tradebot.replay_quiet import CountingIOLoop, Tracker, instrumented
    from tradebot.replay_report import build_report
    from tradebot.wiring import build_executor, paper_style, trading_children

    cfg = parse_config(to_toml(variant.raw), label=f"replay config {variant.label}", base_dir=base_dir)
    wall0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="tbreplay-"))
    tracker = Tracker()
    clock = VirtualClock(start_ms=start_ms)
    io = CountingIOLoop(tracker).start()
    store = EventStore(tmp / "events.db", io).open()
    tracker.stores.append(store)
    sup = None
    try:
        with instrumented(tracker), seeded_position_ids(cfg.paper.seed or 0):
            p = cfg.paper
            mpath = markets_path(cfg)
            markets = Markets.from_file(mpath)
            engine = PaperEngine(markets, flavour=p.flavour, initial_balance=p.starting_balance, leverage=p.leverage, taker_fee_rate=p.taker_fee_rate, slippage_bps=p.slippage_bps, seed=p.seed, hedge_mode=cfg.exchange.hedge_mode)
            prices = price_replay(markets, cfg, frames, history)
            faults = ClockedFaultInjector(fault_plan_of(variant.faults), p.flavour, clock)
            exchange = PaperExchange(engine, clock, flavour=p.flavour, faults=faults, price_replay=prices, tick_interval_ms=p.tick_interval_ms, markets_path=mpath, request_log_size=10_000_000)
            exchange.start()  # its tick timer is the clock's first: prices move before anyone reads them
            io.run(exchange.load_markets(), 30)
            venue = Venue("paper", exchange, markets, build_executor(cfg, "paper", clock, store), paper_style(cfg))
            directory = Directory()
            ctx = ActorContext(clock=clock, io=io, store=store, config=cfg, directory=directory, wall_ms=clock.now_ms)
            sup = Supervisor.start(ctx=ctx, children=trading_children(cfg, venue, directory, []))
            steps = drive(clock, tracker, directory, frames, end_ms, SignalFrame)
            tracker.settle()
            events = io.run(store.query(), 120)
            report = build_report(cfg, engine, exchange, events, start_ms, clock.now_ms(), faults=variant.faults)
            marks = [mark_path(prices, markets, p, clock.now_ms()) for p in report["positions"]]
            sup.tell(Shutdown(reason="replay end"))
            for _ in range(10_000):
                if sup.actor_stopped.wait(0.01):
                    break
                tracker.settle()
                nxt = clock.next_due_ms()
                if nxt is not None:
                    clock.step_to(max(nxt, clock.now_ms()))
            exchange.stop()
    finally:
        if sup is not None and not sup.actor_stopped.is_set():
            sup.stop()
        store.close()
        io.stop()
        clock.close()
        shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - wall0
    hours = (end_ms - start_ms) / 3_600_000
    speed = {"virtual_hours": round(hours, 3), "wall_seconds": round(wall, 2), "virtual_hours_per_wall_second": round(hours / wall, 2) if wall else None,
             "speed_up": round(hours * 3600 / wall) if wall else None, "steps": steps}
    return RunResult(variant.label, report, speed, marks)


#: At most this many points per position chart (the path is sampled evenly; its extremes are kept).
CHART_POINTS = 400


def mark_path(prices: Any, markets: Any, position: dict[str, Any], end_ms: int) -> list[list[Any]]:
    """The replayed price of a position's symbol from its entry to its exit (or the end), sampled."""
    symbol = markets.resolve(position["symbol"]).symbol
    t0, t1 = position["entry_ms"], position["exit_ms"] or end_ms
    ticks = [(ts, px) for ts, sym, px in prices.ticks_between(t0 - 1, t1) if sym == symbol]
    if len(ticks) > CHART_POINTS:
        step = len(ticks) / CHART_POINTS
        keep = {int(i * step) for i in range(CHART_POINTS)} | {len(ticks) - 1}
        keep |= {max(range(len(ticks)), key=lambda i: ticks[i][1]), min(range(len(ticks)), key=lambda i: ticks[i][1])}
        ticks = [ticks[i] for i in sorted(keep)]
    return [[ts, str(px)] for ts, px in ticks]


def _run_in_worker(variant: Variant, frames: list[Frame], start_ms: int, end_ms: int, **kw: Any) -> RunResult:
    """:func:`run_one` in a spawned process: its log as quiet as the parent's (errors only)."""
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    return run_one(variant, frames, start_ms, end_ms, **kw)


def run_all(runs: list[Variant], frames: list[Frame], start_ms: int, end_ms: int, *, base_dir: Path, history: str | None = None,
            jobs: int | None = None, progress: Any = None) -> list[RunResult]:
    """Every configuration, in parallel processes up to ``jobs`` (default: the core count); results in ``runs``' order.

    Each run is a process of its own (spawned, not forked: the parent may have threads), so runs
    share nothing and the result of one never depends on the others or on how many run at once."""
    import concurrent.futures
    import multiprocessing
    import os

    jobs = max(1, min(jobs or os.cpu_count() or 1, len(runs)))
    if jobs == 1:
        out = []
        for v in runs:
            out.append(run_one(v, frames, start_ms, end_ms, base_dir=base_dir, history=history))
            if progress:
                progress(out[-1])
        return out
    results: dict[int, RunResult] = {}
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_run_in_worker, v, frames, start_ms, end_ms, base_dir=base_dir, history=history): i for i, v in enumerate(runs)}
        for fut in concurrent.futures.as_completed(futures):
            results[futures[fut]] = fut.result()
            if progress:
                progress(results[futures[fut]])
    return [results[i] for i in range(len(runs))]


def price_replay(markets: Any, cfg: Any, frames: list[Frame], history: str | None) -> Any:
    """Engine time is history time: the series start at their first candle's own time."""
    from adapters.paper.prices import REAL_HISTORIES, PriceReplay, load_candles

    data = cfg.paper_data_dir / "prices"
    histories = dict(REAL_HISTORIES)
    if history:
        histories["BTC"] = history
    t0, _iv, _c = load_candles(data / histories["BTC"])
    wanted = {markets.resolve(s).symbol for s in signal_symbols(frames) if _known(markets, s)} | {markets.resolve("BTCUSDT").symbol}
    return PriceReplay(markets, start_ms=t0, symbols=sorted(wanted), seed=cfg.paper.seed, data_dir=data, real_histories=histories)


def _known(markets: Any, symbol: str) -> bool:
    try:
        markets.resolve(symbol)
    except Exception:
        return False
    return True


def drive(clock: Any, tracker: Any, directory: Any, frames: list[Frame], end_ms: int, frame_type: Any) -> int:
    """Settle, then step to the next due timer or frame, until ``end_ms``; the number of steps (timers and frames handled)."""
    i, steps = 0, 0
    while True:
        tracker.settle()
        due = clock.next_due_ms()
        nxt_frame = frames[i].at_ms if i < len(frames) else None
        candidates = [t for t in (due, nxt_frame) if t is not None]
        if not candidates:
            break
        t = max(min(candidates), clock.now_ms())
        if t > end_ms:
            break
        # One timer at a time, settling after each: what one timer set going (a price tick, a poll, a
        # check) is done before the next one due at the same instant starts, so no two race.
        while clock.fire_one(t):
            tracker.settle()
            steps += 1
        while i < len(frames) and frames[i].at_ms <= t:
            directory.tell("intake", frame_type(raw=frames[i].raw))
            i += 1
            tracker.settle()
            steps += 1
    if clock.now_ms() < end_ms:
        clock.step_to(end_ms)
    return steps


def history_window(history: str | None = None) -> tuple[int, int]:
    """The BTC history's first open and last close (ms): the bundled 1-minute month, or ``history``."""
    from adapters.paper.prices import DATA_DIR, REAL_HISTORIES, load_candles

    t0, iv, candles = load_candles(DATA_DIR / (history or REAL_HISTORIES["BTC"]))
    return t0, t0 + iv * len(candles)
