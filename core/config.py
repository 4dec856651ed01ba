"""config.toml decoded into typed, frozen msgspec Structs.

Unknown keys are rejected; every bad value is reported as one line naming
the key, what was expected and what was given, e.g.
``config.toml: supervisor.max_restarts: expected an integer >= 1, got 0``.
Numbers that are money or percentages are Decimal (TOML floats are parsed as
Decimal, never float). Secrets are never read from this file: they come from
environment variables only.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

import msgspec

#: The checkout / installation root (holds config.toml, demo/).
PROJECT_DIR = Path(__file__).resolve().parents[1]

LogLevel = Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]


class Check:
    """A bound on a numeric config value, checked after decoding."""

    def __init__(self, *, gt: Any = None, ge: Any = None, le: Any = None, lt: Any = None) -> None:
        self.gt, self.ge, self.le, self.lt = gt, ge, le, lt

    def describe(self) -> str:
        parts = []
        for op, bound in ((">", self.gt), (">=", self.ge), ("<=", self.le), ("<", self.lt)):
            if bound is not None:
                parts.append(f"{op} {bound}")
        return " and ".join(parts)

    def ok(self, value: Any) -> bool:
        return not (
            (self.gt is not None and not value > self.gt)
            or (self.ge is not None and not value >= self.ge)
            or (self.le is not None and not value <= self.le)
            or (self.lt is not None and not value < self.lt)
        )


def _n(**kw: Any) -> Check:
    return Check(**kw)


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Each section repeats frozen=True: msgspec inherits it, mypy does not.
    pass


class RuntimeConfig(_Section, frozen=True):
    #: Directory for the database, logs and the control socket (relative to the config file).
    data_dir: str = "var"
    #: How long a Python thread may hold the GIL before another gets it. With one
    #: thread per actor, the default 5 ms makes a woken actor wait; 1 ms cut the
    #: p50 of a mark tick's wait from ~10 ms to ~3 ms in `make bench`.
    gil_switch_interval_us: Annotated[int, _n(ge=100, le=100_000)] = 1000


class StoreConfig(_Section, frozen=True):
    path: str = "tradebot.db"
    batch_max: Annotated[int, _n(ge=1, le=100_000)] = 1000
    busy_timeout_ms: Annotated[int, _n(ge=0)] = 1000
    critical_after_ms: Annotated[int, _n(ge=0)] = 3000
    retention_days: Annotated[int, _n(ge=1)] = 90
    prune_interval_secs: Annotated[int, _n(ge=60)] = 3600
    #: A durable write (a write-ahead intent) still waiting for its commit after this
    #: long makes the store a health problem (store.slow); the actor keeps waiting (a
    #: position owner without blocking: it answers probes), never acts without its
    #: record and never fails for it. Must be below guard.reply_deadline_secs.
    durable_wait_secs: Annotated[int, _n(ge=1, le=300)] = 10


class LoggingConfig(_Section, frozen=True):
    dir: str = "logs"
    level: LogLevel = "DEBUG"
    console_level: LogLevel = "WARNING"
    rotation_mb: Annotated[int, _n(ge=1)] = 100
    retention_files: Annotated[int, _n(ge=1, le=1000)] = 10


class SupervisorConfig(_Section, frozen=True):
    max_restarts: Annotated[int, _n(ge=1)] = 5
    restart_window_secs: Annotated[int, _n(ge=1)] = 60
    shutdown_timeout_secs: Annotated[int, _n(ge=1, le=600)] = 15
    child_check_interval_ms: Annotated[int, _n(ge=50)] = 1000
    restart_backoff_ms: Annotated[int, _n(ge=0)] = 200
    #: At start-up the intake stays closed until every recovered position has checked its
    #: stop on the exchange, at most this long (then it opens with an error event naming
    #: the ones that never reported).
    recovery_wait_secs: Annotated[int, _n(ge=1, le=3600)] = 120


class ControlConfig(_Section, frozen=True):
    socket: str = "control.sock"
    command_ttl_secs: Annotated[int, _n(ge=1, le=3600)] = 30


class ExchangeConfig(_Section, frozen=True):
    #: Which venue the bot trades on: the built-in paper exchange, or a real one through ccxt.
    name: Literal["paper", "binanceusdm", "bybit"] = "paper"
    #: Real venues only: use the exchange's testnet / sandbox.
    testnet: bool = True
    #: Names of the environment variables holding the API key and secret (never the keys themselves).
    api_key_env: str = "TRADEBOT_API_KEY"
    api_secret_env: str = "TRADEBOT_API_SECRET"
    #: Extra options passed to the ccxt constructor (e.g. {"options": {...}} or another base URL).
    ccxt_options: dict[str, Any] = {}
    #: The account's position mode (false = one-way; Bybit positionIdx 0); checked at start on both venues.
    hedge_mode: bool = False
    #: Real venues: connect, reconcile, report and alert, never send an order, a cancel or a
    #: setting (for a first contact with a live account). Signals are refused.
    read_only: bool = False
    #: How a stop lives on the venue: "order" (a reduce-only stop-market order; a move places the
    #: new one, then cancels the old) or "position" (Bybit only: the position's own stopLoss through
    #: /v5/position/trading-stop, amended in place: one request per move, never two stops, never none).
    #: "position" needs one-way mode and no take-profit orders (take_profit.enabled = false).
    stop_mode: Literal["order", "position"] = "order"
    #: Retries of one exchange call (network errors, rate limits) and their backoff.
    max_attempts: Annotated[int, _n(ge=1, le=20)] = 4
    retry_base_delay_ms: Annotated[int, _n(ge=1)] = 200
    retry_max_delay_ms: Annotated[int, _n(ge=1)] = 5000
    rate_limit_delay_ms: Annotated[int, _n(ge=1)] = 2000
    #: Request budget, per venue account and shared by every actor: the share of the venue's
    #: published limits the bot allows itself (other tools may use the same IP or key).
    rate_limit_share: Annotated[Decimal, _n(gt=0, le=1)] = Decimal("0.8")
    #: The top of that budget only protective calls may use (stops, protective closes, a
    #: position's own cancels): reads and entries wait before they reach it.
    protect_reserve: Annotated[Decimal, _n(ge=0, lt=1)] = Decimal("0.2")
    #: After a rate-limit answer reads and entries wait out the venue-wide pause, but a protective
    #: call (stop, protective close) probes after protect_probe_ms, doubling after each refusal up
    #: to protect_probe_max_ms; once the venue takes one, protective calls go freely.
    protect_probe_ms: Annotated[int, _n(ge=10, le=60_000)] = 250
    protect_probe_max_ms: Annotated[int, _n(ge=10, le=600_000)] = 2000
    #: A hard IP ban (Binance HTTP 418, Bybit HTTP 403): reads and entries wait the venue's
    #: wait; a waiting protective call probes once per this many seconds (0: it waits too).
    ban_probe_secs: Annotated[int, _n(ge=0, le=3600)] = 60
    #: The paper venue has no limits of its own; true: it gets its flavour's budget, in the
    #: paper exchange's time (off by default: tests and benchmarks drive it faster than a venue allows).
    paper_rate_limits: bool = False


class PaperConfig(_Section, frozen=True):
    #: "in_process": the paper exchange runs inside the bot (one command);
    #: "process": the bot talks to `tradebot paper serve` over a local socket,
    #: so killing the bot leaves the exchange running, as in life.
    mode: Literal["in_process", "process"] = "in_process"
    #: The paper exchange's socket and saved state (relative to runtime.data_dir).
    socket: str = "paper.sock"
    state_file: str = "paper-state.json"
    #: Which venue the paper exchange imitates (markets, error codes): binance or bybit.
    flavour: Literal["binance", "bybit"] = "binance"
    #: Reference data (markets/, prices/), relative to this file.
    data_dir: str = "../shared/data"
    starting_balance: Annotated[Decimal, _n(gt=0)] = Decimal(10000)
    leverage: Annotated[int, _n(ge=1, le=125)] = 10
    slippage_bps: Annotated[Decimal, _n(ge=0, le=1000)] = Decimal(2)
    taker_fee_rate: Annotated[Decimal, _n(ge=0, lt=1)] = Decimal("0.0005")
    #: History replay speed: 60 = one minute of recorded prices per real second.
    speed: Annotated[Decimal, _n(gt=0, le=100000)] = Decimal(60)
    #: How often (exchange time) new prices are applied and stops checked.
    tick_interval_ms: Annotated[int, _n(ge=10)] = 250
    seed: int = 7


MarginMode = Literal["isolated", "cross"]


class PositionConfig(_Section, frozen=True):
    #: Margin per position in USDT; the position is this times leverage.
    quote_amount: Annotated[Decimal, _n(gt=0)] = Decimal(100)
    #: The leverage every position is sized with (and, on a real venue, set on its symbol).
    leverage: Annotated[int, _n(ge=1, le=125)] = 10
    #: Real venues: the margin mode set before the first entry on a symbol (Bybit's unified
    #: account has one margin mode for the whole account, so there it must be the same for all).
    margin_mode: MarginMode = "isolated"
    #: Per-symbol leverage and margin mode (the venue's id, e.g. BTCUSDT = 20); others use the above.
    leverage_by_symbol: dict[str, Annotated[int, _n(ge=1, le=125)]] = {}
    margin_mode_by_symbol: dict[str, MarginMode] = {}
    #: Real venues: set leverage and margin mode on the venue before the first entry on each
    #: symbol, read them back, refuse the entry when they cannot be set (false: they are left as
    #: they are on the venue and must match what the bot sizes with).
    set_leverage: bool = True
    #: The first stop, this far from the entry fill.
    initial_stop_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal(2)
    #: Tries to place the stop before the position is closed again (rolled back).
    stop_attempts: Annotated[int, _n(ge=1, le=10)] = 3
    #: If the rollback fails too: a wide stop this far from the entry, and a critical event.
    emergency_stop_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal(10)
    #: How often a protected position checks its own stop on the exchange. The guard
    #: checks every position every guard.interval_secs (from the stream-fed view or
    #: shared reads); this is the owner's own backstop, so it can be rare.
    verify_interval_secs: Annotated[int, _n(ge=1)] = 600
    #: First delay of a scheduled retry inside the actor (doubles each time, max 60 s).
    retry_delay_ms: Annotated[int, _n(ge=1)] = 250
    #: Look-ups of an entry whose outcome is unknown before it is declared not placed.
    entry_lookups: Annotated[int, _n(ge=1, le=100)] = 8
    #: Tries to cancel the old stop after a move (with backoff) before the position stays
    #: on the new, tighter stop and leaves the old one to reconciliation (critical event).
    cancel_attempts: Annotated[int, _n(ge=1, le=50)] = 6

    def leverage_for(self, symbol: str) -> int:
        """The leverage of ``symbol`` (a venue id like BTCUSDT; a unified symbol is reduced to it)."""
        return self.leverage_by_symbol.get(venue_id_of(symbol), self.leverage)

    def margin_mode_for(self, symbol: str) -> str:
        return self.margin_mode_by_symbol.get(venue_id_of(symbol), self.margin_mode)


def venue_id_of(symbol: str) -> str:
    """``BTC/USDT:USDT`` -> ``BTCUSDT``; a venue id stays as it is."""
    base, _, rest = symbol.partition("/")
    return base + rest.split(":", 1)[0] if rest else symbol


class TrailingConfig(_Section, frozen=True):
    enabled: bool = True
    #: The stop starts trailing once the position is this far in profit (mark price).
    activation_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal("1.5")
    #: ... and then follows the best mark since activation at this distance.
    callback_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal("0.5")
    #: At most one stop move per this many seconds, and only if it improves the stop
    #: by min_improvement_percent ...
    min_move_interval_secs: Annotated[int, _n(ge=0)] = 60
    min_improvement_percent: Annotated[Decimal, _n(ge=0, lt=100)] = Decimal("0.1")
    #: ... unless the wanted stop is this far past the live one (move at once).
    emergency_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal("1.0")
    #: Move the stop to entry plus fees at this profit (0 = off).
    breakeven_at_percent: Annotated[Decimal, _n(ge=0, lt=100)] = Decimal(0)
    #: Round-trip fees added to the entry price for "breakeven".
    breakeven_fee_percent: Annotated[Decimal, _n(ge=0, lt=10)] = Decimal("0.1")
    #: Start trailing after this many minutes if the position is in profit (0 = off).
    time_activation_minutes: Annotated[int, _n(ge=0)] = 0
    #: Failed move attempts in a row before moves pause (critical event + alert) ...
    max_move_attempts: Annotated[int, _n(ge=1, le=100)] = 5
    #: ... for this long.
    disable_secs: Annotated[int, _n(ge=1)] = 3600
    #: How often an improved best price is recorded (so a restart resumes from it): at most
    #: this long after it improved, each position somewhere in the second half (spread by id).
    best_persist_interval_secs: Annotated[int, _n(ge=1)] = 30


class TakeProfitConfig(_Section, frozen=True):
    #: Partial take-profits as reduce-only orders; off by default.
    enabled: bool = False
    #: TP1 and TP2: distance from entry (percent) and share of the opened quantity.
    tp1_percent: Annotated[Decimal, _n(gt=0, lt=1000)] = Decimal("1.0")
    tp1_share: Annotated[Decimal, _n(gt=0, le=1)] = Decimal("0.5")
    tp2_percent: Annotated[Decimal, _n(gt=0, lt=1000)] = Decimal("2.0")
    tp2_share: Annotated[Decimal, _n(ge=0, le=1)] = Decimal("0.25")
    #: When TP1 fills, move the stop of the rest to breakeven (entry plus fees).
    breakeven_after_tp1: bool = True


class AgedConfig(_Section, frozen=True):
    #: Liquidate positions that neither stop out nor trail into profit (one exit order each).
    enabled: bool = True
    #: A position is aged this long after its entry fill (an adopted one: after the
    #: exchange's own open time where the venue reports it, else after its adoption).
    max_age_hours: Annotated[Decimal, _n(gt=0, le=10000)] = Decimal(3)
    #: Then, for this long, one reduce-only exit at breakeven including both sides' taker fees.
    grace_hours: Annotated[Decimal, _n(ge=0, le=10000)] = Decimal(8)
    #: After the grace the accepted loss grows by this much per hour ...
    loss_step_percent_per_hour: Annotated[Decimal, _n(gt=0, le=100)] = Decimal("0.5")
    #: ... times this once the position is older than accelerate_after_hours (age from open) ...
    acceleration: Annotated[Decimal, _n(ge=1, le=100)] = Decimal("1.2")
    accelerate_after_hours: Annotated[Decimal, _n(ge=0, le=10000)] = Decimal(10)
    #: ... up to this cap (net of fees, percent of the entry notional).
    max_loss_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal(10)
    #: At the cap: keep the exit at the cap price ("hold") or close at market ("market").
    at_cap: Literal["hold", "market"] = "hold"
    #: How often the exit price is recomputed (a timer message); it moves only by >= one tick.
    recompute_interval_secs: Annotated[int, _n(ge=1, le=86400)] = 300
    #: Taker fee per side for breakeven where the market data has none (percent).
    fallback_fee_percent: Annotated[Decimal, _n(ge=0, lt=10)] = Decimal("0.05")
    #: Failed exit attempts in a row before the exit is split into chunks ...
    chunk_after_failures: Annotated[int, _n(ge=1, le=100)] = 3
    chunks: Annotated[int, _n(ge=1, le=20)] = 3
    #: ... before the accepted loss is widened (within the cap) by widen_step_percent ...
    widen_after_failures: Annotated[int, _n(ge=1, le=100)] = 6
    widen_step_percent: Annotated[Decimal, _n(gt=0, le=100)] = Decimal(2)
    #: ... and before the aged path gives up with a critical event (a human decides).
    max_failures: Annotated[int, _n(ge=1, le=1000)] = 12
    #: First delay after a refused exit (doubles per failure, at most an hour).
    retry_delay_secs: Annotated[int, _n(ge=1, le=86400)] = 30


class SyncConfig(_Section, frozen=True):
    #: A full read of positions and open orders, compared with what the actors own.
    interval_secs: Annotated[int, _n(ge=1)] = 30
    #: An order of ours younger than this is never taken for a stray or a zombie.
    grace_secs: Annotated[int, _n(ge=0)] = 30
    #: Adopt positions found on the exchange that no actor owns (protect them at once).
    adopt_untracked: bool = True
    #: Consume the venue's own order/position stream where it has one (the full reads stay the fallback).
    use_streams: bool = True
    #: While both streams are live the full read is only a backstop against a lost
    #: push: it runs this often instead (and the guard checks the stream-fed view).
    interval_secs_streaming: Annotated[int, _n(ge=1)] = 600
    #: Streams live: every order action of ours (a placement, a cancel) must be confirmed
    #: by a push within this, as must every difference a read finds with the stream-fed
    #: view; else the streams count as silent: marked down, read in full, redialled.
    push_deadline_secs: Annotated[int, _n(ge=1, le=60)] = 5
    #: Streams live, orders or positions open, and no push for this long: a probe (a full
    #: read compared with the view). Silence is caught within this plus push_deadline_secs.
    quiet_probe_secs: Annotated[int, _n(ge=1)] = 15
    #: The account balance (``ctl status``) is read after a full read when its last read is
    #: older than this: its own request, never part of the snapshot the guard waits for.
    balance_interval_secs: Annotated[int, _n(ge=1)] = 300


class ZombiesConfig(_Section, frozen=True):
    #: Report zombie orders without cancelling them.
    dry_run: bool = False
    #: Also cancel other people's orders on symbols the bot does not trade.
    include_foreign: bool = False
    #: Cancels per reconcile at most (the rest waits for the next one).
    max_cancels_per_run: Annotated[int, _n(ge=1)] = 50
    #: A non-reduce-only order on the closing side larger than this times the
    #: position would flip it: a zombie.
    flip_ratio: Annotated[Decimal, _n(gt=1)] = Decimal("1.5")


class GuardConfig(_Section, frozen=True):
    #: How often every open position is checked against the exchange.
    interval_secs: Annotated[int, _n(ge=1)] = 10
    #: An owner asked to restore protection must answer within this ...
    reply_deadline_secs: Annotated[int, _n(ge=1)] = 15
    #: ... and after this many missed deadlines or failed restores in a row it is restarted.
    max_failures: Annotated[int, _n(ge=1)] = 3
    #: Every position actor, protected or not, is probed this often; one that does not
    #: answer within reply_deadline_secs is stuck and restarted.
    probe_interval_secs: Annotated[int, _n(ge=1)] = 10
    #: A position unprotected for longer than this raises an alert.
    unprotected_alert_secs: Annotated[int, _n(ge=1)] = 60
    #: More than this many positions unprotected at two checks in a row: one critical
    #: ``alert.many_unprotected`` (``guard.many_unprotected_cleared`` once at or below it).
    many_unprotected_alert: Annotated[int, _n(ge=0)] = 5
    #: Unprotected and this far in loss from entry: closed.
    emergency_loss_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal(3)
    #: A restored stop that would trigger at once is placed this far beyond the mark instead.
    restore_offset_percent: Annotated[Decimal, _n(gt=0, lt=100)] = Decimal("0.5")


class SignalsConfig(_Section, frozen=True):
    #: "bundled": start the bundled signal server (demo waves) and connect to it over
    #: WebSocket; "url": connect to `url`; "file": the simple file replay of [demo].
    source: Literal["bundled", "url", "file"] = "bundled"
    url: str = "ws://127.0.0.1:8765/ws"
    #: bundled: the waves it replays and how often it publishes one.
    replay_file: str = "demo/waves.jsonl"
    wave_every_secs: Annotated[int, _n(ge=1)] = 20
    #: Waves are processed at these minutes of the hour (the wave that began at :00 at :05) ...
    processing_minutes: tuple[Annotated[int, _n(ge=0, le=59)], ...] = (5, 20, 35, 50)
    #: ... except with the bundled demo source: there, a wave is processed this long
    #: after its first signal (the demo replays waves whose minutes have passed).
    process_after_secs: Annotated[int, _n(ge=1)] = 3
    #: Process every wave process_after_secs after its first signal whatever the source
    #: (a signal server that publishes waves faster than every 15 minutes, e.g. `tradebot soak`).
    process_on_arrival: bool = False
    #: Positions per wave (counted only when confirmed open and protected). At most 1,000:
    #: a wave's opens (entry + stop: two orders each) must fit inside its 15 minutes under
    #: the venue's order limits at the bot's share (Binance 1,200 orders/min: ~3 min for
    #: 1,000; Bybit 10 creates/s: ~6 min), and docs/scaling.md measures 1,000-3,000 owners per process.
    wave_limit: Annotated[int, _n(ge=1, le=1000)] = 5
    #: Candidates kept per wave: this times the limit, best scores first.
    buffer_factor: Annotated[Decimal, _n(ge=1, le=10)] = Decimal("1.5")
    #: No new entries while this many positions are open, or while the free balance is below the reserve.
    max_open_positions: Annotated[int, _n(ge=1)] = 20
    min_free_balance: Annotated[Decimal, _n(ge=0)] = Decimal(100)
    #: Size from a share of the free balance instead of position.quote_amount (0 = off).
    size_percent_of_free: Annotated[Decimal, _n(ge=0, le=100)] = Decimal(0)
    min_score_week: Annotated[Decimal, _n(ge=0)] = Decimal(0)
    min_score_month: Annotated[Decimal, _n(ge=0)] = Decimal(0)
    #: Symbols never opened (venue ids, e.g. "DOGEUSDT").
    stop_list: tuple[str, ...] = ()
    #: Signals older than this (or from the future) are rejected.
    max_signal_age_secs: Annotated[int, _n(ge=1)] = 7200
    #: WebSocket client: ping interval, silence after which the connection is dead, buffer.
    heartbeat_secs: Annotated[int, _n(ge=1)] = 20
    dead_after_secs: Annotated[int, _n(ge=2)] = 60
    buffer_size: Annotated[int, _n(ge=10)] = 10000


class FeedsConfig(_Section, frozen=True):
    #: How often mark prices are read for the symbols with open positions.
    mark_interval_ms: Annotated[int, _n(ge=50)] = 1000
    #: Take mark prices from the venue's stream where it has one (real venues through
    #: ccxt.pro); reads every mark_interval_ms stay the fallback while it is down.
    use_streams: bool = True


class VenueHealthConfig(_Section, frozen=True):
    #: The exchange is "unreachable" (no new entries) after this many failed calls in a row
    #: (network, timeouts, 503) that have lasted at least unreachable_after_secs; the next answer reopens.
    unreachable_after_failures: Annotated[int, _n(ge=1)] = 3
    unreachable_after_secs: Annotated[int, _n(ge=0)] = 10
    #: Maintenance: every call to the venue waits; one probe after this long, doubling up to the max.
    maintenance_probe_secs: Annotated[int, _n(ge=1)] = 5
    maintenance_probe_max_secs: Annotated[int, _n(ge=1)] = 60
    #: After an entry is refused for insufficient margin, new entries pause; the free balance
    #: is read this often until it covers the margin of one entry plus signals.min_free_balance.
    margin_recheck_secs: Annotated[int, _n(ge=1)] = 60


Level = Literal["info", "warning", "error", "critical"]


class AlertRule(_Section, frozen=True):
    #: The rule's name (alerts are de-duplicated by rule and subject).
    name: str
    #: Event types that raise the alert ...
    fire: tuple[str, ...]
    #: ... and event types that clear it (a "resolved" message); empty: it never resolves.
    resolve: tuple[str, ...] = ()
    severity: Level = "critical"
    #: What identifies the subject: an event field (position_id, symbol, actor, exchange),
    #: "data.<key>" for a key of the event's data, or "" for one subject for the whole bot.
    subject: str = "position_id"
    #: What it means and what to do (sent with the alert).
    text: str = ""
    #: Send only if still raised this long after it was (0: at once); cleared sooner, nothing is sent.
    after_secs: Annotated[int, _n(ge=0, le=86_400)] = 0
    #: A threshold rule: a key of the fire events' data (a list: its length; a number: itself).
    #: Each such event raises the alert when the count is above ``above`` and clears it when not.
    count: str = ""
    above: Annotated[int, _n(ge=0)] = 0


def _rule(name: str, fire: str, resolve: str = "", subject: str = "position_id", severity: Level = "critical", text: str = "", **kw: Any) -> AlertRule:
    return AlertRule(name=name, fire=tuple(fire.split()), resolve=tuple(resolve.split()), subject=subject, severity=severity, text=text, **kw)


DEFAULT_ALERT_RULES: tuple[AlertRule, ...] = (
    _rule("rollback_failed", "position.rollback_failed", text="an entry could not be rolled back: check the position on the exchange"),
    _rule("emergency_stop", "position.emergency_stop", text="a wide emergency stop was placed; the normal stop could not be"),
    _rule("unprotected", "alert.position_unprotected", "guard.protected_again", subject="data.position", text="a position has no live stop: the bot keeps trying to restore it"),
    _rule("stop_moves_disabled", "position.moves_disabled", severity="error", text="stop moves failed repeatedly and are paused; the last stop stays"),
    _rule("close_gave_up", "position.close_gave_up", text="the bot could not close a position: close it by hand"),
    _rule("restart_intensity", "supervisor.restart_intensity_exceeded", subject="data.child", text="an actor kept crashing and was given up; intake is blocked; see its log"),
    _rule("exchange_fatal", "exchange.fatal", "exchange.fatal_cleared", subject="exchange", text="the exchange refused our key or permissions: fix the key, then restart"),
    _rule("exchange_unreachable", "exchange.unreachable", "exchange.reachable", subject="exchange", severity="error", text="the exchange does not answer; no new entries until it does"),
    _rule("exchange_banned", "alert.exchange_banned", "exchange.ban_over", subject="exchange", text="the exchange banned our IP; only protective calls probe"),
    _rule("store_unavailable", "store.unavailable", "store.available", subject="", text="the event store takes no writes (past store.critical_after_ms): nothing new is recorded; positions wait for their records"),
    _rule("store_slow", "store.slow", "store.recovered", subject="", severity="error", text="the event store is slow or failing; positions wait for their records"),
    _rule("stream_down", "feed.stream_down", "feed.stream_up", subject="symbol", severity="warning", text="a price stream is down for a minute; marks are read over REST meanwhile", after_secs=60),
    _rule("signal_feed_down", "feed.dead feed.connect_failed", "feed.connected", subject="", severity="error", text="the signal feed is down for 30 s: no new signals", after_secs=30),
    _rule("many_unprotected", "alert.many_unprotected", "guard.many_unprotected_cleared", subject="", text="more than guard.many_unprotected_alert positions were unprotected at two checks in a row: something systematic (stops refused? the exchange?)"),
    _rule("zombies", "sync.reconciled", subject="", severity="warning", count="zombies", above=3, text="a reconcile found more than 3 zombie orders (ours with no owner, or left behind): see `tradebot ctl zombies`"),
    _rule("aged_cap", "alert.aged_cap alert.aged_gave_up alert.aged_unclosable", subject="position_id", severity="error", text="an aged position reached its cap or could not be closed"),
)


class AlertSink(_Section, frozen=True):
    #: webhook: a JSON POST to url; telegram: the Bot API's sendMessage; console: the log.
    kind: Literal["webhook", "telegram", "console"]
    #: The sink's name in events and `tradebot alerts test` (default: its kind).
    name: str = ""
    #: Alerts below this severity are not sent to this sink ("info" also sends resolved messages of anything).
    min_severity: Level = "warning"
    #: webhook: where to POST.
    url: str = ""
    #: telegram: names of the environment variables holding the bot token and the chat id.
    token_env: str = "TRADEBOT_TELEGRAM_TOKEN"
    chat_id_env: str = "TRADEBOT_TELEGRAM_CHAT_ID"
    #: telegram: the Bot API base URL (tests point it at a local server).
    api_base: str = "https://api.telegram.org"
    #: Each attempt's timeout; attempts per alert, with doubling backoff from backoff_ms.
    timeout_secs: Annotated[Decimal, _n(gt=0, le=60)] = Decimal(5)
    max_attempts: Annotated[int, _n(ge=1, le=20)] = 5
    backoff_ms: Annotated[int, _n(ge=1, le=60_000)] = 500
    #: Alerts waiting for this sink; beyond it new ones are dropped (counted, logged).
    queue_size: Annotated[int, _n(ge=1, le=100_000)] = 100

    @property
    def label(self) -> str:
        return self.name or self.kind


class AlertsConfig(_Section, frozen=True):
    enabled: bool = True
    #: A repeat of the same alert (rule and subject) inside this many seconds is not sent again.
    cooldown_secs: Annotated[int, _n(ge=0)] = 300
    rules: tuple[AlertRule, ...] = DEFAULT_ALERT_RULES
    #: How often the alert actor reads the store's health (the store cannot record its own outage)
    #: and sends the alerts of rules with after_secs that came due.
    check_ms: Annotated[int, _n(ge=50, le=60_000)] = 1000
    sinks: tuple[AlertSink, ...] = (AlertSink(kind="console"),)


class HttpConfig(_Section, frozen=True):
    #: The HTTP server (/health, /metrics) on the I/O loop.
    enabled: bool = True
    #: 127.0.0.1 by default; any other address needs a bearer token in the variable named by token_env.
    host: str = "127.0.0.1"
    #: 0: any free port (written to <data_dir>/http.port).
    port: Annotated[int, _n(ge=0, le=65535)] = 8787
    token_env: str = "TRADEBOT_HTTP_TOKEN"
    #: Dashboard actions (close one, close all, pause / resume intake) as POSTs through the control
    #: mailbox, recorded as `tradebot ctl` would; false: read-only, the endpoints answer 403.
    actions: bool = False


class DemoConfig(_Section, frozen=True):
    #: Bundled demo signals (JSON lines) replayed by the demo intake; "" disables it.
    signals_file: str = "demo/signals.jsonl"
    #: Most positions the demo intake opens per wave.
    wave_limit: Annotated[int, _n(ge=1, le=100)] = 5


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    runtime: RuntimeConfig = RuntimeConfig()
    store: StoreConfig = StoreConfig()
    logging: LoggingConfig = LoggingConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    control: ControlConfig = ControlConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    paper: PaperConfig = PaperConfig()
    position: PositionConfig = PositionConfig()
    trailing: TrailingConfig = TrailingConfig()
    take_profit: TakeProfitConfig = TakeProfitConfig()
    aged: AgedConfig = AgedConfig()
    sync: SyncConfig = SyncConfig()
    zombies: ZombiesConfig = ZombiesConfig()
    guard: GuardConfig = GuardConfig()
    signals: SignalsConfig = SignalsConfig()
    feeds: FeedsConfig = FeedsConfig()
    demo: DemoConfig = DemoConfig()
    venue_health: VenueHealthConfig = VenueHealthConfig()
    alerts: AlertsConfig = AlertsConfig()
    http: HttpConfig = HttpConfig()
    #: Directory the config was read from; relative paths resolve against it.
    base_dir: str = "."

    # -------------------------------------------------------------- paths
    @property
    def data_dir(self) -> Path:
        return (Path(self.base_dir) / self.runtime.data_dir).resolve()

    @property
    def store_path(self) -> Path:
        return self.data_dir / self.store.path

    @property
    def log_dir(self) -> Path:
        return self.data_dir / self.logging.dir

    @property
    def control_socket(self) -> Path:
        return self.data_dir / self.control.socket

    def _shipped(self, relative: str) -> Path:
        """A path relative to the config file, else to the project this code ships in."""
        first = (Path(self.base_dir) / relative).resolve()
        if first.exists():
            return first
        fallback = (PROJECT_DIR / relative).resolve()
        return fallback if fallback.exists() else first

    @property
    def paper_data_dir(self) -> Path:
        return self._shipped(self.paper.data_dir)

    @property
    def paper_socket(self) -> Path:
        return self.data_dir / self.paper.socket

    @property
    def paper_state_path(self) -> Path:
        return self.data_dir / self.paper.state_file

    @property
    def signals_replay_path(self) -> Path:
        return self._shipped(self.signals.replay_file)

    @property
    def demo_signals_path(self) -> Path | None:
        return self._shipped(self.demo.signals_file) if self.demo.signals_file else None


#: Settings ``tradebot ctl reload`` applies to a running bot. Anything else
#: needs a restart (the reply says which changed keys were not applied).
LIVE_SAFE_KEYS = frozenset(
    {
        "logging.level",
        "supervisor.max_restarts",
        "supervisor.restart_window_secs",
        "supervisor.restart_backoff_ms",
        "supervisor.shutdown_timeout_secs",
        "control.command_ttl_secs",
        "store.retention_days",
        "position.verify_interval_secs",
        "position.retry_delay_ms",
        "feeds.mark_interval_ms",
        "trailing.enabled",
        "trailing.activation_percent",
        "trailing.callback_percent",
        "trailing.min_move_interval_secs",
        "trailing.min_improvement_percent",
        "trailing.emergency_percent",
        "trailing.breakeven_at_percent",
        "trailing.time_activation_minutes",
        "sync.interval_secs",
        "zombies.dry_run",
        "zombies.include_foreign",
        "zombies.max_cancels_per_run",
        "guard.interval_secs",
        "guard.reply_deadline_secs",
        "guard.unprotected_alert_secs",
        "guard.probe_interval_secs",
    }
)

_SECRET_HINT = re.compile(r"(secret|api_?key|password|passphrase|token)", re.IGNORECASE)


class ConfigError(ValueError):
    """A config file that must not be started with; ``str()`` is the one-line message."""


def load_config(path: str | Path) -> Config:
    """Read, decode and validate a config file; raise :class:`ConfigError`."""
    path = Path(path)
    label = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read: {exc.strerror}") from None
    return parse_config(text, label=label, base_dir=path.resolve().parent)


def parse_config(text: str, *, label: str = "config.toml", base_dir: Path | None = None) -> Config:
    try:
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from None
    if "base_dir" in raw:
        raise ConfigError(f"{label}: base_dir: unknown key (it is set from the file's location)")
    raw["base_dir"] = str(base_dir or Path.cwd())
    try:
        cfg = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{label}: {_explain(str(exc), raw)}") from None
    problem = _first_violation(cfg, "") or _cross_violation(cfg)
    if problem:
        raise ConfigError(f"{label}: {problem}")
    return cfg


def _cross_violation(cfg: Config) -> str | None:
    """Rules that tie two keys together."""
    if cfg.exchange.read_only and cfg.exchange.name == "paper":
        return "exchange.read_only: only for a real venue (binanceusdm, bybit); the paper exchange has no account to protect"
    if problem := _ccxt_options_violation(cfg.exchange.ccxt_options, "exchange.ccxt_options"):
        return problem
    if problem := _stop_mode_violation(cfg):
        return problem
    for sink in cfg.alerts.sinks:
        if sink.kind == "webhook" and not sink.url.startswith(("http://", "https://")):
            return f"alerts.sinks ({sink.label}): a webhook needs url = \"http(s)://...\", got {_show(sink.url)}"
    labels = [s.label for s in cfg.alerts.sinks]
    if len(set(labels)) != len(labels):
        return f"alerts.sinks: two sinks share the name {next(n for n in labels if labels.count(n) > 1)!r}; give each a name"
    if cfg.guard.reply_deadline_secs <= cfg.store.durable_wait_secs:
        return (
            f"guard.reply_deadline_secs ({cfg.guard.reply_deadline_secs}) must be greater than "
            f"store.durable_wait_secs ({cfg.store.durable_wait_secs}): an owner waiting on a durable write would be restarted"
        )
    return None


def _stop_mode_violation(cfg: Config) -> str | None:
    """``exchange.stop_mode = "position"``: Bybit's position-attached stop covers one whole one-way position."""
    e = cfg.exchange
    if e.stop_mode != "position":
        return None
    if e.name != "bybit":
        return f"exchange.stop_mode: \"position\" (the position-attached stop) is offered on bybit only, not on {e.name}"
    if e.hedge_mode:
        return "exchange.stop_mode: \"position\" is for one-way positions; with exchange.hedge_mode = true use \"order\""
    if cfg.take_profit.enabled:
        return "exchange.stop_mode: \"position\" is for positions without take-profit orders; set take_profit.enabled = false or use \"order\""
    return None


