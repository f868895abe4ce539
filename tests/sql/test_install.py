"""Installing retryq: the SQL source in sql/ equals the migrations, rollback
leaves nothing, concurrent applies, a second schema, and functions immune to
the caller's search_path."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from retryq_py import migrate

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import sqlgen  # noqa: E402

SOURCE = sqlgen.install_script(sqlgen.read_sources())
YOYO = Path(sys.executable).parent / "yoyo"

# yoyo's bookkeeping lives next to what it installs; it is not ours to compare.
NOT_YOYO = "{alias}.relname !~ '^_?yoyo'"


def catalog(conn: psycopg.Connection[Any], schema: str = "public") -> dict[str, Any]:
    """A normalised snapshot of every object retryq can own in `schema`."""
    conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))

    def rows(query: str) -> list[list[Any]]:
        got = conn.execute(query, {"schema": schema}).fetchall()  # type: ignore[call-overload]
        return sorted([list(r) for r in got], key=json.dumps)

    ns = "(SELECT oid FROM pg_namespace WHERE nspname = %(schema)s)"
    # privileges, as sorted text: grant order does not matter
    acl = "(SELECT array_agg(x::text ORDER BY x::text) FROM unnest({col}) AS x)"
    return {
        "schema": rows(
            f"SELECT nspname, {acl.format(col='nspacl')} FROM pg_namespace"
            " WHERE nspname = %(schema)s"
        ),
        "relations": rows(
            f"""
            SELECT c.relname, c.relkind, c.relpersistence,
                -- in any order: ALTER TABLE ... SET appends
                (SELECT array_agg(o ORDER BY o) FROM unnest(c.reloptions) AS o),
                {acl.format(col="c.relacl")},
                pg_get_partkeydef(c.oid), pg_get_expr(c.relpartbound, c.oid),
                (SELECT p.relname FROM pg_inherits AS i JOIN pg_class AS p
                    ON p.oid = i.inhparent WHERE i.inhrelid = c.oid),
                obj_description(c.oid, 'pg_class')
            FROM pg_class AS c
            WHERE c.relnamespace = {ns} AND {NOT_YOYO.format(alias="c")}
            """
        ),
        "columns": rows(
            f"""
            -- a column's place among the live ones: a column dropped and added
            -- again (a rollback, then the upgrade again) takes a new attnum
            SELECT c.relname, row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                a.attname, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity,
                a.attgenerated, a.attcollation::regcollation::text,
                {acl.format(col="a.attacl")}
            FROM pg_attribute AS a
            JOIN pg_class AS c ON c.oid = a.attrelid
            LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE c.relnamespace = {ns} AND {NOT_YOYO.format(alias="c")}
                AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
            """
        ),
        "constraints": rows(
            f"""
            SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid),
                k.convalidated, k.connoinherit
            FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid
            WHERE c.relnamespace = {ns} AND {NOT_YOYO.format(alias="c")}
            """
        ),
        "indexes": rows(
            f"""
            SELECT c.relname, pg_get_indexdef(c.oid)
            FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
            WHERE c.relnamespace = {ns} AND {NOT_YOYO.format(alias="c")}
            """
        ),
        "sequences": rows(
            f"""
            SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                s.seqmax, s.seqmin, s.seqcache, s.seqcycle,
                (SELECT t.relname || '.' || a.attname FROM pg_depend AS d
                    JOIN pg_class AS t ON t.oid = d.refobjid
                    JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
                    WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')
                        AND d.classid = 'pg_class'::regclass)
            FROM pg_sequence AS s JOIN pg_class AS c ON c.oid = s.seqrelid
            WHERE c.relnamespace = {ns} AND {NOT_YOYO.format(alias="c")}
            """
        ),
        "functions": rows(
            f"""
            SELECT p.proname, pg_get_function_identity_arguments(p.oid),
                pg_get_functiondef(p.oid), p.proconfig, p.provolatile, p.prosecdef,
                p.proparallel, obj_description(p.oid, 'pg_proc'),
                {acl.format(col="p.proacl")}
            FROM pg_proc AS p
            WHERE p.pronamespace = {ns}
            """
        ),
        "views": rows(
            f"""
            SELECT c.relname, pg_get_viewdef(c.oid)
            FROM pg_class AS c
            WHERE c.relnamespace = {ns} AND c.relkind IN ('v', 'm')
            """
        ),
        "triggers": rows(
            f"""
            SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
            FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
            WHERE c.relnamespace = {ns} AND NOT t.tgisinternal
            """
        ),
        "types": rows(
            f"""
            SELECT t.typname, t.typtype FROM pg_type AS t
            WHERE t.typnamespace = {ns} AND t.typrelid = 0 AND t.typelem = 0
            """
        ),
    }


def _lines(snapshot: dict[str, Any]) -> list[str]:
    # one line per line of every value, so that a diff points at the change
    out = []
    for kind, rows in snapshot.items():
        for r in rows:
            for i, value in enumerate(r[1:], 1):
                for line in str(value).splitlines() or [""]:
                    out.append(f"{kind} {r[0]} [{i}] {line}")
    return out


def assert_same(expected: dict[str, Any], got: dict[str, Any], what: str) -> None:
    if got != expected:
        diff = difflib.unified_diff(
            _lines(expected), _lines(got), "migrations", what, n=1, lineterm=""
        )
        pytest.fail("catalogs differ:\n" + "\n".join(diff), pytrace=False)


def _connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture(scope="module")
def migrated_catalog(template_db: str, pg_server: Any) -> dict[str, Any]:
    with _connect(pg_server.dsn(template_db)) as conn:
        return catalog(conn)


def test_the_source_gives_exactly_what_the_migrations_give(
    new_database: Any, migrated_catalog: dict[str, Any]
) -> None:
    dsn = new_database()
    with _connect(dsn) as conn:
        conn.execute(SOURCE)  # type: ignore[call-overload]
        got = catalog(conn)
    assert got["functions"], "sql/ created no function"
    assert_same(migrated_catalog, got, "sql/")


def test_snapshot_sees_a_changed_function(
    new_database: Any, migrated_catalog: dict[str, Any]
) -> None:
    # The comparison above is only worth something if a drift shows up in it.
    dsn = new_database()
    with _connect(dsn) as conn:
        conn.execute(SOURCE)  # type: ignore[call-overload]
        conn.execute("ALTER FUNCTION retry_queue_channel() STABLE COST 7")
        conn.execute("ALTER TABLE _retryq_active SET (fillfactor = 71)")
        conn.execute("GRANT SELECT ON _retryq_finished TO PUBLIC")
        conn.execute("ALTER TABLE daz_retry_queue ALTER COLUMN tags SET DEFAULT '{x}'")
        got = catalog(conn)

    def by_name(snapshot: dict[str, Any], kind: str, name: str) -> list[Any]:
        return [r for r in snapshot[kind] if r[0] == name]

    for kind, name in [
        ("functions", "retry_queue_channel"),
        ("relations", "_retryq_active"),
        ("relations", "_retryq_finished"),
        ("columns", "daz_retry_queue"),
    ]:
        assert by_name(got, kind, name) != by_name(migrated_catalog, kind, name), (kind, name)
    assert by_name(got, "functions", "acquire_retry_items") == by_name(
        migrated_catalog, "functions", "acquire_retry_items"
    )


def _leftovers(conn: psycopg.Connection[Any]) -> list[Any]:
    return conn.execute(
        f"""
        SELECT 'class', c.relname FROM pg_class AS c
        WHERE c.relnamespace = 'public'::regnamespace AND {NOT_YOYO.format(alias="c")}
        UNION ALL
        SELECT 'function', p.proname FROM pg_proc AS p
        WHERE p.pronamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'type', t.typname FROM pg_type AS t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typname !~ '^_?_?yoyo'
        UNION ALL
        SELECT 'operator', o.oprname FROM pg_operator AS o
        WHERE o.oprnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'collation', l.collname FROM pg_collation AS l
        WHERE l.collnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'extension', e.extname FROM pg_extension AS e
        WHERE e.extnamespace = 'public'::regnamespace
        UNION ALL
        SELECT 'event trigger', v.evtname FROM pg_event_trigger AS v
        UNION ALL
        SELECT 'schema privilege', x::text
        FROM pg_namespace AS n, unnest(n.nspacl) AS x
        WHERE n.nspname = 'public' AND x::text LIKE 'retryq%'
        """
    ).fetchall()


def test_rolling_back_every_migration_leaves_only_yoyos_tables(
    new_database: Any, migrated_catalog: dict[str, Any]
) -> None:
    dsn = new_database()
    applied = migrate.apply(dsn)
    assert applied == [s.id for s in migrate.status(dsn)]
    with _connect(dsn) as conn:
        before = _leftovers(conn)
        conn.execute("SELECT * FROM enqueue_retry_item('x', '{}')")  # data does not block it
    assert before
    rolled = migrate.rollback(dsn)
    assert sorted(rolled) == sorted(applied)
    with _connect(dsn) as conn:
        assert _leftovers(conn) == []
        yoyo = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind = 'r' ORDER BY 1"
        ).fetchall()
        assert all("yoyo" in name for (name,) in yoyo)
    assert not any(s.applied for s in migrate.status(dsn))
    # and it installs again, identically
    migrate.apply(dsn)
    with _connect(dsn) as conn:
        again = catalog(conn)
    assert_same(migrated_catalog, again, "this install")


def _changed_copy(tmp: Path) -> tuple[Path, Path, str]:
    """A copy of sql/ and migrations/ where a function body, a view and a
    table changed, and the migration scripts/sqlgen writes for them."""
    shutil.copytree(ROOT / "sql", tmp / "sql")
    shutil.copytree(ROOT / "migrations", tmp / "migrations")
    fn = tmp / "sql" / "functions" / "extend_retry_lock.sql"
    fn.write_text(fn.read_text().replace("RETURN FOUND;", "RETURN FOUND; -- changed"))
    # a new trailing parameter: CREATE OR REPLACE alone would add an overload
    fn = tmp / "sql" / "functions" / "release_retry_items.sql"
    text = fn.read_text()
    last_param = "    p_leased_at timestamptz[] DEFAULT NULL\n)"
    assert last_param in text
    fn.write_text(
        text.replace(
            last_param,
            "    p_leased_at timestamptz[] DEFAULT NULL,\n    p_note text DEFAULT NULL\n)",
        )
    )
    # a column in the middle: CREATE OR REPLACE VIEW refuses that
    view = tmp / "sql" / "views" / "daz_retry_queue_stats.sql"
    text = view.read_text().replace("count(*) AS", "count(*) + 0 AS")
    view.write_text(text.replace("    q.event_type,\n", "    q.event_type,\n    1 AS one,\n", 1))
    # a column last in a table's file (not the archive's: the columns the queue
    # gained later follow its archived_at, see tables/_retryq_dedupe_key.sql)
    table = tmp / "sql" / "tables" / "_retryq_limits.sql"
    text = table.read_text()
    last = "    max_error_history integer NOT NULL DEFAULT 100,\n"
    assert last in text
    table.write_text(text.replace(last, last + "    note text,\n"))
    assert sqlgen.check(tmp / "sql", tmp / "migrations")
    with pytest.raises(sqlgen.SqlGenError, match="table cannot be replaced"):
        sqlgen.new("changed", sql_root=tmp / "sql", mig_root=tmp / "migrations")
    up, _ = sqlgen.new(
        "changed",
        "ALTER TABLE _retryq_limits ADD COLUMN note text;",
        "ALTER TABLE _retryq_limits DROP COLUMN note;",
        sql_root=tmp / "sql",
        mig_root=tmp / "migrations",
    )
    assert sqlgen.check(tmp / "sql", tmp / "migrations") == []
    return tmp / "sql", tmp / "migrations", up.stem


def test_a_generated_upgrade_and_its_rollback_give_the_sources_catalogs(
    new_database: Any, migrated_catalog: dict[str, Any], tmp_path: Path
) -> None:
    """Over a queue holding items in every state, the migration that
    scripts/sqlgen writes for a changed function, view and table gives what a
    fresh install of the changed source gives; rolling it back gives today's
    install again; no item changes either way, and the functions keep their
    SECURITY DEFINER and pinned search_path throughout."""
    sql_dir, mig_dir, changed = _changed_copy(tmp_path)
    with _connect(new_database()) as conn:
        conn.execute(sqlgen.install_script(sqlgen.read_sources(sql_dir)))  # type: ignore[call-overload]
        changed_catalog = catalog(conn)
    assert changed_catalog != migrated_catalog

    dsn = new_database()
    every = [m.name for m in sqlgen.read_migrations()]
    assert migrate.apply(dsn, directory=ROOT / "migrations") == every
    with _connect(dsn) as conn:
        conn.execute(
            "SELECT * FROM enqueue_retry_items((SELECT jsonb_agg(jsonb_build_object("
            "'event_type', 'e', 'event_data', g)) FROM generate_series(1, 8) AS g))"
        )
        ids = [r[0] for r in conn.execute("SELECT id FROM acquire_retry_items('w', 6)")]
        conn.execute("SELECT complete_retry_items(%s, 'w')", (ids[:2],))
        conn.execute("SELECT fail_retry_item(%s, 'w', 'gone', 'x', FALSE)", (ids[2],))
        conn.execute("SELECT fail_retry_item(%s, 'w', 'later', 'x', TRUE)", (ids[3],))
        rows = "SELECT q::text FROM daz_retry_queue AS q ORDER BY id"
        before = conn.execute(rows).fetchall()
        statuses = conn.execute(
            "SELECT status, count(*) FROM daz_retry_queue GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert statuses == [("completed", 2), ("dead_letter", 1), ("pending", 3), ("processing", 2)]

    def state() -> tuple[dict[str, Any], list[Any]]:
        with _connect(dsn) as conn:
            return catalog(conn), conn.execute(rows).fetchall()

    assert migrate.apply(dsn, directory=mig_dir) == [changed]
    got, items = state()
    assert_same(changed_catalog, got, "the upgrade")
    assert items == before
    assert migrate.rollback(dsn, count=1, directory=mig_dir) == [changed]
    got, items = state()
    assert_same(migrated_catalog, got, "the rollback")
    assert items == before
    assert migrate.apply(dsn, directory=mig_dir) == [changed]
    assert_same(changed_catalog, state()[0], "the upgrade, again")


def _yoyo_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(YOYO), *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _python_apply(dsn: str) -> subprocess.Popen[str]:
    code = "import sys; from retryq_py import migrate; print(migrate.apply(sys.argv[1]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, dsn],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def test_yoyo_cli_from_the_repository_root(
    new_database: Any, migrated_catalog: dict[str, Any]
) -> None:
    dsn = new_database()
    url = migrate.yoyo_url(dsn)
    assert url.startswith("postgresql+psycopg://")
    had_ini = (ROOT / "yoyo.ini").exists()
    code, out = _finish(_yoyo_cli("apply", "--batch", "--database", url, "migrations"))
    assert code == 0, out
    assert (ROOT / "yoyo.ini").exists() == had_ini  # --batch writes no config
    assert all(s.applied for s in migrate.status(dsn))
    with _connect(dsn) as conn:
        got = catalog(conn)
    assert_same(migrated_catalog, got, "this install")
    code, out = _finish(_yoyo_cli("rollback", "--batch", "--all", "--database", url, "migrations"))
    assert code == 0, out
    with _connect(dsn) as conn:
        assert _leftovers(conn) == []


@pytest.mark.parametrize("runner", ["yoyo", "python"])
def test_two_concurrent_applies_end_in_one_install(
    new_database: Any, migrated_catalog: dict[str, Any], runner: str
) -> None:
    dsn = new_database()
    if runner == "yoyo":
        args = ("apply", "--batch", "--database", migrate.yoyo_url(dsn), "migrations")
        procs = [_yoyo_cli(*args), _yoyo_cli(*args)]
    else:
        procs = [_python_apply(dsn), _python_apply(dsn)]
    for code, out in [_finish(p) for p in procs]:
        assert code == 0, out
    with _connect(dsn) as conn:
        got = catalog(conn)
        applied = conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()
    assert_same(migrated_catalog, got, "this install")
    assert applied == (len(migrate.status(dsn)),)


# --- a second schema ---------------------------------------------------------------


def test_second_schema_install_is_independent(dsn: str) -> None:
    with _connect(dsn) as conn:
        conn.execute("CREATE SCHEMA other")
    applied = migrate.apply(dsn, schema="other")
    assert applied  # yoyo keeps separate books per schema
    with _connect(dsn) as conn:
        public = catalog(conn, "public")
        other = catalog(conn, "other")
        for kind, key in [
            ("relations", 2),
            ("functions", 2),
            ("views", 1),
            ("triggers", 2),
            ("indexes", 1),
            ("constraints", 2),
        ]:
            assert sorted(r[:key] for r in other[kind]) == sorted(r[:key] for r in public[kind])
        for _name, _args, _def, config, *_ in other["functions"]:
            assert "search_path=other, pg_temp" in config

        conn.execute("SET search_path = public")
        assert conn.execute("SELECT retry_queue_channel()").fetchone() == (
            "public.daz_retry_queue",
        )
        assert conn.execute("SELECT other.retry_queue_channel()").fetchone() == (
            "other.daz_retry_queue",
        )
        conn.execute("SELECT * FROM enqueue_retry_item('pub', '{}')")
        conn.execute("SELECT * FROM other.enqueue_retry_item('oth', '{}')")
        conn.execute("SELECT * FROM other.enqueue_retry_item('oth', '{}')")
        assert conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM other.daz_retry_queue").fetchone() == (2,)
        got = conn.execute("SELECT id, event_type FROM other.acquire_retry_items('w')").fetchall()
        assert got == [(1, "oth"), (2, "oth")]  # its own sequence
        assert conn.execute("SELECT other.complete_retry_item(1, 'w')").fetchone() == (True,)
        assert conn.execute("SELECT event_type FROM acquire_retry_items('w')").fetchall() == [
            ("pub",)
        ]
        stats = conn.execute(
            "SELECT status, item_count FROM other.daz_retry_queue_stats ORDER BY 1"
        ).fetchall()
        assert stats == [("completed", 1), ("processing", 1)]

    migrate.rollback(dsn, schema="other")
    with _connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('other.daz_retry_queue')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM public.daz_retry_queue").fetchone() == (1,)
        assert catalog(conn, "public") == public


def test_listeners_of_two_schemas_hear_only_their_own(dsn: str) -> None:
    with _connect(dsn) as conn:
        conn.execute("CREATE SCHEMA other")
    migrate.apply(dsn, schema="other")
    with _connect(dsn) as pub, _connect(dsn) as oth, _connect(dsn) as writer:
        pub.execute('LISTEN "public.daz_retry_queue"')
        oth.execute('LISTEN "other.daz_retry_queue"')
        writer.execute("SELECT * FROM other.enqueue_retry_item('oth', '{}')")
        writer.execute("NOTIFY \"public.daz_retry_queue\", 'marker'")
        assert [n.payload for n in oth.notifies(timeout=5, stop_after=1)] == ["insert"]
        assert [n.payload for n in pub.notifies(timeout=5, stop_after=1)] == ["marker"]


# --- the caller's search_path ----------------------------------------------------------

DECOYS = """
CREATE SCHEMA decoy;
CREATE TABLE decoy.daz_retry_queue (LIKE public._retryq_active INCLUDING DEFAULTS);
CREATE TABLE decoy._retryq_active (LIKE public._retryq_active INCLUDING DEFAULTS);
CREATE TABLE decoy._retryq_finished (LIKE public._retryq_active INCLUDING DEFAULTS);
CREATE TABLE decoy.daz_retry_queue_archive (LIKE public.daz_retry_queue_archive);
INSERT INTO decoy.daz_retry_queue (id, event_type, event_data) VALUES (1, 'decoy', '{}');
INSERT INTO decoy._retryq_active (id, event_type, event_data) VALUES (1, 'decoy', '{}');
INSERT INTO decoy._retryq_finished (id, event_type, event_data, status, completed_at)
    VALUES (1, 'decoy', '{}', 'completed', '2000-01-01');
