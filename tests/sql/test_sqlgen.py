"""scripts/sqlgen: sql/ is the one place SQL is written, migrations/ is what it
generates, and the check notices every way the two can disagree. Also: every
function carries its own guarantees in its CREATE. (The database side, that a
generated upgrade and its rollback give the catalogs the source describes, is
in test_install.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import sqlgen  # noqa: E402


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of sql/ with one generated migration, whatever migrations/ holds."""
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    (tmp_path / "migrations").mkdir()
    sqlgen.new("initial", sql_root=tmp_path / "sql", mig_root=tmp_path / "migrations")
    return tmp_path / "sql", tmp_path / "migrations"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_the_committed_migrations_are_what_the_source_generates() -> None:
    assert sqlgen.check() == []
    done = subprocess.run([ROOT / "scripts" / "sqlgen", "check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_body_edited_in_the_source_fails_the_check_until_a_migration_is_written(
    tree: tuple[Path, Path],
) -> None:
    sql_dir, mig_dir = tree
    fn = sql_dir / "functions" / "extend_retry_lock.sql"
    old_text = fn.read_text()
    edit(fn, "RETURN FOUND;", "RETURN FOUND AND TRUE;")
    problems = sqlgen.check(sql_dir, mig_dir)
    assert "sql/functions/extend_retry_lock.sql changed since the last migration" in problems
    assert any("scripts/sqlgen new" in p for p in problems)

    up, down = sqlgen.new("extend_tweak", sql_root=sql_dir, mig_root=mig_dir)
    assert up.name == "0002_extend_tweak.sql"
    assert sqlgen.check(sql_dir, mig_dir) == []
    up_text, down_text = up.read_text(), down.read_text()
    assert "-- depends: 0001_initial\n" in up_text
    # only the changed file ships again, whole, with its guarantees
    assert up_text.count("-- retryq:source ") == 1
    assert "RETURN FOUND AND TRUE;" in up_text and "SECURITY DEFINER" in up_text
    assert "SET search_path FROM CURRENT" in up_text
    # the rollback puts back the previous text, guarantees included
    assert sqlgen.split("x", old_text).install in down_text
    assert "RETURN FOUND AND TRUE" not in down_text
    with pytest.raises(sqlgen.SqlGenError, match="nothing changed"):
        sqlgen.new("again", sql_root=sql_dir, mig_root=mig_dir)


def test_a_migration_edited_by_hand_fails_the_check(tree: tuple[Path, Path]) -> None:
    sql_dir, mig_dir = tree
    initial = mig_dir / "0001_initial.sql"
    body = "p_leased_at)\n        );\n    RETURN FOUND;"
    assert initial.read_text().count(body) == 1
    # a body changed in the migration only
    edit(initial, body, "p_leased_at)\n        );\n    RETURN TRUE;")
    problems = sqlgen.check(sql_dir, mig_dir)
    assert "sql/functions/extend_retry_lock.sql changed since the last migration" in problems
    # the same change made in both: the generated file no longer matches its rendering
    edit(sql_dir / "functions" / "extend_retry_lock.sql", "RETURN FOUND;", "RETURN TRUE;")
    edit(initial, "-- retryq:source roles.sql", "-- a note\n-- retryq:source roles.sql")
    assert sqlgen.check(sql_dir, mig_dir) == [
        "migrations/0001_initial.sql was edited by hand (regenerate it)"
    ]


def test_a_rollback_or_a_superseded_section_edited_by_hand_fails_the_check(
    tree: tuple[Path, Path],
) -> None:
    sql_dir, mig_dir = tree
    fn = sql_dir / "functions" / "extend_retry_lock.sql"
    edit(fn, "RETURN FOUND;", "RETURN FOUND AND TRUE;")
    _, down = sqlgen.new("tweak", sql_root=sql_dir, mig_root=mig_dir)
    assert sqlgen.check(sql_dir, mig_dir) == []
    # the body a rollback puts back
    original = down.read_text()
    edit(down, "RETURN FOUND;", "RETURN NOT FOUND;")
    assert sqlgen.check(sql_dir, mig_dir) == [
        "migrations/0002_tweak.rollback.sql was edited by hand (regenerate it)"
    ]
    down.write_text(original)
    # a DROP that a rollback would run, commented out
    initial_down = mig_dir / "0001_initial.rollback.sql"
    edit(initial_down, "DROP VIEW daz_retry_queue_stats;", "-- DROP VIEW daz_retry_queue_stats;")
    assert sqlgen.check(sql_dir, mig_dir) == [
        "migrations/0001_initial.rollback.sql was edited by hand (regenerate it)"
    ]
    edit(initial_down, "-- DROP VIEW daz_retry_queue_stats;", "DROP VIEW daz_retry_queue_stats;")
    # a section that a later migration ships again
    initial = mig_dir / "0001_initial.sql"
    body = "p_leased_at)\n        );\n    RETURN FOUND;"
    edit(initial, body, "p_leased_at)\n        );\n    RETURN TRUE;")
    assert sqlgen.check(sql_dir, mig_dir) == [
        "migrations/0002_tweak.rollback.sql was edited by hand (regenerate it)"
    ]


def test_a_tables_undo_part_and_hand_alters_are_recorded_and_checked(
    tree: tuple[Path, Path],
) -> None:
    sql_dir, mig_dir = tree
    initial = mig_dir / "0001_initial.sql"
    # a table's own teardown travels in the migration, commented out
    assert "-- retryq:undo\n-- | DROP TABLE daz_retry_queue_archive;\n" in initial.read_text()
    edit(initial, "-- | DROP TABLE daz_retry_queue_archive;", "-- | DROP TABLE nothing;")
    assert "migrations/0001_initial.rollback.sql was edited by hand (regenerate it)" in (
        sqlgen.check(sql_dir, mig_dir)
    )
    edit(initial, "-- | DROP TABLE nothing;", "-- | DROP TABLE daz_retry_queue_archive;")
    table = sql_dir / "tables" / "daz_retry_queue_archive.sql"
    edit(table, "archived_at timestamptz NOT NULL DEFAULT now(),", "archived_at timestamptz,")
    with pytest.raises(sqlgen.SqlGenError, match="define functions and views in sql/"):
        sqlgen.new(
            "archive",
            "CREATE OR REPLACE FUNCTION sneaky() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;",
            "DROP FUNCTION sneaky;",
            sql_root=sql_dir,
            mig_root=mig_dir,
        )
    up, _ = sqlgen.new(
        "archive",
        "ALTER TABLE daz_retry_queue_archive ALTER COLUMN archived_at DROP NOT NULL;",
        "ALTER TABLE daz_retry_queue_archive ALTER COLUMN archived_at SET NOT NULL;",
        sql_root=sql_dir,
        mig_root=mig_dir,
    )
    assert sqlgen.check(sql_dir, mig_dir) == []
    # the new table text is recorded; the hand ALTER is the migration's own (the
    # catalog comparison in test_install.py is what proves it right)
    assert "-- | CREATE TABLE daz_retry_queue_archive" in up.read_text()


def test_new_and_removed_files_ship_and_roll_back(tree: tuple[Path, Path]) -> None:
    sql_dir, mig_dir = tree
    (sql_dir / "functions" / "retryq_hello.sql").write_text(
        "-- Says hello.\nCREATE OR REPLACE FUNCTION retryq_hello()\nRETURNS text\n"
        "LANGUAGE sql\nSET search_path FROM CURRENT\nAS $$ SELECT 'hello' $$;\n"
    )
    manifest = sql_dir / "manifest.txt"
    with pytest.raises(sqlgen.SqlGenError, match=r"not listed.*retryq_hello"):
        sqlgen.check(sql_dir, mig_dir)
    manifest.write_text(manifest.read_text() + "functions/retryq_hello.sql\n")
    up, down = sqlgen.new("hello", sql_root=sql_dir, mig_root=mig_dir)
    assert "CREATE OR REPLACE FUNCTION retryq_hello()" in up.read_text()
    assert "DROP FUNCTION retryq_hello;" in down.read_text()

    (sql_dir / "functions" / "retryq_hello.sql").unlink()
    manifest.write_text(manifest.read_text().replace("functions/retryq_hello.sql\n", ""))
    assert sqlgen.check(sql_dir, mig_dir) == [
        "sql/functions/retryq_hello.sql removed since the last migration",
        "run scripts/sqlgen new SLUG to write the migration for it",
    ]
    up, down = sqlgen.new("bye", sql_root=sql_dir, mig_root=mig_dir)
    assert "DROP FUNCTION retryq_hello;" in up.read_text()
    assert "CREATE OR REPLACE FUNCTION retryq_hello()" in down.read_text()
    assert sqlgen.check(sql_dir, mig_dir) == []


def test_a_changed_signature_drops_the_old_function_first(tree: tuple[Path, Path]) -> None:
    """CREATE OR REPLACE with a new parameter would leave two overloads (and
    every call with defaults ambiguous): the migration drops the old
    signature first, and its rollback drops the new one before restoring."""
    sql_dir, mig_dir = tree
    fn = sql_dir / "functions" / "release_retry_items.sql"
    edit(
        fn,
        "    p_leased_at timestamptz[] DEFAULT NULL\n)",
        "    p_leased_at timestamptz[] DEFAULT NULL,\n    p_note text DEFAULT 'a, (b)'\n)",
    )
    up, down = sqlgen.new("note", sql_root=sql_dir, mig_root=mig_dir)
    old_drop = (
        "DROP FUNCTION release_retry_items(p_item_ids bigint[], p_worker_id text,"
        " p_leased_at timestamptz[]);"
    )
    new_drop = (
        "DROP FUNCTION release_retry_items(p_item_ids bigint[], p_worker_id text,"
        " p_leased_at timestamptz[], p_note text);"
    )
    up_text, down_text = up.read_text(), down.read_text()
    assert up_text.index(old_drop) < up_text.index("CREATE OR REPLACE FUNCTION release_retry_items")
    assert down_text.index(new_drop) < down_text.index(
        "CREATE OR REPLACE FUNCTION release_retry_items"
    )
    assert sqlgen.check(sql_dir, mig_dir) == []
    # a body-only change drops nothing
    edit(fn, "RETURN v_count;", "RETURN v_count; -- same signature")
    up, down = sqlgen.new("body", sql_root=sql_dir, mig_root=mig_dir)
    assert "DROP FUNCTION" not in up.read_text() and "DROP FUNCTION" not in down.read_text()
    # a changed view is replaced whole: its columns may have changed
    edit(
        sql_dir / "views" / "daz_retry_queue_stats.sql",
        "q.event_type,\n",
        "q.event_type,\n    q.priority,\n",
    )
    up, down = sqlgen.new("view", sql_root=sql_dir, mig_root=mig_dir)
    assert "DROP VIEW daz_retry_queue_stats;" in up.read_text()
    assert "DROP VIEW daz_retry_queue_stats;" in down.read_text()
    assert sqlgen.check(sql_dir, mig_dir) == []
    # a hand edit of a generated drop is caught like any other
    up.write_text(up.read_text().replace("DROP VIEW daz_retry_queue_stats;", "SELECT 1;"))
    assert any("drops of changed signatures" in p for p in sqlgen.check(sql_dir, mig_dir))


def test_a_changed_table_needs_its_alter_statements(tree: tuple[Path, Path]) -> None:
    sql_dir, mig_dir = tree
    table = sql_dir / "tables" / "daz_retry_queue_archive.sql"
    edit(table, "archived_at timestamptz NOT NULL DEFAULT now(),", "archived_at timestamptz,")
    with pytest.raises(sqlgen.SqlGenError, match="table cannot be replaced"):
        sqlgen.new("archive", sql_root=sql_dir, mig_root=mig_dir)
    with pytest.raises(sqlgen.SqlGenError, match="go together"):
        sqlgen.new("archive", "ALTER TABLE x;", sql_root=sql_dir, mig_root=mig_dir)
    alter = "ALTER TABLE daz_retry_queue_archive ALTER COLUMN archived_at DROP NOT NULL;"
    up, down = sqlgen.new(
        "archive",
        alter,
        "ALTER TABLE daz_retry_queue_archive ALTER COLUMN archived_at SET NOT NULL;",
        sql_root=sql_dir,
        mig_root=mig_dir,
    )
    assert alter in up.read_text() and "SET NOT NULL" in down.read_text()
    # the new table text is recorded (commented out), so the check agrees now
    assert "-- | CREATE TABLE daz_retry_queue_archive" in up.read_text()
    assert sqlgen.check(sql_dir, mig_dir) == []


def test_hand_statements_run_once_when_two_tables_changed(tree: tuple[Path, Path]) -> None:
    """--upgrade and --rollback are one block each: with two table files
    changed they are recorded with the first, not run once per file."""
    sql_dir, mig_dir = tree
    edit(
        sql_dir / "tables" / "daz_retry_queue_archive.sql",
        "archived_at timestamptz",
        "archived_at  timestamptz",
    )
    edit(sql_dir / "tables" / "_retryq_limits.sql", "CREATE TABLE", "CREATE  TABLE")
    up, down = sqlgen.new(
        "two", "SELECT 'up once';", "SELECT 'down once';", sql_root=sql_dir, mig_root=mig_dir
    )
    assert up.read_text().count("SELECT 'up once';") == 1
    assert down.read_text().count("SELECT 'down once';") == 1
    assert sqlgen.check(sql_dir, mig_dir) == []


def test_each_function_is_created_in_exactly_one_hand_edited_file(
    conn: psycopg.Connection[Any],
) -> None:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
        )
    ]
    assert len(names) >= 20
    hand_edited = [
        p
        for p in ROOT.rglob("*")
        if p.is_file()
        and p.suffix in {".sql", ".py", ".md"}
        # tests plant decoys of the same names on purpose
        and not {".git", ".venv", "migrations", "tests"} & set(p.relative_to(ROOT).parts)
    ]
    texts = {p: p.read_text(errors="replace") for p in hand_edited}
    for name in names:
        create = re.compile(rf"CREATE (?:OR REPLACE )?FUNCTION (?:\w+\.)?{name}\(")
        where = [str(p.relative_to(ROOT)) for p, t in texts.items() if create.search(t)]
        assert len(where) == 1 and where[0].startswith("sql/"), (name, where)


