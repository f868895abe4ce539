"""Session settings a role, a database or PG* variables give retryq's
connections (red team findings 1, 2 and 6).

Each setting is made where an operator makes it: ALTER ROLE ... IN DATABASE
on a login role of the test's own database, ALTER DATABASE on a database of
the test's own, or an environment variable of a CLI process. Every test
failed before the fix (see the commit message): the worker dead-lettered
every item as undecodable under a non-ISO DateStyle, one item blocked every
lease under LATIN1, a worker on a read-only role never ended, and the CLI
worker hung on a handler's non-daemon thread.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from retryq_py import AsyncRetryQueue, RetryQueue, SessionSettingError, ops
from retryq_py.worker import WorkerCounts
from tests.helpers import reset, statuses, wait_until
from tests.python import pooler
from tests.python.workers import WorkerType

Conn = psycopg.Connection[Any]
FAST = {"poll_interval": 0.2, "lock_timeout": 5, "cleanup_interval": 0, "max_backoff": 0.2}
REPO = Path(__file__).resolve().parents[2]
RETRYQ = Path(sys.executable).with_name("retryq")
POISON = {"msg": "h\u00e9llo \U0001f642"}  # LATIN1 has the é, not the emoji

# DateStyles psycopg cannot read a timestamptz in (only ISO), and settings
# that change the text of other types retryq reads.
DATESTYLES = ["German", "SQL, DMY", "Postgres, MDY"]
OTHER_SETTINGS = {
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "-15",
    "bytea_output": "escape",
    "TimeZone": "America/St_Johns",
    "standard_conforming_strings": "off",
}


@pytest.fixture
def db(module_dsn: str) -> Iterator[Conn]:
    with psycopg.connect(module_dsn, autocommit=True) as conn:
        reset(conn)
        yield conn


@pytest.fixture
def role(module_dsn: str, db: Conn) -> Iterator[Callable[..., str]]:
    """A factory: a DSN of a login role (of every retryq group) whose sessions
    in the module's database have the settings given (ALTER ROLE ... IN DATABASE)."""
    name = f"t_sess_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    dbname = conninfo_to_dict(module_dsn)["dbname"]
    db.execute(
        sql.SQL("CREATE ROLE {} LOGIN IN ROLE retryq_worker, retryq_producer, retryq_admin").format(
            sql.Identifier(name)
        )
    )

    def make(**settings: str) -> str:
        for key, value in settings.items():
            db.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(name),
                    sql.Identifier(dbname),
                    sql.Identifier(key),
                    sql.Literal(value),
                )
            )
        return make_conninfo(module_dsn, user=name)

    try:
        yield make
    finally:
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def run_until_drained(worker: Any, timeout: float = 20.0) -> WorkerCounts:
    """worker.run(exit_when_drained=True) in a thread; fails if it raises or
    has not returned by `timeout` (then it is stopped)."""
    result: list[WorkerCounts] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(worker.run(exit_when_drained=True, install_signal_handlers=False))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        worker.stop(force=True)
        thread.join(10)
        raise AssertionError(f"the worker did not finish within {timeout}s")
    if errors:
        raise errors[0]
    return result[0]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO) -> Any:
    """`retryq ARGS` in a subprocess, with a deadline (a hang fails the test)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RETRYQ_", "PG"))}
    argv = [str(RETRYQ)] if RETRYQ.exists() else [sys.executable, "-m", "retryq_py.cli"]
    path = os.pathsep.join([str(REPO), str(cwd)])
    return subprocess.run(
        [*argv, *args],
        capture_output=True,
        text=True,
        env={**base, "PYTHONPATH": path, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


# -- 1. DateStyle (and the other output settings) ------------------------------------


@pytest.mark.parametrize(
    "settings",
    [{"DateStyle": d} for d in DATESTYLES] + [OTHER_SETTINGS],
    ids=[*DATESTYLES, "other"],
)
def test_the_worker_runs_every_item_whatever_the_roles_output_settings(
    Worker: WorkerType, db: Conn, role: Callable[..., str], settings: dict[str, str]
) -> None:
    """Before: under a non-ISO DateStyle every leased item was a dead letter
    (retryq.undecodable_item: "can't parse timestamptz with DateStyle")."""
    dsn = role(**settings)
    q = RetryQueue(db)
    ids = [q.add("e", {"i": i}).id for i in range(3)]
    ran: list[int] = []
    counts = run_until_drained(Worker(dsn, {"e": lambda it: ran.append(it.id)}, **FAST))
    assert (counts.processed, counts.dead_lettered) == (3, 0)
    assert sorted(ran) == ids
    assert statuses(db) == {"completed": 3}


@pytest.mark.parametrize("datestyle", DATESTYLES)
def test_the_queue_client_reads_on_a_callers_connection_whatever_its_datestyle(
    db: Conn, role: Callable[..., str], datestyle: str
) -> None:
    """Before: add_many, stats, get, acquire and the ops lists raised
    NotImplementedError on the caller's own connection."""
    with psycopg.connect(role(DateStyle=datestyle), autocommit=True) as conn:
        assert not conn.info.parameter_status("DateStyle").startswith("ISO")  # type: ignore[union-attr]
        q = RetryQueue(conn)
        first = q.add_many([{"event_type": "e", "data": {"i": i}} for i in range(2)])
        # a refused item is found by probes that read the clock too
        bad = [{"event_type": "e", "data": {}}, {"event_type": "e", "data": {}, "priority": 11}]
        with pytest.raises(psycopg.errors.CheckViolation, match=r"item 1: .*priority"):
            q.add_many(bad)
        assert [s.item_count for s in q.stats()] == [2]
        entry = q.get(first[0].id)
        assert entry is not None and entry.created_at.tzinfo is not None
        (leased,) = q.acquire("w", 1)
        assert leased.locked_until > leased.created_at
        ops.pause(conn, "e", reason="test")
        (paused,) = ops.list_pauses(conn)
        assert paused.event_type == "e" and paused.paused_at is not None
        metrics = ops.collect_queue_metrics(conn)
        assert (metrics.sizes["pending"], metrics.sizes["processing"]) == (1, 1)


