"""Measurements through the SQL API: drain (a), its harness ceiling (b),
enqueue (d), acquire latency as the backlog grows (e) and size after churn (f)."""

from __future__ import annotations

import json
import re
import statistics
import threading
import time
from typing import Any

from bench_db import PAYLOAD, Cluster, connect, load_items, run_threads, settle, vacuum_analyze

WORKERS = 4
TABLES = ("_retryq_active", "_retryq_finished")

# The integration guide's INSERT, verbatim but for psycopg's placeholders.
GUIDE_INSERT = re.sub(
    r"\$\d+",
    "%s",
    """
        INSERT INTO daz_retry_queue (
            event_type, channel_name, plugin_name, event_data,
            event_metadata, max_retries, retry_delay_seconds,
            backoff_multiplier, priority, correlation_id, tags
        ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        RETURNING id, event_id;
    """,
)


# What complete_retry_item does to the tables, as one plain statement: the
# move from the active to the finished partition, without the function.
RAW_MOVE = """
WITH gone AS (
    DELETE FROM _retryq_active AS a
    WHERE a.id = %s AND a.status = 'processing' AND a.locked_by = %s
    RETURNING a.*
)
INSERT INTO _retryq_finished
SELECT g.id, g.event_id, g.event_type, g.channel_name, g.plugin_name, g.event_data,
    g.event_metadata, g.retry_count, g.max_retries, g.retry_delay_seconds,
    g.backoff_multiplier, g.max_retry_delay_seconds, g.retry_jitter, g.priority,
    g.correlation_id, g.tags, 'completed', g.error_message, g.last_error_code,
    g.error_history, g.created_at, g.next_retry_at, g.last_attempted_at, now(),
    NULL, NULL, NULL
FROM gone AS g
"""


def drain(
    cluster: Cluster,
    template: str,
    items: int,
    batch: int,
    per_item: bool,
    raw: bool = False,
    workers: int = WORKERS,
) -> float:
    """Items per second for `workers` threads (WORKERS by default) draining
    items through acquire and complete_retry_item (per_item) or
    complete_retry_items (one call a batch).
    raw: per item, RAW_MOVE instead of complete_retry_item (the floor of the
    per-item path: what the move itself costs)."""
    complete = RAW_MOVE if raw else "SELECT complete_retry_item(%s, %s)"
    with cluster.database("drain", template) as dsn:
        with connect(dsn) as conn:
            load_items(conn, items)
        vacuum_analyze(dsn, TABLES)
        settle(dsn)

        def work(i: int, barrier: threading.Barrier) -> int:
            worker = f"bench-{i}"
            done = 0
            with connect(dsn) as conn:
                barrier.wait()
                while True:
                    rows = conn.execute(
                        "SELECT id FROM acquire_retry_items(%s, %s, 300)", (worker, batch)
                    ).fetchall()
                    if not rows:
                        return done
                    if per_item:
                        for (item_id,) in rows:
                            conn.execute(complete, (item_id, worker))  # type: ignore[arg-type]
                    else:
                        conn.execute(
                            "SELECT complete_retry_items(%s, %s)", ([r[0] for r in rows], worker)
                        )
                    done += len(rows)

        elapsed, counts = run_threads(workers, work)
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM daz_retry_queue WHERE status = 'completed'"
            ).fetchone()
        if sum(counts) != items or row is None or row[0] != items:
            raise RuntimeError(f"drain: {sum(counts)} acquired, {row} completed of {items}")
        return items / elapsed


def ceiling(cluster: Cluster, items: int, batch: int) -> float:
    """The same loop with the queue taken out: each batch one trivial SELECT
    handing out ids, each item one trivial single-row UPDATE in its own commit."""
    with cluster.database("ceiling") as dsn:
        with connect(dsn) as conn:
            conn.execute("CREATE TABLE bench_ceiling (id bigint PRIMARY KEY, n integer NOT NULL)")
            conn.execute(
                "INSERT INTO bench_ceiling SELECT g, 0 FROM generate_series(1, %s) AS g", (items,)
            )
        vacuum_analyze(dsn, ["bench_ceiling"])
        settle(dsn)
        lock = threading.Lock()
        next_id = [1]

        def take() -> tuple[int, int]:
            with lock:
                first = next_id[0]
                last = min(first + batch - 1, items)
                next_id[0] = last + 1
                return first, last

        def work(i: int, barrier: threading.Barrier) -> int:
            done = 0
            with connect(dsn) as conn:
                barrier.wait()
                while True:
                    first, last = take()
                    rows = conn.execute(
                        "SELECT generate_series(%s::bigint, %s::bigint)", (first, last)
                    ).fetchall()
                    if not rows:
                        return done
                    for (item_id,) in rows:
                        conn.execute("UPDATE bench_ceiling SET n = n + 1 WHERE id = %s", (item_id,))
                    done += len(rows)

        elapsed, counts = run_threads(WORKERS, work)
        if sum(counts) != items:
            raise RuntimeError(f"ceiling: {sum(counts)} of {items}")
        return items / elapsed


