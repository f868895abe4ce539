"""Routing (acquire_retry_items' p_event_types / p_plugin_names) and pauses
(retry_queue_pause / retry_queue_resume), issue 14 items 1 and 4.

The clock moves through p_now; nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from retryq_py import migrate

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
Conn = psycopg.Connection[Any]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def db(module_dsn: str, module_reset: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
        yield c


def enqueue(c: Conn, event_type: str, plugin: str | None = None, n: int = 1,
            max_retries: int = 3, priority: int = 5) -> list[int]:
    item = {"event_type": event_type, "event_data": {}, "plugin_name": plugin,
            "max_retries": max_retries, "retry_delay_seconds": 0, "priority": priority}
    rows = c.execute(
        "SELECT id FROM enqueue_retry_items(%s, %s)", (Jsonb([item] * n), T0)
    ).fetchall()
    return [r["id"] for r in rows]


def acquire(c: Conn, worker: str, now: datetime, types: list[str] | None = None,
            plugins: list[str] | None = None, batch: int = 100,
            timeout: int = 60) -> list[dict[str, Any]]:
    return c.execute(
        "SELECT * FROM acquire_retry_items(%s, %s, %s, %s, %s, %s)",
        (worker, batch, timeout, now, types, plugins),
    ).fetchall()


def ids(rows: list[dict[str, Any]]) -> set[int]:
    return {r["id"] for r in rows}


# --- routing ----------------------------------------------------------------


def test_acquire_leases_only_the_listed_event_types(db: Conn) -> None:
    a = enqueue(db, "a", n=3)
    b = enqueue(db, "b", n=2, priority=9)  # more urgent: must still be left alone
    c = enqueue(db, "c", n=2)
    assert ids(acquire(db, "wa", at(1), ["a"])) == set(a)
    assert ids(acquire(db, "wbc", at(1), ["b", "c"])) == set(b) | set(c)
    assert acquire(db, "wall", at(1)) == []


def test_acquire_routes_by_plugin_and_empty_string_means_no_plugin(db: Conn) -> None:
    chat = enqueue(db, "t", "chat")
    sqlp = enqueue(db, "t", "sql")
    bare = enqueue(db, "t", None)
    assert ids(acquire(db, "w1", at(1), None, ["sql"])) == set(sqlp)
    assert ids(acquire(db, "w2", at(1), ["t"], [""])) == set(bare)
    assert ids(acquire(db, "w3", at(1), ["t"], ["chat", "other"])) == set(chat)


def test_null_lists_lease_everything_as_before(db: Conn) -> None:
    every = enqueue(db, "a", n=2) + enqueue(db, "b", "p", n=2)
    assert ids(acquire(db, "w", at(1), None, None)) == set(every)


def test_routed_batch_fills_across_priorities(db: Conn) -> None:
    # the filtered-out items sit in front of the wanted ones in every priority
    enqueue(db, "other", n=5, priority=9)
    hi = enqueue(db, "mine", n=2, priority=9)
    enqueue(db, "other", n=5, priority=3)
    lo = enqueue(db, "mine", n=2, priority=3)
    got = acquire(db, "w", at(1), ["mine"], batch=3)
    assert [r["id"] for r in got][:2] == hi and len(got) == 3 and got[2]["id"] in lo


def rows_read(c: Conn) -> int:
    """Rows of the active partition this transaction has read so far (by
    sequential and index scans)."""
    row = c.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n"
        " FROM pg_stat_xact_user_tables WHERE relid = '_retryq_active'::regclass"
    ).fetchone()
    return int(row["n"]) if row else 0


@pytest.mark.parametrize("statement", ["lighter", "full"])
def test_a_routed_walk_reads_its_own_items_not_another_types_backlog(
    db: Conn, statement: str
) -> None:
    # 3,000 due items of "other", all due before "mine"'s: a walk in due order
    # filtered by type read every one of them before it found "mine" (or, for
    # a type with nothing due, before it gave up). A pause of a third type
    # sends acquire through its full statement.
    if statement == "full":
        pause(db, "elsewhere")
    db.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data)"
        " SELECT 'other', '{}' FROM generate_series(1, 3000)"
    )
    mine = enqueue(db, "mine", n=5)
    db.execute("ANALYZE daz_retry_queue")
    for types, want in ((["mine"], mine), (["idle"], []), (["idle", "mine"], mine)):
        with db.transaction(force_rollback=True):
            before = rows_read(db)
            got = acquire(db, "w", at(1), types, batch=10)
            db.execute("SELECT * FROM retry_queue_due(%s, NULL)", (types,)).fetchall()
            read = rows_read(db) - before
        assert [r["id"] for r in got] == want
        assert read < 100, (types, read)


def test_a_routed_lease_stays_a_hot_update_with_the_routed_index(db: Conn) -> None:
    # _retryq_active_routed_idx covers event_type, priority, next_retry_at and
    # id, which a lease leaves alone: no index entry is written (status in it,
    # or in a predicate, would make every lease a full update)
    mine = enqueue(db, "mine", n=40)
    with db.transaction(force_rollback=True):
        got = acquire(db, "w", at(1), ["mine"], batch=40)
        row = db.execute(
            "SELECT pg_stat_get_xact_tuples_updated(r) AS updated,"
            " pg_stat_get_xact_tuples_hot_updated(r) AS hot"
            " FROM (SELECT '_retryq_active'::regclass::oid AS r) AS x"
        ).fetchone()
    assert [r["id"] for r in got] == mine
    # a few rows per page find no room for their new version (fillfactor 50;
    # see test_dedupe's twin of this test)
    assert row is not None and row["updated"] == 40 and row["hot"] >= 32, row


def test_an_expired_lease_is_taken_over_only_by_a_worker_of_its_type(db: Conn) -> None:
    [b] = enqueue(db, "b")
    assert ids(acquire(db, "w1", at(1), timeout=10)) == {b}
    assert acquire(db, "wa", at(100), ["a"]) == []
    row = db.execute("SELECT status, retry_count, locked_by FROM daz_retry_queue"
                     " WHERE id = %s", (b,)).fetchone()
    assert row == {"status": "processing", "retry_count": 0, "locked_by": "w1"}
    [taken] = acquire(db, "wb", at(100), ["b"])
    assert taken["id"] == b and taken["retry_count"] == 1


def test_routing_holds_while_a_circuit_is_open_or_a_type_paused(db: Conn) -> None:
    # either one sends acquire down its full statement, which routes too
    a = enqueue(db, "a")
    enqueue(db, "b", n=2)
    enqueue(db, "c")
    pause(db, "c")
    assert ids(acquire(db, "wa", at(1), ["a"])) == set(a)
    resume(db, "c")
    db.execute("SELECT retry_circuit_open('c')")
    [a2] = enqueue(db, "a")
    assert ids(acquire(db, "wa", at(2), ["a"])) == {a2}


def test_a_routed_worker_does_not_probe_another_services_circuit(db: Conn) -> None:
    db.execute("SELECT retry_circuit_open('b', NULL, 30, %s)", (T0,))
    [b] = enqueue(db, "b")
    [a] = enqueue(db, "a")
    assert ids(acquire(db, "wa", at(60), ["a"])) == {a}
    # the probe is still there for b's own worker, not postponed by wa
    state = db.execute("SELECT state, probe_id, next_probe_at FROM _retryq_circuit").fetchone()
    assert state == {"state": "open", "probe_id": None, "next_probe_at": None}
    assert ids(acquire(db, "wb", at(60), ["b"])) == {b}


@pytest.mark.parametrize(
    ("types", "plugins", "column", "message"),
    [
        ([], None, "event_types", "must be NULL (every event type) or hold 1 to 1000"),
        (["a", None], None, "event_types", "must not hold NULL"),
        (["a", " \t"], None, "event_types", "must not hold a blank event type"),
        (["a"] * 1001, None, "event_types", "1 to 1000"),
        (None, [], "plugin_names", "must be NULL (every plugin)"),
        (None, ["p", None], "plugin_names", "must not hold NULL"),
        # array_position raised 0A000 on these (found by test_kinds in CI)
        ([["a"], ["b"]], None, "event_types", "must be a one-dimensional array"),
        (None, [["p"], ["q"]], "plugin_names", "must be a one-dimensional array"),
    ],
)
def test_bad_routing_lists_are_refused_naming_the_parameter(
    db: Conn, types: Any, plugins: Any, column: str, message: str
) -> None:
    enqueue(db, "a")
    for statement in (
        "SELECT * FROM acquire_retry_items('w', 10, 60, p_event_types => %s,"
        " p_plugin_names => %s)",
        "SELECT * FROM retry_queue_due(%s, %s)",
    ):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            db.execute(statement, (types, plugins))  # type: ignore[arg-type]
        assert info.value.diag.column_name == column
        assert message in str(info.value)
    assert db.execute("SELECT count(*) AS n FROM daz_retry_queue WHERE status = 'pending'"
                      ).fetchone() == {"n": 1}


def test_due_answers_for_the_routed_items_only(db: Conn) -> None:
    enqueue(db, "b")
    row = db.execute("SELECT * FROM retry_queue_due(%s, NULL)", (["a"],)).fetchone()
    assert row == {"active": False, "seconds_until_due": None, "oldest_due_age_seconds": 0}
    row = db.execute("SELECT * FROM retry_queue_due(%s, NULL)", (["b"],)).fetchone()
    assert row is not None and row["active"] and row["seconds_until_due"] is not None


# --- pauses -----------------------------------------------------------------


def pause(c: Conn, event_type: str | None = None, plugin: str | None = None,
          reason: str | None = None) -> bool:
    row = c.execute("SELECT retry_queue_pause(%s, %s, %s, %s) AS v",
                    (event_type, plugin, reason, T0)).fetchone()
    assert row is not None
    return bool(row["v"])


def resume(c: Conn, event_type: str | None = None, plugin: str | None = None) -> bool:
    row = c.execute("SELECT retry_queue_resume(%s, %s) AS v", (event_type, plugin)).fetchone()
    assert row is not None
    return bool(row["v"])


def test_a_paused_type_is_not_leased_and_resumes(db: Conn) -> None:
    a = enqueue(db, "a", n=2)
    b = enqueue(db, "b", n=2)
    assert pause(db, "a", reason="vendor outage") is True
    assert ids(acquire(db, "w", at(1))) == set(b)
    assert acquire(db, "w", at(2)) == []
    assert acquire(db, "wa", at(2), ["a"]) == []
    assert resume(db, "a") is True
    assert ids(acquire(db, "w", at(3))) == set(a)
    assert resume(db, "a") is False


def test_pause_of_one_plugin_and_of_a_plugin_across_types(db: Conn) -> None:
    chat = enqueue(db, "t", "chat")
    sqlp = enqueue(db, "t", "sql")
    bare = enqueue(db, "t", None)
    other_chat = enqueue(db, "u", "chat")
    pause(db, "t", "chat")
    pause(db, None, "sql")
    assert ids(acquire(db, "w", at(1))) == set(bare) | set(other_chat)
    resume(db, "t", "chat")
    assert ids(acquire(db, "w", at(2))) == set(chat)
    resume(db, None, "sql")
    assert ids(acquire(db, "w", at(3))) == set(sqlp)


def test_a_pause_of_the_items_without_a_plugin_leaves_every_plugin_running(db: Conn) -> None:
    """plugin_name '' pauses only the items without a plugin (NULL or '' in the
    queue), NULL every plugin: two keys, paused and resumed apart, shown by the
    views as given, so a view row's columns resume it."""
    bare = enqueue(db, "t", None) + enqueue(db, "t", "")
    chat = enqueue(db, "t", "chat")
    other = enqueue(db, "u", None)
    assert pause(db, "t", "") is True
    assert ids(acquire(db, "w", at(1), batch=1, timeout=1, types=["t"])) == set(chat)
    assert acquire(db, "w", at(1), types=["t"], plugins=[""]) == []
    row = db.execute("SELECT * FROM retry_queue_due(%s, %s)", (["t"], [""])).fetchone()
    assert row == {"active": True, "seconds_until_due": None, "oldest_due_age_seconds": 0}
    rows = db.execute("SELECT event_type, plugin_name, held_count FROM daz_retry_queue_pauses"
                      ).fetchall()
    assert rows == [{"event_type": "t", "plugin_name": "", "held_count": 2}]
    stats = db.execute("SELECT event_type, plugin_name, paused FROM daz_retry_queue_stats"
                       " WHERE status = 'pending' ORDER BY 1, 2 NULLS FIRST").fetchall()
    assert [(r["event_type"], r["plugin_name"], r["paused"]) for r in stats] == [
        ("t", None, True), ("t", "", True), ("u", None, False)]
    # the every-plugin key is another key: pausing and resuming it leaves this one
    assert pause(db, "t") is True
    assert resume(db, "t") is True
    assert ids(acquire(db, "w", at(100), timeout=3600)) == set(chat) | set(other)
    # across event types
    assert pause(db, None, "") is True
    assert resume(db, "t", "") is True
    assert acquire(db, "w", at(200)) == []
    for r in db.execute("SELECT event_type, plugin_name FROM daz_retry_queue_pauses").fetchall():
        assert resume(db, r["event_type"], r["plugin_name"]) is True
    assert ids(acquire(db, "w", at(300))) == set(bare)


