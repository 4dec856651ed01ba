"""Operations commands: ``tradebot alerts test`` (and the ``--version`` string)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

EXIT_UNHEALTHY = 4  # `tradebot ctl status`: the bot answered and is not healthy


def version() -> str:
    try:
        return metadata.version("tradebot")
    except metadata.PackageNotFoundError:
        return "0.1.0 (not installed)"


def add_commands(sub: Any, config_arg: Callable[[argparse.ArgumentParser], None], load: Callable[[argparse.Namespace], Any]) -> None:
    alerts = sub.add_parser("alerts", help="alert sinks")
    alerts_sub = alerts.add_subparsers(dest="alerts_cmd", required=True, metavar="SUBCOMMAND")
    test = alerts_sub.add_parser("test", help="send a test alert through every configured sink and print what each answered")
    config_arg(test)
    test.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS")
    test.set_defaults(func=lambda args: alerts_test(args, load))


def alerts_test(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]) -> int:
    """0: every sink took it; 1: at least one did not (or one cannot run)."""
    import threading

    import msgspec

    from actors.alert_rules import Alert
    from adapters.alert_sinks import Delivery, SinkSetupError
    from adapters.io_loop import IOLoop
    from tradebot.ops import build_sinks

    config, _ = load(args)
    results: list[Delivery] = []
    done = threading.Event()
    io = IOLoop("alerts-test").start()
    try:
        def answered(d: Delivery, _: dict[str, Any]) -> None:
            results.append(d)
            if len(results) >= len(sinks):
                done.set()

        sinks: list[Any] = []
        try:
            sinks = build_sinks(config, io, answered)
        except SinkSetupError as exc:
            print(f"tradebot alerts test: {exc}")
            return 1
        if not sinks:
            print("no alert sinks configured ([[alerts.sinks]])")
            return 1
        alert = Alert(rule="test", subject="", severity="critical", resolved=False, text="a test alert from `tradebot alerts test`: nothing is wrong",
                      event_type="alert.test", event_id=None, ts_ms=time.time_ns() // 1_000_000, test=True)
        payload = {**msgspec.to_builtins(alert), "message": alert.message()}
        for sink in sinks:
            io.run(sink.start(), 10)
            sink.submit(alert.key, payload, alert.message(), test=True)
        done.wait(args.timeout)
        for sink in sinks:
            io.run(sink.stop(), 10)
    finally:
        io.stop()
    by_sink = {d.sink: d for d in results}
    for sink in sinks:
        d = by_sink.get(sink.label)
        if d is None:
            print(f"{sink.label:<16} {sink.cfg.kind:<9} NO ANSWER within {args.timeout} s")
        else:
            print(f"{sink.label:<16} {sink.cfg.kind:<9} {'ok' if d.ok else 'FAILED'} after {d.attempts} attempt(s): {d.answer}")
    return 0 if len(by_sink) == len(sinks) and all(d.ok for d in results) else 1