def _ccxt_options_violation(options: Any, prefix: str) -> str | None:
    """Credentials or verbose mode in ccxt options are refused whatever the venue (paper included)."""
    if not isinstance(options, dict):
        return None
    for key, value in options.items():
        where = f"{prefix}.{key}"
        if key == "verbose" and value:
            return f"{where}: refused: ccxt's verbose mode prints every request's headers, which carry the API key"
        if _SECRET_HINT.search(str(key)) or str(key).lower() in ("uid", "login", "privatekey", "walletaddress"):
            return f"{where}: refused: credentials come from the environment variables named in exchange.api_key_env / api_secret_env only"
        if problem := _ccxt_options_violation(value, where):
            return problem
    return None


def merge_live(current: Config, new: Config, keys: list[str]) -> Config:
    """``current`` with only the given ``section.key`` values taken from ``new``."""
    merged = msgspec.to_builtins(current, builtin_types=(Decimal,))
    fresh = msgspec.to_builtins(new, builtin_types=(Decimal,))
    for key in keys:
        section, name = key.split(".", 1)
        merged[section][name] = fresh[section][name]
    out = msgspec.convert(merged, Config)
    if problem := _cross_violation(out):
        raise ConfigError(f"not applied live: {problem}")
    return out


def config_diff(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """Flat ``{"section.key": (old, new)}`` for every value that changed."""
    out: dict[str, tuple[Any, Any]] = {}
    _diff(msgspec.to_builtins(old), msgspec.to_builtins(new), "", out)
    out.pop("base_dir", None)
    return out


def _diff(a: Any, b: Any, prefix: str, out: dict[str, tuple[Any, Any]]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff(a.get(key), b.get(key), f"{prefix}{key}" if not prefix else f"{prefix}.{key}", out)
    elif a != b:
        out[prefix] = (a, b)


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "decimal": "a number",
    "str": "a string",
    "bool": "true or false",
    "object": "a table",
    "array": "an array",
    "null": "nothing",
}


def _explain(msg: str, raw: dict[str, Any]) -> str:
    """Turn a msgspec ValidationError into 'key: expected ..., got ...'."""
    at = re.search(r" - at `\$\.?([^`]*)`$", msg)
    path = at.group(1) if at else ""
    body = msg[: at.start()] if at else msg
    given = _lookup(raw, path)
    if m := re.match(r"Object contains unknown field `([^`]+)`", body):
        key = f"{path}.{m.group(1)}" if path else m.group(1)
        hint = " (secrets are read from environment variables only, never from this file)" if _SECRET_HINT.search(m.group(1)) else _did_you_mean(path, m.group(1))
        return f"{key}: unknown key{hint}"
    if m := re.match(r"Expected `([^`]+)`, got `([^`]+)`", body):
        want = " or ".join(_TYPE_WORDS.get(t.strip(), t.strip()) for t in m.group(1).split("|"))
        return f"{path}: expected {want}, got {_show(given)}"
    if body.startswith("Invalid decimal string"):
        return f"{path}: expected a number, got {_show(given)}"
    if body.startswith("Invalid enum value"):
        return f"{path}: expected one of {_choices(path)}, got {_show(given)}"
    return f"{path or '(top level)'}: {body}"


def _did_you_mean(path: str, key: str) -> str:
    """`` (did you mean `trailing.activation_percent`?)`` for a misspelt key, or the section's keys."""
    import difflib

    node: Any = Config
    for part in filter(None, path.split(".")):
        node = get_type_hints(node, include_extras=True).get(part)
        if node is None or not hasattr(node, "__struct_fields__"):
            return ""
    fields = [f for f in node.__struct_fields__ if f != "base_dir"]
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f" (did you mean `{path + '.' if path else ''}{close[0]}`?)"
    return f" (known keys{' in [' + path + ']' if path else ''}: {', '.join(fields)})"


def _choices(path: str) -> str:
    hints: Any = Config
    for part in path.split("."):
        hints = get_type_hints(hints, include_extras=True).get(part)
        if hints is None:
            return "the allowed values"
    if get_origin(hints) is Literal:
        return ", ".join(repr(a) for a in get_args(hints))
    return "the allowed values"


def _lookup(raw: Any, path: str) -> Any:
    node = raw
    for part in filter(None, path.split(".")):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value).replace("'", '"')
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return str(value)


