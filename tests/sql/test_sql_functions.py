"""Every SQL function's success and refusal cases, against a real PostgreSQL.

The clock is moved through each function's p_now parameter, never by sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.helpers import count

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
Conn = psycopg.Connection[Any]


@pytest.fixture
def dsn(module_dsn: str, module_reset: str) -> str:
    """Overrides conftest's dsn: the module's database, emptied before each test."""
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
    return module_dsn


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def call(conn: Conn, fn: str, **kwargs: Any) -> list[dict[str, Any]]:
    """SELECT * FROM fn(p_key => value, ...) with named notation, rows as dicts."""
    args = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier("p_" + k), sql.Placeholder(k)) for k in kwargs
    )
    query = sql.SQL("SELECT * FROM {}({})").format(sql.Identifier(fn), args)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, kwargs)
        return cur.fetchall()


def scalar(conn: Conn, fn: str, **kwargs: Any) -> Any:
    rows = call(conn, fn, **kwargs)
    assert len(rows) == 1
    return next(iter(rows[0].values()))


def enqueue(conn: Conn, now: datetime = T0, **kwargs: Any) -> int:
    kwargs.setdefault("event_type", "test.event")
    kwargs.setdefault("event_data", Jsonb({"n": 1}))
    return int(call(conn, "enqueue_retry_item", now=now, **kwargs)[0]["id"])


def acquire(
    conn: Conn, worker: str = "w1", batch: int = 10, lock: int = 300, now: datetime = T0
) -> list[dict[str, Any]]:
    return call(
        conn,
        "acquire_retry_items",
        worker_id=worker,
        batch_size=batch,
        lock_timeout_seconds=lock,
        now=now,
    )


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [int(r["id"]) for r in rows]


def complete(conn: Conn, item: int, worker: str = "w1", now: datetime = T0) -> bool:
    return bool(scalar(conn, "complete_retry_item", item_id=item, worker_id=worker, now=now))


def fail(
    conn: Conn,
    item: int,
    worker: str = "w1",
    now: datetime = T0,
    msg: str = "boom",
    code: str | None = None,
    retryable: bool = True,
) -> bool:
    return bool(
        scalar(
            conn,
            "fail_retry_item",
            item_id=item,
            worker_id=worker,
            error_msg=msg,
            error_code=code,
            retryable=retryable,
            now=now,
        )
    )


def row(conn: Conn, item: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM daz_retry_queue WHERE id = %s", [item])
        found = cur.fetchone()
    assert found is not None, f"item {item} is gone"
    return found


def count_where(conn: Conn, where: str = "true") -> int:
    got = conn.execute(f"SELECT count(*) FROM daz_retry_queue WHERE {where}").fetchone()  # type: ignore[arg-type]
    assert got is not None
    return int(got[0])


def kill_and_retry(conn: Conn, item: int, now: datetime, **kwargs: Any) -> datetime:
    """Lease the item at `now`, fail it; return the next due time."""
    assert ids(acquire(conn, now=now)) == [item]
    assert fail(conn, item, now=now, **kwargs)
    due: datetime = row(conn, item)["next_retry_at"]
    return due


# --- enqueue -------------------------------------------------------------------------


def test_a_bulk_insert_never_waits_for_jit_compilation(conn: Conn) -> None:
    # the server's jit is on (as on the CI server): the insert trigger's
    # estimate at 1,000 rows passed jit_above_cost, and compiling took 340 ms
    # of a 370 ms COPY; the EXPLAIN of the INSERT times the trigger
    conn.execute("SET jit = on")
    [[plan]] = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) INSERT INTO daz_retry_queue (event_type, event_data)"
        " SELECT 'e', jsonb_build_object('i', g) FROM generate_series(1, 1000) AS g"
    ).fetchone()
    [trigger] = [t for t in plan["Triggers"] if t["Trigger Name"] == "_retryq_inserted"]
    config = conn.execute(
        "SELECT proconfig FROM pg_proc WHERE proname = '_retryq_inserted'"
    ).fetchone()
    assert config is not None and "jit=off" in config[0], config
    assert trigger["Calls"] == 1


def test_enqueue_retry_item_defaults_and_delay(conn: Conn) -> None:
    first = enqueue(conn)
    later = enqueue(conn, delay_seconds=90.5, priority=9, tags=["a"], correlation_id="c")
    r = row(conn, first)
    assert (r["status"], r["retry_count"], r["max_retries"], r["priority"]) == ("pending", 0, 3, 5)
    assert (r["retry_delay_seconds"], r["backoff_multiplier"]) == (60, 2.0)
    assert r["created_at"] == r["next_retry_at"] == T0
    assert (r["event_metadata"], r["tags"], r["error_history"]) == ({}, [], [])
    r2 = row(conn, later)
    assert r2["next_retry_at"] - T0 == s(90.5)
    assert (r2["priority"], r2["tags"], r2["correlation_id"]) == (9, ["a"], "c")


def test_enqueue_retry_items_in_input_order_with_defaults(conn: Conn) -> None:
    items = [
        {"event_type": "b", "event_data": {"i": 0}, "priority": 2},
        {"event_type": "a", "event_data": [1, 2], "delay_seconds": 30, "tags": ["x", "y"]},
        {
            "event_type": "c",
            "event_data": "text",
            "max_retries": 0,
            "event_metadata": {"k": "v"},
            "plugin_name": "p",
            "channel_name": "ch",
            "correlation_id": "id-3",
            "retry_delay_seconds": 5,
            "backoff_multiplier": 3,
            "max_retry_delay_seconds": 100,
            "retry_jitter": 0.25,
        },
    ]
    got = call(conn, "enqueue_retry_items", items=Jsonb(items), now=T0)
    assert len(got) == 3
    rows = [row(conn, int(g["id"])) for g in got]
    assert [r["event_type"] for r in rows] == ["b", "a", "c"]
    assert [g["event_id"] for g in got] == [r["event_id"] for r in rows]
    assert rows[0]["priority"] == 2 and rows[0]["max_retries"] == 3
    assert rows[1]["next_retry_at"] == T0 + s(30) and rows[1]["tags"] == ["x", "y"]
    assert rows[1]["priority"] == 5 and rows[1]["event_data"] == [1, 2]
    c = rows[2]
    assert (c["max_retries"], c["event_metadata"], c["plugin_name"], c["channel_name"]) == (
        0,
        {"k": "v"},
        "p",
        "ch",
    )
    assert (c["retry_delay_seconds"], c["backoff_multiplier"]) == (5, 3)
    assert (c["max_retry_delay_seconds"], c["retry_jitter"]) == (100, 0.25)
    assert c["event_data"] == "text" and c["correlation_id"] == "id-3"


def test_enqueue_retry_items_empty_array_adds_nothing(conn: Conn) -> None:
    assert call(conn, "enqueue_retry_items", items=Jsonb([])) == []
    assert count(conn) == 0


def test_retry_queue_channel_names_schema_and_table(conn: Conn) -> None:
    assert scalar(conn, "retry_queue_channel") == "public.daz_retry_queue"


# --- leases --------------------------------------------------------------------------


def test_complete_true_only_for_the_holder_and_only_once(conn: Conn) -> None:
    item = enqueue(conn)
    assert not complete(conn, item, "w1")  # not leased yet
    assert ids(acquire(conn, "w1")) == [item]
    assert not complete(conn, item, "w2")
    assert complete(conn, item, "w1", now=T0 + s(5))
    assert not complete(conn, item, "w1")
    r = row(conn, item)
    assert (r["status"], r["completed_at"], r["locked_by"], r["locked_until"]) == (
        "completed",
        T0 + s(5),
        None,
        None,
    )
    assert acquire(conn, "w1", now=T0 + s(3600)) == []


def test_the_completes_write_the_finished_row_as_retryq_finish_does(conn: Conn) -> None:
    """complete_retry_item and complete_retry_items keep their own copy of the
    move into the finished partition (the hot path; _retryq_finish is the one
    the cold paths call): the three write the same row."""
    items = [
        enqueue(
            conn,
            event_metadata=Jsonb({"m": 1}),
            tags=["t"],
            correlation_id="c",
            plugin_name="p",
            channel_name="ch",
            priority=7,
        )
        for _ in range(3)
    ]
    assert sorted(ids(acquire(conn, batch=3))) == items
    assert fail(conn, items[0]) and fail(conn, items[1]) and fail(conn, items[2])
    assert sorted(ids(acquire(conn, batch=3, now=T0 + s(3600)))) == items
    later = T0 + s(3601)
    assert complete(conn, items[0], now=later)
    assert scalar(conn, "complete_retry_items", item_ids=[items[1]], worker_id="w1", now=later) == 1
    moved = conn.execute(
        "SELECT * FROM _retryq_finish(ARRAY[%s]::bigint[], 'completed', %s, 'w1')",
        [items[2], later],
    ).fetchall()
    assert moved == [("test.event", "p", True)]
    rows = [row(conn, i) for i in items]
    for r in rows:
        del r["id"], r["event_id"]
    assert rows[0]["status"] == "completed" and rows[0]["completed_at"] == later
    assert rows[0] == rows[1] == rows[2]


def test_a_completed_items_event_id_is_found_through_a_hash_index(conn: Conn) -> None:
    """Every completion writes an entry in the finished partition's event id
    index: a hash index (one hash, not a walk down a btree by uuid comparisons),
    which still serves every search by event id."""
    items = [enqueue(conn) for _ in range(3)]
    assert sorted(ids(acquire(conn, batch=3))) == items
    assert complete(conn, items[0])
    assert scalar(conn, "complete_retry_items", item_ids=items[1:], worker_id="w1", now=T0) == 2
    event_ids = [row(conn, i)["event_id"] for i in items]
    [[method]] = conn.execute(
        "SELECT a.amname FROM pg_class AS c JOIN pg_am AS a ON a.oid = c.relam"
        " WHERE c.relname = '_retryq_finished_event_id_idx'"
    ).fetchall()
    assert method == "hash"
    for item, event_id in zip(items, event_ids, strict=True):
        found = conn.execute(
            "SELECT id, inserted FROM enqueue_retry_item_once(%s, 'test.event', '{}')",
            [event_id],
        ).fetchall()
        assert found == [(item, False)]
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        [[plan]] = conn.execute(
            "EXPLAIN (FORMAT JSON) SELECT id FROM _retryq_finished WHERE event_id = %s",
            [event_ids[1]],
        ).fetchone()
        found = conn.execute(
            "SELECT id FROM _retryq_finished WHERE event_id = %s", [event_ids[1]]
        ).fetchall()
    nodes, used = [plan["Plan"]], []
    while nodes:
        node = nodes.pop()
        used.append(node.get("Index Name"))
        nodes += node.get("Plans") or []
    # the leaves' copies of the partitioned index (0039: completed items apart)
    [[leaf_indexes]] = conn.execute(
        "SELECT array_agg(i.inhrelid::regclass::text) FROM pg_inherits AS i"
        " WHERE i.inhparent = '_retryq_finished_event_id_idx'::regclass"
    ).fetchall()
    assert "_retryq_completed_event_id_idx" in leaf_indexes
    assert "_retryq_completed_event_id_idx" in used, plan
    assert found == [(items[1],)]
    assert count(conn, "completed") == 3


def test_expired_lease_is_taken_over_by_any_worker(conn: Conn) -> None:
    item = enqueue(conn)
    leased = acquire(conn, "worker-old", lock=60)
    assert leased[0]["locked_until"] == T0 + s(60)
    assert acquire(conn, "worker-new", now=T0 + s(59)) == []
    taken = acquire(conn, "worker-new", lock=60, now=T0 + s(60))
    assert ids(taken) == [item]
    assert taken[0]["retry_count"] == 1
    assert taken[0]["last_error_code"] == "lease_expired"
    r = row(conn, item)
    assert (r["locked_by"], r["locked_until"], r["last_attempted_at"]) == (
        "worker-new",
        T0 + s(120),
        T0 + s(60),
    )
    [entry] = r["error_history"]
    assert entry["attempt"] == 1 and entry["worker_id"] == "worker-old"
    assert entry["code"] == "lease_expired"
    # The old holder lost it: every lease operation says so.
    assert not complete(conn, item, "worker-old", now=T0 + s(61))
    assert not fail(conn, item, "worker-old", now=T0 + s(61))
    assert not scalar(
        conn, "extend_retry_lock", item_id=item, worker_id="worker-old", now=T0 + s(61)
    )
    assert scalar(conn, "release_retry_items", item_ids=[item], worker_id="worker-old") == 0
    assert complete(conn, item, "worker-new", now=T0 + s(62))


def test_same_worker_id_also_takes_over_its_own_expired_lease(conn: Conn) -> None:
    item = enqueue(conn)
    acquire(conn, "w1", lock=10)
    again = acquire(conn, "w1", lock=10, now=T0 + s(10))
    assert ids(again) == [item] and again[0]["retry_count"] == 1


def test_holder_can_still_finish_an_expired_lease_nobody_took(conn: Conn) -> None:
    item = enqueue(conn)
    acquire(conn, "w1", lock=10)
    assert complete(conn, item, "w1", now=T0 + s(3600))


def test_spent_expired_lease_becomes_a_dead_letter(conn: Conn) -> None:
    item = enqueue(conn, max_retries=1)
    spare = enqueue(conn, max_retries=1)
    acquire(conn, "a", batch=1, lock=10)  # takes `item` (same due time, lower id)
    assert ids(acquire(conn, "b", batch=1, lock=10, now=T0 + s(10))) == [item]  # attempt 2
    # At T0+20 both are due for c: the spent lease is buried, the spare is leased.
    got = acquire(conn, "c", lock=10, now=T0 + s(20))
    assert ids(got) == [spare]
    r = row(conn, item)
    assert (r["status"], r["dead_lettered_at"], r["last_error_code"]) == (
        "dead_letter",
        T0 + s(20),
        "lease_expired",
    )
    assert (r["locked_by"], r["retry_count"]) == (None, 1)
    assert [(e["attempt"], e["worker_id"], e["code"]) for e in r["error_history"]] == [
        (1, "a", "lease_expired"),
        (2, "b", "lease_expired"),
    ]
    assert row(conn, spare)["locked_by"] == "c"
    assert not complete(conn, item, "b")


def test_complete_retry_items_counts_only_own_leases(conn: Conn) -> None:
    mine = [enqueue(conn) for _ in range(3)]
    theirs = enqueue(conn)
    pending = enqueue(conn, delay_seconds=600)
    assert ids(acquire(conn, "w1", batch=3)) == mine
    assert ids(acquire(conn, "w2")) == [theirs]
    every = [*mine, theirs, pending, 999999]
    assert scalar(conn, "complete_retry_items", item_ids=every, worker_id="w1") == 3
    assert scalar(conn, "complete_retry_items", item_ids=every, worker_id="w1") == 0
    assert scalar(conn, "complete_retry_items", item_ids=[], worker_id="w1") == 0
    assert count_where(conn, "status = 'completed'") == 3
    assert row(conn, theirs)["status"] == "processing"
    assert row(conn, pending)["status"] == "pending"


def test_acquire_returns_the_lease(conn: Conn) -> None:
    enqueue(conn)
    [got] = acquire(conn, "w1", lock=45)
    assert got["locked_until"] == T0 + s(45)
    r = row(conn, got["id"])
    assert (r["status"], r["locked_by"], r["last_attempted_at"]) == ("processing", "w1", T0)
    assert acquire(conn, "w2", now=T0 + s(44)) == []


# --- backoff -------------------------------------------------------------------------


def test_default_backoff_is_60_120_240_then_dead_letter(conn: Conn) -> None:
    item = enqueue(conn)
    now = T0
    waits = []
    for _ in range(3):
        due = kill_and_retry(conn, item, now)
        waits.append((due - now).total_seconds())
        assert acquire(conn, "other", now=due - s(0.001)) == []
        now = due
    assert waits == [60.0, 120.0, 240.0]
    assert row(conn, item)["retry_count"] == 3
    # The failure of attempt max_retries + 1 = 4 dead-letters it.
    assert ids(acquire(conn, now=now)) == [item]
    assert fail(conn, item, now=now, msg="last", code="E4")
    r = row(conn, item)
    assert (r["status"], r["retry_count"], r["dead_lettered_at"]) == ("dead_letter", 3, now)
    assert (r["error_message"], r["last_error_code"]) == ("last", "E4")
    assert [e["attempt"] for e in r["error_history"]] == [1, 2, 3, 4]
    assert r["error_history"][-1]["worker_id"] == "w1"
    assert acquire(conn, now=now + s(10**6)) == []


def test_error_history_records_every_failure(conn: Conn) -> None:
    item = enqueue(conn)
    kill_and_retry(conn, item, T0, msg="first", code="E1")
    [entry] = row(conn, item)["error_history"]
    assert entry["attempt"] == 1
    assert entry["worker_id"] == "w1"
    assert entry["error"] == "first" and entry["code"] == "E1"
    assert entry["retryable"] is True
    assert datetime.fromisoformat(entry["failed_at"]) == T0


def test_non_retryable_failure_dead_letters_at_once(conn: Conn) -> None:
    item = enqueue(conn, max_retries=5)
    acquire(conn)
    assert fail(conn, item, msg="bad payload", code="E_PARSE", retryable=False)
    r = row(conn, item)
    assert (r["status"], r["retry_count"], r["last_error_code"]) == ("dead_letter", 0, "E_PARSE")
    assert r["error_history"][0]["retryable"] is False


def test_max_retries_zero_dead_letters_on_first_failure(conn: Conn) -> None:
    item = enqueue(conn, max_retries=0)
    acquire(conn)
    assert fail(conn, item)
    assert row(conn, item)["status"] == "dead_letter"


def test_backoff_is_capped_by_max_retry_delay(conn: Conn) -> None:
    item = enqueue(
        conn, max_retries=5, retry_delay_seconds=100, backoff_multiplier=10,
        max_retry_delay_seconds=500,
    )  # fmt: skip
    now = T0
    waits = []
    for _ in range(4):
        due = kill_and_retry(conn, item, now)
        waits.append((due - now).total_seconds())
        now = due
    assert waits == [100.0, 500.0, 500.0, 500.0]


def test_backoff_never_overflows(conn: Conn) -> None:
    got = conn.execute(
        "SELECT extract(epoch FROM _retryq_backoff(1000, 60, 10, 86400, 0)),"
        " extract(epoch FROM _retryq_backoff(1, 0, 10, 86400, 0)),"
        " extract(epoch FROM _retryq_backoff(1, 90000, 1, 86400, 0))"
    ).fetchone()
    assert got is not None
    assert [float(x) for x in got] == [86400.0, 0.0, 86400.0]


def test_multiplier_one_keeps_a_constant_delay(conn: Conn) -> None:
    item = enqueue(conn, retry_delay_seconds=7.5, backoff_multiplier=1)
    now = T0
    for _ in range(3):
        due = kill_and_retry(conn, item, now)
        assert due - now == s(7.5)
        now = due


def test_jitter_stays_within_bounds(conn: Conn) -> None:
    items = [enqueue(conn, retry_delay_seconds=60, retry_jitter=0.5) for _ in range(30)]
    got = acquire(conn, batch=30)
    assert sorted(ids(got)) == items
    for item in items:
        assert fail(conn, item)
    waits = [(row(conn, i)["next_retry_at"] - T0).total_seconds() for i in items]
    assert all(30.0 <= w <= 60.0 for w in waits), waits
    assert len(set(waits)) > 1  # it does vary


def test_zero_delay_retry_is_due_at_once(conn: Conn) -> None:
    item = enqueue(conn, retry_delay_seconds=0)
    due = kill_and_retry(conn, item, T0)
    assert due == T0
    assert ids(acquire(conn, "w2")) == [item]


# --- ordering and concurrency --------------------------------------------------------


def test_order_is_priority_then_due_time_then_id(conn: Conn) -> None:
    low_old = enqueue(conn, priority=1, now=T0 - s(100))
    mid_b = enqueue(conn, priority=5, now=T0 - s(10))
    mid_a = enqueue(conn, priority=5, now=T0 - s(50))
    mid_tie_1 = enqueue(conn, priority=5, now=T0 - s(10))
    top = enqueue(conn, priority=10)
    future = enqueue(conn, priority=10, delay_seconds=1)
    got = acquire(conn, batch=100)
    assert ids(got) == [top, mid_a, mid_b, mid_tie_1, low_old]
    assert [r["priority"] for r in got] == [10, 5, 5, 5, 1]
    assert row(conn, future)["status"] == "pending"
    assert ids(acquire(conn, now=T0 + s(1))) == [future]


def test_batch_size_takes_the_most_urgent(conn: Conn) -> None:
    made = {p: enqueue(conn, priority=p) for p in (3, 8, 1, 10, 6)}
    assert ids(acquire(conn, batch=3)) == [made[10], made[8], made[6]]
    assert ids(acquire(conn, batch=3)) == [made[3], made[1]]
    assert acquire(conn) == []


def test_skip_locked_gives_concurrent_transactions_disjoint_items(conn: Conn, conn2: Conn) -> None:
    made = [enqueue(conn) for _ in range(6)]
    conn2.execute("SET lock_timeout = '5s'")  # a regression fails instead of hanging
    with conn.transaction():
        first = ids(acquire(conn, "a", batch=2))
        with conn2.transaction():
            second = ids(acquire(conn2, "b", batch=10))
            # b cannot see a's uncommitted leases; it got past a's row locks
            assert set(first).isdisjoint(second)
            assert sorted(first + second) == made
    assert {row(conn, i)["locked_by"] for i in first} == {"a"}
    assert {row(conn, i)["locked_by"] for i in second} == {"b"}


def test_complete_waits_for_nothing_while_another_worker_acquires(conn: Conn, conn2: Conn) -> None:
    done = enqueue(conn)
    other = enqueue(conn)
    acquire(conn, "a", batch=1)
    conn2.execute("SET lock_timeout = '5s'")
    with conn.transaction():
        assert complete(conn, done, "a")  # moves it to the finished partition
        with conn2.transaction():
            # a's uncommitted move is skipped, not an error
            assert ids(acquire(conn2, "b")) == [other]
    assert row(conn, done)["status"] == "completed"


# --- heartbeat, release, requeue ---------------------------------------------------


def test_extend_retry_lock(conn: Conn) -> None:
    item = enqueue(conn)
    acquire(conn, "w1", lock=60)
    extend = "extend_retry_lock"
    assert not scalar(conn, extend, item_id=item, worker_id="w2", lock_timeout_seconds=600, now=T0)
    assert scalar(
        conn, extend, item_id=item, worker_id="w1", lock_timeout_seconds=600, now=T0 + s(30)
    )
    assert row(conn, item)["locked_until"] == T0 + s(630)
    assert acquire(conn, "w2", now=T0 + s(100)) == []  # the old expiry no longer applies
    assert complete(conn, item, "w1", now=T0 + s(200))
    assert not scalar(conn, extend, item_id=item, worker_id="w1", now=T0 + s(201))
    assert not scalar(conn, extend, item_id=424242, worker_id="w1")


def test_release_spends_no_retry_and_is_due_at_once(conn: Conn) -> None:
    made = [enqueue(conn) for _ in range(3)]
    acquire(conn, "w1")
    release = "release_retry_items"
    assert scalar(conn, release, item_ids=made[:2], worker_id="w2") == 0
    assert scalar(conn, release, item_ids=made[:2], worker_id="w1") == 2
    assert scalar(conn, release, item_ids=made[:2], worker_id="w1") == 0
    for item in made[:2]:
        r = row(conn, item)
        assert (r["status"], r["retry_count"], r["locked_by"], r["next_retry_at"]) == (
            "pending",
            0,
            None,
            T0,
        )
        assert r["error_history"] == []
    assert ids(acquire(conn, "w2", now=T0 + s(1))) == made[:2]
    assert row(conn, made[2])["locked_by"] == "w1"


def _dead(conn: Conn, now: datetime = T0, code: str = "E", **kwargs: Any) -> int:
    item = enqueue(conn, now=now, **kwargs)
    assert ids(acquire(conn, "reaper", batch=1, now=now)) == [item]
    assert fail(conn, item, "reaper", now=now, code=code, retryable=False)
    return item


def test_requeue_dead_letters_by_each_filter(conn: Conn) -> None:
    a1 = _dead(conn, event_type="a", plugin_name="p1", code="E1", max_retries=2)
    a2 = _dead(conn, event_type="a", plugin_name="p2", code="E2")
    b1 = _dead(conn, event_type="b", plugin_name="p1", code="E3")
    b2 = _dead(conn, event_type="b", plugin_name="p3", code="E1", now=T0 + s(100))
    c1 = _dead(conn, event_type="c", plugin_name="p4", code="E4")
    requeue = "requeue_dead_letter_items"
    later = T0 + s(1000)

    assert scalar(conn, requeue, item_ids=[a1, 424242], now=later) == 1
    r = row(conn, a1)
    assert (r["status"], r["retry_count"], r["next_retry_at"], r["dead_lettered_at"]) == (
        "pending",
        0,
        later,
        None,
    )
    assert len(r["error_history"]) == 1  # history kept
    assert (r["max_retries"], r["event_type"], r["event_id"]) == (2, "a", r["event_id"])
    assert scalar(conn, requeue, item_ids=[a1]) == 0  # no longer a dead letter

    assert scalar(conn, requeue, event_type="a", now=later) == 1  # a2
    assert scalar(conn, requeue, plugin_name="p1", now=later) == 1  # b1
    assert scalar(conn, requeue, error_code="E1", now=later) == 1  # b2
    assert scalar(conn, requeue, dead_before=T0 + s(1), now=later) == 1  # c1
    assert count_where(conn, "status = 'dead_letter'") == 0
    assert sorted(ids(acquire(conn, "w", now=later))) == sorted([a1, a2, b1, b2, c1])


def test_requeue_filters_combine_and_leave_other_statuses(conn: Conn) -> None:
    dead = _dead(conn, event_type="a", plugin_name="p1")
    _dead(conn, event_type="a", plugin_name="p2")
    done = enqueue(conn, event_type="a", plugin_name="p1")
    acquire(conn, "w")
    complete(conn, done, "w")
    pending = enqueue(conn, event_type="a", plugin_name="p1")
    requeue = "requeue_dead_letter_items"
    assert scalar(conn, requeue, event_type="a", plugin_name="p1") == 1
    assert row(conn, dead)["status"] == "pending"
    assert row(conn, done)["status"] == "completed"
    assert row(conn, pending)["retry_count"] == 0
    assert count_where(conn, "status = 'dead_letter'") == 1


def test_requeued_item_gets_a_fresh_budget(conn: Conn) -> None:
    item = enqueue(conn, max_retries=1)
    kill_and_retry(conn, item, T0)
    acquire(conn, now=T0 + s(60))
    fail(conn, item, now=T0 + s(60))
    assert row(conn, item)["status"] == "dead_letter"
    assert scalar(conn, "requeue_dead_letter_items", item_ids=[item], now=T0 + s(100)) == 1
    due = kill_and_retry(conn, item, T0 + s(100))
    assert due == T0 + s(160)  # first retry delay again


def test_requeue_refuses_without_a_filter(conn: Conn) -> None:
    _dead(conn)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="item_ids"):
        call(conn, "requeue_dead_letter_items")
    assert count_where(conn, "status = 'dead_letter'") == 1


def test_purge_deletes_only_matching_dead_letters(conn: Conn) -> None:
    a1 = _dead(conn, event_type="a", plugin_name="p1", code="E1")
    a2 = _dead(conn, event_type="a", plugin_name="p2", code="E2")
    b1 = _dead(conn, event_type="b", plugin_name="p1", code="E1", now=T0 + s(100))
    done = enqueue(conn, event_type="a", plugin_name="p1")
    acquire(conn, "w")
    complete(conn, done, "w")
    pending = enqueue(conn, event_type="a", plugin_name="p1")
    purge = "purge_dead_letter_items"

    with pytest.raises(psycopg.errors.InvalidParameterValue, match="item_ids"):
        call(conn, purge)
    assert scalar(conn, purge, item_ids=[done, pending, 424242]) == 0
    assert scalar(conn, purge, event_type="a", plugin_name="p1") == 1
    assert count_where(conn, f"id = {a1}") == 0
    assert scalar(conn, purge, dead_before=T0 + s(1)) == 1  # a2
    assert count_where(conn, f"id = {a2}") == 0
    assert scalar(conn, purge, error_code="E1") == 1  # b1
    assert count_where(conn, f"id = {b1}") == 0
    assert [row(conn, i)["status"] for i in (done, pending)] == ["completed", "pending"]
    assert conn.execute("SELECT count(*) FROM daz_retry_queue_archive").fetchone() == (0,)


FILTERS: list[dict[str, Any]] = [
    {"event_type": "a"},
    {"plugin_name": "p1"},
    {"error_code": "E1"},
    {"dead_before": T0 + s(50)},
    {"event_type": "a", "plugin_name": "p1"},
    {"event_type": "b", "error_code": "E1", "dead_before": T0 + s(500)},
    {"item_ids": [0]},  # filled in with real ids below
    {"event_type": "nobody"},
]


@pytest.mark.parametrize("filt", FILTERS, ids=lambda f: "+".join(f))
def test_list_chooses_exactly_what_requeue_and_purge_would(
    conn: Conn, filt: dict[str, Any]
) -> None:
    """The listing, requeue and purge share one filter: for each filter the
    ids listed are the ids requeued, and (in a fresh start) the ids purged."""
    made = [
        _dead(conn, event_type="a", plugin_name="p1", code="E1"),
        _dead(conn, event_type="a", plugin_name="p2", code="E2", now=T0 + s(100)),
        _dead(conn, event_type="b", plugin_name="p1", code="E1", now=T0 + s(200)),
        _dead(conn, event_type="b", plugin_name="p3", code="E3"),
    ]
    done = enqueue(conn, event_type="a", plugin_name="p1")
    acquire(conn, "w")
    complete(conn, done, "w")
    enqueue(conn, event_type="a", plugin_name="p1")  # pending: never listed
    if "item_ids" in filt:
        filt = {"item_ids": [made[0], made[2], done, 424242]}
    listed = sorted(ids(call(conn, "list_dead_letter_items", limit=None, **filt)))
    assert set(listed) <= set(made)
    with conn.transaction(force_rollback=True):
        assert scalar(conn, "purge_dead_letter_items", **filt) == len(listed)
        assert count_where(conn, "status = 'dead_letter'") == len(made) - len(listed)
    assert scalar(conn, "requeue_dead_letter_items", **filt, now=T0 + s(1000)) == len(listed)
    replayed = conn.execute(
        "SELECT id FROM daz_retry_queue WHERE status = 'pending' AND id = ANY(%s) ORDER BY id",
        (made,),
    ).fetchall()
    assert [r[0] for r in replayed] == listed


def test_list_dead_letters_newest_first_with_a_limit(conn: Conn) -> None:
    old = _dead(conn, now=T0, code="E1", correlation_id="req-1")
    new = _dead(conn, now=T0 + s(10), code="E2")
    tie = _dead(conn, now=T0 + s(10), code="E2")
    got = call(conn, "list_dead_letter_items")
    assert ids(got) == [tie, new, old]
    first = got[-1]
    assert (first["last_error_code"], first["correlation_id"], first["dead_lettered_at"]) == (
        "E1",
        "req-1",
        T0,
    )
    assert set(first) >= {"event_id", "error_message", "retry_count", "max_retries"}
    assert ids(call(conn, "list_dead_letter_items", limit=2)) == [tie, new]
    for bad in (0, -1):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="limit"):
            call(conn, "list_dead_letter_items", limit=bad)


def test_cleanup_due_counts_what_cleanup_then_removes(conn: Conn) -> None:
    [_completed(conn, T0) for _ in range(3)]
    [_dead(conn, T0) for _ in range(2)]
    _completed(conn, T0 + timedelta(days=5))
    enqueue(conn, now=T0 - timedelta(days=30))  # pending: never due
    later = T0 + timedelta(days=8)
    due = call(conn, "cleanup_retry_queue_due", retention_days=7, now=later)
    assert due == [{"due_count": 5, "dead_letter_count": 2, "archive_count": 2}]
    assert count(conn) == 7  # counting removed nothing
    got = call(conn, "cleanup_retry_queue", retention_days=7, now=later)
    assert got == [{"deleted_count": 5, "archived_count": 2}]
    assert call(conn, "cleanup_retry_queue_due", retention_days=7, now=later) == [
        {"due_count": 0, "dead_letter_count": 0, "archive_count": 0}
    ]
    for bad in (-1, 36501):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="retention_days"):
            call(conn, "cleanup_retry_queue_due", retention_days=bad, now=later)
    # NULL means the default, 7 (a driver's unused argument)
    assert call(conn, "cleanup_retry_queue_due", retention_days=None, now=later) == [
        {"due_count": 0, "dead_letter_count": 0, "archive_count": 0}
    ]


def test_retry_queue_due(conn: Conn) -> None:
    assert call(conn, "retry_queue_due") == [
        {"active": False, "seconds_until_due": None, "oldest_due_age_seconds": 0.0}
    ]
    now = datetime.now(timezone.utc)
    enqueue(conn, now=now + s(3600), priority=1)
    got = call(conn, "retry_queue_due")[0]
    assert got["active"] is True and got["oldest_due_age_seconds"] == 0.0
    assert 3500 < got["seconds_until_due"] <= 3600
    overdue = enqueue(conn, now=now - s(600), priority=10)
    got = call(conn, "retry_queue_due")[0]
    assert -700 < got["seconds_until_due"] <= -600
    assert 600 <= got["oldest_due_age_seconds"] < 700
    # a live lease is nobody's to take: the oldest due is then none
    assert ids(acquire(conn, "w", batch=1, now=now)) == [overdue]
    got = call(conn, "retry_queue_due")[0]
    assert got["oldest_due_age_seconds"] == 0.0
    assert 3500 < got["seconds_until_due"] <= 3600


# --- cleanup -------------------------------------------------------------------------


def _completed(conn: Conn, now: datetime, event_type: str = "done") -> int:
    item = enqueue(conn, now=now, event_type=event_type)
    assert ids(acquire(conn, "cleaner", batch=1, now=now)) == [item]
    assert complete(conn, item, "cleaner", now=now)
    return item


def test_cleanup_removes_only_old_finished_items(conn: Conn) -> None:
    old_done = [_completed(conn, T0) for _ in range(3)]
    old_dead = [_dead(conn, T0) for _ in range(2)]
    young_done = _completed(conn, T0 + timedelta(days=5))
    young_dead = _dead(conn, T0 + timedelta(days=5))
    old_pending = enqueue(conn, now=T0 - timedelta(days=30))
    old_leased = enqueue(conn, now=T0 - timedelta(days=30), priority=10)
    assert ids(acquire(conn, "slow", batch=1, lock=86400, now=T0 - timedelta(days=30))) == [
        old_leased
    ]
    got = call(conn, "cleanup_retry_queue", retention_days=7, now=T0 + timedelta(days=8))
    assert got == [{"deleted_count": 5, "archived_count": 2}]
    left = {r[0] for r in conn.execute("SELECT id FROM daz_retry_queue").fetchall()}
    assert left == {young_done, young_dead, old_pending, old_leased}
    archived = conn.execute(
        "SELECT id, status, archived_at FROM daz_retry_queue_archive ORDER BY id"
    ).fetchall()
    assert archived == [(i, "dead_letter", T0 + timedelta(days=8)) for i in old_dead]
    again = call(conn, "cleanup_retry_queue", retention_days=7, now=T0 + timedelta(days=8))
    assert again == [{"deleted_count": 0, "archived_count": 0}]
    assert not set(old_done) & left


def test_cleanup_max_rows_and_batches(conn: Conn) -> None:
    made = [_completed(conn, T0 + s(i)) for i in range(7)]
    later = T0 + timedelta(days=30)
    got = call(conn, "cleanup_retry_queue", batch_size=2, max_rows=3, now=later)
    assert got == [{"deleted_count": 3, "archived_count": 0}]
    # the oldest go first
    left = sorted(r[0] for r in conn.execute("SELECT id FROM daz_retry_queue").fetchall())
    assert left == made[3:]
    got = call(conn, "cleanup_retry_queue", batch_size=2, now=later)
    assert got == [{"deleted_count": 4, "archived_count": 0}]
    assert count(conn) == 0


def test_cleanup_can_skip_the_archive(conn: Conn) -> None:
    _dead(conn)
    got = call(
        conn,
        "cleanup_retry_queue",
        retention_days=0,
        archive_dead_letters=False,
        now=T0 + s(1),
    )
    assert got == [{"deleted_count": 1, "archived_count": 0}]
    assert conn.execute("SELECT count(*) FROM daz_retry_queue_archive").fetchone() == (0,)


def test_cleanup_refusals(conn: Conn) -> None:
    _dead(conn)
    for kwargs, field in [
        ({"retention_days": -1}, "retention_days"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_rows": 0}, "max_rows"),
    ]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=field):
            call(conn, "cleanup_retry_queue", **{"retention_days": 0, "now": T0 + s(1), **kwargs})
    assert count(conn) == 1


# --- views ---------------------------------------------------------------------------


def test_stats_view(conn: Conn) -> None:
    now = datetime.now(timezone.utc)
    retried = enqueue(conn, event_type="c", plugin_name="p", priority=1, now=now - s(60))
    kill_and_retry(conn, retried, now - s(60))
    enqueue(conn, event_type="a", plugin_name="p", now=T0)
    enqueue(conn, event_type="a", plugin_name="p", now=T0 + s(10))
    leased = enqueue(conn, event_type="b", priority=9, now=now)
    assert ids(acquire(conn, "w", batch=1, now=now)) == [leased]  # a live lease
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM daz_retry_queue_stats ORDER BY status, event_type")
        rows = cur.fetchall()
    assert [(r["status"], r["event_type"], r["plugin_name"], r["item_count"]) for r in rows] == [
        ("pending", "a", "p", 2),
        ("pending", "c", "p", 1),
        ("processing", "b", None, 1),
    ]
    a, c, b = rows
    assert (a["oldest_created_at"], a["newest_created_at"]) == (T0, T0 + s(10))
    assert (a["avg_retry_count"], a["max_retry_count"], a["leased_count"]) == (0, 0, 0)
    assert (c["avg_retry_count"], c["max_retry_count"]) == (1, 1)
    assert b["leased_count"] == 1


def test_alerts_view(conn: Conn) -> None:
    now = datetime.now(timezone.utc)
    dead = _dead(conn, now - s(60))
    stale = enqueue(conn, now=now - timedelta(days=2), delay_seconds=86400 * 5)
    fresh = enqueue(conn, now=now, delay_seconds=3600)
    near = enqueue(conn, now=now - s(10), max_retries=2, retry_delay_seconds=3600)
    kill_and_retry(conn, near, now - s(5))
    expired = enqueue(conn, now=now - timedelta(hours=1), priority=10)
    acquire(conn, "gone", batch=1, lock=60, now=now - timedelta(hours=1))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM daz_retry_queue_alerts ORDER BY id")
        rows = cur.fetchall()
    got = {r["id"]: r["alert"] for r in rows}
    assert got == {
        dead: "dead_letter",
        stale: "stale_pending",
        expired: "lease_expired",
        near: "near_retry_budget",
    }
    assert fresh not in got
    since = {r["id"]: r["since"] for r in rows}
    assert since[dead] == row(conn, dead)["dead_lettered_at"]
    assert since[expired] == now - timedelta(hours=1) + s(60)


# --- notifications -------------------------------------------------------------------


@pytest.fixture
def listener(dsn: str) -> Iterator[Conn]:
    with psycopg.connect(dsn, autocommit=True) as listening:
        channel = listening.execute("SELECT retry_queue_channel()").fetchone()
        assert channel is not None
        listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel[0])))
        yield listening


def _next_payloads(listening: Conn, n: int = 1) -> list[str]:
    got = [note.payload for note in listening.notifies(timeout=5, stop_after=n)]
    assert len(got) == n, f"expected {n} notifications, got {got}"
    return got


def _mark(conn: Conn) -> None:
    conn.execute("SELECT pg_notify(retry_queue_channel(), 'marker')")


def test_insert_notifies_once_per_statement(listener: Conn, conn: Conn) -> None:
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data) "
        "SELECT 'x', '{}' FROM generate_series(1, 3)"
    )
    _mark(conn)
    assert _next_payloads(listener, 2) == ["insert", "marker"]
    enqueue(conn)
    call(conn, "enqueue_retry_items", items=Jsonb([{"event_type": "x", "event_data": 1}]))
    assert _next_payloads(listener, 2) == ["insert", "insert"]


def test_rolled_back_insert_does_not_notify(listener: Conn, conn: Conn) -> None:
    with pytest.raises(RuntimeError), conn.transaction():
        enqueue(conn)
        raise RuntimeError("roll back")
    _mark(conn)
    assert _next_payloads(listener) == ["marker"]
    assert count(conn) == 0


def test_release_requeue_and_due_retry_notify(listener: Conn, conn: Conn) -> None:
    item = enqueue(conn, retry_delay_seconds=0)
    waiting = enqueue(conn, retry_delay_seconds=60)
    assert _next_payloads(listener, 2) == ["insert", "insert"]
    acquire(conn, "w")
    assert scalar(conn, "release_retry_items", item_ids=[item], worker_id="w") == 1
    assert _next_payloads(listener) == ["release"]
    acquire(conn, "w")
    fail(conn, item, "w")  # due at once
    fail(conn, waiting, "w")  # due in 60 s: no wake-up
    _mark(conn)
    assert _next_payloads(listener, 2) == ["retry", "marker"]
    acquire(conn, "w")
    fail(conn, item, "w", retryable=False)
    assert scalar(conn, "requeue_dead_letter_items", item_ids=[item]) == 1
    _mark(conn)
    assert _next_payloads(listener, 2) == ["requeue", "marker"]


# --- regressions for SQL bugs found by these tests -----------------------------------


def test_buried_spent_leases_do_not_let_a_lower_priority_go_first(conn: Conn) -> None:
    # Spent expired leases at the head of priority 5 used to take slots of that
    # priority's LIMIT, so the batch was filled from priority 4 while a due
    # priority-5 item was left behind.
    spent = [enqueue(conn, max_retries=0) for _ in range(2)]
    assert ids(acquire(conn, "dead", lock=10)) == spent
    p5 = [enqueue(conn, now=T0 + s(1)) for _ in range(2)]
    p4 = [enqueue(conn, priority=4) for _ in range(2)]
    got = acquire(conn, "w", batch=3, now=T0 + s(60))
    assert ids(got) == [*p5, p4[0]]
    assert {row(conn, i)["status"] for i in spent} == {"dead_letter"}


def test_buried_spent_leases_still_fill_the_batch_from_their_priority(conn: Conn) -> None:
    spent = [enqueue(conn, max_retries=0) for _ in range(3)]
    acquire(conn, "dead", lock=10)
    fresh = [enqueue(conn, now=T0 + s(1)) for _ in range(3)]
    assert ids(acquire(conn, "w", batch=2, now=T0 + s(60))) == fresh[:2]
    assert ids(acquire(conn, "w", batch=2, now=T0 + s(60))) == fresh[2:]
    assert count_where(conn, "status = 'dead_letter'") == len(spent)


def test_a_fresh_item_is_not_near_its_retry_budget(conn: Conn) -> None:
    # max_retries 1 means one retry left before any failure: no alert for that.
    now = datetime.now(timezone.utc)
    failed = enqueue(conn, max_retries=1, now=now, retry_delay_seconds=3600)
    kill_and_retry(conn, failed, now)
    fresh = enqueue(conn, max_retries=1, now=now)
    alerts = conn.execute("SELECT id, alert, since FROM daz_retry_queue_alerts").fetchall()
    assert alerts == [(failed, "near_retry_budget", now)]
    assert fresh != failed


def test_finished_items_always_carry_their_finish_time(conn: Conn) -> None:
    # A NULL p_now used to store a completed item without completed_at, which
    # cleanup then never removed; then p_now NULL was refused; now it means the
    # server's clock, as the default does (see tests/sql/test_clock.py).
    item = enqueue(conn)
    acquire(conn)
    assert complete(conn, item, now=None)  # type: ignore[arg-type]
    done = row(conn, item)
    assert done["status"] == "completed" and done["completed_at"] is not None
    other = enqueue(conn)
    acquire(conn)
    assert fail(conn, other, now=None, retryable=False)  # type: ignore[arg-type]
    buried = row(conn, other)
    assert buried["status"] == "dead_letter" and buried["dead_lettered_at"] is not None


# --- scripted interleavings ----------------------------------------------------------


def _wait_until_blocked(dsn: str, pid: int) -> None:
    """Wait (with a deadline) until backend `pid` waits for a lock."""
    deadline = time.monotonic() + 10
    with psycopg.connect(dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            got = watcher.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid]
            ).fetchone()
            if got == ("Lock",):
                return
            time.sleep(0.01)
    pytest.fail(f"backend {pid} never waited for a lock")


@pytest.mark.parametrize("action", ["complete", "fail", "extend"])
def test_old_holder_racing_a_takeover_loses(conn: Conn, conn2: Conn, dsn: str, action: str) -> None:
    item = enqueue(conn)
    acquire(conn, "old", lock=10)
    later = T0 + s(11)
    calls: dict[str, Callable[[], bool]] = {
        "complete": lambda: complete(conn, item, "old", now=later),
        "fail": lambda: fail(conn, item, "old", now=later),
        "extend": lambda: bool(
            scalar(conn, "extend_retry_lock", item_id=item, worker_id="old", now=later)
        ),
    }
    result: list[bool] = []
    with conn2.transaction():
        assert ids(acquire(conn2, "new", now=T0 + s(10))) == [item]
        racer = threading.Thread(target=lambda: result.append(calls[action]()))
        racer.start()
        # old's statement waits on new's uncommitted takeover ...
        _wait_until_blocked(dsn, conn.info.backend_pid)
    # ... and once it commits, finds the lease gone
    racer.join(10)
    assert result == [False]
    r = row(conn, item)
    assert (r["status"], r["locked_by"], r["retry_count"]) == ("processing", "new", 1)


def test_takeover_racing_the_old_holders_complete_skips_it(conn: Conn, conn2: Conn) -> None:
    item = enqueue(conn)
    acquire(conn, "old", lock=10)
    conn2.execute("SET lock_timeout = '5s'")
    with conn.transaction():
        assert complete(conn, item, "old", now=T0 + s(11))
        # the expired lease is locked by old's uncommitted completion: skipped
        assert acquire(conn2, "new", now=T0 + s(12)) == []
    assert row(conn, item)["status"] == "completed"
    assert acquire(conn2, "new", now=T0 + s(13)) == []


def test_acquire_plans_once_and_never_jit_compiles(conn: Conn) -> None:
    """acquire runs on its generic plan, whose cost estimate passes
    jit_above_cost at a million items: JIT would compile it on every call
    (50 ms, measured by scripts/bench's acquire latency at 1M due)."""
    row = conn.execute(
        "SELECT proconfig FROM pg_proc WHERE proname = 'acquire_retry_items'"
        " AND pronamespace = current_schema()::regnamespace"
    ).fetchone()
    assert row is not None
    assert {"jit=off", "plan_cache_mode=force_generic_plan"} <= set(row[0])
    try:
        conn.execute("LOAD 'auto_explain'")
    except psycopg.errors.UndefinedFile:
        pytest.skip("auto_explain is not installed on this server")
    for setting in (
        "jit = on",
        "jit_above_cost = 0",  # every plan would be compiled
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_level = notice",
    ):
        conn.execute(f"SET {setting}")  # type: ignore[arg-type]
    msgs: list[str] = []
    conn.add_notice_handler(lambda d: msgs.append(d.message_primary or ""))
    call(conn, "acquire_retry_items", worker_id="w", batch_size=10)
    nested = [m for m in msgs if "_retryq_active" in m]
    assert nested, "auto_explain saw none of acquire's statements"
    assert not [m for m in nested if "JIT:" in m]


def test_the_insert_trigger_plans_once(conn: Conn) -> None:
    """_retryq_inserted's id probes are key-range lookups at any range: a
    custom plan per inserting statement only added planning to every INSERT
    and COPY (2.4% of the guide's INSERT, scripts/bench_instructions.py)."""
    row = conn.execute(
        "SELECT proconfig FROM pg_proc WHERE proname = '_retryq_inserted'"
        " AND pronamespace = current_schema()::regnamespace"
    ).fetchone()
    assert row is not None
    assert {"jit=off", "plan_cache_mode=force_generic_plan"} <= set(row[0])
