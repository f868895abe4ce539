"""Dedupe keys (issue 14 item 2): among live (pending, processing) items a key
exists at most once; a second enqueue returns the live item and says so; the
key is free again once its item finishes; every move between partitions and
into the archive keeps it; bad keys are refused naming dedupe_key.

Concurrency is shown with connections that really wait on each other (the
test waits for pg_stat_activity to show them waiting), never by sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from retryq_py._sql.statements import GUIDE_INSERT
from tests.helpers import wait_until
from tests.sql.test_sql_functions import acquire, call, complete, fail, row

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
Conn = psycopg.Connection[Any]


@pytest.fixture
def dsn(module_dsn: str, module_reset: str) -> str:
    """The module's database, emptied before each test."""
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
    return module_dsn


def add(conn: Conn, key: str | None, now: datetime = T0, **kwargs: Any) -> dict[str, Any]:
    """enqueue_retry_item with a dedupe key; its one row."""
    kwargs.setdefault("event_type", "test.event")
    kwargs.setdefault("event_data", Jsonb({"n": 1}))
    rows = call(conn, "enqueue_retry_item", now=now, dedupe_key=key, **kwargs)
    assert len(rows) == 1
    return rows[0]


def live(conn: Conn, key: str) -> list[int]:
    got = conn.execute(
        "SELECT id FROM daz_retry_queue WHERE dedupe_key = %s"
        " AND status IN ('pending', 'processing') ORDER BY id",
        [key],
    ).fetchall()
    return [int(r[0]) for r in got]


def guide_insert(conn: Conn, key: str | None = None) -> int:
    """The guide's INSERT, verbatim ($n placeholders, as Go sends it), or with
    dedupe_key as a twelfth column."""
    values = ["k.type", "ch", "plug", Jsonb({}), Jsonb({}), 3, 60, 2.0, 5, None, []]
    query = GUIDE_INSERT
    if key is not None:
        query = query.replace("tags\n", "tags, dedupe_key\n").replace("$11)", "$11, $12)")
        values.append(key)
    cur = psycopg.RawCursor(conn)
    cur.execute(query, values)
    got = cur.fetchone()
    assert got is not None
    return int(got[0])


# --- one producer -----------------------------------------------------------------


def test_a_second_enqueue_of_a_live_key_returns_the_live_item(conn: Conn) -> None:
    first = add(conn, "user:42:resync", event_data=Jsonb({"v": 1}))
    assert first["deduplicated"] is False
    again = add(conn, "user:42:resync", event_data=Jsonb({"v": 2}), priority=9)
    assert again == {"id": first["id"], "event_id": first["event_id"], "deduplicated": True}
    assert live(conn, "user:42:resync") == [first["id"]]
    kept = row(conn, first["id"])
    assert kept["event_data"] == {"v": 1} and kept["priority"] == 5  # nothing replaced
    # other keys, and no key, are independent
    assert add(conn, "user:43:resync")["deduplicated"] is False
    assert add(conn, None)["deduplicated"] is False
    assert add(conn, None)["deduplicated"] is False
    assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (4,)


def test_the_key_is_held_while_processing_and_retrying(conn: Conn) -> None:
    item = add(conn, "k")["id"]
    assert [r["id"] for r in acquire(conn, now=T0)] == [item]
    event_id = row(conn, item)["event_id"]
    assert add(conn, "k") == {"id": item, "event_id": event_id, "deduplicated": True}
    assert fail(conn, item, now=T0)  # back to pending, due later
    assert add(conn, "k")["id"] == item
    assert live(conn, "k") == [item]


