"""Least privilege: every allow and every deny of retryq_producer, retryq_worker
and retryq_admin, proved by logging in as a role that holds only that group.

The group roles belong to the cluster that all test sessions share; the login
roles made here have unique names and are dropped afterwards.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from retryq_py import migrate

Conn = psycopg.Connection[Any]
GROUPS = ("retryq_producer", "retryq_worker", "retryq_admin")
ACQUIRE = "acquire_retry_items(text, bigint, bigint, timestamptz, text[], text[])"

# name -> (SQL, expected first value when allowed, or None to only require success).
# {leased}, {pending}, {dead} are ids prepared by the fixture.
STATEMENTS: dict[str, tuple[str, Any]] = {
    "guide_insert": (
        "INSERT INTO daz_retry_queue (event_type, channel_name, plugin_name, event_data,"
        " event_metadata, max_retries, retry_delay_seconds, backoff_multiplier, priority,"
        " correlation_id, tags) VALUES ('t', '', 'p', '{{}}', '{{}}', 3, 60, 2.0, 5, 'c',"
        " '{{p}}') RETURNING id, event_id",
        None,
    ),
    "enqueue_item": ("SELECT id FROM enqueue_retry_item('t', '{{}}')", None),
    # a dedupe key: set by the INSERT or the function; read back by neither
    "insert_dedupe_key": (
        "INSERT INTO daz_retry_queue (event_type, event_data, dedupe_key)"
        " VALUES ('t', '{{}}', 'role-k1') RETURNING id, event_id",
        None,
    ),
    "enqueue_item_keyed": (
        "SELECT deduplicated FROM enqueue_retry_item('t', '{{}}', p_dedupe_key => 'role-k2')",
        False,
    ),
    "select_dedupe_key": ("SELECT count(dedupe_key) FROM daz_retry_queue", 0),
    "enqueue_once": (
        "SELECT id FROM enqueue_retry_item_once("
        "'00000000-0000-4000-8000-000000000001', 't', '{{}}')",
        None,
    ),
    "enqueue_items": (
        """SELECT count(*) FROM enqueue_retry_items('[{{"event_type": "t", "event_data": 1}}]')""",
        1,
    ),
    "channel": ("SELECT retry_queue_channel()", "public.daz_retry_queue"),
    "select_ids": ("SELECT count(id) FROM daz_retry_queue WHERE event_id IS NOT NULL", 3),
    "select_payload": ("SELECT count(event_data) FROM daz_retry_queue", 3),
    "select_partition": ("SELECT count(*) FROM _retryq_active", None),
    "update_queue": ("UPDATE daz_retry_queue SET priority = 1", None),
    "delete_queue": ("DELETE FROM daz_retry_queue", None),
    "update_partition": ("UPDATE _retryq_active SET priority = 1", None),
    "delete_partition": ("DELETE FROM _retryq_finished", None),
    "insert_partition": (
        "INSERT INTO _retryq_active (event_type, event_data) VALUES ('t', '1')",
        None,
    ),
    "truncate": ("TRUNCATE daz_retry_queue", None),
    "acquire": ("SELECT count(*) FROM acquire_retry_items('w2', 10)", 1),
    "acquire_routed": (
        "SELECT count(*) FROM acquire_retry_items('w2', 10,"
        " p_event_types => '{{t}}', p_plugin_names => '{{p}}')",
        1,
    ),
    "complete": ("SELECT complete_retry_item({leased}, 'w')", True),
    "complete_items": ("SELECT complete_retry_items(ARRAY[{leased}]::bigint[], 'w')", 1),
    "fail": ("SELECT fail_retry_item({leased}, 'w', 'boom')", True),
    "extend": ("SELECT extend_retry_lock({leased}, 'w')", True),
    "snooze": ("SELECT snooze_retry_item({leased}, 'w', 5)", True),
    "snooze_outcome": ("SELECT snooze_retry_item_outcome({leased}, 'w', 5)", "snoozed"),
    "release": ("SELECT release_retry_items(ARRAY[{leased}]::bigint[], 'w')", 1),
    "requeue": ("SELECT requeue_dead_letter_items(ARRAY[{dead}]::bigint[])", 1),
    "requeue_report": (
        "SELECT count(*) FROM requeue_dead_letter_items_report(ARRAY[{dead}]::bigint[])"
        " WHERE outcome = 'requeued'",
        1,
    ),
    "cleanup": ("SELECT deleted_count FROM cleanup_retry_queue(0)", 1),
    "purge": ("SELECT purge_dead_letter_items(ARRAY[{dead}]::bigint[])", 1),
    "cancel": ("SELECT cancel_retry_items(ARRAY[{pending}]::bigint[])", 1),
    "list_dead": ("SELECT id FROM list_dead_letter_items()", "{dead}"),
    "cleanup_due": ("SELECT due_count FROM cleanup_retry_queue_due(0)", 1),
    "cleanup_lock": ("SELECT cleanup_retry_queue_lock()", True),
    # the private mutexes that replaced advisory locks: no role takes one
    "private_mutex": ("SELECT _retryq_mutex_take('cleanup', false)", None),
    "mutex_table": ("INSERT INTO _retryq_mutex VALUES ('\\x00')", None),
    "due": ("SELECT active FROM retry_queue_due()", True),
    "due_routed": (
        "SELECT active FROM retry_queue_due(p_event_types => '{{t}}', p_plugin_names => '{{p}}')",
        True,
    ),
    "circuit_open": ("SELECT retry_circuit_open('t')", True),
    "circuit_close": ("SELECT retry_circuit_close('t')", False),
    "circuit_configure": ("SELECT retry_circuit_configure('t', NULL, 3)", True),
    "pause": ("SELECT retry_queue_pause('t', p_reason => 'r')", True),
    "resume": ("SELECT retry_queue_resume('t')", False),
    "view_pauses": ("SELECT count(*) FROM daz_retry_queue_pauses", 0),
    "pause_table": ("INSERT INTO _retryq_pause VALUES ('t', '', now(), 'x')", None),
    "view_stats": ("SELECT count(*) FROM daz_retry_queue_stats", 3),
    "view_alerts": ("SELECT count(*) FROM daz_retry_queue_alerts", 1),
    "view_circuits": ("SELECT count(*) FROM daz_retry_queue_circuits", 1),
    "rate_limit_set": ("SELECT retry_rate_limit_set('t', 'p', 5, 1)", True),
    "rate_limit_clear": ("SELECT retry_rate_limit_clear('nothing')", False),
    "view_rate_limits": ("SELECT count(*) FROM daz_retry_queue_rate_limits", 0),
    "rate_tokens": ("UPDATE _retryq_rate_token SET used_at = now()", None),
    "private_rate_grant": (
        "SELECT _retryq_rate_grant(ARRAY[{pending}]::bigint[], '{{t}}', '{{p}}', now())",
        None,
    ),
    "archive": ("SELECT count(*) FROM daz_retry_queue_archive", 0),
    "private_bury": ("SELECT _retryq_bury(ARRAY[{leased}]::bigint[], '{{}}', now())", None),
    "private_check": ("SELECT _retryq_check(true, 'a', 'b')", None),
    "private_circuit": (
        "SELECT _retryq_circuit_failed('t', 'p', 1, 0, now())",
        None,
    ),
    "defaults_table": ("UPDATE _retryq_circuit_defaults SET failure_threshold = 1", None),
}

ALLOWED: dict[str, set[str]] = {
    "retryq_producer": {
        "guide_insert", "enqueue_item", "enqueue_items", "enqueue_once", "channel", "select_ids",
        "insert_dedupe_key", "enqueue_item_keyed",
    },
    "retryq_worker": {
        "channel", "acquire", "acquire_routed", "complete", "complete_items", "fail", "extend",
        "snooze", "snooze_outcome", "release", "select_ids", "select_payload", "view_circuits",
        "view_pauses", "due",
        "due_routed", "select_dedupe_key", "view_rate_limits",
    },
    "retryq_admin": {
        "channel", "requeue", "purge", "cancel", "cleanup", "list_dead", "cleanup_due", "due",
        "requeue_report", "cleanup_lock",
        "due_routed", "circuit_open", "circuit_close", "circuit_configure", "pause", "resume",
        "view_pauses",
        "rate_limit_set", "rate_limit_clear", "view_rate_limits",
        "view_stats", "view_alerts", "view_circuits", "archive", "select_ids", "select_payload",
        "select_dedupe_key",
    },
    "nobody": set(),
}


@pytest.fixture(scope="module")
def roles_db(module_dsn: str) -> tuple[str, dict[str, int]]:
    """The module's database with a leased, a pending and a dead item."""
    dsn = module_dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        def one(q: str) -> Any:
            row = c.execute(q).fetchone()
            assert row is not None
            return row[0]

        leased = one("SELECT id FROM enqueue_retry_item('t', '1', p_plugin_name => 'p')")
        one("SELECT count(*) FROM acquire_retry_items('w', 1)")
        pending = one("SELECT id FROM enqueue_retry_item('t', '2', p_plugin_name => 'p')")
        dead = one(
            "SELECT id FROM enqueue_retry_item('d', '3', p_max_retries => 0,"
            " p_now => now() - interval '30 days')"
        )
        one("SELECT count(*) FROM acquire_retry_items('w0', 5, p_now => now() - interval"
            " '30 days')")
        one(f"SELECT fail_retry_item({dead}, 'w0', 'x', p_now => now() - interval '30 days')")
    return dsn, {"leased": leased, "pending": pending, "dead": dead}


