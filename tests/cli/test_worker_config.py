"""`retryq worker` with a configuration that can never work exits with one
line and its exit code instead of retrying forever; a timeout at start-up
is not unreachability; a handlers module that exits at import is an import
error; two SIGTERMs back to back never hang it. Each failed on main."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from psycopg import errors as pgerrors

from retryq_py.cli.main import _exit_for
from tests.cli.test_cli import REPO, one_line_error
from tests.cli.test_rough_edges import argv, clean_env

# the process's exit code and output: once, on the default server
pytestmark = pytest.mark.server_agnostic

HANDLERS = '''
def ok(item):
    pass

HANDLERS = {"t.ok": ok, KEY: ok}
'''


def worker(dsn: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv("worker", "--database", dsn, "--exit-when-idle", *args),
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("key", ['" "', '""', '"\\u200b"'])
def test_a_blank_handler_key_exits_2_with_one_line(dsn: str, tmp_path: Path, key: str) -> None:
    """Was: every acquire refused with 22023, retried forever; never exited."""
    (tmp_path / "blank_handlers.py").write_text(HANDLERS.replace("KEY", key))
    result = worker(dsn, tmp_path, "--handlers", "blank_handlers:HANDLERS")
    line = one_line_error(result)
    assert result.returncode == 2, result.stderr
    assert "event_types" in line and "blank" in line, line


@pytest.mark.parametrize("gen", ["def gen(item):\n    yield", "async def gen(item):\n    yield"])
def test_a_generator_function_handler_exits_2_with_one_line(
    dsn: str, tmp_path: Path, gen: str
) -> None:
    """Was: each of its items completed without a line of the handler run."""
    (tmp_path / "gen_handlers.py").write_text(f'{gen}\n\nHANDLERS = {{"t.gen": gen}}\n')
    result = worker(dsn, tmp_path, "--handlers", "gen_handlers:HANDLERS")
    line = one_line_error(result)
    assert result.returncode == 2, result.stderr
    assert "'t.gen' is a generator function" in line, line


def test_a_blank_plugin_exits_2_with_one_line(dsn: str, tmp_path: Path) -> None:
    (tmp_path / "ok_handlers.py").write_text(HANDLERS.replace("KEY", '"t.other"'))
    result = worker(dsn, tmp_path, "--handlers", "ok_handlers:HANDLERS", "--plugin", " ")
    line = one_line_error(result)
    assert result.returncode == 2, result.stderr
    assert "plugin_names" in line and "blank" in line, line


def test_a_handlers_module_that_exits_at_import_is_an_import_error(
    dsn: str, tmp_path: Path
) -> None:
    """Was: exit 0 and no message, as if the worker had run."""
    (tmp_path / "exiting.py").write_text("import sys\nsys.exit(0)\nHANDLERS = {}\n")
    result = worker(dsn, tmp_path, "--handlers", "exiting:HANDLERS")
    line = one_line_error(result)
    assert result.returncode == 1, result.stderr
    assert line == "retryq: importing exiting: SystemExit: 0", line


@pytest.mark.parametrize(
    ("call", "shown"), [("sys.exit()", "None"), ("sys.exit('bye')", "bye")]
)
def test_a_handlers_module_exiting_says_the_code_it_gave(
    dsn: str, tmp_path: Path, call: str, shown: str
) -> None:
    """A bare sys.exit() read `SystemExit: SystemExit` (its empty text
    replaced by the class name)."""
    (tmp_path / "exiter.py").write_text(f"import sys\n{call}\nHANDLERS = {{}}\n")
    result = worker(dsn, tmp_path, "--handlers", "exiter:HANDLERS")
    line = one_line_error(result)
    assert result.returncode == 1, result.stderr
    assert line == f"retryq: importing exiter: SystemExit: {shown}", line


def test_a_statement_timeout_is_not_unreachability() -> None:
    """57014 at the start-up check exited 3, "database unreachable"."""
    message, code = _exit_for(pgerrors.QueryCanceled("canceling statement due to user request"))
    assert code == 1 and "canceling statement" in message
    assert _exit_for(pgerrors.AdminShutdown("terminating connection"))[1] == 3


def test_two_sigterms_back_to_back_never_hang_the_worker(dsn: str) -> None:
    """gdb once showed `retryq worker` deadlocked inside the stop's
    Event.set() after a second SIGTERM; signals are relayed now. Many runs,
    each stopped by two SIGTERMs at once: every one exits 0."""
    for _ in range(8):
        proc = subprocess.Popen(
            argv(
                "worker", "--database", dsn, "--handlers", "tests.python.worker_handlers:HANDLERS"
            ),
            cwd=REPO,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            assert proc.stderr.readline().startswith("retryq worker:")  # signals handled
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
        assert "completed 0" in out
