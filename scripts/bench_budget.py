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
from dataclasses import dataclass
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
    this machine). The kernel reports it in clock ticks: a single call's share
    is 0 or a tick, and the sum over thousands of calls is what is reported."""
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
    """One round's cost of one case, summed over its calls."""

    items: int = 0
    cpu_s: float | None = 0.0  # backend CPU
    wal_lsn: int = 0  # WAL by LSN difference (commit records included)
    wall_s: float = 0.0  # client-side
    exec_ms: float = 0.0  # pg_stat_statements, top-level statements
    wal_records: int = 0
    wal_fpi: int = 0

    def per_item(self, attr: str) -> float | None:
        if not self.items:
            return None
        if attr == "cpu_us":
            return self.cpu_s * 1e6 / self.items if self.cpu_s is not None else None
        return {
            "wal_bytes": self.wal_lsn,
            "wall_us": self.wall_s * 1e6,
            "exec_us": self.exec_ms * 1e3,
            "wal_fpi": self.wal_fpi,
        }[attr] / self.items


class Meter:
    """Brackets every call on one connection: the backend's CPU before and
    after (read from /proc by this process, so it costs the server nothing),
    and the WAL position after each call, so that each call is charged the WAL
    written since the previous one (one connection, serial: nothing else
    writes in between). pg_stat_statements adds each function's executor time
    and WAL records; the statements inside the functions are kept per block."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.samples: dict[str, Sample] = {}
        self.inner: list[tuple[str, str, float, float, int]] = []  # block, query, ms, wal, items
        self.last_lsn = 0

    def reset(self) -> None:
        self.conn.execute("SELECT pg_stat_statements_reset()")
        self.last_lsn = _lsn(self.conn)

    def call(self, case: str, fn: Callable[[], Any], items: int | None = None) -> Any:
        sample = self.samples.setdefault(case, Sample())
        c0, t0 = _backend_cpu(self.pid), time.perf_counter()
        result = fn()
        t1, c1 = time.perf_counter(), _backend_cpu(self.pid)
        lsn = _lsn(self.conn)
        sample.items += len(result) if items is None else items
        if c0 is None or c1 is None or sample.cpu_s is None:
            sample.cpu_s = None
        else:
            sample.cpu_s += c1 - c0
        sample.wall_s += t1 - t0
        sample.wal_lsn += lsn - self.last_lsn
        self.last_lsn = lsn
        return result

    def statements(self, block: str, markers: dict[str, str], items: int) -> None:
        """Charges each top-level statement to the case whose marker its text
        contains, and keeps the block's inner statements (per drained item)."""
        rows = self.conn.execute(
            """
            SELECT toplevel, query, total_exec_time, wal_bytes, wal_records, wal_fpi
            FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND query NOT LIKE '%%pg_stat_statements%%'
                AND query NOT LIKE '%%pg_current_wal_lsn%%'
            """
        ).fetchall()
        for top, query, ms, wal, records, fpi in rows:
            if not top:
                self.inner.append((block, " ".join(query.split()), ms, float(wal), items))
                continue
            for case, marker in markers.items():
                if marker in query:
                    sample = self.samples.setdefault(case, Sample())
                    sample.exec_ms += ms
                    sample.wal_records += records
                    sample.wal_fpi += fpi
                    break


# ---------------------------------------------------------------- the cases

ACQUIRE = "SELECT id FROM acquire_retry_items(%s, %s, %s)"
COMPLETE = "SELECT complete_retry_item(%s, %s)"
COMPLETE_MANY = "SELECT complete_retry_items(%s, %s)"
FAIL = "SELECT fail_retry_item(%s, %s, %s, %s)"
READ = "SELECT msg_id FROM pgmq.read(%s, %s, %s)"
DELETE = "SELECT pgmq.delete(%s, %s::bigint)"
DELETE_MANY = "SELECT count(*) FROM pgmq.delete(%s, %s::bigint[])"
WORKER = "budget"