@pytest.mark.parametrize(
    "end", ["completed", "completed in a batch", "dead_letter", "cancelled", "cancelled pending"]
)
def test_the_key_is_free_once_the_item_finishes_and_the_finished_row_keeps_it(
    conn: Conn, end: str
) -> None:
    item = add(conn, "k")["id"]
    if end == "cancelled pending":
        got = call(conn, "cancel_retry_items", item_ids=[item], now=T0)
        assert got == [{"cancel_retry_items": 1}]
        end = "cancelled"
    else:
        acquire(conn, now=T0)
    if end == "cancelled":
        if row(conn, item)["status"] == "processing":
            got = call(conn, "cancel_retry_items", item_ids=[item], now=T0)
            assert got == [{"cancel_retry_items": 1}]
    elif end == "completed":
        assert complete(conn, item, now=T0)
    elif end == "completed in a batch":
        got = call(conn, "complete_retry_items", item_ids=[item], worker_id="w1", now=T0)
        assert got == [{"complete_retry_items": 1}]
        end = "completed"
    else:
        assert fail(conn, item, now=T0, retryable=False)
    finished = row(conn, item)
    assert (finished["status"], finished["dedupe_key"]) == (end, "k")
    second = add(conn, "k")
    assert second["deduplicated"] is False and second["id"] != item
    assert live(conn, "k") == [second["id"]]


def test_a_buried_lease_and_the_archive_keep_the_key(conn: Conn) -> None:
    # a lease that expires with its budget spent is buried by the next acquire
    item = add(conn, "k", max_retries=0)["id"]
    acquire(conn, lock=10, now=T0)
    acquire(conn, now=T0 + timedelta(seconds=11))
    assert (row(conn, item)["status"], row(conn, item)["dedupe_key"]) == ("dead_letter", "k")
    later = T0 + timedelta(days=30)
    got = call(conn, "cleanup_retry_queue", retention_days=7, now=later)
    assert got == [{"deleted_count": 1, "archived_count": 1}]
    archived = conn.execute(
        "SELECT dedupe_key, archived_at FROM daz_retry_queue_archive WHERE id = %s", [item]
    ).fetchone()
    assert archived is not None and archived[0] == "k"


def test_the_guides_insert_is_unchanged_and_a_live_key_refuses_an_insert(conn: Conn) -> None:
    guide_insert(conn)
    guide_insert(conn)  # no key: no rule
    first = guide_insert(conn, "k")
    with pytest.raises(pgerr.UniqueViolation) as err:
        guide_insert(conn, "k")
    assert err.value.diag.constraint_name == "daz_retry_queue_dedupe_key_idx"
    assert "(dedupe_key)=(k)" in str(err.value.diag.message_detail)
    # the functions see a key an INSERT set, and the other way round
    assert add(conn, "k")["id"] == first
    add(conn, "k2")
    with pytest.raises(pgerr.UniqueViolation):
        guide_insert(conn, "k2")


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("x" * 201, pgerr.StringDataRightTruncation),
        ("", pgerr.InvalidParameterValue),
        (" \t\n", pgerr.InvalidParameterValue),
    ],
)
def test_a_bad_key_is_refused_naming_dedupe_key_on_every_path(
    conn: Conn, key: str, error: type[Exception]
) -> None:
    attempts: list[Callable[[], Any]] = [
        lambda: add(conn, key),
        lambda: call(
            conn,
            "enqueue_retry_items",
            items=Jsonb([{"event_type": "t", "event_data": {}, "dedupe_key": key}]),
        ),
        lambda: guide_insert(conn, key),
        lambda: call(
            conn,
            "enqueue_retry_item_once",
            event_id="00000000-0000-4000-8000-000000000001",
            event_type="t",
            event_data=Jsonb({}),
            dedupe_key=key,
        ),
    ]
    for attempt in attempts:
        with pytest.raises(error) as err:
            attempt()
        assert err.value.diag.column_name == "dedupe_key"  # type: ignore[attr-defined]
    assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (0,)
    assert add(conn, "x" * 200)["deduplicated"] is False  # the bound itself is fine