def _guide_params(n: int) -> tuple[Any, ...]:
    return (
        "bench.noop",
        "lobby",
        "bench",
        PAYLOAD.replace('"n": 0', f'"n": {n}'),
        '{"retry_reason": "initial_failure"}',
        3,
        60,
        2.0,
        5,
        f"corr-{n}",
        ["bench", "lobby"],
    )


def enqueue_single(cluster: Cluster, template: str, items: int) -> float:
    """Items per second for the guide's INSERT, one transaction each."""
    with cluster.database("insert", template) as dsn, connect(dsn) as conn:
        params = [_guide_params(n) for n in range(items)]
        start = time.perf_counter()
        for p in params:
            conn.execute(GUIDE_INSERT, p).fetchone()  # type: ignore[arg-type]
        return items / (time.perf_counter() - start)


def _new_item(n: int) -> dict[str, Any]:
    """The same item as _guide_params(n), in add_many's keyword names."""
    return {
        "event_type": "bench.noop",
        "channel": "lobby",
        "plugin": "bench",
        "data": json.loads(PAYLOAD.replace('"n": 0', f'"n": {n}')),
        "metadata": {"retry_reason": "initial_failure"},
        "correlation_id": f"corr-{n}",
        "tags": ["bench", "lobby"],
    }


def enqueue_many(cluster: Cluster, template: str, items: int, chunk: int) -> float:
    """Items per second for RetryQueue.add_many, chunk items per call (one
    transaction each)."""
    from retryq_py import RetryQueue

    with cluster.database("add_many", template) as dsn, connect(dsn) as conn:
        queue = RetryQueue(conn)
        batches = [
            [_new_item(n) for n in range(s, min(s + chunk, items))] for s in range(0, items, chunk)
        ]
        start = time.perf_counter()
        for batch in batches:
            queue.add_many(batch)
        elapsed = time.perf_counter() - start
        row = conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone()
        if row is None or row[0] != items:
            raise RuntimeError(f"add_many: {row} rows of {items}")
        return items / elapsed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _acquire_samples(dsn: str, samples: int) -> list[float]:
    """Milliseconds per acquire_retry_items(batch 10), in steady state: each
    sample's items are completed and as many new due items added (untimed)."""
    out: list[float] = []
    with connect(dsn) as conn:
        for _ in range(samples):
            start = time.perf_counter()
            rows = conn.execute("SELECT id FROM acquire_retry_items('lat', 10, 300)").fetchall()
            out.append((time.perf_counter() - start) * 1000)
            if len(rows) != 10:
                raise RuntimeError(f"acquire latency: got {len(rows)} items, expected 10")
            conn.execute("SELECT complete_retry_items(%s, 'lat')", ([r[0] for r in rows],))
            load_items(conn, 10, due="now() - interval '1 second'")
    return out


def acquire_latency(
    cluster: Cluster, template: str, dues: list[int], retained: int, samples: int, rounds: int
) -> dict[str, dict[str, float]]:
    """p50/p99 acquire latency with each backlog in dues, and with dues[0] due
    plus `retained` completed items not yet cleaned up. Each backlog lives in
    its own database, all loaded first; then each round takes `samples` from
    every backlog in turn, so they are compared side by side. Per backlog: the
    median of the rounds' percentiles."""
    small = min(dues)
    setups = [(f"{d} due", d, 0) for d in sorted(dues)]
    setups.append((f"{small} due + {retained} retained", small, retained))
    names: dict[str, str] = {}
    try:
        for key, due, kept in setups:
            name = cluster.create("latency", template)
            names[key] = name
            dsn = cluster.dsn(name)
            with connect(dsn) as conn:
                if kept:
                    load_items(conn, kept, status="completed", due="now() - interval '1 hour'")
                # older than every item the samples add, so these are taken first
                load_items(conn, due, due="now() - interval '1 day'")
            vacuum_analyze(dsn, TABLES)
            _acquire_samples(dsn, 20)  # warm the plan cache and the pages
        p50s: dict[str, list[float]] = {k: [] for k in names}
        p99s: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(rounds):
            for key, name in names.items():
                lat = _acquire_samples(cluster.dsn(name), samples)
                p50s[key].append(_pct(lat, 0.5))
                p99s[key].append(_pct(lat, 0.99))
        return {
            k: {"p50": statistics.median(p50s[k]), "p99": statistics.median(p99s[k])} for k in names
        }
    finally:
        for name in names.values():
            cluster.drop(name)


