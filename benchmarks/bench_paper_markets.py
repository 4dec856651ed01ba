"""The paper exchange at scale: start-up time and memory with 1,000 markets.

Each size runs in a fresh interpreter (so its peak RSS is its own): the
markets (clones of the real BTCUSDT definition), the engine, the price replay
(every market synthetic: a block bootstrap of the real BTC candles) and the
facade are built, and one mark per market is read, as the first tick does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks._util import row

PROBE = r"""
import json, resource, sys, time
from decimal import Decimal
from pathlib import Path
import msgspec
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.paper.prices import PriceReplay
from core.clock import VirtualClock
n = int(sys.argv[1])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
btc = Markets.from_file(Path(sys.argv[2])).resolve("BTCUSDT")
t0 = time.perf_counter()
markets = Markets([msgspec.structs.replace(btc, symbol=f"M{i:04d}/USDT:USDT", id=f"M{i:04d}USDT", base=f"M{i:04d}") for i in range(n)])
clock = VirtualClock()
engine = PaperEngine(markets, flavour="binance", initial_balance=Decimal(10**6))
replay = PriceReplay(markets, start_ms=clock.now_ms(), real_histories={}, data_dir=Path(sys.argv[3]))
PaperExchange(engine, clock, flavour="binance", price_replay=replay, markets_path=Path(sys.argv[2]))
built = time.perf_counter() - t0
marks = replay.prices_at(clock.now_ms() + 3_600_000)
first = time.perf_counter() - t0 - built
print(json.dumps({"built_s": built, "first_read_s": first, "marks": len(marks), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_mb": base / 1024}))
"""


def run() -> None:
    print("paper exchange at scale (fresh interpreter per size; every market synthetic)")
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(__file__).resolve().parents[1]
    for n in (100, 1_000):
        out = subprocess.run([sys.executable, "-c", PROBE, str(n), str(shared / "markets" / "binanceusdm-linear.json"), str(shared / "prices")], capture_output=True, text=True, cwd=root, timeout=300, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        row(f"{n:,} markets: start / first all-marks read", f"{r['built_s']:.2f} s / {r['first_read_s'] * 1000:.0f} ms ({r['marks']:,} marks)")
        row(f"{n:,} markets: peak RSS (of it, after imports)", f"{r['rss_mb']:.0f} MB ({r['base_mb']:.0f} MB)")


if __name__ == "__main__":
    run()
