"""Issue 12, items 1, 2, 4, 7 and 8: the SQL holds under careless and hostile
callers. NULL takes a column's default on every enqueue path; an id is unique
for the item's whole life and comes from the server; a producer cannot forge
state; sizes are bounded; every refusal names its field, with its SQLSTATE,
and writes nothing. Each test failed on the SQL before these rules."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[Any]

GUIDE_INSERT = """
        INSERT INTO daz_retry_queue (
            event_type, channel_name, plugin_name, event_data,
            event_metadata, max_retries, retry_delay_seconds,
            backoff_multiplier, priority, correlation_id, tags
        ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        RETURNING id, event_id;
    """
GUIDE_COLUMNS = (
    "event_type",
    "channel_name",
    "plugin_name",
    "event_data",
    "event_metadata",
    "max_retries",
    "retry_delay_seconds",
    "backoff_multiplier",
    "priority",
    "correlation_id",
    "tags",
)
GOOD: dict[str, Any] = {
    "event_type": "sql.exec.failed",
    "channel_name": "c",
    "plugin_name": "p",
    "event_data": Jsonb({"q": 1}),
    "event_metadata": Jsonb({"m": 1}),
    "max_retries": 3,
    "retry_delay_seconds": 60,
    "backoff_multiplier": 2.0,
    "priority": 5,
    "correlation_id": "x",
    "tags": ["a"],
}
# what a column with a default stores when the INSERT leaves it out
DEFAULTED = (
    "event_metadata",
    "max_retries",
    "retry_delay_seconds",
    "backoff_multiplier",
    "priority",
    "tags",
    "max_retry_delay_seconds",
    "retry_jitter",
    "retry_count",
    "error_history",
    "status",
)


@pytest.fixture
def dsn(module_dsn: str, module_reset: str) -> str:
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
        if c.execute("SELECT to_regclass('_retryq_limits')").fetchone() != (None,):
            c.execute(
                "UPDATE _retryq_limits SET (max_event_data_bytes, max_text_length,"
                " max_tags, max_item_ids, max_items) = (DEFAULT, DEFAULT, DEFAULT,"
                " DEFAULT, DEFAULT)"
            )
        if c.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('_retryq_limits')"
            " AND attname = 'max_error_history'"
        ).fetchone():
            c.execute("UPDATE _retryq_limits SET max_error_history = DEFAULT")
    return module_dsn


def snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT q::text FROM daz_retry_queue AS q UNION ALL "
        "SELECT a::text FROM daz_retry_queue_archive AS a "
        "UNION ALL SELECT c::text FROM _retryq_circuit AS c "
        "UNION ALL SELECT d::text FROM _retryq_circuit_defaults AS d "
        "UNION ALL SELECT r::text FROM _retryq_rate_limit AS r "
        "UNION ALL SELECT z::text FROM _retryq_pause AS z ORDER BY 1"
    ).fetchall()


def refused(
    conn: Conn, action: Callable[[], Any], sqlstate: str, field: str, check: Conn | None = None
) -> psycopg.Error:
    """action fails with sqlstate, the field in its message, constraint or
    column, and nothing changed (as seen by check, the owner's connection)."""
    observer = check or conn
    before = snapshot(observer)
    with pytest.raises(psycopg.Error) as caught:
        action()
    err = caught.value
    if not conn.autocommit:
        conn.rollback()
    assert err.sqlstate == sqlstate, (err.sqlstate, str(err))
    named = " ".join(
        x or "" for x in (err.diag.message_primary, err.diag.constraint_name, err.diag.column_name)
    )
    assert field in named, named
    # never a private partition or helper (the settings table may be named)
    for private in ("_retryq_active", "_retryq_finished"):
        assert private not in named and private not in (err.diag.table_name or ""), named
    assert snapshot(observer) == before
    return err


def guide_insert(conn: Conn, **overrides: Any) -> tuple[int, Any]:
    values = {**GOOD, **overrides}
    cur = psycopg.RawCursor(conn)
    cur.execute(GUIDE_INSERT, [values[c] for c in GUIDE_COLUMNS])
    row = cur.fetchone()
    assert row is not None
    return row[0], row[1]


def stored(conn: Conn, item_id: int) -> dict[str, Any]:
    cur = conn.execute(
        f"SELECT {', '.join(DEFAULTED)} FROM daz_retry_queue WHERE id = %s", (item_id,)
    )
    row = cur.fetchone()
    assert row is not None
    return dict(zip(DEFAULTED, row, strict=True))


def defaults(conn: Conn) -> dict[str, Any]:
    row = conn.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data) VALUES ('t', '1') RETURNING id"
    ).fetchone()
    assert row is not None
    return stored(conn, row[0])


# --- 1. NULL takes the default, on every enqueue path -----------------------------

OPTIONAL = (
    "event_metadata",
    "max_retries",
    "retry_delay_seconds",
    "backoff_multiplier",
    "priority",
    "tags",
)


@pytest.mark.parametrize("column", OPTIONAL)
def test_guide_insert_takes_the_default_for_null(conn: Conn, column: str) -> None:
    item_id, _ = guide_insert(conn, **{column: None})
    assert stored(conn, item_id)[column] == defaults(conn)[column]


def test_guide_insert_with_every_optional_field_null(conn: Conn) -> None:
    # Go's nil slice, nil map (marshalled as JSON null) and zero-value pointers
    item_id, _ = guide_insert(
        conn,
        channel_name=None,
        plugin_name=None,
        correlation_id=None,
        tags=None,
        event_metadata=Jsonb(None),
        max_retries=None,
        retry_delay_seconds=None,
        backoff_multiplier=None,
        priority=None,
    )
    assert stored(conn, item_id) == defaults(conn)


def test_enqueue_functions_take_the_defaults_for_null(conn: Conn) -> None:
    nulls = (
        "event_metadata",
        "max_retries",
        "retry_delay_seconds",
        "backoff_multiplier",
        "priority",
        "tags",
        "delay_seconds",
        "max_retry_delay_seconds",
        "retry_jitter",
    )
    args = ", ".join(f"p_{n} => NULL" for n in nulls)
    row = conn.execute(f"SELECT id FROM enqueue_retry_item('t', '1', {args})").fetchone()
    assert row is not None
    assert stored(conn, row[0]) == defaults(conn)
    item = {"event_type": "t", "event_data": 1, **dict.fromkeys(nulls)}
    row = conn.execute(
        "SELECT id FROM enqueue_retry_items(%s)", [Jsonb([item, {**item, "event_metadata": None}])]
    ).fetchone()
    assert row is not None
    assert stored(conn, row[0]) == defaults(conn)