async def test_the_async_client_on_a_callers_connection_reads_iso_free_and_refuses_latin1(
    db: Conn, role: Callable[..., str]
) -> None:
    """AsyncRetryQueue as RetryQueue: times in binary whatever DateStyle,
    a non-UTF8 connection refused before any statement."""
    RetryQueue(db).add("e", POISON)
    dsn = role(DateStyle="German")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        q = AsyncRetryQueue(conn)
        (leased,) = await q.acquire("w", 1)
        assert leased.event_data == POISON and leased.locked_until > leased.created_at
    async with await psycopg.AsyncConnection.connect(
        dsn, autocommit=True, client_encoding="LATIN1"
    ) as conn:
        with pytest.raises(SessionSettingError, match="this one is LATIN1"):
            await AsyncRetryQueue(conn).stats()


def test_the_metrics_collector_reads_whatever_the_roles_settings(
    db: Conn, role: Callable[..., str]
) -> None:
    """Before: the scrape read retryq_queue_up 0 under a non-ISO DateStyle
    (the circuit, pause and dead-letter rows hold times)."""
    from retryq_py.metrics import QueueCollector

    q = RetryQueue(db)
    dead = q.add("e\U0001f642", POISON).id
    (leased,) = q.acquire("w", 1)
    q.fail(dead, "w", "boom", retryable=False, leased_at=leased.leased_at)
    ops.pause(db, "other")
    collector = QueueCollector(role(DateStyle="German", client_encoding="LATIN1"))
    try:
        families = {f.name: f for f in collector.collect()}
    finally:
        collector.close()
    assert [s.value for s in families["retryq_queue_up"].samples] == [1]


def test_a_client_side_cursor_is_refused_naming_the_datestyle(
    db: Conn, role: Callable[..., str]
) -> None:
    """A ClientCursor reads text only: a clear refusal, not NotImplementedError."""
    dsn = role(DateStyle="SQL, DMY")
    with psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.ClientCursor) as conn:
        q = RetryQueue(conn)
        q.add("e", {})  # no time in its answer: fine
        with pytest.raises(SessionSettingError, match=r"DateStyle ISO; it is 'SQL, DMY'"):
            q.stats()
        with pytest.raises(SessionSettingError, match="DateStyle"):
            q.add_many([{"event_type": "e", "data": {}}])
        assert statuses(db) == {"pending": 1}  # nothing written by the refused add_many


def test_a_pool_given_to_a_worker_must_be_iso(
    Worker: WorkerType, db: Conn, role: Callable[..., str]
) -> None:
    """The worker's flush reads text: on a pool of yours with another DateStyle
    it stops with a clear error instead of dead-lettering every item."""
    dsn = role(DateStyle="German")
    item = RetryQueue(db).add("e", {}).id
    pool = ConnectionPool(dsn, min_size=1, max_size=6, kwargs={"autocommit": True}, open=True)
    try:
        with pytest.raises(SessionSettingError, match="DateStyle ISO; it is 'German, DMY'"):
            run_until_drained(Worker(pool, {"e": lambda it: None}, **FAST))
    finally:
        pool.close()
    row = db.execute("SELECT status FROM daz_retry_queue WHERE id = %s", [item]).fetchone()
    assert row == ("pending",)


