"""Databases for the benchmark: a template with retryq installed, cloned per
measurement, and every database the run made dropped at the end."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"

# The payload every queue gets: about the size of a failed chat message.
PAYLOAD = '{"channel": "lobby", "user": "bench", "text": "hello from the benchmark", "n": 0}'


class Cluster:
    """Creates and drops this run's databases on one server."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self._made: list[str] = []
        self._counter = itertools.count()
        self._prefix = f"retryq_bench_{os.getpid()}"

    def dsn(self, dbname: str) -> str:
        params = conninfo_to_dict(self.admin_dsn)
        params["dbname"] = dbname
        return make_conninfo(**params)

    def _admin(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(statement)

    def create(self, label: str, template: str | None = None) -> str:
        """A new empty database (or a clone of template); returns its name."""
        name = f"{self._prefix}_{next(self._counter)}_{label}"
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        self._admin(statement)
        self._made.append(name)
        return name

    def drop(self, name: str) -> None:
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if name in self._made:
            self._made.remove(name)

    def drop_all(self) -> None:
        for name in reversed(list(self._made)):
            self.drop(name)

    @contextmanager
    def database(self, label: str, template: str | None = None) -> Iterator[str]:
        """A database for one measurement, dropped afterwards; yields its DSN."""
        name = self.create(label, template)
        try:
            yield self.dsn(name)
        finally:
            self.drop(name)


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def execute(dsn: str, *statements: str) -> None:
    with connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def load_items(
    conn: psycopg.Connection[Any],
    count: int,
    *,
    due: str = "now() - interval '1 minute'",
    status: str = "pending",
    priority: int = 5,
) -> None:
    """Bulk-loads count items straight into the table (not a measured path)."""
    if count <= 0:
        return
    finished = status in ("completed", "dead_letter")
    conn.execute(
        f"""
        INSERT INTO daz_retry_queue (
            event_type, channel_name, plugin_name, event_data, event_metadata,
            priority, correlation_id, tags, status, created_at, next_retry_at,
            completed_at
        )
        SELECT 'bench.noop', 'lobby', 'bench',
            jsonb_set('{PAYLOAD}'::jsonb, '{{n}}', to_jsonb(g)),
            '{{"retry_reason": "initial_failure"}}', {priority},
            'corr-' || g, ARRAY['bench', 'lobby'], '{status}',
            {due}, {due}, {"now()" if finished else "NULL"}
        FROM generate_series(1, {count}) AS g
        """  # type: ignore[arg-type]
    )


def vacuum_analyze(dsn: str, tables: Sequence[str] = ()) -> None:
    """What autovacuum would do after a bulk load (the server may have it off)."""
    with connect(dsn) as conn:
        if tables:
            for table in tables:
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        else:
            conn.execute("VACUUM (ANALYZE)")


def settle(dsn: str) -> None:
    """CHECKPOINT before a timed run, so that no run pays for the dirty pages
    and full-page WAL images that the load before it (or an earlier run) left
    behind. Skipped for a role that may not run it."""
    with connect(dsn) as conn, suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


def run_threads(
    count: int, body: Callable[[int, threading.Barrier], Any]
) -> tuple[float, list[Any]]:
    """Runs body(i, barrier) in count threads; each calls barrier.wait() when
    ready. Returns the seconds from the barrier to the last thread's end."""
    barrier = threading.Barrier(count + 1)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def wrap(i: int) -> None:
        try:
            results[i] = body(i, barrier)
        except BaseException as exc:  # reported below, after every thread ends
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=wrap, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    # a thread that failed before the barrier breaks it: its error is raised below
    with suppress(threading.BrokenBarrierError):
        barrier.wait(timeout=60)
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed, results


def write_section(path: Path, name: str, text: str) -> None:
    """Replaces the <!-- name --> ... <!-- /name --> section of path with text
    (which carries the markers), or appends it; scripts/bench keeps such
    sections when it rewrites the file."""
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[: old.index(begin)] + text + old[old.index(end) + len(end) :]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)