@pytest.fixture(scope="module")
def logins(roles_db: tuple[str, dict[str, int]]) -> Iterator[dict[str, str]]:
    """One LOGIN role per group (and one in no group), named uniquely."""
    dsn, _ = roles_db
    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    made = {g: f"t_{g}_{tag}" for g in (*GROUPS, "nobody")}
    with psycopg.connect(dsn, autocommit=True) as c:
        for group, login in made.items():
            c.execute(f'CREATE ROLE "{login}" LOGIN')
            if group != "nobody":
                c.execute(f'GRANT {group} TO "{login}"')
    try:
        yield made
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            for login in made.values():
                c.execute(f'DROP ROLE IF EXISTS "{login}"')


CASES = [(role, name) for role in ALLOWED for name in STATEMENTS]


@pytest.mark.parametrize(("role", "name"), CASES, ids=[f"{r}-{n}" for r, n in CASES])
def test_role_matrix(
    roles_db: tuple[str, dict[str, int]], logins: dict[str, str], role: str, name: str
) -> None:
    dsn, ids = roles_db
    sql_text, expected = STATEMENTS[name]
    query = sql_text.format(**ids)
    if isinstance(expected, str) and expected.startswith("{"):
        expected = int(expected.format(**ids))
    with psycopg.connect(make_conninfo(dsn, user=logins[role])) as c:
        assert c.execute("SELECT current_user").fetchone() == (logins[role],)
        try:
            if name in ALLOWED[role]:
                row = c.execute(query).fetchone()
                if expected is not None:
                    assert row is not None and row[0] == expected
            else:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(query)
        finally:
            c.rollback()  # every case sees the same prepared rows