CREATE FUNCTION decoy._retryq_check(boolean, text, text) RETURNS void
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'decoy _retryq_check called'; END $$;
CREATE FUNCTION decoy._retryq_bury(bigint[], jsonb, timestamptz) RETURNS integer
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'decoy _retryq_bury called'; END $$;
CREATE FUNCTION decoy._retryq_backoff(integer, float8, float8, float8, float8)
    RETURNS interval
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'decoy _retryq_backoff called'; END $$;
CREATE FUNCTION decoy.complete_retry_items(bigint[], text, timestamptz) RETURNS integer
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'decoy complete_retry_items called'; END $$;
"""


def _decoy_rows(conn: psycopg.Connection[Any]) -> list[Any]:
    return conn.execute(
        "SELECT 'q', q::text FROM decoy.daz_retry_queue AS q UNION ALL "
        "SELECT 'a', a::text FROM decoy._retryq_active AS a UNION ALL "
        "SELECT 'f', f::text FROM decoy._retryq_finished AS f UNION ALL "
        "SELECT 'x', x::text FROM decoy.daz_retry_queue_archive AS x ORDER BY 1, 2"
    ).fetchall()


def test_functions_ignore_decoys_on_the_callers_search_path(dsn: str) -> None:
    with _connect(dsn) as conn, _connect(dsn) as listening:
        listening.execute('LISTEN "public.daz_retry_queue"')
        conn.execute(DECOYS)  # type: ignore[arg-type]
        decoys = _decoy_rows(conn)
        # a temp table would come first of all, were pg_temp not pinned last
        conn.execute("CREATE TEMP TABLE _retryq_active (LIKE public._retryq_active)")
        conn.execute("SET search_path = decoy, public")

        def one(query: str) -> Any:
            got = conn.execute(query).fetchone()  # type: ignore[call-overload]
            assert got is not None
            return got[0]

        t0 = "'2030-01-01 00:00+00'::timestamptz"
        a = one(f"SELECT id FROM enqueue_retry_item('real', '{{}}', p_now => {t0})")
        b = one(
            "SELECT id FROM enqueue_retry_items("
            f"""'[{{"event_type": "real", "event_data": 2}}]', {t0})"""
        )
        c = one(
            f"SELECT id FROM enqueue_retry_item('real', '{{}}', p_max_retries => 0, p_now => {t0})"
        )
        got = conn.execute(f"SELECT id FROM acquire_retry_items('w', 10, 60, {t0})").fetchall()
        assert sorted(r[0] for r in got) == sorted([a, b, c])
        assert one(f"SELECT public.complete_retry_item({a}, 'w', {t0})") is True
        assert one(f"SELECT fail_retry_item({b}, 'w', 'boom', 'E', true, {t0})") is True
        assert one(f"SELECT extend_retry_lock({c}, 'w', 60, {t0})") is True
        assert one(f"SELECT release_retry_items(ARRAY[{c}]::bigint[], 'w')") == 1
        got = conn.execute(
            f"SELECT id FROM acquire_retry_items('w2', 10, 1, {t0} + interval '1 hour')"
        ).fetchall()
        assert sorted(r[0] for r in got) == sorted([b, c])
        # the leases expire; c is spent and buried by the next acquire
        conn.execute(f"SELECT * FROM acquire_retry_items('w3', 10, 60, {t0} + interval '2 hours')")
        assert one(f"SELECT requeue_dead_letter_items(ARRAY[{c}]::bigint[])") == 1
        assert one(f"SELECT fail_retry_item({b}, 'w3', 'x', NULL, false, {t0})") is True
        cleaned = conn.execute(
            f"SELECT * FROM cleanup_retry_queue(1, p_now => {t0} + interval '30 days')"
        ).fetchall()
        assert cleaned == [(2, 1)]
        assert one("SELECT retry_queue_channel()") == "public.daz_retry_queue"

        conn.execute("RESET search_path")
        real = conn.execute(
            "SELECT id, status, event_type FROM public.daz_retry_queue ORDER BY id"
        ).fetchall()
        assert real == [(c, "pending", "real")]
        assert one("SELECT count(*) FROM public.daz_retry_queue_archive") == 1
        assert one("SELECT count(*) FROM pg_temp._retryq_active") == 0
        assert _decoy_rows(conn) == decoys
        conn.execute("NOTIFY \"public.daz_retry_queue\", 'marker'")
        payloads = []
        for note in listening.notifies(timeout=5):
            payloads.append(note.payload)
            if note.payload == "marker":
                break
        # the decoy path changed nothing: every wake-up went to the real channel
        assert payloads == ["insert", "insert", "insert", "release", "requeue", "marker"]


def test_every_function_pins_its_search_path(conn: psycopg.Connection[Any]) -> None:
    functions = conn.execute(
        "SELECT p.proname, p.proconfig FROM pg_proc AS p"
        " WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()
    assert len(functions) >= 10
    unpinned = [
        name for name, config in functions if "search_path=public, pg_temp" not in (config or [])
    ]
    assert unpinned == []


# The public functions whose statements can never reach jit_above_cost: key
# lookups under generic plans (estimates that do not grow with the input), or
# no table at all. Every other public function, and the insert trigger, runs
# without JIT: an estimate that grows with the rows (a cleanup, a filter over
# the dead letters, 1,000 items given at once) passes the threshold, and
# compiling then costs more than the statement (0024: 340 ms of a 370 ms
# add_many).
JIT_FREE = {
    "complete_retry_item": "plan_cache_mode=force_generic_plan",
    "complete_retry_items": "plan_cache_mode=force_generic_plan",
    "retry_queue_channel": None,
}


def test_every_public_function_runs_without_jit(conn: psycopg.Connection[Any]) -> None:
    functions = dict(
        conn.execute(
            "SELECT p.proname, coalesce(p.proconfig, '{}') FROM pg_proc AS p"
            " WHERE p.pronamespace = 'public'::regnamespace"
            " AND (p.proname !~ '^_' OR p.proname = '_retryq_inserted')"
        ).fetchall()
    )
    assert len(functions) >= 20
    assert set(JIT_FREE) <= set(functions)
    with_jit = sorted(name for name, config in functions.items() if "jit=off" not in config)
    assert with_jit == sorted(JIT_FREE)
    for name, setting in JIT_FREE.items():
        if setting is not None:
            assert setting in functions[name], name


def _event_id_index(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    row = conn.execute(
        "SELECT c.oid::bigint, a.amname FROM pg_class AS c JOIN pg_am AS a ON a.oid = c.relam"
        " WHERE c.oid = '_retryq_finished_event_id_idx'::regclass"
    ).fetchone()
    assert row is not None
    return row[0], row[1]


def test_0027_keeps_a_hash_event_id_index_built_beforehand(dsn: str, tmp_path: Path) -> None:
    # README, upgrade note 0027: an operator builds the hash index without
    # blocking completions, and the migration then keeps it
    migrations = (ROOT / "migrations").glob("*.sql")
    since = len([m for m in migrations if not m.name.endswith(".rollback.sql")])
    since -= 26  # 0027 and every later one
    rolled = migrate.rollback(dsn, count=since)
    assert rolled[-1] == "0027_finished_event_id_hash"
    with _connect(dsn) as conn:
        assert _event_id_index(conn)[1] == "btree"
        conn.execute(
            "CREATE INDEX CONCURRENTLY _retryq_finished_event_id_hash"
            " ON _retryq_finished USING hash (event_id)"
        )
        conn.execute("DROP INDEX CONCURRENTLY _retryq_finished_event_id_idx")
        conn.execute(
            "ALTER INDEX _retryq_finished_event_id_hash RENAME TO _retryq_finished_event_id_idx"
        )
        built = _event_id_index(conn)
    # 0027 alone: 0039 later rebuilds the finished partition and its indexes
    for m in (ROOT / "migrations").glob("00*.sql"):
        if m.name[:4] <= "0027":
            shutil.copy(m, tmp_path / m.name)
    assert migrate.apply(dsn, directory=tmp_path) == ["0027_finished_event_id_hash"]
    with _connect(dsn) as conn:
        assert _event_id_index(conn) == built
        assert built[1] == "hash"
    migrate.apply(dsn)
    # and without one, the migration builds it
    migrate.rollback(dsn, count=since)
    with _connect(dsn) as conn:
        assert _event_id_index(conn)[1] == "btree"
    migrate.apply(dsn)
    with _connect(dsn) as conn:
        assert _event_id_index(conn)[1] == "hash"


def test_a_long_schema_name_still_gets_a_working_channel(dsn: str) -> None:
    # A NOTIFY channel has at most 63 bytes; "<schema>.daz_retry_queue" for a
    # schema name of 48 bytes or more used to make every INSERT fail.
    schema = "a_rather_long_schema_name_for_the_retry_queue_of_daz"
    assert len(schema) > 47
    with _connect(dsn) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    migrate.apply(dsn, schema=schema)
    with _connect(dsn) as conn, _connect(dsn) as listening:
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        channel = conn.execute("SELECT retry_queue_channel()").fetchone()
        assert channel is not None
        assert len(channel[0].encode()) <= 63
        public_channel = listening.execute("SELECT public.retry_queue_channel()").fetchone()
        assert public_channel is not None and public_channel[0] != channel[0]
        listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel[0])))
        conn.execute("SELECT * FROM enqueue_retry_item('x', '{}')")
        assert [n.payload for n in listening.notifies(timeout=5, stop_after=1)] == ["insert"]


def test_mixed_case_schema_installs_and_rolls_back(dsn: str) -> None:
    # yoyo splices the schema into SET search_path unquoted; migrate quotes it.
    with _connect(dsn) as conn:
        conn.execute('CREATE SCHEMA "Tenant A"')
    assert migrate.apply(dsn, schema="Tenant A")
    with _connect(dsn) as conn:
        got = conn.execute("SELECT * FROM \"Tenant A\".enqueue_retry_item('t', '{}')").fetchone()
        assert got is not None and got[0] == 1
        assert conn.execute("SELECT to_regclass('public.daz_retry_queue')").fetchone() != (None,)
    assert migrate.rollback(dsn, schema="Tenant A")
    with _connect(dsn) as conn:
        gone = conn.execute("""SELECT to_regclass('"Tenant A".daz_retry_queue')""").fetchone()
        assert gone == (None,)