def test_the_cli_reads_whatever_the_databases_datestyle(
    new_database: Any, template_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `retryq stats`, `dead-letter list` and `cancel` exited 1 with
    NotImplementedError (ALTER DATABASE ... SET DateStyle)."""
    from retryq_py.cli import main

    dsn = str(new_database(template_db))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(
                sql.Identifier(conninfo_to_dict(dsn)["dbname"])
            )
        )
        q = RetryQueue(conn)
        q.add("e", {})
        dead = q.add("dead", {}).id
        (leased,) = q.acquire("w", 1, event_types=["dead"])
        q.fail(dead, "w", "boom", retryable=False, leased_at=leased.leased_at)

    def run(*args: str) -> tuple[int, str]:
        try:
            main([*args, "--database", dsn])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out + out.err

    code, text = run("stats")
    assert code == 0 and "dead_letter" in text, text
    code, text = run("dead-letter", "list")
    assert code == 0 and "boom" in text, text
    code, text = run("cancel", "--event-type", "e", "--yes")
    assert code == 0 and "cancelled 1" in text, text


def test_the_dashboard_shows_every_screen_whatever_the_databases_settings(
    new_database: Any, template_db: str
) -> None:
    """Before: /, /items, /items/ID, /dead-letters and /workers answered 500
    (NotImplementedError) under DateStyle 'SQL, DMY'; an emoji under LATIN1
    made them fail with 22P05."""
    from starlette.testclient import TestClient

    from retryq_py.web import create_app, web_config

    dsn = str(new_database(template_db))
    with psycopg.connect(dsn, autocommit=True) as conn:
        q = RetryQueue(conn)
        dead = q.add("e", POISON).id
        (leased,) = q.acquire("w", 1)
        q.fail(dead, "w", "no \U0001f642", retryable=False, leased_at=leased.leased_at)
        pending = q.add("e", POISON).id
        name = sql.Identifier(conninfo_to_dict(dsn)["dbname"])
        conn.execute(sql.SQL("ALTER DATABASE {} SET DateStyle = 'SQL, DMY'").format(name))
        conn.execute(sql.SQL("ALTER DATABASE {} SET client_encoding = 'LATIN1'").format(name))
    web = TestClient(create_app(web_config(dsn)), base_url="http://localhost")  # type: ignore[arg-type]
    for path in ("/", "/items", f"/items/{pending}", f"/items/{dead}", "/dead-letters", "/workers"):
        page = web.get(path)
        assert page.status_code == 200, (path, page.text[:300])
    assert "\U0001f642" in web.get(f"/items/{pending}").text


def test_the_worker_drains_a_non_iso_database_through_pgbouncer(
    Worker: WorkerType, new_database: Any, template_db: str
) -> None:
    """PgBouncer (transaction mode) refuses a startup `options`; the worker's
    SET DateStyle at connect survives it because PgBouncer tracks DateStyle
    and sets it on every server connection it lends."""
    if not pooler.available():
        pytest.skip("pgbouncer is not installed")
    dsn = str(new_database(template_db))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET DateStyle = 'German'").format(
                sql.Identifier(conninfo_to_dict(dsn)["dbname"])
            )
        )
        ids = [RetryQueue(conn).add("e", {"i": i}).id for i in range(20)]
    with pooler.pgbouncer(dsn) as params:
        through = make_conninfo(dsn, **params)
        ran: list[int] = []
        counts = run_until_drained(
            Worker(through, {"e": lambda it: ran.append(it.id)}, batch_size=3, **FAST),
            timeout=60,
        )
    assert (counts.processed, counts.dead_lettered) == (20, 0)
    assert sorted(ran) == ids


# -- 2. client_encoding ---------------------------------------------------------------


def test_an_item_latin1_cannot_hold_never_blocks_the_others(
    Worker: WorkerType, db: Conn, role: Callable[..., str]
) -> None:
    """Before: with the role's client_encoding LATIN1 every lease failed 22P05
    (the emoji has no LATIN1 form) and was retried forever, the plain item
    included. The worker's own connections talk UTF8: both run."""
    q = RetryQueue(db)
    ids = [q.add("e", POISON).id, q.add("e", {"msg": "plain"}).id]
    dsn = role(client_encoding="LATIN1")
    seen: dict[int, Any] = {}
    counts = run_until_drained(
        Worker(dsn, {"e": lambda it: seen.__setitem__(it.id, it.event_data)}, **FAST)
    )
    assert counts.processed == 2
    assert seen == {ids[0]: POISON, ids[1]: {"msg": "plain"}}


def test_a_callers_latin1_connection_is_refused_clearly(
    Worker: WorkerType, db: Conn, role: Callable[..., str]
) -> None:
    """On a connection or pool of yours, retryq sets nothing: it refuses a
    client_encoding other than UTF8 before any statement (before: acquire
    failed 22P05 at every call while the poison item was first)."""
    RetryQueue(db).add("e", POISON)
    dsn = role(client_encoding="LATIN1")
    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        pytest.raises(SessionSettingError, match=r"client_encoding UTF8.*this one is LATIN1"),
    ):
        RetryQueue(conn).acquire("w", 10)
    pool = ConnectionPool(dsn, min_size=1, max_size=6, kwargs={"autocommit": True}, open=True)
    try:
        with pytest.raises(SessionSettingError, match="LATIN1"):
            run_until_drained(Worker(pool, {"e": lambda it: None}, **FAST))
    finally:
        pool.close()
    assert statuses(db) == {"pending": 1}


