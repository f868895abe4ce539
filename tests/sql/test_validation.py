"""Every bad input is refused with a class 22/23 SQLSTATE naming the field, and
changes nothing."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql
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
GOOD = {
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


@pytest.fixture
def dsn(module_dsn: str, module_reset: str) -> str:
    """Overrides conftest's dsn: the module's database, emptied before each test."""
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
    return module_dsn


def snapshot(conn: Conn) -> list[tuple[Any, ...]]:
    """Every row of the queue and the archive, to prove a refusal wrote nothing."""
    rows = conn.execute(
        "SELECT q::text FROM daz_retry_queue AS q UNION ALL "
        "SELECT a::text FROM daz_retry_queue_archive AS a ORDER BY 1"
    ).fetchall()
    return rows


def refused(
    conn: Conn,
    action: Callable[[], Any],
    sqlstate: str,
    field: str,
) -> psycopg.Error:
    """Run action, expect a refusal with that SQLSTATE naming field; nothing written."""
    before = snapshot(conn)
    with pytest.raises(psycopg.Error) as caught:
        action()
    err = caught.value
    assert err.sqlstate is not None
    assert err.sqlstate[:2] in ("22", "23")
    assert err.sqlstate == sqlstate, (err.sqlstate, str(err))
    diag = err.diag
    named = " ".join(
        x or "" for x in (diag.message_primary, diag.constraint_name, diag.column_name)
    )
    assert field in named, named
    assert snapshot(conn) == before
    return err


def call(conn: Conn, fn: str, **kwargs: Any) -> list[tuple[Any, ...]]:
    args = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier("p_" + k), sql.Placeholder(k)) for k in kwargs
    )
    return conn.execute(
        sql.SQL("SELECT * FROM {}({})").format(sql.Identifier(fn), args), kwargs
    ).fetchall()


def guide_insert(conn: Conn, **overrides: Any) -> list[tuple[Any, ...]]:
    values = {**GOOD, **overrides}
    cur = psycopg.RawCursor(conn)
    cur.execute(GUIDE_INSERT, list(values.values()))
    return cur.fetchall()


def enqueue(conn: Conn, **overrides: Any) -> list[tuple[Any, ...]]:
    values = {**GOOD, **overrides}
    return call(conn, "enqueue_retry_item", **values)


def enqueue_many(conn: Conn, items: Any) -> list[tuple[Any, ...]]:
    return call(conn, "enqueue_retry_items", items=Jsonb(items))


CHECK = "23514"
NOT_NULL = "23502"
BAD_TEXT = "22P02"
BAD_PARAM = "22023"

# (field, bad value, SQLSTATE, what names it) for the table's own rules, which
# the guide's INSERT and enqueue_retry_item share.
TABLE_CASES = [
    ("priority", 0, CHECK, "daz_retry_queue_priority_check"),
    ("priority", 11, CHECK, "daz_retry_queue_priority_check"),
    ("max_retries", -1, CHECK, "daz_retry_queue_max_retries_check"),
    ("max_retries", 1001, CHECK, "daz_retry_queue_max_retries_check"),
    ("retry_delay_seconds", -1, CHECK, "daz_retry_queue_retry_delay_seconds_check"),
    ("retry_delay_seconds", math.inf, CHECK, "daz_retry_queue_retry_delay_seconds_check"),
    ("backoff_multiplier", 0.5, CHECK, "daz_retry_queue_backoff_multiplier_check"),
    ("backoff_multiplier", 1e12, CHECK, "daz_retry_queue_backoff_multiplier_check"),
    ("backoff_multiplier", math.nan, CHECK, "daz_retry_queue_backoff_multiplier_check"),
    ("event_type", "", CHECK, "daz_retry_queue_event_type_check"),
    ("event_type", "   ", CHECK, "daz_retry_queue_event_type_check"),
    ("event_type", "\t\n ", CHECK, "daz_retry_queue_event_type_check"),
    ("event_type", "x" * 201, CHECK, "daz_retry_queue_event_type_check"),
    ("event_type", None, NOT_NULL, "event_type"),
    ("event_data", None, NOT_NULL, "event_data"),
    ("event_data", Jsonb(None), CHECK, "daz_retry_queue_event_data_check"),
    ("event_metadata", Jsonb([1]), CHECK, "daz_retry_queue_event_metadata_check"),
    ("event_metadata", Jsonb("text"), CHECK, "daz_retry_queue_event_metadata_check"),
]


@pytest.mark.parametrize(("field", "value", "sqlstate", "named"), TABLE_CASES)
def test_guide_insert_refuses(
    conn: Conn, field: str, value: Any, sqlstate: str, named: str
) -> None:
    guide_insert(conn)  # a good row already there must survive
    refused(conn, lambda: guide_insert(conn, **{field: value}), sqlstate, named)


@pytest.mark.parametrize(("field", "value", "sqlstate", "named"), TABLE_CASES)
def test_enqueue_retry_item_refuses(
    conn: Conn, field: str, value: Any, sqlstate: str, named: str
) -> None:
    enqueue(conn)
    refused(conn, lambda: enqueue(conn, **{field: value}), sqlstate, named)


@pytest.mark.parametrize("metadata", [None, Jsonb(None)])
def test_guide_insert_takes_no_metadata_for_null(conn: Conn, metadata: Any) -> None:
    # issue 12: SQL NULL and JSON null metadata both mean "none" ('{}')
    [(item_id, _)] = guide_insert(conn, event_metadata=metadata)
    assert conn.execute(
        "SELECT event_metadata FROM daz_retry_queue WHERE id = %s", (item_id,)
    ).fetchone() == ({},)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("max_retry_delay_seconds", -1, "daz_retry_queue_max_retry_delay_seconds_check"),
        ("retry_jitter", 1.5, "daz_retry_queue_retry_jitter_check"),
        ("retry_jitter", -0.1, "daz_retry_queue_retry_jitter_check"),
    ],
)
def test_enqueue_refuses_bad_backoff_settings(
    conn: Conn, field: str, value: Any, named: str
) -> None:
    refused(conn, lambda: enqueue(conn, **{field: value}), CHECK, named)


@pytest.mark.parametrize("delay", [-1, 31536001, math.nan])
def test_enqueue_refuses_bad_first_delay(conn: Conn, delay: Any) -> None:
    refused(conn, lambda: enqueue(conn, delay_seconds=delay), BAD_PARAM, "delay_seconds")


@pytest.mark.parametrize("text", ["{bad", "", "{'a': 1}", "[1,]"])
def test_invalid_json_text_is_refused(conn: Conn, text: str) -> None:
    # Go sends event_data as JSON text; PostgreSQL refuses it while parsing the
    # parameter, so the message names the type rather than the column.
    err = refused(conn, lambda: guide_insert(conn, event_data=text), BAD_TEXT, "json")
    assert "json" in str(err).lower()


# --- the worker functions ------------------------------------------------------------


@pytest.fixture
def leased(conn: Conn) -> int:
    enqueue(conn)
    got = call(conn, "acquire_retry_items", worker_id="w", batch_size=1)
    return int(got[0][0])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -5}, "batch_size"),
        ({"batch_size": 1001}, "batch_size"),
        ({"batch_size": 2**31 - 1}, "batch_size"),
        ({"lock_timeout_seconds": 0}, "lock_timeout_seconds"),
        ({"lock_timeout_seconds": 86401}, "lock_timeout_seconds"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "   "}, "worker_id"),
        ({"worker_id": None}, "worker_id"),
        ({"worker_id": "w" * 201}, "worker_id"),
    ],
)
def test_acquire_refuses(conn: Conn, kwargs: dict[str, Any], field: str) -> None:
    enqueue(conn)
    args = {"worker_id": "w", **kwargs}
    refused(conn, lambda: call(conn, "acquire_retry_items", **args), BAD_PARAM, field)


@pytest.mark.parametrize(
    ("fn", "kwargs", "field"),
    [
        ("complete_retry_item", {"worker_id": ""}, "worker_id"),
        ("complete_retry_item", {"worker_id": None}, "worker_id"),
        ("complete_retry_item", {"worker_id": " \u00a0"}, "worker_id"),
        ("complete_retry_item", {"worker_id": "w" * 201}, "worker_id"),
        ("complete_retry_items", {"worker_id": ""}, "worker_id"),
        ("complete_retry_items", {"item_ids": None}, "item_ids"),
        ("fail_retry_item", {"worker_id": " "}, "worker_id"),
        ("fail_retry_item", {"error_msg": None}, "error_msg"),
        ("extend_retry_lock", {"worker_id": ""}, "worker_id"),
        ("extend_retry_lock", {"lock_timeout_seconds": 0}, "lock_timeout_seconds"),
        ("extend_retry_lock", {"lock_timeout_seconds": 86401}, "lock_timeout_seconds"),
        ("release_retry_items", {"worker_id": ""}, "worker_id"),
        ("release_retry_items", {"item_ids": None}, "item_ids"),
    ],
)
def test_lease_functions_refuse(
    conn: Conn, leased: int, fn: str, kwargs: dict[str, Any], field: str
) -> None:
    defaults: dict[str, dict[str, Any]] = {
        "complete_retry_item": {"item_id": leased, "worker_id": "w"},
        "complete_retry_items": {"item_ids": [leased], "worker_id": "w"},
        "fail_retry_item": {"item_id": leased, "worker_id": "w", "error_msg": "boom"},
        "extend_retry_lock": {"item_id": leased, "worker_id": "w", "lock_timeout_seconds": 60},
        "release_retry_items": {"item_ids": [leased], "worker_id": "w"},
    }
    args = {**defaults[fn], **kwargs}
    refused(conn, lambda: call(conn, fn, **args), BAD_PARAM, field)
    # the lease is still w's, untouched
    row = conn.execute("SELECT status, locked_by FROM daz_retry_queue").fetchone()
    assert row == ("processing", "w")


@pytest.mark.parametrize("worker_id", ["", " ", None, "w" * 201])
def test_complete_refuses_a_bad_worker_id_after_a_takeover_too(
    conn: Conn, leased: int, worker_id: str | None
) -> None:
    """complete_retry_item checks the worker id only once it completed nothing
    (a lease is never held under a bad id), on either of its paths: also in a
    transaction that took over leases, where it looks for the item without
    waiting first."""

    def complete_after_takeover() -> Any:
        with conn.transaction():
            conn.execute("SELECT set_config('retryq.took_over', 'yes', true)")
            return call(conn, "complete_retry_item", item_id=leased, worker_id=worker_id)

    refused(conn, complete_after_takeover, BAD_PARAM, "worker_id")
    row = conn.execute("SELECT status, locked_by FROM daz_retry_queue").fetchone()
    assert row == ("processing", "w")


def test_refusal_message_names_the_field(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        call(conn, "acquire_retry_items", worker_id="w", batch_size=0)
    assert caught.value.diag.message_primary == (
        "retryq: invalid batch_size: must be between 1 and 1000"
    )
    assert caught.value.diag.column_name == "batch_size"


# --- enqueue_retry_items -------------------------------------------------------------


def _item(**kwargs: Any) -> dict[str, Any]:
    return {"event_type": "t", "event_data": {"n": 1}, **kwargs}


@pytest.mark.parametrize(
    ("items", "sqlstate", "named"),
    [
        ({"event_type": "t"}, BAD_PARAM, "items"),
        ("text", BAD_PARAM, "items"),
        (None, BAD_PARAM, "items"),
        ([_item(), 1], BAD_PARAM, "items"),
        ([_item(), [_item()]], BAD_PARAM, "items"),
        ([_item(), _item(priorty=3)], BAD_PARAM, "priorty"),
        ([_item(), _item(priority=11)], CHECK, "daz_retry_queue_priority_check"),
        ([_item(), _item(priority=0), _item()], CHECK, "daz_retry_queue_priority_check"),
        ([_item(), _item(max_retries=-1)], CHECK, "daz_retry_queue_max_retries_check"),
        ([_item(backoff_multiplier=0.5)], CHECK, "daz_retry_queue_backoff_multiplier_check"),
        ([_item(), _item(event_type=" ")], CHECK, "daz_retry_queue_event_type_check"),
        ([_item(), {"event_data": 1}], NOT_NULL, "event_type"),
        ([_item(), {"event_type": "t"}], NOT_NULL, "event_data"),
        ([_item(), _item(event_data=None)], NOT_NULL, "event_data"),
        ([_item(event_metadata=[1])], CHECK, "daz_retry_queue_event_metadata_check"),
        ([_item(), _item(delay_seconds=-1)], BAD_PARAM, "delay_seconds"),
        ([_item(), _item(priority="high")], BAD_PARAM, "priority"),
        ([_item(), _item(priority=1.5)], BAD_PARAM, "priority"),
        ([_item(), _item(tags="a")], BAD_PARAM, "tags"),
    ],
)
def test_enqueue_retry_items_refuses_and_writes_none(
    conn: Conn, items: Any, sqlstate: str, named: str
) -> None:
    enqueue(conn)
    if items is None:
        refused(conn, lambda: call(conn, "enqueue_retry_items", items=None), sqlstate, named)
    else:
        refused(conn, lambda: enqueue_many(conn, items), sqlstate, named)
    assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (1,)


# Each kind of element refusal, at index 3 of a batch: (the element, SQLSTATE,
# the field named). Where only the SQL knows the rule (a CHECK, a size, a
# conversion), the refusal once said which field but not which element.
ELEMENT_REFUSALS = [
    (1, BAD_PARAM, "items"),
    (_item(priorty=3), BAD_PARAM, "priorty"),
    (_item(event_type={"x": 1}), BAD_PARAM, "event_type"),
    (_item(priority="high"), BAD_PARAM, "priority"),
    (_item(priority=1.5), BAD_PARAM, "priority"),
    (_item(delay_seconds=-1), BAD_PARAM, "delay_seconds"),
    (_item(tags="a"), BAD_PARAM, "tags"),
    (_item(priority=2**31), "22003", "priority"),
    (_item(priority=11), CHECK, "daz_retry_queue_priority_check"),
    (_item(event_type=" "), CHECK, "daz_retry_queue_event_type_check"),
    (_item(event_metadata=[1]), CHECK, "daz_retry_queue_event_metadata_check"),
    ({"event_data": 1}, NOT_NULL, "event_type"),
    (_item(event_data=None), NOT_NULL, "event_data"),
    (_item(plugin_name=" "), BAD_PARAM, "plugin_name"),
    (_item(tags=["a", None]), "22004", "tags"),
    (_item(dedupe_key="k" * 201), "22001", "dedupe_key"),
    (_item(dedupe_key=" "), BAD_PARAM, "dedupe_key"),
]


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
@pytest.mark.parametrize(("bad", "sqlstate", "named"), ELEMENT_REFUSALS)
def test_enqueue_retry_items_names_the_refused_element(
    conn: Conn, bad: Any, sqlstate: str, named: str, keyed: bool
) -> None:
    """A Go caller of enqueue_retry_items learns which element was refused:
    'retryq: item 3: ', with the refusal's own SQLSTATE and field; a later bad
    element is not the one named."""
    good = [_item(dedupe_key=f"k{n}") if keyed else _item() for n in range(3)]
    items = [*good, bad, _item(), _item(priority=99)]
    err = refused(conn, lambda: enqueue_many(conn, items), sqlstate, named)
    assert (err.diag.message_primary or "").startswith("retryq: item 3: "), str(err)


def test_enqueue_retry_items_names_by_the_batch_meaning(conn: Conn) -> None:
    """A later item of a dedupe_key adds nothing and is not checked, in the
    batch as alone: the item named is the first the batch refuses."""
    items = [_item(dedupe_key="k"), _item(dedupe_key="k", priority=99), _item(priority=0)]
    err = refused(conn, lambda: enqueue_many(conn, items), CHECK, "priority")
    assert (err.diag.message_primary or "").startswith("retryq: item 2: "), str(err)
    assert err.diag.constraint_name == "daz_retry_queue_priority_check"
    assert err.diag.column_name == "priority"
    assert err.diag.table_name == "daz_retry_queue"


def test_enqueue_retry_items_names_a_lone_element(conn: Conn) -> None:
    err = refused(conn, lambda: enqueue_many(conn, [_item(priority=11)]), CHECK, "priority")
    assert (err.diag.message_primary or "").startswith("retryq: item 0: "), str(err)
    assert err.diag.schema_name is None
    assert err.diag.message_detail is None


def test_unknown_key_message_names_it(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        enqueue_many(conn, [_item(), _item(max_retry=5)])
    assert "max_retry" in str(caught.value)


def test_requeue_refuses_with_no_filter(conn: Conn) -> None:
    refused(conn, lambda: call(conn, "requeue_dead_letter_items"), BAD_PARAM, "item_ids")


# --- properties ----------------------------------------------------------------------


@given(priority=st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_any_priority_outside_1_to_10_is_refused(conn: Conn, priority: int) -> None:
    with conn.transaction(force_rollback=True):
        if 1 <= priority <= 10:
            assert len(enqueue(conn, priority=priority)) == 1
        else:
            with pytest.raises(psycopg.errors.CheckViolation, match="priority"):
                enqueue(conn, priority=priority)


@given(multiplier=st.floats(allow_nan=True, allow_infinity=True))
def test_any_multiplier_outside_1_to_10_is_refused(conn: Conn, multiplier: float) -> None:
    with conn.transaction(force_rollback=True):
        if 1 <= multiplier <= 10:
            assert len(enqueue(conn, backoff_multiplier=multiplier)) == 1
        else:
            with pytest.raises(psycopg.errors.CheckViolation, match="backoff_multiplier"):
                enqueue(conn, backoff_multiplier=multiplier)


@given(
    batch=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    timeout=st.integers(min_value=-(2**31), max_value=2**31 - 1),
)
def test_acquire_accepts_exactly_the_bounded_sizes(conn: Conn, batch: int, timeout: int) -> None:
    ok = 1 <= batch <= 1000 and 1 <= timeout <= 86400
    with conn.transaction(force_rollback=True):
        enqueue(conn)
        if ok:
            got = call(
                conn,
                "acquire_retry_items",
                worker_id="w",
                batch_size=batch,
                lock_timeout_seconds=timeout,
            )
            assert len(got) == 1
        else:
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                call(
                    conn,
                    "acquire_retry_items",
                    worker_id="w",
                    batch_size=batch,
                    lock_timeout_seconds=timeout,
                )


# --- the finished partition ----------------------------------------------------------
# The active partition holds the table's named CHECK constraints; the finished one
# checks the same rules with one constraint that calls _retryq_finished_row_ok
# (migration 0005). A row must be refused by one exactly when by the other, and
# under the same name.

# a cancelled item's time is completed_at: when it left the queue
FINISHED_AT = {
    "completed": "completed_at",
    "dead_letter": "dead_lettered_at",
    "cancelled": "completed_at",
}
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def insert_row(conn: Conn, status: str, **overrides: Any) -> None:
    """The guide's columns plus a status (and its time, for a finished one),
    inserted through daz_retry_queue so that PostgreSQL routes the row."""
    values: dict[str, Any] = {**GOOD, "status": status}
    if status in FINISHED_AT:
        values[FINISHED_AT[status]] = NOW
    values.update(overrides)
    conn.execute(
        sql.SQL("INSERT INTO daz_retry_queue ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)),
        ),
        list(values.values()),
    )


@pytest.mark.parametrize("status", list(FINISHED_AT))
def test_a_finished_row_is_accepted(conn: Conn, status: str) -> None:
    insert_row(conn, status)
    assert conn.execute(
        "SELECT count(*) FROM _retryq_finished WHERE status = %s", (status,)
    ).fetchone() == (1,)


@pytest.mark.parametrize("status", list(FINISHED_AT))
@pytest.mark.parametrize(("field", "value", "sqlstate", "named"), TABLE_CASES)
def test_a_finished_row_is_held_to_the_table_rules(
    conn: Conn, status: str, field: str, value: Any, sqlstate: str, named: str
) -> None:
    insert_row(conn, status)
    refused(conn, lambda: insert_row(conn, status, **{field: value}), sqlstate, named)


# The finished partition has no CHECK of its own (each one is read from the catalog
# in every statement that writes a row: a quarter of a completion's work); an INSERT
# through daz_retry_queue is checked by _retryq_inserted, an UPDATE by the row
# trigger _retryq_finished_updated.


@pytest.mark.parametrize("status", list(FINISHED_AT))
@pytest.mark.parametrize(("field", "value", "sqlstate", "named"), TABLE_CASES)
def test_an_update_of_a_finished_row_is_held_to_the_table_rules(
    conn: Conn, status: str, field: str, value: Any, sqlstate: str, named: str
) -> None:
    insert_row(conn, status)
    refused(
        conn,
        lambda: conn.execute(
            sql.SQL("UPDATE daz_retry_queue SET {} = %s WHERE status = %s").format(
                sql.Identifier(field)
            ),
            (value, status),
        ),
        sqlstate,
        named,
    )


@pytest.mark.parametrize(
    ("status", "changes", "named"),
    [
        ("completed", {"completed_at": None}, "daz_retry_queue_completed_at_check"),
        ("completed", {"status": "dead_letter"}, "daz_retry_queue_completed_at_check"),
        ("dead_letter", {"status": "cancelled"}, "daz_retry_queue_completed_at_check"),
        ("cancelled", {"locked_by": "w", "locked_until": NOW}, "daz_retry_queue_lease_check"),
        ("completed", {"retry_count": 4}, "daz_retry_queue_retry_count_check"),
    ],
)
def test_an_update_of_a_finished_row_keeps_its_state_columns(
    conn: Conn, status: str, changes: dict[str, Any], named: str
) -> None:
    insert_row(conn, status)
    refused(
        conn,
        lambda: conn.execute(
            sql.SQL("UPDATE daz_retry_queue SET {}").format(
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in changes
                )
            ),
            list(changes.values()),
        ),
        CHECK,
        named,
    )


def test_a_bad_finished_row_among_good_rows_refuses_the_whole_insert(conn: Conn) -> None:
    """One statement, pending and finished rows: the finished row without its
    dead-letter time is refused by name, and none of the others stays."""
    rows = [
        {**GOOD, "status": "pending", "completed_at": None, "dead_lettered_at": None},
        {**GOOD, "status": "completed", "completed_at": NOW, "dead_lettered_at": None},
        {**GOOD, "status": "dead_letter", "completed_at": None, "dead_lettered_at": None},
    ]
    columns = list(rows[0])
    one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    statement = sql.SQL("INSERT INTO daz_retry_queue ({}) VALUES {}").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), sql.SQL(", ").join([one] * len(rows))
    )
    params = [r[c] for r in rows for c in columns]
    refused(
        conn,
        lambda: conn.execute(statement, params),
        CHECK,
        "daz_retry_queue_dead_lettered_at_check",
    )


@pytest.mark.parametrize(
    ("status", "overrides", "named"),
    [
        ("completed", {"completed_at": None}, "daz_retry_queue_completed_at_check"),
        ("dead_letter", {"dead_lettered_at": None}, "daz_retry_queue_dead_lettered_at_check"),
        ("completed", {"dead_lettered_at": NOW}, "daz_retry_queue_dead_lettered_at_check"),
        ("dead_letter", {"completed_at": NOW}, "daz_retry_queue_completed_at_check"),
        ("cancelled", {"completed_at": None}, "daz_retry_queue_completed_at_check"),
        ("cancelled", {"dead_lettered_at": NOW}, "daz_retry_queue_dead_lettered_at_check"),
        ("completed", {"locked_by": "w", "locked_until": NOW}, "daz_retry_queue_lease_check"),
        ("pending", {"completed_at": NOW}, "daz_retry_queue_completed_at_check"),
        ("pending", {"locked_by": "w", "locked_until": NOW}, "daz_retry_queue_lease_check"),
        ("processing", {}, "daz_retry_queue_lease_check"),
    ],
)
def test_state_columns_must_match_the_status(
    conn: Conn, status: str, overrides: dict[str, Any], named: str
) -> None:
    refused(conn, lambda: insert_row(conn, status, **overrides), CHECK, named)


def _outcome(conn: Conn, status: str, row: dict[str, Any]) -> tuple[str | None, ...] | None:
    """None if the row goes in, else the refusal's SQLSTATE and constraint."""
    try:
        with conn.transaction(force_rollback=True):
            insert_row(conn, status, **row)
    except psycopg.Error as err:
        return (err.sqlstate, err.diag.constraint_name)
    return None