def test_enqueue_retry_items_dedupes_within_the_batch_and_against_live_items(
    conn: Conn,
) -> None:
    held = add(conn, "live")
    items = [
        {"event_type": "t", "event_data": {"i": 0}, "dedupe_key": "a"},
        {"event_type": "t", "event_data": {"i": 1}},
        {"event_type": "t", "event_data": {"i": 2}, "dedupe_key": "live"},
        {"event_type": "t", "event_data": {"i": 3}, "dedupe_key": "a"},
        {"event_type": "t", "event_data": {"i": 4}, "dedupe_key": None},
        {"event_type": "t", "event_data": {"i": 5}, "dedupe_key": "b"},
    ]
    got = call(conn, "enqueue_retry_items", items=Jsonb(items))
    assert [r["deduplicated"] for r in got] == [False, False, True, True, False, False]
    assert got[2]["id"] == held["id"] and got[2]["event_id"] == held["event_id"]
    assert got[3]["id"] == got[0]["id"] and got[3]["event_id"] == got[0]["event_id"]
    new = [got[i]["id"] for i in (0, 1, 4, 5)]
    assert new == sorted(new) and len(set(new)) == 4
    stored = {
        r[0]: (r[1], r[2])
        for r in conn.execute("SELECT id, event_data -> 'i', dedupe_key FROM daz_retry_queue")
    }
    assert stored == {
        held["id"]: (None, "live"),
        got[0]["id"]: (0, "a"),
        got[1]["id"]: (1, None),
        got[4]["id"]: (4, None),
        got[5]["id"]: (5, "b"),
    }
    # a batch without keys keeps its old shape, deduplicated false
    plain = call(conn, "enqueue_retry_items", items=Jsonb([{"event_type": "t", "event_data": 1}]))
    assert [r["deduplicated"] for r in plain] == [False]


def test_enqueue_once_and_the_key_together(conn: Conn) -> None:
    e1 = "00000000-0000-4000-8000-000000000001"
    e2 = "00000000-0000-4000-8000-000000000002"

    def once(event_id: str, key: str | None) -> dict[str, Any]:
        rows = call(
            conn,
            "enqueue_retry_item_once",
            event_id=event_id,
            event_type="t",
            event_data=Jsonb({}),
            dedupe_key=key,
        )
        assert len(rows) == 1
        return rows[0]

    first = once(e1, "k")
    assert first["inserted"] is True and str(first["event_id"]) == e1
    assert row(conn, first["id"])["dedupe_key"] == "k"
    # the same event id again: that item, whatever the key
    assert once(e1, "other") == {**first, "inserted": False}
    # another event id while the key is live: the live item, its own event id
    assert once(e2, "k") == {**first, "inserted": False}
    assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (1,)
    # once the item finished, the event id still guards; the key no longer does
    acquire(conn, now=T0)
    assert complete(conn, first["id"], now=T0)
    assert once(e1, "k") == {**first, "inserted": False}
    second = once(e2, "k")
    assert second["inserted"] is True and second["id"] != first["id"]


# --- requeue ------------------------------------------------------------------------


def _dead(conn: Conn, key: str | None, event_type: str = "dead.one") -> int:
    item = add(conn, key, event_type=event_type)["id"]
    assert [r["id"] for r in acquire(conn, now=T0)] == [item]
    assert fail(conn, item, now=T0, retryable=False)
    return int(item)


def test_a_dead_letter_whose_key_a_live_twin_holds_stays_dead(conn: Conn) -> None:
    dead = _dead(conn, "k")
    twin = add(conn, "k")["id"]
    assert scalar_requeue(conn, item_ids=[dead]) == 0
    assert row(conn, dead)["status"] == "dead_letter"
    assert live(conn, "k") == [twin]
    # the twin finished: the key is free, and the dead letter comes back with it
    acquire(conn, now=T0)
    assert complete(conn, twin, now=T0)
    assert scalar_requeue(conn, item_ids=[dead]) == 1
    assert live(conn, "k") == [dead]


def test_of_dead_letters_sharing_a_key_only_the_newest_is_requeued(conn: Conn) -> None:
    old = _dead(conn, "k")
    new = _dead(conn, "k")
    other = _dead(conn, None)
    assert scalar_requeue(conn, event_type="dead.one") == 2
    assert live(conn, "k") == [new]
    assert row(conn, old)["status"] == "dead_letter"
    assert row(conn, other)["status"] == "pending"


def scalar_requeue(conn: Conn, **filters: Any) -> int:
    return int(call(conn, "requeue_dead_letter_items", **filters)[0]["requeue_dead_letter_items"])


# --- concurrency ----------------------------------------------------------------------


