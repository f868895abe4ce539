"""retryq benchmark: throughput and latency side by side with the harness
ceiling and with pgqueuer and procrastinate, written to BENCHMARKS.md.

Every ratio compares figures measured in this one invocation: each run
measures a queue and its reference back to back, and a target is judged on
the median of the per-run ratios. The run creates its own databases on the
server given by --database (cloned from a template with retryq installed by
its migrations) and drops them at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_peers
import bench_pgmq
import bench_sql
import psycopg
from bench_db import DEFAULT_ADMIN_DSN, Cluster

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    drain: int  # (a, b) items per drain run
    peers: int  # (c) jobs per worker run
    single: int  # (d) one INSERT per transaction
    many: int  # (d) items through add_many
    many_chunk: int  # (d) items per add_many call
    dues: tuple[int, ...]  # (e) backlogs
    retained: int  # (e) completed items kept next to the smallest backlog
    samples: int  # (e) acquires per round
    live: int  # (f) live set
    churn: int  # (f) items churned through completion and cleanup
    churn_round: int  # (f) items per enqueue/drain/cleanup round
    notify: int  # (g) samples per round
    runs: int


FULL = Sizes(
    drain=20_000,
    peers=10_000,
    single=2_000,
    many=50_000,
    many_chunk=1_000,
    dues=(10_000, 100_000, 1_000_000),
    retained=1_000_000,
    samples=1_000,
    live=100_000,
    churn=1_000_000,
    churn_round=50_000,
    notify=30,
    runs=3,
)
QUICK = Sizes(
    drain=3_000,
    peers=600,
    single=500,
    many=10_000,
    many_chunk=1_000,
    dues=(1_000, 10_000, 100_000),
    retained=100_000,
    samples=300,
    live=10_000,
    churn=100_000,
    churn_round=5_000,
    notify=15,
    runs=3,
)
SMOKE = Sizes(
    drain=200,
    peers=60,
    single=50,
    many=500,
    many_chunk=250,
    dues=(100, 300, 1_000),
    retained=1_000,
    samples=20,
    live=200,
    churn=1_000,
    churn_round=100,
    notify=3,
    runs=1,
)


@dataclass
class Target:
    name: str
    measured: float | None
    required: float
    unit: str
    higher_is_better: bool = True
    runs: list[float] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        if self.higher_is_better:
            return self.measured >= self.required
        return self.measured <= self.required

    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        if self.met:
            return "met"
        share = self.measured / self.required
        if self.higher_is_better:
            return f"NOT met ({share:.0%} of the target: {1 - share:.0%} short)"
        return f"NOT met ({share:.2f} x the limit: {share - 1:.0%} over)"


@dataclass
class Results:
    runs: dict[str, list[float]] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    size: dict[str, Any] = field(default_factory=dict)
    notify: list[dict[str, float]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # each run's figures by key, so that a ratio pairs figures of one run even
    # when a measurement failed in another
    by_run: list[dict[str, float]] = field(default_factory=list)

    def start_run(self) -> None:
        self.by_run.append({})

    def add(self, key: str, value: float) -> None:
        self.runs.setdefault(key, []).append(value)
        if self.by_run:
            self.by_run[-1][key] = value

    def median(self, key: str) -> float | None:
        values = self.runs.get(key)
        return statistics.median(values) if values else None

    def ratios(self, top: str, bottom: str) -> list[float]:
        """The per-run ratios top/bottom (each pair measured back to back), of
        the runs in which both were measured."""
        return [r[top] / r[bottom] for r in self.by_run if r.get(top) and r.get(bottom)]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine(admin_dsn: str) -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        names = [
            ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")
        ]
        info["CPU"] = (
            f"{names[0] if names else platform.processor()}, {os.cpu_count()} logical cores"
        )
    except OSError:
        info["CPU"] = f"{platform.processor()}, {os.cpu_count()} logical cores"
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["Memory"] = f"{int(mem) / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    try:
        load = os.getloadavg()
        info["Load average at start"] = f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    except OSError:
        pass
    info["OS"] = platform.platform()
    info["Python"] = platform.python_version()
    info["psycopg"] = psycopg.__version__
    for name, ver in {**bench_pgmq.versions(), **bench_peers.peer_versions()}.items():
        info[name] = ver or "not installed"
    with psycopg.connect(admin_dsn) as conn:
        row = conn.execute("SELECT version()").fetchone()
        info["PostgreSQL"] = str(row[0]).split(" on ")[0] if row else "?"
        settings = conn.execute(
            """
            SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
            FROM pg_settings
            WHERE name IN ('shared_buffers', 'fsync', 'synchronous_commit', 'autovacuum',
                'wal_level', 'max_wal_size', 'full_page_writes', 'jit')
            """
        ).fetchone()
        info["PostgreSQL settings"] = str(settings[0]) if settings else "?"
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "migrations", "retryq_py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        info["retryq commit"] = rev + (" (migrations or retryq_py modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def _rate(value: float | None) -> str:
    return f"{value:,.0f}/s" if value else "-"


def attempt(res: Results, key: str, fn: Callable[[], Any]) -> Any:
    """Runs one measurement; a failure is recorded and reported, not fatal."""
    try:
        return fn()
    except ImportError as exc:
        res.skipped.setdefault(key, f"not installed ({exc.name})")
    except Exception as exc:
        res.skipped[key] = f"failed: {type(exc).__name__}: {exc}".splitlines()[0][:300]
        traceback.print_exc()
    return None


def measure(cluster: Cluster, template: str, sizes: Sizes, only: set[str]) -> Results:
    res = Results()
    for run in range(1, sizes.runs + 1):
        log(f"run {run}/{sizes.runs}")
        res.start_run()
        # A B A B: which system goes first alternates from run to run, so that
        # a load that rises or falls during a run does not favour one of them.
        retryq_first = run % 2 == 1
        if "drain" in only:
            for batch, per_item in ((10, True), (100, False)):
                ceiling = attempt(
                    res,
                    f"ceiling{batch}",
                    lambda b=batch: bench_sql.ceiling(cluster, sizes.drain, b),
                )
                pair: dict[str, float | None] = {}
                measurements: list[tuple[str, Callable[[], Any]]] = [
                    (
                        f"drain{batch}",
                        lambda b=batch, p=per_item: bench_sql.drain(
                            cluster, template, sizes.drain, b, p
                        ),
                    ),
                    (
                        f"pgmq{batch}",
                        lambda b=batch, p=per_item: bench_pgmq.drain(cluster, sizes.drain, b, p),
                    ),
                ]
                for key, fn in measurements if retryq_first else measurements[::-1]:
                    pair[key] = attempt(res, key, fn)
                drained, pgmq = pair[f"drain{batch}"], pair[f"pgmq{batch}"]
                floor = None
                if per_item:
                    floor = attempt(
                        res,
                        f"drain{batch}_raw",
                        lambda b=batch: bench_sql.drain(
                            cluster, template, sizes.drain, b, True, raw=True
                        ),
                    )
                for key, value in (
                    (f"ceiling{batch}", ceiling),
                    (f"drain{batch}", drained),
                    (f"drain{batch}_raw", floor),
                    (f"pgmq{batch}", pgmq),
                ):
                    if value:
                        res.add(key, value)
                log(
                    f"  batch {batch}: ceiling {_rate(ceiling)}, retryq {_rate(drained)}, "
                    f"pgmq {_rate(pgmq)}"
                    + (f", the move as plain SQL {floor:,.0f}/s" if floor else "")
                )
        if "enqueue" in only:
            single = attempt(
                res, "single", lambda: bench_sql.enqueue_single(cluster, template, sizes.single)
            )
            pair = {}
            measurements = [
                (
                    "add_many",
                    lambda: bench_sql.enqueue_many(cluster, template, sizes.many, sizes.many_chunk),
                ),
                (
                    "send_batch",
                    lambda: bench_pgmq.enqueue_batch(cluster, sizes.many, sizes.many_chunk),
                ),
            ]
            for key, fn in measurements if retryq_first else measurements[::-1]:
                pair[key] = attempt(res, key, fn)
            many, send_batch = pair["add_many"], pair["send_batch"]
            for key, value in (("single", single), ("add_many", many), ("send_batch", send_batch)):
                if value:
                    res.add(key, value)
            log(
                f"  enqueue: single {_rate(single)}, add_many {_rate(many)}, "
                f"pgmq send_batch {_rate(send_batch)}"
            )
        if "workers" in only:
            got: dict[str, Any] = {}
            measurements = [
                (
                    "retryworker",
                    lambda: bench_peers.retryworker_drain(cluster, template, sizes.peers),
                ),
                (
                    "retryworker4",
                    lambda: bench_peers.retryworker_drain(
                        cluster, template, sizes.peers, instances=4
                    ),
                ),
                ("pgqueuer", lambda: bench_peers.pgqueuer_drain(cluster, sizes.peers)),
                ("procrastinate", lambda: bench_peers.procrastinate_drain(cluster, sizes.peers)),
            ]
            for key, fn in measurements if retryq_first else measurements[::-1]:
                got[key] = attempt(res, key, fn)
            rw, rw4, pgq, proc = (
                got[k] for k in ("retryworker", "retryworker4", "pgqueuer", "procrastinate")
            )
            runs = (
                ("retryworker", rw),
                ("retryworker4", rw4),
                ("pgqueuer", pgq),
                ("procrastinate", proc),
            )
            for key, value in runs:
                if value:
                    res.add(key, value[0])
                    res.add(f"{key}_whole", value[1])
            log(
                "  workers (to the last handler): "
                + ", ".join(f"{k} {v[0]:,.0f}/s" if v else f"{k} -" for k, v in runs)
            )
        if "notify" in only:
            lat = attempt(
                res, "notify", lambda: bench_peers.notify_latency(cluster, template, sizes.notify)
            )
            if lat:
                res.notify.append(lat)
                log(f"  NOTIFY wake-up: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms")
    if "latency" in only:
        log("acquire latency as the backlog grows")
        lat = attempt(
            res,
            "latency",
            lambda: bench_sql.acquire_latency(
                cluster,
                template,
                list(sizes.dues),
                sizes.retained,
                sizes.samples,
                max(3, sizes.runs),
            ),
        )
        if lat:
            res.latency = lat
            for k, v in lat.items():
                log(f"  {k}: p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms")
    if "size" in only:
        log(f"size after churning {sizes.churn:,} items next to {sizes.live:,} live ones")
        size = attempt(
            res,
            "size",
            lambda: bench_sql.churn_size(
                cluster, template, sizes.live, sizes.churn, sizes.churn_round
            ),
        )
        if size:
            res.size = size
            log(f"  fresh {size['fresh']['total']:,} B, after churn {size['churned']['total']:,} B")
    return res


def targets(res: Results, sizes: Sizes) -> list[Target]:
    def paired(name: str, top: str, bottom: str, required: float) -> Target:
        """Judged on the median of the per-run ratios, each pair measured back to back."""
        ratios = res.ratios(top, bottom)
        median = statistics.median(ratios) if ratios else None
        return Target(name, median, required, "x", runs=ratios)

    out = [
        paired("per-item drain / harness ceiling (batch 10)", "drain10", "ceiling10", 0.6),
        paired("batch drain / harness ceiling (batch 100)", "drain100", "ceiling100", 5),
        paired("per-item drain / pgmq per-item (batch 10)", "drain10", "pgmq10", 1.0),
        paired("batch drain / pgmq batch (batch 100)", "drain100", "pgmq100", 1.0),
        paired("add_many / pgmq send_batch (same batch size)", "add_many", "send_batch", 1.0),
        paired("RetryWorker / pgqueuer", "retryworker", "pgqueuer", 2.0),
        paired("RetryWorker / procrastinate", "retryworker", "procrastinate", 10),
        paired("4 RetryWorkers / pgqueuer (4 QueueManagers)", "retryworker4", "pgqueuer", 1.5),
        paired("4 RetryWorkers / procrastinate", "retryworker4", "procrastinate", 10),
        paired("add_many / one INSERT per transaction", "add_many", "single", 30),
    ]
    small = min(sizes.dues)
    base = res.latency.get(f"{small} due", {}).get("p99")
    for key in (f"{max(sizes.dues)} due", f"{small} due + {sizes.retained} retained"):
        p99 = res.latency.get(key, {}).get("p99")
        out.append(
            Target(
                f"acquire p99 at {key} / p99 at {small} due",
                p99 / base if p99 and base else None,
                1.5,
                "x",
                higher_is_better=False,
            )
        )
    fresh = res.size.get("fresh", {}).get("total")
    churned = res.size.get("churned", {}).get("total")
    out.append(
        Target(
            "table+index size after churn / fresh",
            churned / fresh if fresh and churned else None,
            2,
            "x",
            higher_is_better=False,
        )
    )
    p50 = statistics.median(n["p50"] for n in res.notify) if res.notify else None
    out.append(Target("NOTIFY wake-up p50", p50, 20, "ms", higher_is_better=False))
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "x":
        return f"{value:.2f} x"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def report(
    res: Results, sizes: Sizes, label: str, command: str, info: dict[str, str], seconds: float
) -> str:
    ts = targets(res, sizes)
    lines = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench` (do not edit by hand). Every ratio compares figures measured",
        "in the same invocation: each run measures a queue and its reference back to back, and a",
        "target is judged on the median of the per-run ratios.",
        "",
        "## Command",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Sizes: {label} ({sizes.runs} runs). Finished "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC after {seconds / 60:.1f} min.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Targets",
        "",
        "| target | measured | required | verdict | per run |",
        "|---|---:|---:|---|---|",
    ]
    for t in ts:
        bound = (">= " if t.higher_is_better else "<= ") + _fmt(t.required, t.unit)
        per_run = ", ".join(f"{r:.2f}" for r in t.runs)
        lines.append(
            f"| {t.name} | {_fmt(t.measured, t.unit)} | {bound} | {t.verdict()} | {per_run} |"
        )
    lines += ["", f"## Throughput (items per second; median of {sizes.runs} runs)", ""]
    rows = [
        (
            "ceiling10",
            "(b) harness ceiling, batch 10: a SELECT per batch, an UPDATE + commit per item",
        ),
        ("drain10", "(a) acquire_retry_items(batch 10) + complete_retry_item per item"),
        ("pgmq10", "(a, pgmq) pgmq.read(batch 10) + pgmq.delete per message"),
        (
            "drain10_raw",
            "(a, reference) the same, complete_retry_item's move as one plain SQL statement",
        ),
        ("ceiling100", "(b) harness ceiling, batch 100"),
        ("drain100", "(a) acquire_retry_items(batch 100) + complete_retry_items per batch"),
        ("pgmq100", "(a, pgmq) pgmq.read(batch 100) + pgmq.delete(bigint[]) per batch"),
        ("retryworker", "(c) RetryWorker, worker_count 4, batch 10, no-op handler (*)"),
        ("retryworker4", "(c) 4 RetryWorkers side by side, worker_count 1 each, batch 10 (*)"),
        ("pgqueuer", "(c) pgqueuer: 4 QueueManagers (a connection each), batch 10, drain mode (*)"),
        ("procrastinate", "(c) procrastinate worker, concurrency 4, wait=False (*)"),
        ("retryworker_whole", "(c) RetryWorker, over the whole run (start-up to exit)"),
        ("retryworker4_whole", "(c) 4 RetryWorkers, over the whole run"),
        ("pgqueuer_whole", "(c) pgqueuer, over the whole run"),
        ("procrastinate_whole", "(c) procrastinate, over the whole run"),
        ("single", "(d) the guide's INSERT, one transaction each"),
        ("add_many", f"(d) RetryQueue.add_many, {sizes.many_chunk:,} items per call"),
        (
            "send_batch",
            f"(d, pgmq) pgmq.send_batch, {sizes.many_chunk:,} messages per call (jsonb[])",
        ),
    ]
    lines += ["| measurement | runs | median |", "|---|---|---:|"]
    for key, text in rows:
        values = res.runs.get(key, [])
        runs = ", ".join(f"{v:,.0f}" for v in values) or res.skipped.get(key, "-")
        lines.append(f"| {text} | {runs} | {_fmt(res.median(key))} |")
    lines += [
        "",
        f"Drain runs: {sizes.drain:,} items, 4 threads with one connection each. Worker runs: "
        f"{sizes.peers:,} jobs. Enqueue: {sizes.single:,} single INSERTs, {sizes.many:,} items "
        "through add_many and as many messages through pgmq's send_batch.",
        "",
        "pgmq runs the same drain loop (the same threads, connections and payload) through its "
        "own functions, in a database of its own with pgmq's SQL loaded from PyPI's `pgmq` "
        "package and one logged queue (`pgmq.create`). In every run retryq and pgmq are measured "
        "back to back, and which goes first alternates from run to run (A B, B A, ...); the pgmq "
        "targets are the medians of those per-run ratios. What each side does per item differs: "
        "retryq keeps a completed item (moved to the finished partition, with its attempt history) "
        "until cleanup and leases by priority, then due time; pgmq deletes the message and reads "
        "in id order. A pgmq message carries the payload only, a retryq item also its event type, "
        "metadata, correlation id and tags.",
        "",
    ]
    floor = res.ratios("drain10_raw", "ceiling10")
    if floor:
        lines += [
            "The per-item reference row is the floor of this design's per-item path: the move "
            "from the active to the finished partition (a DELETE and an INSERT) as one plain "
            "statement, without the function. It reached "
            f"{statistics.median(floor):.2f} x the harness ceiling (median of the per-run ratios "
            f"{', '.join(f'{r:.2f}' for r in floor)}), against the single-row UPDATE of the "
            "ceiling.",
            "",
        ]
    lines += [
        "(*) Judged figure: jobs over the time from starting the worker (start-up included) to",
        "its last handler call. How a worker notices the empty queue and exits is left out for",
        "all three (pgqueuer's drain mode takes seconds to exit); the whole-run rows include it.",
        "",
        "## Acquire latency as the backlog grows (e)",
        "",
        f"acquire_retry_items(batch 10) from one connection, {sizes.samples} samples per round, "
        f"median of {max(3, sizes.runs)} rounds. Steady state: every sample's items are completed "
        "and as many new due items added (untimed), so the backlog stays the same.",
        "",
        "| backlog | p50 | p99 |",
        "|---|---:|---:|",
    ]
    for key, v in res.latency.items():
        lines.append(f"| {key} | {v['p50']:.2f} ms | {v['p99']:.2f} ms |")
    if not res.latency:
        lines.append(f"| - | {res.skipped.get('latency', '-')} | |")
    lines += ["", "## Size after churn (f)", ""]
    if res.size:
        f, c = res.size["fresh"], res.size["churned"]
        lines += [
            f"{sizes.live:,} pending items (due tomorrow) stay in the queue while {sizes.churn:,} "
            f"items go through it in rounds of {sizes.churn_round:,}: enqueue_retry_items, a drain "
            "by 4 threads (acquire 100, complete_retry_items), cleanup_retry_queue(0). After each "
            "round every table whose dead tuples pass its autovacuum threshold (the server's "
            "settings and the table's own reloptions) is vacuumed with plain VACUUM, as autovacuum "
            f"would ({res.size['vacuums']} VACUUMs); the server's own autovacuum setting is shown "
            f"above. Churn took {res.size['churn_seconds']:.0f} s. Fresh: the same live set loaded "
            "into an empty queue, then VACUUM ANALYZE.",
            "",
            "| | table | indexes | total |",
            "|---|---:|---:|---:|",
            f"| fresh | {_mib(f['table'])} | {_mib(f['index'])} | {_mib(f['total'])} |",
            f"| after churn | {_mib(c['table'])} | {_mib(c['index'])} | {_mib(c['total'])} |",
            "",
            "| relation | fresh: table | fresh: indexes | after churn: table "
            "| after churn: indexes |",
            "|---|---:|---:|---:|---:|",
            *[
                f"| {rel} | {_mib(f['relations'][rel]['table'])} "
                f"| {_mib(f['relations'][rel]['index'])} | {_mib(c['relations'][rel]['table'])} "
                f"| {_mib(c['relations'][rel]['index'])} |"
                for rel in c["relations"]
                if rel in f["relations"]
            ],
        ]
    else:
        lines.append(res.skipped.get("size", "-"))
    lines += ["", "## Enqueue-to-handler latency with NOTIFY (g)", ""]
    if res.notify:
        lines += [
            "RetryWorker (worker_count 1) idle with poll_interval 30 s; the guide's INSERT "
            f"committed on its own, then the time until the handler starts; {sizes.notify} items "
            "one at a time per run.",
            "",
            "| run | p50 | p99 |",
            "|---|---:|---:|",
            *[
                f"| {i} | {n['p50']:.1f} ms | {n['p99']:.1f} ms |"
                for i, n in enumerate(res.notify, 1)
            ],
        ]
    else:
        lines.append(res.skipped.get("notify", "-"))
    if res.skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"- {k}: {v}" for k, v in res.skipped.items()]
    lines += [
        "",
        "## Method",
        "",
        "- Every measurement gets a fresh database, cloned from a template that retryq's",
        "  migrations built (pgqueuer and procrastinate install their own schemas into theirs).",
        "- After each bulk load: VACUUM ANALYZE, which autovacuum would do (the server's",
        "  autovacuum setting is listed above).",
        "- The harness ceiling is the same Python loop, threads and connections as the drain with",
        "  the queue taken out: what this machine's Python, psycopg and PostgreSQL commit path do.",
        "- Timings are wall-clock; the machine may be shared, which is why only ratios measured",
        "  side by side are judged.",
        "",
    ]
    return "\n".join(lines)


def kept_sections(path: Path) -> str:
    """Sections that other scripts keep in the same file between
    <!-- name --> and <!-- /name --> markers: carried over unchanged."""
    if not path.exists():
        return ""
    old = path.read_text()
    blocks = [
        m.group(0) for m in re.finditer(r"<!-- ([\w.-]+) -->.*?<!-- /\1 -->", old, flags=re.DOTALL)
    ]
    if not blocks:
        return ""
    return "\n## Other measurements (kept from their own scripts)\n\n" + "\n\n".join(blocks) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database",
        default=os.environ.get("RETRYQ_BENCH_DSN", DEFAULT_ADMIN_DSN),
        help="a database on the server to use for CREATE/DROP DATABASE "
        "(default: local PostgreSQL, or RETRYQ_BENCH_DSN)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="about a tenth of the full sizes")
    size.add_argument("--smoke", action="store_true", help="tiny sizes, one run (for CI)")
    parser.add_argument("--runs", type=int, help="runs per throughput measurement")
    parser.add_argument(
        "--retained",
        type=int,
        help="(e) completed items kept next to the smallest backlog "
        "(default: 1,000,000 full, 100,000 quick; 10,000,000 loads in about 8 min here)",
    )
    parser.add_argument(
        "--only",
        default="drain,enqueue,workers,notify,latency,size",
        help="comma-separated subset of: drain,enqueue,workers,notify,latency,size",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "BENCHMARKS.md",
        help="where to write the report (default: BENCHMARKS.md)",
    )
    args = parser.parse_args(argv)

    sizes, label = (
        (SMOKE, "smoke") if args.smoke else (QUICK, "quick") if args.quick else (FULL, "full")
    )
    if args.runs:
        sizes = Sizes(**{**asdict(sizes), "runs": args.runs})
    if args.retained:
        sizes = Sizes(**{**asdict(sizes), "retained": args.retained})
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {"drain", "enqueue", "workers", "notify", "latency", "size"}
    if unknown:
        parser.error(f"--only: unknown measurement {', '.join(sorted(unknown))}")
    command = "scripts/bench" + "".join(
        " " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )

    from retryq_py import migrate

    # SIGTERM ends the run like Ctrl-C: the finally below drops its databases
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    info = machine(args.database)
    cluster = Cluster(args.database)
    try:
        template = cluster.create("template")
        migrate.apply(cluster.dsn(template))
        res = measure(cluster, template, sizes, only)
    finally:
        cluster.drop_all()
    seconds = time.perf_counter() - started
    text = report(res, sizes, label, command, info, seconds)
    args.output.write_text(text + kept_sections(args.output))
    print()
    for t in targets(res, sizes):
        print(f"{t.name:60s} {_fmt(t.measured, t.unit):>12s}  {t.verdict()}")
    print(f"\nwrote {args.output} after {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
