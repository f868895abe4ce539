"""What a person types, checked: durations, JSON, and the JSON lines of
`retryq enqueue --stdin`. A bad value is a UsageProblem naming the flag or line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from typing import Any

from retryq_py import config as _config
from retryq_py._sql.encode import json_number
from retryq_py._sql.timestamps import infinite_text
from retryq_py.admin.target import UsageProblem
from retryq_py.queue import ADD_KEYS

# The keys of one JSON line: RetryQueue.add's parameter names.
ENQUEUE_KEYS = ADD_KEYS
_DURATION_KEYS = ("retry_delay", "delay", "max_retry_delay")


def parse_duration(text: str, name: str) -> timedelta:
    """The config's durations ("500ms", "30s", "5m", "1h30m", bare seconds) plus
    whole days ("7d"), which ages of dead letters often are."""
    value = text.strip()
    try:
        if value.endswith("d") and value[:-1].replace(".", "", 1).isdigit():
            return timedelta(days=float(value[:-1]))
        return timedelta(seconds=_config.parse_duration(value))
    except ValueError:
        raise UsageProblem(
            f"invalid {name} {text!r}: use a duration such as 500ms, 30s, 5m, 1h or 7d"
        ) from None


# A number beyond a float's range (1e400, 1e309) stays the number it is
# (json_number), as PostgreSQL keeps it, instead of becoming inf and then the
# invalid token Infinity.
def _no_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and PostgreSQL's jsonb) has neither.
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=json_number)
    except ValueError as exc:  # JSONDecodeError included
        raise UsageProblem(f"invalid {name}: not JSON ({exc})") from exc


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    value = parse_json(text, name)
    if not isinstance(value, dict):
        raise UsageProblem(f"invalid {name}: must be a JSON object, got {type(value).__name__}")
    return value


def _line_item(number: int, obj: Any) -> dict[str, Any]:
    where = f"line {number}"
    if not isinstance(obj, dict):
        raise UsageProblem(f"{where}: must be a JSON object; nothing was added")
    unknown = sorted(set(obj) - set(ENQUEUE_KEYS))
    if unknown:
        raise UsageProblem(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ENQUEUE_KEYS)});"
            " nothing was added"
        )
    for key in ("event_type", "data"):
        if key not in obj:
            raise UsageProblem(f"{where}: missing {key!r}; nothing was added")
    item = dict(obj)
    for key in _DURATION_KEYS:
        if isinstance(item.get(key), str):
            try:
                item[key] = _config.parse_duration(item[key])
            except ValueError:
                raise UsageProblem(
                    f"{where}: invalid {key} {item[key]!r}: use seconds or a duration"
                    " such as 500ms, 30s, 5m; nothing was added"
                ) from None
    return item


def parse_json_lines(
    lines: Iterable[str], defaults: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One JSON object per line with RetryQueue.add's keys (event_type, data,
    channel, plugin, metadata, ...); `defaults` fill keys a line leaves out.
    Blank lines are skipped. The first bad line raises UsageProblem naming its
    number."""
    items: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, parse_constant=_no_constant, parse_float=json_number)
        except ValueError as exc:
            raise UsageProblem(f"line {number}: not JSON ({exc}); nothing was added") from exc
        if isinstance(obj, dict) and defaults:
            obj = {**defaults, **obj}
        items.append({"_line": number, **_line_item(number, obj)})
    if not items:
        raise UsageProblem("no items on stdin; nothing was added")
    return items


def moment_text(value: datetime | str | None, tz: tzinfo | None = None) -> str:
    """A time to the second in `tz` (None: local time), as the CLI and the
    dashboard show it; "" for None; a string that is not ISO 8601 as is
    (error_history keeps times as text)."""
    if value is None:
        return ""
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
    assert isinstance(moment, datetime)
    infinite = infinite_text(moment)
    if infinite is not None:  # astimezone would overflow
        return infinite
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")
