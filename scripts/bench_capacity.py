"""Capacity curve, first cut (issue 15, item 4): throughput of the SQL-level
drain for 1, 2, 4, 8 and 16 workers (threads with a connection each), and what
each run used, so that the curve says which resource runs out first.

For every run: items per second; the CPU time of the run's own backends (from
/proc, so the server must run on this machine) and of this Python process (the
clients), per item; how busy the whole machine was (/proc/stat); WAL bytes and
commits per item; and the wait events of the run's backends, sampled from
pg_stat_activity every 20 ms. Worker counts alternate in order from round to
round (1..16, then 16..1) so that a change in the machine's load does not
favour one end of the curve; each figure is the median over the rounds.

    .venv/bin/python scripts/bench_capacity.py [--items 10000] [--rounds 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_sql
from bench_db import (
    DEFAULT_ADMIN_DSN,
    Cluster,
    connect,
    load_items,
    run_threads,
    settle,
    vacuum_analyze,
    write_section,
)

SECTION = "bench_capacity"
TICK = os.sysconf("SC_CLK_TCK")
WORKER_COUNTS = (1, 2, 4, 8, 16)
MODES = {
    "per-item": (10, True),  # acquire 10, complete_retry_item per item
    "batch": (100, False),  # acquire 100, complete_retry_items per batch
}


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _machine() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot."""
    parts = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Run:
    workers: int
    rate: float
    server_us: float  # CPU of the run's backends per item
    client_us: float  # CPU of this process per item
    busy: float  # share of all the machine's CPUs busy during the run
    wal: float  # bytes per item (the whole server's WAL: others' writes included)
    commits: float  # per item, in the run's database
    waits: Counter[str] = field(default_factory=Counter)