def test_the_trigger_defaults_are_the_table_defaults(conn: Conn) -> None:
    """Each column's NULL (given explicitly, as the owner may) stores exactly
    what leaving it out stores: the trigger's copies of the defaults agree."""
    columns = [c for c in DEFAULTED if c != "status"]
    want = defaults(conn)
    for column in columns:
        row = conn.execute(
            f"INSERT INTO daz_retry_queue (event_type, event_data, {column})"
            " VALUES ('t', '1', NULL) RETURNING id"
        ).fetchone()
        assert row is not None
        assert stored(conn, row[0])[column] == want[column], column
    row = conn.execute(
        "INSERT INTO daz_retry_queue (id, event_id, event_type, event_data, created_at,"
        " next_retry_at) VALUES (NULL, NULL, 't', '1', NULL, NULL)"
        " RETURNING id IS NOT NULL, event_id IS NOT NULL, created_at = now(),"
        " next_retry_at = now()"
    ).fetchone()
    assert row == (True, True, True, True)


# --- 2. an id is unique for the item's whole life ---------------------------------


def _completed(conn: Conn) -> int:
    row = conn.execute("SELECT id FROM enqueue_retry_item('t', '1')").fetchone()
    assert row is not None
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 10)")
    assert conn.execute("SELECT complete_retry_item(%s, 'w')", (row[0],)).fetchone() == (True,)
    return int(row[0])


def test_an_explicit_id_of_a_finished_item_is_refused(conn: Conn) -> None:
    done = _completed(conn)
    refused(
        conn,
        lambda: conn.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data) VALUES (%s, 't', '1')",
            (done,),
        ),
        "23505",
        "id",
    )


def test_a_finished_id_is_refused_in_the_other_leaf_too(conn: Conn) -> None:
    """The finished partition is two leaves (completed; dead letters and
    cancelled items), each with its own key: an owner's INSERT or UPDATE
    that puts a finished item's id into the other leaf is refused as the
    one key of the single partition refused it."""
    done = _completed(conn)
    refused(
        conn,
        lambda: conn.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data, status, dead_lettered_at)"
            " VALUES (%s, 't', '1', 'dead_letter', now())",
            (done,),
        ),
        "23505",
        "id",
    )
    row = conn.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data, status, dead_lettered_at)"
        " VALUES ('t', '1', 'dead_letter', now()) RETURNING id"
    ).fetchone()
    assert row is not None
    refused(
        conn,
        lambda: conn.execute(
            "UPDATE daz_retry_queue SET id = %s, status = 'completed', dead_lettered_at = NULL,"
            " completed_at = now() WHERE id = %s",
            (done, row[0]),
        ),
        "23505",
        "id",
    )
    refused(
        conn,
        lambda: conn.execute(
            "UPDATE daz_retry_queue SET id = %s, status = 'dead_letter', completed_at = NULL,"
            " dead_lettered_at = now() WHERE id = %s",
            (row[0], done),
        ),
        "23505",
        "id",
    )


def test_an_explicit_id_of_a_live_item_is_refused_under_the_public_name(conn: Conn) -> None:
    """The id of a pending item given again: 23505 from the active
    partition's primary key, which named the private partition
    (_retryq_active_pkey); it is named as a reused finished id is now. The
    error's table field is still the partition (PostgreSQL's own)."""
    row = conn.execute("SELECT id FROM enqueue_retry_item('t', '1')").fetchone()
    assert row is not None
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        conn.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data) VALUES (%s, 't', '1')",
            (row[0],),
        )
    err = caught.value
    assert err.diag.constraint_name == "daz_retry_queue_id_unique"
    assert "(id)" in (err.diag.message_detail or "")
    assert "_retryq" not in (err.diag.message_primary or "")
    assert snapshot(conn) == before


def test_an_id_the_sequence_has_not_handed_out_is_refused(conn: Conn) -> None:
    refused(
        conn,
        lambda: conn.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data)"
            " VALUES (nextval('daz_retry_queue_id_seq') + 1000, 't', '1')"
        ),
        "22023",
        "id",
    )
    refused(
        conn,
        lambda: conn.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data) VALUES (-5, 't', '1')"
        ),
        "22023",
        "id",
    )


def test_a_sequence_that_went_back_is_refused_at_the_door(conn: Conn) -> None:
    done = _completed(conn)
    conn.execute("SELECT setval('daz_retry_queue_id_seq', %s, false)", (done,))
    refused(conn, lambda: guide_insert(conn), "23505", "id")
    conn.execute("SELECT setval('daz_retry_queue_id_seq', %s, false)", (done,))
    refused(conn, lambda: conn.execute("SELECT enqueue_retry_item('t', '1')"), "23505", "id")
    # the archive counts too
    conn.execute("SELECT setval('daz_retry_queue_id_seq', 100)")
    dead = conn.execute(
        "SELECT id FROM enqueue_retry_item('d', '1', p_max_retries => 0)"
    ).fetchone()
    assert dead is not None
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 10)")
    conn.execute("SELECT fail_retry_item(%s, 'w', 'x')", (dead[0],))
    assert conn.execute(
        "SELECT archived_count FROM cleanup_retry_queue(0, p_now => now() + interval '1 day')"
    ).fetchone() == (1,)
    conn.execute("SELECT setval('daz_retry_queue_id_seq', %s, false)", (dead[0],))
    refused(
        conn,
        lambda: conn.execute(
            'SELECT * FROM enqueue_retry_items(\'[{"event_type": "t", "event_data": 1}]\')'
        ),
        "23505",
        "id",
    )


def _smuggle(conn: Conn, item_id: int, **columns: Any) -> None:
    """A row with a used id, past the door (triggers off, as only a superuser can)."""
    cols = {"id": item_id, "event_type": "t", "event_data": Jsonb(1), **columns}
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            f"INSERT INTO daz_retry_queue ({', '.join(cols)})"
            f" VALUES ({', '.join(['%s'] * len(cols))})",
            list(cols.values()),
        )


def test_a_collision_that_exists_anyway_never_stops_acquire(conn: Conn) -> None:
    done = _completed(conn)
    # its lease ran out with its budget spent: acquire must bury it
    _smuggle(
        conn,
        done,
        status="processing",
        locked_by="gone",
        retry_count=3,
        locked_until="2000-01-01",
        next_retry_at="2000-01-01",
        created_at="2000-01-01",
    )
    other = conn.execute("SELECT id FROM enqueue_retry_item('t', '2')").fetchone()
    assert other is not None
    got = conn.execute("SELECT id FROM acquire_retry_items('w2', 10)").fetchall()
    assert got == [(other[0],)]
    # the smuggled row is a dead letter under a new id, its old one noted
    assert conn.execute(
        "SELECT status, (event_metadata ->> 'retryq_former_id')::bigint FROM daz_retry_queue"
        " WHERE id <> %s AND id <> %s",
        (done, other[0]),
    ).fetchall() == [("dead_letter", done)]


