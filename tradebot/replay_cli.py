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
    rp.add_argument("--history", metavar="FILE", help="BTC candles to replay instead of the bundled month (a file in paper.data_dir/prices)")
    rp.add_argument("--json", action="store_true", help="print the reports as JSON")
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

    from tradebot.replay import history_window, load_signal_frames, run_one, variants
    from tradebot.replay_report import table, to_json

    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    try:
        h0, h1 = history_window()
        start = parse_time(args.t_from) if args.t_from else h0
        end = parse_time(args.t_to) if args.t_to else start + 24 * 3_600_000
        if end <= start:
            raise ValueError("--to must be after --from")
        if start < h0 or end > h1:
            print(f"tradebot replay: note: the window goes outside the history ({h0}..{h1} ms); prices wrap (mirrored)", file=sys.stderr)
        runs = variants([Path(p) for p in args.config], args.set)
        frames = load_signal_frames(Path(args.signals), start)
    except (ValueError, OSError) as exc:
        print(f"tradebot replay: {exc}", file=sys.stderr)
        return 2
    base_dir = Path(args.config[0]).resolve().parent if args.config else Path.cwd()
    results = []
    for v in runs:
        print(f"tradebot replay: {v.label} ...", file=sys.stderr, flush=True)
        results.append(run_one(v, frames, start, end, base_dir=base_dir, history=args.history))
        print(f"tradebot replay: {v.label}: {results[-1].speed}", file=sys.stderr, flush=True)
    print(to_json(results) if args.json else table(results))
    return 0
