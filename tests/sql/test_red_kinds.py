"""The SQL red team's kinds 2, 4, 5 and 7 (notes/redsql.md), each on every
path where it could happen; kind 6, the lease fence at millisecond
precision, is in tests/sql/test_lease_fence.py.

2. Server-owned state in a writable column: a producer's
   event_metadata.retryq_snoozes counted as snoozes the item never had
   (retryq_former_id, written at a burial, could be forged the same way).
4. Invisible characters a blank name was made of: Hangul fillers, the blank
   Braille pattern, variation selectors, tag characters and the rest of
   Unicode's Default_Ignorable_Code_Point set.
5. NULL for an optional parameter (a driver's unused argument) refused with
   22023 instead of meaning the default; p_now NULL is the server's clock for
   every role.
7. A float written into the JSON history took the session's
   extra_float_digits (123.456 stored as 100 under -15).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from retryq_py._sql import is_blank
from tests.sql.test_hostile import refused

Conn = psycopg.Connection[Any]


@pytest.fixture
def dsn(module_dsn: str, module_reset: str) -> str:
    """The module's database, emptied before each test."""
    with psycopg.connect(module_dsn, autocommit=True) as c:
        c.execute(module_reset)  # type: ignore[arg-type]
    return module_dsn


@pytest.fixture
def role(conn: Conn, dsn: str) -> Iterator[Any]:
    """role(group) -> an autocommit connection of a new login in that group."""
    made: list[str] = []
    conns: list[Conn] = []

    def connect(group: str) -> Conn:
        login = f"t_red_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
            sql.Identifier(login), sql.Identifier(group)))
        made.append(login)
        c = psycopg.connect(make_conninfo(dsn, user=login), autocommit=True)
        conns.append(c)
        return c

    try:
        yield connect
    finally:
        for c in conns:
            c.close()
        for login in made:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(login)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))


# --- 2: the server's metadata keys ------------------------------------------

FORGED = {"retryq_snoozes": 100, "retryq_former_id": 7, "mine": "kept"}


def _enqueue_forged(conn: Conn, producer: Conn, path: str) -> int:
    meta = Jsonb(FORGED)
    if path == "insert":
        got = producer.execute(
            "INSERT INTO daz_retry_queue (event_type, event_data, event_metadata)"
            " VALUES ('snz.a', '{}', %s) RETURNING id",
            [meta],
        ).fetchone()
    elif path == "copy":
        with producer.cursor() as cur, cur.copy(
            "COPY daz_retry_queue (event_type, event_data, event_metadata) FROM STDIN"
        ) as copy:
            copy.write_row(["snz.a", Jsonb({}), meta])
        got = conn.execute(
            "SELECT max(id) FROM daz_retry_queue WHERE event_type = 'snz.a'"
        ).fetchone()
    elif path == "enqueue_retry_item":
        got = producer.execute(
            "SELECT id FROM enqueue_retry_item('snz.a', '{}', p_event_metadata => %s)", [meta]
        ).fetchone()
    elif path == "enqueue_retry_item_once":
        got = producer.execute(
            "SELECT id FROM enqueue_retry_item_once(gen_random_uuid(), 'snz.a', '{}',"
            " p_event_metadata => %s)",
            [meta],
        ).fetchone()
    else:
        assert path == "enqueue_retry_items"
        got = producer.execute(
            "SELECT id FROM enqueue_retry_items(%s)",
            [Jsonb([{"event_type": "snz.a", "event_data": {}, "event_metadata": FORGED}])],
        ).fetchone()
    assert got is not None
    return int(got[0])


@pytest.mark.parametrize(
    "path",
    ["insert", "copy", "enqueue_retry_item", "enqueue_retry_item_once", "enqueue_retry_items"],
)
def test_a_producers_server_keys_never_count(conn: Conn, role: Any, path: str) -> None:
    item = _enqueue_forged(conn, role("retryq_producer"), path)
    meta = conn.execute(
        "SELECT event_metadata FROM daz_retry_queue WHERE id = %s", [item]
    ).fetchone()
    assert meta == ({"mine": "kept"},)
    worker = role("retryq_worker")
    assert worker.execute("SELECT count(*) FROM acquire_retry_items('w', 1)").fetchone() == (1,)
    # the forged 100 would have buried it at once (red team: 'dead_letter')
    assert worker.execute(
        "SELECT snooze_retry_item_outcome(%s, 'w', 0, p_max_snoozes => 5)", [item]
    ).fetchone() == ("snoozed",)
    assert conn.execute(
        "SELECT event_metadata -> 'retryq_snoozes' FROM daz_retry_queue WHERE id = %s", [item]
    ).fetchone() == (1,)


