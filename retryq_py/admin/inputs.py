"""What a person types, checked: durations, whole numbers, filter names,
JSON, and the JSON lines of `retryq enqueue --stdin`. A bad value is a
BadInput (a UsageProblem and a ValueError) naming the flag, field or line:
the CLI exits 2 with it, the dashboard answers 400."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, tzinfo
from typing import Any

from retryq_py import config as _config
from retryq_py._sql import is_blank
from retryq_py._sql.encode import json_number
from retryq_py._sql.timestamps import infinite_text
from retryq_py.admin.target import UsageProblem
from retryq_py.queue import ADD_KEYS

# The keys of one JSON line: RetryQueue.add's parameter names.
ENQUEUE_KEYS = ADD_KEYS
_DURATION_KEYS = ("retry_delay", "delay", "max_retry_delay")


class BadInput(UsageProblem, ValueError):
    """A value a person typed that cannot be used; `field` names where it
    was typed (`--older-than`, `older_than`, `ID`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


# The SQL functions take whole numbers as bigint: a larger one must be refused
# naming its field before the call (psycopg would send it as numeric, which
# finds no function: 42883, read as "not installed").
BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1

# Every duration a person types is at most this: it keeps now() +/- the
# duration a valid timestamp (4713 BC .. 294276 AD), a timedelta, and a wait
# the threading and asyncio timers take (at most ~292 years).
MAX_DURATION = timedelta(days=36500)


def _span(d: timedelta) -> str:
    seconds = d.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_duration(
    text: str,
    name: str,
    *,
    minimum: timedelta = timedelta(0),
    maximum: timedelta = MAX_DURATION,
) -> timedelta:
    """The config's durations ("500ms", "30s", "5m", "1h30m", bare seconds) plus
    whole days ("7d"), which ages of dead letters often are; between minimum
    and maximum (at most MAX_DURATION, 100 years). BadInput naming `name`
    otherwise."""
    value = text.strip()
    try:
        if value.endswith("d") and value[:-1].replace(".", "", 1).isdigit():
            seconds = float(value[:-1]) * 86400.0  # inf for a huge one, compared below
        else:
            seconds = _config.parse_duration(value)
    except ValueError:
        raise BadInput(
            name, f"invalid {name} {text!r}: use a duration such as 500ms, 30s, 5m, 1h or 7d"
        ) from None
    if not minimum.total_seconds() <= seconds <= maximum.total_seconds():
        low = "" if not minimum else f"at least {_span(minimum)} and "
        raise BadInput(name, f"invalid {name} {text!r}: must be {low}at most {_span(maximum)}")
    return timedelta(seconds=seconds)


def parse_int(text: str, name: str, *, minimum: int = BIGINT_MIN, maximum: int = BIGINT_MAX) -> int:
    """A whole number typed as text (the dashboard's fields), within
    minimum..maximum (by default a bigint's range, what the SQL takes);
    BadInput naming `name` otherwise."""
    try:
        number = int(text.strip())
    except ValueError:
        raise BadInput(name, f"invalid {name}: {text!r} is not a whole number") from None
    check_int(number, name, minimum=minimum, maximum=maximum)
    return number


def check_int(
    number: int, name: str, *, minimum: int = BIGINT_MIN, maximum: int = BIGINT_MAX
) -> int:
    """`number` itself when within minimum..maximum; BadInput naming `name` otherwise."""
    if not minimum <= number <= maximum:
        raise BadInput(name, f"invalid {name}: {number} is out of range ({minimum}..{maximum})")
    return number


def parse_ids(text: str, name: str) -> tuple[int, ...]:
    """Item ids separated by spaces or commas, each a bigint; BadInput naming `name`."""
    try:
        ids = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise BadInput(name, f"invalid {name}: {text!r}: use ids separated by spaces") from None
    for n in ids:
        check_int(n, name)
    return ids


def check_name(value: str | None, name: str) -> str | None:
    """A name to filter by (an event type, plugin, error code): None (no
    filter) or not blank by the queue's rule (README "A blank name is
    refused"); a blank one, '' included, would match nothing or, for a
    plugin, only items whose plugin is '' and not those without one, so it
    is refused naming `name`."""
    if value is not None and is_blank(value):
        raise BadInput(name, f"invalid {name}: must not be blank (omit it to match every value)")
    return value


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
        raise BadInput(name, f"invalid {name}: not JSON ({exc})") from exc


def parse_json_object(text: str, name: str) -> dict[str, Any]:
    value = parse_json(text, name)
    if not isinstance(value, dict):
        raise BadInput(name, f"invalid {name}: must be a JSON object, got {type(value).__name__}")
    return value


def _line_item(number: int, obj: Any) -> dict[str, Any]:
    where = f"line {number}"
    if not isinstance(obj, dict):
        raise BadInput(where, f"{where}: must be a JSON object; nothing was added")
    unknown = sorted(set(obj) - set(ENQUEUE_KEYS))
    if unknown:
        raise BadInput(
            where,
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ENQUEUE_KEYS)});"
            " nothing was added",
        )
    for key in ("event_type", "data"):
        if key not in obj:
            raise BadInput(where, f"{where}: missing {key!r}; nothing was added")
    item = dict(obj)
    for key in _DURATION_KEYS:
        if isinstance(item.get(key), str):
            try:
                item[key] = _config.parse_duration(item[key])
            except ValueError:
                raise BadInput(
                    where,
                    f"{where}: invalid {key} {item[key]!r}: use seconds or a duration"
                    " such as 500ms, 30s, 5m; nothing was added",
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
            raise BadInput(
                f"line {number}", f"line {number}: not JSON ({exc}); nothing was added"
            ) from exc
        if isinstance(obj, dict) and defaults:
            obj = {**defaults, **obj}
        items.append({"_line": number, **_line_item(number, obj)})
    if not items:
        raise BadInput("stdin", "no items on stdin; nothing was added")
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
