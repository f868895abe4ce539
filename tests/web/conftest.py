"""A queue holding items in every state, for the dashboard's tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from retryq_py import RetryQueue

pytest.importorskip("starlette", reason="the web extra is not installed")


@dataclass(frozen=True)
class Seeded:
    dsn: str
    ids: dict[str, int]


def _lease(q: RetryQueue, item_id: int, worker: str) -> None:
    """Lease exactly `item_id` for `worker` (the others acquired go back)."""
    leased = q.acquire(worker, 100)
    assert item_id in [i.id for i in leased]
    others = [i.id for i in leased if i.id != item_id]
    if others:
        q.release(others, worker)


def seed(dsn: str) -> dict[str, int]:
    """Two due items, one scheduled an hour ahead, one retried after a failure,
    one held by a worker, one completed, three dead letters, an open circuit."""
    ids: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = RetryQueue(conn)
        ids["due"], _ = q.add(
            "email.send",
            {"to": "ada@example.com", "subject": "<b>hi</b>"},
            plugin="smtp",
            correlation_id="req-1",
            metadata={"tenant": "acme"},
        )
        ids["due2"], _ = q.add(
            "email.send", {"to": "bob@example.com"}, plugin="smtp", dedupe_key="mail:bob"
        )
        ids["scheduled"], _ = q.add("sms.send", {"to": "+100"}, delay=3600)
        for name, event_type, plugin, code in (
            ("dead_sql", "sql.exec", "sql", "constraint"),
            ("dead_http", "webhook.post", "http", "http_500"),
            ("dead_mail", "email.send", "smtp", "bounce"),
        ):
            ids[name], _ = q.add(
                event_type, {"n": name}, plugin=plugin, max_retries=0, correlation_id=f"c-{name}"
            )
            _lease(q, ids[name], "worker-b")
            assert q.fail(
                ids[name], "worker-b", f"{event_type} failed: {code}", code, retryable=False
            )
        ids["retried"], _ = q.add(
            "sql.exec", {"sql": "INSERT 1"}, plugin="sql", correlation_id="req-2"
        )
        _lease(q, ids["retried"], "worker-a")
        assert q.fail(ids["retried"], "worker-a", "connection reset", "timeout")
        ids["completed"], _ = q.add("email.send", {"to": "cy@example.com"}, plugin="smtp")
        _lease(q, ids["completed"], "worker-a")
        assert q.complete(ids["completed"], "worker-a")
        ids["processing"], _ = q.add(
            "webhook.post", {"url": "https://example.com/hook"}, plugin="http"
        )
        _lease(q, ids["processing"], "worker-a")
        conn.execute("SELECT retry_circuit_open('sms.send', NULL, 600)")
    return ids


@pytest.fixture
def seeded(module_dsn: str, module_reset: str) -> Seeded:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)  # type: ignore[arg-type]
        conn.execute("TRUNCATE _retryq_circuit")
    return Seeded(module_dsn, seed(module_dsn))


def status_of(dsn: str, item_id: int) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT status FROM daz_retry_queue WHERE id = %s", (item_id,)
        ).fetchone()
    return None if row is None else row[0]
