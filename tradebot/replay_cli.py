"""``tradebot replay``'s command line: options, the runs, the table or JSON (see :mod:`tradebot.replay`)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    rp = sub.add_parser("replay", help="replay signals on real price history with the real bot, once per configuration; compare",
                        description="Runs the real actor tree on a virtual clock against the paper exchange replaying recorded prices. "
                                    "Deterministic; as fast as the CPU allows. A comparison on one window overfits: check another window.")
    rp.add_argument("--signals", required=True, metavar="FILE", help="waves (as demo/waves.jsonl) or recorded batch frames, JSON lines")
    rp.add_argument("--from", dest="t_from", metavar="TIME", help="window start, UTC (2022-01-03 or 2022-01-03T12:00, or epoch ms); default: the history's start")
    rp.add_argument("--to", dest="t_to", metavar="TIME", help="window end (default: 24 h after the start)")
    rp.add_argument("--config", action="append", default=[], metavar="FILE", help="a configuration to replay (repeatable; default: the embedded defaults)")
    rp.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2", help="override a key, one run per value (repeatable: a grid)")
    rp.add_argument("--history", metavar="FILE", help="BTC history to replay instead of the bundled month: a CSV of candles or of trade ticks (told by its header), or a JSON candle file (formats in the README), "
                                                    "a path, or a name in paper.data_dir/prices")
    rp.add_argument("--faults", action="append", default=[], metavar="PROFILE",
                    help="the paper exchange's faults: off (default), transient (retried errors only), short or long (tradebot soak's profiles), "
                         "or a FaultPlan JSON file; seeded, drawn per call and virtual instant (deterministic); repeatable: one run per profile")
    rp.add_argument("--json", action="store_true", help="print the reports as JSON")
    rp.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report: equity curves, a chart per position")
    rp.add_argument("--objective", choices=("pnl", "pnl_drawdown"), default="pnl", help="how the best run is chosen (default: net realised PnL)")
    rp.add_argument("--jobs", type=int, metavar="N", help="runs in parallel processes (default: the core count)")
    rp.set_defaults(func=main)


def parse_time(text: str) -> int:
    if text.isdigit():
        return int(text)
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def main(args: argparse.Namespace) -> int:
    from loguru import logger

    from tradebot.replay import history_window, load_signal_frames, run_all, variants
    from tradebot.replay_report import table, to_json

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    try:
        history = str(Path(args.history).resolve()) if args.history and Path(args.history).exists() else args.history
        h0, h1 = history_window(history)
        start = parse_time(args.t_from) if args.t_from else h0
        end = parse_time(args.t_to) if args.t_to else start + 24 * 3_600_000
        if end <= start:
            raise ValueError("--to must be after --from")
        if start < h0 or end > h1:
            print(f"tradebot replay: note: the window goes outside the history ({h0}..{h1} ms); prices wrap (mirrored)", file=sys.stderr)
        runs = variants([Path(p) for p in args.config], args.set, args.faults)
        frames = load_signal_frames(Path(args.signals), start)
    except (ValueError, OSError) as exc:
        print(f"tradebot replay: {exc}", file=sys.stderr)
        return 2
    base_dir = Path(args.config[0]).resolve().parent if args.config else Path.cwd()
    print(f"tradebot replay: {len(runs)} run(s) of {(end - start) / 3_600_000:g} virtual h ...", file=sys.stderr, flush=True)

    def progress(r: Any) -> None:
        s = r.speed
        print(f"tradebot replay: {r.label}: {s['virtual_hours']} virtual h in {s['wall_seconds']} s "
              f"({s['virtual_hours_per_wall_second']} virtual h per wall s, {s['speed_up']:,}x real time)", file=sys.stderr, flush=True)

    results = run_all(runs, frames, start, end, base_dir=base_dir, history=history, jobs=args.jobs, progress=progress)
    print(to_json(results, args.objective) if args.json else table(results, args.objective))
    if args.html:
        from tradebot.replay_html import page

        Path(args.html).write_text(page(results, args.objective))
        print(f"tradebot replay: HTML report written to {args.html}", file=sys.stderr)
    return 0
