"""Failover (issue 13, item 6): an enqueue retried after a lost reply adds one
item, even when two sessions race with one event id; and scripts/failover,
the measured scenario (a primary SIGKILLed, its replica promoted), reports
no acknowledged item lost and none doubled under synchronous replication.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest

from retryq_py import RetryQueue
from tests.helpers import wait_until

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "failover"
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def test_two_sessions_adding_one_event_id_make_one_item(module_dsn: str) -> None:
    racer = UUID(int=99)
    with psycopg.connect(module_dsn, autocommit=True) as db:
        db.execute("TRUNCATE daz_retry_queue, daz_retry_queue_archive")
        with psycopg.connect(module_dsn) as a, psycopg.connect(module_dsn, autocommit=True) as b:
            mine = RetryQueue(a).add("e", {}, event_id=racer)  # not committed yet
            theirs: list[Any] = []
            thread = threading.Thread(
                target=lambda: theirs.append(RetryQueue(b).add("e", {}, event_id=racer))
            )
            thread.start()
            wait_until(
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
                        " AND locktype = 'transactionid'",
                        [b.info.backend_pid],
                    ).fetchone()
                    == (1,)
                ),
                what="the second add to wait for the first",
            )
            a.commit()
            thread.join(10)
        assert theirs == [mine]
        row = db.execute(
            "SELECT count(*) FROM daz_retry_queue WHERE event_id = %s", [racer]
        ).fetchone()
        assert row == (1,)


@pytest.mark.slow
@pytest.mark.skipif(not (PG_BIN / "initdb").exists(), reason="no PostgreSQL 15 binaries")
def test_failover_under_synchronous_replication_loses_and_doubles_nothing() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--mode", "sync", "--seconds", "3", "--after", "3"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r"acknowledged (\d+), lost (\d+), doubled (\d+), stuck (\d+)", done.stdout)
    assert found, done.stdout
    acked, lost, doubled, stuck = map(int, found.groups())
    assert acked > 100 and (lost, doubled, stuck) == (0, 0, 0), done.stdout