def test_every_retryq_function_is_pinned_and_granted_as_documented(conn: Conn) -> None:
    rows = conn.execute(
        """
        SELECT p.proname, p.prosecdef,
            coalesce(array_to_string(p.proconfig, ','), '') AS config,
            has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec,
            array(
                SELECT g FROM unnest(%s::text[]) AS g
                WHERE has_function_privilege(g, p.oid, 'EXECUTE')
            ) AS groups
        FROM pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace
        """,
        (list(GROUPS),),
    ).fetchall()
    by_name = {r[0]: r for r in rows}
    fn_statement = {
        "enqueue_retry_item": "enqueue_item", "enqueue_retry_items": "enqueue_items",
        "enqueue_retry_item_once": "enqueue_once",
        "retry_queue_channel": "channel", "acquire_retry_items": "acquire",
        "complete_retry_item": "complete", "complete_retry_items": "complete_items",
        "fail_retry_item": "fail", "extend_retry_lock": "extend", "snooze_retry_item": "snooze",
        "snooze_retry_item_outcome": "snooze_outcome",
        "release_retry_items": "release", "requeue_dead_letter_items": "requeue",
        "requeue_dead_letter_items_report": "requeue_report",
        "purge_dead_letter_items": "purge", "list_dead_letter_items": "list_dead",
        "cancel_retry_items": "cancel",
        "cleanup_retry_queue": "cleanup", "cleanup_retry_queue_due": "cleanup_due",
        "cleanup_retry_queue_lock": "cleanup_lock",
        "retry_queue_due": "due", "retry_circuit_open": "circuit_open",
        "retry_circuit_close": "circuit_close", "retry_circuit_configure": "circuit_configure",
        "retry_queue_pause": "pause", "retry_queue_resume": "resume",
        "retry_rate_limit_set": "rate_limit_set", "retry_rate_limit_clear": "rate_limit_clear",
    }
    public = {n for n in by_name if not n.startswith("_retryq_")}
    # a function nobody put in the matrix would slip through unproved
    assert public == set(fn_statement)
    for name, (_, secdef, config, public_exec, groups) in by_name.items():
        assert "search_path=public, pg_temp" in config, name
        assert not public_exec, name
        if name.startswith("_retryq_"):
            assert groups == [], name
            continue
        expected = sorted(g for g in GROUPS if fn_statement[name] in ALLOWED[g])
        assert sorted(groups) == expected, name
        assert secdef == (name != "retry_queue_channel"), name


