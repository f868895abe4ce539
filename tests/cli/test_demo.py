"""`retryq demo`: the planned mix, the throwaway schema, the embedded server
end to end, and cleanup when interrupted."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from retryq_py import RetryQueue
from retryq_py import admin as cmd
from retryq_py.cli.demo import CHAT, DEMO_SCHEMA, SQL_FAILED, UNKNOWN, make_plan, run_demo

# Run by one of .ci/run's passes only: the demo's process and cleanup (the embedded tests
# start a PostgreSQL 18 of their own anyway); its queue work is the worker scenarios'.
pytestmark = pytest.mark.server_agnostic

RETRYQ = Path(sys.executable).with_name("retryq")
ARGV = [str(RETRYQ)] if RETRYQ.exists() else [sys.executable, "-m", "retryq_py.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_")}


def _schema_exists(conn: Any) -> bool:
    row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (DEMO_SCHEMA,)).fetchone()
    return bool(row and row[0])


def _data_dir(out: str) -> str:
    """The embedded server's directory, as the demo reports it."""
    match = re.search(r"\(data in (\S+), removed at the end\)", out)
    assert match, out
    return match.group(1)


def _gone(directory: str) -> None:
    assert not os.path.exists(directory)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert directory not in ps  # no postgres process left on that data dir


def test_plan_is_a_realistic_mix_with_known_outcomes() -> None:
    plan = make_plan(400)
    assert len(plan.items) == 400 == plan.completed + plan.dead
    assert sum(plan.kinds.values()) == 400
    assert all(n > 0 for n in plan.kinds.values()), plan.kinds
    types = {i["event_type"] for i in plan.items}
    assert types == {CHAT, SQL_FAILED, UNKNOWN}
    sql_item = next(i for i in plan.items if i["event_type"] == SQL_FAILED)
    assert {"query", "params", "correlation_id", "error"} <= set(sql_item["data"])
    assert make_plan(400) == plan  # seeded: the same plan every run


def test_demo_in_a_throwaway_schema(dsn: str, conn: Any) -> None:
    public_id, _ = RetryQueue(conn).add("real.work", {"keep": True})
    buffer = io.StringIO()
    result = run_demo(Console(file=buffer, width=160), dsn, items=60, workers=2)
    text = buffer.getvalue()
    assert (result.completed, result.dead) == (result.plan.completed, result.plan.dead)
    assert result.dead == len(result.dead_letters) > 0
    assert sum(c.processed for c in result.counts) == result.plan.completed
    assert "daz_retry_queue_stats" in text and "error history" in text
    assert f"Dropped the demo schema {DEMO_SCHEMA}" in text
    assert not _schema_exists(conn)
    # the real queue in public is untouched
    rows = conn.execute("SELECT id, status FROM daz_retry_queue").fetchall()
    assert rows == [(public_id, "pending")]


def test_demo_keep_then_refuses_to_reuse_the_schema(dsn: str, conn: Any) -> None:
    try:
        result = run_demo(Console(file=io.StringIO()), dsn, items=20, workers=1, keep=True)
        assert _schema_exists(conn)
        kept = cmd.stats(cmd.target(dsn, DEMO_SCHEMA))
        assert kept.total == 20
        assert kept.totals["dead_letter"] == result.plan.dead
        with pytest.raises(cmd.UsageProblem, match="already exists"):
            run_demo(Console(file=io.StringIO()), dsn, items=20)
        assert _schema_exists(conn)
    finally:
        conn.execute(f"DROP SCHEMA IF EXISTS {DEMO_SCHEMA} CASCADE")


def test_demo_rejects_bad_sizes() -> None:
    with pytest.raises(cmd.UsageProblem, match="--items"):
        run_demo(Console(file=io.StringIO()), "dbname=x", items=0)
    with pytest.raises(cmd.UsageProblem, match="--workers"):
        run_demo(Console(file=io.StringIO()), "dbname=x", workers=0)


def _interrupt_when_running(args: list[str], sig: int) -> tuple[int, str, str]:
    """Start `retryq demo ...`, send sig once its workers run, return (rc, out, err)."""
    proc = subprocess.Popen(
        [*ARGV, "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        # a background shell may ignore SIGINT; the demo must see it as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    watchdog = threading.Timer(120, proc.kill)  # a hung demo fails the test, not the run
    watchdog.start()
    try:
        seen: list[str] = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("Running "):
                break
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
    return proc.returncode, "".join(seen) + out, err


def test_demo_interrupted_drops_its_schema(dsn: str, conn: Any) -> None:
    rc, out, err = _interrupt_when_running(["--database", dsn, "--items", "5000"], signal.SIGINT)
    assert "Running " in out
    assert rc == 130, err
    assert "Traceback" not in err
    assert not _schema_exists(conn)


@pytest.mark.slow
def test_demo_embedded_end_to_end() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*ARGV, "demo"], capture_output=True, text=True, env=_env(), timeout=120
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < 30, f"demo took {elapsed:.1f} s"
    assert "Traceback" not in result.stderr
    plan = make_plan(200)
    out = result.stdout
    assert "Starting an embedded PostgreSQL" in out
    assert "daz_retry_queue_stats" in out
    assert (
        f"total 200: pending 0, processing 0, completed {plan.completed}, "
        f"dead_letter {plan.dead}" in out
    )
    assert f"dead letters ({plan.dead}, newest first)" in out
    assert "error history" in out and "unknown event type: cytube.event.mediaUpdate" in out
    assert "retryq demo --database postgresql://" in out
    assert "Stopped the embedded PostgreSQL and removed its directory." in out
    _gone(_data_dir(out))


@pytest.mark.slow
def test_demo_embedded_interrupted_removes_the_server() -> None:
    rc, out, err = _interrupt_when_running(["--items", "5000"], signal.SIGINT)
    assert "Running " in out
    assert rc == 130, err
    assert "Traceback" not in err
    _gone(_data_dir(out))
