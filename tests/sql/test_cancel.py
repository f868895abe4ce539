"""cancel_retry_items: a cancelled item never runs again, pending or leased at
the time; the status is final, counted apart, and cleaned up like a dead letter.

The clock is moved through each function's p_now parameter, never by sleeping.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from retryq_py import migrate
from tests.helpers import statuses
from tests.sql.test_guide import STATS_SQL
from tests.sql.test_interleavings import blocked
from tests.sql.test_sql_functions import (
    T0,
    Conn,
    _completed,
    _dead,
    acquire,
    call,
    complete,
    count_where,
    enqueue,
    fail,
    ids,
    row,
    s,
    scalar,
)

CANCEL = "cancel_retry_items"
AT = T0 + timedelta(seconds=10)  # when the tests cancel, unless they say
FAR = T0 + timedelta(days=1)  # every lease long expired, every retry due


@pytest.fixture
def dsn(module_dsn: str, module_reset: str) -> str:
    """The module's database, emptied before each test."""
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
    return module_dsn


def cancel(conn: Conn, now: datetime = AT, **filters: Any) -> int:
    return int(scalar(conn, CANCEL, now=now, **filters))


def test_a_cancelled_pending_item_never_runs(conn: Conn) -> None:
    doomed = enqueue(conn)
    kept = enqueue(conn)
    assert cancel(conn, item_ids=[doomed]) == 1
    r = row(conn, doomed)
    assert (r["status"], r["completed_at"], r["locked_by"]) == ("cancelled", T0 + s(10), None)
    assert ids(acquire(conn, "w", now=FAR)) == [kept]
    assert complete(conn, kept, "w", now=FAR)
    assert acquire(conn, "w2", now=FAR + timedelta(days=1)) == []
    assert row(conn, doomed)["status"] == "cancelled"


def test_a_leased_item_is_cancelled_and_its_holder_learns_it(conn: Conn) -> None:
    """The holder's heartbeat, completion and failure all find no lease: its
    outcome is never recorded, and nobody takes the item over when the lease
    would have run out."""
    items = [enqueue(conn) for _ in range(4)]
    assert ids(acquire(conn, "w1", lock=60)) == items
    assert cancel(conn, item_ids=items) == 4
    extended = scalar(conn, "extend_retry_lock", item_id=items[0], worker_id="w1", now=T0 + s(20))
    assert extended is False
    assert complete(conn, items[0], "w1", now=T0 + s(20)) is False
    assert fail(conn, items[1], "w1", now=T0 + s(20)) is False
    assert fail(conn, items[2], "w1", now=T0 + s(20), retryable=False) is False
    snoozed = scalar(
        conn, "snooze_retry_item", item_id=items[3], worker_id="w1", delay_seconds=5, now=T0 + s(20)
    )
    assert snoozed is False
    done = scalar(conn, "complete_retry_items", item_ids=items, worker_id="w1", now=T0 + s(20))
    assert done == 0
    assert acquire(conn, "w2", now=FAR) == []
    for item in items:
        r = row(conn, item)
        assert (r["status"], r["completed_at"], r["error_history"]) == (
            "cancelled",
            T0 + s(10),
            [],
        )


def test_a_retrying_item_keeps_its_history_when_cancelled(conn: Conn) -> None:
    item = enqueue(conn)
    acquire(conn, "w1")
    assert fail(conn, item, "w1", code="E429")
    assert cancel(conn, error_code="E429") == 1
    r = row(conn, item)
    assert (r["status"], r["retry_count"], r["last_error_code"]) == ("cancelled", 1, "E429")
    assert len(r["error_history"]) == 1
    assert acquire(conn, "w2", now=FAR) == []