def test_a_pause_of_the_items_without_a_plugin_holds_their_circuit_probe(db: Conn) -> None:
    [bare] = enqueue(db, "t", None)
    [chat] = enqueue(db, "t", "chat")
    for plugin in (None, "chat"):
        db.execute("SELECT retry_circuit_open('t', %s, 10, %s)", (plugin, T0))
    pause(db, "t", "")
    # both cool-downs over: only the chat circuit is probed
    assert ids(acquire(db, "w", at(20))) == {chat}
    resume(db, "t", "")
    assert ids(acquire(db, "w", at(21))) == {bare}


def test_a_whole_queue_pause_stops_every_lease(db: Conn) -> None:
    every = enqueue(db, "a") + enqueue(db, "b", "p")
    pause(db)
    assert acquire(db, "w", at(1)) == []
    assert acquire(db, "w", at(1), ["a"]) == []
    # resuming a type does not end the whole-queue pause
    assert resume(db, "a") is False
    assert acquire(db, "w", at(1)) == []
    assert resume(db) is True
    assert ids(acquire(db, "w", at(2))) == set(every)


def test_an_expired_lease_of_a_paused_type_is_not_run_again_and_keeps_its_budget(
    db: Conn,
) -> None:
    [a] = enqueue(db, "a", max_retries=1)
    assert ids(acquire(db, "w1", at(1), timeout=10)) == {a}
    pause(db, "a")
    # long past the lease: neither taken over nor buried for a spent budget
    assert acquire(db, "w2", at(1000)) == []
    row = db.execute("SELECT status, retry_count FROM daz_retry_queue WHERE id = %s",
                     (a,)).fetchone()
    assert row == {"status": "processing", "retry_count": 0}
    # the holder may still finish it
    assert db.execute("SELECT complete_retry_item(%s, 'w1', %s) AS ok",
                      (a, at(1001))).fetchone() == {"ok": True}


