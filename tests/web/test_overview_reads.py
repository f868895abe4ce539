"""The overview's hourly chart and the workers screen count failed attempts
from error histories: right counts, and only the histories that failed within
the window are expanded (the bound that keeps them cheap on a large backlog)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from retryq_py._sql import web as _w
from retryq_py.admin import target
from retryq_py.web import data

Conn = psycopg.Connection[Any]

OLD_FAILURES = 300  # active items whose only failures are older than a day


def _entry(hours_ago: float, worker: str, code: str = "E") -> str:
    return (
        "jsonb_build_object('attempt', 1, 'failed_at', now() - interval"
        f" '{hours_ago * 3600} seconds', 'worker_id', '{worker}', 'error', 'x',"
        f" 'code', '{code}', 'retryable', true)"
    )


def _history(*entries: str) -> str:
    return "jsonb_build_array(" + ", ".join(entries) + ")"


@pytest.fixture
def histories(module_dsn: str, module_reset: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)  # type: ignore[arg-type]
        rows = [
            # pending, failed 30 h and 2 h ago: one failure in the day, by w1
            ("pending", 2, _history(_entry(30, "w1"), _entry(2, "w1")), None, None),
            # leased by w2 now; the lease w3 held expired 10 min ago
            ("processing", 1, _history(_entry(1 / 6, "w3", "lease_expired")), "w2", "+"),
            # completed an hour ago after failing 3 h ago on w4
            ("completed", 1, _history(_entry(3, "w4")), None, "completed"),
            # dead letter 20 min ago: failed 50 and 20 min ago on w1
            ("dead_letter", 2, _history(_entry(5 / 6, "w1"), _entry(1 / 3, "w1")), None, "dead"),
            # completed 30 h ago after failing 31 h ago: outside every window
            ("completed", 1, _history(_entry(31, "w5")), None, "old"),
        ]
        finished = {"completed": "now() - interval '1 hour'", "old": "now() - interval '30 hours'"}
        for status, count, history, locked_by, when in rows:
            lease = "now() + interval '5 minutes'" if when == "+" else "NULL"
            dead = "now() - interval '20 minutes'" if when == "dead" else "NULL"
            conn.execute(
                f"""
                INSERT INTO daz_retry_queue (event_type, event_data, status, retry_count,
                    max_retries, error_history, created_at, next_retry_at,
                    last_attempted_at, locked_by, locked_until, completed_at,
                    dead_lettered_at)
                VALUES ('e', '{{}}', '{status}', {count}, 10, {history},
                    now() - interval '40 hours', now() + interval '1 hour',
                    now() - interval '1 hour', {f"'{locked_by}'" if locked_by else "NULL"},
                    {lease}, {finished.get(str(when), "NULL")}, {dead})
                """  # type: ignore[arg-type]
            )
        # a backlog of items that failed long ago, and of items never tried
        conn.execute(
            f"""
            INSERT INTO daz_retry_queue (event_type, event_data, retry_count,
                max_retries, error_history, created_at, next_retry_at, last_attempted_at)
            SELECT 'e', '{{}}', 1, 10, {_history(_entry(26, "w6"))},
                now() - interval '40 hours', now() + interval '1 hour',
                now() - interval '26 hours'
            FROM generate_series(1, {OLD_FAILURES})
            """  # type: ignore[arg-type]
        )
        conn.execute(
            "INSERT INTO daz_retry_queue (event_type, event_data)"
            " SELECT 'e', '{}' FROM generate_series(1, 200)"
        )
        yield conn


def test_hourly_counts_the_failures_of_the_day(module_dsn: str, histories: Conn) -> None:
    ov = data.overview(target(module_dsn))
    assert len(ov.hours) == 24
    # 2 h ago (w1), 10 min ago (lease expired), 3 h ago (w4), 50 and 20 min ago
    assert sum(h.failed for h in ov.hours) == 5
    assert sum(h.completed for h in ov.hours) == 1
    assert sum(h.dead_lettered for h in ov.hours) == 1


def test_workers_seen_in_the_last_hour(module_dsn: str, histories: Conn) -> None:
    seen = {w.worker_id: w for w in data.workers_seen(target(module_dsn), timedelta(hours=1))}
    assert set(seen) == {"w1", "w2", "w3"}
    assert (seen["w1"].failures, seen["w1"].holding) == (2, 0)
    assert (seen["w2"].failures, seen["w2"].holding) == (0, 1)
    assert (seen["w3"].failures, seen["w3"].holding) == (1, 0)


def _expansions(conn: Conn, statement: str, params: dict[str, Any]) -> int:
    """How many error histories the statement's plan expanded."""
    plan = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + statement,  # type: ignore[operator]
        params,
    ).fetchone()
    assert plan is not None
    loops = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal loops
        if node.get("Function Name") == "jsonb_array_elements":
            loops += node["Actual Loops"]
        for child in node.get("Plans", []):
            walk(child)

    walk((plan[0] if isinstance(plan[0], list) else json.loads(plan[0]))[0]["Plan"])
    return loops


@pytest.mark.parametrize(
    ("statement", "params", "at_most"),
    [
        # the four histories with a failure in the day (the old one is skipped)
        (_w.HOURLY, {"hours": 24}, 4),
        # the two with a failure in the last hour
        (_w.WORKERS, {"window": timedelta(hours=1)}, 2),
    ],
    ids=["hourly", "workers"],
)
def test_only_histories_that_failed_in_the_window_are_expanded(
    histories: Conn, statement: str, params: dict[str, Any], at_most: int
) -> None:
    # before: every active item's history, OLD_FAILURES and more
    assert _expansions(histories, statement, params) <= at_most


DEAD_LETTERS = 20_000


@pytest.fixture
def many_dead_letters(module_dsn: str, module_reset: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)  # type: ignore[arg-type]
        conn.execute(
            f"""
            INSERT INTO daz_retry_queue (event_type, event_data, correlation_id, status,
                retry_count, max_retries, last_error_code, created_at, next_retry_at,
                completed_at, dead_lettered_at)
            SELECT 'e', '{{}}', 'req-' || g, s.status, 0, 3, 'code-' || (g % 2000),
                now() - interval '1 day', now() - interval '1 day',
                CASE WHEN s.status = 'completed' THEN now() END,
                CASE WHEN s.status = 'dead_letter' THEN now() END
            FROM generate_series(1, {DEAD_LETTERS * 2}) AS g,
                LATERAL (SELECT CASE WHEN g % 2 = 0 THEN 'dead_letter'
                    ELSE 'completed' END AS status) AS s
            """  # type: ignore[arg-type]
        )
        conn.execute("ANALYZE daz_retry_queue")
        yield conn


@pytest.mark.parametrize(
    ("search", "index"),
    [
        ({"correlation_id": "req-1234"}, "_retryq_dead_correlation_idx"),
        ({"error_code": "code-7"}, "_retryq_dead_code_idx"),
    ],
    ids=["correlation_id", "error_code"],
)
def test_a_dead_letter_search_reads_an_index(
    many_dead_letters: Conn, search: dict[str, str], index: str
) -> None:
    """The items screen's dead-letter search by correlation id or error code
    finds its rows through an index, not by walking every finished row."""
    params = data.ItemFilter(status="dead_letter", **search).params(None, 51)
    plan = many_dead_letters.execute(
        "EXPLAIN (FORMAT JSON) " + _w.ITEMS,  # type: ignore[operator]
        params,
    ).fetchone()
    assert plan is not None
    assert f'"Index Name": "{index}"' in json.dumps(plan[0])
