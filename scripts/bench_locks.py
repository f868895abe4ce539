"""What the private mutexes cost (issue 12: advisory locks replaced), side by side.

Two databases: `before` has every migration up to --before (default: all but the
newest), `after` has them all. In each, one connection (autocommit, one call per
transaction, as a worker writes outcomes) times:
  fail_known  fail_retry_item of an item whose key already has a circuit row
  fail_new    fail_retry_item of an item of a key never seen (its circuit row made)
  once_new    enqueue_retry_item_once under a new event id
  once_again  enqueue_retry_item_once under an event id already there
Rounds alternate between the databases so that drift hits both alike; the
figures are medians over rounds, per call: wall time and the backend's CPU
time (utime + stime from /proc: the server must run on this machine; steadier
than wall time on a loaded one). No WAL figure: pg_current_wal_lsn is the
cluster's, and counts what other sessions write meanwhile.
synchronous_commit is off unless --sync: a commit's flush (milliseconds on a
shared disk) would hide the work; --sync shows what a call that now writes
where it wrote nothing before pays for its flush.

    .venv/bin/python scripts/bench_locks.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_db import DEFAULT_ADMIN_DSN, Cluster

from retryq_py import migrate

CASES = ("fail_known", "fail_new", "once_new", "once_again")


def _leased(conn: psycopg.Connection[Any], keys: list[str]) -> list[int]:
    conn.execute(
        "SELECT count(*) FROM enqueue_retry_items(("
        " SELECT jsonb_agg(jsonb_build_object('event_type', k, 'event_data', 1,"
        " 'max_retries', 100)) FROM unnest(%s::text[]) AS k))",
        [keys],
    )
    ids: list[int] = []
    while len(ids) < len(keys):  # acquire takes at most 1000 a call
        rows = conn.execute("SELECT id FROM acquire_retry_items('w', 1000, 3600)").fetchall()
        ids.extend(r[0] for r in rows)
    return ids


def _cpu(pid: int) -> float:
    """Seconds of CPU the backend process has used (the server runs here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_case(dsn: str, case: str, calls: int, sync: bool) -> tuple[float, float]:
    """Per call: wall microseconds, backend CPU microseconds."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT retry_circuit_configure(NULL, NULL, 0)")  # never trips
        if not sync:
            conn.execute("SET synchronous_commit = off")
        if case == "fail_known":
            ids = _leased(conn, ["known"] * calls)
            conn.execute("SELECT fail_retry_item(%s, 'w', 'e')", [ids.pop()])
            sql, args = "SELECT fail_retry_item(%s, 'w', 'e')", [[i] for i in ids]
        elif case == "fail_new":
            ids = _leased(conn, [f"new-{uuid.uuid4()}" for _ in range(calls)])
            sql, args = "SELECT fail_retry_item(%s, 'w', 'e')", [[i] for i in ids]
        else:
            events = [[str(uuid.uuid4())] for _ in range(calls)]
            sql = "SELECT * FROM enqueue_retry_item_once(%s, 'once', '{}')"
            if case == "once_again":
                for e in events:
                    conn.execute(sql, e)
            args = events
        pid = conn.info.backend_pid
        cpu, start = _cpu(pid), time.perf_counter()
        for a in args:
            conn.execute(sql, a)
        wall, cpu = time.perf_counter() - start, _cpu(pid) - cpu
        return wall / len(args) * 1e6, cpu / len(args) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-dsn", default=DEFAULT_ADMIN_DSN)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sync", action="store_true", help="synchronous_commit on")
    parser.add_argument("--before", help="the last migration of `before` (e.g. 0017)")
    args = parser.parse_args()
    src = migrate.migrations_dir()
    names = sorted(p.name[:4] for p in src.glob("[0-9]*.sql"))
    before = args.before or sorted(set(names))[-2]
    cluster = Cluster(args.admin_dsn)
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        side: {c: [] for c in CASES} for side in ("before", "after")
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            old = Path(tmp)
            for p in src.glob("*.sql"):
                if p.name[:4] <= before:
                    shutil.copy(p, old / p.name)
            templates = {}
            for side, directory in (("before", old), ("after", src)):
                name = cluster.create(f"tpl_{side}")
                migrate.apply(cluster.dsn(name), directory=directory)
                templates[side] = name
            for _ in range(args.rounds):
                for case in CASES:
                    for side in ("before", "after"):
                        with cluster.database(side, templates[side]) as dsn:
                            results[side][case].append(run_case(dsn, case, args.calls, args.sync))
    finally:
        cluster.drop_all()
    print(f"before = migrations up to {before}; after = all; {args.calls} calls,"
          f" {args.rounds} rounds, synchronous_commit {'on' if args.sync else 'off'};"
          " medians over rounds, per call")
    for case in CASES:
        cells = []
        for k, label in ((0, "wall us"), (1, "backend CPU us")):
            b = statistics.median(r[k] for r in results["before"][case])
            a = statistics.median(r[k] for r in results["after"][case])
            cells.append(f"{label} {b:.0f} -> {a:.0f} ({a / b:.2f}x)")
        print(f"  {case:<11} " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
