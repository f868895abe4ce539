"""RetryWorker's routing (issue 14 item 1) and pauses as a worker sees them
(item 4): a worker leases only the event types it has handlers for, so
services sharing one queue never touch each other's items.

Tests wait on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from retryq_py import RetryQueue, RetryQueueItem, RetryWorker, _sql, ops
from retryq_py.worker import Routing, WorkerParts
from tests.helpers import statuses, wait_until

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive, _retryq_pause")
        yield conn


@pytest.fixture
def q(db: Conn) -> RetryQueue:
    return RetryQueue(db)


def codes(db: Conn) -> list[str]:
    """Every error code in any item's history."""
    return [
        r[0]
        for r in db.execute(
            "SELECT h->>'code' FROM daz_retry_queue, jsonb_array_elements(error_history) AS h"
        ).fetchall()
    ]


def test_two_workers_with_disjoint_handlers_drain_a_mixed_queue(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The issue's done-when: nothing is dead-lettered as unknown."""
    seen: dict[str, list[str]] = {"chat": [], "sql": []}
    lock = threading.Lock()

    def handler(service: str) -> Any:
        def handle(item: RetryQueueItem) -> None:
            with lock:
                seen[service].append(item.event_type)

        return handle

    chat = {"cytube.event.chatMsg": handler("chat"), "cytube.event.pm": handler("chat")}
    sqlp = {"sql.exec": handler("sql"), "sql.batch": handler("sql")}
    kinds = [*chat, *sqlp]
    q.add_many([{"event_type": kinds[i % 4], "data": {"i": i}} for i in range(200)])
    workers = [
        RetryWorker(module_dsn, chat, name="chat", batch_size=7, **FAST),
        RetryWorker(module_dsn, sqlp, name="sql", batch_size=7, **FAST),
    ]
    threads = [w.start(exit_when_drained=True) for w in workers]
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert statuses(db) == {"completed": 200}
    assert codes(db) == []
    assert sorted(set(seen["chat"])) == sorted(chat) and len(seen["chat"]) == 100
    assert sorted(set(seen["sql"])) == sorted(sqlp) and len(seen["sql"]) == 100
    assert [w.counts.dead_lettered for w in workers] == [0, 0]


def test_a_worker_leaves_other_types_alone_and_exits_when_its_own_are_done(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    mine = q.add("mine", {}).id
    other = q.add("theirs", {}).id
    worker = RetryWorker(module_dsn, {"mine": lambda item: None}, **FAST)
    thread = worker.start(exit_when_drained=True)
    thread.join(timeout=30)
    assert not thread.is_alive(), "another service's pending item kept the worker running"
    got = dict(db.execute("SELECT id, status FROM daz_retry_queue").fetchall())
    assert got == {mine: "completed", other: "pending"}
    assert codes(db) == []


def test_a_worker_without_handlers_refuses_to_start(module_dsn: str) -> None:
    with pytest.raises(ValueError, match="no handlers"):
        RetryWorker(module_dsn, {})
    with pytest.raises(ValueError, match="no handlers"):
        RetryWorker(module_dsn, {}, all_event_types=True)


def test_all_event_types_keeps_the_dead_letter_for_an_unknown_type(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    unknown = q.add("mystery", {}).id
    worker = RetryWorker(module_dsn, {"known": lambda item: None}, all_event_types=True, **FAST)
    assert worker.routing == Routing(None, None)
    assert worker.run(exit_when_drained=True).dead_lettered == 1
    status, code = db.execute(
        "SELECT status, last_error_code FROM daz_retry_queue WHERE id = %s", [unknown]
    ).fetchone() or (None, None)
    assert (status, code) == ("dead_letter", "unknown_event_type")


def test_plugin_names_narrow_the_lease(module_dsn: str, db: Conn, q: RetryQueue) -> None:
    chat = q.add("t", {}, plugin="chat").id
    bare = q.add("t", {}).id
    other = q.add("t", {}, plugin="sql").id
    worker = RetryWorker(module_dsn, {"t": lambda item: None}, plugin_names=["chat", ""], **FAST)
    assert worker.routing == Routing(("t",), ("chat", ""))
    worker.run(exit_when_drained=True)
    got = dict(db.execute("SELECT id, status FROM daz_retry_queue").fetchall())
    assert got == {chat: "completed", bare: "completed", other: "pending"}
    with pytest.raises(ValueError, match="plugin_names is empty"):
        RetryWorker(module_dsn, {"t": lambda item: None}, plugin_names=[])


def test_a_paused_type_waits_without_busy_polling_and_runs_once_resumed(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    ops.pause(db, "a")
    item = q.add("a", {}).id
    asked: list[float] = []

    class Watched(RetryQueue):
        def due(self, **routing: Any) -> _sql.Due:
            asked.append(time.monotonic())  # each time a lane goes idle
            return super().due(**routing)

    worker = RetryWorker(
        module_dsn,
        {"a": lambda item: None},
        lanes=1,
        parts=WorkerParts(queue=lambda pool, schema: Watched(pool, schema=schema)),
        **FAST,
    )
    thread = worker.start()
    try:
        wait_until(lambda: len(asked) >= 4, timeout=10)
        # a paused item is not due: the lane sleeps the poll interval (0.5 s)
        # between looks instead of asking again at once (the first look may
        # come early: the listener wakes the lanes once it is connected)
        gaps = [b - a for a, b in itertools.pairwise(asked[:4])]
        assert min(gaps[1:]) > 0.3, gaps
        assert db.execute("SELECT status FROM daz_retry_queue").fetchall() == [("pending",)]
        ops.resume(db, "a")  # its NOTIFY wakes the worker
        wait_until(
            lambda: db.execute(
                "SELECT status FROM daz_retry_queue WHERE id = %s", [item]
            ).fetchone() == ("completed",),
            timeout=10,
        )
    finally:
        worker.stop()
        thread.join(timeout=10)
