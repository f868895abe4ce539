"""An item whose JSON Python cannot decode (red team SQL fault 1: a number
beyond Python's int-digit limit, a nesting deeper than it recurses) must not
break the tooling that reads it: `retryq dead-letter show`, the dashboard's
item page and its payload download show the server's text (before: each
raised); the lists, stats and metrics read no payload. acquire()
dead-letters such an item as the worker does
(tests/python/_async/test_queue.py)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from retryq_py import RawJson, RetryQueue, ops
from retryq_py.metrics import QueueCollector
from retryq_py.web import create_app, web_config
from tests.cli.test_cli import run_cli

HUGE = """'{"n": 1e5000}'"""
DEEP = "(repeat('[', 5000) || repeat(']', 5000))::jsonb"


def bad_rows(conn: Any, data: str, metadata: str) -> tuple[int, int]:
    """An item with such data or metadata left pending, and one made a dead
    letter as acquire() makes it (leased and failed by SQL here: the views
    are tested, not the client)."""
    ids = []
    for _ in range(2):
        row = conn.execute(
            f"SELECT id FROM enqueue_retry_item('bad.e', {data}, p_event_metadata => {metadata})"
        ).fetchone()
        ids.append(int(row[0]))
    pending, dead = ids
    conn.execute(
        "UPDATE _retryq_active SET next_retry_at = now() + interval '1 hour' WHERE id = %s",
        [pending],
    )
    leased = conn.execute("SELECT id FROM acquire_retry_items('w', 10, 300)").fetchall()
    assert leased == [(dead,)]
    failed = conn.execute(
        "SELECT fail_retry_item(%s, 'w', 'cannot decode', 'retryq.undecodable_item', false)",
        [dead],
    ).fetchone()
    assert failed == (True,)
    return pending, dead


KINDS = {
    "huge-int": (HUGE, "'{}'", "1" + "0" * 5000),
    "deep": (DEEP, "'{}'", "[" * 5000),
    "metadata-huge-int": ("'{}'", HUGE, "1" + "0" * 5000),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_cli_shows_the_servers_text(dsn: str, conn: Any, kind: str) -> None:
    data, metadata, shown = KINDS[kind]
    pending, dead = bad_rows(conn, data, metadata)
    for item_id in (pending, dead):
        result = run_cli("dead-letter", "show", str(item_id), dsn=dsn)
        assert result.returncode == 0, result.stderr
        # the start: rich cuts a long value at the terminal's width
        assert shown[:40] in "".join(result.stdout.split())
    listed = run_cli("dead-letter", "list", dsn=dsn)
    assert listed.returncode == 0, listed.stderr
    assert "retryq.undecodable_item" in listed.stdout
    stats = run_cli("stats", dsn=dsn)
    assert stats.returncode == 0, stats.stderr


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_dashboard_shows_the_servers_text(dsn: str, conn: Any, kind: str) -> None:
    data, metadata, shown = KINDS[kind]
    pending, dead = bad_rows(conn, data, metadata)
    web = TestClient(create_app(web_config(dsn)))  # type: ignore[arg-type]
    for page in ["/", "/items", "/dead-letters", f"/items/{pending}", f"/items/{dead}"]:
        response = web.get(page)
        assert response.status_code == 200, (page, response.text[:500])
    assert shown in web.get(f"/items/{dead}").text
    payload = web.get(f"/items/{dead}/payload.json")
    assert payload.status_code == 200
    text = conn.execute("SELECT event_data::text FROM daz_retry_queue WHERE id = %s", [dead])
    assert payload.text == text.fetchone()[0]


def test_the_clients_ops_and_metrics_read_around_it(dsn: str, conn: Any) -> None:
    _, dead = bad_rows(conn, HUGE, HUGE)
    got = RetryQueue(conn).get(dead)
    assert got is not None
    assert isinstance(got.event_data, RawJson) and isinstance(got.event_metadata, RawJson)
    assert got.last_error_code == "retryq.undecodable_item"
    assert {(s.status, s.item_count) for s in RetryQueue(conn).stats()} == {
        ("pending", 1),
        ("dead_letter", 1),
    }
    assert ops.collect_queue_metrics(conn).sizes["pending"] == 1
    registry = CollectorRegistry()
    registry.register(QueueCollector(dsn))
    assert registry.get_sample_value("retryq_queue_up") == 1
