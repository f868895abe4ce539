"""How much one `retryq metrics` scrape costs with a million finished rows,
next to the count(*) it avoids.

Loads --finished rows (completed, plus --dead dead letters) and --active
pending items into a fresh database, ANALYZEs as autovacuum would, then times
side by side: ops.collect_queue_metrics (what a scrape runs), a full
`SELECT count(*) FROM daz_retry_queue`, and the guide's per-status GROUP BY.
Also times a scrape before the first ANALYZE (the sampled path).

    .venv/bin/python scripts/bench_metrics_scrape.py [--finished 1000000] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from retryq_py import migrate, ops

BEGIN, END = "<!-- bench_metrics_scrape -->", "<!-- /bench_metrics_scrape -->"


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    """Median and max wall time in milliseconds over `runs` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def load(conn: psycopg.Connection[Any], finished: int, dead: int, active: int) -> None:
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data, status,"
        " completed_at, created_at)"
        " SELECT 'chat.send', 'chat', jsonb_build_object('n', g, 'text', 'hello there'),"
        " 'completed', now() - interval '1 hour', now() - interval '2 hours'"
        " FROM generate_series(1, %s) AS g",
        (finished - dead,),
    )
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data, status,"
        " dead_lettered_at, last_error_code)"
        " SELECT 'sql.exec.failed', 'sql', jsonb_build_object('n', g), 'dead_letter',"
        " now() - interval '1 hour', 'E' || (g %% 5)"
        " FROM generate_series(1, %s) AS g",
        (dead,),
    )
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data, priority)"
        " SELECT 'chat.send', 'chat', jsonb_build_object('n', g), 1 + g %% 10"
        " FROM generate_series(1, %s) AS g",
        (active,),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    ap.add_argument("--finished", type=int, default=1_000_000)
    ap.add_argument("--dead", type=int, default=2_000)
    ap.add_argument("--active", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--write", type=Path, help="Put the table into this markdown file.")
    args = ap.parse_args()

    name = f"retryq_bench_scrape_{os.getpid()}"
    params = conninfo_to_dict(args.admin_dsn)
    dsn = make_conninfo(**{**params, "dbname": name})
    with psycopg.connect(args.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        migrate.apply(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            load(conn, args.finished, args.dead, args.active)
            print(f"loaded {args.finished} finished + {args.active} active rows "
                  f"in {time.perf_counter() - started:.1f} s")
            # never analyzed: the first SAMPLE_PAGES pages are counted and scaled
            m0 = ops.collect_queue_metrics(conn)
            before = timed(lambda: ops.collect_queue_metrics(conn), args.runs)
            conn.execute("VACUUM ANALYZE daz_retry_queue")
            m = ops.collect_queue_metrics(conn)
            scrape = timed(lambda: ops.collect_queue_metrics(conn), args.runs)
            full = timed(lambda: conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone(),
                         args.runs)
            by_status = timed(
                lambda: conn.execute(
                    "SELECT status, count(*) FROM daz_retry_queue GROUP BY status"
                ).fetchall(),
                args.runs,
            )
            row = conn.execute("SELECT count(*) FROM daz_retry_queue WHERE status = 'completed'")
            exact = row.fetchone()
            version = conn.info.server_version
    finally:
        with psycopg.connect(args.admin_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))

    completed_exact = int(exact[0]) if exact else 0
    err = abs(m.sizes["completed"] - completed_exact) / max(completed_exact, 1) * 100
    lines = [
        BEGIN,
        "### Metrics scrape with a million finished rows",
        "",
        f"`.venv/bin/python scripts/bench_metrics_scrape.py --finished {args.finished}` "
        f"(PostgreSQL {version // 10000}, {args.finished:,} finished rows of which "
        f"{args.dead:,} dead letters, {args.active:,} pending; median / max of {args.runs} "
        "runs, one connection, warm cache).",
        "",
        "| what | median ms | max ms |",
        "| --- | ---: | ---: |",
        f"| one scrape (`ops.collect_queue_metrics`), after ANALYZE | {scrape[0]:.1f} | "
        f"{scrape[1]:.1f} |",
        f"| one scrape before the first ANALYZE (sampled) | {before[0]:.1f} | "
        f"{before[1]:.1f} |",
        f"| `SELECT count(*) FROM daz_retry_queue` | {full[0]:.1f} | {full[1]:.1f} |",
        f"| `SELECT status, count(*) ... GROUP BY status` | {by_status[0]:.1f} | "
        f"{by_status[1]:.1f} |",
        "",
        f"Scrape / count(*): {scrape[0] / full[0]:.3f}. Completed as exported: "
        f"{m.sizes['completed']:,.0f} (exact {completed_exact:,}, off by {err:.2f} %); "
        f"before ANALYZE: {m0.sizes['completed']:,.0f} (the first {ops.SAMPLE_PAGES:,} pages "
        "counted and scaled). Pending, processing and dead letters are exact.",
        END,
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        old = args.write.read_text() if args.write.exists() else "# Benchmarks\n"
        if BEGIN in old and END in old:
            new = old[: old.index(BEGIN)] + text + old[old.index(END) + len(END):]
        else:
            new = old.rstrip("\n") + "\n\n" + text + "\n"
        args.write.write_text(new)


if __name__ == "__main__":
    main()