def test_cleanup_archives_a_reused_id(conn: Conn) -> None:
    later = "now() + interval '30 days'"
    dead = conn.execute(
        "SELECT id FROM enqueue_retry_item('d', '1', p_max_retries => 0)"
    ).fetchone()
    assert dead is not None
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 10)")
    conn.execute("SELECT fail_retry_item(%s, 'w', 'x')", (dead[0],))
    conn.execute(f"SELECT * FROM cleanup_retry_queue(0, p_now => {later})")
    _smuggle(conn, dead[0], status="dead_letter", dead_lettered_at="2000-01-01")
    assert conn.execute(
        f"SELECT deleted_count, archived_count FROM cleanup_retry_queue(0, p_now => {later}"
        " + interval '1 second')"
    ).fetchone() == (1, 1)
    assert conn.execute(
        "SELECT count(*) FROM daz_retry_queue_archive WHERE id = %s", (dead[0],)
    ).fetchone() == (2,)


# --- 4. a role cannot forge state -------------------------------------------------


@pytest.fixture
def producer(conn: Conn, dsn: str) -> Iterator[Conn]:
    login = f"t_hostile_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE retryq_producer')
    try:
        with psycopg.connect(make_conninfo(dsn, user=login), autocommit=True) as p:
            yield p
    finally:
        conn.execute(f'DROP ROLE "{login}"')


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("status", "processing"),
        ("status", "completed"),
        ("retry_count", 3),
        ("locked_by", "w"),
        ("locked_until", "infinity"),
        ("error_message", "x"),
        ("error_history", "[]"),
        ("last_attempted_at", "2000-01-01"),
        ("completed_at", "2000-01-01"),
        ("dead_lettered_at", "2000-01-01"),
        ("last_error_code", "x"),
    ],
)
def test_a_producer_cannot_write_server_columns(
    conn: Conn, producer: Conn, column: str, value: Any
) -> None:
    err = refused(
        producer,
        lambda: producer.execute(
            f"INSERT INTO daz_retry_queue (event_type, event_data, {column}) VALUES ('t', '1', %s)",
            (value,),
        ),
        "42501",
        "daz_retry_queue",
        check=conn,
    )
    assert "_retryq_finished_row_ok" not in str(err)


@pytest.mark.parametrize(
    ("columns", "field"),
    [
        ({"next_retry_at": "-infinity"}, "next_retry_at"),
        ({"next_retry_at": "infinity"}, "next_retry_at"),
        ({"next_retry_at": "2000-01-01"}, "next_retry_at"),
        ({"created_at": "2000-01-01", "next_retry_at": "2000-01-01"}, "created_at"),
        ({"created_at": "infinity"}, "created_at"),
        ({"created_at": "-infinity", "next_retry_at": "-infinity"}, "created_at"),
    ],
)
def test_a_producer_cannot_move_the_clock_of_its_rows(
    conn: Conn, producer: Conn, columns: dict[str, str], field: str
) -> None:
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    refused(
        producer,
        lambda: producer.execute(
            f"INSERT INTO daz_retry_queue (event_type, event_data, {names})"
            f" VALUES ('t', '1', {marks})",
            list(columns.values()),
        ),
        "22023",
        field,
        check=conn,
    )


def test_the_created_at_refusal_says_the_rule(producer: Conn, conn: Conn) -> None:
    """clock_timestamp() is after the statement's time: refused, and the
    message says the window (it said the server's time was the only value,
    while a value 10 s back is accepted)."""
    err = refused(
        producer,
        lambda: producer.execute(
            "INSERT INTO daz_retry_queue (event_type, event_data, created_at)"
            " VALUES ('t', '1', clock_timestamp())"
        ),
        "22023",
        "created_at",
        check=conn,
    )
    assert "within the minute before the statement's time, not after it" in str(err)
    producer.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data, created_at)"
        " VALUES ('t', '1', statement_timestamp() - interval '10 s')"
    )


def test_a_producer_may_delay_within_the_enqueue_bound(producer: Conn, conn: Conn) -> None:
    producer.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data, next_retry_at)"
        " VALUES ('t', '1', now() + interval '1 hour')"
    )
    # a producer names no id at all (ids come from the server)
    refused(
        producer,
        lambda: producer.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data)"
            " VALUES (nextval('daz_retry_queue_id_seq') + 10, 't', '1')"
        ),
        "42501",
        "daz_retry_queue",
        check=conn,
    )


# --- 7. bounded sizes -------------------------------------------------------------

BIG = 17_000_000


@pytest.mark.parametrize(
    ("overrides", "sqlstate", "field"),
    [
        ({"event_data": Jsonb({"x": "y" * BIG})}, "54000", "event_data"),
        ({"event_metadata": Jsonb({"x": "y" * 70_000})}, "54000", "event_metadata"),
        ({"channel_name": "c" * 1001}, "22001", "channel_name"),
        ({"plugin_name": "p" * 1001}, "22001", "plugin_name"),
        ({"correlation_id": "x" * 1001}, "22001", "correlation_id"),
        ({"tags": [str(i) for i in range(101)]}, "54000", "tags"),
        ({"tags": ["t" * 201]}, "22001", "tags"),
        # the tags' total length decides whether each one is looked at
        ({"tags": ["a", "b", "\u00e9" * 201]}, "22001", "tags"),
        ({"tags": ["t" * 150, "u" * 150, "v" * 201]}, "22001", "tags"),
        ({"tags": [None]}, "22004", "tags"),
        ({"tags": [["a"], ["b"]]}, "22023", "tags"),
    ],
)
def test_sizes_and_shapes_are_bounded_on_every_enqueue_path(
    conn: Conn, overrides: dict[str, Any], sqlstate: str, field: str
) -> None:
    refused(conn, lambda: guide_insert(conn, **overrides), sqlstate, field)
    values = {**GOOD, **overrides}
    refused(
        conn,
        lambda: conn.execute(
            "SELECT enqueue_retry_item(%(event_type)s, %(event_data)s, %(channel_name)s,"
            " %(plugin_name)s, %(event_metadata)s, p_correlation_id => %(correlation_id)s,"
            " p_tags => %(tags)s)",
            values,
        ),
        sqlstate,
        field,
    )
    item = {k: (v.obj if isinstance(v, Jsonb) else v) for k, v in values.items()}
    refused(
        conn,
        lambda: conn.execute(
            "SELECT * FROM enqueue_retry_items(%s)",
            [Jsonb([{"event_type": "t", "event_data": 1}, item])],
        ),
        sqlstate,
        field,
    )


