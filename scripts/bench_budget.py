"""Where the work goes (issue 15, item 3): server CPU time and WAL bytes per
item for each of retryq's hot-path functions and pgmq's counterparts, measured
serially on one connection, written as a per-item budget into BENCHMARKS.md
(its own marked section, which scripts/bench keeps).

For each case: the backend's own CPU time (utime + stime of its process, from
/proc, so the server must run on this machine), the executor time and WAL that
pg_stat_statements records for the top-level statements, the statements inside
the functions that take most of that time (pg_stat_statements.track = all), and
WAL bytes as the difference of pg_current_wal_lsn() (commit records included).

pg_stat_statements must be in shared_preload_libraries, which only a restart
changes. When the server given by --database does not load it, the script
starts a throwaway cluster (initdb in a temporary directory, another port,
autovacuum off like the shared one, fsync and synchronous_commit on as
PostgreSQL's defaults) and measures there; the shared server is never
restarted.

    .venv/bin/python scripts/bench_budget.py [--items 5000] [--rounds 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_pgmq
import psycopg
from bench_db import (
    DEFAULT_ADMIN_DSN,
    PAYLOAD,
    Cluster,
    connect,
    load_items,
    vacuum_analyze,
    write_section,
)

ROOT = Path(__file__).resolve().parent.parent
SECTION = "bench_budget"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the server


def _preloaded(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return row is not None and "pg_stat_statements" in str(row[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_cluster(bin_dir: Path) -> Iterator[str]:
    """A private PostgreSQL with pg_stat_statements preloaded; yields its
    admin DSN and removes it afterwards. As root, it runs as `postgres`."""
    root = Path(tempfile.mkdtemp(prefix="retryq_budget_"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    pgdata, port = root / "pgdata", _free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    settings = {
        "port": port,
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{root}'",
        "shared_preload_libraries": "'pg_stat_statements'",
        "pg_stat_statements.track": "all",
        "pg_stat_statements.max": 10000,
        "autovacuum": "off",
        "max_connections": 50,
    }
    with (pgdata / "postgresql.conf").open("a") as conf:
        conf.write("\n# retryq bench_budget\n")
        for key, value in settings.items():
            conf.write(f"{key} = {value}\n")
    log_file = root / "server.log"
    subprocess.run(
        [*as_user, str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(log_file), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- measuring


def _backend_cpu(pid: int) -> float | None:
    """Seconds of CPU the backend process has used (None when it is not on
    this machine)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def _lsn(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Sample:
    items: int
    cpu_us: float | None  # backend CPU per item
    exec_us: float  # pg_stat_statements top-level executor time per item
    wal_bytes: float  # LSN difference per item
    wal_records: float  # pg_stat_statements top-level, per item
    wal_fpi: float
    wall_us: float  # client-side, per item
    inner: list[tuple[str, float, float]] = field(default_factory=list)  # query, us, wal B


def measure(conn: psycopg.Connection[Any], items: int, body: Callable[[], None]) -> Sample:
    """Runs body on conn (autocommit) and returns its cost per item."""
    conn.execute("SELECT pg_stat_statements_reset()")
    pid = conn.info.backend_pid
    cpu0, lsn0, t0 = _backend_cpu(pid), _lsn(conn), time.perf_counter()
    body()
    t1, lsn1, cpu1 = time.perf_counter(), _lsn(conn), _backend_cpu(pid)
    rows = conn.execute(
        """
        SELECT toplevel, query, total_exec_time, wal_bytes, wal_records, wal_fpi
        FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query NOT LIKE '%%pg_stat_statements%%'
            AND query NOT LIKE '%%pg_current_wal_lsn%%'
        """
    ).fetchall()
    top = [r for r in rows if r[0]]
    inner = sorted((r for r in rows if not r[0]), key=lambda r: -r[2])
    return Sample(
        items=items,
        cpu_us=(cpu1 - cpu0) * 1e6 / items if cpu0 is not None and cpu1 is not None else None,
        exec_us=sum(r[2] for r in top) * 1000 / items,
        wal_bytes=(lsn1 - lsn0) / items,
        wal_records=sum(r[4] for r in top) / items,
        wal_fpi=sum(r[5] for r in top) / items,
        wall_us=(t1 - t0) * 1e6 / items,
        inner=[(" ".join(r[1].split())[:90], r[2] * 1000 / items, r[3] / items) for r in inner],
    )


# ---------------------------------------------------------------- the cases


def _guide_rows(n: int) -> list[tuple[Any, ...]]:
    import bench_sql

    return [bench_sql._guide_params(k) for k in range(n)]


def retryq_cases(cluster: Cluster, template: str, n: int) -> dict[str, Sample]:
    """retryq's hot path, each function on its own, one connection."""
    import bench_sql

    from retryq_py import RetryQueue

    out: dict[str, Sample] = {}
    with cluster.database("budget_rq_enqueue", template) as dsn, connect(dsn) as conn:
        params = _guide_rows(n)

        def guide() -> None:
            for p in params:
                conn.execute(bench_sql.GUIDE_INSERT, p).fetchone()  # type: ignore[arg-type]

        out["the guide's INSERT (one per transaction)"] = measure(conn, n, guide)

        def single() -> None:
            for k in range(n):
                conn.execute(
                    "SELECT enqueue_retry_item(p_event_type => %s, p_event_data => %s,"
                    " p_channel_name => 'lobby', p_plugin_name => 'bench',"
                    " p_event_metadata => %s, p_correlation_id => %s, p_tags => %s)",
                    (
                        "bench.noop",
                        PAYLOAD,
                        '{"retry_reason": "initial_failure"}',
                        f"corr-{k}",
                        ["bench", "lobby"],
                    ),
                )

        out["enqueue_retry_item (one per transaction)"] = measure(conn, n, single)

        docs = [
            json.dumps(
                [
                    {
                        "event_type": "bench.noop",
                        "event_data": json.loads(PAYLOAD),
                        "channel_name": "lobby",
                        "plugin_name": "bench",
                        "event_metadata": {"retry_reason": "initial_failure"},
                        "correlation_id": f"corr-{k}",
                        "tags": ["bench", "lobby"],
                    }
                    for k in range(s, min(s + 1000, n))
                ]
            )
            for s in range(0, n, 1000)
        ]

        def many_json() -> None:
            for d in docs:
                conn.execute("SELECT count(*) FROM enqueue_retry_items(%s::jsonb)", (d,))

        out["enqueue_retry_items (1,000 per call)"] = measure(conn, n, many_json)

        queue = RetryQueue(conn)
        batches = [
            [bench_sql._new_item(k) for k in range(s, min(s + 1000, n))] for s in range(0, n, 1000)
        ]

        def copy() -> None:
            for b in batches:
                queue.add_many(b)

        out["add_many (COPY, 1,000 per call)"] = measure(conn, n, copy)

    for batch in (10, 100):
        with cluster.database("budget_rq_drain", template) as dsn, connect(dsn) as conn:
            load_items(conn, n)
            vacuum_analyze(dsn, bench_sql.TABLES)
            held: list[int] = []

            def acquire(b: int = batch, held: list[int] = held) -> None:
                while True:
                    rows = conn.execute(
                        "SELECT id FROM acquire_retry_items('budget', %s, 300)", (b,)
                    ).fetchall()
                    if not rows:
                        return
                    held.extend(r[0] for r in rows)

            out[f"acquire_retry_items (batch {batch})"] = measure(conn, n, acquire)
            if batch == 10:

                def complete(held: list[int] = held) -> None:
                    for item_id in held:
                        conn.execute("SELECT complete_retry_item(%s, 'budget')", (item_id,))

                out["complete_retry_item (per item)"] = measure(conn, n, complete)
            else:

                def complete_many(held: list[int] = held) -> None:
                    for s in range(0, len(held), 100):
                        conn.execute(
                            "SELECT complete_retry_items(%s, 'budget')", (held[s : s + 100],)
                        )

                out["complete_retry_items (100 per call)"] = measure(conn, n, complete_many)

    with cluster.database("budget_rq_fail", template) as dsn, connect(dsn) as conn:
        load_items(conn, n)
        vacuum_analyze(dsn, bench_sql.TABLES)
        ids: list[int] = []
        while rows := conn.execute(
            "SELECT id FROM acquire_retry_items('budget', 100, 300)"
        ).fetchall():
            ids.extend(r[0] for r in rows)

        def fail() -> None:
            for item_id in ids:
                conn.execute(
                    "SELECT fail_retry_item(%s, 'budget', 'timeout', 'E_TIMEOUT')", (item_id,)
                )

        out["fail_retry_item (per item, retryable)"] = measure(conn, n, fail)
    return out


def pgmq_cases(cluster: Cluster, n: int) -> dict[str, Sample]:
    """pgmq's counterparts, loaded from PyPI's pgmq package, one connection."""
    from psycopg.types.json import Jsonb

    out: dict[str, Sample] = {}
    q = bench_pgmq.QUEUE
    with cluster.database("budget_pgmq_send") as dsn, connect(dsn) as conn:
        bench_pgmq.install(dsn)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        messages = [bench_pgmq.message(k) for k in range(n)]

        def send() -> None:
            for m in messages:
                conn.execute("SELECT pgmq.send(%s, %s::jsonb)", (q, Jsonb(m)))

        out["pgmq.send (one per transaction)"] = measure(conn, n, send)

        def send_batch() -> None:
            for s in range(0, n, 1000):
                conn.execute(
                    "SELECT count(*) FROM pgmq.send_batch(%s, %s::jsonb[])",
                    (q, [Jsonb(m) for m in messages[s : s + 1000]]),
                )

        out["pgmq.send_batch (1,000 per call)"] = measure(conn, n, send_batch)

    for batch in (10, 100):
        with cluster.database("budget_pgmq_drain") as dsn, connect(dsn) as conn:
            bench_pgmq.install(dsn)
            bench_pgmq.load_messages(dsn, n)
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            held: list[int] = []

            def read(b: int = batch, held: list[int] = held) -> None:
                while True:
                    rows = conn.execute(
                        "SELECT msg_id FROM pgmq.read(%s, 300, %s)", (q, b)
                    ).fetchall()
                    if not rows:
                        return
                    held.extend(r[0] for r in rows)

            out[f"pgmq.read (batch {batch})"] = measure(conn, n, read)
            if batch == 10:

                def delete(held: list[int] = held) -> None:
                    for msg_id in held:
                        conn.execute("SELECT pgmq.delete(%s, %s::bigint)", (q, msg_id))

                out["pgmq.delete (per message)"] = measure(conn, n, delete)
            else:

                def delete_many(held: list[int] = held) -> None:
                    for s in range(0, len(held), 100):
                        conn.execute(
                            "SELECT count(*) FROM pgmq.delete(%s, %s::bigint[])",
                            (q, held[s : s + 100]),
                        )

                out["pgmq.delete(bigint[]) (100 per call)"] = measure(conn, n, delete_many)
    return out


# The rows of the budget: (retryq's case, pgmq's counterpart or None).
PAIRS = [
    ("acquire_retry_items (batch 10)", "pgmq.read (batch 10)"),
    ("complete_retry_item (per item)", "pgmq.delete (per message)"),
    ("acquire_retry_items (batch 100)", "pgmq.read (batch 100)"),
    ("complete_retry_items (100 per call)", "pgmq.delete(bigint[]) (100 per call)"),
    ("fail_retry_item (per item, retryable)", None),
    ("the guide's INSERT (one per transaction)", "pgmq.send (one per transaction)"),
    ("enqueue_retry_item (one per transaction)", "pgmq.send (one per transaction)"),
    ("enqueue_retry_items (1,000 per call)", "pgmq.send_batch (1,000 per call)"),
    ("add_many (COPY, 1,000 per call)", "pgmq.send_batch (1,000 per call)"),
]
DRAIN_SUMS = [
    (
        "per-item drain (acquire 10 + complete_retry_item)",
        ("acquire_retry_items (batch 10)", "complete_retry_item (per item)"),
        ("pgmq.read (batch 10)", "pgmq.delete (per message)"),
    ),
    (
        "batch drain (acquire 100 + complete_retry_items)",
        ("acquire_retry_items (batch 100)", "complete_retry_items (100 per call)"),
        ("pgmq.read (batch 100)", "pgmq.delete(bigint[]) (100 per call)"),
    ),
]


def _median(samples: list[Sample], attr: str) -> float | None:
    values = [getattr(s, attr) for s in samples if getattr(s, attr) is not None]
    return statistics.median(values) if values else None


def _f(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def report(
    runs: dict[str, list[Sample]], args: argparse.Namespace, where: str, load: tuple[float, ...]
) -> str:
    def cell(case: str | None, attr: str, digits: int = 0) -> str:
        return _f(_median(runs[case], attr), digits) if case and case in runs else "-"

    def ratio(a: str, b: str | None, attr: str) -> str:
        if not b or a not in runs or b not in runs:
            return "-"
        x, y = _median(runs[a], attr), _median(runs[b], attr)
        return f"{x / y:.2f}" if x is not None and y else "-"

    lines = [
        f"<!-- {SECTION} -->",
        "### Where the work goes: server CPU and WAL per item",
        "",
        f"`.venv/bin/python scripts/bench_budget.py --items {args.items} --rounds {args.rounds}`"
        f" ({where}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start). "
        f"Each function alone, serially on one connection in autocommit (each call its own "
        f"transaction, synchronous_commit on), over {args.items:,} items, median of "
        f"{args.rounds} rounds in which retryq and pgmq alternate. CPU: the backend process's "
        "own CPU time (utime + stime; parse, plan, execute, commit). exec: pg_stat_statements' "
        "executor time of the top-level statements. WAL: the pg_current_wal_lsn() difference "
        "(commit records included); FPI: full-page images per item (no CHECKPOINT is forced "
        "between cases, as on a hot queue). No VACUUM runs between the phases of a case; after "
        "each bulk load the tables get VACUUM ANALYZE, as autovacuum would.",
        "",
        "| function | CPU µs/item | exec µs/item | WAL B/item | FPI/item "
        "| pgmq counterpart | CPU µs/item | exec µs/item | WAL B/item | FPI/item "
        "| CPU ratio | WAL ratio |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for ours, theirs in PAIRS:
        lines.append(
            f"| {ours} | {cell(ours, 'cpu_us')} | {cell(ours, 'exec_us')} "
            f"| {cell(ours, 'wal_bytes')} | {cell(ours, 'wal_fpi', 3)} | {theirs or '-'} "
            f"| {cell(theirs, 'cpu_us')} | {cell(theirs, 'exec_us')} "
            f"| {cell(theirs, 'wal_bytes')} | {cell(theirs, 'wal_fpi', 3)} "
            f"| {ratio(ours, theirs, 'cpu_us')} | {ratio(ours, theirs, 'wal_bytes')} |"
        )

    def total(cases: tuple[str, ...], attr: str) -> float | None:
        vals = [_median(runs[c], attr) for c in cases if c in runs]
        return sum(v for v in vals if v is not None) if vals and None not in vals else None

    lines += [
        "",
        "| a drained item costs | retryq CPU µs | pgmq CPU µs | CPU ratio "
        "| retryq WAL B | pgmq WAL B | WAL ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ours_c, theirs_c in DRAIN_SUMS:
        oc, tc = total(ours_c, "cpu_us"), total(theirs_c, "cpu_us")
        ow, tw = total(ours_c, "wal_bytes"), total(theirs_c, "wal_bytes")
        lines.append(
            f"| {name} | {_f(oc)} | {_f(tc)} | {f'{oc / tc:.2f}' if oc and tc else '-'} "
            f"| {_f(ow)} | {_f(tw)} | {f'{ow / tw:.2f}' if ow and tw else '-'} |"
        )
    lines += [
        "",
        "Inside the functions (pg_stat_statements.track = all; the last round): the statements "
        "that took most executor time, per item.",
        "",
        "| function | statement | exec µs/item | WAL B/item |",
        "|---|---|---:|---:|",
    ]
    for ours, theirs in PAIRS[:5]:
        for case in (ours, theirs):
            if not case or case not in runs:
                continue
            for query, us, wal in runs[case][-1].inner[:3]:
                q = query.replace("|", "\\|")
                lines.append(f"| {case} | `{q}` | {us:.1f} | {wal:.0f} |")
    lines += ["", f"<!-- /{SECTION} -->"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=os.environ.get("RETRYQ_BENCH_DSN", DEFAULT_ADMIN_DSN))
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bin", type=Path, default=PG_BIN, help="PostgreSQL's bin directory")
    parser.add_argument("--write", type=Path, help="the BENCHMARKS.md whose section to replace")
    args = parser.parse_args(argv)

    from retryq_py import migrate

    load = os.getloadavg()

    @contextmanager
    def server() -> Iterator[tuple[str, str]]:
        if _preloaded(args.database):
            yield args.database, "the server given by --database"
            return
        with throwaway_cluster(args.bin) as dsn:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT version()").fetchone()
            version = str(row[0]).split(" on ")[0] if row else "?"
            yield dsn, f"a throwaway {version} cluster with pg_stat_statements preloaded"

    runs: dict[str, list[Sample]] = {}
    with server() as (dsn, where):
        cluster = Cluster(dsn)
        try:
            with connect(dsn) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            template = cluster.create("template")
            migrate.apply(cluster.dsn(template))
            with connect(cluster.dsn(template)) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for r in range(args.rounds):
                order: list[Callable[[], dict[str, Sample]]] = [
                    lambda: retryq_cases(cluster, template, args.items),
                    lambda: pgmq_cases(cluster, args.items),
                ]
                for fn in order if r % 2 == 0 else order[::-1]:
                    for case, sample in fn().items():
                        runs.setdefault(case, []).append(sample)
                        print(
                            f"round {r + 1}: {case:45s} CPU {_f(sample.cpu_us):>6s} µs "
                            f"exec {sample.exec_us:7.1f} µs WAL {sample.wal_bytes:7.0f} B "
                            f"wall {sample.wall_us:7.0f} µs",
                            flush=True,
                        )
        finally:
            cluster.drop_all()
    text = report(runs, args, where, load)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        print(f"wrote the {SECTION} section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
