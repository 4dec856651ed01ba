"""``tradebot``: run the bot, talk to it, read its logs and events.

Exit codes: 0 ok; 1 the bot answered with an error / nothing found;
2 usage or config error; 3 no bot running (ctl) or unclean shutdown (run);
4 ``ctl status``: the bot answered and is unhealthy; 5 ``ctl close``: still closing when --wait ran out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.config import Config, ConfigError, load_config, parse_config
from core.control_protocol import COMMANDS, HELP
from tradebot import cli_ops
from tradebot import numbers as num

DEFAULT_CONFIG = "config.toml"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["signals", "serve"]:  # the server parses its own options
        from adapters.signal_server import main as serve

        return serve(argv[2:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        rc: int = args.func(args)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:  # piped into `head`: the reader left; no traceback
        _silence_stdout()
        return 0
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradebot", description="Crypto-futures position-protection bot.")
    p.add_argument("--version", action="version", version=f"tradebot {cli_ops.version()}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start the bot (supervisor and the whole actor tree)")
    _config_arg(run)
    run.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop gracefully after this many seconds")
    run.set_defaults(func=_cmd_run)

    ctl = sub.add_parser("ctl", help="send a command to the running bot", formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="commands:\n" + "\n".join(f"  {c:<11} {HELP[c]}" for c in COMMANDS))
    ctl.add_argument("command", help="one of: " + ", ".join(COMMANDS))
    ctl.add_argument("args", nargs="*", help="command arguments (close: POSITION_ID or SYMBOL)")
    ctl.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    ctl.add_argument("--dry-run", action="store_true", help="zombies: only report, cancel nothing")
    ctl.add_argument("--timeout", type=_positive_float, default=15.0, metavar="SECONDS")
    ctl.add_argument("--wait", type=_positive_float, default=30.0, metavar="SECS",
                     help="close / close-all: wait this long for the exit to be recorded, then print its fill and PnL (default 30)")
    ctl.add_argument("--no-wait", action="store_true", help="close / close-all: return once the bot accepted the close")
    _config_arg(ctl)
    ctl.set_defaults(func=_cmd_ctl)

    lg = sub.add_parser("logs", help="show an actor's log (or list them)")
    lg.add_argument("actor", nargs="?", help="actor name, e.g. supervisor, position:BTCUSDT:ab12, combined")
    lg.add_argument("--list", action="store_true", help="list the log files")
    lg.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    lg.add_argument("-n", "--lines", type=int, default=50, help="lines to show (default 50)")
    _config_arg(lg)
    lg.set_defaults(func=_cmd_logs)

    paper = sub.add_parser("paper", help="the paper exchange in its own process")
    paper_sub = paper.add_subparsers(dest="paper_cmd", required=True, metavar="ACTION")
    serve = paper_sub.add_parser("serve", help="run the paper exchange until SIGTERM/SIGINT (state is kept across restarts)")
    _config_arg(serve)
    serve.add_argument("--faults", metavar="FILE", help="inject faults: a JSON fault plan (error_rates, ambiguous_timeout_rate, latency_ms_min/max, partial_fill_prob, seed)")
    serve.set_defaults(func=_cmd_paper_serve)

    sig = sub.add_parser("signals", help="the bundled signal server")
    sig_sub = sig.add_subparsers(dest="signals_cmd", required=True, metavar="ACTION")
    sig_sub.add_parser("serve", help="serve signals over WebSocket on loopback: --replay FILE --port N --every SECONDS")

    soak = sub.add_parser("soak", help="the chaos run: faults, kills, actor crashes, then a verdict on every protection invariant")
    soak.add_argument("--profile", choices=("short", "long"), default="short", help="short: about a minute (make test); long: 15 minutes (releases)")
    soak.add_argument("--seed", type=int, help="random seed (waves, kills, faults)")
    soak.add_argument("--duration", type=_positive_float, dest="duration_s", metavar="SECONDS", help="chaos time (the final reconcile comes on top)")
    soak.add_argument("--kills", type=int, help="SIGKILLs at random moments")
    soak.add_argument("--crash-point", action="append", metavar="WHEN:EVENT", help="a run that SIGKILLs itself at this step, e.g. after:position.stop_move_sent (repeatable; '' for none)")
    soak.add_argument("--actor-crash-rate", type=float, help="probability per message that a position owner or the intake crashes")
    soak.add_argument("--error-rate", type=float, help="transient errors (network, 503) per exchange call")
    soak.add_argument("--timeout-rate", type=float, help="ambiguous timeouts per order call (executed, answer lost)")
    soak.add_argument("--reject-rate", type=float, help="refusals (rate limit) per exchange call")
    soak.add_argument("--latency-ms", metavar="LO,HI", help="latency range of every exchange call")
    soak.add_argument("--partial-fill", type=float, help="share of market orders that fill only in part")
    soak.add_argument("--speed", type=int, help="price history replay speed")
    soak.add_argument("--wave-every", type=_positive_float, dest="wave_every_s", metavar="SECONDS", help="seconds between signal waves")
    soak.add_argument("--budget-ms", type=int, help="longest unprotected stretch allowed while the bot runs")
    soak.add_argument("--dir", metavar="PATH", help="work here (kept) instead of a temporary directory")
    soak.add_argument("--keep", action="store_true", help="keep the temporary directory")
    soak.add_argument("--json", action="store_true", help="print the verdict as JSON")
    soak.add_argument("--quiet", action="store_true", help="no progress lines")
    soak.set_defaults(func=_cmd_soak)

    from tradebot.replay_cli import register as register_replay

    register_replay(sub)

    tr = sub.add_parser("trace", help="a position's whole life as a timeline with durations (stop live, move overlaps, unprotected time)")
    tr.add_argument("position", metavar="POSITION", help="position id (or a unique prefix) or symbol (its open position, else its newest)")
    tr.add_argument("--json", action="store_true", help="print the timeline as JSON (exact Decimal strings)")
    _config_arg(tr)
    tr.set_defaults(func=_cmd_trace)

    pn = sub.add_parser("pnl", help="realised PnL of closed positions: count, win rate, average hold, exits by reason")
    pn.add_argument("--since", metavar="WHEN", help="closed since: ISO time, epoch ms, or an age such as 7d")
    pn.add_argument("--by", choices=("day", "symbol"), help="one row per UTC day or per symbol")
    pn.add_argument("--json", action="store_true", help="print the summaries as JSON (exact Decimal strings)")
    _config_arg(pn)
    pn.set_defaults(func=_cmd_pnl)

    ev = sub.add_parser("events", help="read the event store")
    ev.add_argument("--position", metavar="ID", help="only this position's events")
    ev.add_argument("--type", action="append", default=[], metavar="T", help="event type; 'prefix*' matches a family (repeatable)")
    ev.add_argument("--actor", metavar="NAME")
    ev.add_argument("--correlation", metavar="ID")
    ev.add_argument("--since", metavar="WHEN", help="ISO time, epoch ms, or an age such as 30s, 15m, 2h, 1d")
    ev.add_argument("--limit", type=int, default=200, help="newest N matching events (default 200, 0 = all)")
    ev.add_argument("--json", action="store_true", help="print a JSON array")
    _config_arg(ev)
    ev.set_defaults(func=_cmd_events)
    cli_ops.add_commands(sub, _config_arg, _load)
    return p


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH", help=f"config file (default: ./{DEFAULT_CONFIG}, else built-in defaults)")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _load(args: argparse.Namespace) -> tuple[Config, str | None]:
    if args.config:
        return load_config(args.config), str(Path(args.config).resolve())
    if Path(DEFAULT_CONFIG).exists():
        return load_config(DEFAULT_CONFIG), str(Path(DEFAULT_CONFIG).resolve())
    return parse_config("", label="(built-in defaults)", base_dir=Path.cwd()), None


# ------------------------------------------------------------------ run
def _cmd_run(args: argparse.Namespace) -> int:
    from supervision.runtime import Runtime
    from tradebot.wiring import build_children

    config, path = _load(args)
    runtime = Runtime(config, config_path=path, children=build_children)
    runtime.install_signal_handlers()  # before start: a signal during start-up is a clean stop too
    try:
        runtime.start()
    except Exception as exc:
        print(f"tradebot: could not start: {exc}", file=sys.stderr)
        return 2
    return runtime.run_until_stopped(args.duration)


def _cmd_paper_serve(args: argparse.Namespace) -> int:
    from loguru import logger

    from adapters.paper.server import PaperServer
    from adapters.pid_lock import Locked

    config, _ = _load(args)
    logger.remove()
    logger.add(sys.stderr, level=config.logging.console_level)
    try:
        faults = None
        if args.faults:
            import msgspec

            from adapters.paper.faults import FaultPlan

            faults = msgspec.json.decode(Path(args.faults).read_bytes(), type=FaultPlan)
        server = PaperServer(config, socket_path=config.paper_socket, state_path=config.paper_state_path, faults=faults)
    except Locked as exc:
        print(f"tradebot paper serve: refused: {exc}", file=sys.stderr)
        return 3
    except (OSError, ValueError) as exc:  # a bad fault plan is a ValueError (msgspec.DecodeError)
        print(f"tradebot paper serve: could not start: {exc}", file=sys.stderr)
        return 2
    return server.run()


def _cmd_soak(args: argparse.Namespace) -> int:
    from tradebot.soak import main as soak

    return soak(args)


# ------------------------------------------------------------------ ctl
def _cmd_ctl(args: argparse.Namespace) -> int:
    from tradebot.control_client import BotNotRunning, send_command

    def fail(message: str, code: int, prefix: bool = True) -> int:
        """An error before or instead of a reply: JSON on stdout with --json (scripts parse one shape), text on stderr otherwise."""
        if args.json:
            print(json.dumps({"ok": False, "result": None, "error": message, "id": None}, indent=2))
        else:
            head = f"tradebot ctl{' ' + args.command if code == 2 and args.command in COMMANDS else ''}: " if prefix else ""
            print(head + message, file=sys.stderr)
        return code

    try:
        config, _ = _load(args)
    except ConfigError as exc:
        return fail(str(exc), 2, prefix=False)  # one line naming the file, as every subcommand prints it
    spec = COMMANDS.get(args.command)
    if spec is None:
        return fail(f"unknown command {args.command!r}; known: {', '.join(COMMANDS)}", 2)
    positional = [a for a in spec if not a.startswith("?")]
    if len(args.args) != len(positional):
        wanted = " ".join(a.upper() for a in positional) or "no arguments"
        return fail(f"expected {wanted}, got {len(args.args)} argument(s)", 2)
    cmd_args: dict[str, Any] = dict(zip(positional, args.args, strict=False))
    if args.dry_run:
        if "?dry_run" not in spec:
            return fail("--dry-run applies to zombies only", 2)
        cmd_args["dry_run"] = True
    waiting = args.command in ("close", "close-all") and not args.no_wait
    asked_ms = time.time_ns() // 1_000_000
    try:
        reply = send_command(config.control_socket, args.command, cmd_args, timeout_s=args.timeout,
                             ttl_ms=config.control.command_ttl_secs * 1000)
    except BotNotRunning as exc:
        return fail(str(exc), 3)
    except (TimeoutError, ConnectionError, PermissionError) as exc:
        return fail(str(exc), 1)
    if waiting and reply.ok and isinstance(reply.result, dict):
        return _close_and_wait(args, config, reply, asked_ms)
    if args.json:
        print(json.dumps({"ok": reply.ok, "result": reply.result, "error": reply.error, "id": reply.id}, indent=2, default=str))
    elif reply.ok:
        print(_render(args.command, reply.result))
    else:
        print(f"error: {reply.error}", file=sys.stderr)
    if reply.ok and args.command == "status" and isinstance(reply.result, dict) and not reply.result.get("healthy", True):
        return cli_ops.EXIT_UNHEALTHY
    return 0 if reply.ok else 1


def _close_and_wait(args: argparse.Namespace, config: Config, reply: Any, asked_ms: int) -> int:
    """The bot took the close: wait (bounded) for each exit to be committed, then print fill and PnL."""
    from tradebot import ctl_close
    from tradebot.reports import market_increments

    closing = list(reply.result.get("closing") or [])
    ids = ctl_close.position_ids(closing)
    closed, pending, failure = ctl_close.wait_for_exits(config.store_path, ids, args.wait, since_ms=asked_ms)
    result = {"closing": closing, "closed": closed, "still_closing": pending}
    error = None
    if pending:
        error = f"still closing after {num.exact(args.wait)} s: {', '.join(f'{p} ({ids[p]})' for p in pending)}; the bot keeps at it (`tradebot ctl positions`, `tradebot trace ID`)" + (f"; {failure}" if failure else "")
    if args.json:
        print(json.dumps({"ok": not pending, "result": result, "error": error, "id": reply.id}, indent=2, default=str))
    else:
        if closed:
            print(ctl_close.render_exits(closed, market_increments(config)))
        elif not closing:
            print("no open positions")
        if error:
            print(f"error: {error}", file=sys.stderr)
    return ctl_close.EXIT_STILL_CLOSING if pending else 0


def _render(command: str, result: Any) -> str:
    if command == "status" and isinstance(result, dict):
        lines = [
            f"healthy:    {'yes' if result['healthy'] else 'NO'}",
            *(["mode:       READ-ONLY: no orders are sent (exchange.read_only = true)"] if result.get("read_only") else []),
            f"uptime:     {num.duration(float(result['uptime_s']) * 1000)} (pid {result['pid']})",
            f"intake:     {'open' if result['intake']['open'] else 'closed'}"
            + ("" if result["intake"]["open"] else f" ({'paused by user' if result['intake']['paused_by_user'] else ''}{'; '.join(result['intake']['blocked'].values())})"),
            f"positions:  {result['positions']}",
            *([f"venue:      {result['venue']} ({result.get('mode')})"] if result.get("venue") else []),
            *([f"reconcile:  {_seen_line(result.get('last_reconcile'))}", f"last wave:  {_seen_line(result.get('last_wave'))}"] if "last_reconcile" in result else []),
            *_balance_lines(result),
            f"store:      {'ok' if result['store']['ok'] else 'FAILING'}, {result['store']['committed']} events written, backlog {result['store']['backlog']}",
            f"signals:    {result.get('signal_feed', {}).get('state', 'none')}",
        ]
        lines += [f"problem:    {p}" for p in result["problems"]]
        for child in result["children"]:
            lines.append(f"  {child['name']:<40} {'alive' if child['alive'] else 'DOWN'}  restarts={child['restarts']}")
        return "\n".join(lines)
    if command == "positions" and isinstance(result, list):
        if not result:
            return "no open positions"
        cols = ("symbol", "side", "state", "quantity", "entry_price", "mark", "stop_price", "stop_kind", "to_stop", "unrealised", "trailing", "age", "aged_phase", "verified", "position_id")
        result = [_trader_cells(p) for p in result]
        return num.table(cols, [_position_cells(p, cols) for p in result])
    if command == "aged" and isinstance(result, list):
        if not result:
            return "no aged positions"
        aged_cols: tuple[str, ...] = ("symbol", "side", "phase", "age_h", "loss_percent", "exit_price", "exit_qty", "mark", "distance_percent", "mark_age_s", "failures", "position_id")
        return num.table(aged_cols, [_position_cells(p, aged_cols) for p in result])
    if command in ("sync", "zombies") and isinstance(result, dict):
        keys = ("untracked", "phantoms", "mismatches", "strays", "zombies")
        head = f"{'clean' if result.get('ok') and not any(result.get(k) for k in keys) else 'findings'}: {result.get('positions', 0)} positions, {result.get('orders', 0)} open orders read in {result.get('duration_ms')} ms"
        lines = [head] + [f"  {k}: {num.plain(result[k])}" for k in keys if result.get(k)]
        if result.get("zombies"):
            done = "dry run: nothing cancelled" if result.get("dry_run") else f"cancelled {result.get('cancelled', 0)}, failed {result.get('cancel_failed', 0)}"
            lines.append(f"  {done}")
        if result.get("error"):
            lines.append(f"  error: {result['error']}")
        return "\n".join(lines)
    if isinstance(result, dict):
        return "\n".join(f"{k}: {num.plain(v)}" for k, v in result.items())
    return num.plain(result)


_PRICE_COLS = frozenset({"entry_price", "stop_price", "aged_price", "exit_price", "mark"})
_QTY_COLS = frozenset({"quantity", "exit_qty"})
_PERCENT_COLS = frozenset({"loss_percent", "distance_percent"})


def _balance_lines(result: dict[str, Any]) -> list[str]:
    """``balance:`` per venue: total, free and used (margin) as money, and when it was read; unknown until read."""
    if "balance" not in result:
        return []  # an older bot
    balances = result.get("balance") or {}
    if not balances:
        return ["balance:    unknown (not read yet: the first full reconcile reads it)"]
    lines = []
    for venue, b in balances.items():
        label = f"balance:    {venue}: " if len(balances) > 1 else "balance:    "
        if b.get("ts_ms") is None:
            lines.append(f"{label}unknown (the read failed: {b.get('last_error')})")
            continue
        ccy = b.get("asset")
        text = f"{num.money(b.get('total'), ccy) or '?'} total, {num.money(b.get('free'), ccy) or '?'} free, {num.money(b.get('used'), ccy) or '?'} in use"
        text += f" (read {num.when(b['ts_ms'])}, {num.duration(int(b['ago_s']) * 1000)} ago)"
        if b.get("last_error"):
            text += f"; the last read failed: {b['last_error']}"
        lines.append(label + text)
    return lines


def _seen_line(seen: dict[str, Any] | None) -> str:
    if not seen:
        return "none yet"
    return f"{seen['at']} ({num.duration(int(seen['ago_s']) * 1000)} ago){'' if seen.get('ok', True) else ', FAILED'}"


def _trader_cells(row: dict[str, Any]) -> dict[str, Any]:
    """``ctl positions``: the trader's figures as printed (distance and PnL with their units, age as a duration)."""
    ccy = "USDC" if str(row.get("symbol") or "").endswith("USDC") else "USDT"
    upnl = row.get("unrealised_pnl")
    trailing = row.get("trailing") or ""
    if trailing == "active" and row.get("trail_best") is not None:
        trailing += f" (best {num.price(row['trail_best'], row.get('tick_size'))})"
    return {
        **row,
        "to_stop": "" if row.get("stop_distance_percent") is None else num.percent(row["stop_distance_percent"]),
        "unrealised": "" if upnl is None else f"{num.money(upnl, ccy)} ({num.percent(row.get('unrealised_pnl_percent'))})",
        "trailing": trailing,
        "age": "" if row.get("age_ms") is None else num.duration(row["age_ms"]),
        "verified": "" if row.get("last_verified_ms") is None else num.when(row["last_verified_ms"]),
    }