def _first_violation(struct: msgspec.Struct, prefix: str) -> str | None:
    hints = get_type_hints(type(struct), include_extras=True)
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        key = f"{prefix}{name}"
        if isinstance(value, msgspec.Struct):
            if problem := _first_violation(value, f"{key}."):
                return problem
            continue
        hint = hints[name]
        if isinstance(value, (tuple, list)) and get_args(hint):  # a sequence: check each element
            element = get_args(hint)[0]
            checks = [a for a in get_args(element)[1:] if isinstance(a, Check)] if get_origin(element) is Annotated else []
            for i, item in enumerate(value):
                for check in checks:
                    if not check.ok(item):
                        return f"{key}[{i}]: expected {'an integer' if get_args(element)[0] is int else 'a number'} {check.describe()}, got {_show(item)}"
            continue
        if isinstance(value, dict) and get_origin(hint) is dict and len(get_args(hint)) == 2:  # a table: check each value
            element = get_args(hint)[1]
            checks = [a for a in get_args(element)[1:] if isinstance(a, Check)] if get_origin(element) is Annotated else []
            for k, item in value.items():
                for check in checks:
                    if not check.ok(item):
                        return f"{key}.{k}: expected {'an integer' if get_args(element)[0] is int else 'a number'} {check.describe()}, got {_show(item)}"
            continue
        checks = [a for a in get_args(hint)[1:] if isinstance(a, Check)] if get_origin(hint) is Annotated else []
        base = get_args(hint)[0] if checks else hint
        if isinstance(value, Decimal) and not value.is_finite():
            return f"{key}: expected a finite number, got {value}"
        for check in checks:
            if not check.ok(value):
                word = "an integer" if base is int else "a number"
                return f"{key}: expected {word} {check.describe()}, got {_show(value)}"
    return None
