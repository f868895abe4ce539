"""The worker keeps working (issue 13): one bad value, a server-side timeout
or a lost reply never stops it, and never costs the other items in its batch.

Each test stands for a kind of fault; every one failed on the worker before
its fix (see the commit messages). They run the worker in a thread with a
deadline (`run_until_idle`), so a worker that hangs fails the test instead
of the suite.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from retryq_py import RetryableError, RetryQueue, RetryQueueItem, Snooze, WorkerCounts
from retryq_py._sql.timestamps import INFINITY, NEG_INFINITY
from retryq_py.worker import Settings, WorkerParts
from retryq_py.worker.control import Stop, Wake
from retryq_py.worker.events import Outcome
from retryq_py.worker.flush import Flusher, FlushWriter, Writer, Written
from retryq_py.worker.heartbeat import Heartbeat
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.shutdown import Shutdown
from tests.helpers import statuses, wait_until
from tests.python import netproxy
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.2, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        _empty(conn)
        yield conn


def _empty(conn: Conn) -> None:
    """TRUNCATE, past what an earlier test's cut connections leave behind: a
    server backend still ending its statement (a deadlock with the TRUNCATE's
    locks, seen 3 times in CI-like runs), or one whose client is gone and
    whose locks wait for the server to notice (ended here)."""
    conn.execute("SET lock_timeout = '10s'")
    for attempt in range(5):
        try:
            conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
            break
        except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
            if attempt == 4:
                raise
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state = 'idle in transaction'"
            )
            time.sleep(0.5 * (attempt + 1))
    conn.execute("RESET lock_timeout")


@pytest.fixture
def q(db: Conn) -> RetryQueue:
    return RetryQueue(db)


def run_until_idle(worker: Any, timeout: float = 20.0) -> WorkerCounts:
    """worker.run(exit_when_drained=True) in a thread; fails if it raises or
    has not returned by `timeout` (then it is stopped)."""
    result: list[WorkerCounts] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(worker.run(exit_when_drained=True, install_signal_handlers=False))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        worker.stop(force=True)
        thread.join(10)
        raise AssertionError(f"the worker did not finish within {timeout}s (held {worker.held})")
    if errors:
        raise AssertionError(f"run() ended with {errors[0]!r}") from errors[0]
    return result[0]


def item(db: Conn, item_id: int) -> dict[str, Any]:
    cur = db.execute(
        "SELECT status, retry_count, last_error_code, error_message, error_history"
        " FROM daz_retry_queue WHERE id = %s",
        [item_id],
    )
    found = cur.fetchone()
    assert found is not None
    return dict(zip([d.name for d in cur.description or []], found, strict=True))


def guide_insert(db: Conn, event_data_sql: str, **columns: str) -> int:
    """The integration guide's INSERT as a Go producer sends it: values the
    server accepts, written as SQL text."""
    names = ", ".join(["event_type", "event_data", *columns])
    values = ", ".join(["'e'", event_data_sql, *columns.values()])
    row = db.execute(
        f"INSERT INTO daz_retry_queue ({names}) VALUES ({values}) RETURNING id"  # type: ignore[arg-type]
    ).fetchone()
    assert row is not None
    return int(row[0])


# -- 1. one bad value ---------------------------------------------------------------


def test_a_nul_in_a_handlers_error_code_fails_that_item_alone(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The issue's example: the flush raised before writing anything."""
    bad = q.add("bad", {}, max_retries=0).id
    good = [q.add("e", {"i": i}).id for i in range(3)]

    def refuse(it: RetryQueueItem) -> None:
        raise RetryableError("upstream\x00 refused", code="E\x00042")

    counts = run_until_idle(
        Worker(module_dsn, {"bad": refuse, "e": lambda it: None}, batch_size=4, **FAST)
    )
    assert (counts.processed, counts.dead_lettered) == (3, 1)
    assert all(item(db, i)["status"] == "completed" for i in good)
    r = item(db, bad)
    assert r["status"] == "dead_letter"
    assert r["last_error_code"] == "E\\0042"
    assert r["error_message"] == "upstream\\0 refused"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class CodeIsNotText(Exception):
    code = 42  # a handler's own exception with a non-text code


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda: Unprintable("x"), "Unprintable", "Unprintable"),
        (
            lambda: RetryableError("bad \udcff surrogate", code="S\udcff"),
            "S\\udcff",
            "bad \\udcff surrogate",
        ),
        (lambda: RetryableError("fine", code=42), "42", "fine"),
        (lambda: RetryableError("x" * 100_000, code="C" * 10_000), "C" * 200, "x" * 1000),
        (lambda: RetryableError(Unprintable()), "RetryableError", "Unprintable"),
        (lambda: CodeIsNotText("own code"), "CodeIsNotText", "own code"),
    ],
    ids=["str-raises", "surrogates", "int-code", "huge", "cause-str-raises", "own-int-code"],
)
def test_whatever_a_handler_raises_is_stored_and_the_batch_goes_on(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    make: Callable[[], BaseException],
    code: str,
    message: str,
) -> None:
    bad = q.add("bad", {}, max_retries=0).id
    good = [q.add("e", {"i": i}).id for i in range(3)]

    def raise_it(it: RetryQueueItem) -> None:
        raise make()

    counts = run_until_idle(
        Worker(module_dsn, {"bad": raise_it, "e": lambda it: None}, batch_size=4, **FAST)
    )
    assert (counts.processed, counts.dead_lettered) == (3, 1)
    assert all(item(db, i)["status"] == "completed" for i in good)
    r = item(db, bad)
    assert r["status"] == "dead_letter"
    assert r["last_error_code"].startswith(code[:200])
    assert r["error_message"].startswith(message[:1000])
    assert len(r["error_message"]) <= 4000 and len(r["last_error_code"]) <= 200


