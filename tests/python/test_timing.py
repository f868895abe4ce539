"""Retry timing from the handler (issue 14, item 3), from Python: a
RetryableError's delay and a Retry-After value reach fail_retry_item through
the worker's flush; Snooze reaches snooze_retry_item; the clients' snooze and
fail(retry_after=...). Nothing sleeps: due times are read from the row, and
the SQL tests (tests/sql/test_timing.py) move the clock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY

from retryq_py import (
    RetryableError,
    RetryQueue,
    RetryQueueItem,
    Snooze,
    WorkerEvent,
    retry_after_seconds,
)
from retryq_py.cli.logs import EventLog
from retryq_py.cli.render import worker_counts_line
from retryq_py.worker.events import Outcome
from retryq_py.worker.flush import FlushWriter
from tests.helpers import wait_until
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


@pytest.fixture
def q(db: Conn) -> RetryQueue:
    return RetryQueue(db)


def row(db: Conn, item_id: int) -> dict[str, Any]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    found = cur.execute("SELECT * FROM daz_retry_queue WHERE id = %s", [item_id]).fetchone()
    assert found is not None
    return found


def until(
    Worker: WorkerType,
    module_dsn: str,
    handlers: dict[str, Callable[[RetryQueueItem], None]],
    done: Callable[[], bool],
    **options: Any,
) -> Any:
    """Runs a worker (either: see tests/python/workers.py) until `done`
    holds (an item due later keeps exit_when_drained waiting), then stops it."""
    worker = Worker(module_dsn, handlers, worker_count=1, **{**FAST, **options})
    thread: threading.Thread = worker.start()
    try:
        wait_until(done, timeout=10, what="the handler's outcome")
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()
    return worker


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- Retry-After ---------------------------------------------------------------------

NOW = datetime(2015, 10, 21, 7, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 1680.0),  # RFC 9110's example
        ("Wednesday, 21-Oct-15 07:28:00 GMT", 1680.0),  # the obsolete RFC 850 form
        ("Wed Oct 21 07:28:00 2015", 1680.0),  # asctime
        ("Wed, 21 Oct 2015 06:00:00 GMT", None),  # past: stale, the backoff
        ("Wed, 21 Oct 2015 07:00:00 GMT", None),  # now: stale too
        ("99999999999", 31_536_000.0),  # capped at a year
        ("", None),
        (None, None),
        ("-5", None),
        ("1.5", None),  # delta-seconds are digits
        ("soon", None),
        ("٣", None),  # a digit, but not ASCII
    ],
)
def test_retry_after_seconds_reads_both_forms(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_retryable_error_takes_seconds_a_timedelta_or_a_header() -> None:
    assert RetryableError("x").delay is None
    assert RetryableError("x", delay=30).delay == 30.0
    assert RetryableError("x", delay=timedelta(minutes=2)).delay == 120.0
    assert RetryableError("x", delay="45").delay == 45.0
    assert RetryableError("x", delay="not a date").delay is None  # the backoff
    assert RetryableError("x", delay=10**9).delay == 31_536_000.0
    assert RetryableError("x", delay=30).invalid_delay is None
    # a bad delay never replaces the handler's error: ignored, and said why
    for bad in (-1, float("nan"), float("inf"), True):
        err = RetryableError("x", "E", delay=bad)  # type: ignore[arg-type]
        assert (str(err), err.code, err.delay) == ("x", "E", None)
        assert err.invalid_delay is not None and "delay" in err.invalid_delay


def test_snooze_takes_seconds_or_a_timedelta_up_to_a_year() -> None:
    assert Snooze(5).delay == 5.0
    assert Snooze(timedelta(hours=1), "not open yet").delay == 3600.0
    assert str(Snooze(timedelta(hours=1), "not open yet")) == "not open yet"
    assert Snooze(5).invalid_delay is None
    for bad in (-1, float("nan"), 31_536_001):
        snooze = Snooze(bad, "not open yet")
        assert (snooze.delay, snooze.reason, str(snooze)) == (None, "not open yet", "not open yet")
        assert snooze.invalid_delay is not None and "delay" in snooze.invalid_delay


@pytest.mark.parametrize("delay", [-5, float("nan")])
def test_a_bad_handler_delay_keeps_the_handlers_error_and_uses_the_backoff(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    caplog: pytest.LogCaptureFixture,
    delay: float,
) -> None:
    def limited(item: RetryQueueItem) -> None:
        raise RetryableError("upstream said no", "E_UPSTREAM", delay=delay)

    item = q.add("api", {}, retry_delay=7).id
    caplog.set_level(logging.WARNING, logger="retryq.worker")
    until(Worker, module_dsn, {"api": limited}, lambda: row(db, item)["retry_count"] == 1)
    r = row(db, item)
    assert r["last_error_code"] == "E_UPSTREAM"
    assert r["error_message"].startswith("upstream said no (retryq: ignored the invalid delay")
    last = r["error_history"][-1]
    assert last.get("retry_after_seconds") is None  # the backoff, not the delay
    failed_at = datetime.fromisoformat(last["failed_at"])
    assert r["next_retry_at"] - failed_at >= timedelta(seconds=3)  # 7 s with jitter
    assert any(f"item {item} (api)" in m and "invalid delay" in m for m in caplog.messages)


@pytest.mark.parametrize("delay", [-1, 10**9])
def test_a_snooze_with_a_bad_delay_fails_retryably_and_keeps_the_reason(
    Worker: WorkerType,
    module_dsn: str,
    db: Conn,
    q: RetryQueue,
    caplog: pytest.LogCaptureFixture,
    delay: float,
) -> None:
    def not_yet(item: RetryQueueItem) -> None:
        raise Snooze(delay, "the report is not ready")

    item = q.add("report", {}, retry_delay=7).id
    caplog.set_level(logging.WARNING, logger="retryq.worker")
    until(Worker, module_dsn, {"report": not_yet}, lambda: row(db, item)["retry_count"] == 1)
    r = row(db, item)
    assert (r["status"], r["last_error_code"]) == ("pending", "retryq.snooze_refused")
    assert "delay must be" in r["error_message"]
    assert r["error_message"].endswith("reason: the report is not ready")
    assert r["event_metadata"].get("retryq_snoozes") is None
    assert any(f"item {item} (report)" in m and "invalid delay" in m for m in caplog.messages)


# -- the clients ---------------------------------------------------------------------


def test_fail_with_retry_after_and_snooze_from_the_client(db: Conn, q: RetryQueue) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=timezone.utc)
    a = q.add("t", {}, retry_delay=5, now=t0).id
    b = q.add("t", {}, retry_delay=5, now=t0).id
    assert len(q.acquire("w", 2, now=t0)) == 2
    assert q.fail(a, "w", "429", "http_429", retry_after=timedelta(minutes=10), now=t0)
    assert row(db, a)["next_retry_at"] == t0 + timedelta(minutes=10)
    assert row(db, a)["retry_count"] == 1
    assert q.snooze(b, "other", 60, now=t0) is False
    assert q.snooze(b, "w", 60, max_snoozes=5, now=t0) is True
    r = row(db, b)
    assert (r["status"], r["retry_count"], r["error_history"]) == ("pending", 0, [])
    assert r["next_retry_at"] == t0 + timedelta(seconds=60)
    assert r["event_metadata"] == {"retryq_snoozes": 1}
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        q.snooze(b, "w", -1)
    assert caught.value.diag.column_name == "delay_seconds"


# -- the worker ----------------------------------------------------------------------


def test_a_handlers_delay_replaces_the_backoff(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    def limited(item: RetryQueueItem) -> None:
        raise RetryableError("429 Too Many Requests", "http_429", delay="90")

    item = q.add("api", {}, retry_delay=1).id  # the backoff would say 1 s
    until(Worker, module_dsn, {"api": limited}, lambda: row(db, item)["retry_count"] == 1)
    r = row(db, item)
    assert (r["retry_count"], r["last_error_code"]) == (1, "http_429")
    failed_at = datetime.fromisoformat(r["error_history"][-1]["failed_at"])
    assert r["next_retry_at"] - failed_at == timedelta(seconds=90)
    assert r["error_history"][-1]["retry_after_seconds"] == 90


def test_a_snooze_spends_no_attempt_and_is_counted_and_logged(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    def not_yet(item: RetryQueueItem) -> None:
        raise Snooze(300, "the report is not ready")

    before = sample("retryq_worker_items_snoozed_total", event_type="report")
    item = q.add("report", {}).id
    events: list[WorkerEvent] = []
    caplog.set_level(logging.DEBUG, logger="retryq.worker")
    worker = until(
        Worker,
        module_dsn,
        {"report": not_yet},
        lambda: "retryq_snoozes" in row(db, item)["event_metadata"],
        on_event=events.append,
    )
    r = row(db, item)
    assert (r["retry_count"], r["error_message"], r["error_history"]) == (0, None, [])
    assert r["event_metadata"] == {"retryq_snoozes": 1}
    wait = r["next_retry_at"] - db.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
    assert timedelta(seconds=290) < wait <= timedelta(seconds=300)
    assert worker.counts.snoozed == 1
    assert (worker.counts.failed, worker.counts.dead_lettered) == (0, 0)
    assert [e.kind for e in events] == ["snoozed"]
    assert sample("retryq_worker_items_snoozed_total", event_type="report") == before + 1
    assert any(
        f"item {item} (report) snoozed for 300s (snooze 1 of at most 100)" in m
        for m in caplog.messages
    )
    # what `retryq worker` logs for it, at info
    with caplog.at_level(logging.INFO, logger="retryq.worker.items"):
        EventLog()(events[0])
    line = caplog.records[-1]
    assert line.levelname == "INFO"
    assert line.getMessage().endswith(
        "snoozed for 300s (snooze 1, no attempt spent): the report is not ready"
    )
    assert (line.delay_seconds, line.snooze) == (300, 1)  # type: ignore[attr-defined]
    assert worker_counts_line(worker.counts).endswith("snoozed 1")


def test_snoozing_forever_ends_as_a_dead_letter(
    Worker: WorkerType, module_dsn: str, db: Conn, q: RetryQueue, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    def forever(item: RetryQueueItem) -> None:
        seen.append(item.snoozes)
        raise Snooze(0)

    item = q.add("loop", {}).id
    events: list[WorkerEvent] = []
    worker = Worker(module_dsn, {"loop": forever}, max_snoozes=3, on_event=events.append, **FAST)
    counts = worker.run(exit_when_drained=True)
    r = row(db, item)
    assert (r["status"], r["last_error_code"], r["retry_count"]) == (
        "dead_letter",
        "snooze_limit",
        0,
    )
    assert seen == [0, 1, 2, 3]
    assert (counts.snoozed, counts.dead_lettered, counts.failed) == (3, 1, 0)
    assert [e.kind for e in events] == ["snoozed"] * 3 + ["dead_lettered"]
    assert events[-1].code == "snooze_limit"
    assert events[-1].error == "retryq: snoozed 3 times, the limit (max_snoozes 3)"
    assert events[-1].error == r["error_message"]
    assert any("snoozed 3 times, the limit" in m for m in caplog.messages)


def test_max_snoozes_must_be_sensible(Worker: WorkerType, module_dsn: str) -> None:
    for bad in (-1, 10001):
        with pytest.raises(ValueError, match="max_snoozes"):
            Worker(module_dsn, {"t": lambda item: None}, max_snoozes=bad)


def test_a_snooze_the_queue_refuses_is_written_as_a_failure_that_says_why(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    item = q.add("t", {}).id
    (leased,) = q.acquire("w", 1)
    # past Snooze's own check: a delay the queue refuses
    refused = Outcome(leased, ok=False, duration=0.0, error="x", snooze=-1.0)
    with psycopg.connect(module_dsn) as conn:
        written = FlushWriter("w", None, 60).write(conn, [refused], 0)
    assert written.failed_written == [True]
    r = row(db, item)
    assert (r["status"], r["retry_count"], r["last_error_code"]) == (
        "pending",
        1,
        "retryq.snooze_refused",
    )
    assert "delay_seconds" in r["error_message"]