def test_cancel_by_each_filter_leaves_the_rest(conn: Conn) -> None:
    a1 = enqueue(conn, event_type="a", plugin_name="p1")
    a2 = enqueue(conn, event_type="a", plugin_name="p2")
    b1 = enqueue(conn, event_type="b", plugin_name="p1")
    old = enqueue(conn, event_type="c", now=T0 - s(100))
    coded = enqueue(conn, event_type="d")
    acquire(conn, "w", batch=10)
    for item in (a1, a2, b1, old):
        scalar(conn, "release_retry_items", item_ids=[item], worker_id="w")
    assert fail(conn, coded, "w", code="E1")
    kept = enqueue(conn, event_type="e", plugin_name="p9")

    assert cancel(conn, event_type="a", plugin_name="p1") == 1
    assert row(conn, a1)["status"] == "cancelled"
    assert cancel(conn, event_type="a") == 1  # a2
    assert cancel(conn, plugin_name="p1") == 1  # b1
    assert cancel(conn, created_before=T0 - s(50)) == 1  # old
    assert cancel(conn, error_code="E1") == 1  # coded
    assert cancel(conn, event_type="nobody") == 0
    assert statuses(conn) == {"cancelled": 5, "pending": 1}
    assert ids(acquire(conn, "w2", now=FAR)) == [kept]
    assert complete(conn, kept, "w2", now=FAR)
    assert acquire(conn, "w3", now=FAR) == []


def test_finished_items_are_left_alone_and_not_counted(conn: Conn) -> None:
    done = enqueue(conn)
    dead = enqueue(conn)
    gone = enqueue(conn)
    acquire(conn, "w")
    assert complete(conn, done, "w")
    assert fail(conn, dead, "w", retryable=False)
    assert cancel(conn, item_ids=[gone]) == 1
    before = {i: row(conn, i) for i in (done, dead, gone)}
    assert cancel(conn, item_ids=[done, dead, gone, 424242], now=T0 + s(99)) == 0
    assert {i: row(conn, i) for i in (done, dead, gone)} == before


def test_a_dry_run_counts_and_changes_nothing(conn: Conn) -> None:
    done = enqueue(conn, event_type="a")
    assert ids(acquire(conn, "w", batch=1)) == [done]
    assert complete(conn, done, "w")
    leased = enqueue(conn, event_type="a")
    assert ids(acquire(conn, "w", batch=1)) == [leased]
    pending = enqueue(conn, event_type="a")
    enqueue(conn, event_type="b")
    assert cancel(conn, event_type="a", dry_run=True) == 2
    assert [row(conn, i)["status"] for i in (pending, leased)] == ["pending", "processing"]
    assert cancel(conn, event_type="a") == 2


def test_cancel_refuses_without_a_filter(conn: Conn) -> None:
    enqueue(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="item_ids"):
        call(conn, CANCEL)
    # dry_run NULL means its default, false (tests/sql/test_red_kinds.py)
    assert count_where(conn, "status = 'pending'") == 1


def test_a_row_another_transaction_holds_is_skipped_not_waited_for(conn: Conn, conn2: Conn) -> None:
    held = enqueue(conn)
    free = enqueue(conn)
    with conn2.transaction():
        conn2.execute("SELECT 1 FROM daz_retry_queue WHERE id = %s FOR UPDATE", [held])
        conn.execute("SET lock_timeout = '2s'")
        assert cancel(conn, item_ids=[held, free]) == 1
    assert row(conn, held)["status"] == "pending"
    assert row(conn, free)["status"] == "cancelled"
    assert cancel(conn, item_ids=[held]) == 1


def test_a_cancelled_item_is_final_requeue_does_not_revive_it(conn: Conn) -> None:
    item = enqueue(conn)
    cancel(conn, item_ids=[item])
    assert scalar(conn, "requeue_dead_letter_items", item_ids=[item]) == 0
    assert call(conn, "list_dead_letter_items", item_ids=[item]) == []
    assert scalar(conn, "purge_dead_letter_items", item_ids=[item]) == 0
    assert row(conn, item)["status"] == "cancelled"


