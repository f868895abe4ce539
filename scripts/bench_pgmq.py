"""pgmq side by side with retryq's SQL API (issue 15): the same drain loop
(4 threads, one connection each) and the same enqueue batch size, through
pgmq's own SQL functions.

pgmq is loaded from the SQL script that PyPI's `pgmq` package ships
(`pgmq/sql/pgmq.sql`, the extension's install script for SQL-only installs),
read at run time from the installed package; nothing of it is copied into this
repository. The script needs no change to load outside an extension: it
creates the `pgmq` schema itself when no `pgmq` extension exists and skips the
extension-only steps (`pg_extension_config_dump`). It runs in one transaction,
as the package's own installer does.
"""

from __future__ import annotations

import json
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import Any

from bench_db import PAYLOAD, Cluster, connect, run_threads, settle, vacuum_analyze

QUEUE = "bench"
QUEUE_TABLE = "q_bench"
WORKERS = 4
VT = 300  # seconds a read message stays invisible: retryq's lease in the drain


def install_sql() -> str:
    """pgmq's install script from the installed package (ImportError when the
    package is missing, so the bench reports it as not installed)."""
    return files("pgmq").joinpath("sql", "pgmq.sql").read_text(encoding="utf-8")


def versions() -> dict[str, str | None]:
    """The PyPI package's version and the pgmq SQL version it ships."""
    try:
        package = version("pgmq")
    except PackageNotFoundError:
        return {"pgmq": None}
    try:
        pinned = files("pgmq").joinpath("sql", "VERSION").read_text().strip()
    except (OSError, ModuleNotFoundError):
        pinned = "?"
    return {"pgmq": f"{pinned} (SQL from PyPI's pgmq {package}, pgmq/sql/pgmq.sql)"}


def install(dsn: str) -> None:
    """Loads pgmq into the database and creates the bench queue (a logged,
    unpartitioned queue: pgmq's default)."""
    script = install_sql()
    with connect(dsn) as conn:
        with conn.transaction():
            conn.execute(script)  # type: ignore[arg-type]
        conn.execute("SELECT pgmq.create(%s)", (QUEUE,))


def load_messages(dsn: str, count: int) -> None:
    """count visible messages with the bench payload (not a measured path),
    then VACUUM ANALYZE as autovacuum would after a bulk load."""
    with connect(dsn) as conn:
        for start in range(0, count, 10_000):
            n = min(10_000, count - start)
            conn.execute(
                f"""
                SELECT count(*) FROM pgmq.send_batch(%s, ARRAY(
                    SELECT jsonb_set('{PAYLOAD}'::jsonb, '{{n}}', to_jsonb(g))
                    FROM generate_series(%s::int, %s::int) AS g
                ))
                """,  # type: ignore[arg-type]
                (QUEUE, start + 1, start + n),
            )
    vacuum_analyze(dsn, [])


def drain(
    cluster: Cluster, items: int, batch: int, per_item: bool, workers: int = WORKERS
) -> float:
    """Messages per second for `workers` threads draining the queue with
    pgmq.read(batch) and pgmq.delete per message (per_item) or
    pgmq.delete(bigint[]) once a batch."""
    with cluster.database("pgmq") as dsn:
        install(dsn)
        load_messages(dsn, items)
        settle(dsn)

        def work(i: int, barrier: threading.Barrier) -> int:
            done = 0
            with connect(dsn) as conn:
                barrier.wait()
                while True:
                    rows = conn.execute(
                        "SELECT msg_id FROM pgmq.read(%s, %s, %s)", (QUEUE, VT, batch)
                    ).fetchall()
                    if not rows:
                        return done
                    if per_item:
                        for (msg_id,) in rows:
                            conn.execute("SELECT pgmq.delete(%s, %s::bigint)", (QUEUE, msg_id))
                    else:
                        conn.execute(
                            "SELECT count(*) FROM pgmq.delete(%s, %s::bigint[])",
                            (QUEUE, [r[0] for r in rows]),
                        )
                    done += len(rows)

        elapsed, counts = run_threads(workers, work)
        with connect(dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM pgmq.{QUEUE_TABLE}").fetchone()  # type: ignore[arg-type]
        if sum(counts) != items or row is None or row[0] != 0:
            raise RuntimeError(f"pgmq drain: {sum(counts)} read, {row} left of {items}")
        return items / elapsed


def message(n: int) -> dict[str, Any]:
    """The bench payload as one pgmq message."""
    return dict(json.loads(PAYLOAD), n=n)


def enqueue_batch(cluster: Cluster, items: int, chunk: int) -> float:
    """Messages per second for pgmq.send_batch, chunk messages per call (one
    transaction each), the messages passed as one jsonb[] parameter."""
    from psycopg.types.json import Jsonb

    with cluster.database("pgmq_send", None) as dsn:
        install(dsn)
        batches = [
            [message(n) for n in range(s, min(s + chunk, items))] for s in range(0, items, chunk)
        ]
        with connect(dsn) as conn:
            start = time.perf_counter()
            for batch in batches:
                conn.execute(
                    "SELECT count(*) FROM pgmq.send_batch(%s, %s::jsonb[])",
                    (QUEUE, [Jsonb(m) for m in batch]),
                )
            elapsed = time.perf_counter() - start
            row = conn.execute(f"SELECT count(*) FROM pgmq.{QUEUE_TABLE}").fetchone()  # type: ignore[arg-type]
        if row is None or row[0] != items:
            raise RuntimeError(f"pgmq send_batch: {row} messages of {items}")
        return items / elapsed