def test_tags_long_together_but_each_within_the_bound_are_taken(conn: Conn) -> None:
    tags = ["t" * 200, "u" * 200, "\u00e9" * 200]
    item_id, _ = guide_insert(conn, tags=tags)
    assert conn.execute(
        "SELECT tags FROM daz_retry_queue WHERE id = %s", (item_id,)
    ).fetchone() == (tags,)


def test_the_bounds_are_generous_and_set_in_one_place(conn: Conn) -> None:
    guide_insert(
        conn,
        event_data=Jsonb({"x": "y" * 16_000_000}),
        tags=[str(i) for i in range(100)],
        channel_name="c" * 1000,
    )
    conn.execute("UPDATE _retryq_limits SET max_event_data_bytes = 2048, max_tags = 2")
    refused(
        conn, lambda: guide_insert(conn, event_data=Jsonb({"x": "y" * 3000})), "54000", "event_data"
    )
    refused(conn, lambda: guide_insert(conn, tags=["a", "b", "c"]), "54000", "tags")
    conn.execute("UPDATE _retryq_limits SET max_items = 2")
    refused(
        conn,
        lambda: conn.execute(
            "SELECT * FROM enqueue_retry_items(%s)",
            [Jsonb([{"event_type": "t", "event_data": 1}] * 1001)],
        ),
        "54000",
        "items",
    )


IDS = "(SELECT array_agg(g::bigint) FROM generate_series(1, 100001) AS g)"


@pytest.mark.parametrize(
    "call",
    [
        f"SELECT complete_retry_items({IDS}, 'w')",
        f"SELECT release_retry_items({IDS}, 'w')",
        f"SELECT requeue_dead_letter_items({IDS})",
        f"SELECT count(*) FROM requeue_dead_letter_items_report({IDS})",
        f"SELECT purge_dead_letter_items({IDS})",
        f"SELECT * FROM list_dead_letter_items({IDS})",
        f"SELECT cancel_retry_items({IDS})",
    ],
)
def test_id_arrays_are_bounded(conn: Conn, call: str) -> None:
    refused(conn, lambda: conn.execute(call), "54000", "item_ids")


def test_failure_texts_are_bounded(conn: Conn) -> None:
    conn.execute("SELECT enqueue_retry_item('t', '1')")
    [(item_id,)] = conn.execute("SELECT id FROM acquire_retry_items('w', 1)").fetchall()
    refused(
        conn,
        lambda: conn.execute("SELECT fail_retry_item(%s, 'w', repeat('x', 65537))", (item_id,)),
        "22001",
        "error_msg",
    )
    refused(
        conn,
        lambda: conn.execute("SELECT fail_retry_item(%s, 'w', 'x', repeat('c', 1001))", (item_id,)),
        "22001",
        "error_code",
    )
    assert conn.execute(
        "SELECT fail_retry_item(%s, 'w', repeat('x', 65536), repeat('c', 1000))", (item_id,)
    ).fetchone() == (True,)


def _history(conn: Conn, item_id: int) -> list[dict[str, Any]]:
    row = conn.execute(
        "SELECT error_history FROM daz_retry_queue WHERE id = %s", (item_id,)
    ).fetchone()
    assert row is not None
    return list(row[0])


def test_an_items_error_history_keeps_its_newest_entries(conn: Conn) -> None:
    """Requeues carry the history over and each entry may hold 65,536
    characters: unbounded, one item's history grew past what a worker can
    load (and past jsonb's limit every fail of it would be refused)."""
    [(item_id,)] = conn.execute(
        "SELECT id FROM enqueue_retry_item('t', '1', p_max_retries => 1000,"
        " p_retry_delay_seconds => 0)"
    ).fetchall()
    for n in range(1, 106):
        assert conn.execute("SELECT id FROM acquire_retry_items('w', 1)").fetchall() == [(item_id,)]
        conn.execute("SELECT fail_retry_item(%s, 'w', %s)", (item_id, f"e{n}"))
    history = _history(conn, item_id)
    assert len(history) == 100
    assert [h["attempt"] for h in history] == list(range(6, 106))
    assert [h["error"] for h in history[-2:]] == ["e104", "e105"]
    conn.execute("UPDATE _retryq_limits SET max_error_history = 10")
    # a lease that runs out (the owner's clock): the takeover's entry
    conn.execute("SELECT id FROM acquire_retry_items('w', 1, 1)")
    conn.execute(
        "SELECT id FROM acquire_retry_items('w2', 1, 60, clock_timestamp() + interval '1 minute')"
    )
    history = _history(conn, item_id)
    assert [h["attempt"] for h in history] == list(range(97, 107))
    assert history[-1]["code"] == "lease_expired"
    # a dead letter (_retryq_finish): the same bound
    conn.execute("SELECT fail_retry_item(%s, 'w2', 'last', p_retryable => false)", (item_id,))
    history = _history(conn, item_id)
    assert [h["attempt"] for h in history] == list(range(98, 108))
    assert (history[-1]["error"], history[-1]["worker_id"]) == ("last", "w2")
    refused(
        conn,
        lambda: conn.execute("UPDATE _retryq_limits SET max_error_history = 9"),
        "23514",
        "max_error_history",
    )


# --- 8. every refusal names the field ---------------------------------------------

BLANK = ["\t", "\t\t", "\n", " \t\r\n ", "\f\v"]


@pytest.mark.parametrize("worker", BLANK)
@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM acquire_retry_items(%s, 1)",
        "SELECT complete_retry_item(1, %s)",
        "SELECT complete_retry_items('{1}', %s)",
        "SELECT fail_retry_item(1, %s, 'x')",
        "SELECT extend_retry_lock(1, %s)",
        "SELECT release_retry_items('{1}', %s)",
        "SELECT snooze_retry_item(1, %s, 60)",
        "SELECT snooze_retry_item_outcome(1, %s, 60)",
    ],
)
def test_a_blank_worker_id_is_refused(conn: Conn, call: str, worker: str) -> None:
    conn.execute("SELECT enqueue_retry_item('t', '1')")
    refused(conn, lambda: conn.execute(call, (worker,)), "22023", "worker_id")


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"priority": "high"}, "priority"),
        ({"priority": 3.5}, "priority"),
        # beyond integer: 22003 with the rule (tests/sql/test_bounds_named.py)
        ({"max_retries": [3]}, "max_retries"),
        ({"retry_delay_seconds": "soon"}, "retry_delay_seconds"),
        ({"delay_seconds": "soon"}, "delay_seconds"),
        ({"tags": "a"}, "tags"),
        # an object, array or boolean for a text key was stored as its JSON text
        ({"event_type": ["a"]}, "event_type"),
        ({"event_type": {"x": 1}}, "event_type"),
        ({"channel_name": True}, "channel_name"),
        ({"plugin_name": {"p": 1}}, "plugin_name"),
        ({"correlation_id": [1]}, "correlation_id"),
        ({"dedupe_key": {"k": 1}}, "dedupe_key"),
        ({"tags": ["a", {"b": 1}]}, "tags"),
        ({"tags": [True]}, "tags"),
    ],
)
def test_enqueue_retry_items_names_a_wrongly_typed_key(
    conn: Conn, item: dict[str, Any], field: str
) -> None:
    items = [{"event_type": "t", "event_data": 1}, {"event_type": "t", "event_data": 1, **item}]
    refused(
        conn,
        lambda: conn.execute("SELECT * FROM enqueue_retry_items(%s)", [Jsonb(items)]),
        "22023",
        field,
    )


