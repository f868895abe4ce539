"""The integration guide's four statements, verbatim, from Python and from psql.

The SQL strings below are copied character for character from the guide's Go
constants (and its stats query); they keep the guide's $n placeholders, which
psycopg's RawCursor and psql's PREPARE/EXECUTE both send to the server as is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

INSERT_SQL = """
        INSERT INTO daz_retry_queue (
            event_type, channel_name, plugin_name, event_data,
            event_metadata, max_retries, retry_delay_seconds,
            backoff_multiplier, priority, correlation_id, tags
        ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        RETURNING id, event_id;
    """
ACQUIRE_SQL = """SELECT * FROM acquire_retry_items($1, $2, $3);"""
COMPLETE_SQL = """SELECT complete_retry_item($1, $2);"""
FAIL_SQL = """SELECT fail_retry_item($1, $2, $3, $4);"""
STATS_SQL = """
        SELECT status, COUNT(*) as count, AVG(retry_count) as avg_retries
        FROM daz_retry_queue
        WHERE created_at > CURRENT_TIMESTAMP - INTERVAL '24 hours'
        GROUP BY status
    """

GUIDE = (
    Path(__file__).resolve().parents[3] / "shared" / "seed" / "retry-queue-go-integration-guide.md"
)

# The guide's RetryQueueItem fields, by the names its JSON tags give them.
ITEM_COLUMNS = [
    "id",
    "event_id",
    "event_type",
    "channel_name",
    "plugin_name",
    "event_data",
    "retry_count",
    "max_retries",
    "priority",
    "correlation_id",
]


def _guide_params(event_type: str = "sql.exec.failed", priority: int = 5) -> list[Any]:
    # The values the guide's AddToRetryQueue passes, in its order.
    return [
        event_type,
        "chan",
        "sql",
        json.dumps({"query": "SELECT 1", "params": []}),
        Jsonb({"timestamp": 1700000000, "retry_reason": "initial_failure"}),
        3,
        60,
        2.0,
        priority,
        "corr-1",
        ["sql", "chan"],
    ]


def _raw(conn: psycopg.Connection[Any]) -> psycopg.RawCursor[Any]:
    return psycopg.RawCursor(conn)


def test_statements_are_the_guides_verbatim() -> None:
    if not GUIDE.exists():
        pytest.skip("the seed guide is not next to this checkout")
    text = GUIDE.read_text()
    for statement in (INSERT_SQL, ACQUIRE_SQL, COMPLETE_SQL, FAIL_SQL, STATS_SQL):
        assert statement in text


def test_insert_returns_id_and_uuid_and_defaults_the_rest(conn: psycopg.Connection[Any]) -> None:
    cur = _raw(conn)
    cur.execute(INSERT_SQL, _guide_params())
    rows = cur.fetchall()
    assert [d.name for d in cur.description or []] == ["id", "event_id"]
    assert len(rows) == 1
    item_id, event_id = rows[0]
    assert isinstance(item_id, int)
    assert isinstance(event_id, uuid.UUID)
    row = conn.execute(
        """
        SELECT status, retry_count, error_history, next_retry_at = created_at,
            created_at = now(), locked_by, locked_until, completed_at,
            event_data, event_metadata, tags, max_retry_delay_seconds, retry_jitter
        FROM daz_retry_queue WHERE id = %s
        """,
        [item_id],
    ).fetchone()
    assert row is not None
    assert row[:8] == ("pending", 0, [], True, False, None, None, None)
    assert row[8] == {"query": "SELECT 1", "params": []}
    assert row[9] == {"timestamp": 1700000000, "retry_reason": "initial_failure"}
    assert row[10] == ["sql", "chan"]
    assert row[11] > 0  # a cap exists by default
    assert row[12] == 0  # jitter off by default

    cur.execute(INSERT_SQL, _guide_params())
    second = cur.fetchall()[0]
    assert second[0] > item_id
    assert second[1] != event_id


def test_insert_with_only_event_type_and_data_takes_guide_defaults(
    conn: psycopg.Connection[Any],
) -> None:
    row = conn.execute(
        "INSERT INTO daz_retry_queue (event_type, event_data) VALUES ('x', '{}') "
        "RETURNING max_retries, retry_delay_seconds, backoff_multiplier, priority, "
        "event_metadata, tags, status"
    ).fetchone()
    assert row == (3, 60.0, 2.0, 5, {}, [], "pending")


def test_acquire_complete_fail_verbatim(conn: psycopg.Connection[Any]) -> None:
    cur = _raw(conn)
    cur.execute(INSERT_SQL, _guide_params("cytube.event.chatMsg"))
    first_id, first_event = cur.fetchall()[0]
    cur.execute(INSERT_SQL, _guide_params("sql.exec.failed"))
    second_id, _ = cur.fetchall()[0]

    cur.execute(ACQUIRE_SQL, ["sql-plugin-host", 10, 300])
    names = [d.name for d in cur.description or []]
    for column in [*ITEM_COLUMNS, "event_metadata", "tags"]:
        assert column in names
    items = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    assert [i["id"] for i in items] == [first_id, second_id]
    first = items[0]
    assert first["event_id"] == first_event
    assert first["event_type"] == "cytube.event.chatMsg"
    assert first["channel_name"] == "chan"
    assert first["plugin_name"] == "sql"
    assert first["event_data"] == {"query": "SELECT 1", "params": []}
    assert (first["retry_count"], first["max_retries"], first["priority"]) == (0, 3, 5)
    assert first["correlation_id"] == "corr-1"
    assert first["event_metadata"]["retry_reason"] == "initial_failure"
    assert first["tags"] == ["sql", "chan"]

    cur.execute(COMPLETE_SQL, [first_id, "sql-plugin-host"])
    assert cur.fetchall() == [(True,)]
    cur.execute(COMPLETE_SQL, [first_id, "sql-plugin-host"])
    assert cur.fetchall() == [(False,)]

    cur.execute(FAIL_SQL, [second_id, "sql-plugin-host", "connection reset", "08006"])
    assert cur.fetchall() == [(True,)]
    cur.execute(FAIL_SQL, [second_id, "sql-plugin-host", "again", None])
    assert cur.fetchall() == [(False,)]  # no longer leased
    row = conn.execute(
        "SELECT status, retry_count, error_message, last_error_code, "
        "next_retry_at - last_attempted_at FROM daz_retry_queue WHERE id = %s",
        [second_id],
    ).fetchone()
    assert row is not None
    assert row[:4] == ("pending", 1, "connection reset", "08006")
    assert row[4].total_seconds() == pytest.approx(60, abs=1)

    # Nothing else is due: the failed one waits its 60 s.
    cur.execute(ACQUIRE_SQL, ["sql-plugin-host", 10, 300])
    assert cur.fetchall() == []


def test_stats_query_counts_completed_until_cleanup(conn: psycopg.Connection[Any]) -> None:
    cur = _raw(conn)
    for _ in range(3):
        cur.execute(INSERT_SQL, _guide_params())
    cur.execute(ACQUIRE_SQL, ["w", 2, 300])
    leased = [r[0] for r in cur.fetchall()]
    cur.execute(COMPLETE_SQL, [leased[0], "w"])
    cur.execute(FAIL_SQL, [leased[1], "w", "boom", None])

    def stats() -> dict[str, tuple[int, float]]:
        cur.execute(STATS_SQL)
        return {s: (n, float(avg)) for s, n, avg in cur.fetchall()}

    assert stats() == {"completed": (1, 0.0), "pending": (2, 0.5)}
    deleted = conn.execute(
        "SELECT * FROM cleanup_retry_queue(1, p_now => now() + interval '2 days')"
    ).fetchone()
    assert deleted == (1, 0)
    assert stats() == {"pending": (2, 0.5)}


# --- the same statements from psql -------------------------------------------------


def _psql(dsn: str, script: str) -> list[str]:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    done = subprocess.run(
        [psql, "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", dsn],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_statements_verbatim_from_psql(dsn: str) -> None:
    script = f"""
PREPARE guide_insert AS {INSERT_SQL}
PREPARE guide_acquire AS {ACQUIRE_SQL}
PREPARE guide_complete AS {COMPLETE_SQL}
PREPARE guide_fail AS {FAIL_SQL}
PREPARE guide_stats AS {STATS_SQL};
EXECUTE guide_insert('cytube.event.chatMsg', 'chan', 'sql', '{{"n": 1}}',
    '{{"retry_reason": "initial_failure"}}', 3, 60, 2.0, 5, 'corr-1', '{{sql,chan}}');
EXECUTE guide_insert('sql.exec.failed', '', 'sql', '{{"n": 2}}',
    '{{}}', 3, 60, 2.0, 7, 'corr-2', '{{sql}}');
\\echo --acquire
EXECUTE guide_acquire('psql-worker', 10, 300);
\\echo --complete
EXECUTE guide_complete(1, 'psql-worker');
EXECUTE guide_complete(1, 'psql-worker');
\\echo --fail
EXECUTE guide_fail(2, 'psql-worker', 'timeout', 'E_TIMEOUT');
\\echo --stats
EXECUTE guide_stats;
"""
    lines = _psql(dsn, script)
    marks = {name: lines.index(f"--{name}") for name in ("acquire", "complete", "fail", "stats")}
    inserted = lines[: marks["acquire"]]
    assert [line.split("|")[0] for line in inserted] == ["1", "2"]
    for line in inserted:
        uuid.UUID(line.split("|")[1])
    acquired = [line.split("|") for line in lines[marks["acquire"] + 1 : marks["complete"]]]
    # priority 7 first, then priority 5; columns start with the RetryQueueItem fields
    assert [(a[0], a[2], a[8]) for a in acquired] == [
        ("2", "sql.exec.failed", "7"),
        ("1", "cytube.event.chatMsg", "5"),
    ]
    assert json.loads(acquired[1][5]) == {"n": 1}
    assert acquired[1][9] == "corr-1"
    assert json.loads(acquired[1][10]) == {"retry_reason": "initial_failure"}
    assert acquired[1][11] == "{sql,chan}"
    assert lines[marks["complete"] + 1 : marks["fail"]] == ["t", "f"]
    assert lines[marks["fail"] + 1 : marks["stats"]] == ["t"]
    stats = sorted(line.split("|") for line in lines[marks["stats"] + 1 :])
    assert [(s, int(n), float(avg)) for s, n, avg in stats] == [
        ("completed", 1, 0.0),
        ("pending", 1, 1.0),
    ]


def test_psql_sees_no_error_for_the_guides_go_parameter_types(dsn: str) -> None:
    # Go sends the worker's batch size and timeout as ints and the fail code as
    # a possibly empty string; untyped literals must resolve without casts.
    lines = _psql(
        dsn,
        "SELECT * FROM acquire_retry_items('w', 10, 300);\n"
        "SELECT complete_retry_item(42, 'w');\n"
        "SELECT fail_retry_item(42, 'w', 'msg', '');\n",
    )
    assert lines == ["f", "f"]
