"""Error classification (retryq_py.errors) against a real PostgreSQL: which
failures are worth a retry, and the SQLSTATE each carries. Moved here from
test_queue.py, whose tests are now generated for both queue clients; these
involve no client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg_pool import PoolTimeout

from retryq_py import PermanentError, RetryableError, error_code, is_retryable
from retryq_py.errors import server_error_kind


@pytest.fixture
def db(module_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        yield conn


# -- error classification ----------------------------------------------------------


def _raise(conn: psycopg.Connection[Any], sqlstate: str) -> psycopg.Error:
    try:
        conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '" + sqlstate + "'; END $$"
        )
    except psycopg.Error as exc:
        return exc
    raise AssertionError("no error raised")


@pytest.mark.parametrize(
    ("sqlstate", "retryable"),
    [
        ("08006", True),  # connection failure
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock
        ("57P01", True),  # admin shutdown
        ("53300", True),  # too many connections
        ("53100", True),  # disk full
        ("42601", False),  # syntax error
        ("42501", False),  # insufficient privilege
        ("23505", False),  # unique violation
        ("23514", False),  # check violation
        ("22P02", False),  # invalid text representation
    ],
)
def test_is_retryable_by_sqlstate(
    db: psycopg.Connection[Any], sqlstate: str, retryable: bool
) -> None:
    exc = _raise(db, sqlstate)
    assert exc.sqlstate == sqlstate
    assert is_retryable(exc) is retryable
    assert error_code(exc) == sqlstate


def test_is_retryable_on_real_failures(module_dsn: str, db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.Error) as syntax:
        db.execute("SELEC 1")
    assert not is_retryable(syntax.value)
    db.execute("CREATE TEMP TABLE u (k int PRIMARY KEY)")
    db.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(psycopg.Error) as dup:
        db.execute("INSERT INTO u VALUES (1)")
    assert not is_retryable(dup.value)
    with psycopg.connect(module_dsn, autocommit=True) as victim:
        pid = victim.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError) as lost:
            victim.execute("SELECT 1")
    assert is_retryable(lost.value)


def test_wrapper_errors_carry_their_code() -> None:
    boom = ValueError("boom")
    assert is_retryable(boom)  # unclassified: retry
    assert error_code(boom) is None
    assert is_retryable(RetryableError(boom, "E1"))
    assert RetryableError(boom, "E1").code == "E1"
    assert RetryableError("plain text").err == "plain text"
    assert not is_retryable(PermanentError("bad"))
    cause = pgerr.DeadlockDetected("deadlock")
    assert error_code(RetryableError(cause)) == "40P01"  # the class carries the SQLSTATE
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = cause
    assert is_retryable(wrapped)


def test_wrapped_sqlstate_is_found(db: psycopg.Connection[Any]) -> None:
    exc = _raise(db, "23505")
    assert RetryableError(exc).code == "23505"
    assert PermanentError(exc).code == "23505"
    outer = RuntimeError("while saving")
    outer.__cause__ = exc
    assert not is_retryable(outer)
    assert error_code(outer) == "23505"


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        ("08006", "transient"),  # connection failure
        ("57014", "transient"),  # statement_timeout
        ("57P01", "transient"),  # admin shutdown
        ("25P03", "transient"),  # idle_in_transaction_session_timeout
        ("25006", "transient"),  # read-only: a standby until failover completes
        ("53100", "transient"),  # disk full
        ("53300", "transient"),  # too many connections
        ("40001", "transient"),
        ("55P03", "transient"),  # lock_not_available
        ("58030", "transient"),  # io_error
        ("22001", "item"),  # a text over its bound
        ("22P05", "item"),  # untranslatable character
        ("23514", "item"),
        ("54000", "item"),
        ("P0001", "item"),
        ("42501", "configuration"),  # privilege
        ("42883", "configuration"),  # undefined function
        ("3F000", "configuration"),  # no such schema
        ("26000", "configuration"),  # a prepared statement a pooler lost
        ("42P05", "configuration"),
        ("28P01", "configuration"),
        ("0A000", "configuration"),
    ],
)
def test_the_workers_own_errors_are_classified_by_sqlstate_class(state: str, kind: str) -> None:
    exc = psycopg.errors.lookup(state)("x")
    exc.sqlstate = state  # type: ignore[misc]
    assert server_error_kind(exc) == kind


def test_errors_without_a_sqlstate_are_classified_by_what_raised_them() -> None:
    assert server_error_kind(psycopg.OperationalError("connection lost")) == "transient"
    assert server_error_kind(psycopg.InterfaceError("closed")) == "transient"
    assert server_error_kind(PoolTimeout("no connection")) == "transient"
    assert server_error_kind(psycopg.DataError("NUL bytes")) == "item"
    assert server_error_kind(UnicodeEncodeError("utf-8", "\udcff", 0, 1, "x")) == "item"
    assert server_error_kind(psycopg.ProgrammingError("bad query")) == "configuration"
