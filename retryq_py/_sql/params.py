"""Parameters as the statements take them: durations in seconds, and the
dead-letter filter requeue and purge share, and the cancel filter; and the
refusal of a NUL character, named."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from psycopg import errors as pgerr

Seconds = float | int | timedelta


def seconds(value: Seconds, field: str) -> float:
    """A duration given as seconds or a timedelta, in seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field}: expected seconds or a timedelta, got {value!r}")
    return float(value)


# sql/private/_retryq_blank.sql's invisible characters, besides whitespace
_INVISIBLE = frozenset(
    "\u0085\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u2800\u3000\u3164\ufeff\uffa0"
    + "".join(
        map(
            chr,
            [
                *range(0x180B, 0x1810),
                *range(0x2000, 0x2010),
                *range(0x2028, 0x2030),
                *range(0x205F, 0x2070),
                *range(0xFE00, 0xFE10),
                *range(0xFFF0, 0xFFF9),
                *range(0x1BCA0, 0x1BCA4),
                *range(0x1D173, 0x1D17B),
                *range(0xE0000, 0xE1000),
            ],
        )
    )
)


def is_blank(value: str) -> bool:
    """_retryq_blank's rule, for a check before the SQL's: nothing but
    whitespace or invisible characters ('' included). The SQL's
    [[:space:]] depends on the server's locale; every Unicode space
    (str.isspace) counts here, so what some server refuses is refused."""
    if value and 33 <= ord(value[0]) <= 126:  # an ordinary name, decided at once
        return False
    return all(c.isspace() or c in _INVISIBLE for c in value)


def whole_seconds(value: Seconds, field: str) -> int:
    """Lease lengths are whole seconds in SQL: round up, never down to zero."""
    s = seconds(value, field)
    whole = int(s)
    return whole + 1 if whole < s else whole


def dead_letter_filter(
    item_ids: Iterable[int] | None,
    event_type: str | None,
    plugin: str | None,
    error_code: str | None,
    dead_before: datetime | None,
) -> dict[str, Any]:
    """The filters requeue_dead_letter_items and purge_dead_letter_items share."""
    return {
        "item_ids": None if item_ids is None else list(item_ids),
        "event_type": event_type,
        "plugin_name": plugin,
        "error_code": error_code,
        "dead_before": dead_before,
    }


def cancel_filter(
    item_ids: Iterable[int] | None,
    event_type: str | None,
    plugin: str | None,
    error_code: str | None,
    created_before: datetime | None,
) -> dict[str, Any]:
    """cancel_retry_items' filters: the dead-letter ones, with the creation
    time in place of the dead-letter time."""
    return {
        "item_ids": None if item_ids is None else list(item_ids),
        "event_type": event_type,
        "plugin_name": plugin,
        "error_code": error_code,
        "created_before": created_before,
    }


def name_list(names: Iterable[str] | None, field: str) -> list[str] | None:
    """A routing list (event_types, plugin_names) as SQL takes it: None for
    every item; SQL judges the elements. A bare string is refused here: it
    would be taken for a list of its characters."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
        raise TypeError(f"{field} must be a list of names, not one string: {names!r}")
    return list(names)


# A statement parameter's name where the SQL function names the field otherwise.
_FIELDS = {"error": "error_msg", "code": "error_code", "plugin": "plugin_name"}


def refuse_nul_params(params: Mapping[str, Any]) -> None:
    """Raise CharacterNotInRepertoire (22021, as PostgreSQL refuses a NUL
    byte) naming the first text parameter, or element of a list parameter,
    that holds U+0000; return when none does.

    psycopg refuses such a value before sending it, with a DataError that
    has no SQLSTATE and no field ("PostgreSQL text fields cannot contain
    NUL"). Called only after that error, so a good call pays nothing; the
    caller re-raises what it caught when this returns.
    """
    for key, value in params.items():
        field = _FIELDS.get(key, key)
        if isinstance(value, str) and "\x00" in value:
            raise pgerr.CharacterNotInRepertoire(
                f"retryq: invalid {field}: contains U+0000 (NUL), "
                "which PostgreSQL cannot store in text"
            )
        if isinstance(value, list | tuple):
            for n, element in enumerate(value):
                if isinstance(element, str) and "\x00" in element:
                    raise pgerr.CharacterNotInRepertoire(
                        f"retryq: invalid {field}: {field}[{n}] contains U+0000 (NUL), "
                        "which PostgreSQL cannot store in text"
                    )


# The integer parameters of the queue client and retryq_py.ops. PostgreSQL
# would round a float sent for one where the statement casts it
# (max_snoozes=3.5 was 4, item ids [1.5] were [2]), find no function where it
# does not (42883), and take a string ("10"): each is refused naming the
# field instead. Each is a bigint in SQL: a larger int would be sent as
# numeric and find no function either (42883, which reads as "retryq is not
# installed"), so it is refused naming the field (22003) before the call.
_INTEGER_PARAMS = (
    "item_id",
    "item_ids",
    "batch_size",
    "max_snoozes",
    "retention_days",
    "max_rows",
    "failure_threshold",
    "max_leases",
    "limit",
)
_BIGINT_MIN = -(2**63)
_BIGINT_MAX = 2**63 - 1


def whole(value: object) -> int | None:
    """The whole-number rule of every integer a caller gives: an int (not a
    bool, which binary COPY would send as 0 or 1), or a float with no
    fraction (5.0 is 5, as enqueue_retry_items takes the JSON number 5.0);
    that int, else None (a string is not a number). Callers raise their own
    error for None."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value)


def integer(value: Any, field: str) -> int:
    """whole(value), else TypeError naming the field."""
    number = whole(value)
    if number is None:
        raise TypeError(f"{field}: expected an integer, got {value!r}")
    return number


def _bigint(value: Any, field: str) -> int:
    """integer(value), within a bigint's range (22003 naming the field)."""
    number = integer(value, field)
    if not _BIGINT_MIN <= number <= _BIGINT_MAX:
        raise pgerr.NumericValueOutOfRange(
            f"retryq: invalid {field}: {number} is out of range for bigint"
        )
    return number


def integer_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """params with its integer parameters checked: the same mapping when
    each is an int within a bigint (or None), else a copy with whole floats
    made ints; TypeError naming the first that is not a whole number,
    NumericValueOutOfRange (22003) naming the first beyond a bigint."""
    fixed: dict[str, Any] | None = None
    for key in _INTEGER_PARAMS:
        value = params.get(key)
        if value is None or (type(value) is int and _BIGINT_MIN <= value <= _BIGINT_MAX):
            continue
        if type(value) is list:
            if all(type(v) is int for v in value) and (
                not value or (min(value) >= _BIGINT_MIN and max(value) <= _BIGINT_MAX)
            ):
                continue
            value = [_bigint(v, f"{key}[{n}]") for n, v in enumerate(value)]
        else:
            value = _bigint(value, key)
        fixed = fixed if fixed is not None else dict(params)
        fixed[key] = value
    return params if fixed is None else fixed