def test_the_guides_stats_query_counts_cancelled_apart(conn: Conn) -> None:
    for _ in range(3):
        enqueue(conn)
    doomed = enqueue(conn)
    cancel(conn, item_ids=[doomed])
    got = {r[0]: r[1] for r in conn.execute(STATS_SQL).fetchall()}
    assert got == {"pending": 3, "cancelled": 1}
    view = conn.execute(
        "SELECT status, item_count FROM daz_retry_queue_stats ORDER BY status"
    ).fetchall()
    assert view == [("cancelled", 1), ("pending", 3)]
    assert conn.execute("SELECT count(*) FROM daz_retry_queue_alerts").fetchone() == (0,)


def test_cleanup_removes_cancelled_items_after_retention_and_archives_them(conn: Conn) -> None:
    old = [enqueue(conn) for _ in range(2)]
    young = enqueue(conn)
    cancel(conn, item_ids=old, now=T0)
    cancel(conn, item_ids=[young], now=T0 + timedelta(days=5))
    later = T0 + timedelta(days=8)
    assert call(conn, "cleanup_retry_queue_due", retention_days=7, now=later) == [
        {"due_count": 2, "dead_letter_count": 0, "archive_count": 2}
    ]
    got = call(conn, "cleanup_retry_queue", retention_days=7, now=later)
    assert got == [{"deleted_count": 2, "archived_count": 2}]
    assert {r[0] for r in conn.execute("SELECT id FROM daz_retry_queue").fetchall()} == {young}
    archived = conn.execute(
        "SELECT id, status, completed_at FROM daz_retry_queue_archive ORDER BY id"
    ).fetchall()
    assert archived == [(i, "cancelled", T0) for i in old]


def test_cleanup_due_counts_what_cleanup_then_removes_and_archives(conn: Conn) -> None:
    """cleanup_retry_queue_due and cleanup_retry_queue agree on a mix of
    completed, dead-letter and cancelled items: due_count is what cleanup
    deletes, archive_count what it archives (dead letters and cancelled items
    alike), both by one cutoff."""
    [_completed(conn, T0) for _ in range(2)]
    [_dead(conn, T0) for _ in range(3)]
    cancel(conn, item_ids=[enqueue(conn) for _ in range(4)], now=T0)
    _completed(conn, T0 + timedelta(days=6))  # young: kept
    _dead(conn, T0 + timedelta(days=6))
    cancel(conn, item_ids=[enqueue(conn)], now=T0 + timedelta(days=6))
    later = T0 + timedelta(days=8)
    due = call(conn, "cleanup_retry_queue_due", retention_days=7, now=later)
    assert due == [{"due_count": 9, "dead_letter_count": 3, "archive_count": 7}]
    got = call(conn, "cleanup_retry_queue", retention_days=7, now=later)
    assert got == [{"deleted_count": 9, "archived_count": 7}]
    assert call(conn, "cleanup_retry_queue_due", retention_days=7, now=later) == [
        {"due_count": 0, "dead_letter_count": 0, "archive_count": 0}
    ]
    # the young ones are due by the same cutoff once it passes them
    last = T0 + timedelta(days=13, seconds=1)
    due = call(conn, "cleanup_retry_queue_due", retention_days=7, now=last)
    assert due == [{"due_count": 3, "dead_letter_count": 1, "archive_count": 2}]
    got = call(conn, "cleanup_retry_queue", retention_days=7, now=last)
    assert got == [{"deleted_count": 3, "archived_count": 2}]


def test_cleanup_without_archive_drops_cancelled_items(conn: Conn) -> None:
    item = enqueue(conn)
    cancel(conn, item_ids=[item], now=T0)
    got = call(
        conn,
        "cleanup_retry_queue",
        retention_days=1,
        archive_dead_letters=False,
        now=T0 + timedelta(days=2),
    )
    assert got == [{"deleted_count": 1, "archived_count": 0}]
    assert conn.execute("SELECT count(*) FROM daz_retry_queue_archive").fetchone() == (0,)


# --- the migration ----------------------------------------------------------------------


