"""Error classification: which failures are worth retrying.

A handler signals intent by raising RetryableError (try again after the
backoff, or after its `delay`: a Retry-After), PermanentError (dead-letter
now) or Snooze (put the item back for a while without spending an
attempt). Anything else is classified by `is_retryable`: psycopg errors
by SQLSTATE, every other exception as retryable, since a transient cause
is the common case for the operations this queue retries and the retry
budget bounds the cost of being wrong.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Literal

import psycopg
from psycopg_pool import PoolTimeout

# SQLSTATE classes and codes that a later attempt can succeed on.
RETRYABLE_CLASSES = frozenset({"08", "53", "57", "58"})
RETRYABLE_CODES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "40003",  # statement_completion_unknown
        "55P03",  # lock_not_available
        "55006",  # object_in_use
    }
)
# Classes where the same statement fails the same way every time.
PERMANENT_CLASSES = frozenset(
    {
        "0A",  # feature_not_supported
        "21",  # cardinality_violation
        "22",  # data_exception
        "23",  # integrity_constraint_violation
        "28",  # invalid_authorization_specification
        "2B",  # dependent_privilege_descriptors_still_exist
        "3D",  # invalid_catalog_name
        "3F",  # invalid_schema_name
        "42",  # syntax_error_or_access_rule_violation (incl. 42501 privilege)
        "44",  # with_check_option_violation
        "P0",  # plpgsql raise / assert
        "XX",  # internal_error
    }
)
# Codes in otherwise retryable classes that fail the same way every time.
PERMANENT_CODES = frozenset(
    {
        "57P04",  # database_dropped
        "40002",  # transaction_integrity_constraint_violation
    }
)


# The longest delay the queue stores (seconds): fail_retry_item's
# p_retry_after_seconds and snooze_retry_item's p_delay_seconds.
MAX_DELAY_SECONDS = 31_536_000.0


class RetryableError(Exception):
    """The guide's RetryableError: retry after the backoff.

    `err` is the cause (an exception or a message); `code` is the error code
    recorded in the item's history (defaults to the cause's SQLSTATE).
    `delay` replaces the backoff for this one retry (fail_retry_item's
    p_retry_after_seconds): seconds as a number or a timedelta, or a
    Retry-After header value as it came (delta-seconds or an HTTP-date, read
    by `retry_after_seconds`; one it cannot read leaves the backoff). The
    queue still caps it at the item's max_retry_delay_seconds and applies no
    jitter. None (the default): the backoff. `self.delay` is the delay in
    seconds, or None. A delay over a year is cut to a year
    (MAX_DELAY_SECONDS). A delay that is negative, not finite or not a
    number never replaces the handler's error: it is ignored (`self.delay`
    None, the backoff applies) and `self.invalid_delay` says why (None when
    the delay was good); the worker logs it as a warning naming the item.
    """

    def __init__(
        self,
        err: BaseException | str,
        code: str | None = None,
        *,
        delay: float | timedelta | str | None = None,
    ) -> None:
        super().__init__(_text(err))
        self.err = err
        self.code = code if code is not None else error_code(err)
        self.delay: float | None = None
        self.invalid_delay: str | None = None
        if isinstance(delay, str):
            delay = retry_after_seconds(delay)
        if delay is not None:
            try:
                self.delay = min(delay_seconds(delay, "delay"), MAX_DELAY_SECONDS)
            except (TypeError, ValueError) as exc:  # keep the handler's error
                self.invalid_delay = str(exc)


class Snooze(Exception):
    """Raised by a handler: not now, try this item again after `delay`.

    The item goes back to pending, due in `delay` (seconds as a number or a
    timedelta, at most a year), without spending an attempt or recording a
    failure (snooze_retry_item). Each item may be snoozed the worker's
    `max_snoozes` times; the snooze after that makes it a dead letter with
    code `snooze_limit`. `reason` is only logged.

    A delay that is negative, not finite, not a number or over a year raises
    nothing here (the handler's raise must not turn into a ValueError):
    `self.delay` is None and `self.invalid_delay` says why. The worker then
    cannot snooze; it records a retryable failure with code
    `invalid_snooze_delay` whose message keeps the reason, spends an attempt,
    applies the normal backoff and logs a warning naming the item.
    """

    def __init__(self, delay: float | timedelta, reason: str = "") -> None:
        self.reason = reason
        self.delay: float | None = None
        self.invalid_delay: str | None = None
        try:
            seconds = delay_seconds(delay, "delay")
            if seconds > MAX_DELAY_SECONDS:
                raise ValueError(f"delay must be at most {MAX_DELAY_SECONDS:.0f}s, got {seconds:g}")
        except (TypeError, ValueError) as exc:
            self.invalid_delay = str(exc)
            super().__init__(reason or f"snooze with an invalid delay ({exc})")
            return
        super().__init__(reason or f"snoozed for {seconds:g}s")
        self.delay = seconds


def delay_seconds(value: float | timedelta, name: str) -> float:
    """A delay as seconds: a number or a timedelta, finite and at least 0
    (ValueError naming `name` otherwise; TypeError for another type)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{name} must be seconds or a timedelta, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds, at least 0, got {value!r}")
    return seconds


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """An HTTP Retry-After header value (RFC 9110, 10.2.3) as seconds from `now`.

    Either delta-seconds ("120") or an HTTP-date ("Wed, 21 Oct 2015 07:28:00
    GMT"), measured from `now` (default: the current UTC time). None for
    None, an empty value, one that is neither, or an HTTP-date that is not in
    the future (stale: a retry at once each time would spend every attempt in
    milliseconds); the caller then keeps its backoff, so that a server's
    malformed or stale header never turns a retry into an error or a burst.
    At most MAX_DELAY_SECONDS (a year).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_DELAY_SECONDS)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP-dates are UTC
        when = when.replace(tzinfo=timezone.utc)
    base = now if now is not None else datetime.now(timezone.utc)
    if base.tzinfo is None:
        base = base.replace(tzinfo=timezone.utc)
    seconds = (when - base).total_seconds()
    if seconds <= 0:
        return None  # stale: the normal backoff
    return min(seconds, MAX_DELAY_SECONDS)


class PermanentError(Exception):
    """Retrying cannot help: the item becomes a dead letter at once."""

    def __init__(self, err: BaseException | str, code: str | None = None) -> None:
        super().__init__(_text(err))
        self.err = err
        self.code = code if code is not None else error_code(err)


def _text(err: BaseException | str) -> str:
    """str(err), or the type's name when a cause's __str__ raises."""
    try:
        return str(err)
    except Exception:
        return type(err).__name__


def sqlstate(exc: BaseException | str) -> str | None:
    """The SQLSTATE of a psycopg error, following __cause__ and our wrappers."""
    seen = 0
    current: BaseException | str | None = exc
    while isinstance(current, BaseException) and seen < 10:
        if isinstance(current, psycopg.Error) and current.sqlstate:
            return current.sqlstate
        if isinstance(current, RetryableError | PermanentError):
            current = current.err
        else:
            current = current.__cause__
        seen += 1
    return None


def error_code(exc: BaseException | str) -> str | None:
    """The code to record for a failure: an explicit code, else the SQLSTATE."""
    if isinstance(exc, RetryableError | PermanentError) and exc.code is not None:
        return exc.code
    return sqlstate(exc)


def is_retryable(exc: BaseException) -> bool:
    """True when retrying the failed operation later can succeed.

    RetryableError: yes. PermanentError: no. psycopg errors by SQLSTATE:
    08 connection, 40001 serialization, 40P01 deadlock, 53 resources,
    57P01 admin shutdown (and the rest of 57, 58) are retryable; syntax and
    access (42, including 42501 privilege), constraints (23), data (22) and
    the other classes in PERMANENT_CLASSES are not. A psycopg OperationalError
    or InterfaceError without a SQLSTATE is a lost connection: retryable.
    Any other exception: retryable.
    """
    if isinstance(exc, RetryableError):
        return True
    if isinstance(exc, PermanentError):
        return False
    state = sqlstate(exc)
    if state is None:
        return True
    if state in PERMANENT_CODES:
        return False
    if state in RETRYABLE_CODES or state[:2] in RETRYABLE_CLASSES:
        return True
    return state[:2] not in PERMANENT_CLASSES


# -- the worker's own statements ------------------------------------------------------

ServerErrorKind = Literal["transient", "item", "configuration"]

# What the worker does when one of its own statements (the flush, the
# heartbeat, cleanup) fails, by SQLSTATE class: "transient" backs off and
# tries again (the server is busy, restarting, out of disk, a timeout fired);
# "item" means a value in the statement was refused, so each item is written
# alone and the one at fault fails by itself; "configuration" means no retry
# can help (a privilege, a missing function, a pooler that drops prepared
# statements): the worker says so and stops.
TRANSIENT_CLASSES = frozenset(
    {
        "08",  # connection_exception
        "40",  # transaction_rollback: serialization, deadlock, completion unknown
        "53",  # insufficient_resources: disk full, out of memory, too many connections
        "55",  # object_not_in_prerequisite_state: lock_not_available, object_in_use
        "57",  # operator_intervention: statement_timeout (57014), shutdown, idle timeouts
        "58",  # system_error: I/O error
        "XX",  # internal_error: a corrupted page, an assertion (an operator's problem)
    }
)
TRANSIENT_STATES = frozenset(
    {
        "25P03",  # idle_in_transaction_session_timeout
        "25006",  # read_only_sql_transaction: a standby, until failover completes
        "25P04",  # transaction_timeout (PostgreSQL 17)
    }
)
ITEM_CLASSES = frozenset(
    {
        "22",  # data_exception: a value out of range, too long, untranslatable
        "23",  # integrity_constraint_violation
        "44",  # with_check_option_violation
        "54",  # program_limit_exceeded: a value over a bound
        "P0",  # raise_exception: a function refused a value
    }
)


# The SQLSTATEs by which the queue's functions refuse an argument
# (_retryq_check: 22023 invalid_parameter_value; _retryq_check_integer:
# 22003 numeric_value_out_of_range; a cast: 22P02). From a statement whose
# every argument is the worker's own setting (its acquire, retry_queue_due,
# the heartbeat's renewal, release, complete: ids, worker_id, routing,
# lock_timeout), they can only mean that its configuration is wrong: every
# later call fails the same way.
ARGUMENT_STATES = frozenset({"22023", "22003", "22P02"})


def server_error_kind(exc: BaseException, *, own_arguments: bool = False) -> ServerErrorKind:
    """How the worker treats `exc` raised by one of its own statements.

    `own_arguments`: the statement's every argument is the worker's own
    setting, so a refused argument (ARGUMENT_STATES) is a configuration
    error, not an item's.

    psycopg errors by SQLSTATE (see TRANSIENT_CLASSES, TRANSIENT_STATES and
    ITEM_CLASSES; every other class is a configuration error). Without a
    SQLSTATE: a lost connection or a pool timeout is transient, a value psycopg
    refused to send (DataError: a NUL in a text) is the item's, another
    psycopg error is a configuration error, and any other exception (raised
    while encoding or decoding a value) is the item's.
    """
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not _state(exc):
        return "transient"
    if isinstance(exc, PoolTimeout):
        return "transient"
    state = _state(exc)
    if own_arguments and state in ARGUMENT_STATES:
        return "configuration"
    if state is None:
        if isinstance(exc, psycopg.DataError):
            return "item"
        return "configuration" if isinstance(exc, psycopg.Error) else "item"
    if state in TRANSIENT_STATES or state[:2] in TRANSIENT_CLASSES:
        return "transient"
    if state[:2] in ITEM_CLASSES:
        return "item"
    return "configuration"


def _state(exc: BaseException) -> str | None:
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None


def explain(exc: BaseException) -> str:
    """`SQLSTATE name: message` for a server error (the real cause, for a log
    line), else the exception's type and text."""
    state = _state(exc)
    first = (str(exc).strip().splitlines() or [""])[0]
    if state:
        return f"SQLSTATE {state} ({type(exc).__name__}): {first}"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
