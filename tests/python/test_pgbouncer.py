"""Behind PgBouncer in transaction mode (issue 13, item 5): the worker, the
queue clients, the CLI and `retryq metrics` work through it, and the worker's
LISTEN, which the pooler cannot carry, falls back to polling.

Before: the worker raised "prepared statement _pg3_0 does not exist" (or
"already exists") after a few items, `retryq worker` exited 1, and the
metrics scrape failed after its fifth read of the same statements.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from retryq_py import AsyncRetryQueue, RetryQueue, RetryQueueItem
from retryq_py._sql import Due
from retryq_py.admin import serve_metrics
from retryq_py.admin.target import target
from retryq_py.worker import WorkerParts
from tests.helpers import statuses, wait_until
from tests.python import pooler
from tests.python.workers import WORKERS, WorkerType

if not pooler.available():
    if os.environ.get("RETRYQ_TEST_PGBOUNCER"):
        raise RuntimeError(f"RETRYQ_TEST_PGBOUNCER={pooler.BINARY}: no such program")
    pytest.skip(
        "Debian's pgbouncer is not installed (.ci/run installs it)", allow_module_level=True
    )

Conn = psycopg.Connection[Any]
RETRYQ = Path(sys.executable).with_name("retryq")


@pytest.fixture(scope="module")
def bouncer(module_dsn: str) -> Iterator[str]:
    """The module's database, through a PgBouncer in transaction mode."""
    with pooler.pgbouncer(module_dsn) as params:
        yield make_conninfo(module_dsn, **params)


@pytest.fixture(params=list(WORKERS))
def Worker(request: pytest.FixtureRequest) -> WorkerType:
    """Both workers, neither `server_agnostic` (unlike tests/python/conftest.py's):
    the pooler needs the server on TCP, so on the embedded server (a socket), the
    pass that runs the agnostic tests, these skip; both run on the local one."""
    return WORKERS[request.param]


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        yield conn


def test_the_worker_drains_through_the_pooler_and_polls_instead_of_listening(
    Worker: WorkerType, bouncer: str, db: Conn, caplog: pytest.LogCaptureFixture
) -> None:
    q = RetryQueue(db)
    q.add_many([{"event_type": "e", "data": i} for i in range(40)])
    ran: list[int] = []
    lock = threading.Lock()

    def handle(it: RetryQueueItem) -> None:
        with lock:
            ran.append(it.id)

    caplog.set_level(logging.INFO, "retryq.worker")
    dues = threading.Semaphore(0)

    class Watched(RetryQueue):
        def due(self, **routing: Any) -> Due:
            dues.release()  # asked each time a lane goes idle
            return super().due(**routing)

    worker = Worker(
        bouncer,
        {"e": handle},
        batch_size=3,
        poll_interval=0.1,
        lock_timeout=5,
        cleanup_interval=0.3,
        max_backoff=0.2,
        parts=WorkerParts(queue=lambda pool, schema: Watched(pool, schema=schema)),
    )
    thread = worker.start()
    try:
        wait_until(lambda: len(ran) >= 40, 20, "the first 40 items")
        for _ in range(12):  # idle polls, past psycopg's prepare_threshold (5)
            assert dues.acquire(timeout=10)
        wait_until(
            lambda: any(
                "LISTEN" in r.getMessage() and "polling" in r.getMessage() for r in caplog.records
            ),
            10,
            "the listener to say it polls",
        )
        # enqueued after the listener gave up: found by the poll
        q.add_many([{"event_type": "e", "data": i} for i in range(10)])
        wait_until(lambda: len(ran) >= 50 or not thread.is_alive(), 10, "the items enqueued later")
    finally:
        worker.stop()
        thread.join(15)
    assert not thread.is_alive()
    assert statuses(db) == {"completed": 50}
    assert worker.counts.processed == 50
    errors = [r.getMessage() for r in caplog.records if "prepared statement" in r.getMessage()]
    assert errors == []


def test_the_async_client_through_the_pooler(bouncer: str, db: Conn) -> None:
    """The README's setting: a pool that prepares nothing."""

    async def main() -> None:
        async with AsyncConnectionPool(
            bouncer, kwargs={"prepare_threshold": None}, min_size=1, max_size=2, open=False
        ) as pool:
            q = AsyncRetryQueue(pool)
            for i in range(12):  # past psycopg's default prepare_threshold (5)
                await q.add("e", {"i": i})
            for _ in range(6):
                items = await q.acquire("w", 2, 30)
                assert await q.complete_many([i.id for i in items], "w") == len(items)
                await q.due()
            assert await q.try_cleanup(7) is not None

    asyncio.run(main())
    assert statuses(db) == {"completed": 12}


def cli(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_")}
    env["RETRYQ_DATABASE_URL"] = dsn
    argv = [str(RETRYQ)] if RETRYQ.exists() else [sys.executable, "-m", "retryq_py.cli"]
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=120)


def test_retryq_worker_and_the_cli_through_the_pooler(bouncer: str, db: Conn) -> None:
    """The issue's example: `retryq worker` exited 1 after 9 of 15 items."""
    RetryQueue(db).add_many([{"event_type": "ok", "data": i} for i in range(15)])
    done = cli(
        "worker",
        "--handlers",
        "tests.python.worker_handlers:HANDLERS",
        "--exit-when-idle",
        dsn=bouncer,
    )
    assert done.returncode == 0, done.stderr
    assert statuses(db) == {"completed": 15}
    for _ in range(3):
        stats = cli("stats", dsn=bouncer)
        assert stats.returncode == 0, stats.stderr


def test_retryq_metrics_through_the_pooler(bouncer: str, db: Conn) -> None:
    RetryQueue(db).add("e", {})
    stop = threading.Event()
    ports: list[int] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            serve_metrics(target(bouncer), 0, "127.0.0.1", stop, ports.append)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        wait_until(lambda: bool(ports) or bool(errors), 10, "the metrics server")
        assert not errors, errors
        for _ in range(8):  # past the prepare threshold of the collector's connection
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/metrics", timeout=10) as r:
                body = r.read().decode()
            assert "retryq_queue_up 1.0" in body, body[-2000:]
    finally:
        stop.set()
        thread.join(10)
