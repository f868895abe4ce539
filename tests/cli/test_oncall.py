"""What an on-call engineer meets first in the CLI (issue 16's fresh-user
review): the dead-letter list says which request each dead letter was."""

from __future__ import annotations

from typing import Any

from tests.cli.test_cli import run_cli
from tests.cli.test_rough_edges import _dead_letter


def test_dead_letter_list_shows_the_correlation_id(dsn: str, conn: Any) -> None:
    item_id = _dead_letter(conn)
    conn.execute("UPDATE daz_retry_queue SET correlation_id = 'req-4711' WHERE id = %s", (item_id,))
    listed = run_cli("dead-letter", "list", dsn=dsn)
    assert listed.returncode == 0, listed.stderr
    assert "correlation_id" in listed.stdout and "req-4711" in listed.stdout


def test_worker_help_gives_each_signal_its_exit_code() -> None:
    """SIGTERM exits 0 and Ctrl-C 130 (the README's table); the help said
    'until SIGTERM/SIGINT (exit 130)'."""
    shown = run_cli("worker", "--help", dsn=None)
    assert shown.returncode == 0, shown.stderr
    assert "SIGTERM (exit 0), Ctrl-C (130)" in " ".join(shown.stdout.split())