def test_install_is_idempotent_across_schemas_and_rollback_keeps_shared_roles(
    new_database: Any,
) -> None:
    dsn = new_database()
    migrate.apply(dsn)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE SCHEMA other")
    # a second install in the same cluster finds the roles and grants again
    every = [s.id for s in migrate.status(dsn)]
    assert migrate.apply(dsn, schema="other") == every
    assert migrate.rollback(dsn) == every[::-1]
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT to_regprocedure(%(public)s) IS NULL,"
            " has_function_privilege('public', %(other)s, 'EXECUTE'),"
            " has_function_privilege('retryq_worker', %(other)s, 'EXECUTE'),"
            " (SELECT nspacl::text LIKE '%%retryq_%%' FROM pg_namespace WHERE nspname = 'public'),"
            " (SELECT count(*) FROM pg_roles WHERE rolname = ANY(%(groups)s))",
            {"public": f"public.{ACQUIRE}", "other": f"other.{ACQUIRE}", "groups": list(GROUPS)},
        ).fetchone()
    # public is empty and its schema no longer granted; other keeps its grants;
    # the roles stay because other (and every test database) still uses them
    assert row == (True, False, True, False, 3)
    assert migrate.apply(dsn) == every


def test_two_installs_are_kept_apart_as_the_readme_says(new_database: Any) -> None:
    """The group roles are the cluster's: a second schema alone gives a worker
    of one install the other's items. The README's recipe (schema usage to
    each party's login roles, not to the groups) keeps them apart."""
    dsn = new_database()
    tag = uuid.uuid4().hex[:8]
    a_worker, b_worker = f"t_a_{tag}", f"t_b_{tag}"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE SCHEMA a; CREATE SCHEMA b")
    migrate.apply(dsn, schema="a")
    migrate.apply(dsn, schema="b")
    with psycopg.connect(dsn, autocommit=True) as c:
        for schema in ("a", "b"):
            c.execute(f"INSERT INTO {schema}.daz_retry_queue (event_type, event_data)"
                      f" VALUES ('e', '{{\"of\": \"{schema}\"}}')")
        for login in (a_worker, b_worker):
            c.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE retryq_worker')
    acquire = "SELECT event_data->>'of' FROM {}.acquire_retry_items('w', 10)"
    try:
        # as installed: either worker reaches the other's items
        with psycopg.connect(make_conninfo(dsn, user=a_worker), autocommit=True) as w:
            w.execute("BEGIN")
            assert w.execute(acquire.format("b")).fetchall() == [("b",)]
            w.execute("ROLLBACK")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                "REVOKE USAGE ON SCHEMA a, b FROM retryq_producer, retryq_worker, retryq_admin"
            )
            c.execute(f'GRANT USAGE ON SCHEMA a TO "{a_worker}"')
            c.execute(f'GRANT USAGE ON SCHEMA b TO "{b_worker}"')
        for login, mine, theirs in ((a_worker, "a", "b"), (b_worker, "b", "a")):
            with psycopg.connect(make_conninfo(dsn, user=login), autocommit=True) as w:
                assert w.execute(acquire.format(mine)).fetchall() == [(mine,)]
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match=f"schema {theirs}"):
                    w.execute(acquire.format(theirs))
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            for login in (a_worker, b_worker):
                c.execute(f'DROP OWNED BY "{login}"')
                c.execute(f'DROP ROLE IF EXISTS "{login}"')