@pytest.mark.server_agnostic
def test_the_cli_talks_utf8_whatever_pgclientencoding_says(dsn: str, conn: Conn) -> None:
    """Before: with PGCLIENTENCODING=LATIN1 `retryq stats` and `dead-letter
    list` exited 1 (22P05) as soon as one item held an emoji."""
    q = RetryQueue(conn)
    bad = q.add("e\U0001f642", POISON).id
    (leased,) = q.acquire("w", 1)
    q.fail(bad, "w", "no \U0001f642 here", retryable=False, leased_at=leased.leased_at)
    env = {"PGCLIENTENCODING": "LATIN1", "PYTHONIOENCODING": "utf-8"}
    stats = cli("stats", "--database", dsn, env=env)
    assert stats.returncode == 0 and "e\U0001f642" in stats.stdout, stats.stderr
    dead = cli("dead-letter", "list", "--database", dsn, env=env)
    assert dead.returncode == 0 and "\U0001f642" in dead.stdout, dead.stderr


# -- 6. runs that never ended -----------------------------------------------------------


@pytest.mark.server_agnostic
def test_the_cli_worker_refuses_a_read_only_role_at_start(
    db: Conn, role: Callable[..., str], tmp_path: Path
) -> None:
    """Before: the start-up check passed (a SELECT works) and --exit-when-idle
    looped on 25006 for ever. Now: exit 2 (configuration), one line."""
    (tmp_path / "ro_handlers.py").write_text("HANDLERS = {'e': lambda item: None}\n")
    RetryQueue(db).add("e", {})
    dsn = role(default_transaction_read_only="on")
    result = cli(
        "worker",
        "--database",
        dsn,
        "--handlers",
        "ro_handlers:HANDLERS",
        "--exit-when-idle",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "read-only: default_transaction_read_only is on" in result.stderr
    assert statuses(db) == {"pending": 1}


def test_a_read_only_session_at_runtime_is_named_in_the_log_and_counted(
    Worker: WorkerType, db: Conn, role: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    """A worker (no start-up check of its own) on a read-only session waits
    25006 out, as after a failover: the log says why, the metric counts it."""

    def count() -> float:
        labels = {"sqlstate": "25006", "kind": "transient"}
        return REGISTRY.get_sample_value("retryq_worker_database_errors_total", labels) or 0.0

    RetryQueue(db).add("e", {})
    before = count()
    worker = Worker(role(default_transaction_read_only="on"), {"e": lambda it: None}, **FAST)
    with caplog.at_level(logging.WARNING, logger="retryq.worker"):
        thread = worker.start(exit_when_drained=True)
        try:
            wait_until(lambda: count() > before, timeout=10, what="25006 counted")
        finally:
            worker.stop(force=True)
            thread.join(10)
    assert any(
        "database read-only (a standby, or default_transaction_read_only on)" in r.getMessage()
        and "25006" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


@pytest.mark.server_agnostic
def test_the_cli_worker_exits_past_a_handlers_non_daemon_thread(
    dsn: str, conn: Conn, tmp_path: Path
) -> None:
    """Before: it printed its counts, then Python waited for the thread for ever."""
    (tmp_path / "thread_handlers.py").write_text(
        "import threading\n"
        "def start(item):\n"
        "    threading.Thread(target=threading.Event().wait, name='sender', daemon=False).start()\n"
        "HANDLERS = {'e': start}\n"
    )
    RetryQueue(conn).add("e", {})
    result = cli(
        "worker",
        "--database",
        dsn,
        "--handlers",
        "thread_handlers:HANDLERS",
        "--exit-when-idle",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "completed 1" in result.stdout
    assert "1 thread(s) a handler started still run ('sender')" in result.stderr