def _position_cells(row: dict[str, Any], cols: tuple[str, ...]) -> list[str]:
    """One table row: prices on the row's tick, quantities on its step (exact when unknown), percents with two decimals."""
    out = []
    for c in cols:
        v = row.get(c)
        if c in _PRICE_COLS:
            out.append(num.price(v, row.get("tick_size")))
        elif c in _QTY_COLS:
            out.append(num.qty(v, row.get("step_size")))
        elif c in _PERCENT_COLS:
            out.append(num.percent(v))
        elif c == "age_h":
            out.append("" if v is None else f"{float(v):.2f}")
        else:
            out.append(num.plain(v))
    return out


def _cmd_trace(args: argparse.Namespace) -> int:
    from tradebot.reports import cmd_trace

    config, _ = _load(args)
    return cmd_trace(args, config)


def _cmd_pnl(args: argparse.Namespace) -> int:
    from tradebot.reports import cmd_pnl

    config, _ = _load(args)
    return cmd_pnl(args, config)


# ----------------------------------------------------------------- logs
def _cmd_logs(args: argparse.Namespace) -> int:
    from core import logs

    config, _ = _load(args)
    log_dir = config.log_dir
    if args.list or not args.actor:
        files = logs.list_logs(log_dir)
        if not files:
            print(f"no logs yet in {log_dir}")
            return 1
        for f in files:
            when = dt.datetime.fromtimestamp(f.modified_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
            print(f"{f.actor:<44} {f.size_bytes:>12,} B  {when}")
        return 0
    try:
        path = logs.resolve_log(log_dir, args.actor)
    except LookupError as exc:
        print(f"tradebot logs: {exc}", file=sys.stderr)
        return 1
    for line in logs.tail_lines(path, max(0, args.lines)):
        print(line)
    if args.follow:
        try:
            for line in logs.follow(path):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
    return 0


# --------------------------------------------------------------- events
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def parse_since(text: str, now_ms: int) -> int:
    """'15m' / '2h' / '1d' / '30s', epoch ms, or an ISO time (UTC if no zone)."""
    text = text.strip()
    if m := _AGE.match(text):
        mult = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2)]
        back = float(m.group(1)) * mult
        if back != back or back > now_ms:
            raise ValueError(f"--since: {text} reaches back before 1970")
        return now_ms - int(back)
    if re.fullmatch(r"[0-9]+", text):
        if int(text) > _MAX_MS:
            raise ValueError(f"--since: {text} is not an epoch time in ms (the largest is {_MAX_MS}, the end of year 9999)")
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since: expected an ISO time, epoch ms or an age like 15m, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    try:
        return int(when.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"--since: {text!r} is out of range") from None