_BOUNDS = [-1.0, 0.0, 0.5, 1.0, 10.0, 10.5, 31536000.0, 31536001.0, math.nan, math.inf]
_JSON = [Jsonb(None), Jsonb({}), Jsonb({"a": 1}), Jsonb([1]), Jsonb("s"), Jsonb(0)]
# JSON null metadata is a new item's "no metadata" (the active partition's
# trigger stores '{}'); a finished row inserted by the owner gets no defaults
_METADATA = [j for j in _JSON if j.obj is not None]


# Values at and around each rule's bounds, valid and not.
_VALUES: dict[str, list[Any]] = {
    "event_type": ["x", "", " ", "\t\n", " a ", "x" * 200, "x" * 201],
    "priority": [-1, 0, 1, 10, 11],
    "max_retries": [-1, 0, 3, 1000, 1001],
    "retry_count": [-1, 0, 3, 4],
    "retry_delay_seconds": _BOUNDS,
    "backoff_multiplier": _BOUNDS,
    "max_retry_delay_seconds": _BOUNDS,
    "retry_jitter": _BOUNDS,
    "event_data": _JSON,
    "event_metadata": _METADATA,
    "locked_by": [None, "w"],
    "locked_until": [None, NOW],
}


def test_every_bound_is_the_same_on_both_partitions(conn: Conn) -> None:
    """Each value of _VALUES alone, on a good row: every bound in turn."""
    differ = [
        (field, value, finished, active, got)
        for field, values in _VALUES.items()
        for value in values
        for finished in FINISHED_AT
        if (active := _outcome(conn, "pending", {field: value}))
        != (got := _outcome(conn, finished, {field: value}))
    ]
    assert differ == []


@st.composite
def _rows(draw: st.DrawFn) -> dict[str, Any]:
    """A good row with two or three of its fields changed: rows that break two
    rules, or one, or none."""
    fields = draw(st.lists(st.sampled_from(sorted(_VALUES)), min_size=2, max_size=3, unique=True))
    return {f: draw(st.sampled_from(_VALUES[f])) for f in fields}


@given(row=_rows(), finished=st.sampled_from(list(FINISHED_AT)))
def test_both_partitions_refuse_the_same_rows_by_the_same_name(
    conn: Conn, row: dict[str, Any], finished: str
) -> None:
    active = _outcome(conn, "pending", row)
    assert _outcome(conn, finished, row) == active