def test_an_outcome_the_server_refuses_fails_alone_with_a_clear_code(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """fail_retry_item raising for one outcome (here: the item's row refuses
    the update, as any server-side refusal of a value would) must not undo
    the batch's other outcomes."""
    bad = q.add("bad", {}, max_retries=3).id
    good = [q.add("e", {"i": i}).id for i in range(3)]
    db.execute(
        "CREATE OR REPLACE FUNCTION refuse_code() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF NEW.last_error_code = 'REFUSED' THEN"
        "  RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$"
    )
    db.execute(
        "CREATE TRIGGER refuse_code BEFORE UPDATE ON daz_retry_queue"
        " FOR EACH ROW EXECUTE FUNCTION refuse_code()"
    )
    try:

        def refuse(it: RetryQueueItem) -> None:
            raise RetryableError("nope", code="REFUSED")

        counts = run_until_idle(
            Worker(module_dsn, {"bad": refuse, "e": lambda it: None}, batch_size=4, **FAST)
        )
    finally:
        db.execute("DROP TRIGGER refuse_code ON daz_retry_queue")
    assert (counts.processed, counts.dead_lettered) == (3, 1)
    assert all(item(db, i)["status"] == "completed" for i in good)
    r = item(db, bad)
    assert (r["status"], r["last_error_code"]) == ("dead_letter", "retryq.unstorable_outcome")
    assert "REFUSED" in r["error_message"] and "22023" in r["error_message"]


@pytest.mark.parametrize(
    ("columns", "field"),
    [
        ({}, "event_data"),
        ({"event_metadata": """('{"n": ' || repeat('9', 5000) || '}')::jsonb"""}, "event_metadata"),
        ({"tags": "'{}'"}, "event_data"),
    ],
    ids=["huge-int", "metadata-huge-int", "deep"],
)
def test_a_row_python_cannot_decode_fails_alone_and_the_rest_run(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    columns: dict[str, str],
    field: str,
) -> None:
    """PostgreSQL accepts these from any producer; psycopg or json cannot
    decode them. Before: the leases were committed, decoding raised, run()
    ended, and the three good items became dead letters after takeovers."""
    if not columns:
        data = """('{"amount": ' || repeat('9', 5000) || '}')::jsonb"""
    elif "tags" in columns:  # deeper than Python's recursion limit
        data = "(repeat('[', 5000) || repeat(']', 5000))::jsonb"
    else:
        data = "'{}'"
    bad = guide_insert(db, data, **columns)
    good = [q.add("e", {"i": i}).id for i in range(3)]
    ran: list[int] = []
    events: list[Any] = []
    counts = run_until_idle(
        Worker(
            module_dsn,
            {"e": lambda it: ran.append(it.id)},
            batch_size=4,
            on_event=events.append,
            **FAST,
        )
    )
    assert sorted(ran) == sorted(good)
    assert (counts.processed, counts.dead_lettered) == (3, 1)
    r = item(db, bad)
    assert (r["status"], r["last_error_code"]) == ("dead_letter", "retryq.undecodable_item")
    assert field in r["error_message"]
    assert statuses(db) == {"completed": 3, "dead_letter": 1}
    dead = [e for e in events if e.kind == "dead_lettered"]
    assert [e.item.id for e in dead] == [bad]


@pytest.mark.parametrize(
    ("columns", "field", "moment"),
    [
        ({"next_retry_at": "'-infinity'"}, "next_retry_at", NEG_INFINITY),
        ({"created_at": "'infinity'"}, "created_at", INFINITY),
    ],
    ids=["next-retry-minus-infinity", "created-infinity"],
)
def test_a_row_with_an_infinite_time_runs_as_acquire_reads_it(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    columns: dict[str, str],
    field: str,
    moment: datetime,
) -> None:
    """RetryQueue.acquire reads 'infinity' and '-infinity' as the furthest
    moments Python has; the worker reads them the same and runs the item
    (it failed it as retryq.undecodable_item, a dead letter that never ran)."""
    bad = guide_insert(db, "'{}'", **columns)
    good = [q.add("e", {"i": i}).id for i in range(3)]
    with psycopg.connect(module_dsn) as conn:
        acquired = {i.id: i for i in RetryQueue(conn).acquire("peek", 10)}
        conn.rollback()
    assert getattr(acquired[bad], field) == moment
    seen: dict[int, Any] = {}
    counts = run_until_idle(
        Worker(
            module_dsn,
            {"e": lambda it: seen.__setitem__(it.id, getattr(it, field))},
            batch_size=4,
            **FAST,
        )
    )
    assert sorted(seen) == sorted([bad, *good])
    assert seen[bad] == moment
    assert (counts.processed, counts.dead_lettered) == (4, 0)
    assert statuses(db) == {"completed": 4}


def test_an_on_event_callback_raising_anything_never_stops_the_worker(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    ids = [q.add("e", {"i": i}).id for i in range(4)]

    def explode(event: Any) -> None:
        raise SystemExit("callback gave up")

    counts = run_until_idle(Worker(module_dsn, {"e": lambda it: None}, on_event=explode, **FAST))
    assert counts.processed == 4
    assert all(item(db, i)["status"] == "completed" for i in ids)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- 2. server-side errors ------------------------------------------------------------


def with_options(dsn: str, **settings: str) -> str:
    """The DSN with server settings for every session it opens (as an
    ALTER ROLE ... SET would give the worker's role)."""
    opts = " ".join(f"-c {k}={v}" for k, v in settings.items())
    return make_conninfo(dsn, options=opts)


def test_idle_in_transaction_timeout_never_kills_the_worker(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The issue's example: both workers died of IdleInTransactionSessionTimeout
    (25P03). Every transaction the worker opens (flush, due, heartbeat, cleanup,
    release) is one statement now, so none sits idle, and 25P03 is transient."""
    ids = [q.add("e", {"i": i}).id for i in range(30)]
    slow = q.add("slow", {}).id
    gate = threading.Event()

    def wait_for_heartbeats(it: RetryQueueItem) -> None:
        gate.wait(3.5)  # past half a lease: the heartbeat extends it

    dsn = with_options(module_dsn, idle_in_transaction_session_timeout="1ms")
    counts = run_until_idle(
        Worker(
            dsn,
            {"e": lambda it: None, "slow": wait_for_heartbeats},
            batch_size=4,
            **{**FAST, "lock_timeout": 2, "cleanup_interval": 0.2},
        ),
        timeout=30,
    )
    assert counts.processed == 31 and counts.lease_lost == 0
    assert statuses(db) == {"completed": 31}
    assert {i for i in [*ids, slow] if item(db, i)["status"] == "completed"} == {*ids, slow}


def test_a_statement_timeout_is_logged_with_its_sqlstate_counted_and_waited_out(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [q.add("e", {"i": i}).id for i in range(3)]
    before = sample("retryq_worker_database_errors_total", sqlstate="57014", kind="transient")
    locker = psycopg.connect(module_dsn)
    locker.execute("LOCK TABLE daz_retry_queue IN ACCESS EXCLUSIVE MODE")
    worker = Worker(
        with_options(module_dsn, statement_timeout="100ms"), {"e": lambda it: None}, **FAST
    )
    thread = worker.start(exit_when_drained=True)
    try:
        wait_until(
            lambda: (
                sample("retryq_worker_database_errors_total", sqlstate="57014", kind="transient")
                > before
            ),
            what="the timeout to be counted",
        )
    finally:
        locker.rollback()
        locker.close()
    thread.join(15)
    assert not thread.is_alive()
    assert all(item(db, i)["status"] == "completed" for i in ids)
    logged = [r.getMessage() for r in caplog.records if "57014" in r.getMessage()]
    assert logged and "statement timeout" in logged[0], logged


def test_a_configuration_error_stops_the_worker_and_says_so(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """No retry can help a missing function: the worker says so and stops,
    with nothing left leased."""
    q.add("e", {})
    with pytest.raises(psycopg.errors.InvalidSchemaName):
        Worker(module_dsn, {"e": lambda it: None}, schema="no_such_schema", **FAST).run(
            exit_when_drained=True
        )
    assert any(
        ("configuration error" in r.getMessage() and "SQLSTATE 3F000" in r.getMessage())
        or "SQLSTATE 42883" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert sample(
        "retryq_worker_database_errors_total", sqlstate="42883", kind="configuration"
    ) or (sample("retryq_worker_database_errors_total", sqlstate="3F000", kind="configuration"))


@pytest.mark.slow
def test_cleanup_in_slices_never_starves_leasing(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The issue's example: one unbounded cleanup call, cancelled by a 2 s
    statement_timeout on every pass of the only lane, left 0 of 5 due items
    handled. Cleanup now runs in bounded slices in a thread of its own."""
    db.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data, status, created_at,"
        " next_retry_at, last_attempted_at, completed_at)"
        " SELECT 'old', '{}', 'completed', t, t, t, t"
        " FROM (SELECT now() - interval '30 days' AS t) AS c, generate_series(1, 60000)"
    )
    due = [q.add("e", {"i": i}).id for i in range(5)]
    done = threading.Event()
    ran: list[int] = []

    def handle(it: RetryQueueItem) -> None:
        ran.append(it.id)
        if len(ran) == len(due):
            done.set()

    worker = Worker(
        with_options(module_dsn, statement_timeout="150ms"),
        {"e": handle},
        lanes=1,
        **{**FAST, "cleanup_interval": 0.5},
    )
    thread = worker.start()
    try:
        assert done.wait(10), f"{len(ran)} of {len(due)} due items handled"
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM daz_retry_queue WHERE event_type = 'old'"
                ).fetchone()
                == (0,)
            ),
            timeout=60,
            what="cleanup to finish in slices",
        )
    finally:
        worker.stop()
        thread.join(10)
    assert sorted(ran) == sorted(due)


