"""`retryq worker` logs each failed attempt (warning) and each dead letter
(error) at the default level, as text or one JSON object per line, rate
limited (issue 16 item 3)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

import pytest

from retryq_py import RetryQueue
from retryq_py._sql import RetryQueueItem
from retryq_py.cli.logs import EventLog, TextFormatter
from retryq_py.worker import WorkerEvent
from tests.cli.test_rough_edges import REPO, argv, clean_env

# Run by one of .ci/run's passes only: the worker's log lines; their SQL is the worker
# scenarios' (tests/python) on every server.
pytestmark = pytest.mark.server_agnostic


def _item(n: int) -> RetryQueueItem:
    now = datetime.now(timezone.utc)
    return RetryQueueItem(
        n, uuid4(), "e", "", "", {}, 0, 3, 5, f"req-{n}", {}, [], now, now, now, None, None
    )


def test_a_failure_storm_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    events = EventLog(rate=1.0, burst=2, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="retryq.worker.items"):
        for n in range(5):
            events(WorkerEvent("failed", _item(n), "boom", "E1"))
        events(WorkerEvent("completed", _item(9)))  # never logged
        clock[0] = 1.0
        events(WorkerEvent("dead_lettered", _item(5), "gone", "E2"))
    records = caplog.records
    assert [r.levelname for r in records] == ["WARNING", "WARNING", "ERROR"]
    assert [r.item_id for r in records] == [0, 1, 5]  # type: ignore[attr-defined]
    assert records[2].suppressed == 3  # type: ignore[attr-defined]
    assert "3 more failure line(s) left out" in records[2].getMessage()


def test_the_count_left_out_is_said_when_the_storm_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [0.0]
    scheduled: list[tuple[float, Any]] = []
    events = EventLog(
        rate=1.0,
        burst=2,
        clock=lambda: clock[0],
        after=lambda seconds, callback: scheduled.append((seconds, callback)),
    )
    with caplog.at_level(logging.WARNING, logger="retryq.worker.items"):
        for n in range(5):
            events(WorkerEvent("failed", _item(n), "boom", "E1"))
        # the storm ends: no line comes to carry the count
        assert [seconds for seconds, _ in scheduled] == [1.0]
        clock[0] = 1.0
        scheduled.pop()[1]()
    records = caplog.records
    assert len(records) == 3
    assert records[2].suppressed == 3  # type: ignore[attr-defined]
    assert records[2].getMessage() == "3 failure line(s) left out by the rate limit"


def test_a_count_already_said_is_not_said_again(caplog: pytest.LogCaptureFixture) -> None:
    clock = [0.0]
    scheduled: list[Any] = []
    events = EventLog(
        rate=1.0, burst=1, clock=lambda: clock[0], after=lambda s, cb: scheduled.append(cb)
    )
    with caplog.at_level(logging.WARNING, logger="retryq.worker.items"):
        events(WorkerEvent("failed", _item(0), "boom", "E1"))
        events(WorkerEvent("failed", _item(1), "boom", "E1"))  # left out
        clock[0] = 1.0
        events(WorkerEvent("failed", _item(2), "boom", "E1"))  # says "1 more"
        scheduled.pop()()
        events.close()
    assert [getattr(r, "suppressed", 0) for r in caplog.records] == [0, 1]


def test_close_says_what_is_still_owed(caplog: pytest.LogCaptureFixture) -> None:
    events = EventLog(rate=1.0, burst=1, clock=lambda: 0.0, after=lambda s, cb: None)
    with caplog.at_level(logging.WARNING, logger="retryq.worker.items"):
        for n in range(3):
            events(WorkerEvent("dead_lettered", _item(n), "gone", "E2"))
        events.close()
        events.close()
    assert [getattr(r, "suppressed", 0) for r in caplog.records] == [0, 2]


def _run_worker(dsn: str, *extra: str) -> Any:
    return subprocess.run(
        argv(
            "worker",
            "--database",
            dsn,
            "--handlers",
            "tests.python.worker_handlers:HANDLERS",
            "--exit-when-idle",
            *extra,
        ),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _load(conn: Any) -> tuple[int, int, str]:
    q = RetryQueue(conn)
    down, event_id = q.add("down", {}, retry_delay=3600, correlation_id="req-7")
    broken, _ = q.add("broken", {})
    return down, broken, str(event_id)


def test_failures_show_in_the_log_at_the_default_level(dsn: str, conn: Any) -> None:
    down, broken, event_id = _load(conn)
    result = _run_worker(dsn)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if " WARNING " in line]
    error = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(warning) == 1 and len(error) == 1, result.stderr
    assert f"item {down} (down, event_id {event_id}, correlation_id req-7)" in warning[0]
    assert "attempt 1 of 4" in warning[0] and "dependency down" in warning[0]
    assert "next retry at" in warning[0]
    assert f"item {broken} (broken" in error[0] and "dead-lettered" in error[0]
    assert "[bad_payload]" in error[0]


def test_json_logs(dsn: str, conn: Any) -> None:
    down, broken, event_id = _load(conn)
    result = _run_worker(dsn, "--log-format", "json")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    by_level = {e["level"]: e for e in entries if e["logger"] == "retryq.worker.items"}
    failed, dead = by_level["warning"], by_level["error"]
    assert failed["item_id"] == down and failed["event_id"] == event_id
    assert failed["correlation_id"] == "req-7" and failed["attempt"] == 1
    assert failed["error"] == "dependency down"
    due = datetime.fromisoformat(failed["next_retry_at"])
    assert 3000 < (due - datetime.now(timezone.utc)).total_seconds() <= 3600
    assert dead["item_id"] == broken and dead["error_code"] == "bad_payload"
    # every line of the log is JSON: the worker's own messages, its banner too
    lines = result.stderr.splitlines()
    assert all(line.startswith("{") for line in lines), result.stderr
    banner = json.loads(lines[0])
    assert banner["message"].startswith("retryq worker: 4 handler(s)")
    assert banner["level"] == "info" and banner["logger"] == "retryq.worker"
    assert banner["handlers"] == ["broken", "down", "flaky", "ok"]
    assert banner["exits_when"] == "idle"
    assert banner["worker_id"].startswith("retryq-")


def test_a_bad_log_format_is_usage(dsn: str) -> None:
    result = _run_worker(dsn, "--log-format", "xml")
    assert result.returncode == 2 and "--log-format" in result.stderr


FORGED = "2026-11-30 07:00:00,000 INFO retryq.worker: worker w: all good"


def test_text_logs_escape_what_producers_and_handlers_wrote(dsn: str, conn: Any) -> None:
    """A newline in a producer's correlation_id forged a whole log line, an
    escape sequence reached the terminal (red team finding 10): each record
    is one line, its controls written as escapes."""
    down, _ = RetryQueue(conn).add(
        "down", {}, retry_delay=3600, correlation_id=f"req\n{FORGED}\x1b[2J\u202e\r"
    )
    result = _run_worker(dsn)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(line.startswith(FORGED[:23]) for line in lines), result.stderr
    assert not any(c in result.stderr for c in "\x1b\u202e\r"), repr(result.stderr)
    (warning,) = [line for line in lines if f"item {down} (down" in line]
    assert f"correlation_id req\\n{FORGED}\\x1b[2J\\u202e\\r)" in warning


def test_json_logs_escape_what_producers_wrote(dsn: str, conn: Any) -> None:
    RetryQueue(conn).add("down", {}, retry_delay=3600, correlation_id="r\n\x1b\u202e\u2028\x9b")
    result = _run_worker(dsn, "--log-format", "json")
    assert result.returncode == 0, result.stderr
    assert not any(c in result.stderr for c in "\x1b\u202e\u2028\x9b"), repr(result.stderr)
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    (failed,) = [e for e in entries if e.get("correlation_id")]
    assert failed["correlation_id"] == "r\n\x1b\u202e\u2028\x9b"


def test_a_traceback_in_the_text_log_is_indented_under_its_record() -> None:
    """A handler's error text with a newline, in a message and in the
    traceback of an exception, writes no line of its own at the margin."""
    text = f"boom\n{FORGED} \x1b[2J"
    try:
        raise RuntimeError(text)
    except RuntimeError:
        record = logging.getLogger("retryq.worker").makeRecord(
            "retryq.worker", logging.ERROR, __file__, 1, "on_event failed: %s", (text,), None
        )
        record.exc_info = sys.exc_info()
    out = TextFormatter().format(record)
    first, *rest = out.split("\n")
    assert first.endswith(f"ERROR retryq.worker: on_event failed: boom\\n{FORGED} \\x1b[2J")
    assert rest and all(line.startswith("    ") for line in rest), out
    assert "    RuntimeError: boom" in rest and f"    {FORGED} \\x1b[2J" in rest
    assert "\x1b" not in out
