"""Small helpers shared by the benchmarks."""

from __future__ import annotations

import statistics


def pct(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) of ``samples`` (nearest rank)."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def summary_us(samples_ns: list[int]) -> str:
    us = [s / 1000 for s in samples_ns]
    return f"p50 {pct(us, 50):,.1f} us  p99 {pct(us, 99):,.1f} us  max {max(us):,.1f} us  mean {statistics.fmean(us):,.1f} us  (n={len(us):,})"


def row(name: str, value: str) -> None:
    print(f"  {name:<52} {value}", flush=True)
