"""Dashboard actions (close one, close all, pause / resume intake) against a real bot on the paper
exchange: read-only by default (403, nothing sent, nothing recorded); with ``http.actions = true`` they go
through the control mailbox and are recorded as ``tradebot ctl`` records them; beyond loopback only with
the bearer token."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.dashboard_bot import Bot, protected, running_bot

HEADER = {"X-Tradebot-Action": "1"}


def post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=b"", method="POST", headers=headers if headers is not None else HEADER)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def commands(bot: Bot) -> list[Any]:
    """The control commands that act (the test's own reads, ctl positions / status, left out)."""
    every = bot.rt.io.run(bot.rt.store.query(types=("control.command",), consistent=False), 5)
    return [e for e in every if e.data["command"] not in ("positions", "status")]


@pytest.fixture
def readonly_bot(short_tmp: Path) -> Iterator[Bot]:
    yield from running_bot(short_tmp)


@pytest.fixture
def acting_bot(short_tmp: Path) -> Iterator[Bot]:
    yield from running_bot(short_tmp, extra_toml="actions = true\n")  # lands in [http]


def test_actions_are_off_by_default_403_and_nothing_happens(readonly_bot: Bot):
    bot = readonly_bot
    bot.open("r1")
    protected(bot, "r1")
    for path in ("/api/close/r1", "/api/close-all", "/api/pause", "/api/resume"):
        status, body = post(bot.url + path)
        assert status == 403, (path, body)
        assert body["ok"] is False and "http.actions = false" in body["error"] and "read-only" in body["error"]
    assert commands(bot) == []  # nothing reached the control mailbox
    assert [r["position_id"] for r in bot.ctl("positions")] == ["r1"]
    assert bot.ctl("status")["intake"]["paused_by_user"] is False
    page = get_text(bot.url + "/")
    assert "data-action" not in page and "Close all" not in page


def test_enabled_actions_close_on_the_paper_exchange_recorded_as_ctl_close(acting_bot: Bot):
    bot = acting_bot
    bot.open("e1")
    protected(bot, "e1")
    page = get_text(bot.url + "/")
    assert 'data-action="/api/close/e1"' in page and 'data-action="/api/close-all"' in page and 'data-action="/api/pause"' in page

    status, body = post(bot.url + "/api/close/e1", headers={})  # no action header: a cross-site form could not set it
    assert status == 403 and "X-Tradebot-Action" in body["error"]
    assert commands(bot) == []

    status, body = post(bot.url + "/api/close/e1")
    assert status == 200, body
    assert body["ok"] is True and body["result"] == {"closing": ["position:BTCUSDT:e1"]}
    closed = eventually(lambda: bot.events("e1", "position.closed"), what="closed through the dashboard")
    assert closed[0].data["reason"] == "user command"  # as `ctl close` records it
    assert not bot.exchange.with_engine(lambda engine, _now: engine.position_list())  # flat on the paper exchange
    (cmd,) = commands(bot)
    assert cmd.data == {"command": "close", "args": {"symbol": "E1"}} and cmd.correlation_id == body["id"]
    replies = bot.rt.io.run(bot.rt.store.query(types=("control.reply",), correlation_id=body["id"], consistent=False), 5)
    assert len(replies) == 1 and replies[0].data["ok"] is True

    status, body = post(bot.url + "/api/close/e1")  # gone now: refused by the bot, as ctl would be
    assert status == 409 and body["ok"] is False and "no open position for E1" in body["error"]

    status, body = post(bot.url + "/api/pause")
    assert status == 200 and body["result"]["paused"] is True
    assert bot.ctl("status")["intake"]["paused_by_user"] is True
    assert bot.rt.io.run(bot.rt.store.query(types=("intake.paused",), consistent=False), 5)
    status, body = post(bot.url + "/api/resume")
    assert status == 200 and body["result"]["paused"] is False
    assert bot.ctl("status")["intake"]["paused_by_user"] is False

    bot.open("e2")
    protected(bot, "e2")
    status, body = post(bot.url + "/api/close-all")
    assert status == 200 and body["result"] == {"closing": ["position:BTCUSDT:e2"]}
    eventually(lambda: bot.events("e2", "position.closed"), what="close-all through the dashboard")
    assert [c.data["command"] for c in commands(bot)] == ["close", "close", "pause", "resume", "close-all"]


@pytest.fixture
def exposed_bot(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bot]:
    monkeypatch.setenv("TRADEBOT_HTTP_TOKEN", "s3cret-token")
    yield from running_bot(short_tmp, extra_toml='actions = true\nhost = "0.0.0.0"\n')


def test_beyond_loopback_actions_need_the_bearer_token(exposed_bot: Bot):
    bot = exposed_bot
    bot.open("t1")
    protected(bot, "t1")
    url = f"http://127.0.0.1:{bot.rt.http.port}"
    status, body = post(url + "/api/close/t1")
    assert status == 401 and "Bearer" in body["error"]
    status, body = post(url + "/api/close/t1", headers={**HEADER, "Authorization": "Bearer wrong"})
    assert status == 401
    assert commands(bot) == [] and [r["position_id"] for r in bot.ctl("positions")] == ["t1"]
    status, body = post(url + "/api/close/t1", headers={**HEADER, "Authorization": "Bearer s3cret-token"})
    assert status == 200 and body["ok"] is True, body
    eventually(lambda: bot.events("t1", "position.closed"), what="closed with the token")


def test_the_close_button_in_a_real_browser_closes_the_position(acting_bot: Bot):
    from tests.browser import browser_or_skip

    bot = acting_bot
    bot.open("b1")
    protected(bot, "b1")
    driver = browser_or_skip()
    try:
        driver.get(bot.url + "/")
        eventually(lambda: driver.execute_script("return document.body.getAttribute('data-live')") == "open", what="event stream open")
        # the row as the live feed re-rendered it still has its button (a click listener on the document)
        eventually(lambda: int(driver.execute_script("return document.body.getAttribute('data-updates') || 0")) > 0, what="a live update")
        driver.execute_script("window.confirm = function(){ return true; };")
        driver.execute_script("document.querySelector('tr[data-position-id=\"b1\"] button[data-action]').click();")
        answer = eventually(lambda: driver.execute_script("return document.body.getAttribute('data-last-action')"), what="the action's answer")
        assert json.loads(str(answer))["result"] == {"closing": ["position:BTCUSDT:b1"]}
        eventually(lambda: bot.events("b1", "position.closed"), what="closed by the button")
        eventually(lambda: driver.execute_script("return document.querySelector('tr[data-position-id=\"b1\"]') === null"), what="the row leaves the live table")
        assert "close: " in driver.execute_script("return document.getElementById('action-result').textContent")
    finally:
        driver.quit()
