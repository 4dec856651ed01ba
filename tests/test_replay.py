"""tradebot replay: the real tree on the virtual clock; the same configuration twice gives the same report."""

from __future__ import annotations

from pathlib import Path

from tradebot.replay import history_window, load_signal_frames, run_one, variants

ROOT = Path(__file__).resolve().parents[1]


def test_the_same_configuration_twice_gives_the_same_figures():
    t0, _ = history_window()
    frames = load_signal_frames(ROOT / "demo" / "waves.jsonl", t0)
    v = variants([], ["trailing.callback_percent=0.5"])[0]
    a = run_one(v, frames, t0, t0 + 2 * 3_600_000, base_dir=ROOT).report
    b = run_one(v, frames, t0, t0 + 2 * 3_600_000, base_dir=ROOT).report
    assert a["positions_opened"] > 0
    money = [k for k in a if k != "requests_per_position_hour"]  # request counts can differ by a few (see README)
    assert {k: a[k] for k in money} == {k: b[k] for k in money}
