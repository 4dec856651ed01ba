"""tradebot replay: virtual hours per wall second, the real tree on the demo waves (about ten positions)."""

from __future__ import annotations

from pathlib import Path

from benchmarks._util import row
from tradebot.replay import history_window, load_signal_frames, run_one, variants

ROOT = Path(__file__).resolve().parents[1]


def run(hours: int = 6) -> None:
    print("replay (tradebot replay: real actors, paper exchange, virtual clock)")
    t0, _ = history_window()
    frames = load_signal_frames(ROOT / "demo" / "waves.jsonl", t0)
    r = run_one(variants([], [])[0], frames, t0, t0 + hours * 3_600_000, base_dir=ROOT)
    s = r.speed
    row(f"demo waves, {r.report['positions_opened']} positions, {hours} virtual h", f"{s['virtual_hours_per_wall_second']} virtual h / wall s ({s['speed_up']}x real time, {s['wall_seconds']} s)")


if __name__ == "__main__":
    run()