def _sizes(dsn: str) -> dict[str, Any]:
    """Bytes of the queue's tables and their indexes, in all and per relation."""
    with connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid)
            FROM pg_class AS c
            WHERE c.relname IN (
                    '_retryq_active', '_retryq_finished', '_retryq_completed',
                    '_retryq_dead_cancelled', 'daz_retry_queue_archive'
                )
                -- since 0034 the finished partition is two leaves (its own size 0)
                AND c.relkind = 'r'
                AND c.relnamespace = 'public'::regnamespace
            ORDER BY c.relname
            """
        ).fetchall()
    table = sum(r[1] for r in rows)
    index = sum(r[2] for r in rows)
    return {
        "table": table,
        "index": index,
        "total": table + index,
        "relations": {r[0]: {"table": r[1], "index": r[2]} for r in rows},
    }


def _autovacuum_due(dsn: str) -> list[str]:
    """The tables autovacuum would pick now: dead tuples past its threshold,
    computed from the server's settings and each table's reloptions."""
    with connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT s.relname
            FROM pg_stat_user_tables AS s
            JOIN pg_class AS c ON c.oid = s.relid
            CROSS JOIN LATERAL (
                SELECT
                    coalesce((SELECT split_part(o, '=', 2)::float8 FROM unnest(c.reloptions) AS o
                        WHERE o LIKE 'autovacuum_vacuum_scale_factor=%'),
                        current_setting('autovacuum_vacuum_scale_factor')::float8) AS sf,
                    coalesce((SELECT split_part(o, '=', 2)::float8 FROM unnest(c.reloptions) AS o
                        WHERE o LIKE 'autovacuum_vacuum_threshold=%'),
                        current_setting('autovacuum_vacuum_threshold')::float8) AS th
            ) AS o
            WHERE s.relname IN (
                    '_retryq_active', '_retryq_finished', '_retryq_completed',
                    '_retryq_dead_cancelled'
                )
                AND s.n_dead_tup > o.th + o.sf * greatest(c.reltuples, 0)
            """
        ).fetchall()
    return [r[0] for r in rows]


def churn_size(
    cluster: Cluster, template: str, live: int, churn: int, round_items: int
) -> dict[str, Any]:
    """Table + index bytes after `churn` items went through enqueue, completion
    and cleanup next to `live` pending items, vs those live items loaded fresh."""
    out: dict[str, Any] = {}
    with cluster.database("fresh", template) as dsn:
        with connect(dsn) as conn:
            load_items(conn, live, due="now() + interval '1 day'")
        vacuum_analyze(dsn, TABLES)
        out["fresh"] = _sizes(dsn)
    with cluster.database("churn", template) as dsn:
        with connect(dsn) as conn:
            load_items(conn, live, due="now() + interval '1 day'")
        vacuum_analyze(dsn, TABLES)
        vacuums = 0
        start = time.perf_counter()
        left = churn
        while left > 0:
            n = min(round_items, left)
            left -= n
            docs = [
                json.dumps([{"event_type": "bench.noop", "event_data": {"n": k}}] * 500)
                for k in range(n // 500)
            ]
            if n % 500:
                docs.append(
                    json.dumps([{"event_type": "bench.noop", "event_data": {}}] * (n % 500))
                )
            with connect(dsn) as conn:
                for d in docs:
                    conn.execute("SELECT count(*) FROM enqueue_retry_items(%s::jsonb)", (d,))

            def work(i: int, barrier: threading.Barrier) -> int:
                done = 0
                with connect(dsn) as conn:
                    barrier.wait()
                    while True:
                        rows = conn.execute(
                            "SELECT id FROM acquire_retry_items(%s, 100, 300)", (f"churn-{i}",)
                        ).fetchall()
                        if not rows:
                            return done
                        conn.execute(
                            "SELECT complete_retry_items(%s, %s)",
                            ([r[0] for r in rows], f"churn-{i}"),
                        )
                        done += len(rows)

            _, counts = run_threads(WORKERS, work)
            if sum(counts) != n:
                raise RuntimeError(f"churn: drained {sum(counts)} of {n}")
            with connect(dsn) as conn:
                conn.execute("SELECT * FROM cleanup_retry_queue(0)")
            due = _autovacuum_due(dsn)
            if due:
                vacuum_analyze(dsn, due)
                vacuums += len(due)
        out["churn_seconds"] = time.perf_counter() - start
        # the last round's leftovers, as the next autovacuum pass would see them
        due = _autovacuum_due(dsn)
        if due:
            vacuum_analyze(dsn, due)
            vacuums += len(due)
        out["vacuums"] = vacuums
        with connect(dsn) as conn:
            row = conn.execute("SELECT count(*) FROM daz_retry_queue").fetchone()
        if row is None or row[0] != live:
            raise RuntimeError(f"churn: {row} rows left, expected {live}")
        out["churned"] = _sizes(dsn)
    return out