def test_a_number_for_a_text_key_is_taken_as_its_text(conn: Conn) -> None:
    row = conn.execute(
        "SELECT id FROM enqueue_retry_items(%s)",
        [Jsonb([{"event_type": 5, "event_data": 1, "tags": [1, "a"], "correlation_id": 2.5}])],
    ).fetchone()
    assert row is not None
    assert conn.execute(
        "SELECT event_type, tags, correlation_id FROM daz_retry_queue WHERE id = %s", row
    ).fetchone() == ("5", ["1", "a"], "2.5")


@pytest.mark.parametrize(
    "call",
    [
        "SELECT retry_circuit_open('k', %s, 60)",
        "SELECT retry_circuit_close('k', %s)",
        "SELECT retry_circuit_configure('k', %s, 5)",
        "SELECT retry_rate_limit_set('k', %s, 5)",
        "SELECT retry_rate_limit_clear('k', %s)",
        "SELECT retry_queue_pause('k', %s)",
        "SELECT retry_queue_resume('k', %s)",
    ],
)
def test_an_operator_key_bounds_its_plugin_name(conn: Conn, call: str) -> None:
    """Every function that takes a key (event_type, plugin_name) refuses a
    plugin name longer than an item's may be (a circuit row with a 100000
    character key was written before)."""
    refused(conn, lambda: conn.execute(call, ("p" * 1001,)), "22023", "plugin_name")
    conn.execute(call, ("p" * 1000,))


def test_per_key_cooldown_above_its_maximum_is_refused(conn: Conn) -> None:
    conn.execute("SELECT retry_circuit_configure('k', NULL, NULL, 10, 20)")
    refused(
        conn,
        lambda: conn.execute("SELECT retry_circuit_configure('k', NULL, NULL, 100)"),
        "22023",
        "max_cooldown_seconds",
    )
    refused(
        conn,
        lambda: conn.execute("SELECT retry_circuit_configure('new', 'p', NULL, 5000)"),
        "22023",
        "max_cooldown_seconds",
    )


def test_a_check_violation_names_the_public_table(conn: Conn) -> None:
    err = refused(
        conn, lambda: guide_insert(conn, priority=11), "23514", "daz_retry_queue_priority_check"
    )
    assert err.diag.table_name == "daz_retry_queue"
    assert "_retryq_active" not in str(err)
    err = refused(conn, lambda: guide_insert(conn, event_type=None), "23502", "event_type")
    assert err.diag.table_name == "daz_retry_queue"


# --- 8. integers beyond integer reach the function and are refused by name ------

# Every integer parameter of every public function is a bigint, so whatever
# integer a client sends (psycopg sends 2**31 and more as int8, Go's int64 is
# int8) reaches the function, which refuses a value outside its rule by name:
# 22023 where the function has a range, 22003 where the value would go to an
# integer column (in range, the column's CHECK names the rest: 23514).
BEYOND_INTEGER = [2**31, -(2**31) - 1, 2**63 - 1, -(2**63)]
INTEGER_PARAMETERS: dict[tuple[str, str], tuple[str, str]] = {
    ("acquire_retry_items", "p_batch_size"): (
        "SELECT * FROM acquire_retry_items('w', p_batch_size => %s)",
        "22023",
    ),
    ("acquire_retry_items", "p_lock_timeout_seconds"): (
        "SELECT * FROM acquire_retry_items('w', 1, %s)",
        "22023",
    ),
    ("extend_retry_lock", "p_lock_timeout_seconds"): (
        "SELECT extend_retry_lock(1, 'w', p_lock_timeout_seconds => %s)",
        "22023",
    ),
    ("snooze_retry_item", "p_max_snoozes"): (
        "SELECT snooze_retry_item(1, 'w', 60, p_max_snoozes => %s)",
        "22023",
    ),
    ("snooze_retry_item_outcome", "p_max_snoozes"): (
        "SELECT snooze_retry_item_outcome(1, 'w', 60, p_max_snoozes => %s)",
        "22023",
    ),
    ("cleanup_retry_queue", "p_retention_days"): ("SELECT * FROM cleanup_retry_queue(%s)", "22023"),
    ("cleanup_retry_queue", "p_batch_size"): (
        "SELECT * FROM cleanup_retry_queue(0, p_batch_size => %s)",
        "22023",
    ),
    ("cleanup_retry_queue_due", "p_retention_days"): (
        "SELECT * FROM cleanup_retry_queue_due(p_retention_days => %s)",
        "22023",
    ),
    ("retry_circuit_configure", "p_failure_threshold"): (
        "SELECT retry_circuit_configure('k', 'p', p_failure_threshold => %s)",
        "22023",
    ),
    ("retry_rate_limit_set", "p_max_leases"): (
        "SELECT retry_rate_limit_set('k', 'p', %s)",
        "22023",
    ),
    ("enqueue_retry_item", "p_max_retries"): (
        "SELECT * FROM enqueue_retry_item('t', '1', p_max_retries => %s)",
        "22003",
    ),
    ("enqueue_retry_item", "p_priority"): (
        "SELECT * FROM enqueue_retry_item('t', '1', p_priority => %s)",
        "22003",
    ),
    ("enqueue_retry_item_once", "p_max_retries"): (
        "SELECT * FROM enqueue_retry_item_once(gen_random_uuid(), 't', '1', p_max_retries => %s)",
        "22003",
    ),
    ("enqueue_retry_item_once", "p_priority"): (
        "SELECT * FROM enqueue_retry_item_once(gen_random_uuid(), 't', '1', p_priority => %s)",
        "22003",
    ),
}
# bigint parameters every positive value suits: ids, and counts without a bound
ANY_BIGINT: dict[tuple[str, str], str] = {
    ("complete_retry_item", "p_item_id"): "SELECT complete_retry_item(%s, 'w')",
    ("fail_retry_item", "p_item_id"): "SELECT fail_retry_item(%s, 'w', 'x')",
    ("snooze_retry_item", "p_item_id"): "SELECT snooze_retry_item(%s, 'w', 60)",
    ("snooze_retry_item_outcome", "p_item_id"): "SELECT snooze_retry_item_outcome(%s, 'w', 60)",
    ("extend_retry_lock", "p_item_id"): "SELECT extend_retry_lock(%s, 'w')",
    ("cleanup_retry_queue", "p_max_rows"): "SELECT * FROM cleanup_retry_queue(p_max_rows => %s)",
    ("list_dead_letter_items", "p_limit"): "SELECT * FROM list_dead_letter_items(p_limit => %s)",
}