def test_rollback_refuses_while_cancelled_items_exist_then_restores_the_bounds(
    new_database: Any,
) -> None:
    """The previous schema has no room for a cancelled row: its rollback says
    how many there are and how to remove them, and rolls back once they are
    gone, keeping the live items."""
    dsn = new_database()
    every = migrate.apply(dsn)
    mine = next(i for i in every if i.endswith("_cancel"))
    newer = len(every) - every.index(mine)
    with psycopg.connect(dsn, autocommit=True) as c:
        kept = int(scalar(c, "enqueue_retry_item", event_type="t", event_data=Jsonb(1)))
        doomed = int(scalar(c, "enqueue_retry_item", event_type="t", event_data=Jsonb(2)))
        assert cancel(c, item_ids=[doomed]) == 1
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        migrate.rollback(dsn, count=newer)
    assert "1 cancelled items" in str(refused.value)
    assert "DELETE FROM daz_retry_queue WHERE status = 'cancelled'" in str(
        refused.value.diag.message_hint
    )
    assert any(s.id == mine and s.applied for s in migrate.status(dsn))
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DELETE FROM daz_retry_queue WHERE status = 'cancelled'")
    assert migrate.rollback(dsn, count=1) == [mine]
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT id, status FROM daz_retry_queue").fetchall() == [(kept, "pending")]
        bounds = c.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = '_retryq_finished'"
        ).fetchone()
        assert bounds == ("FOR VALUES IN ('completed', 'dead_letter')",)
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute(
                "INSERT INTO daz_retry_queue (event_type, event_data, status, completed_at)"
                " VALUES ('t', '1', 'cancelled', now())"
            )
    assert migrate.apply(dsn) == every[every.index(mine) :]


# --- against an acknowledgement in flight (two connections, explicit transactions) ---------


def test_an_acknowledgement_in_flight_wins_and_the_cancel_skips_it(conn: Conn, conn2: Conn) -> None:
    """The holder's completion is uncommitted: the cancel neither waits for it
    nor counts it, and the completion stands."""
    item = enqueue(conn)
    acquire(conn, "w1")
    conn.execute("SET lock_timeout = '1s'")  # waiting would fail the cancel
    with conn2.transaction():
        assert complete(conn2, item, "w1", now=T0 + s(5))
        assert cancel(conn, item_ids=[item]) == 0
    assert row(conn, item)["status"] == "completed"


def test_a_cancel_in_flight_makes_the_holder_wait_then_lose(
    conn: Conn, conn2: Conn, dsn: str
) -> None:
    """The cancel is uncommitted: the holder's completion waits for it (its own
    lease's row, the one lock a worker waits for) and then finds no lease."""
    item = enqueue(conn)
    acquire(conn, "w1")
    with psycopg.connect(dsn, autocommit=True) as watch:
        conn.execute("BEGIN")
        assert cancel(conn, item_ids=[item]) == 1
        fut = blocked(conn2, watch, lambda: complete(conn2, item, "w1", now=T0 + s(20)))
        conn.execute("COMMIT")
        assert fut.result(timeout=10) is False
    assert row(conn, item)["status"] == "cancelled"


def test_a_transaction_that_cancelled_a_lease_never_waits_for_an_item_again(
    conn: Conn, conn2: Conn
) -> None:
    """Like a takeover: it now holds a row another worker may wait for, so it
    must not wait for one itself (the lock order of _retryq_circuit_lock)."""
    theirs = enqueue(conn)
    acquire(conn, "wB", batch=1)
    mine = enqueue(conn)
    acquire(conn, "wA", batch=1)
    conn.execute("SET lock_timeout = '1s'")  # waiting would fail the test
    with conn2.transaction():
        conn2.execute("SELECT 1 FROM daz_retry_queue WHERE id = %s FOR UPDATE", [mine])
        with conn.transaction():
            assert cancel(conn, item_ids=[theirs]) == 1
            assert complete(conn, mine, "wA", now=T0 + s(20)) is False
    assert complete(conn, mine, "wA", now=T0 + s(20)) is True