def test_a_requeue_is_a_fresh_snooze_budget_and_keeps_the_former_id(conn: Conn) -> None:
    item = conn.execute("SELECT id FROM enqueue_retry_item('snz.b', '{}')").fetchone()[0]
    for _ in range(2):
        conn.execute("SELECT count(*) FROM acquire_retry_items('w', 1)")
        assert conn.execute(
            "SELECT snooze_retry_item_outcome(%s, 'w', 0, p_max_snoozes => 2)", [item]
        ).fetchone() == ("snoozed",)
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 1)")
    assert conn.execute(
        "SELECT snooze_retry_item_outcome(%s, 'w', 0, p_max_snoozes => 2)", [item]
    ).fetchone() == ("dead_letter",)
    # as a burial under a new id writes it: the requeue keeps it
    conn.execute(
        "UPDATE _retryq_finished SET event_metadata = event_metadata"
        " || '{\"retryq_former_id\": 42}' WHERE id = %s",
        [item],
    )
    assert conn.execute(
        "SELECT requeue_dead_letter_items(ARRAY[%s]::bigint[])", [item]
    ).fetchone() == (1,)
    assert conn.execute(
        "SELECT status, event_metadata FROM daz_retry_queue WHERE id = %s", [item]
    ).fetchone() == ("pending", {"retryq_former_id": 42})


# --- 4: blank names ----------------------------------------------------------

# one of each: the red team's finds and the rest of the Default_Ignorable and
# White_Space sets the rule lists
NEWLY_BLANK = [
    "\u3164", "\u115f", "\u1160", "\uffa0", "\u034f", "\u061c", "\u2800", "\ufe0f", "\ufe00",
    "\U000e0020", "\U000e0001", "\U000e0fff", "\u17b4", "\u17b5", "\u180b", "\u180f",
    "\u2060", "\u206f", "\ufff0", "\ufff8", "\U0001d173", "\U0001d17a", "\U0001bca0",
    "\U0001bca3", " \u3164\u2800", "\u2800\ufe0f",
]


@pytest.mark.parametrize("blank", NEWLY_BLANK, ids=lambda b: "+".join(f"{ord(c):X}" for c in b))
def test_invisible_names_are_blank_everywhere(conn: Conn, blank: str) -> None:
    assert is_blank(blank)  # retryq_py's twin
    assert conn.execute("SELECT _retryq_blank(%s)", [blank]).fetchone() == (True,)
    calls: list[tuple[str, list[Any], str, str]] = [
        ("SELECT enqueue_retry_item(%s, '{}')", [blank], "23514", "event_type"),
        (
            "INSERT INTO daz_retry_queue (event_type, event_data) VALUES (%s, '{}')",
            [blank], "23514", "event_type",
        ),
        (
            "SELECT enqueue_retry_items(%s)",
            [Jsonb([{"event_type": blank, "event_data": {}}])], "23514", "event_type",
        ),
        ("SELECT acquire_retry_items(%s)", [blank], "22023", "worker_id"),
        (
            "SELECT acquire_retry_items('w', p_event_types => ARRAY[%s])",
            [blank], "22023", "event_types",
        ),
        (
            "SELECT enqueue_retry_item('t', '{}', p_dedupe_key => %s)",
            [blank], "22023", "dedupe_key",
        ),
        (
            "SELECT enqueue_retry_item('t', '{}', p_plugin_name => %s)",
            [blank], "22023", "plugin_name",
        ),
        ("SELECT retry_queue_pause(%s)", [blank], "22023", "event_type"),
        ("SELECT retry_queue_pause('t', %s)", [blank], "22023", "plugin_name"),
        ("SELECT retry_circuit_open(%s)", [blank], "22023", "event_type"),
        ("SELECT retry_rate_limit_set(%s, '', 5)", [blank], "22023", "event_type"),
    ]
    for query, args, state, field in calls:
        refused(conn, lambda q=query, a=args: conn.execute(q, a), state, field)  # type: ignore[misc]


def test_visible_names_next_to_the_blank_ranges_are_not_blank(conn: Conn) -> None:
    for name in ("\u3165", "\u2801", "\ufe10", "\U000e1000", "\U0001d17b", "\u1161", "x\u3164"):
        assert not is_blank(name)
        assert conn.execute("SELECT _retryq_blank(%s)", [name]).fetchone() == (False,)
        assert conn.execute("SELECT enqueue_retry_item(%s, '{}')", [name]).fetchone()


# --- 5: NULL means the default -----------------------------------------------