def _public_parameters(conn: Conn, types: tuple[str, ...]) -> set[tuple[str, str]]:
    """(function, parameter) of every parameter of those types of every
    function a retryq group role may call."""
    rows = conn.execute(
        "SELECT p.proname, a.name FROM pg_proc AS p"
        " CROSS JOIN LATERAL unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[])"
        "  AS a (name, type)"
        " WHERE p.pronamespace = 'public'::regnamespace"
        " AND format_type(a.type, NULL) = ANY(%s)"
        " AND EXISTS (SELECT FROM unnest('{retryq_producer,retryq_worker,retryq_admin}'::text[])"
        "  AS g WHERE has_function_privilege(g, p.oid, 'EXECUTE'))",
        (list(types),),
    ).fetchall()
    return {(f, n) for f, n in rows}


def test_no_public_function_takes_a_smaller_integer_than_bigint(conn: Conn) -> None:
    assert _public_parameters(conn, ("smallint", "integer")) == set()
    # and every bigint parameter is tested below, by its rule
    assert _public_parameters(conn, ("bigint",)) == INTEGER_PARAMETERS.keys() | ANY_BIGINT.keys()


@pytest.mark.parametrize("value", BEYOND_INTEGER)
@pytest.mark.parametrize("parameter", sorted(INTEGER_PARAMETERS), ids=".".join)
def test_an_integer_beyond_integer_is_refused_naming_the_parameter(
    conn: Conn, parameter: tuple[str, str], value: int
) -> None:
    call, sqlstate = INTEGER_PARAMETERS[parameter]
    # a leased item 1 for snooze and extend
    conn.execute("SELECT enqueue_retry_item('t', '1')")
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 1)")
    err = refused(conn, lambda: conn.execute(call, (value,)), sqlstate, parameter[1][2:])
    assert err.diag.column_name == parameter[1][2:]


@pytest.mark.parametrize("value", [2**31, 2**63 - 1])
@pytest.mark.parametrize("parameter", sorted(ANY_BIGINT), ids=".".join)
def test_a_bigint_parameter_takes_any_positive_bigint(
    conn: Conn, parameter: tuple[str, str], value: int
) -> None:
    before = snapshot(conn)
    conn.execute(ANY_BIGINT[parameter], (value,)).fetchall()
    assert snapshot(conn) == before


def test_values_beyond_bigint_do_not_resolve(conn: Conn) -> None:
    # psycopg sends 2**63 as numeric: no function takes it (the README says so)
    with pytest.raises(psycopg.errors.UndefinedFunction):
        conn.execute("SELECT * FROM acquire_retry_items('w', %s)", (2**63,))


def test_the_python_clients_send_small_integers_to_bigint_parameters(conn: Conn) -> None:
    """psycopg sends a Python int as int2, int4 or int8 by its size: each
    reaches the bigint parameters, by position and by name."""
    for value in (3, 300, 70_000):
        conn.execute(
            "SELECT * FROM enqueue_retry_item('t', '1', p_max_retries => %s, p_priority => %s)",
            (min(value, 1000), 5),
        )
    got = conn.execute("SELECT * FROM acquire_retry_items(%s, %s, %s)", ("w", 2, 70_000))
    assert len(got.fetchall()) == 2


@pytest.mark.parametrize("column", ["max_retries", "priority"])
@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**63 - 1, 2**63])
def test_the_guide_insert_refuses_an_integer_beyond_its_column(
    conn: Conn, column: str, value: int
) -> None:
    """PostgreSQL converts the value to the column's integer before retryq
    sees the row: 22003, nothing written, but the message cannot name the
    column (the README's SQL API says so)."""
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        guide_insert(conn, **{column: value})
    assert snapshot(conn) == before


# --- every array parameter: one dimension, no NULL element --------------------------

ARRAY_CALLS: dict[tuple[str, str], str] = {
    ("complete_retry_items", "p_item_ids"): "SELECT complete_retry_items(%s::bigint[], 'w')",
    ("release_retry_items", "p_item_ids"): "SELECT release_retry_items(%s::bigint[], 'w')",
    ("requeue_dead_letter_items", "p_item_ids"): "SELECT requeue_dead_letter_items(%s::bigint[])",
    ("requeue_dead_letter_items_report", "p_item_ids"): (
        "SELECT count(*) FROM requeue_dead_letter_items_report(%s::bigint[])"
    ),
    ("purge_dead_letter_items", "p_item_ids"): "SELECT purge_dead_letter_items(%s::bigint[])",
    ("list_dead_letter_items", "p_item_ids"): "SELECT * FROM list_dead_letter_items(%s::bigint[])",
    ("cancel_retry_items", "p_item_ids"): "SELECT cancel_retry_items(%s::bigint[])",
    (
        "acquire_retry_items",
        "p_event_types",
    ): "SELECT * FROM acquire_retry_items('w', 1, p_event_types => %s::text[])",
    (
        "acquire_retry_items",
        "p_plugin_names",
    ): "SELECT * FROM acquire_retry_items('w', 1, p_plugin_names => %s::text[])",
    ("retry_queue_due", "p_event_types"): "SELECT * FROM retry_queue_due(%s::text[])",
    (
        "retry_queue_due",
        "p_plugin_names",
    ): "SELECT * FROM retry_queue_due(p_plugin_names => %s::text[])",
    ("enqueue_retry_item", "p_tags"): "SELECT * FROM enqueue_retry_item('t', '1', p_tags => %s)",
    (
        "enqueue_retry_item_once",
        "p_tags",
    ): "SELECT * FROM enqueue_retry_item_once(gen_random_uuid(), 't', '1', p_tags => %s)",
}
# tags' NULL element is 22004 null_value_not_allowed (documented before the others)
NULL_ELEMENT = {"p_tags": "22004"}


def test_every_array_parameter_is_tested(conn: Conn) -> None:
    arrays = _public_parameters(conn, ("bigint[]", "text[]", "integer[]", "jsonb[]"))
    assert arrays == ARRAY_CALLS.keys()


def _array_values(parameter: str) -> tuple[list[Any], list[Any]]:
    """(two-dimensional, holding NULL) values of the parameter's type."""
    if parameter == "p_item_ids":
        return [[1], [2]], [1, None]
    return [["t"], ["u"]], ["t", None]