# -- 3. a silent network ----------------------------------------------------------------


def test_a_silent_network_is_noticed_within_the_lease_and_survived(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """The issue's example: a network that stops answering (no reset) blocked
    every thread of the worker with no log line. Its statements now have a
    deadline (half the lease), its connections keepalives and timeouts."""
    ran: list[int] = []
    with netproxy.proxy(module_dsn) as net:
        first = [q.add("e", {"i": i}).id for i in range(5)]
        worker = Worker(
            net.dsn,
            {"e": lambda it: ran.append(it.id)},
            lock_timeout=4,
            poll_interval=0.2,
            connect_timeout=1,
            cleanup_interval=0,
            max_backoff=0.2,
        )
        thread = worker.start()
        try:
            wait_until(lambda: len(ran) == 5, 10, "the first items")
            net.freeze()
            frozen = time.monotonic()
            wait_until(
                lambda: any("no answer" in r.getMessage() for r in caplog.records),
                4,
                "the worker to notice within its lease",
            )
            assert time.monotonic() - frozen < 4
            net.thaw()
            later = [q.add("e", {"i": i}).id for i in range(5)]
            wait_until(lambda: len(ran) == 10, 15, "the items enqueued after the silence")
        finally:
            net.thaw()
            worker.stop()
            thread.join(10)
    assert not thread.is_alive()
    assert sorted(ran) == sorted(first + later)
    assert statuses(db) == {"completed": 10}


def test_the_pools_check_of_silent_connections_ends_within_its_deadline(module_dsn: str) -> None:
    """After a lost connection a lane asks the pool to check its idle
    connections (one round trip each). Unwatched, a check on a connection
    gone silent blocked that lane for good: a worker that had said it was
    stopping never exited (the crash test's 60 s timeout, with a thread dump
    in check_connection). Each check now has a second at most."""
    from retryq_py.worker.deadline import Watchdog, WatchedPool

    with netproxy.proxy(module_dsn) as net:
        pool = WatchedPool(
            net.dsn,
            kwargs={"autocommit": True},
            min_size=2,
            max_size=2,
            open=False,
            watchdog=Watchdog(5.0, "w"),
        )
        pool.open(wait=True, timeout=10)
        try:
            net.freeze()
            done = threading.Event()
            checker = threading.Thread(target=lambda: (pool.check(), done.set()), daemon=True)
            started = time.monotonic()
            checker.start()
            assert done.wait(15), "pool.check() still blocked on a silent connection"
            assert time.monotonic() - started < 5  # a second or so per connection
        finally:
            net.thaw()
            pool.close()


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_flush_on_a_connection_the_deadline_cut_raises_the_lost_connection(
    module_dsn: str, q: RetryQueue, autocommit: bool
) -> None:
    """The deadline shuts a connection's socket down; a flush that then
    starts its statement failed, and restoring the connection's autocommit
    afterwards raised ProgrammingError ("connection in transaction status
    ACTIVE"), which the worker took for a configuration error and stopped
    (seen in the crash test). The lost connection is what is raised now."""
    q.add("e", {"i": 0})
    (held,) = q.acquire("w", 1, 30)
    with (
        psycopg.connect(module_dsn, autocommit=autocommit) as conn,
        psycopg.connect(module_dsn) as other,
    ):
        # the failure's statement waits on the item's row lock ...
        other.execute("SELECT 1 FROM _retryq_active WHERE id = %s FOR UPDATE", [held.id])

        def cut() -> None:  # ... when the deadline shuts its socket down
            time.sleep(0.5)
            with socket.socket(fileno=socket.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)

        thread = threading.Thread(target=cut)
        thread.start()
        failure = Outcome(held, ok=False, duration=0.0, error="boom", code="E")
        try:
            with pytest.raises(psycopg.OperationalError):
                FlushWriter("w", None, 30).write(conn, [failure], 0)
        finally:
            thread.join()
            other.rollback()


def test_items_whose_lease_ran_out_unrenewed_are_not_started() -> None:
    """A worker that could not renew a lease stops counting on it: an item
    still waiting for a handler when its lease has run out is not run."""
    stopping = threading.Event()
    ledger = Ledger(batch_size=2, capacity=4, stopping=stopping, lease=0.0)
    it = RetryQueueItem(*([0] * 17))  # type: ignore[arg-type]
    ledger.hold([it], 1)
    assert ledger.begin(it) is False
    assert (ledger.held, ledger.counts.lease_lost) == (0, 1)


# -- 4. ambiguous commits ------------------------------------------------------------------


class StuckFirstRenewal(RetryQueue):
    """The worker's queue, except that its first heartbeat renewal gets no
    answer (the server sleeps): only the statement deadline ends it."""

    stuck = 0

    def extend_locks(
        self, item_ids: Any, worker_id: str, lock_timeout: Any = 300, leased_at: Any = None
    ) -> set[int]:
        if not StuckFirstRenewal.stuck:
            StuckFirstRenewal.stuck += 1
            with self.connection() as conn:
                conn.execute("SELECT pg_sleep(30)")
        return super().extend_locks(item_ids, worker_id, lock_timeout, leased_at)


def test_a_renewal_stuck_in_a_silent_connection_is_retried_within_the_lease(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A renewal stuck in a silent connection was cut only at the pool's
    deadline (half the lease) and tried again after that; begun up to three
    quarters into the lease, it came after the lease ran out, and another
    worker took the item over under its live worker (the crash test's cut,
    which leaves a connection silent). Renewals now have a deadline of an
    eighth of the lease, and begin a third into it."""
    (item_id,) = [q.add("e", {"i": 0}, max_retries=0).id]
    StuckFirstRenewal.stuck = 0
    release = threading.Event()
    started: list[RetryQueueItem] = []

    def handler(it: RetryQueueItem) -> None:
        started.append(it)
        release.wait(30)

    worker = Worker(
        module_dsn,
        {"e": handler},
        parts=WorkerParts(queue=lambda pool, schema: StuckFirstRenewal(pool, schema=schema)),
        **{**FAST, "lock_timeout": 6},
    )
    thread = worker.start()
    try:
        wait_until(lambda: bool(started), 10, "the handler to start")
        wait_until(lambda: StuckFirstRenewal.stuck == 1, 10, "the first renewal")
        first_expiry = started[0].locked_until
        wait_until(
            lambda: (
                db.execute("SELECT clock_timestamp() > %s", [first_expiry]).fetchone() == (True,)
            ),
            10,
            "the first lease to have run out",
        )
        stolen = db.execute("SELECT id FROM acquire_retry_items('thief', 10, 60)").fetchall()
        assert stolen == [] and statuses(db) == {"processing": 1}, (
            "a renewal stuck once let the lease run out under the live worker"
        )
        release.set()
        wait_until(lambda: statuses(db) == {"completed": 1}, 15, "the item completed")
    finally:
        release.set()
        worker.stop()
        thread.join(10)
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query = 'SELECT pg_sleep(30)' AND datname = current_database()"
        )
    assert item(db, item_id)["error_history"] == []


class LoseReply:
    """The worker's own flush writer, except that the reply to the first
    write matching `when` is lost: the server committed, then the connection
    broke before the worker read the answer."""

    def __init__(self, inner: Writer, when: Callable[[list[Outcome], int], bool]) -> None:
        self.inner, self.when, self.lost = inner, when, 0

    def write(self, conn: Conn, outcomes: list[Outcome], want: int) -> Written:
        written = self.inner.write(conn, outcomes, want)
        if not self.lost and self.when(outcomes, want) and (written.leased or outcomes):
            self.lost += 1
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return written


def losing(when: Callable[[list[Outcome], int], bool]) -> tuple[WorkerParts, list[LoseReply]]:
    made: list[LoseReply] = []
    own = WorkerParts().writer

    def writer(settings: Settings) -> Writer:
        made.append(LoseReply(own(settings), when))
        return made[-1]

    return WorkerParts(writer=writer), made


def test_a_lost_reply_to_an_acquire_is_settled_not_left_to_expire(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The issue's example: ten items stayed leased to a live worker that did
    not know about them for the whole lease; those with max_retries = 0
    became dead letters with zero runs."""
    ids = [q.add("e", {"i": i}, max_retries=0).id for i in range(10)]
    parts, made = losing(lambda outcomes, want: want > 0)
    ran: list[int] = []
    counts = run_until_idle(
        Worker(
            module_dsn,
            {"e": lambda it: ran.append(it.id)},
            batch_size=10,
            parts=parts,
            **{**FAST, "lock_timeout": 60},
        ),
        timeout=15,
    )
    assert made[0].lost == 1
    assert sorted(ran) == sorted(ids)
    assert counts.processed == 10 and counts.lease_lost == 0
    assert statuses(db) == {"completed": 10}


class LoseReplyLate(LoseReply):
    """LoseReply, except that the loss shows only `delay` seconds after the
    commit (a reply that never came, noticed at the statement deadline), and
    the leases granted are kept in `granted` (id -> locked_until)."""

    def __init__(self, inner: Writer, when: Callable[[list[Outcome], int], bool]) -> None:
        super().__init__(inner, when)
        self.delay = 0.0
        self.granted: dict[int, Any] = {}

    def write(self, conn: Conn, outcomes: list[Outcome], want: int) -> Written:
        written = self.inner.write(conn, outcomes, want)
        if not self.lost and self.when(outcomes, want) and written.leased:
            self.lost += 1
            self.granted = {it.id: it.locked_until for it in written.leased}
            time.sleep(self.delay)
            conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return written


class LanesLockedOut(ConnectionPool[Any]):
    """A pool that lends to the heartbeat only while `out` is set: the
    lanes, which take lost acquires up, cannot reach the database (their
    statements cut again and again, a pool slow to reconnect)."""

    out = threading.Event()

    @contextlib.contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Conn]:
        if self.out.is_set() and threading.current_thread().name != "retryq-heartbeat":
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        with super().connection(timeout) as conn:
            yield conn


def test_leases_of_a_lost_acquire_are_renewed_until_taken_up(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """An acquire's reply is lost, and the lanes that would take its leases
    up cannot reach the database for longer than a lease (in the crash test:
    the take-up's own statements cut, noticed only at the statement
    deadline). Nothing renewed the leases the worker did not know of: they
    ran out under the live worker and another took them over (an attempt
    lost). The heartbeat renews them until they are taken up."""
    item_id = q.add("e", {"i": 0}, max_retries=3).id
    parts, made = losing(lambda outcomes, want: want > 0)
    ran: list[int] = []
    LanesLockedOut.out.clear()
    with LanesLockedOut(
        module_dsn, kwargs={"autocommit": True}, min_size=1, max_size=6, open=True
    ) as pool:

        def locked_out(it: RetryQueueItem) -> None:
            ran.append(it.id)

        worker = Worker(pool, {"e": locked_out}, parts=parts, **{**FAST, "lock_timeout": 2})
        thread = worker.start(exit_when_drained=True)
        try:
            wait_until(lambda: bool(made and made[0].lost), timeout=10, what="the lost reply")
            LanesLockedOut.out.set()
            time.sleep(2 * 2 + 1)  # two leases and more: long enough to run out twice
            taken = q.acquire("other", 1, 60)
            assert taken == [], "the lease ran out under the live worker"
        finally:
            LanesLockedOut.out.clear()
            thread.join(15)
            if thread.is_alive():
                worker.stop(force=True)
                thread.join(10)
    assert ran == [item_id]
    row = item(db, item_id)
    assert row["status"] == "completed" and row["error_history"] == [], row


def test_leases_taken_up_after_a_late_noticed_lost_reply_are_renewed_at_once(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """An acquire whose reply is lost is noticed only at the statement
    deadline (half the lease), and its items are taken up after that: they
    were held as if just leased, so the heartbeat renewed them half a lease
    after the take-up, after the acquire's leases had run out, and another
    worker could take them over under the live worker and run them a second
    time (the crash test's rare double run). Taken up, they are renewed."""
    ids = [q.add("e", {"i": i}, max_retries=0).id for i in range(4)]
    own = WorkerParts().writer
    made: list[LoseReplyLate] = []

    def writer(settings: Settings) -> Writer:
        made.append(LoseReplyLate(own(settings), lambda outcomes, want: want > 0))
        made[-1].delay = 3.5  # past the deadline of half the 6 s lease
        return made[-1]

    release = threading.Event()
    running: set[int] = set()

    def handler(it: RetryQueueItem) -> None:
        running.add(it.id)
        release.wait(30)

    worker = Worker(
        module_dsn,
        {"e": handler},
        batch_size=4,
        worker_count=4,
        # one lane, so one acquire leases all four: two lanes' first acquires
        # may overlap and split the items (SKIP LOCKED), and the lost reply
        # then granted 3 of them (a flaky failure under load)
        lanes=1,
        parts=WorkerParts(writer=writer),
        **{**FAST, "lock_timeout": 6},
    )
    thread = worker.start()
    try:
        wait_until(lambda: running == set(ids), 15, "the items taken up and running")
        assert made[0].lost == 1 and set(made[0].granted) == set(ids)
        first_expiry = max(made[0].granted.values())
        wait_until(
            lambda: (
                db.execute("SELECT clock_timestamp() > %s", [first_expiry]).fetchone() == (True,)
            ),
            10,
            "the acquire's leases to have run out",
        )
        # another worker's acquire now: an expired lease would be taken over
        # (here, with no budget left, the item buried as a dead letter)
        stolen = db.execute("SELECT id FROM acquire_retry_items('thief', 10, 60)").fetchall()
        assert stolen == [] and statuses(db) == {"processing": 4}, (
            "leases taken up were left to run out under the live worker"
        )
        release.set()
        wait_until(lambda: statuses(db) == {"completed": 4}, 15, "every item completed")
    finally:
        release.set()
        worker.stop()
        thread.join(10)


@pytest.fixture
def slow_commit(db: Conn) -> Iterator[Callable[[], None]]:
    """Arms a deferred trigger that makes the next commit touching the active
    partition sleep 1 s on the server, after the statement itself is done."""
    db.execute(
        "CREATE TABLE slow_commit_armed (x int);"
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN DELETE FROM slow_commit_armed;"
        " IF FOUND THEN PERFORM pg_sleep(1); END IF; RETURN NULL; END $$;"
        "CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON _retryq_active"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
    )
    try:
        yield lambda: db.execute("INSERT INTO slow_commit_armed VALUES (1)") and None
    finally:
        db.execute(
            "DROP TRIGGER slow_commit ON _retryq_active; DROP FUNCTION slow_commit();"
            " DROP TABLE slow_commit_armed"
        )


def test_a_commit_the_server_finishes_after_the_cut_is_waited_for(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    slow_commit: Callable[[], None],
) -> None:
    """The server runs a statement to its end after its client is gone: an
    acquire still committing when the connection is cut commits after the
    worker has reconnected. Read at once, the items it leased looked free,
    were never taken up, and expired under the live worker (items with
    max_retries = 0 then became dead letters that never ran: the crash
    test's occasional expiry). The worker now waits for that server process
    to finish its statement before reading what happened."""
    ids = [q.add("e", {"i": i}, max_retries=0).id for i in range(10)]
    ran: list[int] = []
    with netproxy.proxy(module_dsn) as net:
        slow_commit()
        worker = Worker(
            net.dsn,
            {"e": lambda it: ran.append(it.id)},
            batch_size=10,
            worker_count=1,
            connect_timeout=1,
            **{**FAST, "lock_timeout": 8},  # waits up to 2 s for the old commit
        )
        thread = worker.start()
        try:
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                        " AND datname = current_database()"
                    ).fetchone()
                    == (True,)
                ),
                10,
                "the acquire to be committing",
            )
            net.cut(now=True)
            wait_until(lambda: statuses(db) == {"completed": 10}, 15, "every item to be run")
        finally:
            worker.stop()
            thread.join(10)
    assert sorted(ran) == sorted(ids)
    codes = db.execute(
        "SELECT count(*) FROM daz_retry_queue WHERE error_history::text LIKE '%%lease_expired%%'"
    ).fetchone()
    assert codes == (0,)


