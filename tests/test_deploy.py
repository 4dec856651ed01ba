"""deploy/: the Grafana dashboard shows metrics the bot exposes; the unit restarts on failure and passes
`systemd-analyze verify`; the compose file passes `docker compose config` (where docker compose exists)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _docker_compose() -> list[str] | None:
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    return ["docker", "compose"] if probe.returncode == 0 else None


def test_compose_file_validates_with_docker_compose():
    compose = _docker_compose()
    if compose is None:
        pytest.skip("docker compose (the v2 CLI plugin) is not installed here; the file uses env_file's long form, which needs v2.24 or later")
    done = subprocess.run([*compose, "-f", str(ROOT / "deploy/docker-compose.yml"), "config", "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _verify_unit(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    unit = tmp_path / "tradebot.service"
    unit.write_text(text)
    return subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path):
    # verify checks that ExecStart's program exists: point the install paths at this checkout's venv.
    script = Path(sys.executable).parent / "tradebot"
    assert script.exists(), script
    text = (ROOT / "deploy/tradebot.service").read_text().replace("/opt/tradebot/.venv/bin/tradebot", str(script)).replace("/opt/tradebot", str(ROOT))
    done = _verify_unit(tmp_path, text)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr
    # and the check is one that can fail: a bad setting is reported
    bad = _verify_unit(tmp_path, text.replace("Restart=on-failure", "Restart=sometimes"))
    assert "restart specifier" in bad.stderr, bad.stderr
