"""Worker processes for tests/python/test_crash.py.

    crash_worker.py DSN WORKER_ID LEASE_SECONDS BATCH
A bare loop over acquire -> handler -> complete/fail on its own connection,
until the queue is empty. Each handled item's effect is a row in `effects`,
written in the same transaction as complete_retry_item: the effect exists if
and only if the completion committed.

    crash_worker.py --retry-worker DSN WORKER_ID LEASE_SECONDS BATCH
The same handlers under retryq_py.RetryWorker (run until idle, signals
installed). RetryWorker acknowledges after the handler returns, so its
effects are written by the handler on their own: at least once.

    crash_worker.py --async-retry-worker DSN WORKER_ID LEASE_SECONDS BATCH
The same again under retryq_py.AsyncRetryWorker, with coroutine handlers,
in asyncio.run (signal handlers on the loop).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import psycopg


def handle(conn: psycopg.Connection[Any], worker: str, item: int, data: Any, tries: int) -> None:
    time.sleep(0.005)  # the handler's work, so that kills land mid-batch
    kind = data["kind"]
    if kind == "permanent":
        conn.execute("SELECT fail_retry_item(%s, %s, 'bad item', 'P', false)", [item, worker])
    elif kind == "hopeless" or (kind == "flaky" and tries < data["fails"]):
        conn.execute("SELECT fail_retry_item(%s, %s, 'try again', 'T')", [item, worker])
    else:
        with conn.transaction():
            conn.execute("INSERT INTO effects (item_id, worker_id) VALUES (%s, %s)", [item, worker])
            row = conn.execute("SELECT complete_retry_item(%s, %s)", [item, worker]).fetchone()
            if not (row and row[0]):
                raise psycopg.Rollback()  # lost the lease: the effect must not stay


def drain(conn: psycopg.Connection[Any], worker: str, lease: int, batch: int) -> None:
    while True:
        items = conn.execute(
            "SELECT id, event_data, retry_count FROM acquire_retry_items(%s, %s, %s)",
            [worker, batch, lease],
        ).fetchall()
        if not items:
            row = conn.execute("SELECT count(*) FROM _retryq_active").fetchone()
            if row == (0,):
                return
            time.sleep(0.05)  # idle: a dead worker's lease expires in real time
        for item, data, tries in items:
            handle(conn, worker, item, data, tries)


def outcome(item: Any) -> None:
    """Raises what the item's kind asks for; returns when it succeeds."""
    from retryq_py.errors import PermanentError, RetryableError

    data = item.event_data
    if data["kind"] == "poison":  # a text PostgreSQL cannot store as given
        raise RetryableError("poison\x00 \udcff", code="P\x00" + "x" * 5000)
    if data["kind"] == "permanent":
        raise PermanentError("bad item")
    if data["kind"] == "hopeless" or (data["kind"] == "flaky" and item.retry_count < data["fails"]):
        raise RuntimeError("try again")


def worker_options(worker: str, lease: int, batch: int) -> dict[str, Any]:
    return {
        "worker_id": worker,
        "lock_timeout": lease,
        "batch_size": batch,
        "worker_count": 2,
        "poll_interval": 0.2,
        "grace_period": 5,
        "cleanup_interval": 3600,
    }


# the effect goes straight to the database (CRASH_EFFECTS_DSN), even when the
# worker's own connections go through a test's proxy
EFFECT = "INSERT INTO effects (item_id, worker_id) VALUES (%s, %s)"


def retry_worker(dsn: str, worker: str, lease: int, batch: int) -> int:
    from retryq_py.worker import RetryWorker

    def handler(item: Any) -> None:
        time.sleep(0.01)  # the handler's work
        outcome(item)
        with psycopg.connect(os.environ.get("CRASH_EFFECTS_DSN", dsn), autocommit=True) as conn:
            conn.execute(EFFECT, [item.id, worker])

    w = RetryWorker(dsn, {"crash": handler}, **worker_options(worker, lease, batch))
    w.run(exit_when_drained=True, install_signal_handlers=True)
    return 0


def async_retry_worker(dsn: str, worker: str, lease: int, batch: int) -> int:
    import asyncio

    from retryq_py.worker import AsyncRetryWorker

    async def handler(item: Any) -> None:
        await asyncio.sleep(0.01)  # the handler's work
        outcome(item)
        effects = os.environ.get("CRASH_EFFECTS_DSN", dsn)
        async with await psycopg.AsyncConnection.connect(effects, autocommit=True) as conn:
            await conn.execute(EFFECT, [item.id, worker])

    w = AsyncRetryWorker(dsn, {"crash": handler}, **worker_options(worker, lease, batch))
    asyncio.run(w.run(exit_when_drained=True, install_signal_handlers=True))
    return 0


def main() -> int:
    if sys.argv[1] in ("--retry-worker", "--async-retry-worker"):
        import logging

        # the worker's warnings with the time and the thread: a failure of a
        # crash test is read against the queue's timestamps
        logging.basicConfig(
            level=logging.WARNING,
            format="%(asctime)s.%(msecs)03d %(threadName)s %(message)s",
            datefmt="%H:%M:%S",
        )
        dsn, worker, lease, batch = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        run = retry_worker if sys.argv[1] == "--retry-worker" else async_retry_worker
        return run(dsn, worker, lease, batch)
    dsn, worker, lease, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True, application_name=f"crash-{worker}") as conn:
                conn.execute("SET lock_timeout = '2s'")
                drain(conn, worker, lease, batch)
                return 0
        except psycopg.OperationalError:
            # backend terminated: reconnect; the batch in hand is abandoned and
            # its leases expire like a crashed worker's
            continue


if __name__ == "__main__":
    sys.exit(main())
