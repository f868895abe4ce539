"""RetryQueue and AsyncRetryQueue against a real PostgreSQL: every method, typed
results, errors, transactions, pools, another schema; and error classification.

The clock moves through the methods' `now` argument, never by sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from retryq_py import (
    AsyncRetryQueue,
    CleanupResult,
    Enqueued,
    PermanentError,
    RetryableError,
    RetryConfig,
    RetryQueue,
    RetryQueueItem,
    StatsRow,
    error_code,
    is_retryable,
    migrate,
)
from tests.helpers import count

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
W = "worker-a"


@pytest.fixture
def db(module_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


@pytest.fixture
def q(db: psycopg.Connection[Any]) -> RetryQueue:
    return RetryQueue(db)


def status_of(db: psycopg.Connection[Any], item_id: int) -> str | None:
    row = db.execute("SELECT status FROM daz_retry_queue WHERE id = %s", [item_id]).fetchone()
    return None if row is None else str(row[0])


# -- add ---------------------------------------------------------------------


def test_add_stores_every_field_and_returns_id_and_event_id(q: RetryQueue) -> None:
    added = q.add(
        "cytube.event.chatMsg",
        {"msg": "hi", "n": [1, 2]},
        channel="lobby",
        plugin="chat",
        metadata={"retry_reason": "initial_failure"},
        max_retries=5,
        retry_delay=timedelta(seconds=30),
        backoff_multiplier=3.0,
        priority=7,
        correlation_id="corr-1",
        tags=["chat", "lobby"],
        now=T0,
    )
    assert isinstance(added, Enqueued)
    item_id, event_id = added
    assert isinstance(item_id, int) and isinstance(event_id, UUID)
    row = q.get(item_id)
    assert row is not None
    assert (row.event_type, row.channel_name, row.plugin_name) == (
        "cytube.event.chatMsg",
        "lobby",
        "chat",
    )
    assert row.event_data == {"msg": "hi", "n": [1, 2]}
    assert row.event_metadata == {"retry_reason": "initial_failure"}
    assert (row.max_retries, row.retry_delay_seconds, row.backoff_multiplier) == (5, 30.0, 3.0)
    assert (row.priority, row.correlation_id, row.tags) == (7, "corr-1", ["chat", "lobby"])
    assert (row.status, row.event_id, row.next_retry_at) == ("pending", event_id, T0)


def test_add_defaults_follow_the_guide_or_the_config(db: psycopg.Connection[Any]) -> None:
    plain = RetryQueue(db).get(RetryQueue(db).add("e", [1]).id)
    assert plain is not None
    assert (plain.max_retries, plain.retry_delay_seconds, plain.backoff_multiplier) == (3, 60, 2)
    assert (plain.priority, plain.tags, plain.event_metadata) == (5, [], {})
    cfg = RetryConfig(max_retries=7, initial_delay=1.5, backoff_multiplier=4.0)
    configured = RetryQueue(db, config=cfg)
    row = configured.get(configured.add("e", "text").id)
    assert row is not None
    assert (row.max_retries, row.retry_delay_seconds, row.backoff_multiplier) == (7, 1.5, 4.0)
    assert row.event_data == "text"


def test_add_many_takes_the_config_defaults_and_per_item_overrides(
    db: psycopg.Connection[Any],
) -> None:
    cfg = RetryConfig(max_retries=7, initial_delay=1.5, backoff_multiplier=2.0)
    configured = RetryQueue(db, config=cfg)
    made = configured.add_many(
        [
            {"event_type": "e", "data": 1},
            {"event_type": "e", "data": 2, "max_retries": 3, "retry_delay": 60},
        ]
    )
    got = [configured.get(m.id) for m in made]
    assert [(r.max_retries, r.retry_delay_seconds, r.backoff_multiplier) for r in got if r] == [
        (7, 1.5, 2.0),
        (3, 60.0, 2.0),
    ]


def test_add_with_delay_is_not_due_before_its_time(q: RetryQueue) -> None:
    item_id = q.add("e", {}, delay=90, now=T0).id
    assert q.acquire(W, now=T0 + timedelta(seconds=89)) == []
    assert [i.id for i in q.acquire(W, now=T0 + timedelta(seconds=90))] == [item_id]


def test_add_rejects_bad_values_naming_the_field(
    q: RetryQueue, db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(pgerr.CheckViolation, match="priority"):
        q.add("e", {}, priority=11)
    with pytest.raises(pgerr.InvalidParameterValue, match="delay_seconds"):
        q.add("e", {}, delay=-1)
    with pytest.raises(pgerr.CheckViolation, match="event_data"):
        q.add("e", None)
    with pytest.raises(TypeError, match="cannot store object"):
        q.add("e", {"x": object()})
    with pytest.raises(TypeError, match="retry_delay"):
        q.add("e", {}, retry_delay="60s")  # type: ignore[arg-type]
    assert count(db) == 0


# -- add_many ----------------------------------------------------------------------


def test_add_many_returns_ids_in_input_order(q: RetryQueue) -> None:
    items: list[Any] = [
        {"event_type": "a", "data": {"i": 0}, "priority": 9},
        q.item("b", [1], delay=5, tags=["t"]),
        {"event_type": "c", "data": 3, "correlation_id": "k", "metadata": {"m": True}},
    ]
    added = q.add_many(items, now=T0)
    assert [type(a) for a in added] == [Enqueued] * 3
    rows = [q.get(a.id) for a in added]
    assert [r.event_type for r in rows if r] == ["a", "b", "c"]
    b, c = rows[1], rows[2]
    assert b is not None and c is not None
    assert (b.tags, b.next_retry_at) == (["t"], T0 + timedelta(seconds=5))
    assert (c.correlation_id, c.event_metadata, c.event_data) == ("k", {"m": True}, 3)
    assert q.add_many([]) == []


def test_add_many_is_all_or_nothing(q: RetryQueue, db: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgerr.CheckViolation, match="priority"):
        q.add_many(
            [{"event_type": "ok", "data": {}}, {"event_type": "x", "data": {}, "priority": 0}]
        )
    with pytest.raises(ValueError, match="'data'"):
        q.add_many([{"event_type": "no data"}])
    assert count(db) == 0




# -- acquire and the lease ---------------------------------------------------------


def test_acquire_returns_frozen_typed_items(q: RetryQueue) -> None:
    q.add("e", {"k": "v"}, metadata={"m": 1}, tags=["x"], correlation_id="c1", now=T0)
    q.add("bare", ["l"], now=T0)
    items = q.acquire(W, 10, 120, now=T0)
    assert [type(i) for i in items] == [RetryQueueItem, RetryQueueItem]
    full, bare = items
    assert (full.event_data, full.event_metadata, full.tags) == ({"k": "v"}, {"m": 1}, ["x"])
    assert full.correlation_id == "c1"
    # the guide's struct has plain strings: unset text columns are ''
    assert (bare.channel_name, bare.plugin_name, bare.correlation_id) == ("", "", "")
    assert bare.event_data == ["l"]
    assert full.locked_until == T0 + timedelta(seconds=120)
    assert (full.retry_count, full.max_retries, full.is_last_attempt) == (0, 3, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.retry_count = 1  # type: ignore[misc]


def test_acquire_respects_batch_size_and_rejects_bad_arguments(q: RetryQueue) -> None:
    q.add_many([{"event_type": "e", "data": i} for i in range(5)], now=T0)
    assert len(q.acquire(W, 2, now=T0)) == 2
    assert len(q.acquire("worker-b", 10, now=T0)) == 3
    with pytest.raises(pgerr.InvalidParameterValue, match="batch_size"):
        q.acquire(W, 0)
    with pytest.raises(pgerr.InvalidParameterValue, match="worker_id"):
        q.acquire(" ")


def test_lock_timeout_rounds_up_to_whole_seconds(q: RetryQueue) -> None:
    q.add("e", {}, now=T0)
    (item,) = q.acquire(W, 1, 0.2, now=T0)
    assert item.locked_until == T0 + timedelta(seconds=1)


def test_complete_only_by_the_lease_holder(q: RetryQueue, db: psycopg.Connection[Any]) -> None:
    ids = [a.id for a in q.add_many([{"event_type": "e", "data": i} for i in range(3)], now=T0)]
    q.acquire(W, 3, now=T0)
    assert q.complete(ids[0], "someone-else") is False
    assert q.complete(ids[0], W) is True
    assert q.complete(ids[0], W) is False
    assert q.complete_many(ids, W) == 2
    assert q.complete_many([], W) == 0
    assert [status_of(db, i) for i in ids] == ["completed"] * 3


def test_fail_backs_off_then_dead_letters(q: RetryQueue) -> None:
    item_id = q.add("e", {}, max_retries=1, retry_delay=10, now=T0).id
    q.acquire(W, now=T0)
    assert q.fail(item_id, "other", "nope") is False
    assert q.fail(item_id, W, "timeout", "08006", now=T0) is True
    row = q.get(item_id)
    assert row is not None
    assert (row.status, row.retry_count, row.next_retry_at) == (
        "pending",
        1,
        T0 + timedelta(seconds=10),
    )
    assert q.acquire(W, now=T0 + timedelta(seconds=9)) == []
    (again,) = q.acquire(W, now=T0 + timedelta(seconds=10))
    assert again.is_last_attempt
    assert q.fail(item_id, W, "still down", "08006", now=T0 + timedelta(seconds=11))
    row = q.get(item_id)
    assert row is not None and row.status == "dead_letter"
    assert [(h["error"], h["code"]) for h in row.error_history] == [
        ("timeout", "08006"),
        ("still down", "08006"),
    ]


def test_fail_not_retryable_dead_letters_at_once(q: RetryQueue) -> None:
    item_id = q.add("e", {}, max_retries=5).id
    q.acquire(W)
    assert q.fail(item_id, W, "bad payload", "E_BAD", retryable=False)
    row = q.get(item_id)
    assert row is not None
    assert (row.status, row.last_error_code, row.error_history[0]["retryable"]) == (
        "dead_letter",
        "E_BAD",
        False,
    )


def test_extend_lock_and_release(q: RetryQueue) -> None:
    a, b = (x.id for x in q.add_many([{"event_type": "e", "data": 1}] * 2, now=T0))
    q.acquire(W, 2, 10, now=T0)
    assert q.extend_lock(a, W, 60, now=T0 + timedelta(seconds=5)) is True
    assert q.extend_lock(a, "other", 60) is False
    row = q.get(a)
    assert row is not None and row.locked_until == T0 + timedelta(seconds=65)
    assert q.extend_locks([a, b, 999], W, 30) == {a, b}
    assert q.release([a, b], "other") == 0
    assert q.release([a, b], W) == 2
    row = q.get(a)
    assert row is not None
    assert (row.status, row.retry_count, row.locked_by) == ("pending", 0, None)
    assert q.extend_lock(a, W) is False


# -- operating --------------------------------------------------------------------


def test_requeue_dead_letters_by_filter(q: RetryQueue) -> None:
    ids = [a.id for a in q.add_many([{"event_type": t, "data": {}} for t in "aab"])]
    q.acquire(W, 3)
    for item_id in ids:
        q.fail(item_id, W, "x", "E1", retryable=False)
    with pytest.raises(pgerr.InvalidParameterValue, match="item_ids"):
        q.requeue_dead_letters()
    assert q.requeue_dead_letters(event_type="a") == 2
    assert q.requeue_dead_letters([ids[2]], error_code="other") == 0
    assert q.requeue_dead_letters([ids[2]]) == 1
    assert {i.id for i in q.acquire(W, 10)} == set(ids)


def test_purge_dead_letters_by_filter(q: RetryQueue, db: psycopg.Connection[Any]) -> None:
    ids = [a.id for a in q.add_many([{"event_type": t, "data": {}} for t in "aab"])]
    q.acquire(W, 3)
    for item_id in ids:
        q.fail(item_id, W, "x", "E1", retryable=False)
    with pytest.raises(pgerr.InvalidParameterValue, match="item_ids"):
        q.purge_dead_letters()
    assert q.purge_dead_letters(event_type="a") == 2
    assert q.purge_dead_letters([ids[2]], error_code="other") == 0
    assert q.purge_dead_letters([ids[2]]) == 1
    assert [status_of(db, i) for i in ids] == [None, None, None]


def test_cleanup_removes_old_finished_items_and_archives_dead_letters(
    q: RetryQueue, db: psycopg.Connection[Any]
) -> None:
    done, dead, live = (a.id for a in q.add_many([{"event_type": "e", "data": {}}] * 3, now=T0))
    q.acquire(W, 2, now=T0)
    q.complete(done, W, now=T0)
    q.fail(dead, W, "x", retryable=False, now=T0)
    assert q.cleanup(7, now=T0 + timedelta(days=6)) == CleanupResult(0, 0)
    assert q.cleanup(7, now=T0 + timedelta(days=8)) == CleanupResult(2, 1)
    assert [status_of(db, i) for i in (done, dead, live)] == [None, None, "pending"]
    archived = db.execute("SELECT id FROM daz_retry_queue_archive").fetchall()
    assert archived == [(dead,)]
    with pytest.raises(pgerr.InvalidParameterValue, match="retention_days"):
        q.cleanup(-1)


def test_try_cleanup_skips_while_another_session_runs_it(q: RetryQueue, module_dsn: str) -> None:
    item_id = q.add("e", {}, now=T0).id
    q.acquire(W, now=T0)
    q.complete(item_id, W, now=T0)
    with psycopg.connect(module_dsn) as other:
        holder = RetryQueue(other)
        with other.transaction():
            other.execute(holder._q.try_cleanup_lock)
            assert q.try_cleanup(0, now=T0 + timedelta(days=1)) is None
        assert q.try_cleanup(0, now=T0 + timedelta(days=1)) == CleanupResult(1, 0)


def test_stats_are_typed_rows(q: RetryQueue) -> None:
    q.add_many(
        [{"event_type": "a", "data": 1, "plugin": "p"}] * 2 + [{"event_type": "b", "data": 1}]
    )
    q.acquire(W, 1)
    rows = q.stats()
    assert all(isinstance(r, StatsRow) for r in rows)
    got = {(r.status, r.event_type, r.plugin_name): (r.item_count, r.leased_count) for r in rows}
    assert got == {
        ("pending", "a", "p"): (1, 0),
        ("processing", "a", "p"): (1, 1),
        ("pending", "b", None): (1, 0),
    }


def test_due_reports_active_items_and_the_next_due_time(q: RetryQueue) -> None:
    empty = q.due()
    assert (empty.active, empty.seconds_until_due) == (False, None)
    q.add("e", {}, delay=3600)
    later = q.due()
    assert later.active is True
    assert later.seconds_until_due is not None and 3590 < later.seconds_until_due <= 3600
    q.add("e", {})
    now_due = q.due().seconds_until_due
    assert now_due is not None and now_due <= 0


def test_channel_names_the_schema(q: RetryQueue) -> None:
    assert q.channel() == "public.daz_retry_queue"


# -- transactions, pools, schemas ----------------------------------------------------


def test_with_a_connection_the_caller_owns_the_transaction(module_dsn: str, db: Any) -> None:
    with psycopg.connect(module_dsn) as conn:
        q = RetryQueue(conn)
        q.add("e", {})
        assert count(db) == 0  # not committed yet
        conn.rollback()
        with conn.transaction():
            q.add("e", {})
    assert count(db) == 1


def test_with_a_pool_every_call_commits(module_dsn: str, db: psycopg.Connection[Any]) -> None:
    with ConnectionPool(module_dsn, min_size=1, max_size=2) as pool:
        q = RetryQueue(pool)
        item_id = q.add("e", {}).id
        assert count(db) == 1
        (item,) = q.acquire(W)
        assert q.complete(item.id, W)
        assert status_of(db, item_id) == "completed"


def test_schema_option_reaches_a_queue_off_the_search_path(new_database: Any) -> None:
    dsn = new_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA jobs")
        migrate.apply(dsn, schema="jobs")
        q = RetryQueue(conn, schema="jobs")
        item_id = q.add("e", {}).id
        assert q.channel() == "jobs.daz_retry_queue"
        assert [i.id for i in q.acquire(W)] == [item_id]
        assert q.complete(item_id, W)
        assert [(r.status, r.item_count) for r in q.stats()] == [("completed", 1)]
        with pytest.raises(pgerr.UndefinedFunction):
            RetryQueue(conn).add("e", {})


def test_async_queue_over_a_connection_and_a_pool(module_dsn: str, db: Any) -> None:
    async def scenario() -> None:
        conn = await psycopg.AsyncConnection.connect(module_dsn, autocommit=True)
        async with conn:
            q = AsyncRetryQueue(conn)
            added = await q.add("e", {"a": 1}, now=T0)
            many = await q.add_many([{"event_type": "e", "data": 2}], now=T0)
            assert len(await q.add_many([q.item("e", 3)])) == 1
            items = await q.acquire(W, 10, now=T0)
            # the item without now is due at the real now(), before T0: it comes first
            assert [i.event_data for i in items] == [3, {"a": 1}, 2]
            assert await q.complete(added.id, W)
            assert await q.fail(many[0].id, W, "x", retryable=False)
            assert await q.extend_lock(items[0].id, W, 30)
            assert await q.extend_locks([items[0].id], W) == {items[0].id}
            assert await q.release([items[0].id], W) == 1
            assert await q.requeue_dead_letters([many[0].id]) == 1
            assert (await q.cleanup(0)).deleted_count == 1
            assert await q.try_cleanup(0) == CleanupResult(0, 0)
            assert {r.status for r in await q.stats()} == {"pending"}
            assert (await q.due()).active is True
            assert await q.channel() == "public.daz_retry_queue"
            got = await q.get(many[0].id)
            assert got is not None and got.status == "pending"
        async with AsyncConnectionPool(module_dsn, min_size=1, max_size=2) as pool:
            pq = AsyncRetryQueue(pool)
            await pq.add("pooled", {})
            assert await pq.complete_many([i.id for i in await pq.acquire(W, 10)], W) == 3

    asyncio.run(scenario())
    assert count(db) == 3


# -- error classification ----------------------------------------------------------


def _raise(conn: psycopg.Connection[Any], sqlstate: str) -> psycopg.Error:
    try:
        conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '" + sqlstate + "'; END $$"
        )
    except psycopg.Error as exc:
        return exc
    raise AssertionError("no error raised")


@pytest.mark.parametrize(
    ("sqlstate", "retryable"),
    [
        ("08006", True),  # connection failure
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock
        ("57P01", True),  # admin shutdown
        ("53300", True),  # too many connections
        ("53100", True),  # disk full
        ("42601", False),  # syntax error
        ("42501", False),  # insufficient privilege
        ("23505", False),  # unique violation
        ("23514", False),  # check violation
        ("22P02", False),  # invalid text representation
    ],
)
def test_is_retryable_by_sqlstate(
    db: psycopg.Connection[Any], sqlstate: str, retryable: bool
) -> None:
    exc = _raise(db, sqlstate)
    assert exc.sqlstate == sqlstate
    assert is_retryable(exc) is retryable
    assert error_code(exc) == sqlstate


def test_is_retryable_on_real_failures(module_dsn: str, db: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.Error) as syntax:
        db.execute("SELEC 1")
    assert not is_retryable(syntax.value)
    db.execute("CREATE TEMP TABLE u (k int PRIMARY KEY)")
    db.execute("INSERT INTO u VALUES (1)")
    with pytest.raises(psycopg.Error) as dup:
        db.execute("INSERT INTO u VALUES (1)")
    assert not is_retryable(dup.value)
    with psycopg.connect(module_dsn, autocommit=True) as victim:
        pid = victim.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", [pid])
        with pytest.raises(psycopg.OperationalError) as lost:
            victim.execute("SELECT 1")
    assert is_retryable(lost.value)


def test_wrapper_errors_carry_their_code() -> None:
    boom = ValueError("boom")
    assert is_retryable(boom)  # unclassified: retry
    assert error_code(boom) is None
    assert is_retryable(RetryableError(boom, "E1"))
    assert RetryableError(boom, "E1").code == "E1"
    assert RetryableError("plain text").err == "plain text"
    assert not is_retryable(PermanentError("bad"))
    cause = pgerr.DeadlockDetected("deadlock")
    assert error_code(RetryableError(cause)) == "40P01"  # the class carries the SQLSTATE
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = cause
    assert is_retryable(wrapped)


def test_wrapped_sqlstate_is_found(db: psycopg.Connection[Any]) -> None:
    exc = _raise(db, "23505")
    assert RetryableError(exc).code == "23505"
    assert PermanentError(exc).code == "23505"
    outer = RuntimeError("while saving")
    outer.__cause__ = exc
    assert not is_retryable(outer)
    assert error_code(outer) == "23505"


def test_add_many_stores_what_add_stores(db: psycopg.Connection[Any]) -> None:
    """add_many leaves SQL defaults out of its JSON: the rows must not differ."""
    cfg = RetryConfig(max_retries=4, initial_delay=2.0, backoff_multiplier=3.0)
    q = RetryQueue(db, config=cfg)
    variants: list[dict[str, Any]] = [
        {},
        {"max_retries": 3, "retry_delay": 60, "backoff_multiplier": 2.0},
        {"channel": "c", "plugin": "p", "metadata": {"k": 1}, "tags": ("a",), "priority": 9},
        {"delay": timedelta(seconds=5), "max_retry_delay": 100, "retry_jitter": 0.5},
        {"correlation_id": "x", "channel": None, "max_retries": None},
    ]
    columns = (
        "event_type, channel_name, plugin_name, event_data, event_metadata, max_retries,"
        " retry_delay_seconds, backoff_multiplier, max_retry_delay_seconds, retry_jitter,"
        " priority, correlation_id, tags, next_retry_at - created_at"
    )
    for extra in variants:
        single = q.add("e", {"v": 1}, **extra, now=T0).id
        (bulk,) = q.add_many([{"event_type": "e", "data": {"v": 1}, **extra}], now=T0)
        (bulk_item,) = q.add_many([q.item("e", {"v": 1}, **extra)], now=T0)
        rows = [
            db.execute(f"SELECT {columns} FROM daz_retry_queue WHERE id = %s", [i]).fetchone()
            for i in (single, bulk.id, bulk_item.id)
        ]
        assert rows[0] == rows[1] == rows[2], extra
    with pytest.raises(TypeError, match="unknown item key 'colour'"):
        q.add_many([{"event_type": "e", "data": 1, "colour": "red"}])
