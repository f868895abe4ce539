"""A RetryWorker and cancel_retry_items: an item cancelled while its handler
runs is never recorded as done or failed and never runs again; one cancelled
while pending never reaches a handler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from retryq_py import RetryableError, RetryQueue, RetryQueueItem, RetryWorker
from tests.helpers import statuses

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


def test_items_cancelled_pending_or_in_flight_never_run_again(module_dsn: str, db: Conn) -> None:
    q = RetryQueue(db)
    runs: dict[int, int] = {}
    pending, _ = q.add("never", {"n": 0})
    ok_id, _ = q.add("ok", {"n": 1})
    q.cancel([pending])

    def cancel_self(item: RetryQueueItem) -> None:
        runs[item.id] = runs.get(item.id, 0) + 1
        with psycopg.connect(module_dsn, autocommit=True) as other:
            assert RetryQueue(other).cancel([item.id]) == 1

    def succeeds(item: RetryQueueItem) -> None:
        cancel_self(item)

    def fails(item: RetryQueueItem) -> None:
        cancel_self(item)
        raise RetryableError("would retry")

    done, _ = q.add("succeeds", {"n": 2})
    failed, _ = q.add("fails", {"n": 3})

    def must_not_run(item: RetryQueueItem) -> None:
        runs[item.id] = runs.get(item.id, 0) + 1

    counts = RetryWorker(
        module_dsn,
        {"never": must_not_run, "ok": lambda item: None, "succeeds": succeeds, "fails": fails},
        **FAST,
    ).run(exit_when_idle=True)
    assert runs == {done: 1, failed: 1}
    assert (counts.processed, counts.failed, counts.lease_lost) == (1, 0, 2)
    assert statuses(db) == {"completed": 1, "cancelled": 3}
    got = dict(db.execute("SELECT id, status FROM daz_retry_queue").fetchall())
    assert got == {pending: "cancelled", ok_id: "completed", done: "cancelled", failed: "cancelled"}
    errors = db.execute(
        "SELECT error_history FROM daz_retry_queue WHERE id = %s", [failed]
    ).fetchone()
    assert errors == ([],)  # the failure after the cancel was never recorded
