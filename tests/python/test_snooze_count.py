"""event_metadata.retryq_snoozes read by one rule (issue F5): the queue's
snooze and the Python item agree on the count whatever a producer wrote
under the key, and the worker reports what the snooze did, from its answer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from retryq_py import RetryQueue, RetryQueueItem, Snooze, WorkerEvent
from retryq_py._sql import snooze_count
from retryq_py._sql.worker import FlushStatements
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}

# JSON text a producer may write under the key, and the count it is: only a
# whole number from 0 to 10000 (what retryq itself writes) counts
PRODUCER_VALUES = [
    ("1e300", 0),
    ("1e400", 0),
    ("-5", 0),
    ('"abc"', 0),
    ('"3"', 0),
    ("null", 0),
    ('{"a": 1}', 0),
    ("[1]", 0),
    ("true", 0),
    ("2.5", 0),
    ("10001", 0),
    ("2147483648", 0),
    ("7", 7),
    ("7.0", 7),
    ("10000", 10000),
    ("0", 0),
]


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


def leased_with(db: Conn, value: str) -> RetryQueueItem:
    # as the owner writes it: an enqueue drops the key (only the server
    # counts snoozes), an UPDATE by the owner does not
    db.execute("INSERT INTO daz_retry_queue (event_type, event_data) VALUES ('t', '{}')")
    db.execute(
        "UPDATE _retryq_active SET event_metadata"
        " = ('{\"retryq_snoozes\": ' || %s || '}')::jsonb",
        [value],
    )
    [item] = RetryQueue(db).acquire("w", 1)
    return item


@pytest.mark.parametrize(("value", "count"), PRODUCER_VALUES)
def test_the_queue_and_the_item_count_a_producers_value_alike(
    db: Conn, value: str, count: int
) -> None:
    item = leased_with(db, value)
    assert item.snoozes == count
    # the queue counts the same: one more snooze is allowed, and written
    outcome = db.execute(
        "SELECT snooze_retry_item_outcome(%s, 'w', 60, p_max_snoozes => %s)",
        [item.id, min(count + 1, 10000)],
    ).fetchone()
    if count < 10000:
        assert outcome == ("snoozed",)
        meta = db.execute(
            "SELECT event_metadata -> 'retryq_snoozes' FROM daz_retry_queue WHERE id = %s",
            [item.id],
        ).fetchone()
        assert meta == (count + 1,)
    else:
        assert outcome == ("dead_letter",)


@pytest.mark.parametrize(("value", "count"), [("1e300", 0), ("3", 3), ("3.0", 3), ("2.5", 0)])
def test_the_snooze_at_the_bound_buries_by_the_same_count(db: Conn, value: str, count: int) -> None:
    item = leased_with(db, value)
    outcome = db.execute(
        "SELECT snooze_retry_item_outcome(%s, 'w', 60, p_max_snoozes => %s)", [item.id, count]
    ).fetchone()
    assert outcome == ("dead_letter",)
    message = db.execute(
        "SELECT error_message FROM daz_retry_queue WHERE id = %s", [item.id]
    ).fetchone()
    assert message == (f"retryq: snoozed {count} times, the limit (max_snoozes {count})",)


def test_the_boolean_snooze_still_answers_whether_the_lease_was_held(db: Conn) -> None:
    item = leased_with(db, "1e300")
    assert RetryQueue(db).snooze(item.id, "not-w", 60) is False
    assert RetryQueue(db).snooze(item.id, "w", 60, max_snoozes=1) is True
    assert db.execute("SELECT snooze_retry_item_outcome(%s, 'w', 60)", [item.id]).fetchone() == (
        None,
    )


def test_snooze_count_of_values_json_cannot_make_alike() -> None:
    for value in (math.nan, math.inf, -math.inf, Decimal("NaN"), Decimal("1e300"), 3.5):
        assert snooze_count({"retryq_snoozes": value}) == 0
    assert snooze_count({"retryq_snoozes": Decimal("4")}) == 4
    assert snooze_count([1]) == 0


def test_the_worker_reports_what_the_snooze_did(
    Worker: WorkerType, module_dsn: str, db: Conn
) -> None:
    # the count changes while the handler runs (the owner edits the row):
    # the worker's copy says 0, the queue buries the item at max_snoozes 2
    def edits_then_snoozes(item: RetryQueueItem) -> None:
        with psycopg.connect(module_dsn, autocommit=True) as other:
            other.execute(
                "UPDATE _retryq_active SET event_metadata = '{\"retryq_snoozes\": 2}'"
                " WHERE id = %s",
                [item.id],
            )
        raise Snooze(300)

    item = RetryQueue(db).add("t", {}).id
    events: list[WorkerEvent] = []
    worker = Worker(
        module_dsn, {"t": edits_then_snoozes}, max_snoozes=2, on_event=events.append, **FAST
    )
    counts = worker.run(exit_when_drained=True)
    status = db.execute(
        "SELECT status, last_error_code FROM daz_retry_queue WHERE id = %s", [item]
    ).fetchone()
    assert status == ("dead_letter", "snooze_limit")
    assert (counts.dead_lettered, counts.snoozed) == (1, 0)
    assert [(e.kind, e.code) for e in events] == [("dead_lettered", "snooze_limit")]
    recorded = db.execute("SELECT error_message FROM daz_retry_queue WHERE id = %s", [item])
    assert (events[0].error,) == recorded.fetchone()


@pytest.mark.parametrize(("value", "count"), [*PRODUCER_VALUES, ("1e5000", 0)])
def test_the_worker_rereads_a_count_in_doubt_alike(db: Conn, value: str, count: int) -> None:
    """After a lost reply the worker reads the item's count again (the
    in-doubt read): by the same rule, and not the rest of the metadata,
    which may hold a number Python cannot decode (before: ValueError)."""
    row = db.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data) VALUES ('t', '{}') RETURNING id"
    ).fetchone()
    assert row is not None
    # as the owner writes it (an enqueue drops the server's key)
    db.execute(
        "UPDATE _retryq_active SET event_metadata"
        " = ('{\"retryq_snoozes\": ' || %s || ', \"n\": 1e5000}')::jsonb WHERE id = %s",
        [value, row[0]],
    )
    [read] = db.execute(FlushStatements(None).in_doubt, {"item_ids": [row[0]]}).fetchall()
    assert snooze_count(read[5]) == count