def _retryq_enqueue(meter: Meter, n: int) -> None:
    """Each enqueue path alone, n items, one transaction per call."""
    import bench_sql

    from retryq_py import RetryQueue

    conn = meter.conn
    params = [bench_sql._guide_params(k) for k in range(n)]
    case = "the guide's INSERT (one per transaction)"
    meter.reset()
    for p in params:
        meter.call(case, lambda p=p: conn.execute(bench_sql.GUIDE_INSERT, p).fetchall())  # type: ignore[arg-type]
    meter.statements(case, {case: "INSERT INTO daz_retry_queue"}, n)

    case = "enqueue_retry_item (one per transaction)"
    meter.reset()
    for k in range(n):
        meter.call(
            case,
            lambda k=k: conn.execute(
                "SELECT enqueue_retry_item(p_event_type => %s, p_event_data => %s,"
                " p_channel_name => %s, p_plugin_name => %s, p_event_metadata => %s,"
                " p_correlation_id => %s, p_tags => %s)",
                (
                    "bench.noop",
                    PAYLOAD,
                    "lobby",
                    "bench",
                    '{"retry_reason": "initial_failure"}',
                    f"corr-{k}",
                    ["bench", "lobby"],
                ),
            ).fetchall(),
        )
    meter.statements(case, {case: "enqueue_retry_item("}, n)

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
    case = "enqueue_retry_items (1,000 per call)"
    meter.reset()
    for d in docs:
        meter.call(
            case,
            lambda d=d: conn.execute(
                "SELECT id FROM enqueue_retry_items(%s::jsonb)", (d,)
            ).fetchall(),
        )
    meter.statements(case, {case: "enqueue_retry_items("}, n)

    queue = RetryQueue(conn)
    batches = [
        [bench_sql._new_item(k) for k in range(s, min(s + 1000, n))] for s in range(0, n, 1000)
    ]
    case = "add_many (COPY, 1,000 per call)"
    meter.reset()
    for b in batches:
        meter.call(case, lambda b=b: queue.add_many(b))
    meter.statements(case, {case: ""}, n)


def _retryq_drain(meter: Meter, n: int, batch: int) -> None:
    """A drain as the workers run it: acquire, then complete what it got."""
    conn = meter.conn
    acquire = f"acquire_retry_items (batch {batch})"
    complete = (
        "complete_retry_item (per item)" if batch == 10 else "complete_retry_items (100 per call)"
    )
    meter.reset()
    while rows := meter.call(
        acquire, lambda: conn.execute(ACQUIRE, (WORKER, batch, 300)).fetchall()
    ):
        ids = [r[0] for r in rows]
        if batch == 10:
            for item_id in ids:
                meter.call(
                    complete,
                    lambda i=item_id: conn.execute(COMPLETE, (i, WORKER)).fetchall(),
                    items=1,
                )
        else:
            meter.call(
                complete,
                lambda ids=ids: conn.execute(COMPLETE_MANY, (ids, WORKER)).fetchall(),
                items=len(ids),
            )
    meter.statements(
        f"drain, batch {batch}",
        {acquire: "acquire_retry_items(", complete: complete.split(" ")[0] + "("},
        n,
    )


def _retryq_fail(meter: Meter, n: int) -> None:
    """Every item acquired first (100 at a time, not charged), then each one
    failed once (retryable: it backs off). The failures trip the event type's
    circuit after its threshold, as a dependency that is down does; acquiring
    them all first keeps the open circuit from holding the rest back."""
    conn = meter.conn
    case = "fail_retry_item (per item, retryable)"
    ids: list[int] = []
    while rows := conn.execute(ACQUIRE, (WORKER, 100, 300)).fetchall():
        ids.extend(r[0] for r in rows)
    meter.reset()
    for item_id in ids:
        meter.call(
            case,
            lambda i=item_id: conn.execute(FAIL, (i, WORKER, "timeout", "E_TIMEOUT")).fetchall(),
            items=1,
        )
    meter.statements("fail", {case: "fail_retry_item("}, len(ids))


def retryq_cases(cluster: Cluster, template: str, n: int) -> Meter:
    """retryq's hot path, serially on one connection per database."""
    import bench_sql

    meters: list[Meter] = []
    with cluster.database("budget_rq_enqueue", template) as dsn, connect(dsn) as conn:
        meters.append(Meter(conn))
        _retryq_enqueue(meters[-1], n)
    for batch in (10, 100):
        with cluster.database("budget_rq_drain", template) as dsn, connect(dsn) as conn:
            load_items(conn, n)
            vacuum_analyze(dsn, bench_sql.TABLES)
            meters.append(Meter(conn))
            _retryq_drain(meters[-1], n, batch)
    with cluster.database("budget_rq_fail", template) as dsn, connect(dsn) as conn:
        load_items(conn, n)
        vacuum_analyze(dsn, bench_sql.TABLES)
        meters.append(Meter(conn))
        _retryq_fail(meters[-1], n)
    return _merge(meters)


