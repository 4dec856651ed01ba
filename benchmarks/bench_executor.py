"""The executor's request budget: who waits in a read flood, and what the limiter costs.

1. A burst of 2,000 mixed reads (about four minutes of Binance's read budget)
   arrives at once; entries and protective calls (stops, protective closes)
   keep arriving during it. Virtual time: minutes of budget in well under a
   second, no sleeping. The figures are waits in *venue* time.
2. Overhead per call when nothing is throttled, on the real clock: the
   limiter's ``acquire`` alone, and ``Executor.run`` with and without a budget.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

from adapters.executor import Executor
from adapters.rate_limit import RateLimiter
from adapters.rate_tables import UNLIMITED, Priority
from adapters.venues.binance import LIMITS as BINANCE
from benchmarks._util import pct, row
from core.clock import ManualTime, VirtualClock, drive

READ_MIX = (("fetch_order", 0.5), ("fetch_mark_price", 0.3), ("fetch_positions", 0.15), ("fetch_my_trades", 0.05))


async def _flood(n_reads: int, n_stops: int, n_entries: int, seed: int = 3) -> tuple[dict[Priority, list[float]], float, dict[str, Any]]:
    clock = ManualTime()
    limiter = RateLimiter(BINANCE, monotonic_s=clock.now, sleep=clock.sleep)
    rng = random.Random(seed)
    waits: dict[Priority, list[float]] = {p: [] for p in Priority}

    async def call(op: str, at_s: float) -> None:
        if at_s:
            await clock.sleep(at_s)
        permit = await limiter.acquire(op)
        waits[Priority.PROTECT if op.startswith("create_order.stop") or op == "create_order.close" else Priority.ENTRY if op.startswith("create_order") else Priority.READ].append(permit.waited_s)

    ops = [rng.choices([op for op, _ in READ_MIX], [w for _, w in READ_MIX])[0] for _ in range(n_reads)]
    tasks = [asyncio.create_task(call(op, 0.0)) for op in ops]  # the flood, all at once
    tasks += [asyncio.create_task(call(rng.choice(["create_order.stop", "create_order.close"]), rng.uniform(0.1, 240))) for _ in range(n_stops)]
    tasks += [asyncio.create_task(call("create_order.stop", 30.0)) for _ in range(20)]  # a burst of stops mid-flood
    tasks += [asyncio.create_task(call("create_order.entry", rng.uniform(0.1, 240))) for _ in range(n_entries)]
    await drive(clock, tasks, max_steps=10**7)
    return waits, clock.t, limiter.stats()


async def _overhead(n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    step = iter(itertools.count())
    # 20 reads a virtual second: about 1,200 weight in any minute, under the 1,536 reads may use
    limiter = RateLimiter(BINANCE, monotonic_s=lambda: next(step) * 0.05)
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await limiter.acquire("fetch_order")
    out["acquire"] = (time.perf_counter_ns() - t0) / n / 1000
    assert limiter.stats()["classes"]["read"]["waited"] == 0

    async def call() -> None:
        return None

    for name, lim in (("run_unlimited", RateLimiter(UNLIMITED)), ("run_budget", RateLimiter(BINANCE, monotonic_s=lambda: next(step) * 0.05))):
        ex = Executor(venue="bench", store=None, clock=VirtualClock(), limiter=lim)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await ex.run("fetch_order", call, idempotent=True, record=False)
        out[name] = (time.perf_counter_ns() - t0) / n / 1000
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await call()
    out["bare"] = (time.perf_counter_ns() - t0) / n / 1000
    return out


def run() -> None:
    print("executor request budget (Binance USDⓈ-M table, share 0.8, protective reserve 0.2)")
    n_reads, n_stops, n_entries = 2000, 100, 50
    started = time.perf_counter()
    waits, span_s, stats = asyncio.run(_flood(n_reads, n_stops, n_entries))
    wall = time.perf_counter() - started
    row(f"flood: {n_reads} reads at once, {n_stops + 20} protective + {n_entries} entries during it", f"{span_s:.0f} s of venue time in {wall:.2f} s wall (virtual clock)")
    for cls, label in ((Priority.PROTECT, "protective calls"), (Priority.ENTRY, "entries"), (Priority.READ, "reads")):
        w = [s * 1000 for s in waits[cls]]
        row(f"  wait, {label} (n={len(w)})", f"p50 {pct(w, 50):,.0f} ms  p99 {pct(w, 99):,.0f} ms  max {max(w):,.0f} ms")
    weight = stats["windows"]["weight_1m"]
    row("  weight window at the end", f"{weight['used']} used of {weight['cap']:.0f} (reads and entries stop at {weight['cap_non_protect']:.0f})")
    n = 20_000
    o = asyncio.run(_overhead(n))
    row("overhead, not throttled (real clock)", f"acquire {o['acquire']:.2f} us/call  (n={n:,})")
    row("  Executor.run of an empty call", f"with budget {o['run_budget']:.2f} us  without {o['run_unlimited']:.2f} us  bare await {o['bare']:.2f} us")
