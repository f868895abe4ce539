"""Capacity curve (issue 15, item 4): throughput of the SQL-level drain (threads
with a connection each) and of the Python worker (RetryWorker processes) for 1,
2, 4, 8 and 16 workers, and what each run used, so that the curve says which
resource runs out first.

For every run: items per second; the CPU time of the run's own backends (from
/proc, so the server must run on this machine) and of this Python process (the
clients), per item; how busy the whole machine was (/proc/stat); WAL bytes and
commits per item; and the wait events of the run's backends, sampled from
pg_stat_activity every 20 ms. Worker counts alternate in order from round to
round (1..16, then 16..1) so that a change in the machine's load does not
favour one end of the curve; each figure is the median over the rounds.

    .venv/bin/python scripts/bench_capacity.py [--items 10000] [--rounds 3]
        [--modes per-item,batch,worker] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# the Python worker: N RetryWorker processes, each one handler thread (so one
# lease lane, one leasing connection: N as in the SQL-level drain), batch 10
WORKER = "worker"
# the same with all_event_types=True: an unrouted acquire, to tell the routed
# walk's cost from the worker's own
WORKER_ALL = "worker-all"
WORKER_THREADS = 1
WORKER_BATCH = 10
ALL_MODES = (*MODES, WORKER, WORKER_ALL)
DEFAULT_MODES = ",".join((*MODES, WORKER))


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


class Sampler:
    """Every 20 ms, from its own connection: the wait events of the run's
    backends (those of `pids`, or every other client backend of the database
    when `pids` is None) and, for the latter, each one's CPU time as last
    seen (a backend's /proc entry goes when it exits)."""

    def __init__(self, dsn: str, pids: list[int] | None, lock: threading.Lock) -> None:
        self.waits: Counter[str] = Counter()
        self.cpu: dict[int, float] = {}
        self._dsn, self._pids, self._lock = dsn, pids, lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with connect(self._dsn) as conn:
            me = conn.info.backend_pid
            while not self._stop.wait(0.02):
                if self._pids is not None:
                    with self._lock:
                        watched = list(self._pids)
                    rows = conn.execute(
                        "SELECT pid, coalesce(wait_event_type || ':' || wait_event, 'CPU'), state"
                        " FROM pg_stat_activity WHERE pid = ANY(%s)",
                        (watched,),
                    ).fetchall()
                else:
                    rows = conn.execute(
                        "SELECT pid, coalesce(wait_event_type || ':' || wait_event, 'CPU'), state"
                        " FROM pg_stat_activity WHERE datname = current_database()"
                        " AND backend_type = 'client backend' AND pid <> %s",
                        (me,),
                    ).fetchall()
                    for pid, _, _ in rows:
                        cpu = _proc_cpu(pid)
                        if cpu:
                            self.cpu[pid] = cpu
                for _, event, state in rows:
                    self.waits["Client:ClientRead" if state == "idle" else event] += 1


def _counters(dsn: str) -> tuple[int, int]:
    """(WAL position in bytes, commits in the run's database)."""
    with connect(dsn) as conn:
        # stats reach pg_stat_database when a backend ends or after a short delay
        conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.6)
        row = conn.execute(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, xact_commit FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def measured(
    dsn: str,
    items: int,
    workers: int,
    body: Callable[[Sampler], tuple[float, float, float, int]],
    pids: list[int] | None,
    lock: threading.Lock,
) -> Run:
    """Runs `body` (returning seconds, server CPU seconds, client CPU seconds
    and items done) under the sampler, with the machine's and the server's
    counters read around it."""
    lsn0, commits0 = _counters(dsn)
    with Sampler(dsn, pids, lock) as sampler:
        busy0, total0 = _machine()
        elapsed, server, client, done = body(sampler)
        busy1, total1 = _machine()
    lsn1, commits1 = _counters(dsn)
    if done != items:
        raise RuntimeError(f"capacity: drained {done} of {items}")
    return Run(
        workers=workers,
        rate=items / elapsed,
        server_us=server * 1e6 / items,
        client_us=client * 1e6 / items,
        busy=(busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0,
        wal=(lsn1 - lsn0) / items,
        commits=(commits1 - commits0) / items,
        waits=sampler.waits,
    )


@contextmanager
def _loaded(cluster: Cluster, template: str, items: int) -> Iterator[str]:
    with cluster.database("capacity", template) as dsn:
        with connect(dsn) as conn:
            load_items(conn, items)
        vacuum_analyze(dsn, bench_sql.TABLES)
        settle(dsn)
        yield dsn


def drain(cluster: Cluster, template: str, items: int, workers: int, mode: str) -> Run:
    batch, per_item = MODES[mode]
    with _loaded(cluster, template, items) as dsn:
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

        def body(_: Sampler) -> tuple[float, float, float, int]:
            client0 = _self_cpu()
            elapsed, counts = run_threads(workers, work)
            return elapsed, sum(cpu_at_end.values()), _self_cpu() - client0, sum(counts)

        return measured(dsn, items, workers, body, pids, lock)


def worker_child(dsn: str, worker_id: str, mode: str) -> int:
    """One RetryWorker process of the `worker` mode: ready, then go on a line
    from stdin; prints `handled first_call last_call` (CLOCK_MONOTONIC, the
    same clock in every process) and its own CPU seconds."""
    from retryq_py.worker import RetryWorker

    seen, last = [0], [0.0]
    lock = threading.Lock()

    def noop(item: object) -> None:
        with lock:
            seen[0] += 1
            last[0] = time.monotonic()

    worker = RetryWorker(
        dsn,
        {"bench.noop": noop},
        worker_id=worker_id,
        worker_count=WORKER_THREADS,
        batch_size=WORKER_BATCH,
        poll_interval=30,
        cleanup_interval=0,
        all_event_types=mode == WORKER_ALL,
    )
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = _self_cpu()
    worker.run(exit_when_drained=True, install_signal_handlers=False)
    print(seen[0], last[0], _self_cpu() - cpu, flush=True)
    return 0


def workers_drain(cluster: Cluster, template: str, items: int, workers: int, mode: str) -> Run:
    """N RetryWorker processes (WORKER_THREADS handler threads, batch
    WORKER_BATCH, a no-op handler each) drain the items with
    exit_when_drained. Judged as in scripts/bench: items over the time from
    the go to the last handler call of any process (each worker's start-up
    included, how it notices the empty queue and exits left out)."""
    with _loaded(cluster, template, items) as dsn:
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker-child", dsn, f"cap-{i}", mode],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(workers)
        ]

        def body(sampler: Sampler) -> tuple[float, float, float, int]:
            try:
                for p in procs:
                    assert p.stdout is not None
                    if p.stdout.readline().strip() != "ready":
                        raise RuntimeError("capacity: a worker process failed to start")
                start = time.monotonic()
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.write("go\n")
                    p.stdin.flush()
                outs = [p.communicate(timeout=600)[0] for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            if any(p.returncode for p in procs):
                raise RuntimeError("capacity: a worker process failed")
            results = [out.split() for out in outs]
            done = sum(int(r[0]) for r in results)
            last = max(float(r[1]) for r in results)
            client = sum(float(r[2]) for r in results)
            return last - start, sum(sampler.cpu.values()), client, done

        return measured(dsn, items, workers, body, None, threading.Lock())


def report(
    runs: dict[tuple[str, int], list[Run]],
    args: argparse.Namespace,
    load: tuple[float, ...],
    section: str = SECTION,
) -> str:
    cores = os.cpu_count() or 1
    n = WORKER_COUNTS[0]

    def med(key: tuple[str, int], attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in runs[key]))

    lines = [
        f"<!-- {section} -->",
        "### Capacity curve: the SQL-level drain and the Python worker"
        if section == SECTION
        else f"### Capacity curve: {', '.join(m for m in ALL_MODES if (m, n) in runs)}",
        "",
        f"`.venv/bin/python scripts/bench_capacity.py --items {args.items} --rounds "
        f"{args.rounds}"
        + (f" --modes {args.modes}" if args.modes != DEFAULT_MODES else "")
        + f"` on this machine ({cores} cores, client and server on the same cores; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start, other work "
        f"running beside it). {args.items:,} due items per run; median of the rounds, worker "
        "counts run in alternating order. per-item and batch: the SQL-level drain, N threads "
        "of one Python process with one connection each. worker: N `RetryWorker` processes, "
        f"each worker_count {WORKER_THREADS} (one lease lane), batch {WORKER_BATCH}, a no-op "
        "handler, leasing only its handler's event type (the default routing; worker-all: "
        "all_event_types=True, an unrouted acquire), run with "
        "exit_when_drained; rate to the last handler call of any process, start-up "
        "included (as scripts/bench judges RetryWorker). server CPU: the run's own backends; "
        "client CPU: the Python threads (worker: the worker processes from their start "
        "signal); busy: the whole machine; WAL: the server's WAL (anything else writing at the "
        "time included); waits: the share of samples of the run's backends in each state "
        "(CPU = running, Client:ClientRead = waiting for the next statement from its client).",
        "",
        "| mode | workers | items/s | vs 1 worker | server CPU µs/item | client CPU µs/item "
        "| machine busy | WAL B/item | commits/item | top waits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in ALL_MODES:
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
        "acquire_retry_items(batch 100) + complete_retry_items per batch; worker: each flush "
        "writes the finished items' outcomes (complete_retry_items) and leases the next "
        "batch (acquire_retry_items 10) in one transaction. Per-run figures: "
        + "; ".join(
            f"{mode} {n}: " + ", ".join(f"{r.rate:,.0f}" for r in runs[(mode, n)])
            for mode in ALL_MODES
            for n in WORKER_COUNTS
            if (mode, n) in runs
        )
        + ".",
        "",
        f"<!-- /{section} -->",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=os.environ.get("RETRYQ_BENCH_DSN", DEFAULT_ADMIN_DSN))
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=DEFAULT_MODES, help=f"a subset of {','.join(ALL_MODES)}")
    parser.add_argument("--worker-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, help="the BENCHMARKS.md whose section to replace")
    args = parser.parse_args(argv)
    if args.worker_child:
        return worker_child(*args.worker_child)
    modes = [m for m in args.modes.split(",") if m]
    if set(modes) - set(ALL_MODES):
        parser.error(f"--modes: unknown {','.join(sorted(set(modes) - set(ALL_MODES)))}")

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
                    run = (
                        workers_drain(cluster, template, args.items, n, mode)
                        if mode in (WORKER, WORKER_ALL)
                        else drain(cluster, template, args.items, n, mode)
                    )
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
    # the default modes' section, or one of its own for another set of modes
    section = SECTION if args.modes == DEFAULT_MODES else f"{SECTION}-{'-'.join(modes)}"
    text = report(runs, args, load, section)
    print(text)
    if args.write:
        write_section(args.write, section, text)
        print(f"wrote the {section} section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
