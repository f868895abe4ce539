"""The hot path before and after a change: the SQL of a git revision against
the working tree's, side by side.

Two databases on one server: one gets the migrations as they were at --base
(read with `git archive`, applied as a deploy would), the other today's. Each
round fills both with the same due items and drains them (acquire_retry_items
batch 10, then complete_retry_items or one complete_retry_item per item,
autocommit, one connection); rounds alternate A B A B ... so that machine
noise hits both alike, and the verdict is the median of per-round ratios.
Acquire's own time is summed separately from the whole round trip.
Autovacuum is off on the CI server: each fill ends with VACUUM ANALYZE, as
autovacuum would run after a bulk insert.

    .venv/bin/python scripts/bench_ab.py --base 3c8637e [--items 20000] [--rounds 6]
        [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_db import Cluster, write_section

from retryq_py import migrate

ROOT = Path(__file__).resolve().parents[1]

def migrations_at(ref: str, into: Path) -> Path:
    tar = subprocess.run(
        ["git", "archive", ref, "migrations"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into / "migrations"


def fill(conn: psycopg.Connection[Any], n: int) -> None:
    conn.execute("TRUNCATE daz_retry_queue")
    conn.execute(
        "INSERT INTO daz_retry_queue (event_type, plugin_name, event_data)"
        " SELECT 'type' || (g %% 20), 'p', jsonb_build_object('n', g)"
        " FROM generate_series(1, %s) AS g",
        (n,),
    )
    conn.execute("VACUUM ANALYZE daz_retry_queue")


def drain(conn: psycopg.Connection[Any], per_item: bool) -> tuple[float, float, int]:
    """(seconds in acquire, seconds in all, items completed)."""
    done, in_acquire = 0, 0.0
    started = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        ids = [r[0] for r in conn.execute("SELECT id FROM acquire_retry_items('bench', 10, 300)")]
        in_acquire += time.perf_counter() - t0
        if not ids:
            break
        if per_item:
            for i in ids:
                row = conn.execute("SELECT complete_retry_item(%s, 'bench')", (i,)).fetchone()
                done += bool(row and row[0])
        else:
            row = conn.execute("SELECT complete_retry_items(%s, 'bench')", (ids,)).fetchone()
            done += int(row[0]) if row else 0
    return in_acquire, time.perf_counter() - started, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--admin-dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    ap.add_argument("--base", required=True, help="git revision whose migrations are 'before'")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--write", type=Path, help="put the table into this markdown file")
    args = ap.parse_args()
    base = subprocess.run(
        ["git", "rev-parse", "--short", args.base], cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout.strip()
    cluster = Cluster(args.admin_dsn)
    kinds = ["batch", "per-item"]
    # (kind, side) -> per-round (acquire seconds, total seconds)
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dirs = {"before": migrations_at(args.base, Path(tmp)), "after": ROOT / "migrations"}
            dsns = {}
            for side, d in dirs.items():
                dsns[side] = cluster.dsn(cluster.create(side))
                migrate.apply(dsns[side], directory=d)
            for r in range(args.rounds):
                for kind in kinds:
                    # alternate which side goes first, so neither always
                    # runs right after a fill of the other
                    order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                    for side in order:
                        with psycopg.connect(dsns[side], autocommit=True) as conn:
                            fill(conn, args.items)
                            acq, total, done = drain(conn, kind == "per-item")
                        assert done == args.items, (side, kind, done)
                        got.setdefault((kind, side), []).append((acq, total))
    finally:
        cluster.drop_all()
    load = os.getloadavg()
    lines = [
        "<!-- bench_ab -->",
        f"### Acquire and drain: this tree against {base}",
        "",
        f"`.venv/bin/python scripts/bench_ab.py --base {args.base} --items {args.items} "
        f"--rounds {args.rounds}`: {args.items:,} due items over 20 event types, "
        "acquire batch 10, one connection, autocommit; rounds alternate the two installs; "
        "a ratio above 1 means this tree is faster. No routing, dedupe, pause, rate limit "
        f"or cancel is configured. Load average at the end: {load[0]:.1f} {load[1]:.1f}.",
        "",
        "| acknowledgement | items/s before | items/s after | drain after/before (median of "
        "rounds) | acquire time before/after (median of rounds) | per round (drain) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for kind in kinds:
        b, a = got[(kind, "before")], got[(kind, "after")]
        drain_ratios = [bt / at for (_, bt), (_, at) in zip(b, a, strict=True)]
        acq_ratios = [ba / aa for (ba, _), (aa, _) in zip(b, a, strict=True)]
        rate = {
            s: args.items / statistics.median(t for _, t in got[(kind, s)])
            for s in ("before", "after")
        }
        lines.append(
            f"| {'complete_retry_items' if kind == 'batch' else 'complete_retry_item'} "
            f"| {rate['before']:,.0f} | {rate['after']:,.0f} "
            f"| {statistics.median(drain_ratios):.2f}x | {statistics.median(acq_ratios):.2f}x "
            f"| {', '.join(f'{x:.2f}' for x in drain_ratios)} |"
        )
    lines.append("<!-- /bench_ab -->")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "bench_ab", text)


if __name__ == "__main__":
    main()
