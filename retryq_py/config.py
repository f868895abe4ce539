"""The integration guide's configuration, read as it is.

    {"sql": {"retry": {"enabled": true, "worker_count": 2, "batch_size": 10,
                       "poll_interval": "30s", "max_retries": 3,
                       "initial_delay": "60s", "backoff_multiplier": 2.0,
                       "retention_days": 7}}}

Keys retryq adds under sql.retry (all optional): `lock_timeout` (lease
length, default "5m"), `grace_period` (how long in-flight handlers may run
after a stop, default "30s"), `cleanup_interval` (default "1h"; "0s" turns
scheduled cleanup off) and `database_url`. Other top-level keys and other
keys under "sql" belong to the rest of the application and are ignored; an
unknown key under sql.retry is an error.

Durations are strings such as "500ms", "30s", "5m", "1h" or "1h30m" (Go's
time.ParseDuration units: ns, us, ms, s, m, h), or plain numbers of seconds.

Every key can be overridden from the environment: RETRYQ_DATABASE_URL,
RETRYQ_ENABLED, RETRYQ_WORKER_COUNT, RETRYQ_BATCH_SIZE, RETRYQ_POLL_INTERVAL,
RETRYQ_MAX_RETRIES, RETRYQ_INITIAL_DELAY, RETRYQ_BACKOFF_MULTIPLIER,
RETRYQ_RETENTION_DAYS, RETRYQ_LOCK_TIMEOUT, RETRYQ_GRACE_PERIOD,
RETRYQ_CLEANUP_INTERVAL. Errors raise ConfigError naming the key, e.g.
`sql.retry.batch_size: must be a positive integer, got 'x'`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration file or environment value that cannot be used."""


@dataclass(frozen=True)
class RetryConfig:
    """sql.retry, with durations in seconds."""

    enabled: bool = True
    worker_count: int = 2
    batch_size: int = 10
    poll_interval: float = 30.0
    max_retries: int = 3
    initial_delay: float = 60.0
    backoff_multiplier: float = 2.0
    retention_days: int = 7
    lock_timeout: float = 300.0
    grace_period: float = 30.0
    cleanup_interval: float = 3600.0
    database_url: str | None = None


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: Any) -> float:
    """Seconds in a duration: "500ms", "30s", "5m", "1h30m", or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos == 0 or pos != len(text):
                raise ValueError("not a duration") from None
    else:
        raise ValueError("not a duration")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("not a duration")
    return seconds


# --- per-key parsers: (parse, rule shown in errors) ------------------------


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = int(value.strip())
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip()) if isinstance(value, str) else value
        if not isinstance(number, int | float) or not lo <= number <= hi:
            raise ValueError
        return float(number)

    return parse


def _duration(lo: float, hi: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        seconds = parse_duration(value)
        if not lo <= seconds <= hi:
            raise ValueError
        return seconds

    return parse


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError
    return value.strip()


_YEAR = 31536000.0
_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "enabled": (_bool, "must be true or false"),
    "worker_count": (_int(1, 1000), "must be a positive integer"),
    "batch_size": (_int(1, 1000), "must be a positive integer (at most 1000)"),
    "poll_interval": (
        _duration(0.001, 86400.0),
        'must be a duration between 1ms and 24h such as "30s"',
    ),
    "max_retries": (_int(0, 1000), "must be an integer between 0 and 1000"),
    "initial_delay": (_duration(0.0, _YEAR), 'must be a duration up to a year such as "60s"'),
    "backoff_multiplier": (_float(1.0, 10.0), "must be a number between 1 and 10"),
    "retention_days": (_int(0, 36500), "must be an integer between 0 and 36500"),
    "lock_timeout": (_duration(1.0, 86400.0), 'must be a duration between 1s and 24h such as "5m"'),
    "grace_period": (_duration(0.0, 86400.0), 'must be a duration up to 24h such as "30s"'),
    "cleanup_interval": (_duration(0.0, _YEAR), 'must be a duration such as "1h" ("0s": never)'),
    "database_url": (_url, "must be a non-empty connection string"),
}
assert set(_KEYS) == {f.name for f in fields(RetryConfig)}


def _set(config: RetryConfig, key: str, value: Any, where: str) -> RetryConfig:
    parse, rule = _KEYS[key]
    try:
        parsed = parse(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: {rule}, got {value!r}") from None
    return replace(config, **{key: parsed})


def parse_config(data: Any, *, source: str = "config") -> RetryConfig:
    """A RetryConfig from the guide's parsed JSON document."""
    if not isinstance(data, Mapping):
        raise ConfigError(f'{source}: must be a JSON object with a "sql" key')
    sql = data.get("sql")
    if not isinstance(sql, Mapping):
        raise ConfigError(f"{source}: sql: missing or not an object")
    retry = sql.get("retry")
    if not isinstance(retry, Mapping):
        raise ConfigError(f"{source}: sql.retry: missing or not an object")
    config = RetryConfig()
    for key, value in retry.items():
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"sql.retry.{key}: unknown key (known keys: {known})")
        config = _set(config, key, value, f"sql.retry.{key}")
    return config


def apply_env(config: RetryConfig, env: Mapping[str, str] | None = None) -> RetryConfig:
    """Overrides from RETRYQ_<KEY> variables (empty ones are ignored)."""
    env = os.environ if env is None else env
    for key in _KEYS:
        name = f"RETRYQ_{key.upper()}"
        value = env.get(name)
        if value is not None and value.strip() != "":
            config = _set(config, key, value, name)
    return config


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> RetryConfig:
    """Read the guide's JSON file (defaults when path is None), then the environment."""
    config = RetryConfig()
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON: {exc}") from None
        config = parse_config(data, source=str(path))
    return apply_env(config, env)
