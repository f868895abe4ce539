"""The benchmark must not rot: run scripts/bench with tiny sizes against the
test server and check the report it writes. Nothing here is about speed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.pg import Server

# Run by one of .ci/run's passes only: the benchmark harness, not the queue's SQL.
pytestmark = pytest.mark.server_agnostic

ROOT = Path(__file__).resolve().parents[2]

SECTIONS = [
    "## Command",
    "## Machine",
    "## Targets",
    "## Throughput",
    "## Acquire latency as the backlog grows (e)",
    "## Size after churn (f)",
    "## Enqueue-to-handler latency with NOTIFY (g)",
    "## Method",
]

# Measured only when the bench extra (pgmq, pgqueuer, procrastinate) is installed.
PGMQ_TARGETS = {
    "per-item drain / pgmq per-item (batch 10)",
    "batch drain / pgmq batch (batch 100)",
    "add_many / pgmq send_batch (same batch size)",
}
PEER_TARGETS = PGMQ_TARGETS | {
    "RetryWorker / pgqueuer",
    "RetryWorker / procrastinate",
    "4 RetryWorkers / pgqueuer (4 QueueManagers)",
    "4 RetryWorkers / procrastinate",
}
# The pgmq rows of the throughput table, measured side by side with retryq's.
PGMQ_ROWS = (
    "(a, pgmq) pgmq.read(batch 10) + pgmq.delete per message",
    "(a, pgmq) pgmq.read(batch 100) + pgmq.delete(bigint[]) per batch",
    "(d, pgmq) pgmq.send_batch, 250 messages per call (jsonb[])",
)
# Throughput ratios, judged on the median of per-run ratios listed in the table.
PAIRED_TARGETS = PEER_TARGETS | {
    "per-item drain / harness ceiling (batch 10)",
    "batch drain / harness ceiling (batch 100)",
    "add_many / one INSERT per transaction",
}


def _table(text: str, heading: str) -> list[list[str]]:
    """The rows of the Markdown table in the section under heading, header excluded."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows[2:]]


def _bench_databases(server: Server) -> set[str]:
    with psycopg.connect(server.dsn("postgres")) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'retryq_bench_%'"
        ).fetchall()
    return {r[0] for r in rows}


def test_bench_smoke_writes_a_well_formed_report(pg_server: Server, tmp_path: Path) -> None:
    before = _bench_databases(pg_server)
    committed = ROOT / "BENCHMARKS.md"
    committed_before = committed.read_bytes() if committed.exists() else None
    out = tmp_path / "BENCHMARKS.md"
    # another script's section in the same file survives the rewrite
    kept = "<!-- other_bench -->\n### Other\n\n| a | b |\n<!-- /other_bench -->"
    out.write_text(f"# Benchmarks\n\nstale text\n\n{kept}\n")
    with subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            "--smoke",
            "--database",
            pg_server.dsn("postgres"),
            "--output",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as proc:
        stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    text = out.read_text()

    for heading in SECTIONS:
        assert heading in text, heading
    assert "stale text" not in text
    assert text.count(kept) == 1
    assert "scripts/bench --smoke" in text

    try:
        import pgmq  # noqa: F401
        import pgqueuer  # noqa: F401
        import procrastinate  # noqa: F401

        peers = True
    except ImportError:
        peers = False

    targets = _table(text, "## Targets")
    names = [row[0] for row in targets]
    assert len(targets) == 14, names
    assert set(names) >= PAIRED_TARGETS, names
    for name, measured, required, verdict, per_run in targets:
        assert re.fullmatch(r"(<=|>=) \d+\.\d\d (x|ms)", required), (name, required)
        if name in PEER_TARGETS and not peers:
            assert verdict == "not measured", (name, verdict)
            continue
        # every other figure was measured: a number and a verdict
        assert re.fullmatch(r"\d+\.\d\d (x|ms)", measured), (name, measured)
        assert verdict == "met" or verdict.startswith("NOT met ("), (name, verdict)
        if name in PAIRED_TARGETS:
            assert re.fullmatch(r"\d+\.\d\d", per_run), (name, per_run)  # one smoke run
            assert measured == per_run + " x"

    # pgmq ran side by side: its rows hold one smoke run's figure each
    throughput = {row[0]: row for row in _table(text, "## Throughput")}
    for row_name in PGMQ_ROWS:
        _, runs, median = throughput[row_name]
        if peers:
            assert re.fullmatch(r"[\d,]+", runs) and runs == median, (row_name, runs, median)
        else:
            assert runs.startswith("not installed"), (row_name, runs)
    assert "pgmq" in dict(row[:2] for row in _table(text, "## Machine"))

    latency = _table(text, "## Acquire latency as the backlog grows (e)")
    assert [row[0] for row in latency] == [
        "100 due",
        "300 due",
        "1000 due",
        "100 due + 1000 retained",
    ]
    for _, p50, p99 in latency:
        assert float(p50.split()[0]) <= float(p99.split()[0])

    # the run cleans up after itself and leaves the committed report alone
    # its own databases (named by its pid: other runs may share the server)
    mine = f"retryq_bench_{proc.pid}_"
    assert {d for d in _bench_databases(pg_server) - before if d.startswith(mine)} == set()
    assert (committed.read_bytes() if committed.exists() else None) == committed_before


@pytest.mark.parametrize("bad", [["--only", "drain,bogus"], ["--quick", "--smoke"]])
def test_bench_refuses_bad_arguments(bad: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "bench.py"),
            *bad,
            "--output",
            str(tmp_path / "x.md"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert not (tmp_path / "x.md").exists()


def test_bench_ab_compares_a_revision_with_the_tree(pg_server: Server, tmp_path: Path) -> None:
    """scripts/bench_ab.py installs a git revision's migrations beside the
    tree's and drains both; tiny sizes, so only the report's shape is checked."""
    before = _bench_databases(pg_server)
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n")
    done = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "bench_ab.py"), "--base", "HEAD",
            "--items", "30", "--rounds", "1", "--admin-dsn", pg_server.dsn("postgres"),
            "--write", str(out),
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = _table(out.read_text(), "### Acquire and drain")
    assert [r[0] for r in rows] == ["complete_retry_items", "complete_retry_item"]
    for r in rows:
        assert re.fullmatch(r"\d+\.\d\dx", r[3]) and re.fullmatch(r"\d+\.\d\dx", r[4]), r
    assert _bench_databases(pg_server) == before
