"""A NUL character (U+0000) in what an operator or a worker gives (a pause
reason, a filter, a circuit or rate-limit key, a worker id, a routing list)
is refused naming the field, as add/add_many/enqueue already were: before,
psycopg's DataError "PostgreSQL text fields cannot contain NUL (0x00)
bytes", with no SQLSTATE and no field, which the CLI reported as "database
error" with exit code 1 instead of a refused value (2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr

from retryq_py import RetryQueue, RetryWorker, ops
from retryq_py import admin as cmd
from retryq_py.admin import DeadLetterFilter, ExitCode
from retryq_py.cli.main import main
from retryq_py.worker.settings import Routing

Conn = psycopg.Connection[Any]
NUL = "a\x00b"


@pytest.fixture
def db(module_dsn: str, module_reset: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        conn.execute(module_reset)  # type: ignore[arg-type]
        yield conn


def _state(db: Conn) -> Any:
    return db.execute(
        "SELECT (SELECT array_agg(q::text ORDER BY id) FROM daz_retry_queue AS q),"
        " (SELECT array_agg(z::text) FROM _retryq_pause AS z),"
        " (SELECT array_agg(c::text) FROM _retryq_circuit AS c),"
        " (SELECT array_agg(r::text) FROM _retryq_rate_limit AS r)"
    ).fetchone()


QUEUE_CALLS: list[tuple[str, Callable[[RetryQueue], Any], str]] = [
    ("acquire worker_id", lambda q: q.acquire(NUL), "worker_id"),
    ("acquire event_types", lambda q: q.acquire("w", event_types=["e", NUL]), r"event_types\[1\]"),
    ("acquire plugin_names", lambda q: q.acquire("w", plugin_names=[NUL]), r"plugin_names\[0\]"),
    ("complete", lambda q: q.complete(1, NUL), "worker_id"),
    ("complete_many", lambda q: q.complete_many([1], NUL), "worker_id"),
    ("fail error", lambda q: q.fail(1, "w", NUL), "error_msg"),
    ("fail code", lambda q: q.fail(1, "w", "boom", NUL), "error_code"),
    ("snooze", lambda q: q.snooze(1, NUL, 5), "worker_id"),
    ("extend_lock", lambda q: q.extend_lock(1, NUL), "worker_id"),
    ("extend_locks", lambda q: q.extend_locks([1], NUL), "worker_id"),
    ("release", lambda q: q.release([1], NUL), "worker_id"),
    ("requeue", lambda q: q.requeue_dead_letters(plugin=NUL), "plugin_name"),
    ("purge", lambda q: q.purge_dead_letters(event_type=NUL), "event_type"),
    ("cancel plugin", lambda q: q.cancel(plugin=NUL), "plugin_name"),
    ("cancel error_code", lambda q: q.cancel(error_code=NUL), "error_code"),
    ("due", lambda q: q.due(plugin_names=["", NUL]), r"plugin_names\[1\]"),
]


@pytest.mark.parametrize(("verb", "call", "named"), QUEUE_CALLS, ids=[c[0] for c in QUEUE_CALLS])
def test_the_queue_client_names_a_nul(
    db: Conn, verb: str, call: Callable[[RetryQueue], Any], named: str
) -> None:
    q = RetryQueue(db)
    q.add("e", {})
    before = _state(db)
    with pytest.raises(pgerr.CharacterNotInRepertoire, match=f"invalid .*{named}.* U\\+0000"):
        call(q)
    assert _state(db) == before


OPS_CALLS: list[tuple[str, Callable[[Conn], Any], str]] = [
    ("pause reason", lambda c: ops.pause(c, "e", reason=NUL), "reason"),
    ("pause plugin", lambda c: ops.pause(c, "e", NUL), "plugin_name"),
    ("pause event_type", lambda c: ops.pause(c, NUL), "event_type"),
    ("resume", lambda c: ops.resume(c, "e", NUL), "plugin_name"),
    ("open", lambda c: ops.open_circuit(c, NUL), "event_type"),
    ("close", lambda c: ops.close_circuit(c, "e", NUL), "plugin_name"),
    ("configure", lambda c: ops.configure_circuit(c, "e", NUL, failure_threshold=3), "plugin_name"),
    ("rate set", lambda c: ops.set_rate_limit(c, "e", NUL, max_leases=3), "plugin_name"),
    ("rate clear", lambda c: ops.clear_rate_limit(c, NUL), "event_type"),
]


@pytest.mark.parametrize(("verb", "call", "named"), OPS_CALLS, ids=[c[0] for c in OPS_CALLS])
def test_the_operator_functions_name_a_nul(
    db: Conn, verb: str, call: Callable[[Conn], Any], named: str
) -> None:
    before = _state(db)
    with pytest.raises(pgerr.CharacterNotInRepertoire, match=f"invalid {named}: contains U\\+0000"):
        call(db)
    assert _state(db) == before


def test_a_dead_letter_filter_names_a_nul(db: Conn, module_dsn: str) -> None:
    t = cmd.target(module_dsn)
    with pytest.raises(pgerr.CharacterNotInRepertoire, match="invalid plugin_name"):
        cmd.dead_letter_list(t, DeadLetterFilter(plugin=NUL))
    with pytest.raises(pgerr.CharacterNotInRepertoire, match="invalid error_code"):
        cmd.dead_letter_purge(t, DeadLetterFilter(error_code=NUL))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["pause", "e", "--reason", NUL], "reason"),
        (["pause", "e", "--plugin", NUL], "plugin_name"),
        (["resume", NUL], "event_type"),
        (["cancel", "--plugin", NUL, "--yes"], "plugin_name"),
        (["dead-letter", "requeue", "--event-type", NUL], "event_type"),
        (["dead-letter", "purge", "--error-code", NUL, "--yes"], "error_code"),
        (["dead-letter", "list", "--plugin", NUL], "plugin_name"),
        (["rate-limits", "set", "e", "3", "--plugin", NUL], "plugin_name"),
        (["rate-limits", "clear", NUL], "event_type"),
    ],
)
def test_the_cli_exits_2_naming_a_nul(
    db: Conn,
    module_dsn: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    named: str,
) -> None:
    """A value the queue refuses: exit code 2 and one line naming the field
    (before: 1, "database error: PostgreSQL text fields cannot contain NUL")."""
    monkeypatch.setenv("RETRYQ_DATABASE_URL", module_dsn)
    before = _state(db)
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err
    assert done.value.code == ExitCode.USAGE, err
    assert f"invalid {named}" in err and "U+0000" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert _state(db) == before


def test_a_worker_names_a_nul_before_it_runs(module_dsn: str) -> None:
    with pytest.raises(ValueError, match=r"worker_id .* U\+0000"):
        RetryWorker(module_dsn, {"e": lambda item: None}, worker_id=NUL)
    with pytest.raises(ValueError, match=r"event_types: .* U\+0000"):
        Routing.of({NUL: object()})
    with pytest.raises(ValueError, match=r"plugin_names: .* U\+0000"):
        Routing.of({"e": object()}, plugin_names=["", NUL])
