"""What many tests need: waiting on a condition with a deadline, and counting
the queue's rows. Never a sleep to synchronise (see ../shared/STYLE.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Polls `pred` every 10 ms until it holds; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def count(conn: Conn, status: str | None = None) -> int:
    """Rows of daz_retry_queue, of one status when given."""
    if status is None:
        row = conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone()
    else:
        row = conn.execute(
            "SELECT count(*) FROM daz_retry_queue WHERE status = %s", (status,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def statuses(conn: Conn) -> dict[str, int]:
    """{status: rows} of daz_retry_queue; absent statuses have no key."""
    rows = conn.execute("SELECT status, count(*) FROM daz_retry_queue GROUP BY 1").fetchall()
    return {str(s): int(n) for s, n in rows}


def reset(conn: Conn) -> None:
    """Empties the queue, ends every pause, removes every rate limit and
    switches circuit breakers off where installed: the circuits have their own
    tests, and the models cover the core rules."""
    conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive RESTART IDENTITY")
    conn.execute(
        "DO $$ BEGIN IF to_regclass('_retryq_circuit') IS NOT NULL THEN"
        " TRUNCATE _retryq_circuit;"
        " UPDATE _retryq_circuit_defaults SET failure_threshold = 0; END IF;"
        " IF to_regclass('_retryq_pause') IS NOT NULL THEN TRUNCATE _retryq_pause; END IF;"
        " IF to_regclass('_retryq_rate_limit') IS NOT NULL THEN"
        " TRUNCATE _retryq_rate_token, _retryq_rate_limit; END IF;"
        " END $$"
    )