def test_paused_items_keep_their_budget_while_paused(db: Conn) -> None:
    [a] = enqueue(db, "a", max_retries=2)
    pause(db, "a")
    for t in range(1, 20):
        assert acquire(db, "w", at(t * 100)) == []
    resume(db, "a")
    [row] = acquire(db, "w", at(3000))
    assert row["id"] == a and row["retry_count"] == 0


def test_pause_twice_keeps_the_first_time_and_takes_a_new_reason(db: Conn) -> None:
    assert pause(db, "a", reason="first") is True
    db.execute("SELECT retry_queue_pause('a', NULL, NULL, %s)", (at(50),))
    assert pause(db, "a", reason="second") is False
    rows = db.execute("SELECT event_type, plugin_name, paused_at, reason, paused_by"
                      " FROM daz_retry_queue_pauses").fetchall()
    assert rows == [{"event_type": "a", "plugin_name": None, "paused_at": T0,
                     "reason": "second", "paused_by": db.info.user}]


def test_the_views_show_pauses(db: Conn) -> None:
    enqueue(db, "a", n=2)
    enqueue(db, "b")
    pause(db, "a")
    pause(db)
    rows = db.execute("SELECT event_type, plugin_name, held_count FROM daz_retry_queue_pauses"
                      " ORDER BY event_type NULLS FIRST").fetchall()
    assert rows == [{"event_type": None, "plugin_name": None, "held_count": 3},
                    {"event_type": "a", "plugin_name": None, "held_count": 2}]
    resume(db)
    stats = db.execute("SELECT event_type, paused FROM daz_retry_queue_stats"
                       " ORDER BY event_type").fetchall()
    assert stats == [{"event_type": "a", "paused": True}, {"event_type": "b", "paused": False}]
    # the guide's stats query still works
    assert db.execute("SELECT status, count(*) AS n FROM daz_retry_queue GROUP BY status"
                      ).fetchall() == [{"status": "pending", "n": 3}]


