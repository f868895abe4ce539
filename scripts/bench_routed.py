"""A routed worker behind another service's backlog: what acquire_retry_items
and retry_queue_due cost a worker routed to event type B while --backlog due
items of type A (all older than B's) sit in the queue.

Routed calls walk the routed types' own items over _retryq_active_routed_idx
(event_type, priority, next_retry_at, id), 0017_routed_index; before it they
walked the (priority, next_retry_at, id) index past every due item of other
types. This measures a routed call against the unrouted call and a call
routed to A, on one install, each call rolled back so that every sample sees
the same queue. (--base REF runs the same on the migrations of a git ref,
e.g. main before the fix, read with `git archive` as bench_ab.py does.)

    .venv/bin/python scripts/bench_routed.py [--backlog 100000 10000] [--calls 30]
        [--base main] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ab import migrations_at
from bench_db import Cluster, write_section

from retryq_py import migrate

CASES: list[tuple[str, list[str] | None]] = [
    ("routed to B (10 due)", ["B"]),
    ("routed to C (none)", ["C"]),
    ("routed to A (the backlog)", ["A"]),
    ("unrouted", None),
]


def fill(conn: psycopg.Connection[Any], backlog: int, own: int) -> None:
    conn.execute("TRUNCATE daz_retry_queue")
    # A's items fell due over the last hour, B's just now: a routed walk in
    # due order meets every A first
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data, next_retry_at)"
        " SELECT 'A', 'p', jsonb_build_object('n', g),"
        " now() - interval '1 hour' + g * (interval '1 hour' / %s)"
        " FROM generate_series(1, %s) AS g",
        (backlog + 1, backlog),
    )
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data)"
        " SELECT 'B', 'p', jsonb_build_object('n', g) FROM generate_series(1, %s) AS g",
        (own,),
    )
    conn.execute("VACUUM ANALYZE daz_retry_queue")


def median_ms(
    conn: psycopg.Connection[Any], sql: str, types: list[str] | None, calls: int
) -> tuple[float, int]:
    times, got = [], 0
    for _ in range(calls):
        with conn.transaction(force_rollback=True):
            t0 = time.perf_counter()
            got = len(conn.execute(sql, (types,)).fetchall())
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), got


def measure(dsn: str, backlog: int, calls: int) -> list[tuple[str, float, int, float]]:
    rows = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        fill(conn, backlog, 10)
        for label, types in CASES:
            acq, leased = median_ms(
                conn,
                "SELECT id FROM acquire_retry_items('bench', 10, 300, now(), %s)",
                types,
                calls,
            )
            due, _ = median_ms(conn, "SELECT * FROM retry_queue_due(%s)", types, calls)
            rows.append((label, acq, leased, due))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    ap.add_argument("--backlog", type=int, nargs="+", default=[100_000, 10_000])
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--base", help="also measure the migrations of this git ref (e.g. main)")
    ap.add_argument("--write", type=Path, help="put the table into this markdown file")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    builds: list[tuple[str, Path | None]] = []
    if args.base:
        builds.append((args.base, migrations_at(args.base, Path(tmp.name))))
    builds.append(("this tree", None))
    cluster = Cluster(args.admin_dsn)
    results: list[tuple[str, int, list[tuple[str, float, int, float]]]] = []
    try:
        for backlog in args.backlog:
            for build, directory in builds:
                with cluster.database("routed") as dsn:
                    migrate.apply(dsn, directory=directory)
                    results.append((build, backlog, measure(dsn, backlog, args.calls)))
    finally:
        cluster.drop_all()
        tmp.cleanup()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()[:2])
    base = f" --base {args.base}" if args.base else ""
    lines = [
        "<!-- bench_routed -->",
        "### A routed worker behind another type's backlog",
        "",
        f"`.venv/bin/python scripts/bench_routed.py --backlog "
        f"{' '.join(str(b) for b in args.backlog)} --calls {args.calls}{base}`: N due items of"
        " type A (due over the last hour), 10 of type B (due now), one connection; each figure"
        " is the median of the calls, each call rolled back. Load average at the end: "
        + load
        + ".",
        "",
        "| build | backlog of A | call | acquire (batch 10) ms | leased | retry_queue_due ms |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for build, backlog, rows in results:
        for label, acq, leased, due in rows:
            lines.append(f"| {build} | {backlog:,} | {label} | {acq:.2f} | {leased} | {due:.2f} |")
    lines.append("<!-- /bench_routed -->")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "bench_routed", text)


if __name__ == "__main__":
    main()
