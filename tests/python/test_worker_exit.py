"""RetryWorker.run's two ways to return by itself, with the CLI's meanings:
exit_when_idle (nothing due now and nothing held, as `retryq worker
--exit-when-idle`) and exit_when_drained (nothing pending or processing at
all, as `--exit-when-drained`)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import psycopg
import pytest

from retryq_py import RetryableError, RetryQueue, RetryQueueItem, RetryWorker
from retryq_py.worker import WorkerParts
from tests.python import workers
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


def down(item: RetryQueueItem) -> None:
    raise RetryableError(ConnectionError("upstream down"), "E_DOWN")


HANDLERS = {"ok": lambda item: None, "down": down}


def status_of(db: Conn) -> dict[int, str]:
    return dict(db.execute("SELECT id, status FROM daz_retry_queue").fetchall())


def run_in_thread(worker: Any, **kwargs: bool) -> Any:
    """worker.run(**kwargs) within 30 s (an hour-long wait fails the test)."""
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(worker.run(install_signal_handlers=False, **kwargs)),
        daemon=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        thread.start()
        thread.join(30)
    if thread.is_alive():
        worker.stop(force=True)
        pytest.fail(f"run({kwargs}) did not return: it waits for items scheduled later")
    return result[0], caught


def test_exit_when_idle_runs_what_is_due_and_leaves_what_is_scheduled_later(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
    q = RetryQueue(db)
    due = q.add("ok", {"n": 1}).id
    later = q.add("ok", {"n": 2}, delay=3600).id
    retried = q.add("down", {"n": 3}, retry_delay=3600).id

    counts, caught = run_in_thread(Worker(module_dsn, HANDLERS, **FAST), exit_when_idle=True)

    assert (counts.processed, counts.failed, counts.dead_lettered) == (1, 1, 0)
    assert status_of(db) == {due: "completed", later: "pending", retried: "pending"}
    # the old meaning waited for those two: say so, and how to keep it
    changed = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(changed) == 1
    name = "RetryWorker" if Worker is RetryWorker else "AsyncRetryWorker"
    assert str(changed[0].message).startswith(f"{name}.run(exit_when_idle=True) returned")
    assert "Pass exit_when_drained=True" in str(changed[0].message)
    # the old meaning is not the running version's
    assert f"retryq {version('retryq')}" not in str(changed[0].message)
    # it points at the line that called run() (AsyncInThread's await for
    # AsyncRetryWorker), not into retryq
    caller = __file__ if Worker is RetryWorker else workers.__file__
    assert changed[0].filename == caller


def test_exit_when_idle_does_not_wait_for_another_workers_lease(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
    q = RetryQueue(db)
    held = q.add("ok", {}).id
    assert [i.id for i in q.acquire(worker_id="other", batch_size=1, lock_timeout=600)] == [held]

    counts, _ = run_in_thread(Worker(module_dsn, HANDLERS, **FAST), exit_when_idle=True)

    assert counts.processed == 0
    assert status_of(db) == {held: "processing"}


def test_exit_when_idle_with_nothing_left_gives_no_warning(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
    q = RetryQueue(db)
    q.add("ok", {})
    counts, caught = run_in_thread(Worker(module_dsn, HANDLERS, **FAST), exit_when_idle=True)
    assert counts.processed == 1
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []


class StaleOnce(RetryQueue):
    """The worker's queue, except that the first answer of due() after the
    queue is empty still says 'active': the answer another lane's last
    write overtook."""

    stale = True

    def due(self, **routing: Any) -> Any:
        answer = super().due(**routing)
        if not answer.active and StaleOnce.stale:
            StaleOnce.stale = False
            return dataclasses.replace(answer, active=True)
        return answer


def test_exit_when_idle_asks_again_before_saying_items_were_left(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
    """run() warned that items were left when the answer it exited on was
    overtaken by another lane's last write (CI's PostgreSQL 18 pass)."""
    RetryQueue(db).add("ok", {})
    StaleOnce.stale = True
    parts = WorkerParts(queue=lambda pool, schema: StaleOnce(pool, schema=schema))
    counts, caught = run_in_thread(
        Worker(module_dsn, HANDLERS, parts=parts, **FAST), exit_when_idle=True
    )
    assert counts.processed == 1 and not StaleOnce.stale
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []


def test_exit_when_drained_waits_for_a_retry_scheduled_later(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
    q = RetryQueue(db)
    attempts: list[int] = []

    def flaky(item: RetryQueueItem) -> None:
        attempts.append(item.id)
        if len(attempts) == 1:
            raise RetryableError(ConnectionError("once"), "E_ONCE")

    item = q.add("flaky", {}, retry_delay=1).id
    worker = Worker(module_dsn, {"flaky": flaky}, **FAST)
    counts, caught = run_in_thread(worker, exit_when_drained=True)

    assert (counts.failed, counts.processed) == (1, 1)
    assert status_of(db) == {item: "completed"}
    assert [w for w in caught if issubclass(w.category, DeprecationWarning)] == []


def test_exit_when_idle_and_drained_together_are_refused(
    Worker: WorkerType, module_dsn: str
) -> None:
    worker = Worker(module_dsn, HANDLERS, **FAST)
    with pytest.raises(ValueError, match="exit_when_idle or exit_when_drained"):
        worker.run(exit_when_idle=True, exit_when_drained=True)


def acquire_calls(db: Conn) -> int:
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions"
        " WHERE funcname = 'acquire_retry_items'"
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_spent_rate_limit_is_slept_out_not_polled(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
    """1 lease an hour and 3 items: the other two are due when the token frees
    (retry_queue_due), so the worker sleeps instead of asking acquire again
    and again, and exit_when_idle returns."""
    db.execute("SELECT retry_rate_limit_set('ok', NULL, 1, 3600)")
    q = RetryQueue(db)
    ids = [q.add("ok", {"n": n}).id for n in range(3)]
    counted = psycopg.conninfo.make_conninfo(module_dsn, options="-c track_functions=pl")
    options = {**FAST, "poll_interval": 30}
    try:
        worker = Worker(counted, HANDLERS, **options)
        before = acquire_calls(db)
        result: list[Any] = []
        thread = threading.Thread(
            target=lambda: result.append(worker.run(install_signal_handlers=False)),
            daemon=True,
        )
        thread.start()
        thread.join(2.5)
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert sorted(status_of(db).values()) == ["completed", "pending", "pending"]
        # the backends' counters reach the statistics when they flush them
        deadline = time.monotonic() + 5
        while (calls := acquire_calls(db) - before) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 1 <= calls <= 10, calls  # a 10 ms re-poll made some 200

        started = time.monotonic()
        counts, _ = run_in_thread(Worker(module_dsn, HANDLERS, **options), exit_when_idle=True)
        assert time.monotonic() - started < 5
        assert counts.processed == 0
        assert set(status_of(db)) == set(ids)
    finally:
        db.execute("SELECT retry_rate_limit_clear('ok', NULL)")


@pytest.mark.parametrize("opened", ["p_seconds => 3600", "p_seconds => NULL"])
def test_items_behind_an_open_circuit_are_slept_out_not_polled(
    Worker: WorkerType, module_dsn: str, db: Conn, opened: str
) -> None:
    """Items of a key whose circuit is open (for an hour, or by an operator
    until closed) counted as due in retry_queue_due, so a worker asked
    acquire again every 10 ms through the outage, and exit_when_idle never
    returned. They are now due when acquire would lease the key's probe."""
    q = RetryQueue(db)
    ids = [q.add("ok", {"n": n}).id for n in range(3)]
    db.execute(f"SELECT retry_circuit_open('ok', NULL, {opened})")  # type: ignore[arg-type]
    counted = psycopg.conninfo.make_conninfo(module_dsn, options="-c track_functions=pl")
    options = {**FAST, "poll_interval": 30}
    try:
        worker = Worker(counted, HANDLERS, **options)
        before = acquire_calls(db)
        thread = threading.Thread(
            target=lambda: worker.run(install_signal_handlers=False), daemon=True
        )
        thread.start()
        thread.join(2.5)
        worker.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert set(status_of(db).values()) == {"pending"}
        deadline = time.monotonic() + 5
        while (calls := acquire_calls(db) - before) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 1 <= calls <= 10, calls  # a 10 ms re-poll made some 200

        started = time.monotonic()
        counts, _ = run_in_thread(Worker(module_dsn, HANDLERS, **options), exit_when_idle=True)
        assert time.monotonic() - started < 5
        assert counts.processed == 0
        assert set(status_of(db)) == set(ids)
    finally:
        db.execute("SELECT retry_circuit_close('ok', NULL)")


@pytest.mark.parametrize("exit_when", ["exit_when_idle", "exit_when_drained"])
def test_exit_is_logged_once_whatever_the_lanes(
    module_dsn: str, db: Conn, caplog: pytest.LogCaptureFixture, exit_when: str
) -> None:
    caplog.set_level(logging.INFO, logger="retryq.worker")
    for _ in range(5):  # the lanes race to the same conclusion
        caplog.clear()
        worker = RetryWorker(module_dsn, HANDLERS, lanes=4, worker_count=4, **FAST)
        run_in_thread(worker, **{exit_when: True})
        stops = [m for m in caplog.messages if m.endswith(", stopping")]
        assert len(stops) == 1, stops