def test_python_layer_runs_with_only_its_role(dsn: str, conn: Conn) -> None:
    """RetryQueue.add and add_many (nextval and COPY) as retryq_producer, a RetryWorker as
    retryq_worker with its default scheduled cleanup (which it may not run: the
    worker turns it off and carries on), the queue metrics as retryq_admin and as
    retryq_worker."""
    from retryq_py import RetryQueue, RetryWorker, ops

    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    logins = {g: f"t_py_{g}_{tag}" for g in GROUPS}
    for group, login in logins.items():
        conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE {group}')
    try:
        as_role = {g: make_conninfo(dsn, user=login) for g, login in logins.items()}
        with psycopg.connect(as_role["retryq_producer"], autocommit=True) as p:
            q = RetryQueue(p)
            q.add("ok", {"n": 1})
            added = q.add_many([{"event_type": "ok", "data": {"n": i}} for i in range(20)])
            assert len(added) == 20
        done: list[int] = []
        worker = RetryWorker(
            as_role["retryq_worker"], {"ok": lambda item: done.append(item.id)},
            poll_interval=0.2, lock_timeout=5,
        )
        counts = worker.run(exit_when_drained=True, install_signal_handlers=False)
        assert counts.processed == 21 == len(done)
        for role in ("retryq_admin", "retryq_worker"):  # the worker's --metrics-port too
            with psycopg.connect(as_role[role]) as a:
                m = ops.collect_queue_metrics(a)
            assert (m.sizes["pending"], m.sizes["completed"]) == (0, 21), role
    finally:
        for login in logins.values():
            conn.execute(f'DROP ROLE IF EXISTS "{login}"')

def test_a_producer_adds_keyed_batches_on_every_path(dsn: str, conn: Conn) -> None:
    """add_many with dedupe keys as retryq_producer: on an autocommit
    Connection, inside the caller's transaction, on a pool, async, and the
    CLI's `enqueue --stdin`. The keyed path once passed a clock of its own
    read as p_now, which only the owner may move (42501 for every producer)."""
    import asyncio
    import subprocess
    import sys

    from psycopg_pool import ConnectionPool

    from retryq_py import AsyncRetryQueue, RetryQueue

    login = f"t_keyed_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{login}" LOGIN IN ROLE retryq_producer')
    tag = uuid.uuid4().hex[:8]

    def batch(path: str) -> list[dict[str, Any]]:
        return [
            {"event_type": "ok", "data": {"n": 1}, "dedupe_key": f"{tag}-{path}"},
            {"event_type": "ok", "data": {"n": 2}, "dedupe_key": f"{tag}-{path}"},
        ]

    try:
        dsn_p = make_conninfo(dsn, user=login)
        results = {}
        with psycopg.connect(dsn_p, autocommit=True) as p:
            results["autocommit"] = RetryQueue(p).add_many(batch("autocommit"))
        with psycopg.connect(dsn_p) as p, p.transaction():
            results["transaction"] = RetryQueue(p).add_many(batch("transaction"))
        with ConnectionPool(dsn_p, min_size=1, max_size=1) as pool:
            results["pool"] = RetryQueue(pool).add_many(batch("pool"))

        async def add_async() -> Any:
            async with await psycopg.AsyncConnection.connect(dsn_p, autocommit=True) as a:
                return await AsyncRetryQueue(a).add_many(batch("async"))

        results["async"] = asyncio.run(add_async())
        for path, added in results.items():
            # the second item of each batch is the first one, deduplicated
            assert [e.deduplicated for e in added] == [False, True], path
            assert added[0].id == added[1].id, path
        line = f'{{"event_type": "ok", "data": 3, "dedupe_key": "{tag}-cli"}}\n'
        cli = subprocess.run(
            [sys.executable, "-m", "retryq_py.cli", "enqueue", "--stdin"],
            input=line, capture_output=True, text=True, timeout=60,
            env={**os.environ, "RETRYQ_DATABASE_URL": dsn_p},
        )
        assert cli.returncode == 0, cli.stderr
        keys = conn.execute(
            "SELECT count(*) FROM daz_retry_queue WHERE dedupe_key LIKE %s", (f"{tag}-%",)
        ).fetchone()
        assert keys == (5,)
    finally:
        conn.execute(f'DROP ROLE IF EXISTS "{login}"')


