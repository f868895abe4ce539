"""The queue client against a real PostgreSQL: every method, typed results,
errors, transactions, pools, another schema.

Written once, async, in tests/python/_async/; scripts/gen-sync makes the sync
twin in tests/python/, so every test runs for both clients. The client gets
its own connection; `db` (sync in both) looks at the tables. The clock moves
through the methods' `now` argument, never by sleeping. Error classification
is in test_errors.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg_pool import AsyncConnectionPool

from retryq_py import (
    AsyncRetryQueue,
    CleanupResult,
    Enqueued,
    RawJson,
    RetryConfig,
    RetryQueueItem,
    StatsRow,
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
async def qconn(
    module_dsn: str, db: psycopg.Connection[Any]
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """The client's connection (autocommit), opened after `db` emptied the queue."""
    async with await psycopg.AsyncConnection.connect(module_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def q(qconn: psycopg.AsyncConnection[Any]) -> AsyncRetryQueue:
    return AsyncRetryQueue(qconn)


def status_of(db: psycopg.Connection[Any], item_id: int) -> str | None:
    row = db.execute("SELECT status FROM daz_retry_queue WHERE id = %s", [item_id]).fetchone()
    return None if row is None else str(row[0])


# -- add ---------------------------------------------------------------------


async def test_add_stores_every_field_and_returns_id_and_event_id(q: AsyncRetryQueue) -> None:
    added = await q.add(
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
    row = await q.get(item_id)
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


async def test_add_defaults_follow_the_guide_or_the_config(
    qconn: psycopg.AsyncConnection[Any],
) -> None:
    plain_queue = AsyncRetryQueue(qconn)
    plain = await plain_queue.get((await plain_queue.add("e", [1])).id)
    assert plain is not None
    assert (plain.max_retries, plain.retry_delay_seconds, plain.backoff_multiplier) == (3, 60, 2)
    assert (plain.priority, plain.tags, plain.event_metadata) == (5, [], {})
    cfg = RetryConfig(max_retries=7, initial_delay=1.5, backoff_multiplier=4.0)
    configured = AsyncRetryQueue(qconn, config=cfg)
    row = await configured.get((await configured.add("e", "text")).id)
    assert row is not None
    assert (row.max_retries, row.retry_delay_seconds, row.backoff_multiplier) == (7, 1.5, 4.0)
    assert row.event_data == "text"


async def test_add_many_takes_the_config_defaults_and_per_item_overrides(
    qconn: psycopg.AsyncConnection[Any],
) -> None:
    cfg = RetryConfig(max_retries=7, initial_delay=1.5, backoff_multiplier=2.0)
    configured = AsyncRetryQueue(qconn, config=cfg)
    made = await configured.add_many(
        [
            {"event_type": "e", "data": 1},
            {"event_type": "e", "data": 2, "max_retries": 3, "retry_delay": 60},
        ]
    )
    got = [await configured.get(m.id) for m in made]
    assert [(r.max_retries, r.retry_delay_seconds, r.backoff_multiplier) for r in got if r] == [
        (7, 1.5, 2.0),
        (3, 60.0, 2.0),
    ]


async def test_add_with_an_event_id_adds_it_once(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    """A producer whose add lost its reply sends it again with the same event
    id: one item, whatever its status by then (enqueue_retry_item_once)."""
    event = UUID("00000000-0000-4000-8000-000000000013")
    first = await q.add("e", {"n": 1}, event_id=event)
    assert first.event_id == event
    again = await q.add("e", {"n": 2}, event_id=event)
    assert again == first and count(db) == 1
    assert (first.deduplicated, again.deduplicated) == (False, True)
    [leased] = await q.acquire(W, 1, 30)
    assert await q.complete(leased.id, W)
    assert await q.add("e", {"n": 3}, event_id=event) == first
    other = await q.add("e", {"n": 4}, event_id=UUID(int=7))
    assert other.id != first.id and count(db) == 2
    row = db.execute("SELECT event_data FROM daz_retry_queue WHERE id = %s", [first.id])
    assert row.fetchone() == ({"n": 1},)


async def test_add_with_a_dedupe_key_returns_the_live_item(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    """One live item per key: a second add returns it, deduplicated, and
    changes nothing; once it completes the key is free again."""
    first = await q.add("e", {"n": 1}, dedupe_key="user:42")
    item_id, event_id = first  # still unpacks as two
    assert first.deduplicated is False
    again = await q.add("e", {"n": 2}, priority=9, dedupe_key="user:42")
    assert (again.id, again.event_id, again.deduplicated) == (item_id, event_id, True)
    assert "deduplicated=True" in repr(again)
    row = await q.get(item_id)
    assert row is not None
    assert (row.dedupe_key, row.event_data, row.priority) == ("user:42", {"n": 1}, 5)
    assert count(db) == 1
    # with an event id as well: the live holder of the key, inserted nothing
    held = await q.add("e", {}, dedupe_key="user:42", event_id=UUID(int=9))
    assert (held.id, held.deduplicated) == (item_id, True) and count(db) == 1
    [leased] = await q.acquire(W, 1, 30)
    assert await q.add("e", {}, dedupe_key="user:42") == first  # processing still holds it
    assert await q.complete(leased.id, W)
    fresh = await q.add("e", {"n": 3}, dedupe_key="user:42")
    assert fresh.id != item_id and not fresh.deduplicated and count(db) == 2


async def test_add_refuses_a_bad_dedupe_key_naming_it(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(pgerr.StringDataRightTruncation, match="dedupe_key"):
        await q.add("e", {}, dedupe_key="k" * 201)
    with pytest.raises(pgerr.InvalidParameterValue, match="dedupe_key"):
        await q.add("e", {}, dedupe_key=" ")
    assert count(db) == 0


async def test_add_with_delay_is_not_due_before_its_time(q: AsyncRetryQueue) -> None:
    item_id = (await q.add("e", {}, delay=90, now=T0)).id
    assert await q.acquire(W, now=T0 + timedelta(seconds=89)) == []
    assert [i.id for i in await q.acquire(W, now=T0 + timedelta(seconds=90))] == [item_id]


async def test_add_rejects_bad_values_naming_the_field(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    with pytest.raises(pgerr.CheckViolation, match="priority"):
        await q.add("e", {}, priority=11)
    with pytest.raises(pgerr.InvalidParameterValue, match="delay_seconds"):
        await q.add("e", {}, delay=-1)
    with pytest.raises(pgerr.CheckViolation, match="event_data"):
        await q.add("e", None)
    with pytest.raises(TypeError, match="cannot store object"):
        await q.add("e", {"x": object()})
    with pytest.raises(TypeError, match="retry_delay"):
        await q.add("e", {}, retry_delay="60s")  # type: ignore[arg-type]
    assert count(db) == 0


NUL_FIELDS = [
    # (add()'s keywords, the SQLSTATE class raised, what the message names)
    ({"data": {"a": "x\x00y"}}, pgerr.UntranslatableCharacter, r"data\['a'\]"),
    ({"data": {"k\x00": 1}}, pgerr.UntranslatableCharacter, "invalid data: data .key"),
    ({"data": ["ok", ["\x00"]]}, pgerr.UntranslatableCharacter, r"data\[1\]\[0\]"),
    ({"metadata": {"m": "\x00"}}, pgerr.UntranslatableCharacter, "invalid metadata"),
    ({"event_type": "e\x00"}, pgerr.CharacterNotInRepertoire, "invalid event_type"),
    ({"channel": "\x00"}, pgerr.CharacterNotInRepertoire, "invalid channel"),
    ({"plugin": "p\x00"}, pgerr.CharacterNotInRepertoire, "invalid plugin"),
    ({"correlation_id": "\x00"}, pgerr.CharacterNotInRepertoire, "invalid correlation_id"),
    ({"tags": ["a", "b\x00"]}, pgerr.CharacterNotInRepertoire, r"invalid tags: tags\[1\]"),
    ({"dedupe_key": "k\x00"}, pgerr.CharacterNotInRepertoire, "invalid dedupe_key"),
]


@pytest.mark.parametrize(("fields", "error", "named"), NUL_FIELDS)
async def test_a_nul_character_is_refused_naming_the_item_and_field(
    q: AsyncRetryQueue,
    db: psycopg.Connection[Any],
    fields: dict[str, Any],
    error: type[Exception],
    named: str,
) -> None:
    # PostgreSQL stores U+0000 in neither text nor jsonb; without the names
    # the caller got psycopg's "text fields cannot contain NUL" or jsonb's
    # unnamed 22P05 and could not tell which value of which item was bad
    item = {"event_type": "e", "data": {}, **fields}
    with pytest.raises(error, match=named):
        await q.add(**item)
    with pytest.raises(error, match=named):
        await q.add(**item, event_id=UUID(int=7))
    with pytest.raises(error, match="item 1: .*" + named):
        await q.add_many([{"event_type": "ok", "data": {}}, item])
    # with a dedupe key the batch goes through enqueue_retry_items' jsonb
    with pytest.raises(error, match="item 1: .*" + named):
        await q.add_many([{"event_type": "ok", "data": {}, "dedupe_key": "d"}, item])
    assert count(db) == 0


# -- add_many ----------------------------------------------------------------------


async def test_add_many_returns_ids_in_input_order(q: AsyncRetryQueue) -> None:
    items: list[Any] = [
        {"event_type": "a", "data": {"i": 0}, "priority": 9},
        q.item("b", [1], delay=5, tags=["t"]),
        {"event_type": "c", "data": 3, "correlation_id": "k", "metadata": {"m": True}},
    ]
    added = await q.add_many(items, now=T0)
    assert [type(a) for a in added] == [Enqueued] * 3
    rows = [await q.get(a.id) for a in added]
    assert [r.event_type for r in rows if r] == ["a", "b", "c"]
    b, c = rows[1], rows[2]
    assert b is not None and c is not None
    assert (b.tags, b.next_retry_at) == (["t"], T0 + timedelta(seconds=5))
    assert (c.correlation_id, c.event_metadata, c.event_data) == ("k", {"m": True}, 3)
    assert await q.add_many([]) == []


async def test_add_many_is_all_or_nothing(q: AsyncRetryQueue, db: psycopg.Connection[Any]) -> None:
    with pytest.raises(pgerr.CheckViolation, match="priority"):
        await q.add_many(
            [{"event_type": "ok", "data": {}}, {"event_type": "x", "data": {}, "priority": 0}]
        )
    with pytest.raises(ValueError, match="'data'"):
        await q.add_many([{"event_type": "no data"}])
    assert count(db) == 0


async def test_add_many_stores_what_add_stores(
    qconn: psycopg.AsyncConnection[Any], db: psycopg.Connection[Any]
) -> None:
    """add_many leaves SQL defaults out of its JSON: the rows must not differ."""
    cfg = RetryConfig(max_retries=4, initial_delay=2.0, backoff_multiplier=3.0)
    q = AsyncRetryQueue(qconn, config=cfg)
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
        single = (await q.add("e", {"v": 1}, **extra, now=T0)).id
        (bulk,) = await q.add_many([{"event_type": "e", "data": {"v": 1}, **extra}], now=T0)
        (bulk_item,) = await q.add_many([q.item("e", {"v": 1}, **extra)], now=T0)
        rows = [
            db.execute(f"SELECT {columns} FROM daz_retry_queue WHERE id = %s", [i]).fetchone()
            for i in (single, bulk.id, bulk_item.id)
        ]
        assert rows[0] == rows[1] == rows[2], extra
    with pytest.raises(TypeError, match="unknown item key 'colour'"):
        await q.add_many([{"event_type": "e", "data": 1, "colour": "red"}])


# -- acquire and the lease ---------------------------------------------------------


async def test_acquire_returns_frozen_typed_items(q: AsyncRetryQueue) -> None:
    await q.add("e", {"k": "v"}, metadata={"m": 1}, tags=["x"], correlation_id="c1", now=T0)
    await q.add("bare", ["l"], now=T0)
    items = await q.acquire(W, 10, 120, now=T0)
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


async def test_acquire_respects_batch_size_and_rejects_bad_arguments(q: AsyncRetryQueue) -> None:
    await q.add_many([{"event_type": "e", "data": i} for i in range(5)], now=T0)
    assert len(await q.acquire(W, 2, now=T0)) == 2
    assert len(await q.acquire("worker-b", 10, now=T0)) == 3
    with pytest.raises(pgerr.InvalidParameterValue, match="batch_size"):
        await q.acquire(W, 0)
    with pytest.raises(pgerr.InvalidParameterValue, match="worker_id"):
        await q.acquire(" ")


async def test_lock_timeout_rounds_up_to_whole_seconds(q: AsyncRetryQueue) -> None:
    await q.add("e", {}, now=T0)
    (item,) = await q.acquire(W, 1, 0.2, now=T0)
    assert item.locked_until == T0 + timedelta(seconds=1)


# Values PostgreSQL stores and Python's json cannot read back (red team SQL
# fault 1): a number beyond the int-digit limit (jsonb writes 1e5000 out in
# full), a nesting deeper than Python recurses; in either JSON column.
UNDECODABLE = {
    "huge-int": ("""'{"n": 1e5000}'""", "'{}'", "event_data"),
    "deep": ("(repeat('[', 5000) || repeat(']', 5000))::jsonb", "'{}'", "event_data"),
    "metadata-huge-int": ("'{}'", """'{"n": 1e5000}'""", "event_metadata"),
}


def enqueue_sql(db: psycopg.Connection[Any], data: str, metadata: str = "'{}'") -> int:
    """An item enqueued by SQL (as any producer may), data and metadata as SQL."""
    row = db.execute(
        f"SELECT id FROM enqueue_retry_item('dl.a', {data}, p_event_metadata => {metadata})"
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("kind", list(UNDECODABLE))
async def test_acquire_fails_an_item_python_cannot_decode_alone_and_returns_the_rest(
    q: AsyncRetryQueue, db: psycopg.Connection[Any], kind: str
) -> None:
    """The red team's case: 3 good items with max_retries 1 and one bad,
    acquire('w', 10, 1) four times, 1.2 s apart. Before: each acquire
    raised after the SQL leased the whole batch; the good items became dead
    letters without running and the bad one stayed processing."""
    data, metadata, field = UNDECODABLE[kind]
    bad = enqueue_sql(db, data, metadata)
    good = [(await q.add("dl.a", {"i": i}, max_retries=1)).id for i in range(3)]
    returned: list[list[int]] = []
    for n in range(4):
        items = await q.acquire("w", 10, 1, now=T0 + timedelta(seconds=1.2 * n))
        returned.append([i.id for i in items])
        assert await q.complete_many([i.id for i in items], "w") == len(items)
    assert returned == [good, [], [], []]
    assert [status_of(db, i) for i in good] == ["completed"] * 3
    row = db.execute(
        "SELECT status, last_error_code, error_message, locked_by"
        " FROM daz_retry_queue WHERE id = %s",
        [bad],
    ).fetchone()
    assert row is not None
    assert row[:2] == ("dead_letter", "retryq.undecodable_item")
    assert row[2].startswith(f"retryq: acquire cannot decode {field} (")
    assert row[3] is None  # not held: failed, not left processing


async def test_acquire_in_the_callers_transaction_fails_the_item_in_it(
    qconn: psycopg.AsyncConnection[Any], db: psycopg.Connection[Any]
) -> None:
    """On a connection in a transaction, the failure joins the caller's
    transaction with the lease: a rollback undoes both."""
    bad = enqueue_sql(db, UNDECODABLE["deep"][0])
    good = (await AsyncRetryQueue(qconn).add("dl.a", {})).id
    await qconn.set_autocommit(False)
    q = AsyncRetryQueue(qconn)
    assert [i.id for i in await q.acquire(W, 10, now=T0)] == [good]
    assert status_of(db, bad) == "pending"  # not committed yet
    await qconn.rollback()
    assert (status_of(db, bad), status_of(db, good)) == ("pending", "pending")
    assert [i.id for i in await q.acquire(W, 10, now=T0)] == [good]
    await qconn.commit()
    assert (status_of(db, bad), status_of(db, good)) == ("dead_letter", "processing")


@pytest.mark.parametrize("kind", list(UNDECODABLE))
async def test_get_holds_json_python_cannot_decode_as_the_servers_text(
    q: AsyncRetryQueue, db: psycopg.Connection[Any], kind: str
) -> None:
    data, metadata, field = UNDECODABLE[kind]
    bad = enqueue_sql(db, data, metadata)
    got = await q.get(bad)
    assert got is not None
    text = db.execute(f"SELECT {field}::text FROM daz_retry_queue WHERE id = %s", [bad]).fetchone()
    assert text is not None
    value = getattr(got, field)
    assert isinstance(value, RawJson) and value == text[0]
    # the other fields decode as ever
    assert (got.id, got.event_type, got.status) == (bad, "dl.a", "pending")
    assert (got.event_data if field == "event_metadata" else got.event_metadata) == {}


async def test_a_number_beyond_a_float_reads_as_infinity(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    """A decimal beyond a float's range decodes (as the worker reads it): inf."""
    item_id = enqueue_sql(db, """('{"n": 1' || repeat('0', 400) || '.5}')::jsonb""")
    got = await q.get(item_id)
    assert got is not None and got.event_data == {"n": float("inf")}
    [item] = await q.acquire(W, 10, now=T0)
    assert (item.id, item.event_data) == (item_id, {"n": float("inf")})


async def test_complete_only_by_the_lease_holder(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    added = await q.add_many([{"event_type": "e", "data": i} for i in range(3)], now=T0)
    ids = [a.id for a in added]
    await q.acquire(W, 3, now=T0)
    assert await q.complete(ids[0], "someone-else") is False
    assert await q.complete(ids[0], W) is True
    assert await q.complete(ids[0], W) is False
    assert await q.complete_many(ids, W) == 2
    assert await q.complete_many([], W) == 0
    assert [status_of(db, i) for i in ids] == ["completed"] * 3


async def test_fail_backs_off_then_dead_letters(q: AsyncRetryQueue) -> None:
    item_id = (await q.add("e", {}, max_retries=1, retry_delay=10, now=T0)).id
    await q.acquire(W, now=T0)
    assert await q.fail(item_id, "other", "nope") is False
    assert await q.fail(item_id, W, "timeout", "08006", now=T0) is True
    row = await q.get(item_id)
    assert row is not None
    assert (row.status, row.retry_count, row.next_retry_at) == (
        "pending",
        1,
        T0 + timedelta(seconds=10),
    )
    assert await q.acquire(W, now=T0 + timedelta(seconds=9)) == []
    (again,) = await q.acquire(W, now=T0 + timedelta(seconds=10))
    assert again.is_last_attempt
    assert await q.fail(item_id, W, "still down", "08006", now=T0 + timedelta(seconds=11))
    row = await q.get(item_id)
    assert row is not None and row.status == "dead_letter"
    assert [(h["error"], h["code"]) for h in row.error_history] == [
        ("timeout", "08006"),
        ("still down", "08006"),
    ]


async def test_fail_not_retryable_dead_letters_at_once(q: AsyncRetryQueue) -> None:
    item_id = (await q.add("e", {}, max_retries=5)).id
    await q.acquire(W)
    assert await q.fail(item_id, W, "bad payload", "E_BAD", retryable=False)
    row = await q.get(item_id)
    assert row is not None
    assert (row.status, row.last_error_code, row.error_history[0]["retryable"]) == (
        "dead_letter",
        "E_BAD",
        False,
    )


async def test_extend_lock_and_release(q: AsyncRetryQueue) -> None:
    a, b = (x.id for x in await q.add_many([{"event_type": "e", "data": 1}] * 2, now=T0))
    await q.acquire(W, 2, 10, now=T0)
    assert await q.extend_lock(a, W, 60, now=T0 + timedelta(seconds=5)) is True
    assert await q.extend_lock(a, "other", 60) is False
    row = await q.get(a)
    assert row is not None and row.locked_until == T0 + timedelta(seconds=65)
    assert await q.extend_locks([a, b, 999], W, 30) == {a, b}
    assert await q.release([a, b], "other") == 0
    assert await q.release([a, b], W) == 2
    row = await q.get(a)
    assert row is not None
    assert (row.status, row.retry_count, row.locked_by) == ("pending", 0, None)
    assert await q.extend_lock(a, W) is False


async def test_each_acknowledgement_is_fenced_to_the_lease_it_names(q: AsyncRetryQueue) -> None:
    """An item's leased_at (its grant time) names its lease: an older
    lease's complete, fail, snooze, renewal or release does not touch a newer lease
    of the same item held by the same worker (see tests/sql/test_lease_fence.py)."""
    a, b = (x.id for x in await q.add_many([{"event_type": "e", "data": 1}] * 2, now=T0))
    first = {i.id: i for i in await q.acquire(W, 2, 10, now=T0)}
    assert first[a].leased_at == T0 and first[a].locked_until == T0 + timedelta(seconds=10)
    assert await q.release([a, b], W) == 2  # the older leases end ...
    again = {i.id: i for i in await q.acquire(W, 2, 10, now=T0 + timedelta(seconds=1))}
    assert again[a].leased_at == T0 + timedelta(seconds=1)  # ... and W leases both again
    old = first[a].leased_at
    assert await q.complete(a, W, leased_at=old) is False
    assert await q.complete_many([a, b], W, leased_at=[old, first[b].leased_at]) == 0
    assert await q.fail(a, W, "stale", leased_at=old) is False
    assert await q.snooze(a, W, 60, leased_at=old) is False
    assert await q.extend_lock(a, W, 60, leased_at=old) is False
    assert await q.extend_locks([a, b], W, 60, [old, again[b].leased_at]) == {b}
    assert await q.release([a, b], W, [old, first[b].leased_at]) == 0
    row = await q.get(a)
    assert row is not None and (row.status, row.locked_until) == (
        "processing",
        T0 + timedelta(seconds=11),
    )
    assert await q.release([b], W, [again[b].leased_at]) == 1  # its own lease, given back
    assert await q.complete_many([a], W, leased_at=[again[a].leased_at]) == 1


# -- operating --------------------------------------------------------------------


async def test_requeue_dead_letters_by_filter(q: AsyncRetryQueue) -> None:
    ids = [a.id for a in await q.add_many([{"event_type": t, "data": {}} for t in "aab"])]
    await q.acquire(W, 3)
    for item_id in ids:
        await q.fail(item_id, W, "x", "E1", retryable=False)
    with pytest.raises(pgerr.InvalidParameterValue, match="item_ids"):
        await q.requeue_dead_letters()
    assert await q.requeue_dead_letters(event_type="a") == 2
    assert await q.requeue_dead_letters([ids[2]], error_code="other") == 0
    assert await q.requeue_dead_letters([ids[2]]) == 1
    assert {i.id for i in await q.acquire(W, 10)} == set(ids)


async def test_purge_dead_letters_by_filter(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    ids = [a.id for a in await q.add_many([{"event_type": t, "data": {}} for t in "aab"])]
    await q.acquire(W, 3)
    for item_id in ids:
        await q.fail(item_id, W, "x", "E1", retryable=False)
    with pytest.raises(pgerr.InvalidParameterValue, match="item_ids"):
        await q.purge_dead_letters()
    assert await q.purge_dead_letters(event_type="a") == 2
    assert await q.purge_dead_letters([ids[2]], error_code="other") == 0
    assert await q.purge_dead_letters([ids[2]]) == 1
    assert [status_of(db, i) for i in ids] == [None, None, None]


async def test_cleanup_removes_old_finished_items_and_archives_dead_letters(
    q: AsyncRetryQueue, db: psycopg.Connection[Any]
) -> None:
    added = await q.add_many([{"event_type": "e", "data": {}}] * 3, now=T0)
    done, dead, live = (a.id for a in added)
    await q.acquire(W, 2, now=T0)
    await q.complete(done, W, now=T0)
    await q.fail(dead, W, "x", retryable=False, now=T0)
    assert await q.cleanup(7, now=T0 + timedelta(days=6)) == CleanupResult(0, 0)
    assert await q.cleanup(7, now=T0 + timedelta(days=8)) == CleanupResult(2, 1)
    assert [status_of(db, i) for i in (done, dead, live)] == [None, None, "pending"]
    archived = db.execute("SELECT id FROM daz_retry_queue_archive").fetchall()
    assert archived == [(dead,)]
    with pytest.raises(pgerr.InvalidParameterValue, match="retention_days"):
        await q.cleanup(-1)


async def test_try_cleanup_skips_while_another_session_runs_it(
    q: AsyncRetryQueue, module_dsn: str
) -> None:
    item_id = (await q.add("e", {}, now=T0)).id
    await q.acquire(W, now=T0)
    await q.complete(item_id, W, now=T0)
    async with await psycopg.AsyncConnection.connect(module_dsn) as other:
        holder = AsyncRetryQueue(other)
        async with other.transaction():
            await other.execute(holder._q.try_cleanup_lock)
            assert await q.try_cleanup(0, now=T0 + timedelta(days=1)) is None
        assert await q.try_cleanup(0, now=T0 + timedelta(days=1)) == CleanupResult(1, 0)


async def test_stats_are_typed_rows(q: AsyncRetryQueue) -> None:
    await q.add_many(
        [{"event_type": "a", "data": 1, "plugin": "p"}] * 2 + [{"event_type": "b", "data": 1}]
    )
    await q.acquire(W, 1)
    rows = await q.stats()
    assert all(isinstance(r, StatsRow) for r in rows)
    got = {(r.status, r.event_type, r.plugin_name): (r.item_count, r.leased_count) for r in rows}
    assert got == {
        ("pending", "a", "p"): (1, 0),
        ("processing", "a", "p"): (1, 1),
        ("pending", "b", None): (1, 0),
    }


async def test_due_reports_active_items_and_the_next_due_time(q: AsyncRetryQueue) -> None:
    empty = await q.due()
    assert (empty.active, empty.seconds_until_due) == (False, None)
    await q.add("e", {}, delay=3600)
    later = await q.due()
    assert later.active is True
    assert later.seconds_until_due is not None and 3590 < later.seconds_until_due <= 3600
    await q.add("e", {})
    now_due = (await q.due()).seconds_until_due
    assert now_due is not None and now_due <= 0


async def test_channel_names_the_schema(q: AsyncRetryQueue) -> None:
    assert await q.channel() == "public.daz_retry_queue"


# -- transactions, pools, schemas ----------------------------------------------------


async def test_with_a_connection_the_caller_owns_the_transaction(module_dsn: str, db: Any) -> None:
    async with await psycopg.AsyncConnection.connect(module_dsn) as conn:
        q = AsyncRetryQueue(conn)
        await q.add("e", {})
        assert count(db) == 0  # not committed yet
        await conn.rollback()
        async with conn.transaction():
            await q.add("e", {})
    assert count(db) == 1


async def test_with_a_pool_every_call_commits(module_dsn: str, db: psycopg.Connection[Any]) -> None:
    async with AsyncConnectionPool(module_dsn, min_size=1, max_size=2, open=False) as pool:
        q = AsyncRetryQueue(pool)
        item_id = (await q.add("e", {})).id
        assert count(db) == 1
        (item,) = await q.acquire(W)
        assert await q.complete(item.id, W)
        assert status_of(db, item_id) == "completed"


async def test_schema_option_reaches_a_queue_off_the_search_path(new_database: Any) -> None:
    dsn = new_database()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE SCHEMA jobs")
        migrate.apply(dsn, schema="jobs")
        q = AsyncRetryQueue(conn, schema="jobs")
        item_id = (await q.add("e", {})).id
        assert await q.channel() == "jobs.daz_retry_queue"
        assert [i.id for i in await q.acquire(W)] == [item_id]
        assert await q.complete(item_id, W)
        assert [(r.status, r.item_count) for r in await q.stats()] == [("completed", 1)]
        with pytest.raises(pgerr.UndefinedFunction):
            await AsyncRetryQueue(conn).add("e", {})


async def test_every_method_over_a_connection_and_a_pool(module_dsn: str, db: Any) -> None:
    """Every method once, over the caller's connection and then a pool (was
    the async client's only test of them)."""
    async with await psycopg.AsyncConnection.connect(module_dsn, autocommit=True) as conn:
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
    async with AsyncConnectionPool(module_dsn, min_size=1, max_size=2, open=False) as pool:
        pq = AsyncRetryQueue(pool)
        await pq.add("pooled", {})
        assert await pq.complete_many([i.id for i in await pq.acquire(W, 10)], W) == 3
    assert count(db) == 3