def pgmq_cases(cluster: Cluster, n: int) -> Meter:
    """pgmq's counterparts (loaded from PyPI's pgmq package), the same way."""
    from psycopg.types.json import Jsonb

    q = bench_pgmq.QUEUE
    meters: list[Meter] = []
    with cluster.database("budget_pgmq_send") as dsn, connect(dsn) as conn:
        bench_pgmq.install(dsn)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        meter = Meter(conn)
        meters.append(meter)
        messages = [bench_pgmq.message(k) for k in range(n)]
        case = "pgmq.send (one per transaction)"
        meter.reset()
        for m in messages:
            meter.call(
                case,
                lambda m=m: conn.execute(
                    "SELECT pgmq.send(%s, %s::jsonb)", (q, Jsonb(m))
                ).fetchall(),
            )
        meter.statements(case, {case: "pgmq.send("}, n)
        case = "pgmq.send_batch (1,000 per call)"
        meter.reset()
        for s in range(0, n, 1000):
            meter.call(
                case,
                lambda s=s: conn.execute(
                    "SELECT * FROM pgmq.send_batch(%s, %s::jsonb[])",
                    (q, [Jsonb(m) for m in messages[s : s + 1000]]),
                ).fetchall(),
            )
        meter.statements(case, {case: "pgmq.send_batch("}, n)

    for batch in (10, 100):
        with cluster.database("budget_pgmq_drain") as dsn, connect(dsn) as conn:
            bench_pgmq.install(dsn)
            bench_pgmq.load_messages(dsn, n)
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            meter = Meter(conn)
            meters.append(meter)
            read = f"pgmq.read (batch {batch})"
            delete = (
                "pgmq.delete (per message)"
                if batch == 10
                else "pgmq.delete(bigint[]) (100 per call)"
            )
            meter.reset()
            while rows := meter.call(
                read,
                lambda b=batch: conn.execute(READ, (q, 300, b)).fetchall(),
            ):
                ids = [r[0] for r in rows]
                if batch == 10:
                    for msg_id in ids:
                        meter.call(
                            delete,
                            lambda i=msg_id: conn.execute(DELETE, (q, i)).fetchall(),
                            items=1,
                        )
                else:
                    meter.call(
                        delete,
                        lambda ids=ids: conn.execute(DELETE_MANY, (q, ids)).fetchall(),
                        items=len(ids),
                    )
            meter.statements(
                f"pgmq drain, batch {batch}",
                {read: "pgmq.read(", delete: "::bigint[]" if batch == 100 else "::bigint)"},
                n,
            )
    return _merge(meters)


def _merge(meters: list[Meter]) -> Meter:
    out = meters[0]
    for m in meters[1:]:
        out.samples.update(m.samples)
        out.inner.extend(m.inner)
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
    values = [v for s in samples if (v := s.per_item(attr)) is not None]
    return statistics.median(values) if values else None


def _f(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def report(
    runs: dict[str, list[Sample]],
    inner: list[tuple[str, str, float, float, int]],
    args: argparse.Namespace,
    where: str,
    load: tuple[float, ...],
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
        "Serially on one connection in autocommit (each call its own transaction, "
        f"synchronous_commit on), {args.items:,} items per case, median of {args.rounds} rounds "
        "in which retryq and pgmq alternate. The drains run as a worker runs them (acquire or "
        "read, then complete or delete what it got) and every call is charged its own cost: "
        "CPU: the backend process's CPU time read from /proc before and after the call (parse, "
        "plan, execute, commit; reported by the kernel in 10 ms ticks, so only the sum over "
        "thousands of calls means anything); exec: pg_stat_statements' executor time of the "
        "call's top-level statement; WAL: the pg_current_wal_lsn() difference across the call "
        "(commit records included); FPI: full-page images per item (no CHECKPOINT is forced "
        "between cases, as on a hot queue). The tables get VACUUM ANALYZE after each bulk load, "
        "as autovacuum would; none runs during a case. fail_retry_item: every item acquired "
        "first (not charged), then each failed once (retryable, so it backs off); the failures "
        "trip the event type's circuit after its threshold, as a dependency that is down does.",
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
        "Inside the functions (pg_stat_statements.track = all; the last round): per block, the "
        "statements that took most executor time, per item of the block.",
        "",
        "| block | statement inside a function | exec µs/item | WAL B/item |",
        "|---|---|---:|---:|",
    ]
    blocks = list(dict.fromkeys(b for b, *_ in inner))
    for block in blocks:
        rows = sorted((r for r in inner if r[0] == block), key=lambda r: -r[2])
        for _, query, ms, wal, items in rows[:4]:
            q = query[:100].replace("|", "\\|")
            lines.append(f"| {block} | `{q}` | {ms * 1000 / items:.1f} | {wal / items:.0f} |")
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
    inner: list[tuple[str, str, float, float, int]] = []
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
                order: list[Callable[[], Meter]] = [
                    lambda: retryq_cases(cluster, template, args.items),
                    lambda: pgmq_cases(cluster, args.items),
                ]
                last_inner: list[tuple[str, str, float, float, int]] = []
                for fn in order if r % 2 == 0 else order[::-1]:
                    meter = fn()
                    last_inner += meter.inner
                    for case, sample in meter.samples.items():
                        if case.startswith("_"):
                            continue
                        runs.setdefault(case, []).append(sample)
                        print(
                            f"round {r + 1}: {case:40s} CPU {_f(sample.per_item('cpu_us')):>5s}"
                            f" µs exec {_f(sample.per_item('exec_us'), 1):>6s} µs WAL "
                            f"{_f(sample.per_item('wal_bytes')):>5s} B wall "
                            f"{_f(sample.per_item('wall_us')):>5s} µs",
                            flush=True,
                        )
                inner = last_inner
        finally:
            cluster.drop_all()
    text = report(runs, inner, args, where, load)
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
        print(f"wrote the {SECTION} section of {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