def _waiting(conn: Conn, pids: list[int], n: int) -> Callable[[], bool]:
    def check() -> bool:
        got = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
            [pids],
        ).fetchone()
        return got is not None and got[0] >= n

    return check


def _race(dsn: str, conn: Conn, n: int, enqueue: Callable[[Conn], Any]) -> list[Any]:
    """n connections enqueue at once: a transaction holding the key uncommitted
    makes every one of them wait in its INSERT, then rolls back, so that they
    race for the key against each other."""
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(n)]
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = enqueue(conns[i])
        except BaseException as e:  # reported below
            errors.append(e)

    try:
        with psycopg.connect(dsn) as blocker:
            guide_insert(blocker, "race")  # uncommitted
            threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            pids = [c.info.backend_pid for c in conns]
            wait_until(_waiting(conn, pids, n), timeout=20, what=f"{n} enqueues waiting")
            blocker.rollback()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors
    finally:
        for c in conns:
            c.close()
    return results


def test_eight_connections_enqueue_one_key_and_get_one_live_item(dsn: str, conn: Conn) -> None:
    got = _race(dsn, conn, 8, lambda c: add(c, "race"))
    assert live(conn, "race") and len(live(conn, "race")) == 1
    (item,) = live(conn, "race")
    assert {r["id"] for r in got} == {item}
    assert sorted(r["deduplicated"] for r in got) == [False] + [True] * 7
    assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (1,)


def test_concurrent_batches_with_one_key_add_it_once(dsn: str, conn: Conn) -> None:
    def batch(c: Conn) -> list[dict[str, Any]]:
        items = [
            {"event_type": "t", "event_data": {}},
            {"event_type": "t", "event_data": {}, "dedupe_key": "race"},
        ]
        return call(c, "enqueue_retry_items", items=Jsonb(items))

    got = _race(dsn, conn, 4, batch)
    (item,) = live(conn, "race")
    assert {r[1]["id"] for r in got} == {item}
    assert sorted(r[1]["deduplicated"] for r in got) == [False] + [True] * 3
    assert all(r[0]["deduplicated"] is False for r in got)
    assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (5,)


def test_a_snapshot_that_cannot_see_the_holder_gets_a_serialization_failure(
    dsn: str, conn: Conn
) -> None:
    with psycopg.connect(dsn) as rr:
        rr.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rr.execute("SELECT 1")  # the snapshot is taken
        holder = add(conn, "k")  # committed after it
        with pytest.raises(pgerr.SerializationFailure) as err:
            add(rr, "k")
        assert err.value.diag.column_name == "dedupe_key"
        rr.rollback()
        # the retried transaction sees it
        assert add(rr, "k")["id"] == holder["id"]


def test_the_item_keeps_its_key_through_every_state(conn: Conn) -> None:
    # release puts it back untouched; the key stays on the row
    item = add(conn, "k")["id"]
    acquire(conn, now=T0)
    assert call(conn, "release_retry_items", item_ids=[item], worker_id="w1")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT status, dedupe_key FROM daz_retry_queue WHERE id = %s", [item])
        assert cur.fetchone() == {"status": "pending", "dedupe_key": "k"}


def test_taking_a_lease_stays_a_hot_update_with_the_key_index(dsn: str) -> None:
    """The key's index covers dedupe_key only (no status in its predicate), so
    acquire, which leaves dedupe_key alone, still writes no index entry (a
    HOT update), keyed items included."""
    with psycopg.connect(dsn) as c:
        for n in range(40):
            add(c, f"k{n}" if n % 2 else None)
        c.commit()
        got = call(c, "acquire_retry_items", worker_id="w", batch_size=40, now=T0)
        assert len(got) == 40
        updated, hot = c.execute(
            "SELECT pg_stat_get_xact_tuples_updated(r), pg_stat_get_xact_tuples_hot_updated(r)"
            " FROM (SELECT '_retryq_active'::regclass::oid AS r) AS x"
        ).fetchone() or (0, 0)
        # a few rows per page find no room for their new version (fillfactor
        # 50, see tables/daz_retry_queue.sql): 36 of 40 here, 0 with status in
        # the index's predicate
        assert updated == 40 and hot >= 32, hot
        c.rollback()
