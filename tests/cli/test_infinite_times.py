"""One row with an infinite time (issue F6) must not break the queue's
tooling: psycopg cannot load 'infinity' or '-infinity' as a datetime, and
timestamptz - timestamptz fails on them (22008). The owner can write such a
row (and rows from before migration 0019 may hold one); every read path of
the CLI, the dashboard, the clients, retryq_py.ops and the metrics reads it,
shown as 'infinity' and '-infinity'."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from retryq_py import AsyncRetryQueue, RetryQueue, ops
from retryq_py._sql.timestamps import INFINITY, NEG_INFINITY
from retryq_py.metrics import QueueCollector
from retryq_py.web import create_app, web_config
from tests.cli.test_cli import run_cli


def infinite_rows(conn: Any) -> tuple[int, int]:
    """A pending item created at -infinity and due since -infinity, and a
    dead letter created at -infinity, dead since infinity; a pause since
    -infinity."""
    q = RetryQueue(conn)
    pending = q.add("t", {}).id
    dead = q.add("t", {}).id
    conn.execute(
        "UPDATE _retryq_active SET next_retry_at = now() + interval '1 hour' WHERE id = %s",
        [pending],
    )
    [leased] = q.acquire("w", 1)
    assert leased.id == dead
    q.fail(dead, "w", "boom", retryable=False)
    conn.execute(
        "UPDATE _retryq_active SET created_at = '-infinity', next_retry_at = '-infinity'"
        " WHERE id = %s",
        [pending],
    )
    conn.execute(
        "UPDATE _retryq_finished SET created_at = '-infinity', dead_lettered_at = 'infinity'"
        " WHERE id = %s",
        [dead],
    )
    conn.execute("SELECT retry_queue_pause('other', p_reason => 'r')")
    conn.execute("UPDATE _retryq_pause SET paused_at = '-infinity'")
    return pending, dead


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("stats",), "-infinity"),
        (("dead-letter", "list"), "infinity"),
        (("dead-letter", "show", "{dead}"), "-infinity"),
        (("pauses",), "-infinity"),
    ],
)
def test_the_cli_reads_a_queue_with_infinite_times(
    dsn: str, conn: Any, args: tuple[str, ...], shown: str
) -> None:
    _, dead = infinite_rows(conn)
    result = run_cli(*(a.format(dead=dead) for a in args), dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert shown in result.stdout


def test_the_clients_and_ops_read_infinite_times(dsn: str, conn: Any) -> None:
    pending, dead = infinite_rows(conn)
    q = RetryQueue(conn)
    got = q.get(pending)
    assert got is not None and got.created_at == NEG_INFINITY
    assert got.next_retry_at == NEG_INFINITY
    shown = q.get(dead)
    assert shown is not None and shown.dead_lettered_at == INFINITY
    assert any(s.status == "pending" for s in q.stats())
    assert [z.paused_at for z in ops.list_pauses(conn)] == [NEG_INFINITY]
    m = ops.collect_queue_metrics(conn)
    assert m.oldest_due_age_seconds == float("inf")
    # an item leased through the client (not the worker) comes back whole
    [item] = q.acquire("w2", 1)
    assert (item.id, item.created_at, item.next_retry_at) == (pending, NEG_INFINITY, NEG_INFINITY)

    async def async_get() -> Any:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            return await AsyncRetryQueue(aconn).get(dead)

    found = asyncio.run(async_get())
    assert found is not None and found.created_at == NEG_INFINITY


def test_retry_queue_due_with_an_infinite_due_time(conn: Any) -> None:
    """timestamptz - timestamptz failed (22008) on -infinity: every
    worker's poll and `retryq metrics` with it."""
    infinite_rows(conn)
    due = conn.execute(
        "SELECT active, seconds_until_due, oldest_due_age_seconds FROM retry_queue_due()"
    ).fetchone()
    assert due == (True, float("-inf"), float("inf"))
    routed = conn.execute(
        "SELECT seconds_until_due FROM retry_queue_due(p_event_types => '{t}')"
    ).fetchone()
    assert routed == (float("-inf"),)


def test_the_dashboard_and_the_metrics_read_infinite_times(dsn: str, conn: Any) -> None:
    pending, dead = infinite_rows(conn)
    conn.execute(
        "UPDATE _retryq_finished SET last_attempted_at = '-infinity', locked_until = 'infinity'"
        " WHERE id = %s",
        [dead],
    )
    web = TestClient(create_app(web_config(dsn)))  # type: ignore[arg-type]
    pages = ["/", "/items", "/dead-letters", "/pauses", "/workers"]
    for page in [*pages, f"/items/{pending}", f"/items/{dead}"]:
        response = web.get(page)
        assert response.status_code == 200, (page, response.text[:500])
    assert "infinity" in web.get("/dead-letters").text
    registry = CollectorRegistry()
    registry.register(QueueCollector(dsn))
    age = registry.get_sample_value("retryq_queue_oldest_due_age_seconds")
    assert age == float("inf")
