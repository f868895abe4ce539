"""A RetryWorker and cancel_retry_items: an item cancelled while its handler
runs is never recorded as done or failed and never runs again; one cancelled
while pending never reaches a handler."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from retryq_py import RetryableError, RetryQueue, RetryQueueItem, Snooze
from tests.helpers import statuses
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


def test_items_cancelled_pending_or_in_flight_never_run_again(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
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

    def snoozes(item: RetryQueueItem) -> None:
        cancel_self(item)
        raise Snooze(0)

    done, _ = q.add("succeeds", {"n": 2})
    failed, _ = q.add("fails", {"n": 3})
    snoozed, _ = q.add("snoozes", {"n": 4})

    def must_not_run(item: RetryQueueItem) -> None:
        runs[item.id] = runs.get(item.id, 0) + 1

    counts = Worker(
        module_dsn,
        {
            "never": must_not_run,
            "ok": lambda item: None,
            "succeeds": succeeds,
            "fails": fails,
            "snoozes": snoozes,
        },
        **FAST,
    ).run(exit_when_idle=True)
    assert runs == {done: 1, failed: 1, snoozed: 1}
    assert (counts.processed, counts.failed, counts.snoozed, counts.lease_lost) == (1, 0, 0, 3)
    assert statuses(db) == {"completed": 1, "cancelled": 4}
    got = dict(db.execute("SELECT id, status FROM daz_retry_queue").fetchall())
    assert got == {
        pending: "cancelled",
        ok_id: "completed",
        done: "cancelled",
        failed: "cancelled",
        snoozed: "cancelled",
    }
    errors = db.execute(
        "SELECT error_history FROM daz_retry_queue WHERE id = %s", [failed]
    ).fetchone()
    assert errors == ([],)  # the failure after the cancel was never recorded


# --- the README's examples ------------------------------------------------------------


def _readme_section() -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    return text.split("\n### Cancelling items\n", 1)[1].split("\n### ", 1)[0]


def test_the_readme_cancel_examples_run_as_written(module_dsn: str, db: Conn) -> None:
    section = _readme_section()
    (python,) = re.findall(r"```python\n(.*?)```", section, re.S)
    env = {**os.environ, "RETRYQ_DATABASE_URL": module_dsn}
    done = subprocess.run(
        [sys.executable, "-c", python], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1", "0"]
    (sql_text,) = re.findall(r"```sql\n(.*?)```", section, re.S)
    db.execute(sql_text)  # type: ignore[arg-type]  # each statement refused nothing
    assert statuses(db) == {"cancelled": 1}