# the required arguments of each public function with optional ones
REQUIRED: dict[str, str] = {
    "acquire_retry_items": "p_worker_id => 'w'",
    "cancel_retry_items": "p_event_type => 'k'",
    "cleanup_retry_queue": "",
    "cleanup_retry_queue_due": "",
    "complete_retry_item": "p_item_id => 1, p_worker_id => 'w'",
    "complete_retry_items": "p_item_ids => '{1}', p_worker_id => 'w'",
    "enqueue_retry_item": "p_event_type => 'k', p_event_data => '{}'",
    "enqueue_retry_item_once": (
        "p_event_id => gen_random_uuid(), p_event_type => 'k', p_event_data => '{}'"
    ),
    "enqueue_retry_items": "p_items => '[{\"event_type\": \"k\", \"event_data\": {}}]'",
    "extend_retry_lock": "p_item_id => 1, p_worker_id => 'w'",
    "fail_retry_item": "p_item_id => 1, p_worker_id => 'w', p_error_msg => 'e'",
    "list_dead_letter_items": "p_event_type => 'k'",
    "purge_dead_letter_items": "p_event_type => 'k'",
    "requeue_dead_letter_items": "p_event_type => 'k'",
    "requeue_dead_letter_items_report": "p_event_type => 'k'",
    "release_retry_items": "p_item_ids => '{1}', p_worker_id => 'w'",
    "retry_circuit_close": "p_event_type => 'k'",
    "retry_circuit_configure": "p_event_type => 'k'",
    "retry_circuit_open": "p_event_type => 'k'",
    "retry_queue_due": "",
    "retry_queue_pause": "p_event_type => 'k'",
    "retry_queue_resume": "p_event_type => 'k'",
    "retry_rate_limit_clear": "p_event_type => 'k'",
    "retry_rate_limit_set": "p_event_type => 'k', p_plugin_name => '', p_max_leases => 5",
    "snooze_retry_item": "p_item_id => 1, p_worker_id => 'w', p_delay_seconds => 1",
    "snooze_retry_item_outcome": "p_item_id => 1, p_worker_id => 'w', p_delay_seconds => 1",
}
GROUPS = ("retryq_producer", "retryq_worker", "retryq_admin")


def _optional_parameters(conn: Conn) -> list[tuple[str, str, str]]:
    """(function, optional parameter, the group that may call it) of every
    public function."""
    rows = conn.execute(
        "SELECT p.proname, o.name,"
        " (SELECT g FROM unnest(%s::text[]) AS g"
        "  WHERE has_function_privilege(g, p.oid, 'EXECUTE') LIMIT 1)"
        " FROM pg_proc AS p,"
        " unnest(p.proargnames[p.pronargs - p.pronargdefaults + 1:p.pronargs]) AS o (name)"
        " WHERE p.pronamespace = 'public'::regnamespace AND p.proname NOT LIKE '\\_%%'"
        " ORDER BY 1, 2",
        [list(GROUPS)],
    ).fetchall()
    return [(fn, name, group) for fn, name, group in rows]


def test_null_for_any_optional_parameter_means_its_default(conn: Conn, role: Any) -> None:
    optional = _optional_parameters(conn)
    assert {fn for fn, _, _ in optional} == set(REQUIRED)
    callers: dict[str, Conn] = {}
    refusals = []
    for fn, name, group in optional:
        if name in REQUIRED[fn]:
            continue
        assert group is not None, fn
        # as the owner, and as the group that may call it (p_now NULL does
        # not move the clock: never 42501)
        for who in ("owner", group):
            if who not in callers:
                callers[who] = conn if who == "owner" else role(group)
            c = callers[who]
            args = ", ".join(x for x in (REQUIRED[fn], f"{name} => NULL") if x)
            try:
                with c.transaction(force_rollback=True):
                    c.execute(f"SELECT * FROM {fn}({args})")  # type: ignore[arg-type]
            except psycopg.Error as err:
                refusals.append((fn, name, who, err.sqlstate, str(err).splitlines()[0]))
    assert refusals == []


def test_null_now_is_the_servers_clock_on_every_enqueue_path(conn: Conn, role: Any) -> None:
    producer = role("retryq_producer")
    calls = [
        "SELECT id FROM enqueue_retry_item('n.a', '{}', NULL, NULL, NULL, NULL, NULL, NULL,"
        " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        "SELECT id FROM enqueue_retry_item_once(gen_random_uuid(), 'n.a', '{}', NULL, NULL,"
        " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        "SELECT id FROM enqueue_retry_items('[{\"event_type\": \"n.a\", \"event_data\": {}}]',"
        " NULL)",
    ]
    for query in calls:
        before: datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        item = producer.execute(query).fetchone()[0]  # type: ignore[arg-type]
        after: datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        created, due = conn.execute(
            "SELECT created_at, next_retry_at FROM daz_retry_queue WHERE id = %s", [item]
        ).fetchone()
        assert before <= created == due <= after, query


# --- 7: floats in the history -------------------------------------------------


@pytest.mark.parametrize("digits", [-15, 0, 1, 3])
def test_retry_after_in_the_history_is_the_same_whatever_extra_float_digits(
    conn: Conn, digits: int
) -> None:
    item = conn.execute("SELECT id FROM enqueue_retry_item('f.a', '{}')").fetchone()[0]
    conn.execute("SELECT count(*) FROM acquire_retry_items('w', 1)")
    conn.execute(f"SET extra_float_digits = {digits}")  # type: ignore[arg-type]
    assert conn.execute(
        "SELECT fail_retry_item(%s, 'w', 'e', p_retry_after_seconds => 123.456)", [item]
    ).fetchone() == (True,)
    conn.execute("RESET extra_float_digits")
    entry = conn.execute(
        "SELECT (error_history -> -1 -> 'retry_after_seconds')::text FROM daz_retry_queue"
        " WHERE id = %s",
        [item],
    ).fetchone()
    assert entry == ("123.456",)
