"""The paper exchange at scale: start-up time and memory with 1,000 markets.

Each size runs in a fresh interpreter and reports its own memory from
``/proc/self/status`` (VmHWM, the peak of its own address space, and VmRSS).
Not ``ru_maxrss``: Linux carries the parent's peak across fork and exec into
the child's ``ru_maxrss``, so under ``make bench`` every size read the bench
process's own peak (the same ~350 MB for both). The
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
import json, sys, time
from decimal import Decimal
from pathlib import Path
import msgspec
from adapters.markets import Markets
from adapters.paper import PaperEngine, PaperExchange
from adapters.paper.prices import PriceReplay
from core.clock import VirtualClock
def mem_mb():
    with open("/proc/self/status") as f:
        kv = dict(line.split(":", 1) for line in f)
    return int(kv["VmHWM"].split()[0]) / 1024, int(kv["VmRSS"].split()[0]) / 1024
n = int(sys.argv[1])
_, base = mem_mb()
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
peak, now = mem_mb()
print(json.dumps({"built_s": built, "first_read_s": first, "marks": len(marks), "peak_mb": peak, "rss_mb": now, "base_mb": base}))
"""


def run() -> None:
    print("paper exchange at scale (fresh interpreter per size; every market synthetic)")
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(__file__).resolve().parents[1]
    seen: dict[int, float] = {}
    for n in (100, 1_000):
        out = subprocess.run([sys.executable, "-c", PROBE, str(n), str(shared / "markets" / "binanceusdm-linear.json"), str(shared / "prices")], capture_output=True, text=True, cwd=root, timeout=300, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        row(f"{n:,} markets: start / first all-marks read", f"{r['built_s']:.2f} s / {r['first_read_s'] * 1000:.0f} ms ({r['marks']:,} marks)")
        row(f"{n:,} markets: peak / current RSS (after imports)", f"{r['peak_mb']:.1f} / {r['rss_mb']:.1f} MB ({r['base_mb']:.1f} MB)")
        seen[n] = r["rss_mb"] - r["base_mb"]
    row("per extra market (1,000 vs 100, current RSS over imports)", f"{(seen[1_000] - seen[100]) * 1024 / 900:.1f} KB")


if __name__ == "__main__":
    run()