@pytest.mark.parametrize("parameter", sorted(ARRAY_CALLS), ids=".".join)
def test_a_two_dimensional_array_is_refused_naming_the_parameter(
    conn: Conn, parameter: tuple[str, str]
) -> None:
    # items 1 and 2 pending, of type t (cancel_retry_items('{{1},{2}}')
    # cancelled both before)
    conn.execute("SELECT enqueue_retry_item('t', '1')")
    conn.execute("SELECT enqueue_retry_item('t', '2')")
    two_d, _ = _array_values(parameter[1])
    err = refused(
        conn, lambda: conn.execute(ARRAY_CALLS[parameter], (two_d,)), "22023", parameter[1][2:]
    )
    assert "one-dimensional" in (err.diag.message_primary or "")


@pytest.mark.parametrize("parameter", sorted(ARRAY_CALLS), ids=".".join)
def test_an_array_holding_null_is_refused_naming_the_parameter(
    conn: Conn, parameter: tuple[str, str]
) -> None:
    conn.execute("SELECT enqueue_retry_item('t', '1')")
    _, with_null = _array_values(parameter[1])
    refused(
        conn,
        lambda: conn.execute(ARRAY_CALLS[parameter], (with_null,)),
        NULL_ELEMENT.get(parameter[1], "22023"),
        parameter[1][2:],
    )


# --- issue 12 item 2, variants: no id a producer names -----------------------------


@pytest.fixture
def producer_tx(conn: Conn, dsn: str) -> Iterator[Conn]:
    """A producer's connection that runs its own transactions."""
    login = f"t_hostile_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE retryq_producer')
    try:
        with psycopg.connect(make_conninfo(dsn, user=login)) as p:
            yield p
    finally:
        conn.execute(f'DROP ROLE "{login}"')


def _dead(conn: Conn, event_type: str = "d") -> int:
    row = conn.execute(
        "SELECT id FROM enqueue_retry_item(%s, '1', p_max_retries => 0)", (event_type,)
    ).fetchone()
    assert row is not None
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 10)")
    conn.execute("SELECT fail_retry_item(%s, 'w', 'x')", (row[0],))
    return int(row[0])


def test_a_producer_cannot_reuse_an_id_that_finished_after_its_snapshot(
    conn: Conn, producer_tx: Conn
) -> None:
    """REPEATABLE READ: the finished row committed after the producer's
    snapshot was invisible to the trigger's check, and the id was taken again
    (the item then both completed and pending; completing it failed 23505)."""
    producer_tx.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    producer_tx.execute("SELECT 1")
    done = _completed(conn)
    refused(
        producer_tx,
        lambda: producer_tx.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data) VALUES (%s, 'dup', '{}')",
            (done,),
        ),
        "42501",
        "daz_retry_queue",
        check=conn,
    )


@pytest.mark.parametrize("removed_by", ["cleanup", "purge"])
def test_a_producer_cannot_reuse_the_id_of_a_removed_item(
    conn: Conn, producer: Conn, removed_by: str
) -> None:
    """An item removed by cleanup (completed, so not archived) or by a purge
    leaves nothing for the check to find: its id was accepted again."""
    if removed_by == "cleanup":
        gone = _completed(conn)
        conn.execute(
            "SELECT * FROM cleanup_retry_queue(0, p_now => clock_timestamp() + interval '1 day')"
        )
    else:
        gone = _dead(conn)
        assert conn.execute(
            "SELECT purge_dead_letter_items(ARRAY[%s]::bigint[])", (gone,)
        ).fetchone() == (1,)
    left = conn.execute("SELECT count(*) FROM daz_retry_queue WHERE id = %s", (gone,))
    assert left.fetchone() == (0,)
    refused(
        producer,
        lambda: producer.execute(
            "INSERT INTO daz_retry_queue (id, event_type, event_data) VALUES (%s, 'dup', '{}')",
            (gone,),
        ),
        "42501",
        "daz_retry_queue",
        check=conn,
    )


# --- issue 12 item 2, variants: one live item per event id -------------------------

E1 = "00000000-0000-4000-8000-0000000000e1"


def test_enqueue_once_under_repeatable_read_makes_no_second_item(
    conn: Conn, producer_tx: Conn
) -> None:
    """A live item committed after a REPEATABLE READ snapshot: the second
    enqueue_retry_item_once of its event id made a second item (the lookup
    cannot see the first); it is 40001 naming event_id now, and the retried
    transaction gets the first item."""
    producer_tx.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    producer_tx.execute("SELECT 1")
    first = conn.execute(
        "SELECT id, inserted FROM enqueue_retry_item_once(%s, 't', '1')", (E1,)
    ).fetchone()
    assert first is not None and first[1] is True
    refused(
        producer_tx,
        lambda: producer_tx.execute(
            "SELECT * FROM enqueue_retry_item_once(%s, 't', '2')", (E1,)
        ),
        "40001",
        "event_id",
        check=conn,
    )
    producer_tx.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    assert producer_tx.execute(
        "SELECT id, inserted FROM enqueue_retry_item_once(%s, 't', '2')", (E1,)
    ).fetchone() == (first[0], False)
    producer_tx.rollback()
    assert conn.execute(
        "SELECT count(*) FROM daz_retry_queue WHERE event_id = %s", (E1,)
    ).fetchone() == (1,)


def test_a_plain_insert_of_a_live_event_id_is_refused(conn: Conn, producer: Conn) -> None:
    """A live item's event id named again by the guide's INSERT made two live
    items with one event id; a finished item's event id may be reused."""
    conn.execute("SELECT enqueue_retry_item_once(%s, 't', '1')", (E1,))
    before = snapshot(conn)
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        producer.execute(
            "INSERT INTO daz_retry_queue (event_id, event_type, event_data) VALUES (%s, 't', '1')",
            (E1,),
        )
    # the table field is the partition's (PostgreSQL's own), as for a live id
    assert caught.value.diag.constraint_name == "daz_retry_queue_event_id_unique"
    assert snapshot(conn) == before
    # enqueue_retry_item_once of that id under READ COMMITTED: the live item
    row = producer.execute(
        "SELECT inserted FROM enqueue_retry_item_once(%s, 't', '1')", (E1,)
    ).fetchone()
    assert row == (False,)


def test_a_requeue_leaves_a_dead_letter_whose_event_id_a_live_item_holds(
    conn: Conn, producer: Conn
) -> None:
    """A dead letter's event id given to a new item: requeueing the dead
    letter would make two live items with one event id (and, with the unique
    index, fail the whole requeue). It stays a dead letter; the others go."""
    held = _dead(conn)
    free = _dead(conn)
    event_id = conn.execute(
        "SELECT event_id FROM daz_retry_queue WHERE id = %s", (held,)
    ).fetchone()
    assert event_id is not None
    producer.execute(
        "INSERT INTO daz_retry_queue (event_id, event_type, event_data) VALUES (%s, 'n', '1')",
        (event_id[0],),
    )
    assert conn.execute("SELECT requeue_dead_letter_items(p_event_type => 'd')").fetchone() == (1,)
    assert dict(
        conn.execute(
            "SELECT id, status FROM daz_retry_queue WHERE id IN (%s, %s)", (held, free)
        ).fetchall()
    ) == {held: "dead_letter", free: "pending"}