def drain(cluster: Cluster, template: str, items: int, workers: int, mode: str) -> Run:
    batch, per_item = MODES[mode]
    with cluster.database("capacity", template) as dsn:
        with connect(dsn) as conn:
            load_items(conn, items)
        vacuum_analyze(dsn, bench_sql.TABLES)
        settle(dsn)
        pids: list[int] = []
        cpu_at_end: dict[int, float] = {}
        lock = threading.Lock()

        def work(i: int, barrier: threading.Barrier) -> int:
            worker = f"cap-{i}"
            done = 0
            with connect(dsn) as conn:
                pid = conn.info.backend_pid
                with lock:
                    pids.append(pid)
                barrier.wait()
                while True:
                    rows = conn.execute(
                        "SELECT id FROM acquire_retry_items(%s, %s, 300)", (worker, batch)
                    ).fetchall()
                    if not rows:
                        break
                    if per_item:
                        for (item_id,) in rows:
                            conn.execute("SELECT complete_retry_item(%s, %s)", (item_id, worker))
                    else:
                        conn.execute(
                            "SELECT complete_retry_items(%s, %s)", ([r[0] for r in rows], worker)
                        )
                    done += len(rows)
                with lock:
                    cpu_at_end[pid] = _proc_cpu(pid)
            return done

        waits: Counter[str] = Counter()
        stop = threading.Event()

        def sample() -> None:
            with connect(dsn) as conn:
                while not stop.wait(0.02):
                    with lock:
                        watched = list(pids)
                    rows = conn.execute(
                        "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), state"
                        " FROM pg_stat_activity WHERE pid = ANY(%s)",
                        (watched,),
                    ).fetchall()
                    for event, state in rows:
                        waits["Client:ClientRead" if state == "idle" else event] += 1

        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, xact_commit FROM pg_stat_database"
                " WHERE datname = current_database()"
            ).fetchone()
            assert row is not None
            lsn0, commits0 = int(row[0]), int(row[1])
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        busy0, total0 = _machine()
        client0 = _self_cpu()
        elapsed, counts = run_threads(workers, work)
        client1 = _self_cpu()
        busy1, total1 = _machine()
        stop.set()
        sampler.join()
        with connect(dsn) as conn:
            # stats reach pg_stat_database when a backend ends or after a short delay
            conn.execute("SELECT pg_stat_force_next_flush()")
            time.sleep(0.6)
            row = conn.execute(
                "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, xact_commit FROM pg_stat_database"
                " WHERE datname = current_database()"
            ).fetchone()
            assert row is not None
            lsn1, commits1 = int(row[0]), int(row[1])
        if sum(counts) != items:
            raise RuntimeError(f"capacity: drained {sum(counts)} of {items}")
        return Run(
            workers=workers,
            rate=items / elapsed,
            server_us=sum(cpu_at_end.values()) * 1e6 / items,
            client_us=(client1 - client0) * 1e6 / items,
            busy=(busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0,
            wal=(lsn1 - lsn0) / items,
            commits=(commits1 - commits0) / items,
            waits=waits,
        )


def report(
    runs: dict[tuple[str, int], list[Run]], args: argparse.Namespace, load: tuple[float, ...]
) -> str:
    cores = os.cpu_count() or 1

    def med(key: tuple[str, int], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[key])

    lines = [
        f"<!-- {SECTION} -->",
        "### Capacity curve of the SQL-level drain (first cut)",
        "",
        f"`.venv/bin/python scripts/bench_capacity.py --items {args.items} --rounds "
        f"{args.rounds}` on this machine ({cores} cores, client and server on the same cores; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start, other work "
        f"running beside it). {args.items:,} due items per run, drained by N threads with one "
        "connection each; median of the rounds, worker counts run in alternating order. server "
        "CPU: the run's own backends; client CPU: the Python threads; busy: the whole machine; "
        "WAL: the server's WAL (anything else writing at the time included); waits: the "
        "share of samples of the run's backends in each state (CPU = running, "
        "Client:ClientRead = waiting for the next statement from its client).",
        "",
        "| mode | workers | items/s | vs 1 worker | server CPU µs/item | client CPU µs/item "
        "| machine busy | WAL B/item | commits/item | top waits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in MODES:
        base = med((mode, WORKER_COUNTS[0]), "rate") if (mode, WORKER_COUNTS[0]) in runs else None
        for n in WORKER_COUNTS:
            key = (mode, n)
            if key not in runs:
                continue
            waits: Counter[str] = Counter()
            for r in runs[key]:
                waits.update(r.waits)
            total = sum(waits.values()) or 1
            top = ", ".join(f"{k} {v / total:.0%}" for k, v in waits.most_common(3))
            rate = med(key, "rate")
            lines.append(
                f"| {mode} | {n} | {rate:,.0f} | {rate / base:.2f} x | "
                f"{med(key, 'server_us'):.0f} | {med(key, 'client_us'):.0f} | "
                f"{med(key, 'busy'):.0%} | {med(key, 'wal'):,.0f} | {med(key, 'commits'):.2f} "
                f"| {top} |"
                if base
                else f"| {mode} | {n} | {rate:,.0f} | - | | | | | | |"
            )
    lines += [
        "",
        "per-item: acquire_retry_items(batch 10) + complete_retry_item per item; batch: "
        "acquire_retry_items(batch 100) + complete_retry_items per batch. Per-run figures: "
        + "; ".join(
            f"{mode} {n}: " + ", ".join(f"{r.rate:,.0f}" for r in runs[(mode, n)])
            for mode in MODES
            for n in WORKER_COUNTS
            if (mode, n) in runs
        )
        + ".",
        "",
        f"<!-- /{SECTION} -->",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=os.environ.get("RETRYQ_BENCH_DSN", DEFAULT_ADMIN_DSN))
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="per-item,batch")
    parser.add_argument("--write", type=Path, help="the BENCHMARKS.md whose section to replace")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]

    from retryq_py import migrate

    load = os.getloadavg()
    cluster = Cluster(args.database)
    runs: dict[tuple[str, int], list[Run]] = {}
    try:
        template = cluster.create("template")
        migrate.apply(cluster.dsn(template))
        for r in range(args.rounds):
            counts = WORKER_COUNTS if r % 2 == 0 else WORKER_COUNTS[::-1]
            for n in counts:
                for mode in modes:
                    run = drain(cluster, template, args.items, n, mode)
                    runs.setdefault((mode, n), []).append(run)
                    top = ", ".join(f"{k} {v}" for k, v in run.waits.most_common(3))
                    print(
                        f"round {r + 1} {mode:8s} {n:2d} workers: {run.rate:7,.0f}/s server "
                        f"{run.server_us:4.0f} µs client {run.client_us:4.0f} µs busy "
                        f"{run.busy:.0%} WAL {run.wal:5.0f} B commits {run.commits:.2f} | {top}",
                        flush=True,
                    )
    finally:
        cluster.drop_all()
    text = report(runs, args, load)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        print(f"wrote the {SECTION} section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
