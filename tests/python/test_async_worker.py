"""What only AsyncRetryWorker has: coroutine handlers on the caller's loop,
cancellation, `async with`. Everything it shares with RetryWorker runs in the
scenarios of test_worker.py and test_worker_faults.py (the `Worker` fixture).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from retryq_py import AsyncRetryWorker, RetryQueue, RetryQueueItem, RetryWorker
from tests.helpers import statuses

# Run by one of .ci/run's passes only: what only AsyncRetryWorker has happens on the
# caller's event loop; its engine and SQL are RetryWorker's, run there on every server.
pytestmark = pytest.mark.server_agnostic

Conn = psycopg.Connection[Any]
FAST: dict[str, Any] = {
    "poll_interval": 0.2,
    "lock_timeout": 5,
    "cleanup_interval": 0,
    "max_backoff": 0.2,
}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


@pytest.fixture
def q(db: Conn) -> RetryQueue:
    return RetryQueue(db)


async def wait_for(pred: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """wait_until for a coroutine: polls without blocking the loop."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_handlers_are_tasks_on_the_callers_loop_at_most_worker_count_at_once(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """12 handlers that each wait 0.3 s on the loop, 4 at a time: about three
    rounds (a thread per handler would not be on this loop at all)."""
    q.add_many([{"event_type": "e", "data": i} for i in range(12)])
    loop = asyncio.get_running_loop()
    loops: set[Any] = set()
    running, most = [0], [0]

    async def handle(item: RetryQueueItem) -> None:
        loops.add(asyncio.get_running_loop())
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await asyncio.sleep(0.3)
        finally:
            running[0] -= 1

    worker = AsyncRetryWorker(module_dsn, {"e": handle}, worker_count=4, batch_size=4, **FAST)
    started = time.monotonic()
    counts = await worker.run(exit_when_drained=True)
    took = time.monotonic() - started
    assert counts.processed == 12
    assert loops == {loop}
    assert most[0] == 4
    assert 0.85 < took < 5, took
    assert statuses(db) == {"completed": 12}


async def test_a_handler_blocking_the_loop_keeps_its_lease(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The heartbeat runs off the loop: a handler that blocks the loop three
    times longer than the lease (1 s) still completes its item, first try,
    while no other worker could take it."""
    item_id = q.add("e", {}).id
    seen: list[Any] = []

    async def block(item: RetryQueueItem) -> None:
        time.sleep(3)  # the loop stops for 3 s: nothing async runs meanwhile
        seen.append(db.execute("SELECT locked_until > now() FROM daz_retry_queue").fetchone())

    worker = AsyncRetryWorker(
        module_dsn, {"e": block}, worker_count=1, **{**FAST, "lock_timeout": 1}
    )
    counts = await worker.run(exit_when_drained=True)
    assert (counts.processed, counts.lease_lost, counts.failed) == (1, 0, 0)
    assert seen == [(True,)]
    row = db.execute(
        "SELECT status, retry_count FROM daz_retry_queue WHERE id = %s", [item_id]
    ).fetchone()
    assert row == ("completed", 0)


