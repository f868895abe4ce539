"""Error classification: which failures are worth retrying.

A handler signals intent by raising RetryableError (try again after the
backoff) or PermanentError (dead-letter now). Anything else is classified by
`is_retryable`: psycopg errors by SQLSTATE, every other exception as
retryable, since a transient cause is the common case for the operations
this queue retries and the retry budget bounds the cost of being wrong.
"""

from __future__ import annotations

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


class RetryableError(Exception):
    """The guide's RetryableError: retry after the backoff.

    `err` is the cause (an exception or a message); `code` is the error code
    recorded in the item's history (defaults to the cause's SQLSTATE).
    """

    def __init__(self, err: BaseException | str, code: str | None = None) -> None:
        super().__init__(_text(err))
        self.err = err
        self.code = code if code is not None else error_code(err)


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


def server_error_kind(exc: BaseException) -> ServerErrorKind:
    """How the worker treats `exc` raised by one of its own statements.

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
