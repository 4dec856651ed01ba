"""tradebot replay: virtual hours per wall second, the real tree on the demo waves and at about 10 and 100 open positions.

The demo waves open about eight positions. For the 10- and 100-position runs a signals file in the
demo waves' format is generated (seeded, so the same file every run): one wave every 15 minutes over
the window, each naming every market of the run with a random side and score, and the run's config
sets ``signals.wave_limit`` and ``signals.max_open_positions`` to that count, so every wave tops the
open positions back up to it (the intake skips a symbol already held). One position per symbol means
100 positions need 100 markets and the paper exchange ships 7 (BTC, ETH, LTC, ADA, XRP, DOGE, TRX):
the runs use a data directory of their own holding those 7 plus clones of the ADA definition (tick
0.0001, step 1; symbols C001USDT, ...), whose price paths are synthetic like every non-BTC/XRP symbol
(a bootstrap of the real BTC candles, starting at 1). The real price files are linked, not copied.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._util import row
from tradebot.replay import REPLAY_BASE, Variant, history_window, load_signal_frames, merge, run_one, variants

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
MARKETS_FILE = "binanceusdm-linear.json"


def data_dir_with_markets(dest: Path, n: int) -> list[str]:
    """A paper data directory at ``dest`` with the real markets plus clones of ADA up to ``n`` markets; their ids."""
    real = json.loads((SHARED / "markets" / MARKETS_FILE).read_text())
    ada = json.dumps(real["ADA/USDT:USDT"])
    out = dict(real)
    for i in range(max(0, n - len(real))):
        base = f"C{i + 1:03d}"
        out[f"{base}/USDT:USDT"] = json.loads(ada.replace("ADA", base))
    (dest / "markets").mkdir(parents=True)
    (dest / "markets" / MARKETS_FILE).write_text(json.dumps(out))
    (dest / "prices").symlink_to(SHARED / "prices", target_is_directory=True)
    return [m["id"] for m in out.values()][:n]


def signals_file(path: Path, symbols: list[str], hours: float, seed: int = 1) -> Path:
    """One wave every 15 minutes for ``hours``, each naming every symbol (seeded sides and scores)."""
    rng = random.Random(seed)
    lines = []
    for k in range(int(hours * 4)):
        sigs = [{"symbol": s, "action": rng.choice(("buy", "sell")), "score_week": round(rng.random(), 4), "score_month": round(rng.random(), 4)} for s in symbols]
        lines.append(json.dumps({"wave_offset_min": 15 * k, "signals": sigs}))
    path.write_text("\n".join(lines) + "\n")
    return path


def held_run(n: int, hours: float, t0: int, work: Path) -> dict[str, Any]:
    data = work / f"data{n}"
    symbols = data_dir_with_markets(data, n)
    frames = load_signal_frames(signals_file(work / f"signals{n}.jsonl", symbols, hours), t0)
    raw = merge(REPLAY_BASE, {"paper": {"data_dir": str(data), "starting_balance": 200_000},
                              "signals": {"wave_limit": n, "max_open_positions": n}})
    r = run_one(Variant(f"{n} positions", raw), frames, t0, t0 + int(hours * 3_600_000), base_dir=ROOT)
    return {"opened": r.report["positions_opened"], "open_at_end": r.report["positions_open_at_end"], **r.speed}


def _show(name: str, opened: int, s: dict[str, Any], extra: str = "") -> None:
    row(name, f"{opened} opened, {s['virtual_hours']} virtual h in {s['wall_seconds']} s: "
              f"{s['virtual_hours_per_wall_second']} virtual h / wall s ({s['speed_up']:,}x real time){extra}")


def run(hours: int = 6, hours_100: float = 6) -> None:
    print("replay (tradebot replay: real actors, paper exchange, virtual clock)")
    t0, _ = history_window()
    frames = load_signal_frames(ROOT / "demo" / "waves.jsonl", t0)
    r = run_one(variants([], [])[0], frames, t0, t0 + hours * 3_600_000, base_dir=ROOT)
    _show(f"demo waves, {hours} virtual h", r.report["positions_opened"], r.speed)
    work = Path(tempfile.mkdtemp(prefix="tbbench-replay-"))
    try:
        for n, h in ((10, hours), (100, hours_100)):
            s = held_run(n, h, t0, work)
            note = f"; {s['open_at_end']} open at the end" + (f"; window shortened to {h:g} h to bound the run time" if h < hours else "")
            _show(f"~{n} held open (wave limit {n}), {h:g} virtual h", s["opened"], s, note)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run()
