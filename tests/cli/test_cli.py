"""The `retryq` CLI: every command through its library function in
retryq_py.admin, and once each as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from retryq_py import RetryQueue, migrate
from retryq_py import admin as cmd
from retryq_py.admin import DeadLetterFilter, ExitCode
from tests.helpers import count

UNREACHABLE = "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2"
# A test that runs `retryq` as a real process: what it adds over the in-process test of the
# same command (its library function, which sends the same SQL on every server) is the
# process's exit code and output, so .ci/run runs it in one of its two passes only.
AS_A_PROCESS = pytest.mark.server_agnostic
RETRYQ = Path(sys.executable).with_name("retryq")


def run_cli(*args: str, dsn: str | None = None, stdin: str | None = None) -> Any:
    """`retryq ARGS` in a subprocess (the installed entry point when present)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_")}
    if dsn is not None:
        env["RETRYQ_DATABASE_URL"] = dsn
    argv = [str(RETRYQ)] if RETRYQ.exists() else [sys.executable, "-m", "retryq_py.cli"]
    return subprocess.run(
        [*argv, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def one_line_error(result: Any) -> str:
    """The stderr of a failed run: exactly one line and no traceback."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def dead_letter(
    q: RetryQueue,
    event_type: str,
    *,
    plugin: str | None = None,
    code: str = "boom",
    now: datetime | None = None,
) -> int:
    """An item that failed permanently, dead-lettered at `now`."""
    item_id, _ = q.add(event_type, {"n": 1}, plugin=plugin, max_retries=0, now=now)
    leased = q.acquire("t-worker", 100, now=now)
    assert item_id in [i.id for i in leased]
    assert q.fail(item_id, "t-worker", f"{event_type} failed", code, retryable=False, now=now)
    for other in leased:
        if other.id != item_id:
            q.release([other.id], "t-worker")
    return item_id


# --- targets and errors ------------------------------------------------------


def test_target_needs_a_database() -> None:
    with pytest.raises(cmd.UsageProblem, match="RETRYQ_DATABASE_URL") as info:
        cmd.target(None)
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("schema", ["Bad", "1x", "a-b", "x" * 64, ""])
def test_target_rejects_bad_schema_names(schema: str) -> None:
    with pytest.raises(cmd.UsageProblem, match="--schema"):
        cmd.target("dbname=x", schema)


def test_target_rejects_a_malformed_dsn() -> None:
    with pytest.raises(cmd.UsageProblem, match="invalid --database URL"):
        cmd.target("hots=nowhere")


def test_target_adds_search_path_and_keeps_existing_options() -> None:
    t = cmd.target("dbname=x options='-c work_mem=64kB'", "alt")
    info = psycopg.conninfo.conninfo_to_dict(t.conninfo)
    assert info["options"] == "-c work_mem=64kB -c search_path=alt"
    assert info["connect_timeout"] == str(cmd.DEFAULT_CONNECT_TIMEOUT)


def test_unreachable_database() -> None:
    with pytest.raises(cmd.DatabaseUnreachable) as info:
        cmd.stats(cmd.target(UNREACHABLE))
    assert info.value.exit_code == ExitCode.UNREACHABLE
    assert "127.0.0.1:1" in str(info.value)


@AS_A_PROCESS
def test_unreachable_database_subprocess() -> None:
    result = run_cli("stats", "--database", UNREACHABLE)
    assert result.returncode == 3
    assert one_line_error(result).startswith("retryq: cannot connect to 127.0.0.1:1")


def test_database_without_retryq(new_database: Any) -> None:
    empty = new_database()
    with pytest.raises(cmd.NotInstalled, match="retryq migrate"):
        cmd.stats(cmd.target(empty))
    result = run_cli("dead-letter", "list", dsn=empty)
    assert result.returncode == 4
    assert "retryq migrate" in one_line_error(result)


def test_missing_schema_is_not_installed(dsn: str) -> None:
    with pytest.raises(cmd.NotInstalled, match="--schema nowhere"):
        cmd.stats(cmd.target(dsn, "nowhere"))


@AS_A_PROCESS
def test_no_database_subprocess() -> None:
    result = run_cli("stats")
    assert result.returncode == 2
    assert "RETRYQ_DATABASE_URL" in one_line_error(result)


@AS_A_PROCESS
def test_queue_validation_is_a_usage_error_subprocess(dsn: str, conn: Any) -> None:
    result = run_cli("enqueue", "--event-type", "x", "--data", "1", "--priority", "11", dsn=dsn)
    assert result.returncode == 2
    assert "priority" in one_line_error(result)
    assert count(conn) == 0


# --- migrate -----------------------------------------------------------------


def _migration_ids() -> list[str]:
    names = sorted(p.name for p in migrate.migrations_dir().glob("*.sql"))
    return [n.removesuffix(".sql") for n in names if not n.endswith(".rollback.sql")]


def test_migrate_apply_status_rollback(new_database: Any) -> None:
    ids = _migration_ids()
    assert ids[0] == "0001_initial"
    t = cmd.target(new_database())
    assert [(r.id, r.applied) for r in cmd.migrate_status(t)] == [(i, False) for i in ids]
    assert cmd.migrate_apply(t) == ids
    assert cmd.migrate_apply(t) == []
    assert [(r.id, r.applied) for r in cmd.migrate_status(t)] == [(i, True) for i in ids]
    assert cmd.stats(t).total == 0
    if len(ids) > 1:
        assert cmd.migrate_rollback(t, steps=1) == ids[-1:]
        assert [r.applied for r in cmd.migrate_status(t)] == [True] * (len(ids) - 1) + [False]
    assert cmd.migrate_rollback(t) == list(reversed(ids[: len(ids) - (len(ids) > 1)]))
    with pytest.raises(cmd.NotInstalled):
        cmd.stats(t)


def test_migrate_into_a_schema_leaves_public_alone(new_database: Any) -> None:
    db = new_database()
    alt = cmd.target(db, "alt")
    assert cmd.migrate_apply(alt) == _migration_ids()
    cmd.enqueue(alt, "x", {"n": 1})
    assert cmd.stats(alt).total == 1
    with pytest.raises(cmd.NotInstalled):
        cmd.stats(cmd.target(db))
    with pytest.raises(cmd.CommandError, match="1 item"):  # the item would go with it
        cmd.migrate_rollback(alt)
    assert cmd.migrate_rollback(alt, force=True) == list(reversed(_migration_ids()))
    with pytest.raises(cmd.NotInstalled):
        cmd.stats(alt)


def test_migrate_rollback_steps_must_be_positive(dsn: str) -> None:
    with pytest.raises(cmd.UsageProblem, match="--steps"):
        cmd.migrate_rollback(cmd.target(dsn), steps=0)


@AS_A_PROCESS
def test_migrate_subprocess(new_database: Any) -> None:
    db = new_database()
    status = run_cli("migrate", "--status", dsn=db)
    assert status.returncode == 0, status.stderr
    assert "0001_initial" in status.stdout and "no" in status.stdout
    ids = _migration_ids()
    applied = run_cli("migrate", "--database", db)
    assert applied.returncode == 0, applied.stderr
    assert f"applied {len(ids)} migration(s): {', '.join(ids)}" in applied.stdout
    again = run_cli("migrate", dsn=db)
    assert "already up to date" in again.stdout
    back = run_cli("migrate", "--rollback", "--steps", "1", "--yes", dsn=db)
    assert back.returncode == 0, back.stderr
    assert f"rolled back 1 migration(s): {ids[-1]}" in back.stdout


# --- enqueue -----------------------------------------------------------------


def test_enqueue_one_with_every_option(dsn: str, conn: Any) -> None:
    t = cmd.target(dsn)
    item_id, event_id = cmd.enqueue(
        t,
        "cytube.event.chatMsg",
        {"msg": "hi"},
        channel="lobby",
        plugin="chat",
        metadata={"why": "timeout"},
        max_retries=5,
        retry_delay=timedelta(milliseconds=500),
        backoff_multiplier=1.5,
        priority=8,
        correlation_id="c-1",
        tags=["a", "b"],
        delay=timedelta(minutes=1),
    )
    row = conn.execute(
        "SELECT event_id, event_type, event_data, channel_name, plugin_name, event_metadata,"
        " max_retries, retry_delay_seconds, backoff_multiplier, priority, correlation_id,"
        " tags, next_retry_at - created_at FROM daz_retry_queue WHERE id = %s",
        (item_id,),
    ).fetchone()
    assert row == (
        event_id,
        "cytube.event.chatMsg",
        {"msg": "hi"},
        "lobby",
        "chat",
        {"why": "timeout"},
        5,
        0.5,
        1.5,
        8,
        "c-1",
        ["a", "b"],
        timedelta(minutes=1),
    )


def test_parse_json_lines_names_the_bad_line() -> None:
    good = '{"event_type": "x", "data": 1}'
    cases = {
        "not JSON": [good, "{nope"],
        "must be a JSON object": [good, "[1]"],
        "unknown key 'colour'": [good, '{"event_type": "x", "data": 1, "colour": 2}'],
        "missing 'data'": [good, '{"event_type": "x"}'],
        "invalid delay": [good, '{"event_type": "x", "data": 1, "delay": "soon"}'],
    }
    for message, lines in cases.items():
        with pytest.raises(cmd.UsageProblem, match=f"line 2: {message}"):
            cmd.parse_json_lines(lines)
    with pytest.raises(cmd.UsageProblem, match="no items"):
        cmd.parse_json_lines(["", "  "])


def test_parse_json_lines_defaults_and_durations() -> None:
    items = cmd.parse_json_lines(
        ['{"data": 1}', "", '{"event_type": "y", "data": 2, "retry_delay": "250ms"}'],
        {"event_type": "x", "plugin": "p"},
    )
    assert items == [
        {"_line": 1, "event_type": "x", "plugin": "p", "data": 1},
        {"_line": 3, "event_type": "y", "plugin": "p", "data": 2, "retry_delay": 0.25},
    ]


def test_enqueue_many_is_all_or_nothing(dsn: str, conn: Any) -> None:
    t = cmd.target(dsn)
    lines = [
        '{"event_type": "a", "data": {"i": 1}}',
        '{"event_type": "b", "data": {"i": 2}, "priority": 9, "tags": ["t"]}',
        '{"event_type": "c", "data": [3], "max_retries": 1001}',
    ]
    with pytest.raises(cmd.UsageProblem, match=r"line 3: .*max_retries.*nothing was added"):
        cmd.enqueue_many(t, cmd.parse_json_lines(lines))
    assert count(conn) == 0
    # in chunks of one: still one transaction, so a bad last line adds nothing
    with pytest.raises(cmd.UsageProblem, match="line 3"):
        cmd.enqueue_many(t, cmd.parse_json_lines(lines), chunk=1)
    assert count(conn) == 0
    added = cmd.enqueue_many(t, cmd.parse_json_lines(lines[:2]), chunk=1)
    assert len(added) == 2
    rows = conn.execute(
        "SELECT id, event_type, priority, tags FROM daz_retry_queue ORDER BY id"
    ).fetchall()
    assert rows == [(added[0].id, "a", 5, []), (added[1].id, "b", 9, ["t"])]


@AS_A_PROCESS
def test_enqueue_names_the_line_and_field_holding_a_nul(dsn: str, conn: Any) -> None:
    t = cmd.target(dsn)
    lines = ['{"event_type": "a", "data": 1}', '{"event_type": "b", "data": {"k": ["\\u0000"]}}']
    with pytest.raises(
        cmd.UsageProblem, match=r"^line 2: invalid data: data\['k'\]\[0\] contains U\+0000"
    ):
        cmd.enqueue_many(t, cmd.parse_json_lines(lines))
    with pytest.raises(psycopg.errors.CharacterNotInRepertoire, match="invalid plugin"):
        cmd.enqueue(t, "a", {}, plugin="p\x00")
    assert count(conn) == 0


def test_enqueue_with_a_dedupe_key(dsn: str, conn: Any) -> None:
    """--dedupe-key (and the JSON lines' dedupe_key): a key a live item holds
    adds nothing and says which item holds it; a bad key exits 2 naming it."""
    args = ("enqueue", "--event-type", "x", "--data", "1", "--dedupe-key", "user:1")
    first = run_cli(*args, dsn=dsn)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("enqueued id=")
    again = run_cli(*args, dsn=dsn)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("deduplicated: id=") and "nothing was added" in again.stdout
    lines = (
        '{"event_type": "y", "data": 1, "dedupe_key": "user:1"}\n'
        '{"event_type": "y", "data": 2, "dedupe_key": "user:2"}\n'
        '{"event_type": "y", "data": 3, "dedupe_key": "user:2"}\n'
    )
    many = run_cli("enqueue", "--stdin", dsn=dsn, stdin=lines)
    assert many.returncode == 0, many.stderr
    assert "enqueued 1 item(s), 2 deduplicated" in many.stdout
    bad = run_cli("enqueue", "--event-type", "x", "--data", "1", "--dedupe-key", " ", dsn=dsn)
    assert bad.returncode == 2 and "dedupe_key" in one_line_error(bad)
    assert one_line_error(bad).count("retryq:") == 1
    # a line number before the queue's refusal: still one "retryq:" prefix
    blank = run_cli(
        "enqueue", "--stdin", dsn=dsn, stdin='{"event_type": "y", "data": 4, "dedupe_key": " "}\n'
    )
    assert blank.returncode == 2
    assert one_line_error(blank).startswith("retryq: line 1: invalid dedupe_key"), blank.stderr
    assert conn.execute(
        "SELECT dedupe_key, event_data FROM daz_retry_queue ORDER BY id"
    ).fetchall() == [("user:1", 1), ("user:2", 2)]
    held = int(first.stdout.split("id=")[1].split()[0])
    shown = run_cli("dead-letter", "show", str(held), dsn=dsn)
    assert shown.returncode == 0 and "dedupe_key" in shown.stdout and "user:1" in shown.stdout


@AS_A_PROCESS
def test_enqueue_subprocess_one_and_stdin(dsn: str, conn: Any) -> None:
    one = run_cli(
        "enqueue", "--event-type", "x", "--data", '{"k": 1}', "--tag", "a", "--tag", "b", dsn=dsn
    )
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("enqueued id=")
    many = run_cli(
        "enqueue",
        "--stdin",
        "--plugin",
        "bulk",
        dsn=dsn,
        stdin='{"event_type": "y", "data": 1}\n{"event_type": "z", "data": 2}\n',
    )
    assert many.returncode == 0, many.stderr
    assert "enqueued 2 item(s)" in many.stdout
    bad = run_cli("enqueue", "--data", "-", dsn=dsn, stdin='{"event_type": "y", "data": 1}\nx\n')
    assert bad.returncode == 2
    assert "line 2" in one_line_error(bad)
    assert conn.execute(
        "SELECT event_type, plugin_name, tags FROM daz_retry_queue ORDER BY id"
    ).fetchall() == [("x", None, ["a", "b"]), ("y", "bulk", []), ("z", "bulk", [])]


# --- stats and cleanup -------------------------------------------------------


def test_stats_rows_and_totals(dsn: str, conn: Any) -> None:
    t = cmd.target(dsn)
    q = RetryQueue(conn)
    q.add("a", 1)
    q.add("a", 2, plugin="p")
    dead_letter(q, "b")
    s = cmd.stats(t)
    assert [(r.status, r.event_type, r.plugin_name, r.item_count) for r in s.rows] == [
        ("pending", "a", None, 1),
        ("pending", "a", "p", 1),
        ("dead_letter", "b", None, 1),
    ]
    assert s.totals == {
        "pending": 2,
        "processing": 0,
        "completed": 0,
        "dead_letter": 1,
        "cancelled": 0,
    }
    assert s.total == 3


@AS_A_PROCESS
def test_stats_subprocess(dsn: str, conn: Any) -> None:
    q = RetryQueue(conn)
    q.add("cytube.event.chatMsg", 1)
    dead_letter(q, "sql.exec.failed")
    result = run_cli("stats", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert "cytube.event.chatMsg" in result.stdout
    assert (
        "total 2: pending 1, processing 0, completed 0, dead_letter 1, cancelled 0" in result.stdout
    )


def _finished_long_ago(conn: Any, completed: int, dead: int) -> None:
    q = RetryQueue(conn)
    then = datetime.now(timezone.utc) - timedelta(days=10)
    for i in range(completed):
        item_id, _ = q.add("done", i, now=then)
        assert [x.id for x in q.acquire("w", 1, now=then)] == [item_id]
        assert q.complete(item_id, "w", now=then)
    for _ in range(dead):
        dead_letter(q, "dead", now=then)


def test_cleanup_in_batches_archives_dead_letters(dsn: str, conn: Any) -> None:
    _finished_long_ago(conn, completed=4, dead=3)
    RetryQueue(conn).add("fresh", 1)
    t = cmd.target(dsn)
    assert cmd.cleanup_due(t, 7) == 7
    assert cmd.cleanup_due(t, 11) == 0
    batches: list[tuple[int, int]] = []
    result = cmd.cleanup(t, 7, batch_size=3, on_batch=lambda d, a: batches.append((d, a)))
    assert (result.deleted, result.archived) == (7, 3)
    assert result.batches == 3 and [d for d, _ in batches] == [3, 3, 1]
    assert sum(a for _, a in batches) == 3
    assert count(conn) == 1
    archived = conn.execute("SELECT count(*) FROM daz_retry_queue_archive").fetchone()
    assert archived == (3,)


def test_cleanup_rejects_bad_arguments(dsn: str) -> None:
    with pytest.raises(cmd.UsageProblem, match="retention-days"):
        cmd.cleanup(cmd.target(dsn), -1)
    with pytest.raises(cmd.UsageProblem, match="batch-size"):
        cmd.cleanup(cmd.target(dsn), 7, batch_size=0)


@AS_A_PROCESS
def test_cleanup_subprocess(dsn: str, conn: Any) -> None:
    _finished_long_ago(conn, completed=2, dead=1)
    result = run_cli("cleanup", "--retention-days", "7", "--no-archive", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert "deleted 3, archived 0" in result.stdout
    assert count(conn) == 0


# --- dead letters ------------------------------------------------------------


def test_parse_duration() -> None:
    assert cmd.parse_duration("1h30m", "--older-than") == timedelta(minutes=90)
    assert cmd.parse_duration("7d", "--older-than") == timedelta(days=7)
    assert cmd.parse_duration("0.5d", "--older-than") == timedelta(hours=12)
    assert cmd.parse_duration("45", "--older-than") == timedelta(seconds=45)
    with pytest.raises(cmd.UsageProblem, match="--older-than 'soon'"):
        cmd.parse_duration("soon", "--older-than")


def _dead_mix(conn: Any) -> dict[str, int]:
    q = RetryQueue(conn)
    old = datetime.now(timezone.utc) - timedelta(hours=2)
    return {
        "old_sql": dead_letter(q, "sql.exec.failed", plugin="sql", code="23505", now=old),
        "sql": dead_letter(q, "sql.exec.failed", plugin="sql", code="08006"),
        "chat": dead_letter(q, "cytube.event.chatMsg", plugin="chat", code="08006"),
    }


def test_dead_letter_list_filters(dsn: str, conn: Any) -> None:
    ids = _dead_mix(conn)
    RetryQueue(conn).add("pending.one", 1)
    t = cmd.target(dsn)

    def listed(**kw: Any) -> list[int]:
        return [d.id for d in cmd.dead_letter_list(t, DeadLetterFilter(**kw))]

    assert listed() == [ids["chat"], ids["sql"], ids["old_sql"]]
    assert listed(event_type="sql.exec.failed") == [ids["sql"], ids["old_sql"]]
    assert listed(plugin="chat") == [ids["chat"]]
    assert listed(error_code="08006") == [ids["chat"], ids["sql"]]
    assert listed(older_than=timedelta(hours=1)) == [ids["old_sql"]]
    assert listed(event_type="sql.exec.failed", error_code="08006") == [ids["sql"]]
    assert [d.id for d in cmd.dead_letter_list(t, DeadLetterFilter(), limit=1)] == [ids["chat"]]
    with pytest.raises(cmd.UsageProblem, match="--limit"):
        cmd.dead_letter_list(t, DeadLetterFilter(), limit=0)


def test_dead_letter_show_has_the_error_history(dsn: str, conn: Any) -> None:
    q = RetryQueue(conn)
    item_id, _ = q.add("sql.exec.failed", {"query": "INSERT 1"}, max_retries=1, retry_delay=0)
    for attempt, code in enumerate(("08006", "40001")):
        assert [i.id for i in q.acquire(f"w{attempt}", 1)] == [item_id]
        assert q.fail(item_id, f"w{attempt}", f"failure {attempt}", code)
    item = cmd.item_show(cmd.target(dsn), item_id)
    assert item.status == "dead_letter"
    entries = cmd.error_entries(item)
    assert [(e.attempt, e.worker_id, e.code, e.error, e.retryable) for e in entries] == [
        (1, "w0", "08006", "failure 0", True),
        (2, "w1", "40001", "failure 1", True),
    ]
    with pytest.raises(cmd.CommandError, match="no item with id 999999"):
        cmd.item_show(cmd.target(dsn), 999999)


def test_an_archived_dead_letter_is_shown_and_listed_as_archived(dsn: str, conn: Any) -> None:
    """On-call looks up a dead letter after cleanup moved it to the archive:
    show finds it there (saying so and when), list --archived lists it, and
    both work as a login role granted only retryq_admin."""
    ids = _dead_mix(conn)
    kept = RetryQueue(conn).add("pending.one", 1).id
    assert cmd.cleanup(cmd.target(dsn), 0).archived == 3
    role = f"t_oncall_{os.getpid()}"
    conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE retryq_admin")
    try:
        as_admin = make_conninfo(dsn, user=role)
        item = cmd.item_show(cmd.target(as_admin), ids["chat"])
        assert (item.status, item.event_type) == ("dead_letter", "cytube.event.chatMsg")
        (archived_at,) = conn.execute(
            "SELECT archived_at FROM daz_retry_queue_archive WHERE id = %s", (ids["chat"],)
        ).fetchone()
        assert item.archived_at == archived_at
        assert [e.code for e in cmd.error_entries(item)] == ["08006"]
        # an item still in the queue is not marked archived
        assert cmd.item_show(cmd.target(as_admin), kept).archived_at is None

        t = cmd.target(as_admin)
        assert cmd.dead_letter_list(t, DeadLetterFilter()) == []
        listed = cmd.dead_letter_list(t, DeadLetterFilter(error_code="08006"), archived=True)
        assert [d.id for d in listed] == [ids["chat"], ids["sql"]]
        assert all(d.archived_at == archived_at for d in listed)
        old = DeadLetterFilter(older_than=timedelta(hours=1))
        assert [d.id for d in cmd.dead_letter_list(t, old, archived=True)] == [ids["old_sql"]]

        shown = run_cli("dead-letter", "show", str(ids["chat"]), dsn=as_admin)
        assert shown.returncode == 0, shown.stderr
        assert "dead_letter (archived)" in shown.stdout
        assert "cytube.event.chatMsg failed" in shown.stdout
        listed_cli = run_cli("dead-letter", "list", "--archived", "--plugin", "chat", dsn=as_admin)
        assert listed_cli.returncode == 0, listed_cli.stderr
        assert "archived dead letters" in listed_cli.stdout
        assert str(ids["chat"]) in listed_cli.stdout and "sql.exec" not in listed_cli.stdout
        # requeue cannot reach it, and says so rather than "no such item"
        requeued = run_cli("dead-letter", "requeue", "--id", str(ids["chat"]), dsn=as_admin)
        assert requeued.returncode == 1, requeued.stdout
        assert f"id {ids['chat']}: archived by cleanup at" in requeued.stdout
        assert "requeue cannot reach it" in requeued.stdout
    finally:
        conn.execute(f"DROP ROLE {role}")


def test_dead_letter_requeue_by_filter_and_ids(dsn: str, conn: Any) -> None:
    ids = _dead_mix(conn)
    t = cmd.target(dsn)
    with pytest.raises(cmd.UsageProblem, match="needs a filter"):
        cmd.dead_letter_requeue(t, DeadLetterFilter())
    assert cmd.dead_letter_requeue(t, DeadLetterFilter(older_than=timedelta(hours=1))) == 1
    assert cmd.dead_letter_requeue(t, DeadLetterFilter(ids=(ids["chat"], 424242))) == 1
    assert cmd.dead_letter_requeue(t, DeadLetterFilter(plugin="nobody")) == 0
    rows = dict(conn.execute("SELECT id, status FROM daz_retry_queue").fetchall())
    assert rows == {ids["old_sql"]: "pending", ids["chat"]: "pending", ids["sql"]: "dead_letter"}


def test_dead_letter_purge_confirms_and_filters(dsn: str, conn: Any) -> None:
    ids = _dead_mix(conn)
    t = cmd.target(dsn)
    asked: list[int] = []

    def refuse(n: int) -> bool:
        asked.append(n)
        return False

    with pytest.raises(cmd.UsageProblem, match="needs a filter"):
        cmd.dead_letter_purge(t, DeadLetterFilter())
    with pytest.raises(cmd.Declined, match="nothing purged"):
        cmd.dead_letter_purge(t, DeadLetterFilter(error_code="08006"), refuse)
    assert asked == [2] and count(conn) == 3
    assert cmd.dead_letter_purge(t, DeadLetterFilter(error_code="08006"), lambda n: True) == 2
    remaining = [r[0] for r in conn.execute("SELECT id FROM daz_retry_queue").fetchall()]
    assert remaining == [ids["old_sql"]]


@AS_A_PROCESS
def test_dead_letter_subprocesses(dsn: str, conn: Any) -> None:
    ids = _dead_mix(conn)
    listed = run_cli("dead-letter", "list", "--event-type", "sql.exec.failed", dsn=dsn)
    assert listed.returncode == 0, listed.stderr
    assert "23505" in listed.stdout and "08006" in listed.stdout
    assert "cytube.event.chatMsg" not in listed.stdout

    shown = run_cli("dead-letter", "show", str(ids["chat"]), dsn=dsn)
    assert shown.returncode == 0, shown.stderr
    assert "error history" in shown.stdout and "cytube.event.chatMsg failed" in shown.stdout

    missing = run_cli("dead-letter", "show", "999999", dsn=dsn)
    assert missing.returncode == 1
    assert "no item with id 999999" in one_line_error(missing)

    requeued = run_cli("dead-letter", "requeue", "--older-than", "1h", dsn=dsn)
    assert requeued.returncode == 0, requeued.stderr
    assert "requeued 1" in requeued.stdout

    declined = run_cli("dead-letter", "purge", "--plugin", "chat", dsn=dsn, stdin="n\n")
    assert declined.returncode == 0, declined.stderr
    assert "declined: nothing purged (1 dead letter(s) left as they were)" in declined.stdout
    assert "purged 0" not in declined.stdout
    purged = run_cli("dead-letter", "purge", "--plugin", "chat", "--yes", dsn=dsn)
    assert "purged 1" in purged.stdout
    unfiltered = run_cli("dead-letter", "purge", "--yes", dsn=dsn)
    assert unfiltered.returncode == 2
    assert "needs a filter" in one_line_error(unfiltered)
    assert dict(conn.execute("SELECT id, status FROM daz_retry_queue").fetchall()) == {
        ids["old_sql"]: "pending",
        ids["sql"]: "dead_letter",
    }


# --- worker ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


def _mixed_load(conn: Any) -> dict[str, list[int]]:
    """Two of each kind; retries due at once so the run stays short."""
    q = RetryQueue(conn)
    kinds: dict[str, list[int]] = {}
    for kind, data in (
        ("ok", {}),
        ("flaky", {"fail_times": 2}),
        ("broken", {}),
        ("down", {}),
        ("mystery", {}),
    ):
        kinds[kind] = [
            q.add(kind, {**data, "n": n}, max_retries=2, retry_delay=0.05).id for n in range(2)
        ]
    return kinds


def _check_final_states(conn: Any, kinds: dict[str, list[int]]) -> None:
    rows = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT id, status, retry_count, last_error_code, error_message,"
            " jsonb_array_length(error_history) FROM daz_retry_queue"
        ).fetchall()
    }
    for item_id in kinds["ok"]:
        assert rows[item_id] == ("completed", 0, None, None, 0)
    for item_id in kinds["flaky"]:
        assert rows[item_id] == ("completed", 2, "08006", "attempt 2: connection reset", 2)
    for item_id in kinds["broken"]:
        assert rows[item_id] == ("dead_letter", 0, "bad_payload", "payload rejected", 1)
    for item_id in kinds["down"]:
        assert rows[item_id] == (
            "dead_letter",
            2,
            "ConnectionRefusedError",
            "dependency down",
            3,
        )
    for item_id in kinds["mystery"]:
        assert rows[item_id] == (
            "dead_letter",
            0,
            "unknown_event_type",
            "unknown event type: mystery",
            1,
        )


def test_load_handlers_accepts_mappings_and_registries() -> None:
    from tests.python import worker_handlers

    assert cmd.load_handlers("tests.python.worker_handlers:HANDLERS") is worker_handlers.HANDLERS
    assert cmd.load_handlers("tests.python.worker_handlers:REGISTRY") is worker_handlers.REGISTRY
    for spec, message in (
        ("tests.python.worker_handlers", "MODULE:ATTR"),
        ("tests.no_such_module:X", "no module named 'tests.no_such_module'"),
        ("tests.python.worker_handlers:MISSING", "has no MISSING"),
        ("tests.python.worker_handlers:NOT_A_MAPPING", "expected a mapping"),
    ):
        with pytest.raises(cmd.UsageProblem, match=message):
            cmd.load_handlers(spec)


@pytest.mark.parametrize("handlers", ["REGISTRY", "ASYNC_HANDLERS"])
def test_worker_drains_a_mixed_load(dsn: str, conn: Any, handlers: str) -> None:
    """ASYNC_HANDLERS (coroutines, and one plain function): an AsyncRetryWorker."""
    from tests.python import worker_handlers

    kinds = _mixed_load(conn)
    started: list[Any] = []
    counts = cmd.run_worker(
        cmd.target(dsn),
        getattr(worker_handlers, handlers),
        cmd.load_worker_config(None),
        exit_when_drained=True,  # the retries are 50 ms ahead: wait for them
        poll_interval=0.5,
        all_event_types=True,  # "mystery" has no handler: a dead letter
        on_start=started.append,
    )
    assert type(started[0]).__name__ == (
        "AsyncRetryWorker" if handlers == "ASYNC_HANDLERS" else "RetryWorker"
    )
    _check_final_states(conn, kinds)
    assert (counts.processed, counts.dead_lettered) == (4, 6)
    # flaky: 2 failures each; down: 2 retried failures each before the last
    assert counts.failed == 8


@pytest.mark.parametrize("handlers", ["HANDLERS", "ASYNC_HANDLERS"])
def test_worker_serves_metrics_while_it_runs(dsn: str, conn: Any, handlers: str) -> None:
    """--exit-when-idle and --metrics-port, on either worker."""
    from tests.python import worker_handlers

    RetryQueue(conn).add("ok", {"n": 1})
    ports: list[int] = []
    scraped: list[str] = []

    def scrape(event: Any) -> None:
        url = f"http://127.0.0.1:{ports[0]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            scraped.append(response.read().decode())

    counts = cmd.run_worker(
        cmd.target(dsn),
        getattr(worker_handlers, handlers),
        cmd.load_worker_config(None),
        exit_when_idle=True,
        metrics_port=0,
        on_metrics=ports.append,
        on_event=scrape,
    )
    assert counts.processed == 1 and len(scraped) == 1
    assert 'retryq_worker_items_processed_total{event_type="ok"}' in scraped[0]
    assert "daz_retry_queue_size" in scraped[0]
    with pytest.raises(OSError):  # closed once the worker returned
        urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=2)


def test_worker_checks_the_database_first(new_database: Any) -> None:
    config = cmd.load_worker_config(None)
    with pytest.raises(cmd.DatabaseUnreachable):
        cmd.run_worker(cmd.target(UNREACHABLE), {}, config, exit_when_idle=True)
    with pytest.raises(cmd.NotInstalled):
        cmd.run_worker(cmd.target(new_database()), {}, config, exit_when_idle=True)


def test_worker_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "retry.json"
    path.write_text('{"sql": {"retry": {"batch_size": "many"}}}')
    with pytest.raises(cmd.UsageProblem, match=r"sql\.retry\.batch_size"):
        cmd.load_worker_config(str(path))


@AS_A_PROCESS
@pytest.mark.parametrize("handlers", ["HANDLERS", "ASYNC_HANDLERS"])
def test_worker_subprocess_exit_when_idle(
    dsn: str, conn: Any, tmp_path: Path, handlers: str
) -> None:
    kinds = _mixed_load(conn)
    config = tmp_path / "retry.json"
    config.write_text(
        '{"sql": {"retry": {"worker_count": 3, "batch_size": 4, "poll_interval": "1s"}}}'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_")}
    result = subprocess.run(
        [
            str(RETRYQ) if RETRYQ.exists() else sys.executable,
            *([] if RETRYQ.exists() else ["-m", "retryq_py.cli"]),
            "worker",
            "--database",
            dsn,
            "--handlers",
            f"tests.python.worker_handlers:{handlers}",
            "--config",
            str(config),
            "--exit-when-drained",  # the retries are 50 ms ahead: wait for them
            "--all-event-types",  # "mystery" has no handler: a dead letter
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "completed 4, retried 8, dead-lettered 6" in result.stdout
    assert "Traceback" not in result.stderr
    _check_final_states(conn, kinds)


@AS_A_PROCESS
def test_worker_subprocess_bad_handlers_spec(dsn: str) -> None:
    result = run_cli("worker", "--handlers", "nope_module:X", "--exit-when-idle", dsn=dsn)
    assert result.returncode == 2
    assert "no module named 'nope_module'" in one_line_error(result)


# --- circuits and metrics ----------------------------------------------------


def test_circuits_over_a_target(dsn: str) -> None:
    t = cmd.target(dsn)
    cmd.open_circuit(t, "sql.exec.failed", "sql")
    (c,) = cmd.list_circuits(t)
    assert (c.event_type, c.plugin_name, c.state, c.forced) == (
        "sql.exec.failed",
        "sql",
        "open",
        True,
    )
    cmd.configure_circuit(t, "sql.exec.failed", "sql", failure_threshold=9, cooldown_seconds=4)
    (c,) = cmd.list_circuits(t)
    assert (c.failure_threshold, c.cooldown_seconds) == (9, 4)
    cmd.close_circuit(t, "sql.exec.failed", "sql")
    assert [c.state for c in cmd.list_circuits(t)] == ["closed"]
    with pytest.raises(cmd.CommandError, match="no circuit for nope/-") as info:
        cmd.close_circuit(t, "nope")
    assert info.value.exit_code == ExitCode.FAILURE
    for event_type, plugin, default in ((None, None, False), ("x", None, True), (None, "p", True)):
        with pytest.raises(cmd.UsageProblem):
            cmd.configure_circuit(t, event_type, plugin, default=default, failure_threshold=3)


def test_pauses_over_a_target(dsn: str, conn: Any) -> None:
    t = cmd.target(dsn)
    q = RetryQueue(conn)
    q.add("sql.exec", {}, plugin="sql")
    q.add("chat", {})
    assert cmd.pause(t, "sql.exec", reason="db migration") is True
    assert cmd.pause(t, "sql.exec") is False
    assert cmd.pause(t, None, "chatbot") is True
    rows = cmd.list_pauses(t)
    assert [(z.event_type, z.plugin_name, z.reason, z.held_count) for z in rows] == [
        (None, "chatbot", None, 0),
        ("sql.exec", None, "db migration", 1),
    ]
    assert [i.event_type for i in q.acquire("w", 10)] == ["chat"]
    cmd.resume(t, "sql.exec")
    with pytest.raises(cmd.CommandError, match=r"not paused \(paused: plugin chatbot\)"):
        cmd.resume(t, "sql.exec")
    assert [i.event_type for i in q.acquire("w", 10)] == ["sql.exec"]


@AS_A_PROCESS
def test_pause_commands(dsn: str, conn: Any) -> None:
    RetryQueue(conn).add("sql.exec", {})
    bare = run_cli("pause", dsn=dsn)
    assert bare.returncode == 2
    assert "--all for the whole queue" in one_line_error(bare)
    done = run_cli("pause", "--all", "--reason", "maintenance", dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert "paused the whole queue" in done.stdout
    listed = run_cli("pauses", dsn=dsn)
    assert listed.returncode == 0, listed.stderr
    assert "(every)" in listed.stdout and "maintenance" in listed.stdout
    assert "1 pause(s), 1 item(s) held back" in listed.stdout
    # stats show which groups a pause holds back
    assert [r.paused for r in cmd.stats(cmd.target(dsn)).rows] == [True]
    stats = run_cli("stats", dsn=dsn)
    assert stats.returncode == 0, stats.stderr
    header, row = (
        line for line in stats.stdout.splitlines() if "paused" in line or "sql.exec" in line
    )
    assert "paused" in header and "paused" in row, stats.stdout
    again = run_cli("resume", "sql.exec", dsn=dsn)
    assert again.returncode == 1
    assert "sql.exec is not paused (paused: the whole queue)" in one_line_error(again)
    assert run_cli("resume", "--all", dsn=dsn).stdout.strip() == "resumed the whole queue"
    assert conn.execute("SELECT count(*) FROM daz_retry_queue_pauses").fetchone() == (0,)


@AS_A_PROCESS
def test_pauses_total_counts_each_item_held_back_once(dsn: str, conn: Any) -> None:
    """Overlapping pauses: each row counts the items it covers, the total
    counts every item held back once (as the fresh-user trial found: 5 + 2)."""
    q = RetryQueue(conn)
    for event_type in ("a", "a", "b", "b", "b"):
        q.add(event_type, {})
    q.add("c", {}, plugin="x")
    assert [i.event_type for i in q.acquire("w", 10, event_types=["c"])] == ["c"]
    t = cmd.target(dsn)
    cmd.pause(t)
    cmd.pause(t, "a")
    cmd.pause(t, "c")  # its one item is leased: not held back
    rows, held = cmd.pauses_held(t)
    assert [(z.event_type, z.held_count) for z in rows] == [(None, 5), ("a", 2), ("c", 0)]
    assert held == 5
    listed = run_cli("pauses", dsn=dsn)
    assert listed.returncode == 0, listed.stderr
    assert "3 pause(s), 5 item(s) held back" in listed.stdout


def test_pause_commands_for_the_items_without_a_plugin(dsn: str, conn: Any) -> None:
    """--no-plugin pauses the items without a plugin and leaves every plugin's
    running; it is a key of its own, resumed apart from the event type's."""
    q = RetryQueue(conn)
    q.add("sql.exec", {})
    q.add("sql.exec", {}, plugin="sql")
    done = run_cli("pause", "sql.exec", "--no-plugin", dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "paused sql.exec/no plugin"
    for bad in (("--plugin", ""), ("--plugin", "x", "--no-plugin"), ("--all", "--no-plugin")):
        refused = run_cli("pause", "sql.exec", *bad, dsn=dsn)
        assert refused.returncode == 2, (bad, refused.stdout)
    assert "use --no-plugin" in one_line_error(run_cli("pause", "--plugin", "", dsn=dsn))
    listed = run_cli("pauses", dsn=dsn)
    assert "(none)" in listed.stdout and "1 pause(s), 1 item(s) held back" in listed.stdout
    assert [i.plugin_name for i in q.acquire("w", 10)] == ["sql"]
    again = run_cli("resume", "sql.exec", dsn=dsn)
    assert again.returncode == 1
    assert "sql.exec is not paused (paused: sql.exec/no plugin)" in one_line_error(again)
    gone = run_cli("resume", "sql.exec", "--no-plugin", dsn=dsn)
    assert gone.stdout.strip() == "resumed sql.exec/no plugin"
    t = cmd.target(dsn)
    assert cmd.pause(t, None, "") is True
    assert [(z.event_type, z.plugin_name) for z in cmd.list_pauses(t)] == [(None, "")]
    assert cmd.pause_key(None, "") == "the items without a plugin"
    cmd.resume(t, None, "")
    assert [i.plugin_name or "" for i in q.acquire("w", 10)] == [""]


@AS_A_PROCESS
def test_worker_refuses_handlers_that_are_empty(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "no_handlers.py").write_text("HANDLERS = {}\n")
    result = subprocess.run(
        [
            str(RETRYQ) if RETRYQ.exists() else sys.executable,
            *([] if RETRYQ.exists() else ["-m", "retryq_py.cli"]),
            "worker",
            "--database",
            dsn,
            "--handlers",
            "no_handlers:HANDLERS",
            "--exit-when-idle",
        ],
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_")},
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no handlers" in one_line_error(result)


def test_serve_metrics_until_stopped(dsn: str, conn: Any) -> None:
    import threading

    RetryQueue(conn).add("ok", {"n": 1})
    stop = threading.Event()
    ports: list[int] = []
    scraped: list[str] = []

    def serving(port: int) -> None:
        ports.append(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            scraped.append(response.read().decode())
        stop.set()

    cmd.serve_metrics(cmd.target(dsn), 0, "127.0.0.1", stop, on_serving=serving)
    assert 'daz_retry_queue_size{status="pending"} 1.0' in scraped[0]
    # the queue's exporter is no worker: no worker series, all zero (red team)
    assert "retryq_worker_" not in scraped[0]
    with pytest.raises(OSError):  # closed once stopped
        urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=2)
    with pytest.raises(cmd.DatabaseUnreachable):
        cmd.serve_metrics(cmd.target(UNREACHABLE), 0, "127.0.0.1", stop)


@AS_A_PROCESS
def test_a_value_the_queue_refuses_exits_2_with_one_prefix(dsn: str) -> None:
    result = run_cli("circuits", "open", "sql.exec", "--seconds", "-5", dsn=dsn)
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert line.startswith("retryq: invalid seconds") and "retryq: retryq:" not in line