# Trigger functions that run as the owner: a producer's INSERT fires them, and
# they read what a producer may not (the finished rows, the archive, the
# sequence, the limits) or call private helpers. No role can call them.
PRIVATE_DEFINERS = {"_retryq_inserted", "_retryq_new_row"}


def test_every_function_states_its_guarantees_in_its_create(
    conn: psycopg.Connection[Any],
) -> None:
    """SECURITY DEFINER (the public functions but the channel's name) and the
    pinned search_path are in each CREATE, never added afterwards, so that
    replacing a body (CREATE OR REPLACE resets what it does not state) can
    never drop them."""
    rows = conn.execute(
        "SELECT proname, prosecdef, proconfig FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace"
    ).fetchall()
    for name, secdef, config in rows:
        assert "search_path=public, pg_temp" in (config or []), name
        public = not name.startswith("_") and name != "retry_queue_channel"
        assert secdef == (public or name in PRIVATE_DEFINERS), name
    for path in sorted((ROOT / "sql").rglob("*.sql")):
        text = path.read_text()
        assert not re.search(r"ALTER FUNCTION|pg_proc", text), path
        for create in re.finditer(r"CREATE OR REPLACE FUNCTION (\w+)(.*?)\nAS \$\$", text, re.S):
            name, head = create.groups()
            assert "\nSET search_path FROM CURRENT" in head, (path, name)
            assert ("\nSECURITY DEFINER" in head) == (
                (not name.startswith("_") and name != "retry_queue_channel")
                or name in PRIVATE_DEFINERS
            ), (path, name)
            assert f"REVOKE EXECUTE ON FUNCTION {name} FROM public;" in text, (path, name)


def test_replacing_a_body_keeps_its_guarantees(conn: psycopg.Connection[Any]) -> None:
    """What a later migration does: the file's text run again over an install."""
    text = (ROOT / "sql" / "functions" / "acquire_retry_items.sql").read_text()
    with conn.transaction():
        conn.execute("SET LOCAL search_path = public, pg_temp")
        conn.execute(text.replace("AS $$\n", "AS $$\n-- replaced\n", 1))  # type: ignore[call-overload]
    row = conn.execute(
        "SELECT prosecdef, proconfig, prosrc LIKE '%%replaced%%',"
        " has_function_privilege('retryq_worker', oid, 'EXECUTE'),"
        " has_function_privilege('retryq_producer', oid, 'EXECUTE')"
        " FROM pg_proc WHERE proname = 'acquire_retry_items'"
    ).fetchone()
    assert row is not None
    assert row[0] is True and "search_path=public, pg_temp" in row[1]
    assert row[2:] == (True, True, False)
