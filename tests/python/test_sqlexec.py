"""The guide's handleSQLExec flow and the sql.exec.failed replay handler.

The target table is made to fail on demand by a trigger that raises a chosen
SQLSTATE while the `outage` table has a row: a real server-side error, no mock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from retryq_py import (
    SQL_EXEC_FAILED,
    RetryQueue,
    RetryWorker,
    SqlExecHandler,
    exec_sql,
    sql_exec_handler,
)

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.5, "lock_timeout": 5, "cleanup_interval": 0}
INSERT = (
    "INSERT INTO chat_log (message_id, body, sent_on, amount, extra, seen_at)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (message_id) DO NOTHING"
)


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        conn.execute(
            """
            DROP TABLE IF EXISTS chat_log, outage;
            CREATE TABLE outage (sqlstate text NOT NULL);
            CREATE TABLE chat_log (
                message_id uuid PRIMARY KEY, body text NOT NULL, sent_on date,
                amount numeric, extra jsonb, seen_at timestamptz
            );
            CREATE OR REPLACE FUNCTION fail_during_outage() RETURNS trigger
            LANGUAGE plpgsql AS $$
            DECLARE v_state text;
            BEGIN
                SELECT sqlstate INTO v_state FROM outage LIMIT 1;
                IF FOUND THEN
                    RAISE EXCEPTION 'simulated outage' USING ERRCODE = v_state;
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER chat_log_outage BEFORE INSERT ON chat_log
            FOR EACH ROW EXECUTE FUNCTION fail_during_outage();
            """
        )
        yield conn


@pytest.fixture
def q(db: Conn) -> RetryQueue:
    return RetryQueue(db)


def params() -> list[Any]:
    return [
        uuid.uuid4(),
        "hello",
        date(2030, 1, 2),
        Decimal("12.50"),
        Jsonb({"emoji": True}),
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    ]


def queued(db: Conn) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT event_type, plugin_name, correlation_id, event_data, status"
        " FROM daz_retry_queue ORDER BY id"
    ).fetchall()


def test_success_runs_once_and_queues_nothing(module_dsn: str, db: Conn, q: RetryQueue) -> None:
    with psycopg.connect(module_dsn, autocommit=True) as target:
        assert exec_sql(target, INSERT, params(), queue=q, correlation_id="c1") == 1
    assert queued(db) == []
    assert db.execute("SELECT body FROM chat_log").fetchall() == [("hello",)]


def test_a_retryable_error_is_queued_and_replayed(module_dsn: str, db: Conn, q: RetryQueue) -> None:
    db.execute("INSERT INTO outage VALUES ('40001')")
    args = params()
    with (
        psycopg.connect(module_dsn, autocommit=True) as target,
        pytest.raises(pgerr.SerializationFailure),
    ):
        exec_sql(target, INSERT, args, queue=q, correlation_id="corr-9", plugin="sql")
    [(event_type, plugin, corr, data, status)] = queued(db)
    assert (event_type, plugin, corr, status) == (SQL_EXEC_FAILED, "sql", "corr-9", "pending")
    assert data["query"] == INSERT and data["correlation_id"] == "corr-9"
    assert data["error"].startswith("simulated outage")
    assert data["params"] == [
        str(args[0]),
        "hello",
        "2030-01-02",
        "12.50",
        {"emoji": True},
        "2030-01-02T03:04:05+00:00",
    ]

    db.execute("DELETE FROM outage")
    handler = SqlExecHandler(module_dsn)
    try:
        counts = RetryWorker(module_dsn, {SQL_EXEC_FAILED: handler}, **FAST).run(
            exit_when_drained=True
        )
        assert counts.processed == 1
        # replaying the same statement again is harmless: it is idempotent
        item = RetryQueue(db).add(SQL_EXEC_FAILED, data)
        RetryWorker(module_dsn, {SQL_EXEC_FAILED: handler}, **FAST).run(exit_when_drained=True)
    finally:
        handler.close()
    rows = db.execute("SELECT message_id, body, sent_on, amount, extra, seen_at FROM chat_log")
    assert rows.fetchall() == [(args[0], "hello", args[2], args[3], {"emoji": True}, args[5])]
    assert [s for *_, s in queued(db)] == ["completed", "completed"]
    assert item.id > 0


def test_a_lost_target_connection_is_queued(module_dsn: str, db: Conn, q: RetryQueue) -> None:
    with psycopg.connect(module_dsn, autocommit=True) as target:
        db.execute("SELECT pg_terminate_backend(%s)", [target.info.backend_pid])
        with pytest.raises(psycopg.OperationalError):
            exec_sql(target, INSERT, params(), queue=q)
    assert [(t, s) for t, _, _, _, s in queued(db)] == [(SQL_EXEC_FAILED, "pending")]


@pytest.mark.parametrize(
    ("query", "state"),
    [
        ("INSERT INTO chat_log (message_id, body) VALUES (%s, NULL)", "23502"),
        ("INSERT INTO chat_log (message_id, body) VALUES (%s, 'x') RETURNING nonsense", "42703"),
        ("INSRT INTO chat_log VALUES (%s)", "42601"),
    ],
)
def test_a_permanent_error_is_not_queued(
    module_dsn: str, db: Conn, q: RetryQueue, query: Any, state: str
) -> None:
    with (
        psycopg.connect(module_dsn, autocommit=True) as target,
        pytest.raises(psycopg.Error) as err,
    ):
        exec_sql(target, query, [uuid.uuid4()], queue=q)
    assert err.value.sqlstate == state
    assert queued(db) == []


def test_pool_target_and_composed_query(module_dsn: str, db: Conn, q: RetryQueue) -> None:
    query = sql.SQL("INSERT INTO {} (message_id, body) VALUES (%(id)s, %(body)s)").format(
        sql.Identifier("chat_log")
    )
    with ConnectionPool(module_dsn, min_size=1, max_size=1) as pool:
        assert exec_sql(pool, query, {"id": uuid.uuid4(), "body": "a"}, queue=q) == 1
        db.execute("INSERT INTO outage VALUES ('40P01')")
        with pytest.raises(pgerr.DeadlockDetected):
            exec_sql(pool, query, {"id": uuid.uuid4(), "body": "b"}, queue=q, max_retries=9)
    [(_, _, _, data, _)] = queued(db)
    assert data["query"] == 'INSERT INTO "chat_log" (message_id, body) VALUES (%(id)s, %(body)s)'
    assert data["params"]["body"] == "b"
    row = db.execute("SELECT max_retries FROM daz_retry_queue").fetchone()
    assert row == (9,)


def test_the_handler_dead_letters_what_cannot_succeed(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    no_query = q.add(SQL_EXEC_FAILED, {"params": []}).id
    bad_params = q.add(SQL_EXEC_FAILED, {"query": "SELECT 1", "params": "x"}).id
    syntax = q.add(SQL_EXEC_FAILED, {"query": "SELEC 1", "params": None}).id
    with ConnectionPool(module_dsn, min_size=1, max_size=2) as pool:
        RetryWorker(module_dsn, {SQL_EXEC_FAILED: sql_exec_handler(pool)}, **FAST).run(
            exit_when_drained=True
        )
        assert not pool.closed  # a pool we gave stays ours
    codes = dict(
        db.execute(
            "SELECT id, last_error_code FROM daz_retry_queue WHERE status = 'dead_letter'"
        ).fetchall()
    )
    assert codes == {no_query: "bad_item", bad_params: "bad_item", syntax: "42601"}


def test_the_handler_retries_a_transient_replay_failure(
    module_dsn: str, db: Conn, q: RetryQueue
) -> None:
    message_id = uuid.uuid4()
    q.add(
        SQL_EXEC_FAILED,
        {"query": INSERT, "params": [str(message_id), "x", None, None, None, None]},
        retry_delay=0.05,
    )
    db.execute("INSERT INTO outage VALUES ('57P01')")
    seen: list[str] = []

    def on_event(event: Any) -> None:
        seen.append(event.kind)
        if event.kind == "failed":
            db.execute("DELETE FROM outage")  # the target comes back

    handler = SqlExecHandler(module_dsn)
    try:
        RetryWorker(module_dsn, {SQL_EXEC_FAILED: handler}, on_event=on_event, **FAST).run(
            exit_when_drained=True
        )
    finally:
        handler.close()
    assert seen == ["failed", "completed"]
    assert db.execute("SELECT message_id FROM chat_log").fetchall() == [(message_id,)]