def test_a_snooze_whose_reply_was_lost_is_not_written_onto_the_next_lease(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A snooze spends no attempt: written with no delay, the same flush's
    acquire leased the item again under the same worker and retry_count, and
    after the lost reply the snooze counted as unwritten and was written
    again, snoozing the new lease. The snooze count tells them apart."""
    item_id = q.add("e", {"i": 0}).id
    parts, made = losing(lambda outcomes, want: any(o.snooze is not None for o in outcomes))
    runs: list[int] = []

    def handler(it: RetryQueueItem) -> None:
        runs.append(it.snoozes)
        if it.snoozes == 0:
            raise Snooze(0)

    counts = run_until_idle(
        Worker(
            module_dsn,
            {"e": handler},
            batch_size=10,
            worker_count=1,
            parts=parts,
            **FAST,
        ),
        timeout=15,
    )
    assert made[0].lost == 1
    assert statuses(db) == {"completed": 1}
    assert runs == [0, 1], runs  # snoozed once, then run again and completed
    assert (counts.snoozed, counts.processed, counts.lease_lost) == (1, 1, 0)
    meta = db.execute(
        "SELECT event_metadata FROM daz_retry_queue WHERE id = %s", [item_id]
    ).fetchone()
    assert meta is not None and meta[0].get("retryq_snoozes") == 1, meta


def test_a_lost_reply_to_a_flush_counts_what_was_written(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The issue's example: ten completed items were counted as lease_lost."""
    ok = [q.add("e", {"i": i}).id for i in range(8)]
    bad = [q.add("bad", {"i": i}, retry_delay=0.05, max_retries=1).id for i in range(2)]
    parts, made = losing(lambda outcomes, want: len(outcomes) >= 5)
    events: list[Any] = []

    def fail_once(it: RetryQueueItem) -> None:
        if it.retry_count == 0:
            raise RetryableError("once", code="ONCE")

    counts = run_until_idle(
        Worker(
            module_dsn,
            {"e": lambda it: None, "bad": fail_once},
            batch_size=10,
            worker_count=1,
            ack_interval=10,  # one flush writes every outcome
            parts=parts,
            on_event=events.append,
            **{k: v for k, v in FAST.items()},
        ),
        timeout=15,
    )
    assert made[0].lost == 1
    assert (counts.processed, counts.failed, counts.lease_lost) == (10, 2, 0)
    assert statuses(db) == {"completed": 10}
    for i in bad:
        history = item(db, i)["error_history"]
        assert [h["code"] for h in history] == ["ONCE"], history  # written once
    assert sorted(e.item.id for e in events if e.kind == "completed") == sorted(ok + bad)


class Scripted:
    """The worker's own flush writer, with a step per write: "lose" raises a
    lost connection before anything is sent, "lost" after the write
    committed (its reply lost); a callable runs after the write committed,
    before its reply is handed back (a reply that is slow)."""

    def __init__(self, inner: Writer, steps: list[Any]) -> None:
        self.inner, self.steps = inner, steps

    def write(self, conn: Conn, outcomes: list[Outcome], want: int) -> Written:
        step = self.steps.pop(0) if self.steps else None
        if step == "lose":
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        written = self.inner.write(conn, outcomes, want)
        if step == "lost":
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if callable(step):
            step()
        return written


def flusher_of(
    pool: ConnectionPool[Any], book: Ledger, steps: list[Any], lease: int = 10
) -> Flusher:
    """Worker "w"'s flush over `pool`, its writer scripted by `steps`."""
    return Flusher(
        worker_id="w",
        ack_interval=0.0,
        ledger=book,
        pool=pool,
        writer=Scripted(FlushWriter("w", None, lease), steps),
        emit=lambda events: None,
        lease=lease,
    )


def test_a_lease_renewed_before_its_adoption_is_not_held_twice(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A lane's acquire commits; before its reply is read, the heartbeat
    renews the item by id (it held the item's older lease) and another lane,
    after a lost reply of its own, takes up the leases it does not know. The
    adoption read the renewed locked_until, so when the slow reply came the
    lane's copy of the same lease looked like another lease: it was held
    again and ran while the adopted copy ran (the cut crash test's double
    run in one worker). Taken up with its granted locked_until, it is held
    once."""
    item_id = q.add("e", {"i": 0}).id
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    steps: list[Any] = []
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=2, max_size=3, open=True
    ) as pool:
        flusher = flusher_of(pool, book, steps)
        started: list[RetryQueueItem] = []

        def meanwhile() -> None:
            assert q.extend_locks([item_id], "w", 10) == {item_id}  # the heartbeat
            # the other lane: an acquire of its own loses its reply (nothing
            # leased), and its next flush takes up what it does not know
            with pytest.raises(psycopg.OperationalError):
                flusher.flush(force=True, acquire=1)
            flusher.flush(force=False)
            adopted = book.take()
            assert adopted is not None and book.begin(adopted)  # and runs it
            started.append(adopted)

        steps += [meanwhile, "lose"]
        assert flusher.flush(force=True, acquire=1)[1] == 1  # the slow lane's reply
    assert [it.id for it in started] == [item_id]
    again = [it for it in book.take_unstarted() if book.begin(it)]
    assert again == [], "the lease was held twice and its second copy runs"
    assert book.held == 1


def test_a_lost_acquire_noticed_while_another_lane_settles_is_taken_up(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """Lane A waits for the server processes of the replies lost so far,
    settles its outcomes in doubt, then takes up the leases it does not know.
    Lane B's acquire loses its reply while A settles: the doubt it raised was
    cleared by A's take-up, whose read came before B's statement committed
    (A never waited for B's process), so the items B leased stayed unknown
    and expired under the live worker. Found by reading the code for the cut
    crash test's rare failure (leases of one acquire expiring together with
    nothing in the worker's log); the cause its log showed once timestamped
    is the next test's. A take-up now settles only the lost acquires it
    waited for."""
    first = q.add("e", {"i": 0}).id
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    steps: list[Any] = []
    late: list[int] = []
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=2, max_size=3, open=True
    ) as pool:
        armed: list[bool] = []

        def lane_b_loses_an_acquire(events: list[Any]) -> None:
            if not armed or late:
                return
            late.append(q.add("e", {"i": 1}).id)
            with pytest.raises(psycopg.OperationalError):
                flusher.flush(force=True, acquire=1)  # sent, not yet run by the server

        flusher = Flusher(
            worker_id="w",
            ack_interval=0.0,
            ledger=book,
            pool=pool,
            writer=Scripted(FlushWriter("w", None, 10), steps),
            emit=lane_b_loses_an_acquire,  # reports run while A settles
            lease=10,
        )
        assert flusher.flush(force=True, acquire=1)[1] == 1
        held = book.take()
        assert held is not None and held.id == first and book.begin(held)
        book.finish(Outcome(held, ok=True, duration=0.0))
        steps += ["lost", "lose"]  # A's completion loses its reply; B's acquire too
        with pytest.raises(psycopg.OperationalError):
            flusher.flush(force=True)
        armed.append(True)  # B's loss lands while A settles
        flusher.flush(force=True)  # lane A: settles the completion, takes up leases
        assert late and book.held == 0
        # the server runs B's acquire only now
        assert [it.id for it in q.acquire("w", 1, 10)] == late
        flusher.flush(force=False)
    assert statuses(db) == {"completed": 1, "processing": 1}
    assert book.held == 1, "the leases of a lost acquire were left to expire"
    taken = book.take()
    assert taken is not None and taken.id == late[0] and book.begin(taken)


def test_a_lost_acquire_is_taken_up_while_another_lane_holds_outcomes_in_doubt(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A flush completes one item and leases another; its reply is lost at
    the statement deadline (half the lease). The lane that claims the
    outcome in doubt next is stuck on a silent connection until its own
    deadline, and the take-up waited for every outcome in doubt to be
    settled first: two deadlines, a whole lease, and the leases of the lost
    acquire ran out under the live worker. Caught in the cut crash test's
    log (a lost reply at 55.196 s, the other lane stuck until 00.440, the
    take-up at 00.609, the leases granted at 50.253 expired at 00.253). The
    lease fence makes the wait needless: an outcome in doubt can no longer
    land on the newer lease a take-up holds, so the take-up goes first."""
    first = q.add("e", {"i": 0}).id
    second = q.add("e", {"i": 1}).id
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    steps: list[Any] = []
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=2, max_size=3, open=True
    ) as pool:
        flusher = flusher_of(pool, book, steps)
        assert flusher.flush(force=True, acquire=1)[1] == 1
        done = book.take()
        assert done is not None and done.id == first and book.begin(done)
        book.finish(Outcome(done, ok=True, duration=0.0))
        steps.append("lost")
        with pytest.raises(psycopg.OperationalError):
            flusher.flush(force=True, acquire=1)  # completes one, leases the other
        assert statuses(db) == {"completed": 1, "processing": 1}
        # another lane claims the outcome in doubt and is stuck
        stuck, _ = book.claim(force=True, acquire=0, ack_interval=0.0)
        assert [o.item.id for o in stuck] == [first]
        flusher.flush(force=False)  # this lane takes up what the lost acquire leased
        assert book.held == 2, "the take-up waited for the stuck lane"
        taken = book.take()
        assert taken is not None and taken.id == second and book.begin(taken)
        book.unclaim(stuck, 0)  # the stuck lane's flush fails; the next one settles it
        flusher.flush(force=True)
    assert (book.counts.processed, book.counts.lease_lost, book.held) == (1, 0, 1)
    assert statuses(db) == {"completed": 1, "processing": 1}


def test_leases_in_doubt_stay_in_doubt_when_taking_them_up_fails(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """An acquire loses its reply; the next flush reads the leases it does
    not know, and its renewal of them is cut off. The doubt was cleared at
    the read, so a flush that had not asked for items itself left them
    unknown: never run, they expired under the live worker (the cut crash
    test's one expired lease). They are taken up by the next flush."""
    item_id = q.add("e", {"i": 0}).id
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    db.execute(
        "CREATE TABLE renewal_refused (x int);"
        "CREATE FUNCTION refuse_renewal() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN IF EXISTS (SELECT FROM renewal_refused) THEN"
        " RAISE EXCEPTION 'renewal cut off' USING ERRCODE = 'connection_failure';"
        " END IF; RETURN NEW; END $$;"
        "CREATE TRIGGER refuse_renewal BEFORE UPDATE ON _retryq_active FOR EACH ROW"
        " WHEN (OLD.status = 'processing' AND NEW.status = 'processing')"
        " EXECUTE FUNCTION refuse_renewal()"
    )
    try:
        with ConnectionPool(
            module_dsn, kwargs={"autocommit": True}, min_size=1, max_size=2, open=True
        ) as pool:
            flusher = flusher_of(pool, book, ["lost"])
            with pytest.raises(psycopg.OperationalError):
                flusher.flush(force=True, acquire=1)  # leased, the reply lost
            assert statuses(db) == {"processing": 1}
            db.execute("INSERT INTO renewal_refused VALUES (1)")
            with pytest.raises(psycopg.OperationalError, match="renewal cut off"):
                flusher.flush(force=False)  # nothing of its own to write or lease
            assert book.held == 0
            db.execute("DELETE FROM renewal_refused")
            flusher.flush(force=False)
    finally:
        db.execute(
            "DROP TRIGGER refuse_renewal ON _retryq_active; DROP FUNCTION refuse_renewal();"
            " DROP TABLE renewal_refused"
        )
    assert book.held == 1, "the leases in doubt were left to expire"
    taken = book.take()
    assert taken is not None and taken.id == item_id and book.begin(taken)


def test_an_outcome_of_a_lease_taken_over_by_the_same_worker_is_not_written(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A lease runs out under a live worker (renewals that could not get
    through) and the worker's own next acquire takes the item over while
    the old copy still runs. The old copy's failure was then written onto
    the new lease (fail_retry_item fences by worker and id), spending its
    attempt, and the item ran a third time. It is counted as lost instead."""
    item_id = q.add("e", {"i": 0}, max_retries=3).id
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=1, max_size=2, open=True
    ) as pool:
        flusher = flusher_of(pool, book, [])
        assert flusher.flush(force=True, acquire=1)[1] == 1
        old = book.take()
        assert old is not None and book.begin(old)  # its handler runs ...
        # ... past its lease, and the worker's own acquire takes the item over
        db.execute(
            "UPDATE daz_retry_queue SET locked_until = now() - interval '1 second' WHERE id = %s",
            [item_id],
        )
        assert flusher.flush(force=True, acquire=1)[1] == 1
        book.finish(Outcome(old, ok=False, duration=0.0, error="try again", code="T"))
        flusher.flush(force=True)
    row = item(db, item_id)
    assert (row["status"], row["retry_count"]) == ("processing", 1), row
    assert [h["code"] for h in row["error_history"]] == ["lease_expired"], row
    assert book.counts.lease_lost == 1 and book.held == 1
    newer = book.take()
    assert newer is not None and newer.retry_count == 1 and book.begin(newer)


@pytest.mark.parametrize("outcome", ["ok", "fail", "snooze"])
def test_an_outcome_never_lands_on_a_newer_lease_whose_reply_is_still_out(
    module_dsn: str, db: Conn, q: RetryQueue, outcome: str
) -> None:
    """A lease runs out under a live worker and another lane's acquire takes
    the item over; that acquire has committed, its reply is not read yet
    (slow, or lost and not yet taken up), so the ledger knows no newer
    lease when the old copy's outcome is written. By worker and id the
    outcome landed on the newer lease: completed, failed or snoozed it
    while its handler was about to run. Fenced to its own lease's grant
    time, it is refused and counted as lost; the newer lease runs."""
    item_id = q.add("e", {"i": 0}, max_retries=3).id
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    steps: list[Any] = []
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=2, max_size=3, open=True
    ) as pool:
        flusher = flusher_of(pool, book, steps)
        assert flusher.flush(force=True, acquire=1)[1] == 1
        old = book.take()
        assert old is not None and book.begin(old)  # its handler runs past its lease
        db.execute(
            "UPDATE daz_retry_queue SET locked_until = now() - interval '1 second' WHERE id = %s",
            [item_id],
        )
        done = {
            "ok": Outcome(old, ok=True, duration=0.0),
            "fail": Outcome(old, ok=False, duration=0.0, error="try again", code="T"),
            "snooze": Outcome(old, ok=False, duration=0.0, snooze=30.0),
        }[outcome]

        def meanwhile() -> None:  # the takeover committed, its reply not yet read
            book.finish(done)
            flusher.flush(force=True)

        steps.append(meanwhile)
        assert flusher.flush(force=True, acquire=1)[1] == 1  # the newer lease, at last
    row = item(db, item_id)
    assert (row["status"], row["retry_count"]) == ("processing", 1), row
    assert [h["code"] for h in row["error_history"]] == ["lease_expired"], row
    assert book.counts.lease_lost == 1 and book.held == 1
    newer = book.take()
    assert newer is not None and newer.retry_count == 1 and book.begin(newer)


def test_a_renewal_of_an_older_lease_does_not_renew_the_newer_one(db: Conn, q: RetryQueue) -> None:
    """The heartbeat renewed by worker and id: holding an older lease of an
    item that its own acquire had taken over (the reply not read yet), it
    renewed the newer lease and went on believing the older one alive.
    Fenced to the held lease's grant time, the renewal is refused and the
    older lease is reported lost; the newer lease is left as granted."""
    q.add("e", {"i": 0})
    (old,) = q.acquire("w", 1, 10)
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    book.hold([old], reserved=0)
    db.execute(
        "UPDATE daz_retry_queue SET locked_until = now() - interval '1 second' WHERE id = %s",
        [old.id],
    )
    (newer,) = q.acquire("w", 1, 10)  # the takeover, unknown to the ledger
    assert newer.id == old.id and newer.locked_until != old.locked_until
    beat = Heartbeat(
        book,
        q.extend_locks,
        worker_id="w",
        lock_timeout=10,
        handler_timeout=None,
        done=threading.Event(),
    )
    assert beat.beat(time.monotonic() + 5) == {old.id}
    until = db.execute("SELECT locked_until FROM daz_retry_queue WHERE id = %s", [old.id])
    assert until.fetchone() == (newer.locked_until,), "the newer lease was renewed"


class StopAfterEach(FlushWriter):
    """The worker's writer, whose one-by-one path (after the batch raised
    for a value) stops once at `where`: "acquire" (statement_timeout on the
    lease, after every outcome was written) or "complete" (after the
    failures were written)."""

    def __init__(self, where: str) -> None:
        super().__init__("w", None, 10)
        self.where, self.armed, self.each = where, True, False

    def _write_each(self, conn: Conn, text: Any, outcomes: list[Outcome], want: int) -> Written:
        self.each = True
        try:
            return super()._write_each(conn, text, outcomes, want)
        finally:
            self.each = False

    def _refused(self, kind: str) -> bool:
        refused = self.each and self.armed and self.where == kind
        self.armed = self.armed and not refused
        return refused

    def _acquire(self, text: Any, want: int) -> str:
        if self._refused("acquire"):
            return "DO $$ BEGIN RAISE EXCEPTION 'canceled' USING ERRCODE = '57014'; END $$"
        return super()._acquire(text, want)

    def _complete(self, text: Any, ok: list[RetryQueueItem]) -> str:  # type: ignore[override]
        if self._refused("complete"):
            return "DO $$ BEGIN RAISE EXCEPTION 'canceled' USING ERRCODE = '57014'; END $$"
        return FlushWriter._complete(text, ok)


@pytest.mark.parametrize("where", ["acquire", "complete"])
def test_outcomes_written_one_by_one_before_an_error_are_not_written_again(
    module_dsn: str, db: Conn, q: RetryQueue, where: str
) -> None:
    """One bad value sends a flush down the one-by-one path; an error after
    some outcomes were written there (a statement_timeout on the lease or on
    the successes) put them all back, and the next flush wrote them again:
    the queue ended right (the second write was refused), but the worker
    counted its own written outcomes as lost leases."""
    bad, good, other = (q.add("e", {"i": i}, max_retries=0).id for i in range(3))
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    writer = StopAfterEach(where)
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=1, max_size=2, open=True
    ) as pool:
        flusher = Flusher(
            worker_id="w",
            ack_interval=0.0,
            ledger=book,
            pool=pool,
            writer=writer,
            emit=lambda events: None,
            lease=10,
        )
        assert flusher.flush(force=True, acquire=2)[1] == 2
        taken = [book.take(), book.take()]
        assert {it.id for it in taken if it is not None} == {bad, good}
        for it in taken:
            assert it is not None and book.begin(it)
            if it.id == bad:  # a NUL the server refuses: the batch raises
                book.finish(Outcome(it, ok=False, duration=0.0, error="x", code="E\x00"))
            else:
                book.finish(Outcome(it, ok=True, duration=0.0))
        with pytest.raises(psycopg.errors.QueryCanceled):
            flusher.flush(force=True, acquire=1)
        assert not writer.armed
        flusher.flush(force=True, acquire=1)
    counts = book.counts
    assert (counts.processed, counts.dead_lettered, counts.lease_lost) == (1, 1, 0), counts
    assert item(db, bad)["status"] == "dead_letter" and item(db, good)["status"] == "completed"
    assert item(db, other)["status"] == "processing"  # leased by the flush after


def test_a_heartbeat_error_not_the_databases_is_contained_and_said(
    db: Conn, q: RetryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal raising something other than a database error (a bug, a
    part of the caller's) ended the heartbeat thread without a word: the
    worker went on leasing and never renewed a lease again. The round is
    logged and tried again; the lease is renewed by the next round."""
    q.add("e", {"i": 0})
    (held,) = q.acquire("w", 1, 10)
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=1)
    book.hold([held], reserved=0)
    calls: list[int] = []

    def extend(ids: Any, worker: str, lock: float, leased_at: Any) -> set[int]:
        calls.append(len(calls))
        if len(calls) == 1:
            raise TypeError("a bug in a renewal")
        return q.extend_locks(ids, worker, 10, leased_at)

    done, failed = threading.Event(), []
    beat = Heartbeat(
        book,
        extend,
        worker_id="w",
        lock_timeout=1,
        handler_timeout=None,
        done=done,
        fail=failed.append,
    )
    before = db.execute("SELECT locked_until FROM daz_retry_queue").fetchone()
    beat.start()
    try:
        wait_until(lambda: len(calls) >= 2, timeout=10, what="a renewal after the failed one")
    finally:
        done.set()
        beat.join(time.monotonic() + 5)
    after = db.execute("SELECT locked_until FROM daz_retry_queue").fetchone()
    assert before is not None and after is not None and after[0] > before[0]
    assert failed == [], "the worker was stopped for one failed round"
    assert any(
        "heartbeat failed (TypeError: a bug in a renewal)" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_a_heartbeat_that_stops_stops_the_worker(
    Worker: WorkerType, module_dsn: str, q: RetryQueue
) -> None:
    """The heartbeat's thread ended (an interrupt in it): the worker leased
    on, every lease unrenewed. It stops instead, giving back what it holds."""
    q.add("e", {"i": 0})

    class Broken(RetryQueue):
        def extend_locks(self, *args: Any, **kwargs: Any) -> set[int]:
            raise KeyboardInterrupt

    started = threading.Event()

    def slow(it: RetryQueueItem) -> None:
        started.set()
        time.sleep(1.5)  # past a third of the lease: a renewal is due

    worker = Worker(
        module_dsn,
        {"e": slow},
        parts=WorkerParts(queue=lambda pool, schema: Broken(pool, schema=schema)),
        **{**FAST, "lock_timeout": 3},
    )
    with pytest.raises(AssertionError, match="KeyboardInterrupt"):
        run_until_idle(worker, timeout=15)
    assert started.is_set()


def test_leases_a_lost_acquire_granted_are_released_at_the_stop(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """An acquire's reply is lost just before the stop: the stop's flush
    takes its leases up, but the stop ended at once (nothing running,
    nothing handed back yet), leaving them to expire under a worker that
    had gone. They are released, due at once for another worker."""
    item_id = q.add("e", {"i": 0}).id
    wake = Wake(1)
    stop = Stop(wake)
    book = Ledger(batch_size=5, capacity=10, stopping=stop.stopping, lease=10)
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=1, max_size=2, open=True
    ) as pool:
        flusher = flusher_of(pool, book, ["lost"])
        with pytest.raises(psycopg.OperationalError):
            flusher.flush(force=True, acquire=1)
        assert book.held == 0  # leased by the queue, unknown to the ledger
        stop.request()
        Shutdown(
            worker_id="w",
            grace_period=5,
            max_backoff=0.1,
            ledger=book,
            flusher=flusher,
            release=q.release,
            stop=stop,
            wake=wake,
            emit=lambda events: None,
        ).run()
    assert book.held == 0 and book.counts.released == 1
    assert item(db, item_id)["status"] == "pending", "left leased to a stopped worker"


def test_a_release_of_an_older_lease_does_not_release_the_newer_one(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """The shutdown released by worker and id: holding an older lease of an
    item that its own acquire had taken over (the reply not read yet, or a
    release retried after its reply was lost and the item leased again), it
    gave the newer lease back while that lease's handler was about to run.
    Fenced to the held lease's grant time, the newer lease is left as granted."""
    q.add("e", {"i": 0})
    (old,) = q.acquire("w", 1, 10)
    wake = Wake(1)
    stop = Stop(wake)
    book = Ledger(batch_size=5, capacity=10, stopping=stop.stopping, lease=10)
    book.hold([old], reserved=0)  # not started
    db.execute(
        "UPDATE daz_retry_queue SET locked_until = now() - interval '1 second' WHERE id = %s",
        [old.id],
    )
    (newer,) = q.acquire("w", 1, 10)  # the takeover, unknown to the ledger
    assert newer.id == old.id and newer.leased_at != old.leased_at
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=1, max_size=2, open=True
    ) as pool:
        stop.request()
        Shutdown(
            worker_id="w",
            grace_period=5,
            max_backoff=0.1,
            ledger=book,
            flusher=flusher_of(pool, book, []),
            release=q.release,
            stop=stop,
            wake=wake,
            emit=lambda events: None,
        ).run()
    assert book.held == 0
    found = db.execute("SELECT status, locked_until FROM daz_retry_queue WHERE id = %s", [old.id])
    assert found.fetchone() == ("processing", newer.locked_until), "the newer lease was released"


def test_a_snoozed_item_leased_again_by_a_lost_acquire_is_taken_up(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    """A snooze spends no attempt: written with no delay while another
    lane's acquire, whose reply is lost, leases the item again, the new lease
    has the same retry_count as the old one, whose outcome is still being
    written. The adoption asked for the leases it did not know by (id,
    retry_count), took the new lease for the old one and left it to run out
    under the live worker. Leases are now known by their granted
    locked_until."""
    item_id = q.add("e", {"i": 0}).id
    book = Ledger(batch_size=5, capacity=10, stopping=threading.Event(), lease=10)
    steps: list[Any] = []
    with ConnectionPool(
        module_dsn, kwargs={"autocommit": True}, min_size=2, max_size=3, open=True
    ) as pool:
        flusher = flusher_of(pool, book, steps)
        assert flusher.flush(force=True, acquire=1)[1] == 1
        first = book.take()
        assert first is not None and book.begin(first)
        book.finish(Outcome(first, ok=False, duration=0.0, snooze=0.0))

        def meanwhile() -> None:  # the snooze committed, its reply not yet read
            with pytest.raises(psycopg.OperationalError):
                flusher.flush(force=True, acquire=1)  # another lane: leased, reply lost
            flusher.flush(force=False)  # ... takes up what it does not know

        steps += [meanwhile, "lost"]
        flusher.flush(force=True)  # writes the snooze
    assert book.held == 1, "the new lease was taken for the snoozed one"
    again = book.take()
    assert again is not None and again.id == item_id and again.snoozes == 1
    assert book.begin(again)
