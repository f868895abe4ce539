"""RetryWorker against a real PostgreSQL: outcomes, wake-ups, graceful stop,
lease extension, cleanup, reconnect. A scenario that takes the `Worker`
fixture runs on AsyncRetryWorker too (tests/python/workers.py).

Tests wait on conditions with deadlines (`wait_until`), never on fixed sleeps.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import errors as pgerr
from psycopg import sql
from psycopg.conninfo import make_conninfo

from retryq_py import (
    AsyncRetryWorker,
    HandlerRegistry,
    PermanentError,
    RetryableError,
    RetryConfig,
    RetryQueue,
    RetryQueueItem,
    RetryWorker,
    Snooze,
    WorkerEvent,
    _sql,
    default_worker_id,
)
from retryq_py.worker import Settings, WorkerParts
from retryq_py.worker.events import Outcome
from retryq_py.worker.flush import Writer, Written
from retryq_py.worker.listener import Listener
from tests.helpers import statuses, wait_until
from tests.pg import Server
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}
# a worker needs a handler; these tests' queues hold no item of this type
NOOP = {"e": lambda item: None}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


@pytest.fixture
def q(db: Conn) -> RetryQueue:
    return RetryQueue(db)


def row(db: Conn, item_id: int) -> dict[str, Any]:
    cur = db.execute(
        "SELECT status, retry_count, last_error_code, error_history, locked_by"
        " FROM daz_retry_queue WHERE id = %s",
        [item_id],
    )
    found = cur.fetchone()
    assert found is not None, f"item {item_id} is gone"
    names = [d.name for d in cur.description or []]
    return dict(zip(names, found, strict=True))


class SpyWriter:
    """The worker's own flush writer, telling `seen` what each flush writes."""

    def __init__(self, inner: Writer, seen: Callable[[list[Outcome]], None]) -> None:
        self.inner, self.seen = inner, seen

    def write(self, conn: Conn, outcomes: list[Outcome], want: int) -> Written:
        self.seen(outcomes)
        return self.inner.write(conn, outcomes, want)


def spying(seen: Callable[[list[Outcome]], None]) -> WorkerParts:
    own = WorkerParts().writer

    def writer(settings: Settings) -> Writer:
        return SpyWriter(own(settings), seen)

    return WorkerParts(writer=writer)


# -- outcomes --------------------------------------------------------------------


