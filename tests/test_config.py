"""config.toml: typed decoding, one-line errors naming key / expected / given."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from core.config import LIVE_SAFE_KEYS, Config, ConfigError, config_diff, load_config, merge_live, parse_config

ROOT = Path(__file__).resolve().parents[1]


def error_of(toml: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(toml)
    message = str(info.value)
    assert "\n" not in message, "config errors are one line"
    return message


def test_shipped_config_is_valid_and_documents_the_defaults():
    """Every value in config.toml equals the built-in default (the file says so)."""
    shipped = load_config(ROOT / "config.toml")
    defaults = parse_config("", base_dir=ROOT)
    assert config_diff(shipped, defaults) == {}
    text = (ROOT / "config.toml").read_text()
    for section in msgspec.structs.fields(Config):
        if section.name != "base_dir":
            assert f"[{section.name}]" in text, f"config.toml does not document [{section.name}]"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[supervisor]\nmax_restarts = 0", "config.toml: supervisor.max_restarts: expected an integer >= 1, got 0"),
        ("[supervisor]\nmax_restarts = -1", "config.toml: supervisor.max_restarts: expected an integer >= 1, got -1"),
        ("[store]\nbatch_max = 1000000", "config.toml: store.batch_max: expected an integer >= 1 and <= 100000, got 1000000"),
        ('[store]\nbatch_max = "many"', 'config.toml: store.batch_max: expected an integer, got "many"'),
        ("[store]\nbatch_max = 1.5", "config.toml: store.batch_max: expected an integer, got 1.5"),
        ("[store]\nbatch_max = true", "config.toml: store.batch_max: expected an integer, got true"),
        ('[logging]\nlevel = "LOUD"', "config.toml: logging.level: expected one of 'TRACE', 'DEBUG', 'INFO', 'SUCCESS', 'WARNING', 'ERROR', 'CRITICAL', got \"LOUD\""),
        ("[runtime]\ndata_dir = 5", "config.toml: runtime.data_dir: expected a string, got 5"),
        ("supervisor = 5", "config.toml: supervisor: expected a table, got 5"),
        ("[supervisor]\nmax_restart = 5", "config.toml: supervisor.max_restart: unknown key (did you mean `supervisor.max_restarts`?)"),
        ("[nonsense]\nx = 1", "config.toml: nonsense: unknown key (known keys: runtime, store, logging, supervisor, control, exchange, paper, position, trailing, take_profit, aged, sync, zombies, guard, signals, feeds, demo, venue_health, alerts, http)"),
        ("base_dir = '/'", "config.toml: base_dir: unknown key (it is set from the file's location)"),
    ],
)
def test_each_kind_of_bad_value_names_key_expected_and_given(toml: str, expected: str):
    assert error_of(toml) == expected


def test_secrets_in_the_file_are_refused_with_a_hint():
    message = error_of('[control]\napi_secret = "abc"')
    assert message.startswith("config.toml: control.api_secret: unknown key")
    assert "environment variables" in message


def test_invalid_toml_is_reported_with_position():
    message = error_of("[store\nbatch_max = 1")
    assert message.startswith("config.toml: not valid TOML:") and "line 1" in message


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "bot.toml"
    path.write_text('[runtime]\ndata_dir = "state"\n[store]\npath = "x.db"\n')
    cfg = load_config(path)
    assert cfg.store_path == tmp_path / "sub" / "state" / "x.db"
    assert cfg.control_socket.parent == tmp_path / "sub" / "state"


def test_config_is_frozen():
    cfg = parse_config("")
    with pytest.raises(AttributeError):
        cfg.store.batch_max = 5  # type: ignore[misc]


def test_diff_and_live_merge_apply_only_the_named_keys():
    old = parse_config("")
    new = parse_config('[logging]\nlevel = "INFO"\n[store]\nbatch_max = 7\n')
    diff = config_diff(old, new)
    assert diff == {"logging.level": ("DEBUG", "INFO"), "store.batch_max": (1000, 7)}
    live = [k for k in diff if k in LIVE_SAFE_KEYS]
    merged = merge_live(old, new, live)
    assert merged.logging.level == "INFO"
    assert merged.store.batch_max == 1000  # needs a restart: not applied


def test_wave_limit_goes_up_to_what_a_wave_can_open_in_its_15_minutes():
    assert parse_config("[signals]\nwave_limit = 1000\n").signals.wave_limit == 1000
    assert error_of("[signals]\nwave_limit = 1001\n") == "config.toml: signals.wave_limit: expected an integer >= 1 and <= 1000, got 1001"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[exchange.ccxt_options]\nsecret = "s"', "exchange.ccxt_options.secret"),
        ('[exchange.ccxt_options]\napiKey = "k"', "exchange.ccxt_options.apiKey"),
        ('[exchange.ccxt_options]\npassword = "p"', "exchange.ccxt_options.password"),
        ("[exchange.ccxt_options]\nverbose = true", "exchange.ccxt_options.verbose"),
        ('[exchange.ccxt_options.options]\napiKey = "k"', "exchange.ccxt_options.options.apiKey"),
    ],
)
def test_credentials_and_verbose_in_ccxt_options_are_refused_even_on_paper(toml: str, key: str):
    with pytest.raises(ConfigError) as err:
        parse_config(toml)  # the venue is paper (the default)
    assert str(err.value).startswith(f"config.toml: {key}: refused")


def test_harmless_ccxt_options_are_accepted():
    assert parse_config('[exchange.ccxt_options]\ntimeout = 15000\n[exchange.ccxt_options.options]\nrecvWindow = 7000').exchange.ccxt_options["timeout"] == 15000