# --- issue 12 item 3, variants: a long transaction does not back-date ---------------


def test_a_long_transaction_does_not_back_date_a_producers_items(
    conn: Conn, producer_tx: Conn
) -> None:
    """Bounded against the transaction's start (now()), a producer's
    created_at of now() - 59 s was accepted 1.5 s into its transaction, 60.5 s
    before the statement; and the defaults dated an item from the
    transaction's start. The wait is the subject of the test."""
    producer_tx.execute("SELECT pg_sleep(1.5)")
    refused(
        producer_tx,
        lambda: producer_tx.execute(
            "INSERT INTO daz_retry_queue (event_type, event_data, created_at, next_retry_at)"
            " VALUES ('t', '1', now() - interval '59 s', now() - interval '59 s')"
        ),
        "22023",
        "created_at",
        check=conn,
    )
    producer_tx.execute("SELECT pg_sleep(1.5)")
    producer_tx.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data) VALUES ('late', '1')"
    )
    started = producer_tx.execute("SELECT now()").fetchone()
    producer_tx.commit()
    assert started is not None
    row = conn.execute(
        "SELECT created_at - %s >= interval '1.5 s', next_retry_at = created_at"
        " FROM daz_retry_queue WHERE event_type = 'late'",
        (started[0],),
    ).fetchone()
    assert row == (True, True)


# --- issue 12 item 8, variants: one blank rule for every name ------------------------

UNICODE_BLANK = ["\u3000", "\u2003", "\u2028", "\u00a0", "\u200b", "\u0085", "\ufeff", " \u2060\t"]


@pytest.mark.parametrize("worker", UNICODE_BLANK)
@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM acquire_retry_items(%s, 1)",
        "SELECT complete_retry_item(1, %s)",
        "SELECT complete_retry_items('{1}', %s)",
        "SELECT fail_retry_item(1, %s, 'x')",
        "SELECT extend_retry_lock(1, %s)",
        "SELECT release_retry_items('{1}', %s)",
        "SELECT snooze_retry_item(1, %s, 60)",
        "SELECT snooze_retry_item_outcome(1, %s, 60)",
    ],
)
def test_a_unicode_blank_worker_id_is_refused(conn: Conn, call: str, worker: str) -> None:
    conn.execute("SELECT enqueue_retry_item('t', '1')")
    refused(conn, lambda: conn.execute(call, (worker,)), "22023", "worker_id")


@pytest.mark.parametrize("blank", UNICODE_BLANK)
@pytest.mark.parametrize(
    ("call", "sqlstate", "field"),
    [
        ("INSERT INTO daz_retry_queue (event_type, event_data) VALUES (%s, '1')",
         "23514", "event_type"),
        ("SELECT enqueue_retry_item(%s, '1')", "23514", "event_type"),
        ("SELECT enqueue_retry_items(jsonb_build_array(jsonb_build_object("
         "'event_type', %s::text, 'event_data', 1)))", "23514", "event_type"),
        ("SELECT * FROM acquire_retry_items('w', 1, p_event_types => ARRAY[%s])",
         "22023", "event_types"),
        ("SELECT retry_queue_due(p_event_types => ARRAY[%s])", "22023", "event_types"),
        ("SELECT retry_circuit_open(%s, NULL, 60)", "22023", "event_type"),
        ("SELECT retry_queue_pause(%s)", "22023", "event_type"),
        ("INSERT INTO daz_retry_queue (event_type, event_data, dedupe_key) VALUES ('t', '1', %s)",
         "22023", "dedupe_key"),
        ("SELECT enqueue_retry_item('t', '1', p_dedupe_key => %s)", "22023", "dedupe_key"),
    ],
)
def test_a_unicode_blank_name_is_refused_on_every_path(
    conn: Conn, call: str, sqlstate: str, field: str, blank: str
) -> None:
    """U+3000 was refused as an event type but U+200B, U+0085 and U+00A0 were
    not; worker ids, routing lists, operator keys and dedupe keys took them
    all."""
    refused(conn, lambda: conn.execute(call, (blank,)), sqlstate, field)


def test_ordinary_names_are_not_blank(conn: Conn) -> None:
    for name in ["w", " w", "\u3000x", "é", "\U0001f600", "a\u200b"]:
        conn.execute("SELECT enqueue_retry_item(%s, '1', p_dedupe_key => %s)", (name, name))
        assert conn.execute(
            "SELECT count(*) FROM acquire_retry_items(%s, 1, p_event_types => ARRAY[%s])",
            (name, name),
        ).fetchone() == (1,)


def test_the_blank_rule_is_spelled_the_same_everywhere(conn: Conn) -> None:
    """The CHECK, the trigger condition and _retryq_finished_row_ok spell
    _retryq_blank's test out (a call per row would cost): one character list."""
    row = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = '_retryq_blank'").fetchone()
    assert row is not None
    pattern = re.findall(r"'(\[\^\[:space:\][^']*)'", row[0])
    assert len(pattern) == 1 and "\\u3000" in pattern[0], pattern
    for source in conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conname = 'daz_retry_queue_event_type_check'"
        " UNION ALL SELECT pg_get_triggerdef(oid) FROM pg_trigger"
        " WHERE tgname = '_retryq_1_new_row'"
        " UNION ALL SELECT prosrc FROM pg_proc WHERE proname = '_retryq_finished_row_ok'"
    ).fetchall():
        assert pattern[0] in source[0], source[0]


# --- tags come back numbered from 1 -------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        "INSERT INTO daz_retry_queue (event_type, event_data, tags) VALUES ('t', '1', %s::text[])",
        "SELECT enqueue_retry_item('t', '1', p_tags => %s::text[])",
        "SELECT enqueue_retry_item_once(gen_random_uuid(), 't', '1', p_tags => %s::text[])",
    ],
)
@pytest.mark.parametrize(("given", "stored"), [("[5:6]={a,b}", "{a,b}"), ("[0:0]={z}", "{z}")])
def test_tags_with_other_bounds_are_stored_from_one(
    conn: Conn, producer: Conn, call: str, given: str, stored: str
) -> None:
    """Stored and returned by acquire as '[5:6]={a,b}', which drivers such as
    lib/pq cannot scan."""
    producer.execute(call, (given,))
    row = conn.execute("SELECT tags::text FROM acquire_retry_items('w', 1)").fetchone()
    assert row == (stored,)
