"""``make bench``: every benchmark, one after another, figures on stdout."""

from __future__ import annotations

import platform
import sys
import time

from loguru import logger

from benchmarks import (
    bench_actors,
    bench_aged,
    bench_burst,
    bench_dashboard,
    bench_detection,
    bench_executor,
    bench_ops,
    bench_paper_markets,
    bench_positions,
    bench_reconcile,
    bench_replay,
    bench_scale,
    bench_signals,
    bench_store,
    bench_streams,
    bench_trailing,
    bench_venue,
    bench_venue_bybit,
)
from core.config import parse_config


def main() -> int:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    interval_us = parse_config("").runtime.gil_switch_interval_us
    sys.setswitchinterval(interval_us / 1_000_000)  # as the runtime does
    print(f"tradebot benchmarks - Python {platform.python_version()} on {platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"(GIL switch interval {interval_us} us, as runtime.gil_switch_interval_us; figures vary with machine load: compare ratios within one run)\n")
    for bench in (bench_store, bench_burst, bench_actors, bench_executor, bench_positions, bench_trailing, bench_aged, bench_reconcile, bench_detection, bench_signals, bench_venue, bench_venue_bybit, bench_streams, bench_scale, bench_paper_markets, bench_replay, bench_ops, bench_dashboard):
        bench.run()
        print()
    return 0


raise SystemExit(main())