def test_mixed_load_ends_with_the_right_status_and_history(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    attempts: dict[int, int] = {}

    def flaky(item: RetryQueueItem) -> None:
        attempts[item.id] = attempts.get(item.id, 0) + 1
        if attempts[item.id] < 3:
            raise RetryableError(ConnectionError("upstream down"), "E_UPSTREAM")

    def broken(item: RetryQueueItem) -> None:
        raise PermanentError("malformed message", "E_MALFORMED")

    def always(item: RetryQueueItem) -> None:
        raise TimeoutError("still timing out")

    handlers = {"ok": lambda item: None, "flaky": flaky, "broken": broken, "always": always}
    ok = [q.add("ok", {"i": i}).id for i in range(20)]
    fl = q.add("flaky", {}, retry_delay=0.05).id
    br = q.add("broken", {}).id
    al = q.add("always", {}, max_retries=2, retry_delay=0.05, backoff_multiplier=1.0).id
    unknown = q.add("mystery.type", {}).id
    events: list[WorkerEvent] = []
    worker = Worker(
        module_dsn,
        handlers,
        worker_count=3,
        on_event=events.append,
        all_event_types=True,  # mystery.type has no handler: a dead letter
        **FAST,
    )

    counts = worker.run(exit_when_drained=True)

    assert all(row(db, i)["status"] == "completed" for i in ok)
    r = row(db, fl)
    assert (r["status"], r["retry_count"], attempts[fl]) == ("completed", 2, 3)
    assert [h["code"] for h in r["error_history"]] == ["E_UPSTREAM", "E_UPSTREAM"]
    assert r["error_history"][0]["error"] == "upstream down"
    r = row(db, br)
    assert (r["status"], r["last_error_code"]) == ("dead_letter", "E_MALFORMED")
    assert [(h["retryable"], h["error"]) for h in r["error_history"]] == [
        (False, "malformed message")
    ]
    r = row(db, al)
    assert (r["status"], r["retry_count"]) == ("dead_letter", 2)
    assert [h["code"] for h in r["error_history"]] == ["TimeoutError"] * 3
    assert all(h["retryable"] for h in r["error_history"])
    r = row(db, unknown)
    assert (r["status"], r["last_error_code"]) == ("dead_letter", "unknown_event_type")
    assert r["error_history"][0]["error"] == "unknown event type: mystery.type"
    assert r["error_history"][0]["worker_id"] == worker.worker_id
    assert (counts.processed, counts.failed, counts.dead_lettered) == (21, 4, 3)
    kinds = [e.kind for e in events]
    assert (kinds.count("completed"), kinds.count("failed"), kinds.count("dead_lettered")) == (
        21,
        4,
        3,
    )


def test_a_returned_exception_or_snooze_is_taken_as_raised(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """Returned, not raised (a slip of `return` for `raise`): never a success."""
    handlers: dict[str, Callable[[RetryQueueItem], object]] = {
        "retry": lambda item: RetryableError("upstream busy", "E_BUSY", delay=3600),
        "permanent": lambda item: PermanentError("malformed", "E_MALFORMED"),
        "snooze": lambda item: Snooze(3600, "not ready"),
        "plain": lambda item: ValueError("bad value"),
    }
    ids = {event_type: q.add(event_type, {}).id for event_type in handlers}
    worker = Worker(module_dsn, handlers, **FAST)

    with pytest.warns(DeprecationWarning, match="still pending"):  # the retry and the snooze
        counts = worker.run(exit_when_idle=True)

    r = row(db, ids["retry"])
    assert (r["status"], r["retry_count"], r["last_error_code"]) == ("pending", 1, "E_BUSY")
    r = row(db, ids["permanent"])
    assert (r["status"], r["last_error_code"]) == ("dead_letter", "E_MALFORMED")
    r = row(db, ids["snooze"])
    assert (r["status"], r["retry_count"]) == ("pending", 0)
    snoozes = db.execute(
        "SELECT (event_metadata ->> 'retryq_snoozes')::int FROM daz_retry_queue WHERE id = %s",
        [ids["snooze"]],
    ).fetchone()
    assert snoozes == (1,)
    r = row(db, ids["plain"])
    assert (r["status"], r["retry_count"], r["last_error_code"]) == ("pending", 1, "ValueError")
    assert (counts.processed, counts.failed, counts.dead_lettered, counts.snoozed) == (0, 2, 1, 1)


def test_a_handler_returning_work_not_done_dead_letters_its_item(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A plain handler that calls an async def and returns its coroutine (the
    CLI picks RetryWorker for it: no handler is an async def) ran nothing:
    its item is a dead letter naming the bug, never completed; the coroutine
    is closed (it never runs). So are a generator and a Future not waited for."""
    ran: list[str] = []

    async def send(item: RetryQueueItem) -> None:
        ran.append("send")
        raise RuntimeError("real work failed")

    def lines(item: RetryQueueItem) -> Iterator[str]:
        ran.append("lines")
        yield "x"

    never: concurrent.futures.Future[None] = concurrent.futures.Future()
    handlers: dict[str, Callable[[RetryQueueItem], object]] = {
        "coro": lambda item: send(item),
        "gen": lambda item: lines(item),
        "future": lambda item: never,
    }
    ids = {event_type: q.add(event_type, {}).id for event_type in handlers}

    counts = RetryWorker(module_dsn, handlers, **FAST).run(exit_when_idle=True)

    for event_type, kind, hint in (
        ("coro", "a coroutine", "run by AsyncRetryWorker"),
        ("gen", "a generator", "run it to its end in the handler"),
        ("future", "a concurrent.futures.Future", "(future.result())"),
    ):
        r = row(db, ids[event_type])
        assert (r["status"], r["last_error_code"]) == ("dead_letter", "retryq.unfinished_result")
        error = r["error_history"][0]["error"]
        assert error.startswith(f"retryq: the handler returned {kind} (") and error.endswith(hint)
    assert ran == []
    assert (counts.processed, counts.dead_lettered) == (0, 3)


@pytest.mark.parametrize("worker", [RetryWorker, AsyncRetryWorker])
def test_a_generator_function_handler_is_refused_by_both_workers(
    worker: Callable[..., object], module_dsn: str
) -> None:
    """Calling it runs none of its body: every item would be taken as handled."""

    def lines(item: RetryQueueItem) -> Iterator[str]:
        yield "x"

    async def alines(item: RetryQueueItem) -> AsyncIterator[str]:
        yield "x"

    class Lines:
        def __call__(self, item: RetryQueueItem) -> Iterator[str]:
            yield "x"

    for handler in (lines, alines, Lines(), functools.partial(lines)):
        with pytest.raises(TypeError, match="'e' is a generator function"):
            worker(module_dsn, {"e": handler})


def test_worker_metrics_count_outcomes_by_event_type(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = {
        "ok": sample("retryq_worker_items_processed_total", event_type="m.ok"),
        "failed": sample("retryq_worker_items_failed_total", event_type="m.flaky"),
        "dead": sample("retryq_worker_items_dead_lettered_total", event_type="m.unknown"),
        "handled": sample("retryq_worker_handler_duration_seconds_count", event_type="m.ok"),
        "acquired": sample("retryq_worker_acquire_duration_seconds_count"),
    }
    q.add_many([{"event_type": "m.ok", "data": i} for i in range(3)])
    q.add("m.flaky", {}, retry_delay=0.05)
    q.add("m.unknown", {})

    def flaky(item: RetryQueueItem) -> None:
        if item.retry_count == 0:
            raise RetryableError("once")

    Worker(
        module_dsn,
        {"m.ok": lambda item: None, "m.flaky": flaky},
        all_event_types=True,
        **FAST,
    ).run(exit_when_drained=True)
    assert sample("retryq_worker_items_processed_total", event_type="m.ok") == before["ok"] + 3
    assert sample("retryq_worker_items_failed_total", event_type="m.flaky") == before["failed"] + 1
    dead = sample("retryq_worker_items_dead_lettered_total", event_type="m.unknown")
    assert dead == before["dead"] + 1
    handled = sample("retryq_worker_handler_duration_seconds_count", event_type="m.ok")
    assert handled == before["handled"] + 3
    assert sample("retryq_worker_acquire_duration_seconds_count") > before["acquired"]


def test_successes_are_acknowledged_in_batches(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    calls: list[int] = []

    def seen(outcomes: list[Outcome]) -> None:
        if any(o.ok for o in outcomes):
            calls.append(sum(o.ok for o in outcomes))

    q.add_many([{"event_type": "e", "data": i} for i in range(60)])
    counts = Worker(
        module_dsn,
        {"e": lambda item: None},
        worker_count=4,
        batch_size=20,
        parts=spying(seen),
        **FAST,
    ).run(exit_when_drained=True)
    assert counts.processed == 60 and statuses(db) == {"completed": 60}
    assert sum(calls) == 60
    assert len(calls) <= 12, calls  # about one call per half batch, not one per item


def test_psycopg_errors_are_classified_by_sqlstate(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS target (k int PRIMARY KEY)")
    db.execute("TRUNCATE target")
    db.execute("INSERT INTO target VALUES (1)")

    def insert_dup(item: RetryQueueItem) -> None:
        with psycopg.connect(module_dsn) as c:
            c.execute("INSERT INTO target VALUES (1)")

    def deadlock_once(item: RetryQueueItem) -> None:
        if item.retry_count == 0:
            with psycopg.connect(module_dsn) as c:
                c.execute("DO $$ BEGIN RAISE EXCEPTION 'dl' USING ERRCODE = '40P01'; END $$")

    dup = q.add("dup", {}).id
    dl = q.add("dl", {}, retry_delay=0.05).id
    Worker(module_dsn, {"dup": insert_dup, "dl": deadlock_once}, **FAST).run(exit_when_drained=True)
    r = row(db, dup)
    assert (r["status"], r["last_error_code"]) == ("dead_letter", "23505")
    r = row(db, dl)
    assert (r["status"], r["retry_count"], r["last_error_code"]) == ("completed", 1, "40P01")


def test_registry_and_worker_id(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    registry = HandlerRegistry()
    seen: list[Any] = []

    @registry.handler("chat")
    def chat(item: RetryQueueItem) -> None:
        seen.append(item.event_data)

    assert chat.__name__ == "chat"  # the decorator returns the function
    with pytest.raises(ValueError, match="already registered"):
        registry.register("chat", chat)
    with pytest.raises(TypeError, match="not callable"):
        registry.register("other", "nope")  # type: ignore[arg-type]
    assert dict(registry) == {"chat": chat} and len(registry) == 1
    q.add("chat", {"m": 1})
    worker = Worker(module_dsn, registry, name="sql-plugin", **FAST)
    assert worker.worker_id == f"sql-plugin-{socket.gethostname()}-{os.getpid()}"
    assert default_worker_id() == f"retryq-{socket.gethostname()}-{os.getpid()}"
    assert worker.run(exit_when_drained=True).processed == 1
    assert seen == [{"m": 1}]


@pytest.mark.parametrize("lanes", [1, 3])
def test_lanes_share_the_work_and_write_each_outcome_once(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    caplog: pytest.LogCaptureFixture,
    lanes: int,
) -> None:
    """Several transactions in flight: every item is handled and acknowledged
    exactly once, and the lanes never hold more than their capacity."""
    written: list[int] = []

    def seen(outcomes: list[Outcome]) -> None:
        written.extend(o.item.id for o in outcomes if o.ok)

    ids = [e.id for e in q.add_many([{"event_type": "e", "data": i} for i in range(400)])]
    handled: list[int] = []
    most = [0]
    worker: Any

    def handle(item: RetryQueueItem) -> None:
        handled.append(item.id)
        most[0] = max(most[0], worker.held)

    worker = Worker(
        module_dsn,
        {"e": handle},
        worker_count=4,
        batch_size=5,
        lanes=lanes,
        parts=spying(seen),
        **FAST,
    )
    with caplog.at_level("WARNING", logger="retryq.worker"):
        counts = worker.run(exit_when_drained=True)
    assert sorted(handled) == sorted(ids)
    assert sorted(written) == sorted(ids)  # none twice, none lost
    assert (counts.processed, counts.lease_lost) == (400, 0)
    assert statuses(db) == {"completed": 400}
    assert most[0] <= worker.settings.capacity == 5 * (2 * lanes - 1) + 4
    assert not [r for r in caplog.records if "no longer leased" in r.getMessage()]


def test_lanes_must_be_sensible(Worker: WorkerType, module_dsn: str) -> None:
    assert Worker(module_dsn, NOOP, worker_count=1).lanes == 1
    assert Worker(module_dsn, NOOP, worker_count=2).lanes == 2
    assert Worker(module_dsn, NOOP, worker_count=8).lanes == 2
    with pytest.raises(ValueError, match="lanes"):
        Worker(module_dsn, NOOP, lanes=0)


def test_a_pool_of_yours_gets_its_connections_back_as_they_were(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The worker writes each flush in autocommit (one implicit transaction)
    and hands the connection back unchanged; lanes leave one connection of a
    small pool free."""
    from psycopg_pool import ConnectionPool

    q.add_many([{"event_type": "e", "data": i} for i in range(30)])
    q.add("bad", {"n": 1}, max_retries=0)
    with ConnectionPool(module_dsn, min_size=1, max_size=2, open=True) as pool:
        # "bad" has no handler: a dead letter, written by the same flush
        worker = Worker(
            pool, {"e": lambda item: None}, worker_count=4, all_event_types=True, **FAST
        )
        assert worker.lanes == 1
        counts = worker.run(exit_when_drained=True)
        assert (counts.processed, counts.dead_lettered) == (30, 1)
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert statuses(db) == {"completed": 30, "dead_letter": 1}


def test_a_config_with_retry_disabled_runs_nothing(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    q.add("e", {"n": 1})
    worker = Worker(module_dsn, {"e": lambda item: None}, config=RetryConfig(enabled=False))
    with caplog.at_level("WARNING", logger="retryq.worker"):
        assert worker.run(exit_when_drained=True).processed == 0
    assert statuses(db) == {"pending": 1}
    assert any("disabled" in r.getMessage() for r in caplog.records)


def test_a_worker_id_with_quotes_and_backslashes_is_written_as_given(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The flush puts the worker id into its query text: quoted, never spliced."""
    odd = 'o\'brien \\ "x"; DROP TABLE daz_retry_queue; --'
    seen: list[str | None] = []
    data: list[Any] = []

    def record(item: RetryQueueItem) -> None:
        got = db.execute("SELECT locked_by FROM daz_retry_queue WHERE id = %s", [item.id])
        row = got.fetchone()
        seen.append(None if row is None else row[0])
        data.append(item.event_data)

    q.add_many([{"event_type": "e", "data": {"n": i, "s": "caf\u00e9 \u2603"}} for i in range(3)])
    counts = Worker(module_dsn, {"e": record}, worker_id=odd, **FAST).run(exit_when_drained=True)
    assert counts.processed == 3 and seen == [odd] * 3
    assert sorted(data, key=lambda d: d["n"]) == [
        {"n": i, "s": "caf\u00e9 \u2603"} for i in range(3)
    ]
    assert statuses(db) == {"completed": 3}


def test_settings_come_from_config_and_keywords_win(Worker: WorkerType, module_dsn: str) -> None:
    cfg = RetryConfig(worker_count=4, batch_size=7, poll_interval=2, lock_timeout=60)
    w = Worker(module_dsn, NOOP, config=cfg, batch_size=3)
    assert (w.worker_count, w.batch_size, w.poll_interval, w.lock_timeout) == (4, 3, 2, 60)
    with pytest.raises(ValueError, match="batch_size"):
        Worker(module_dsn, NOOP, batch_size=0)


def test_a_worker_runs_once(Worker: WorkerType, module_dsn: str, db: Conn) -> None:
    worker = Worker(module_dsn, NOOP, **FAST)
    assert worker.run(exit_when_drained=True).processed == 0
    with pytest.raises(RuntimeError, match="runs once"):
        worker.run(exit_when_drained=True)


def test_a_missing_schema_stops_run_with_the_error(Worker: WorkerType, new_database: Any) -> None:
    bare = new_database()
    worker = Worker(bare, NOOP, **FAST)
    with pytest.raises(pgerr.UndefinedFunction):
        worker.run(exit_when_drained=True)


# -- waking up ---------------------------------------------------------------------


def test_notify_wakes_an_idle_worker_long_before_the_poll(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    done = threading.Event()
    went_idle = threading.Event()

    class Watched(RetryQueue):
        def due(self, **routing: Any) -> _sql.Due:
            went_idle.set()  # the worker asks this just before it goes to sleep
            return super().due(**routing)

    worker = Worker(
        module_dsn,
        {"e": lambda item: done.set()},
        poll_interval=60,
        cleanup_interval=0,
        parts=WorkerParts(queue=lambda pool, schema: Watched(pool, schema=schema)),
    )
    thread = worker.start()
    try:
        # idle after an empty acquire, and listening: only a NOTIFY can wake it
        # now (the deadlines are bounds for a loaded machine, far below the poll)
        assert went_idle.wait(20)
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND query LIKE 'LISTEN %%'"
                ).fetchone()
                == (1,)
            ),
            20,
            "the listener",
        )
        q.add("e", {})
        assert done.wait(20), "a 60 s poll interval, so only NOTIFY could have woken it"
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_a_notify_read_with_the_listeners_probe_is_not_lost(module_dsn: str, db: Conn) -> None:
    """A NOTIFY that reaches the listener in one read with its probe (an item
    added just as the worker starts listening: the flaky failure of the test
    above under load) wakes the lanes. psycopg drops the rest of a batch of
    notifications when the loop reading them stops at the probe, and the
    item waited for the poll. Scripted: a pg_notify ahead of pg_catalog's on
    the listener's search_path sends a second NOTIFY in the probe's own
    transaction, so both come in one read, the probe first."""
    db.execute(
        "CREATE TABLE probe_sent (n int);"
        "CREATE FUNCTION public.pg_notify(channel text, payload text) RETURNS void"
        " LANGUAGE sql AS $$ INSERT INTO probe_sent VALUES (1);"
        " SELECT pg_catalog.pg_notify(channel, payload);"
        " SELECT pg_catalog.pg_notify(channel, 'after the probe') $$"
    )
    stopping, listening, woken = threading.Event(), threading.Event(), threading.Event()

    def on_notify() -> None:
        # the first call is the listener's own, once listening (see Listener)
        (woken if listening.is_set() else listening).set()

    listener = Listener(
        make_conninfo(module_dsn, options="-c search_path=public,pg_catalog"),
        worker_id="probe-test",
        schema=None,
        connect_timeout=5,
        max_backoff=0.2,
        stopping=stopping,
        on_notify=on_notify,
    )
    listener.start()
    try:
        assert woken.wait(10), "the NOTIFY read with the probe was dropped"
        assert db.execute("SELECT count(*) FROM probe_sent").fetchone() == (1,)
    finally:
        stopping.set()
        listener.join(time.monotonic() + 5)
        db.execute("DROP FUNCTION public.pg_notify(text, text); DROP TABLE probe_sent")


def test_worker_sleeps_only_until_the_next_due_retry(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    handled, started = threading.Event(), threading.Event()

    def queue(pool: Any, schema: str | None) -> RetryQueue:
        started.set()  # the pool is open: the worker starts its parts
        return RetryQueue(pool, schema=schema)

    worker = Worker(
        module_dsn,
        {"e": lambda item: handled.set()},
        poll_interval=60,
        cleanup_interval=0,
        parts=WorkerParts(queue=queue),
    )
    thread = worker.start()
    try:
        assert started.wait(5), "worker started"
        started = time.monotonic()
        q.add("e", {}, delay=0.5)  # its NOTIFY wakes the worker: not due yet
        assert handled.wait(5), "the worker should wake when the item becomes due"
        assert time.monotonic() - started >= 0.45
    finally:
        worker.stop()
        thread.join(10)


# -- stopping ---------------------------------------------------------------------


def test_stop_lets_in_flight_finish_and_releases_the_rest(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    started, gate = threading.Event(), threading.Event()

    def slow(item: RetryQueueItem) -> None:
        started.set()
        assert gate.wait(10)

    ids = [a.id for a in q.add_many([{"event_type": "e", "data": i} for i in range(3)])]
    worker = Worker(module_dsn, {"e": slow}, worker_count=1, batch_size=3, grace_period=10, **FAST)
    thread = worker.start()
    try:
        assert started.wait(5)
        worker.stop()
        # the two not started go back at once, while the first still runs
        wait_until(lambda: statuses(db) == {"processing": 1, "pending": 2}, what="release")
        rows = [row(db, i) for i in ids]
        assert sorted(r["locked_by"] or "-" for r in rows) == ["-", "-", worker.worker_id]
        assert all(r["retry_count"] == 0 for r in rows)
    finally:
        gate.set()
        thread.join(10)
    assert not thread.is_alive()
    assert statuses(db) == {"completed": 1, "pending": 2}
    assert (worker.counts.processed, worker.counts.released) == (1, 2)


def test_handlers_past_the_grace_period_are_released(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    started, gate = threading.Event(), threading.Event()

    def stuck(item: RetryQueueItem) -> None:
        started.set()
        gate.wait(10)

    item_id = q.add("e", {}).id
    worker = Worker(module_dsn, {"e": stuck}, worker_count=1, grace_period=0.2, **FAST)
    thread = worker.start()
    try:
        assert started.wait(5)
        worker.stop()
        thread.join(5)
        assert not thread.is_alive()
        r = row(db, item_id)
        assert (r["status"], r["locked_by"], r["retry_count"]) == ("pending", None, 0)
        assert worker.counts.released == 1
    finally:
        gate.set()


def test_sigterm_stops_run_gracefully(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    def terminate_self(item: RetryQueueItem) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        # finish only once the main thread has handled the signal
        wait_until(lambda: worker.stopping, what="the signal handler")

    before = signal.getsignal(signal.SIGTERM)
    q.add_many([{"event_type": "e", "data": i} for i in range(3)])
    worker = Worker(module_dsn, {"e": terminate_self}, worker_count=1, batch_size=3, **FAST)
    counts = worker.run(install_signal_handlers=True)
    assert (counts.processed, counts.released) == (1, 2)
    assert statuses(db) == {"completed": 1, "pending": 2}
    assert signal.getsignal(signal.SIGTERM) is before


# -- leases -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_slow_handler_keeps_its_lease(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """lock_timeout 2 s; the handler runs until the lease has been extended and
    the first expiry has passed, and meanwhile no one else can take the item."""
    item_id = q.add("e", {}).id
    other = RetryQueue(db)

    def slow(item: RetryQueueItem) -> None:
        first_expiry = item.locked_until

        def extended_and_past_first_expiry() -> bool:
            now, until = db.execute(
                "SELECT now(), locked_until FROM daz_retry_queue WHERE id = %s", [item.id]
            ).fetchone() or (None, None)
            return until is not None and until > first_expiry and now > first_expiry

        wait_until(extended_and_past_first_expiry, timeout=4.5, what="lease extension")
        assert other.acquire("thief", 10, 2) == []

    worker = Worker(
        module_dsn,
        {"e": slow},
        worker_count=1,
        poll_interval=0.5,
        lock_timeout=2,
        cleanup_interval=0,
    )
    counts = worker.run(exit_when_drained=True)
    r = row(db, item_id)
    assert (r["status"], r["retry_count"], r["error_history"]) == ("completed", 0, [])
    assert counts.processed == 1 and counts.lease_lost == 0


def test_a_handler_past_handler_timeout_loses_its_lease(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    item_id = q.add("e", {}).id
    gate, started = threading.Event(), threading.Event()

    def hang(item: RetryQueueItem) -> None:
        started.set()
        gate.wait(10)

    worker = Worker(
        module_dsn,
        {"e": hang},
        worker_count=1,
        lock_timeout=1,
        handler_timeout=0.5,
        poll_interval=0.5,
        cleanup_interval=0,
        grace_period=0,
    )
    thread = worker.start()
    thief = RetryQueue(db)
    taken: list[RetryQueueItem] = []
    try:
        assert started.wait(5)

        def stolen() -> bool:
            taken.extend(thief.acquire("thief", 1, 30))
            return bool(taken)

        wait_until(stolen, 5, what="the lease to run out")
    finally:
        worker.stop(force=True)
        gate.set()
        thread.join(5)
    assert [(i.id, i.retry_count, i.last_error_code) for i in taken] == [
        (item_id, 1, "lease_expired")
    ]


def test_items_waiting_behind_stuck_handlers_go_to_another_worker(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """Red team finding 4: a worker whose every handler ran past
    handler_timeout kept renewing the leases of the items waiting behind
    them, so a healthy worker could not run them. They are released (no
    attempt spent) and the stuck worker leases no more while it is stuck."""
    gate, started = threading.Event(), threading.Event()
    ran: list[tuple[str, int]] = []

    def hang(item: RetryQueueItem) -> None:
        started.set()
        gate.wait(30)

    slow = q.add("slow", {}, priority=9).id  # leased first, run first
    waiting = [q.add("ok", {"i": i}).id for i in range(6)]
    stuck = Worker(
        module_dsn,
        {"slow": hang, "ok": lambda item: ran.append(("stuck", item.id))},
        worker_count=1,
        batch_size=10,
        lock_timeout=3,
        handler_timeout=1,
        poll_interval=0.2,
        cleanup_interval=0,
        grace_period=0,
    )
    healthy = Worker(
        module_dsn,
        {"ok": lambda item: ran.append(("healthy", item.id))},
        worker_count=2,
        **FAST,
    )
    stuck_thread = stuck.start()
    healthy_thread: threading.Thread | None = None
    try:
        assert started.wait(10)
        wait_until(lambda: stuck.held == 7, 10, what="the stuck worker to hold every item")
        healthy_thread = healthy.start()
        wait_until(
            lambda: all(row(db, i)["status"] == "completed" for i in waiting),
            20,
            what="the healthy worker to run the waiting items",
        )
        late = q.add("ok", {"i": 6}).id  # while stuck, the stuck worker leases none
        wait_until(lambda: row(db, late)["status"] == "completed", 10, what="the late item")
    finally:
        stuck.stop(force=True)
        healthy.stop(force=True)
        gate.set()
        stuck_thread.join(10)
        if healthy_thread is not None:
            healthy_thread.join(10)
    assert sorted(ran) == [("healthy", i) for i in sorted([*waiting, late])]
    # the waiting six (and the slow one, when the forced stop finds its
    # handler still running: timing); not the late one, never leased
    assert stuck.counts.released in (6, 7)
    spent = db.execute(
        "SELECT count(*) FROM daz_retry_queue WHERE id = ANY(%s) AND retry_count > 0",
        [waiting],
    ).fetchone()
    assert spent == (0,)  # released, not left to run out (a lease_expired attempt)
    # released at the stop, left to its lease, or (the gate opened as the
    # forced stop ran) completed by its handler's late return: never failed
    assert row(db, slow)["status"] in ("pending", "processing", "completed")


def test_a_success_whose_lease_was_taken_over_counts_as_lease_lost(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The handler succeeds, but meanwhile its lease ran out and another worker
    took the item and completed it: this worker's completion is refused, and it
    reports lease_lost, not completed, in its counts, its events and its
    metrics (the item is completed, but not by it)."""
    kind = f"lost.{os.getpid()}"
    lost_id = q.add(kind, {}).id
    kept_id = q.add(kind, {}).id
    events: list[WorkerEvent] = []

    def handle(item: RetryQueueItem) -> None:
        if item.id != lost_id:
            return
        # the lease runs out and a thief takes the item, in one transaction so
        # that the worker's lease extension cannot slip in between; the thief
        # completes it in a later transaction
        with psycopg.connect(module_dsn) as conn:
            thief = RetryQueue(conn)
            with conn.transaction():
                conn.execute(
                    "UPDATE daz_retry_queue SET locked_until = now() - interval '1 second'"
                    " WHERE id = %s",
                    (item.id,),
                )
                assert [i.id for i in thief.acquire("thief", 1, 30)] == [item.id]
            assert thief.complete(item.id, "thief")

    def processed() -> float:
        value = REGISTRY.get_sample_value(
            "retryq_worker_items_processed_total", {"event_type": kind}
        )
        return value or 0.0

    before = processed()
    counts = Worker(module_dsn, {kind: handle}, worker_count=1, on_event=events.append, **FAST).run(
        exit_when_drained=True
    )
    assert (counts.processed, counts.lease_lost) == (1, 1)
    assert sorted((e.kind, e.item.id) for e in events) == sorted(
        [("completed", kept_id), ("lease_lost", lost_id)]
    )
    assert processed() - before == 1
    assert (row(db, lost_id)["status"], row(db, kept_id)["status"]) == ("completed", "completed")


def test_a_handler_raising_systemexit_does_not_kill_the_worker(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    def bail(item: RetryQueueItem) -> None:
        if item.retry_count == 0:
            raise SystemExit(3)

    item_id = q.add("e", {}, retry_delay=0.05).id
    counts = Worker(module_dsn, {"e": bail}, worker_count=1, **FAST).run(exit_when_drained=True)
    r = row(db, item_id)
    assert (r["status"], r["last_error_code"]) == ("completed", "SystemExit")
    assert (counts.failed, counts.processed) == (1, 1)


# -- cleanup ----------------------------------------------------------------------


def test_scheduled_cleanup_runs_one_worker_at_a_time(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    long_ago = datetime.now(timezone.utc) - timedelta(days=30)
    old = q.add("e", {}, now=long_ago).id
    q.acquire("w", now=long_ago)
    q.complete(old, "w", now=long_ago)
    settings = {**FAST, "cleanup_interval": 3600, "retention_days": 7}
    with psycopg.connect(module_dsn) as holder:
        with holder.transaction():
            holder.execute(_sql.compose(_sql.TRY_CLEANUP_LOCK, None))
            Worker(module_dsn, NOOP, **settings).run(exit_when_drained=True)
            assert row(db, old)["status"] == "completed"  # someone else held the lock
        Worker(module_dsn, NOOP, **settings).run(exit_when_drained=True)
    gone = db.execute("SELECT count(*) FROM daz_retry_queue WHERE id = %s", [old]).fetchone()
    assert gone == (0,)


# -- reconnect --------------------------------------------------------------------


@pytest.mark.slow
def test_worker_survives_a_database_outage_and_loses_nothing(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    caplog: pytest.LogCaptureFixture,
    pg_server: Server,
) -> None:
    """Backends terminated mid-run and new connections refused for a while
    (a restart, as the worker sees it): it backs off, reconnects, drains."""
    gate = threading.Event()
    running = threading.Semaphore(0)
    handled: list[int] = []
    lock = threading.Lock()

    def work(item: RetryQueueItem) -> None:
        running.release()
        assert gate.wait(10)
        with lock:
            handled.append(item.id)

    ids = [a.id for a in q.add_many([{"event_type": "e", "data": i} for i in range(30)])]
    worker = Worker(
        module_dsn,
        {"e": work},
        worker_count=2,
        batch_size=5,
        poll_interval=0.5,
        lock_timeout=3,
        cleanup_interval=0,
        max_backoff=0.2,
        connect_timeout=0.5,
    )
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(worker.run(exit_when_drained=True)), daemon=True
    )
    admin = psycopg.connect(pg_server.dsn("postgres"), autocommit=True)
    dbname = sql.Identifier(db.info.dbname)
    thread.start()
    try:
        assert running.acquire(timeout=5) and running.acquire(timeout=5)
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(dbname))
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> %s",
            [db.info.dbname, db.info.backend_pid],
        ).fetchone()
        assert killed is not None and killed[0] >= 2  # the pool and the listener
        gate.set()  # outcomes now wait for the database
        wait_until(
            lambda: any("database unavailable" in r.getMessage() for r in caplog.records),
            what="the worker to notice the outage",
        )
        assert thread.is_alive()
    finally:
        gate.set()
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(dbname))
        admin.close()
        thread.join(15)
        worker.stop(force=True)
    assert not thread.is_alive(), "the worker should drain the queue after reconnecting"
    assert statuses(db) == {"completed": 30}
    assert set(handled) == set(ids)
    assert result and result[0].processed >= 30  # a lost ack is written again


# -- the README's example ------------------------------------------------------------


def readme_python_blocks() -> list[str]:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_python_example_runs_as_written(dsn: str) -> None:
    blocks = readme_python_blocks()
    assert len(blocks) >= 2
    script = "\n".join(blocks)
    env = {**os.environ, "RETRYQ_DATABASE_URL": dsn}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    section = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    claimed = re.search(r"It prints `(WorkerCounts\([^`]*\))`", section)
    assert claimed is not None
    assert done.stdout.splitlines()[0] == claimed.group(1)
    assert "completed cytube.event.chatMsg 1" in done.stdout
    assert "dead_letter email.send 1" in done.stdout
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT count(*) FROM chat_log").fetchone()
    assert rows == (1,)


# -- a worker process killed mid-run ---------------------------------------------------

VICTIM = """
import sys, time
from retryq_py import RetryWorker

def hang(item):
    sys.stdout.write(f"{item.id}\\n")  # one write: print() from two threads can interleave
    sys.stdout.flush()
    time.sleep(60)  # killed before it returns

RetryWorker(sys.argv[1], {"e": hang}, worker_count=2, batch_size=2, lock_timeout=1,
            poll_interval=0.2, cleanup_interval=0).run()
"""


@pytest.mark.slow
def test_items_of_a_killed_worker_are_taken_over(module_dsn: str, db: Conn, q: RetryQueue) -> None:
    ids = [a.id for a in q.add_many([{"event_type": "e", "data": i} for i in range(6)])]
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, module_dsn], stdout=subprocess.PIPE, text=True
    )
    try:
        assert victim.stdout is not None
        started = {int(victim.stdout.readline()), int(victim.stdout.readline())}
    finally:
        victim.kill()
        victim.wait(10)
    assert started <= set(ids)
    counts = RetryWorker(module_dsn, {"e": lambda item: None}, **FAST).run(exit_when_drained=True)
    assert statuses(db) == {"completed": 6}
    assert counts.processed == 6
    for item_id in started:
        history = row(db, item_id)["error_history"]
        assert [h["code"] for h in history] == ["lease_expired"]


def test_an_unreachable_database_fails_the_first_connection_fast(
    Worker: WorkerType,
) -> None:
    """As the CLI does: a worker that cannot reach its database at start says
    so within connect_timeout instead of retrying in silence."""
    worker = Worker(
        "host=127.0.0.1 port=1 user=postgres dbname=nowhere",
        {"e": lambda item: None},
        connect_timeout=1,
    )
    failed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(install_signal_handlers=False)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(15)
    assert not thread.is_alive(), "the worker is still retrying"
    worker.stop(force=True)
    assert len(failed) == 1 and isinstance(failed[0], psycopg.OperationalError), failed
    assert "cannot reach the database" in str(failed[0])
