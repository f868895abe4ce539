"""The guide's JSON configuration, durations, environment overrides and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retryq_py import ConfigError, RetryConfig, load_config, parse_duration
from retryq_py.config import parse_config

GUIDE = {
    "sql": {
        "retry": {
            "enabled": True,
            "worker_count": 2,
            "batch_size": 10,
            "poll_interval": "30s",
            "max_retries": 3,
            "initial_delay": "60s",
            "backoff_multiplier": 2.0,
            "retention_days": 7,
        }
    }
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_the_guides_example_reads_as_is(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GUIDE), env={})
    assert cfg == RetryConfig(
        enabled=True,
        worker_count=2,
        batch_size=10,
        poll_interval=30.0,
        max_retries=3,
        initial_delay=60.0,
        backoff_multiplier=2.0,
        retention_days=7,
    )


def test_extra_keys_and_the_rest_of_the_application_config(tmp_path: Path) -> None:
    data = {
        "sql": {
            "dsn": "ignored: the SQL plugin's own key",
            "retry": {
                "lock_timeout": "2m",
                "grace_period": "1500ms",
                "cleanup_interval": "0s",
                "database_url": "postgresql://db/app",
                "enabled": False,
            },
        },
        "cytube": {"room": "ignored"},
    }
    cfg = load_config(write(tmp_path, data), env={})
    assert (cfg.lock_timeout, cfg.grace_period, cfg.cleanup_interval) == (120.0, 1.5, 0.0)
    assert (cfg.database_url, cfg.enabled) == ("postgresql://db/app", False)
    assert cfg.worker_count == RetryConfig().worker_count


def test_no_file_gives_defaults() -> None:
    assert load_config(None, env={}) == RetryConfig()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        (" 2m ", 120.0),
        ("0", 0.0),
        ("45", 45.0),
        (12, 12.0),
        (0.25, 0.25),
    ],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "30x", "5 m", "-1s", "1h-5m", "m5", "nan", True, None])
def test_bad_durations(text: Any) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@given(
    h=st.integers(0, 48),
    m=st.integers(0, 59),
    s=st.integers(0, 59),
    ms=st.integers(0, 999),
)
def test_compound_durations_add_up(h: int, m: int, s: int, ms: int) -> None:
    text = f"{h}h{m}m{s}s{ms}ms"
    assert parse_duration(text) == pytest.approx(h * 3600 + m * 60 + s + ms / 1000)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "batch_size",
            "x",
            "sql.retry.batch_size: must be a positive integer (at most 1000), got 'x'",
        ),
        ("batch_size", 0, "sql.retry.batch_size: must be a positive integer"),
        ("batch_size", 2.5, "sql.retry.batch_size: must be a positive integer"),
        ("worker_count", True, "sql.retry.worker_count: must be a positive integer, got True"),
        ("worker_count", -1, "sql.retry.worker_count: must be a positive integer, got -1"),
        ("poll_interval", "30", None),  # accepted: a bare number of seconds
        ("poll_interval", "soon", "sql.retry.poll_interval: must be a duration"),
        ("poll_interval", "0s", "sql.retry.poll_interval: must be a duration between 1ms"),
        ("initial_delay", [60], "sql.retry.initial_delay: must be a duration"),
        ("backoff_multiplier", 0.5, "sql.retry.backoff_multiplier: must be a number between 1"),
        ("backoff_multiplier", "fast", "sql.retry.backoff_multiplier"),
        ("max_retries", 1001, "sql.retry.max_retries: must be an integer between 0 and 1000"),
        ("retention_days", "7d", "sql.retry.retention_days: must be an integer"),
        ("enabled", "maybe", "sql.retry.enabled: must be true or false, got 'maybe'"),
        ("lock_timeout", "500ms", "sql.retry.lock_timeout: must be a duration between 1s"),
        ("database_url", "", "sql.retry.database_url: must be a non-empty connection string"),
        ("batchsize", 10, "sql.retry.batchsize: unknown key"),
    ],
)
def test_bad_values_name_the_key(key: str, value: Any, message: str | None) -> None:
    data = {"sql": {"retry": {**GUIDE["sql"]["retry"], key: value}}}
    if message is None:
        parse_config(data)
        return
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "must be a JSON object"),
        ({"retry": {}}, "sql: missing"),
        ({"sql": {"retry": 3}}, "sql.retry: missing or not an object"),
        ({"sql": {}}, "sql.retry: missing"),
    ],
)
def test_bad_shapes(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, data), env={})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json", env={})
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_config(write(tmp_path, "{not json"), env={})


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    env = {
        "RETRYQ_DATABASE_URL": "postgresql://env/db",
        "RETRYQ_WORKER_COUNT": "8",
        "RETRYQ_POLL_INTERVAL": "500ms",
        "RETRYQ_ENABLED": "false",
        "RETRYQ_BACKOFF_MULTIPLIER": "3",
        "RETRYQ_LOCK_TIMEOUT": "1m",
        "RETRYQ_BATCH_SIZE": "",  # empty: ignored
        "RETRYQ_TEST_DSN": "not a config key: ignored",
    }
    cfg = load_config(write(tmp_path, GUIDE), env=env)
    assert (cfg.database_url, cfg.worker_count, cfg.poll_interval) == (
        "postgresql://env/db",
        8,
        0.5,
    )
    assert (cfg.enabled, cfg.backoff_multiplier, cfg.lock_timeout) == (False, 3.0, 60.0)
    assert cfg.batch_size == 10


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(
        ConfigError, match=r"RETRYQ_BATCH_SIZE: must be a positive integer.*got 'x'"
    ):
        load_config(None, env={"RETRYQ_BATCH_SIZE": "x"})
    with pytest.raises(ConfigError, match="RETRYQ_INITIAL_DELAY: must be a duration"):
        load_config(None, env={"RETRYQ_INITIAL_DELAY": "later"})


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRYQ_RETENTION_DAYS", "30")
    assert load_config().retention_days == 30
