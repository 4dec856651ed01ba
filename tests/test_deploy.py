"""deploy/: the Grafana dashboard shows metrics the bot exposes; the unit restarts on failure."""

from __future__ import annotations

import json
import re
from pathlib import Path

from adapters.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]


def test_every_dashboard_query_names_a_metric_the_bot_exposes():
    exposed = {m.name for m in Metrics().registry.collect()}
    names = set()
    for panel in json.loads((ROOT / "deploy/grafana/dashboards/tradebot.json").read_text())["panels"]:
        for target in panel["targets"]:
            names |= set(re.findall(r"tradebot_[a-z_]+", target["expr"]))
    assert names
    base = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in names}
    assert base <= exposed, base - exposed


def test_systemd_unit_restarts_on_failure_and_stops_gracefully():
    unit = (ROOT / "deploy/tradebot.service").read_text()
    assert "Restart=on-failure" in unit and "KillSignal=SIGTERM" in unit and "tradebot run" in unit
