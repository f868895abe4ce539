"""A worker whose own configuration is wrong says so and stops (issue 13:
"the worker keeps working" must not mean "retries forever what can never
work"): a setting the SQL refuses is refused when the worker is made, and
an argument refused at run time by a statement of the worker's own
settings is a configuration error, never retried. And its signals take no
lock, and nothing says "listening" after "stopping".

Every test here failed on main before its fix (see the commit messages).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg_pool import ConnectionPool

from retryq_py import RetryQueue, RetryWorker
from retryq_py._sql import is_blank
from retryq_py.admin import running
from retryq_py.admin.target import Target
from retryq_py.config import RetryConfig
from retryq_py.errors import server_error_kind
from retryq_py.worker import Routing, WorkerParts
from retryq_py.worker.flush import FlushWriter
from retryq_py.worker.listener import Listener
from retryq_py.worker.signals import relay_signals, stop_on_signals
from tests.helpers import wait_until
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.2, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}


def ok(item: object) -> None:
    pass


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


def run_with_deadline(worker: Any, timeout: float = 20.0) -> BaseException | None:
    """worker.run(exit_when_idle=True) in a thread: the error it raised, or
    None; a run still going after `timeout` fails the test (then stopped)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run(exit_when_idle=True, install_signal_handlers=False)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        worker.stop(force=True)
        thread.join(10)
        pytest.fail(f"the worker still ran after {timeout}s: it retries what cannot work")
    return errors[0] if errors else None


# -- 1. what the SQL refuses is refused when the worker is made ------------------------

BLANK = [" ", "", "\u200b", "\u3000", "\t\n", " \u00a0\u2060", "\ufeff"]
NOT_BLANK = ["w", " w", "\u3000x", "é", "\U0001f600", "a\u200b", "t.ok"]


