"""`retryq cancel` and admin.cancel_items: asks first, says what it left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from retryq_py import RetryQueue, migrate
from retryq_py import admin as cmd
from retryq_py.admin import CancelFilter
from tests.cli.test_cli import one_line_error, run_cli


def _mix(conn: Any) -> dict[str, int]:
    """Two pending sql items (one enqueued a day ago), one leased chat item,
    one completed item."""
    q = RetryQueue(conn)
    day_ago = datetime.now(UTC) - timedelta(days=1)
    ids = {"done": q.add("done", {"n": 2}, now=day_ago)[0]}
    assert [i.id for i in q.acquire("w", 10)] == [ids["done"]]
    assert q.complete(ids["done"], "w")
    ids["chat"] = q.add("chat.send", {"n": 4}, plugin="chat")[0]
    assert [i.id for i in q.acquire("holder", 10)] == [ids["chat"]]
    ids["old_sql"] = q.add("sql.exec.failed", {"n": 1}, now=day_ago)[0]
    ids["sql"] = q.add("sql.exec.failed", {"n": 3})[0]
    return ids


def _statuses(conn: Any) -> dict[int, str]:
    return dict(conn.execute("SELECT id, status FROM daz_retry_queue").fetchall())


def test_cancel_items_asks_then_cancels_and_names_what_it_left(dsn: str, conn: Any) -> None:
    ids = _mix(conn)
    t = cmd.target(dsn)
    asked: list[int] = []

    def refuse(n: int) -> bool:
        asked.append(n)
        return False

    with pytest.raises(cmd.UsageProblem, match="needs a filter"):
        cmd.cancel_items(t, CancelFilter())
    before = _statuses(conn)
    declined = cmd.cancel_items(t, CancelFilter(event_type="sql.exec.failed"), refuse)
    assert (declined.declined, declined.matched, declined.cancelled) == (True, 2, 0)
    assert asked == [2] and _statuses(conn) == before

    got = cmd.cancel_items(
        t, CancelFilter(ids=(ids["chat"], ids["done"], 424242)), lambda n: n == 1
    )
    assert (got.declined, got.matched, got.cancelled) == (False, 1, 1)
    assert got.skipped == {ids["done"]: "completed", 424242: None}
    assert _statuses(conn)[ids["chat"]] == "cancelled"
    # the holder learns it at its acknowledgement
    assert RetryQueue(conn).complete(ids["chat"], "holder") is False

    old = cmd.cancel_items(t, CancelFilter(older_than=timedelta(hours=1)), lambda n: True)
    assert (old.matched, old.cancelled) == (1, 1)
    assert _statuses(conn)[ids["old_sql"]] == "cancelled"
    assert _statuses(conn)[ids["sql"]] == "pending"
    nothing = cmd.cancel_items(t, CancelFilter(plugin="nobody"), refuse)
    assert (nothing.matched, nothing.declined) == (0, False) and asked == [2]
    assert cmd.stats(t).totals["cancelled"] == 2


def test_cancel_subprocess(dsn: str, conn: Any) -> None:
    ids = _mix(conn)
    before = _statuses(conn)
    declined = run_cli("cancel", "--event-type", "sql.exec.failed", dsn=dsn, stdin="n\n")
    assert declined.returncode == 0, declined.stderr
    assert "Cancel 2 pending or processing item(s) for good?" in declined.stdout
    assert "declined: nothing cancelled" in declined.stdout
    assert "cancelled 0" not in declined.stdout
    assert _statuses(conn) == before

    done = run_cli("cancel", "--id", str(ids["done"]), "--id", str(ids["sql"]), "--yes", dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert f"id {ids['done']}: already completed, left alone" in done.stdout
    assert "cancelled 1" in done.stdout
    assert _statuses(conn)[ids["sql"]] == "cancelled"

    none = run_cli("cancel", "--plugin", "nobody", dsn=dsn)
    assert none.returncode == 0, none.stderr
    assert "nothing to cancel" in none.stdout

    unfiltered = run_cli("cancel", "--yes", dsn=dsn)
    assert unfiltered.returncode == 2
    assert "needs a filter" in one_line_error(unfiltered)

    stats = run_cli("stats", dsn=dsn)
    assert stats.returncode == 0, stats.stderr
    assert "cancelled" in stats.stdout


def test_migrate_rollback_says_why_and_what_to_do_with_cancelled_items(new_database: Any) -> None:
    dsn = new_database()
    every = migrate.apply(dsn)
    mine = next(i for i in every if i.endswith("_cancel"))
    steps = str(len(every) - every.index(mine))
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = RetryQueue(conn)
        q.cancel([q.add("t", 1)[0]])
    refused = run_cli("migrate", "--rollback", "--steps", steps, "--yes", dsn=dsn)
    assert refused.returncode == 1
    line = one_line_error(refused)
    assert line.startswith("retryq: cannot roll back cancel: 1 cancelled items")
    assert "DELETE FROM daz_retry_queue WHERE status = 'cancelled'" in line
    assert "cannot connect" not in line