def _unknown_types(asked: list[str], known: list[str]) -> tuple[list[str], list[str]] | None:
    """The ``--type`` values no stored type matches, and the known families (``position.*``), or None if all match."""
    bad = [t for t in asked if not any(k.startswith(t[:-1]) if t.endswith("*") else k == t for k in known)]
    families = sorted({k.split(".", 1)[0] + ".*" for k in known})
    return (bad, families) if bad else None


def _cmd_events(args: argparse.Namespace) -> int:
    import time

    from adapters.event_store import EventStore
    from adapters.io_loop import IOLoop

    config, _ = _load(args)
    try:
        since = parse_since(args.since, time.time_ns() // 1_000_000) if args.since else None
    except ValueError as exc:
        print(f"tradebot events: {exc}", file=sys.stderr)
        return 2
    exact = tuple(t for t in args.type if not t.endswith("*"))
    prefixes = tuple(t[:-1] for t in args.type if t.endswith("*"))
    io = IOLoop("events-cli").start()
    try:
        store = EventStore(config.store_path, io, readonly=True).open()
    except FileNotFoundError:
        io.stop()
        print(f"tradebot events: no event store at {config.store_path} (has the bot run yet?)", file=sys.stderr)
        return 1
    try:
        events = io.run(
            store.query(position_id=args.position, types=exact, type_prefixes=prefixes, actor=args.actor,
                        correlation_id=args.correlation, since_ms=since, limit=args.limit or None, newest_first=True),
            30,
        )
        unknown = _unknown_types(args.type, io.run(store.event_types(), 30)) if args.type and not events else None
    finally:
        store.close()
        io.stop()
    if unknown:
        bad, families = unknown
        print(f"tradebot events: no event type matches {', '.join(bad)}; known families: {', '.join(families) or 'none yet'}", file=sys.stderr)
        if args.json:
            print("[]")
        return 1
    if args.json:
        print(json.dumps([e.to_dict() for e in events], indent=1, default=str))
        return 0
    for e in events:
        when = dt.datetime.fromtimestamp(e.ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        who = " ".join(x for x in (e.symbol, e.position_id) if x)
        data = json.dumps(e.data, separators=(",", ":"), default=str)
        print(f"{e.id:>7} {when} {e.severity.label:<8} {e.actor:<24} {e.type:<34} {who} {data}")
    if not events:
        print("no matching events", file=sys.stderr)
    return 0