@pytest.mark.parametrize("blank", BLANK)
def test_a_blank_handler_key_beside_a_valid_one_is_refused(
    Worker: WorkerType, module_dsn: str, blank: str
) -> None:
    """The tester's case: {"t.ok": h, " ": h} was accepted, then every
    acquire failed with 22023 and the worker retried it forever."""
    with pytest.raises(ValueError, match=r"event_types: handler key .* blank"):
        Worker(module_dsn, {"t.ok": ok, blank: ok}, **FAST)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"plugin_names": [" "]}, "plugin_names"),
        ({"plugin_names": ["", "\u200b"]}, "plugin_names"),
        ({"plugin_names": ["p", None]}, "plugin_names"),
        ({"plugin_names": [f"p{n}" for n in range(1001)]}, "plugin_names"),
        ({"lock_timeout": 100000}, "lock_timeout"),
        ({"lock_timeout": 86400.5}, "lock_timeout"),
        ({"lock_timeout": float("nan")}, "lock_timeout"),
        ({"worker_id": " "}, "worker_id"),
        ({"worker_id": "\u200b"}, "worker_id"),
        ({"worker_id": "w" * 201}, "worker_id"),
        ({"retention_days": 36501}, "retention_days"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"max_snoozes": 1.5}, "max_snoozes"),
        ({"config": RetryConfig(lock_timeout=100000)}, "lock_timeout"),
        ({"config": RetryConfig(retention_days=-1)}, "retention_days"),
        ({"poll_interval": float("inf")}, "poll_interval"),
        ({"grace_period": -1}, "grace_period"),
    ],
)
def test_a_setting_the_sql_refuses_is_refused_by_name(
    Worker: WorkerType, module_dsn: str, options: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        Worker(module_dsn, {"t.ok": ok}, **options)


def test_more_handlers_than_acquire_routes_are_refused(module_dsn: str) -> None:
    many = {f"t{n}": ok for n in range(1001)}
    with pytest.raises(ValueError, match="event_types: 1001 given"):
        RetryWorker(module_dsn, many)
    assert RetryWorker(module_dsn, many, all_event_types=True).routing.event_types is None


def test_the_edges_the_sql_accepts_are_accepted(module_dsn: str) -> None:
    worker = RetryWorker(
        module_dsn,
        {"t.ok": ok, " t": ok},
        worker_id="w" * 200,
        lock_timeout=86400,
        retention_days=36500,
        batch_size=1000.0,
        plugin_names=["", "p"],
    )
    assert worker.batch_size == 1000 and isinstance(worker.batch_size, int)


def test_the_blank_rule_is_the_sqls(db: Conn) -> None:
    """is_blank says what _retryq_blank says, for the names the SQL tests use."""
    for name in BLANK + NOT_BLANK:
        row = db.execute("SELECT _retryq_blank(%s)", [name]).fetchone()
        assert row is not None
        assert is_blank(name) == row[0], name


@pytest.mark.parametrize(
    "refused",
    [
        {"p_event_types": ["t.ok", " "]},
        {"p_event_types": ["t.ok", "\u200b"]},
        {"p_plugin_names": [" "]},
        {"p_lock_timeout_seconds": 86401},
        {"p_worker_id": " "},
    ],
)
def test_what_the_constructor_refuses_the_sql_refuses_too(
    db: Conn, refused: dict[str, Any]
) -> None:
    """The two checks are one rule: each value refused above is one acquire refuses."""
    args = {"p_worker_id": "w", "p_batch_size": 1, **refused}
    named = ", ".join(f"{k} => %({k})s" for k in args)
    with pytest.raises(pgerr.InvalidParameterValue):
        db.execute(f"SELECT * FROM acquire_retry_items({named})", args)  # type: ignore[arg-type]


# -- 2. the net behind it: an argument refused at run time stops the worker ------------


def routed(routing: Routing, lock_seconds: int | None = None) -> WorkerParts:
    """A writer that sends what the constructor would refuse (a settings
    check the SQL gained after this worker's release, say)."""
    return WorkerParts(
        writer=lambda s: FlushWriter(
            s.worker_id, s.schema, lock_seconds or s.lock_seconds, s.max_snoozes, routing
        )
    )


@pytest.mark.parametrize(
    "parts",
    [
        routed(Routing(("t.ok", " "), None)),
        routed(Routing(("t.ok",), (" ",))),
        routed(Routing(("t.ok",), None), lock_seconds=100000),
    ],
    ids=["blank-event-type", "blank-plugin", "lock-timeout"],
)
def test_an_argument_acquire_refuses_stops_the_worker_and_says_so(
    module_dsn: str, db: Conn, parts: WorkerParts, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: "database error ... retrying in 0.1s" up to 10 s, forever."""
    item = RetryQueue(db).add("t.ok", {}).id
    error = run_with_deadline(RetryWorker(module_dsn, {"t.ok": ok}, parts=parts, **FAST))
    assert isinstance(error, pgerr.InvalidParameterValue), error
    assert any(
        "configuration error" in r.getMessage() and "22023" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    row = db.execute(
        "SELECT status, locked_by FROM daz_retry_queue WHERE id = %s", [item]
    ).fetchone()
    assert row == ("pending", None)


def test_own_argument_refusals_are_configuration_errors_only_for_own_statements() -> None:
    for exc in (
        pgerr.InvalidParameterValue("x"),
        pgerr.NumericValueOutOfRange("x"),
        pgerr.InvalidTextRepresentation("x"),
    ):
        assert server_error_kind(exc, own_arguments=True) == "configuration"
        assert server_error_kind(exc) == "item"  # an outcome's value: that item alone
    assert server_error_kind(pgerr.QueryCanceled("x"), own_arguments=True) == "transient"
    assert server_error_kind(pgerr.StringDataRightTruncation("x"), own_arguments=True) == "item"


class RenewingWrongly(RetryQueue):
    """The heartbeat's renewal with a lease the SQL refuses."""

    def extend_locks(
        self, item_ids: Iterable[int], worker_id: str, lock_timeout: Any = 300, *rest: Any
    ) -> set[int]:
        return super().extend_locks(item_ids, worker_id, 100000, *rest)


def test_a_renewal_the_sql_refuses_stops_the_worker_and_releases_its_items(
    module_dsn: str, db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: "heartbeat failed" every beat while the leases ran out under a
    worker that went on leasing."""
    item = RetryQueue(db).add("slow", {}).id
    gate = threading.Event()

    def slow(it: object) -> None:
        gate.wait(15)

    parts = WorkerParts(queue=lambda pool, schema: RenewingWrongly(pool, schema=schema))
    worker = RetryWorker(
        module_dsn, {"slow": slow}, parts=parts, **{**FAST, "lock_timeout": 2, "grace_period": 30}
    )
    try:
        error = run_with_deadline(worker)
    finally:
        gate.set()
    assert isinstance(error, pgerr.InvalidParameterValue), error
    assert any("configuration error" in r.getMessage() for r in caplog.records)
    row = db.execute(
        "SELECT status, locked_by, retry_count FROM daz_retry_queue WHERE id = %s", [item]
    ).fetchone()
    assert row == ("pending", None, 0)  # released, no attempt spent


# -- 3. signal handlers take no lock -----------------------------------------------------


def test_a_second_signal_inside_the_first_ones_stop_is_handled_after_it() -> None:
    """gdb's picture: the main thread inside on_signal -> stop() -> Event.set()
    holding the Event's lock, a second SIGTERM, its handler in the same
    thread wanting the same lock: a deadlock. Here the stop holds a lock of
    its own and the second signal lands inside it, every time."""
    lock = threading.Lock()  # not reentrant, as Event's condition lock
    calls: list[str] = []
    deadlocked: list[bool] = []

    def stop() -> None:
        if not lock.acquire(timeout=5):  # the old handler, re-entered, waits for itself
            deadlocked.append(True)
            return
        try:
            calls.append(threading.current_thread().name)
            if len(calls) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(10000):  # pending handlers run between bytecodes
                    pass
        finally:
            lock.release()

    with stop_on_signals(stop, "w"):
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: len(calls) + len(deadlocked) >= 2, timeout=15, what="two stops")
    assert not deadlocked
    assert calls == ["retryq-signals", "retryq-signals"]


def test_the_cli_stops_the_worker_outside_the_signal_handler() -> None:
    """The CLI's own handler (admin.running) the same way: the worker's stop
    runs in the relay thread, and SIGINT is still recorded for exit 130."""
    lock = threading.Lock()
    stops: list[str] = []

    class Worker:
        worker_id = "w"

        def stop(self) -> None:
            with lock:
                stops.append(threading.current_thread().name)

    received: list[int] = []
    # nested: the lock is released before the block's end waits for the relay
    with running._signals_stop(Worker(), received):  # type: ignore[arg-type]  # noqa: SIM117
        with lock:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10000):  # the handlers run here, while this thread holds the lock
                pass
    # the block's end relays every signal received before it
    assert received == [signal.SIGINT, signal.SIGTERM]
    assert stops == ["retryq-signals", "retryq-signals"]


def test_the_relay_restores_the_previous_handlers() -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen: list[signal.Signals] = []
    with relay_signals(seen.append):
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
    assert seen == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is before


# -- 4. the start-up check: a timeout is not unreachability ------------------------------


def test_the_start_up_check_waits_out_a_statement_timeout(
    module_dsn: str, db: Conn, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A role with statement_timeout='1ms' made the check fail with 57014,
    and `retryq worker` exit 3 "database unreachable". It is transient, as
    for the running worker: logged, tried again with a backoff."""
    real = running.check
    failures = [pgerr.QueryCanceled("canceling statement due to statement timeout")] * 2

    def check(t: Target) -> None:
        if failures:
            raise failures.pop()
        real(t)

    monkeypatch.setattr(running, "check", check)
    RetryQueue(db).add("t.ok", {})
    counts = running.run_worker(
        Target(module_dsn), {"t.ok": ok}, RetryConfig(cleanup_interval=0), exit_when_idle=True
    )
    assert counts.processed == 1
    retried = [r.getMessage() for r in caplog.records if "start-up check" in r.getMessage()]
    assert len(retried) == 2 and "57014" in retried[0] and "retrying in" in retried[0], retried


def test_the_start_up_check_raises_what_no_retry_can_help(monkeypatch: pytest.MonkeyPatch) -> None:
    def check(t: Target) -> None:
        raise pgerr.InsufficientPrivilege("permission denied for schema app")

    monkeypatch.setattr(running, "check", check)
    with pytest.raises(pgerr.InsufficientPrivilege):
        running.preflight(Target("dbname=x"), sleep=lambda s: None)


# -- 5. nothing says "listening" after "stopping" ------------------------------------------


def test_the_listener_says_nothing_once_the_worker_is_stopping(
    module_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The stop comes while the listener connects and probes (an
    exit_when_idle run that found nothing): it logged "listening on" after
    the worker's "stopping"."""
    stopping = threading.Event()
    caplog.set_level(logging.INFO, logger="retryq.worker")
    listener = Listener(
        module_dsn,
        worker_id="w",
        schema=None,
        connect_timeout=5,
        max_backoff=0.1,
        stopping=stopping,
        on_notify=stopping.set,  # its first call comes right after LISTEN
    )
    listener.run()
    assert not [r for r in caplog.records if "listening on" in r.getMessage()]


def test_a_pool_of_yours_with_a_refused_setting_is_refused_before_it_runs(
    module_dsn: str,
) -> None:
    with (
        ConnectionPool(module_dsn, open=True, min_size=1, max_size=2) as pool,
        pytest.raises(ValueError, match="lock_timeout"),
    ):
        RetryWorker(pool, {"t.ok": ok}, lock_timeout=86401)
