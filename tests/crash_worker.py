"""A bare worker process for tests/test_crash.py: a plain loop over acquire ->
handler -> complete/fail on its own connection, until the queue is empty.

Each handled item's effect is a row in `effects`, written in the same
transaction as complete_retry_item: the effect exists if and only if the
completion committed. Usage: crash_worker.py DSN WORKER_ID LEASE_SECONDS BATCH
"""

from __future__ import annotations

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


def main() -> int:
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
