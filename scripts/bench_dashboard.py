"""What the dashboard's reads cost on a big queue (issue 16, item 2): the
overview's HOURLY and the workers screen's WORKERS statements, and the
dead-letter searches an on-call engineer makes (by correlation id, error code
and age), timed on a database holding a backlog.

The database (cloned from a template that retryq's migrations built) holds
--pending active items, --failed-share of them with one to three failed
attempts in the last day, 2% leased, and --finished finished ones spread over
a week: 90% completed, 10% dead letters with three attempts each.

Each statement is timed side by side with its counterpart: the dashboard's
statements against those of --baseline (another checkout's
retryq_py/_sql/web.py, e.g. /work/main), the dead-letter searches with and
without the partial dead-letter indexes (dropped for the second column). A
figure is the median of --rounds runs in milliseconds, each on a new
connection as the dashboard makes one per request, after one warm-up run,
the two sides alternating.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_dashboard.py \
        [--pending 200000] [--failed-share 0.1] [--finished 1000000] \
        [--rounds 5] [--baseline ../main] [--dsn DSN_OF_A_KEPT_DATABASE]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import DEFAULT_ADMIN_DSN, Cluster, connect, vacuum_analyze

# A failed attempt's entry, as fail_retry_item writes it.
_ENTRY = """jsonb_build_object(
    'attempt', {n}, 'failed_at', {at}, 'worker_id', 'worker-' || (g % 8),
    'error', 'upstream answered 503 Service Unavailable after 30s: connection '
        || 'reset by peer while reading the response body of request ' || g,
    'code', 'http_' || (500 + g % 20), 'retryable', true)"""


def _history(count: str, last: str) -> str:
    """A history of `count` (1..3) attempts, the last at `last`, an hour apart."""
    entry = _ENTRY.format(n="k", at=f"{last} - (3 - k) * interval '1 hour'")
    return f"""(SELECT coalesce(jsonb_agg({entry} ORDER BY k), '[]')
        FROM generate_series(1, {count}) AS k)"""


def load(dsn: str, pending: int, failed_share: float, finished: int) -> None:
    with connect(dsn) as conn:
        # pending and leased: a share failed 1..3 times within the last day
        failed = f"(g % 1000) < {round(failed_share * 1000)}"
        conn.execute(
            f"""
            INSERT INTO daz_retry_queue (
                event_type, plugin_name, event_data, correlation_id, status,
                retry_count, max_retries, error_history, last_error_code,
                error_message, created_at, next_retry_at, last_attempted_at,
                locked_by, locked_until
            )
            SELECT
                'order.' || (g % 12), 'plugin-' || (g % 5),
                jsonb_build_object('order', g, 'note', repeat('x', 120)),
                'req-' || md5(g::text),
                CASE WHEN g % 50 = 0 THEN 'processing' ELSE 'pending' END,
                CASE WHEN {failed} THEN 1 + g % 3 ELSE 0 END, 5,
                CASE WHEN {failed}
                    THEN {_history("1 + g % 3", "now() - (g % 1380) * interval '1 minute'")}
                    ELSE '[]' END,
                CASE WHEN {failed} THEN 'http_' || (500 + g % 20) END,
                CASE WHEN {failed} THEN 'upstream answered 503' END,
                now() - interval '1 day',
                now() + (g % 7200) * interval '1 second',
                CASE WHEN g % 50 = 0 OR {failed} THEN now() - interval '1 minute' END,
                CASE WHEN g % 50 = 0 THEN 'worker-' || (g % 8) END,
                CASE WHEN g % 50 = 0 THEN now() + interval '5 minutes' END
            FROM generate_series(1, {pending}) AS g
            """  # type: ignore[arg-type]
        )
        # finished over the last week: every tenth a dead letter
        conn.execute(
            f"""
            INSERT INTO daz_retry_queue (
                event_type, plugin_name, event_data, correlation_id, status,
                retry_count, max_retries, error_history, last_error_code,
                error_message, created_at, next_retry_at, completed_at,
                dead_lettered_at
            )
            SELECT
                'order.' || (g % 12), 'plugin-' || (g % 5),
                jsonb_build_object('order', g, 'note', repeat('x', 120)),
                'req-' || md5((-g)::text),
                CASE WHEN g % 10 = 0 THEN 'dead_letter' ELSE 'completed' END,
                CASE WHEN g % 10 = 0 THEN 3 ELSE 0 END, 3,
                CASE WHEN g % 10 = 0
                    THEN {_history("3", "t.at")}
                    ELSE '[]' END,
                CASE WHEN g % 10 = 0 THEN 'http_' || (500 + g % 20) END,
                CASE WHEN g % 10 = 0 THEN 'upstream answered 503' END,
                t.at - interval '3 hours', t.at - interval '3 hours',
                CASE WHEN g % 10 <> 0 THEN t.at END,
                CASE WHEN g % 10 = 0 THEN t.at END
            FROM generate_series(1, {finished}) AS g,
                LATERAL (SELECT now() - (g % 10080) * interval '1 minute' AS at) AS t
            """  # type: ignore[arg-type]
        )
    vacuum_analyze(dsn)


DEAD_INDEXES = ("_retryq_dead_correlation_idx", "_retryq_dead_code_idx")


def _statements(path: Path) -> Any:
    """A checkout's retryq_py/_sql/web.py, loaded as a module of its own."""
    spec = importlib.util.spec_from_file_location(f"web_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


Case = tuple[str, dict[str, Any], str | None]


def web_cases(web: Any) -> dict[str, Case]:
    """The dashboard's statements that differ between checkouts, each with
    the session setting its checkout's dashboard runs first (if any)."""
    session = getattr(web, "SESSION", None)
    return {
        "overview HOURLY (24 h)": (web.HOURLY, {"hours": 24}, session),
        "workers WORKERS (1 h)": (web.WORKERS, {"window": timedelta(hours=1)}, session),
    }


def search_cases(web: Any) -> dict[str, Case]:
    """The dead-letter searches: the items screen's and list_dead_letter_items."""
    from retryq_py._sql import ops as _q

    dead = {"event_type": None, "plugin_name": None, "item_ids": None, "limit": 50}
    a_dead_correlation = "req-" + hashlib.md5(b"-500").hexdigest()
    items = {k: None for k in ("status", "event_type", "plugin_name", "error_code")}
    items |= {"correlation_id": None, "older_than": None, "before": None, "limit": 51}
    dead_items = items | {"status": "dead_letter"}
    session = getattr(web, "SESSION", None)
    cases: dict[str, tuple[str, dict[str, Any]]] = {
        "items: dead letter by correlation id": (
            web.ITEMS,
            dead_items | {"correlation_id": a_dead_correlation},
        ),
        "items: dead letter, unknown correlation id": (
            web.ITEMS,
            dead_items | {"correlation_id": "req-nope"},
        ),
        "items: dead letter by error code": (web.ITEMS, dead_items | {"error_code": "http_517"}),
        "items: dead letter older than 6 days": (
            web.ITEMS,
            dead_items | {"older_than": timedelta(days=6)},
        ),
        "dead letters: by error code": (
            _q.DEAD_LETTERS,
            dead | {"error_code": "http_517", "older_than": None},
        ),
        "dead letters: older than 6 days": (
            _q.DEAD_LETTERS,
            dead | {"error_code": None, "older_than": timedelta(days=6)},
        ),
        "dead letters: by code, older than 6 days": (
            _q.DEAD_LETTERS,
            dead | {"error_code": "http_517", "older_than": timedelta(days=6)},
        ),
    }
    return {name: (statement, params, session) for name, (statement, params) in cases.items()}


def _once(dsn: str, statement: str, params: dict[str, Any], session: str | None) -> float:
    # a new connection each time, set up as the dashboard sets up its own
    with connect(dsn) as conn:
        if session:
            conn.execute(session)  # type: ignore[arg-type]
        start = time.perf_counter()
        conn.execute(statement, params).fetchall()  # type: ignore[call-overload]
        return time.perf_counter() - start


def side_by_side(dsn: str, a: Case, b: Case | None, rounds: int) -> tuple[float, float | None]:
    """Median milliseconds of a and of b, alternating, after a warm-up of each."""
    runs_a: list[float] = []
    runs_b: list[float] = []
    for n in range(rounds + 1):
        ta = _once(dsn, *a)
        tb = _once(dsn, *b) if b is not None else 0.0
        if n:
            runs_a.append(ta)
            runs_b.append(tb)
    ms_b = statistics.median(runs_b) * 1000 if b is not None else None
    return statistics.median(runs_a) * 1000, ms_b


def _row(name: str, ms: float, other: float | None) -> str:
    return f"| {name} | {ms:,.1f} | " + ("-" if other is None else f"{other:,.1f}") + " |"


def measure(dsn: str, rounds: int, baseline: Path | None) -> list[str]:
    from retryq_py._sql import web

    base = _statements(baseline / "retryq_py/_sql/web.py") if baseline else None
    lines = [f"| statement | this tree, ms | {baseline or 'no baseline'}, ms |", "|---|---:|---:|"]
    ours = web_cases(web)
    theirs = web_cases(base) if base is not None else {}
    for name, case in ours.items():
        lines.append(_row(name, *side_by_side(dsn, case, theirs.get(name), rounds)))
    lines += ["", "| search | with the dead-letter indexes, ms | without, ms |", "|---|---:|---:|"]
    searches = search_cases(web)
    with_idx = {n: side_by_side(dsn, c, None, rounds)[0] for n, c in searches.items()}
    with connect(dsn) as conn:
        for index in DEAD_INDEXES:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(index)))
        conn.execute("ANALYZE _retryq_finished")
    for name, case in searches.items():
        lines.append(_row(name, with_idx[name], side_by_side(dsn, case, None, rounds)[0]))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=os.environ.get("RETRYQ_BENCH_DSN", DEFAULT_ADMIN_DSN))
    parser.add_argument("--pending", type=int, default=200_000)
    parser.add_argument("--failed-share", type=float, default=0.1)
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="a checkout whose dashboard SQL to compare")
    parser.add_argument("--dsn", help="a database this script loaded and kept (--keep)")
    parser.add_argument("--keep", action="store_true", help="keep the database, print its DSN")
    args = parser.parse_args()

    from retryq_py import migrate

    cluster = Cluster(args.database)
    try:
        if args.dsn:
            dsn = args.dsn
        else:
            db = cluster.create("dashboard")
            dsn = cluster.dsn(db)
            migrate.apply(dsn)
            start = time.perf_counter()
            load(dsn, args.pending, args.failed_share, args.finished)
            print(
                f"loaded {args.pending} active items ({args.failed_share:.0%} failed) and"
                f" {args.finished} finished in {time.perf_counter() - start:.0f} s"
            )
            if args.keep:
                print(f"kept (its dead-letter indexes are dropped at the end): {dsn}")
                cluster._made.remove(db)
        print(f"load average {os.getloadavg()[0]:.1f}, {args.rounds} rounds")
        print("\n".join(measure(dsn, args.rounds, args.baseline)))
    finally:
        cluster.drop_all()


if __name__ == "__main__":
    main()
