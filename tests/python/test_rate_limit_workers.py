"""A rate limit holds across worker processes (issue 14, item 6): N leases
per second at most in any one-second window, and close to N per second."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

WORKER = Path(__file__).with_name("rate_worker.py")
N = 25  # leases per second
SECONDS = 4  # the run: the queue holds one more second of work


def test_four_worker_processes_keep_to_the_limit(dsn: str, conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT retry_rate_limit_set('sms.send', 'twilio', %s, 1)", (N,))
    items = [{"event_type": "sms.send", "plugin_name": "twilio", "event_data": {"n": i}}
             for i in range(N * (SECONDS + 1))]
    conn.execute("SELECT enqueue_retry_items(%s)", (Jsonb(items),))
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), dsn, f"rl{i}", "sms.send"],
                         cwd=WORKER.parents[2])
        for i in range(4)
    ]
    try:
        for p in procs:
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    rows = conn.execute(
        "SELECT status, last_attempted_at, retry_count FROM daz_retry_queue"
    ).fetchall()
    assert {r[0] for r in rows} == {"completed"}
    assert all(r[2] == 0 for r in rows)  # each item leased once: its lease time is kept
    times = sorted(r[1] for r in rows)
    # never more than N leases in any window of one second
    busiest = max(
        sum(1 for u in times[i:i + N + 1] if u < t + timedelta(seconds=1))
        for i, t in enumerate(times)
    )
    assert busiest <= N
    # and the limit is used: the first SECONDS seconds lease within 10 % of N per second
    first = sum(1 for u in times if u < times[0] + timedelta(seconds=SECONDS))
    assert first >= 0.9 * N * SECONDS, (first, [u - times[0] for u in times[::N]])