README = Path(__file__).resolve().parents[2] / "README.md"


def _least_privilege_rows() -> dict[str, str]:
    """The README's Least privilege table: role -> its "may" cell."""
    text = README.read_text()
    section = text.split("### Least privilege", 1)[1].split("\n### ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].strip("`") in GROUPS:
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_readme_says_exactly_what_each_role_may_do(conn: Conn) -> None:
    """Every function a role may execute and every relation it may read, and
    nothing more, is named in its row of the README's Least privilege table;
    the producer's column list is exactly its INSERT column grant."""
    functions = [
        r[0]
        for r in conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
            " AND proname NOT LIKE '\\_retryq%%'"
        ).fetchall()
    ]
    relations = [
        r[0]
        for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'p', 'v') AND relname LIKE 'daz%%'"
        ).fetchall()
    ]
    rows = _least_privilege_rows()
    assert set(rows) == set(GROUPS)
    for role, cell in rows.items():
        named = set(re.findall(r"[a-z_]+", cell))
        granted_fns = {
            f
            for f in functions
            if conn.execute(
                "SELECT bool_or(has_function_privilege(%s, p.oid, 'EXECUTE'))"
                " FROM pg_proc AS p WHERE p.proname = %s"
                " AND p.pronamespace = 'public'::regnamespace",
                (role, f),
            ).fetchone()[0]  # type: ignore[index]
        }
        readable = {
            r
            for r in relations
            if conn.execute(
                "SELECT has_table_privilege(%s, %s::regclass, 'SELECT')", (role, r)
            ).fetchone()[0]  # type: ignore[index]
        }
        assert named & set(functions) == granted_fns, role
        assert named & set(relations) == readable, role
    text = README.read_text()
    listed = text.split("A producer's `INSERT` (and `COPY`) may set only", 1)[1]
    listed = listed.split("(column grants", 1)[0]
    columns = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.column_privileges"
            " WHERE grantee = 'retryq_producer' AND table_name = 'daz_retry_queue'"
            " AND privilege_type = 'INSERT'"
        ).fetchall()
    }
    assert set(re.findall(r"`([a-z_]+)`", listed)) == columns


def test_the_readme_lists_every_parameter_of_every_function(conn: Conn) -> None:
    """Each function table row (`name(param, ...)`) names the function's
    parameters in order, without their p_ prefix ("..." stands for a run of
    them), so that no parameter, p_now included, is left undocumented."""
    params = {
        name: [a.removeprefix("p_") for a in args]
        for name, args in conn.execute(
            "SELECT proname, coalesce(proargnames[1:pronargs], '{}') FROM pg_proc"
            " WHERE pronamespace = 'public'::regnamespace AND proname NOT LIKE '\\_retryq%%'"
        ).fetchall()
    }
    seen: set[str] = set()
    for line in README.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split(" | ", 1)[0]
        for name, args in re.findall(r"`(\w+)\(([^`]*?)\)", first_cell):
            if name not in params:
                continue
            seen.add(name)
            given = [a.strip().split()[0] for a in args.split(",") if a.strip()]
            pattern = "".join(r"(?:\w+ )+" if g == "..." else re.escape(g) + " " for g in given)
            assert re.fullmatch(pattern, "".join(p + " " for p in params[name])), (
                f"{name}: the README says ({args}), the function takes {params[name]}"
            )
    assert seen == set(params), set(params) - seen
