"""``make bench``: every benchmark, one after another, figures on stdout."""

from __future__ import annotations

import platform
import sys
import time

from loguru import logger

from benchmarks import bench_actors, bench_store


def main() -> int:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    print(f"tradebot benchmarks - Python {platform.python_version()} on {platform.machine()}, {time.strftime('%Y-%m-%d %H:%M')}")
    print("(figures vary with machine load: compare ratios within one run)\n")
    for bench in (bench_store, bench_actors):
        bench.run()
        print()
    return 0


raise SystemExit(main())
