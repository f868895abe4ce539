"""What a rate limit costs acquire, side by side.

Three databases of today's install, the same load (pending items over a few
keys; acquire batch 10 in a loop, timed, each batch completed untimed; one
connection, autocommit):
  none      no rate limit configured: the common case (one look at an empty table)
  other     a limit on an unrelated key: acquire looks for exhausted keys and
            hands each batch to the token grant, which finds no limit for it
  limited   a limit on every key, far above what the run leases: each lease
            takes a token (one UPDATE per key per batch)
With --base REV, three more databases get the install of REV's migrations
("none (base)" and so on), so that a change is measured against its base in
the same interleaved run (each install's cases against its own none).
The databases take turns batch by batch (interleaved), so that the machine's
drift hits all alike; the ratios are of the medians, over the rounds, of the
time spent in acquire.

    .venv/bin/python scripts/bench_rate_limit.py [--items 20000] [--rounds 5] [--base REV]
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
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ab import migrations_at

from retryq_py import migrate

KEYS = 4
CASES = ["none", "other", "limited"]


def fill(conn: psycopg.Connection[Any], n: int) -> None:
    conn.execute("TRUNCATE daz_retry_queue, _retryq_rate_limit CASCADE")
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data)"
        " SELECT 'type' || (g %% %s), 'p', jsonb_build_object('n', g)"
        " FROM generate_series(1, %s) AS g",
        (KEYS, n),
    )
    conn.execute("VACUUM ANALYZE daz_retry_queue")


def drain(conns: dict[str, psycopg.Connection[Any]], batch: int) -> dict[str, float]:
    """Seconds each database spent in acquire: one batch from each in turn
    (the order rotating), so that the machine's drift hits all alike."""
    spent = {c: 0.0 for c in conns}
    left = list(conns)
    turn = 0
    while left:
        turn += 1
        for c in left[turn % len(left) :] + left[: turn % len(left)]:
            conn = conns[c]
            started = time.perf_counter()
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM acquire_retry_items('bench', %s, 300)", (batch,)
                )
            ]
            spent[c] += time.perf_counter() - started
            if ids:
                conn.execute("SELECT complete_retry_items(%s, 'bench')", (ids,))
            else:
                left.remove(c)
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--base", help="git revision whose install is measured beside this tree's")
    args = ap.parse_args()
    cases = CASES + ([f"{c} (base)" for c in CASES] if args.base else [])
    params = conninfo_to_dict(args.admin_dsn)
    names = {c: f"retryq_bench_rl_{os.getpid()}_{c.replace(' (base)', '_base')}" for c in cases}
    dsns = {c: make_conninfo(**{**params, "dbname": n}) for c, n in names.items()}
    with psycopg.connect(args.admin_dsn, autocommit=True) as admin:
        for n in names.values():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(n)))
    tmp = tempfile.TemporaryDirectory()
    try:
        base_dir = migrations_at(args.base, Path(tmp.name)) if args.base else None
        for c, dsn in dsns.items():
            if c.endswith("(base)"):
                migrate.apply(dsn, directory=base_dir)
            else:
                migrate.apply(dsn)
        times: dict[str, list[float]] = {c: [] for c in cases}
        for _ in range(args.rounds):
            conns = {c: psycopg.connect(dsns[c], autocommit=True) for c in cases}
            try:
                for c, conn in conns.items():
                    fill(conn, args.items)
                    if c.startswith("other"):
                        conn.execute("SELECT retry_rate_limit_set('unrelated', NULL, 10)")
                    if c.startswith("limited"):
                        for k in range(KEYS):
                            conn.execute(
                                "SELECT retry_rate_limit_set(%s, 'p', 100000, 60)", (f"type{k}",)
                            )
                        conn.execute("VACUUM ANALYZE _retryq_rate_token")
                spent = drain(conns, args.batch)
            finally:
                for conn in conns.values():
                    conn.close()
            for c in cases:
                times[c].append(spent[c])
            print("  " + ", ".join(f"{c} {spent[c]:.2f} s" for c in cases), file=sys.stderr)
    finally:
        tmp.cleanup()
        with psycopg.connect(args.admin_dsn, autocommit=True) as admin:
            for n in names.values():
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(n))
                )
    print(
        f"bench_rate_limit: {args.items:,} items over {KEYS} keys, acquire batch {args.batch},"
        f" one connection, median of {args.rounds} alternating rounds,"
        f" load average {os.getloadavg()[0]:.1f}" + (f", base {args.base}" if args.base else "")
    )
    print("| case | acquire ms per batch | vs none | vs none per round | rounds (s) |")
    print("| --- | ---: | ---: | --- | --- |")
    for c in cases:
        # each install's cases against its own none
        none = "none (base)" if c.endswith("(base)") else "none"
        med = statistics.median(times[c])
        per_batch = med / (args.items / args.batch) * 1000
        ratios = " ".join(f"{t / n:.2f}" for t, n in zip(times[c], times[none], strict=True))
        rounds = " ".join(f"{t:.2f}" for t in times[c])
        print(
            f"| {c} | {per_batch:.3f} | {med / statistics.median(times[none]):.2f}x"
            f" | {ratios} | {rounds} |"
        )


if __name__ == "__main__":
    main()