async def test_handlers_past_the_grace_period_are_cancelled_and_released(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    item_id = q.add("e", {}).id
    started = asyncio.Event()
    cancelled: list[int] = []

    async def stuck(item: RetryQueueItem) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(item.id)
            raise

    worker = AsyncRetryWorker(module_dsn, {"e": stuck}, worker_count=1, grace_period=0.2, **FAST)
    task = worker.start()
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    counts = await asyncio.wait_for(task, 5)
    assert cancelled == [item_id]
    assert (counts.released, counts.processed) == (1, 0)
    row = db.execute(
        "SELECT status, retry_count, locked_by FROM daz_retry_queue WHERE id = %s", [item_id]
    ).fetchone()
    assert row == ("pending", 0, None)


async def test_cancelling_run_releases_what_it_holds_and_raises_cancelled(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """Cancelling run() is a forced stop: no grace period, every held item
    released (no retry spent), and run() ends with CancelledError once done."""
    q.add_many([{"event_type": "e", "data": i} for i in range(5)])
    started = asyncio.Event()

    async def slow(item: RetryQueueItem) -> None:
        started.set()
        await asyncio.sleep(60)

    worker = AsyncRetryWorker(
        module_dsn, {"e": slow}, worker_count=2, batch_size=5, grace_period=30, **FAST
    )
    task = asyncio.get_running_loop().create_task(worker.run(install_signal_handlers=False))
    await asyncio.wait_for(started.wait(), 5)
    begun = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - begun < 5  # not the 30 s grace period
    assert statuses(db) == {"pending": 5}
    assert db.execute("SELECT max(retry_count) FROM daz_retry_queue").fetchone() == (0,)
    assert worker.counts.released == 5


async def test_async_with_runs_in_the_background_and_stops_gracefully(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The FastAPI lifespan shape: the worker runs while the block does; on
    exit it stops, and a handler in flight finishes within grace_period."""
    started, done = asyncio.Event(), []

    async def handle(item: RetryQueueItem) -> None:
        started.set()
        await asyncio.sleep(0.3)
        done.append(item.id)

    async with AsyncRetryWorker(module_dsn, {"e": handle}, grace_period=5, **FAST) as worker:
        item_id = q.add("e", {}).id
        await asyncio.wait_for(started.wait(), 5)
        assert not worker.stopping
    assert worker.stopping
    assert done == [item_id]
    assert statuses(db) == {"completed": 1}


async def test_a_handlers_own_cancelled_error_is_a_failed_attempt(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """Only the worker's cancellation ends a task unrecorded: a handler that
    raises CancelledError itself fails its attempt (and is retried), instead
    of leaving its item held until the process ends."""
    item_id = q.add("e", {}, retry_delay=0.05).id
    attempts: list[int] = []

    async def flaky(item: RetryQueueItem) -> None:
        attempts.append(item.retry_count)
        if item.retry_count == 0:
            raise asyncio.CancelledError

    counts = await AsyncRetryWorker(module_dsn, {"e": flaky}, **FAST).run(exit_when_drained=True)
    assert (counts.failed, counts.processed) == (1, 1)
    row = db.execute(
        "SELECT status, last_error_code FROM daz_retry_queue WHERE id = %s", [item_id]
    ).fetchone()
    assert row == ("completed", "CancelledError")


async def test_what_a_handler_returns_is_awaited_once(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A plain function returning a coroutine (a lambda calling an async def)
    has it awaited: it runs, and its exception fails the item. An async def
    that returns a coroutine forgot an await: its item is a dead letter
    naming the bug, never completed, and that coroutine never runs."""
    ran: list[str] = []

    async def send(item: RetryQueueItem) -> None:
        ran.append(item.event_type)
        raise RuntimeError("real work failed")

    async def forgot(item: RetryQueueItem) -> object:
        return send(item)

    lam = q.add("lambda", {}, retry_delay=3600).id
    fgt = q.add("forgot", {}).id
    worker = AsyncRetryWorker(
        module_dsn, {"lambda": lambda item: send(item), "forgot": forgot}, **FAST
    )
    with pytest.warns(DeprecationWarning, match="still pending"):  # the retry
        counts = await worker.run(exit_when_idle=True)

    assert ran == ["lambda"]
    assert db.execute(
        "SELECT status, retry_count, last_error_code FROM daz_retry_queue WHERE id = %s", [lam]
    ).fetchone() == ("pending", 1, "RuntimeError")
    status, code, error = db.execute(
        "SELECT status, last_error_code, error_history -> 0 ->> 'error'"
        " FROM daz_retry_queue WHERE id = %s",
        [fgt],
    ).fetchone() or (None, None, None)
    assert (status, code) == ("dead_letter", "retryq.unfinished_result")
    assert error.startswith("retryq: the handler returned a coroutine (")
    assert "await it in the handler" in error
    assert (counts.processed, counts.failed, counts.dead_lettered) == (0, 1, 1)


def test_retryworker_refuses_a_coroutine_handler(module_dsn: str) -> None:
    """Its threads would call it, get a coroutine, never await it, and
    complete the item unhandled."""

    async def handle(item: RetryQueueItem) -> None: ...

    class Callable:
        async def __call__(self, item: RetryQueueItem) -> None: ...

    for handler in (handle, Callable()):
        with pytest.raises(TypeError, match="AsyncRetryWorker"):
            RetryWorker(module_dsn, {"e": handler})


async def test_a_worker_runs_once_and_stop_before_run_ends_it_at_once(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    q.add("e", {})

    async def handle(item: RetryQueueItem) -> None: ...

    worker = AsyncRetryWorker(module_dsn, {"e": handle}, **FAST)
    worker.stop()
    counts = await asyncio.wait_for(worker.run(), 10)
    assert counts.processed == 0
    with pytest.raises(RuntimeError, match="runs once"):
        await worker.run()


async def test_plain_handlers_run_in_threads_and_never_stall_the_loop(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A plain function blocks as RetryWorker lets it: 4 handlers sleeping
    0.4 s each, 4 at a time, take one round, while the loop keeps ticking."""
    q.add_many([{"event_type": "e", "data": i} for i in range(4)])
    threads: set[str] = set()

    def blocking(item: RetryQueueItem) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.4)

    ticks = [0]

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.02)
            ticks[0] += 1

    ticking = asyncio.get_running_loop().create_task(ticker())
    worker = AsyncRetryWorker(module_dsn, {"e": blocking}, worker_count=4, batch_size=4, **FAST)
    started = time.monotonic()
    counts = await worker.run(exit_when_drained=True)
    took = time.monotonic() - started
    ticking.cancel()
    assert counts.processed == 4
    assert len(threads) == 4 and threading.main_thread().name not in threads
    assert took < 1.2, took  # one after the other would be 1.6 s
    assert ticks[0] >= 10  # 0.4 s of blocking handlers, yet the loop ran


async def test_a_plain_handler_past_the_grace_period_is_released_and_run_returns(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    item_id = q.add("e", {}).id
    started, gate = threading.Event(), threading.Event()

    def stuck(item: RetryQueueItem) -> None:
        started.set()
        gate.wait(10)

    worker = AsyncRetryWorker(module_dsn, {"e": stuck}, worker_count=1, grace_period=0.2, **FAST)
    task = worker.start()
    try:
        await wait_for(started.is_set, what="the handler")
        worker.stop()
        counts = await asyncio.wait_for(task, 5)
    finally:
        gate.set()
    assert counts.released == 1
    row = db.execute(
        "SELECT status, retry_count, locked_by FROM daz_retry_queue WHERE id = %s", [item_id]
    ).fetchone()
    assert row == ("pending", 0, None)


async def test_async_with_an_unreachable_database_fails_on_entry() -> None:
    """An app's lifespan learns at startup that its worker cannot run, within
    connect_timeout, instead of serving with a dead worker."""
    worker = AsyncRetryWorker(
        "host=127.0.0.1 port=1 user=postgres dbname=nowhere",
        {"e": _noop},
        connect_timeout=1,
    )
    begun, entered = time.monotonic(), []
    with pytest.raises(psycopg.OperationalError, match="cannot reach the database"):
        async with worker:
            entered.append(True)
    assert not entered
    assert time.monotonic() - begun < 10


async def test_a_worker_stopped_by_an_error_says_so_at_once(
    module_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """start()ed in the background and failing (here: no retryq in that
    schema), it logs the error when it happens, not when someone awaits it."""
    worker = AsyncRetryWorker(module_dsn, {"e": _noop}, schema="no_such_schema", **FAST)
    with caplog.at_level("ERROR", logger="retryq.worker"):
        task = worker.start()
        await wait_for(
            lambda: any("stopped by an error" in r.getMessage() for r in caplog.records),
            what="the error logged",
        )
    with pytest.raises(psycopg.errors.InvalidSchemaName, match="no_such_schema"):
        await task


async def _noop(item: RetryQueueItem) -> None:
    return None


def test_the_readme_async_example_prints_what_the_readme_says(dsn: str) -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    found = re.search(
        r"```python\n([^`]*AsyncRetryWorker\(dsn[^`]*)```\n\nIt prints `(WorkerCounts\([^`]*\))`",
        text,
    )
    assert found is not None, "the README's AsyncRetryWorker example and its output"
    done = subprocess.run(
        [sys.executable, "-c", found.group(1)],
        env={**os.environ, "RETRYQ_DATABASE_URL": dsn},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == found.group(2)


async def test_a_stop_while_a_handler_blocks_the_loop_releases_every_item(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The first handler blocks the loop, and the stop comes meanwhile: the
    second item, handed to the loop but not yet started as a task, is
    released too, not left leased until its lease runs out."""
    q.add_many([{"event_type": "e", "data": i} for i in range(2)])
    calls: list[int] = []
    worker: AsyncRetryWorker

    async def block(item: RetryQueueItem) -> None:
        calls.append(item.id)
        if len(calls) == 1:
            time.sleep(0.5)  # the loop is blocked; the other item is handed over
            worker.stop()
            time.sleep(1)  # past the grace period

    worker = AsyncRetryWorker(
        module_dsn, {"e": block}, worker_count=2, batch_size=2, grace_period=0.2, **FAST
    )
    counts = await asyncio.wait_for(worker.run(), 10)
    assert counts.released == 2
    assert statuses(db) == {"pending": 2}
    assert db.execute("SELECT max(retry_count) FROM daz_retry_queue").fetchone() == (0,)


async def test_an_async_pool_is_refused_with_what_to_give_instead(module_dsn: str) -> None:
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(module_dsn, open=False)
    with pytest.raises(TypeError, match=r"AsyncConnectionPool.*conninfo"):
        AsyncRetryWorker(pool, {"e": _noop})  # type: ignore[arg-type]


def test_worker_options_are_retryworkers_keywords() -> None:
    """A keyword added to RetryWorker is one AsyncRetryWorker must take too."""
    import inspect

    from retryq_py.worker import WorkerOptions

    keywords = {
        name
        for name, p in inspect.signature(RetryWorker).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(WorkerOptions.__annotations__) == keywords - {"parts"}