def test_due_does_not_count_paused_items_as_due(db: Conn) -> None:
    enqueue(db, "a")
    pause(db, "a")
    row = db.execute("SELECT * FROM retry_queue_due()").fetchone()
    # still work to come, but nothing to poll for
    assert row == {"active": True, "seconds_until_due": None, "oldest_due_age_seconds": 0}
    resume(db, "a")
    row = db.execute("SELECT * FROM retry_queue_due()").fetchone()
    assert row is not None and row["seconds_until_due"] is not None


def test_resume_wakes_the_workers(db: Conn, module_dsn: str) -> None:
    pause(db, "a")
    channel = db.execute("SELECT retry_queue_channel() AS c").fetchone()["c"]  # type: ignore[index]
    with psycopg.connect(module_dsn, autocommit=True) as listener:
        listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        resume(db, "a")
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert got == ["resume"]


@pytest.mark.parametrize(
    ("event_type", "plugin", "reason", "column"),
    [
        (" ", None, None, "event_type"),
        ("x" * 201, None, None, "event_type"),
        ("a", "p" * 1001, None, "plugin_name"),
        ("a", None, "r" * 1001, "reason"),
    ],
)
def test_bad_pause_keys_are_refused(
    db: Conn, event_type: str, plugin: str | None, reason: str | None, column: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        pause(db, event_type, plugin, reason)
    assert info.value.diag.column_name == column
    if column != "reason":
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            resume(db, event_type, plugin)


def test_the_upgrade_keeps_what_each_pause_meant_and_its_rollback_refuses_a_no_plugin_pause(
    new_database: Any,
) -> None:
    """Pauses made before the new key encoding ('' for every) stop the same
    items after it (NULL for every); rolling back refuses while a pause of the
    items without a plugin exists (the old schema cannot hold one), and keeps
    the others."""
    dsn = new_database()
    every = migrate.apply(dsn)
    mine = next(i for i in every if i.endswith("_pause_no_plugin"))
    newer = len(every) - every.index(mine)
    migrate.rollback(dsn, count=newer)
    keys = [(None, None), ("a", None), (None, "p"), ("a", "p")]
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        for key in keys:
            c.execute("SELECT retry_queue_pause(%s, %s)", key)
    assert migrate.apply(dsn) == every[every.index(mine) :]
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        got = c.execute("SELECT event_type, plugin_name FROM daz_retry_queue_pauses").fetchall()
        assert sorted((r["event_type"] or "", r["plugin_name"] or "") for r in got) == sorted(
            (e or "", p or "") for e, p in keys
        )
        assert all(r["plugin_name"] != "" and r["event_type"] != "" for r in got)
        assert c.execute("SELECT retry_queue_resume() AS v").fetchone() == {"v": True}
        free = enqueue(c, "b", None)
        enqueue(c, "b", "p")  # (every, p) holds it
        enqueue(c, "a", "q")  # (a, every) holds it
        assert ids(acquire(c, "w", at(1))) == set(free)
        c.execute("SELECT retry_queue_pause(NULL, '')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
        migrate.rollback(dsn, count=newer)
    assert "1 pause(s) of the items without a plugin" in str(refused.value)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute(str(refused.value.diag.message_hint).removesuffix(" resumes them"))
    # the refused rollback undid the migrations after this one (each in its
    # own transaction): roll back to just before it, not `newer` more, which
    # went past the migration that creates _retryq_pause once 0019 came
    applied = sum(s.applied for s in migrate.status(dsn))
    migrate.rollback(dsn, count=applied - every.index(mine))
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as c:
        got = c.execute("SELECT event_type, plugin_name FROM _retryq_pause").fetchall()
        assert sorted((r["event_type"], r["plugin_name"]) for r in got) == [
            ("", "p"), ("a", ""), ("a", "p")]
