"""Fixtures: one template database built from the migrations per session,
cloned for every test that needs an installed queue."""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, settings
from pytest_postgresql.janitor import DatabaseJanitor

from retryq_py import migrate
from tests.pg import Server, find_server

_counter = itertools.count()

# `ci` (the default) keeps the whole suite within its budget; `deep` is for
# scripts/deep-tests. Both may share a function-scoped database across
# examples: the tests that do so reset it themselves.
_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
settings.register_profile(
    "ci", max_examples=25, stateful_step_count=30, deadline=None,
    derandomize=False, suppress_health_check=_HEALTH, print_blob=True,
)
settings.register_profile(
    "deep", max_examples=1000, stateful_step_count=80, deadline=None,
    suppress_health_check=_HEALTH, print_blob=True,
)
# scripts/mutation-check: a failure is all it needs, so no shrinking, and no
# example database (a mutant's failures must not be replayed on sound code).
settings.register_profile(
    "mutation", parent=settings.get_profile("ci"), database=None,
    phases=[Phase.explicit, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _janitor(server: Server, dbname: str, template: str | None = None) -> DatabaseJanitor:
    return DatabaseJanitor(
        user=server.user,
        host=server.host,
        port=server.port,
        password=server.password,
        dbname=dbname,
        template_dbname=template,
    )


def pytest_report_header(config: pytest.Config) -> str:
    return "retryq: PostgreSQL from " + find_server().origin


@pytest.fixture(scope="session")
def pg_server() -> Server:
    return find_server()


class _Dropper:
    """Drops the databases of finished tests on threads of their own. A DROP
    DATABASE waits for a checkpoint and for every backend of the cluster to
    close the database's files: 0.1 s to 2 s, on the server's side, which no
    test needs to wait for. `finish` waits for every drop and fails the
    session's last teardown if one failed, as a drop in a test's teardown did."""

    THREADS = 2  # concurrent drops share one checkpoint

    def __init__(self) -> None:
        self._todo: queue.Queue[DatabaseJanitor | None] = queue.Queue()
        self._failed: list[str] = []
        self._threads = [
            threading.Thread(target=self._run, name="retryq-test-dropper", daemon=True)
            for _ in range(self.THREADS)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while (janitor := self._todo.get()) is not None:
            try:
                janitor.drop()
            except Exception as exc:
                self._failed.append(f"{janitor.dbname}: {exc!r}")

    def drop(self, janitor: DatabaseJanitor) -> None:
        self._todo.put(janitor)

    def finish(self) -> None:
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join()
        assert not self._failed, f"test databases not dropped: {self._failed}"


@pytest.fixture(scope="session")
def _dropper() -> Iterator[_Dropper]:
    dropper = _Dropper()
    yield dropper
    dropper.finish()


@pytest.fixture(scope="session")
def server_version(pg_server: Server) -> int:
    with psycopg.connect(pg_server.dsn("postgres")) as conn:
        return conn.info.server_version


def _apply_mutant(conn: psycopg.Connection[Any], name: str) -> None:
    """RETRYQ_MUTANT=name breaks one function on purpose in this session's
    template (scripts/mutation-check), so that every test database gets the
    bug and nothing outside the session does."""
    mutants = Path(__file__).parent / "sql" / "mutants"
    conn.execute((mutants / "_mutate.sql").read_text())  # type: ignore[arg-type]
    conn.execute((mutants / f"{name}.sql").read_text())  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    name = f"retryq_tpl_{os.getpid()}"
    janitor = _janitor(pg_server, name)
    janitor.drop()
    janitor.init()
    try:
        migrate.apply(pg_server.dsn(name))
        # Circuit breaker off in the template (threshold 0): tests that fail one
        # event_type many times would otherwise trip it. tests/sql/test_circuit_breaker.py
        # turns it back on for itself.
        with psycopg.connect(pg_server.dsn(name), autocommit=True) as c:
            c.execute("SELECT retry_circuit_configure(NULL, NULL, 0)")
            if os.environ.get("RETRYQ_MUTANT"):
                _apply_mutant(c, os.environ["RETRYQ_MUTANT"])
        yield name
    finally:
        janitor.drop()


@pytest.fixture
def new_database(pg_server: Server, _dropper: _Dropper) -> Iterator[Any]:
    """A factory of fresh databases (optionally cloned), dropped after the test
    (by `_dropper`, while the next tests run)."""
    made: list[DatabaseJanitor] = []

    def make(template: str | None = None) -> str:
        name = f"retryq_t_{os.getpid()}_{next(_counter)}"
        janitor = _janitor(pg_server, name, template)
        janitor.drop()
        janitor.init()
        made.append(janitor)
        return pg_server.dsn(name)

    yield make
    for janitor in reversed(made):
        _dropper.drop(janitor)


@pytest.fixture(scope="module")
def module_dsn(
    request: pytest.FixtureRequest, pg_server: Server, template_db: str, _dropper: _Dropper
) -> Iterator[str]:
    """One clone of the template for a whole module (cloning per test costs ~1 s);
    the module's tests empty what they use (see module_reset)."""
    module = request.module.__name__.rsplit(".", 1)[-1]
    name = f"retryq_m_{os.getpid()}_{module}"[:63]
    janitor = _janitor(pg_server, name, template_db)
    janitor.drop()
    janitor.init()
    try:
        yield pg_server.dsn(name)
    finally:
        _dropper.drop(janitor)


@pytest.fixture(scope="module")
def module_reset(module_dsn: str) -> str:
    """A statement that empties every table the template left empty, so a test
    starts from the freshly migrated state (circuit defaults kept, sequences
    restarted), as `TRUNCATE <them all> RESTART IDENTITY` would.

    It truncates only the tables that were written to (their files hold a
    page, live or dead rows), each with the tables whose foreign keys point at
    it as TRUNCATE requires, and restarts the sequences with setval: a TRUNCATE
    costs about 20 ms a table even when the table is empty (new files for it
    and its indexes), more than cloning a database, and most tests write to
    one or two tables."""
    with psycopg.connect(module_dsn, autocommit=True) as c:
        tables = [
            name
            for (name,) in c.execute(
                "SELECT c.oid::regclass::text FROM pg_class AS c"
                " WHERE c.relnamespace = 'public'::regnamespace"
                " AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
                " AND c.relname NOT LIKE '%yoyo%'"
            ).fetchall()
            if c.execute(f"SELECT NOT EXISTS (SELECT FROM {name})").fetchone() == (True,)  # type: ignore[arg-type]
        ]
        # table -> the relations holding its rows (its partitions, when partitioned)
        leaves = {
            t: [
                name
                for (name,) in c.execute(
                    "SELECT relid::regclass::text FROM pg_partition_tree(%s) WHERE isleaf",
                    (t,),
                ).fetchall()
            ]
            or [t]
            for t in tables
        }
        # referenced table -> the tables referencing it (partitions count as their parent)
        refs: dict[str, set[str]] = {}
        for referenced, referencing in c.execute(
            "SELECT DISTINCT confrelid::regclass::text,"
            " coalesce(inh.inhparent, con.conrelid)::regclass::text"
            " FROM pg_constraint AS con LEFT JOIN pg_inherits AS inh ON inh.inhrelid = con.conrelid"
            " WHERE con.contype = 'f' AND con.conparentid = 0"
        ).fetchall():
            refs.setdefault(referenced, set()).add(referencing)
        # the sequences TRUNCATE ... RESTART IDENTITY restarts: owned by a column
        sequences = c.execute(
            "SELECT d.objid::regclass::text, s.seqstart FROM pg_depend AS d"
            " JOIN pg_sequence AS s ON s.seqrelid = d.objid"
            " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
            " AND d.deptype IN ('a', 'i') AND d.refobjid::regclass::text = ANY(%s)",
            (tables,),
        ).fetchall()

    def together(table: str) -> list[str]:
        """The table and every table that must be truncated with it."""
        seen, todo = [table], [table]
        while todo:
            for other in sorted(refs.get(todo.pop(), ())):
                if other not in seen and other in tables:
                    seen.append(other)
                    todo.append(other)
        return seen

    def literal(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    checks = "".join(
        f" IF {' + '.join(f'pg_relation_size({literal(r)})' for r in leaves[t])} > 0"
        f" THEN v := v || ARRAY[{', '.join(map(literal, together(t)))}]; END IF;"
        for t in tables
    )
    restarts = "".join(f" PERFORM setval({literal(s)}, {start}, false);" for s, start in sequences)
    return (
        "DO $reset$ DECLARE v text[] := '{}'; BEGIN"
        + checks
        + " IF v <> '{}' THEN EXECUTE 'TRUNCATE ' ||"
        " (SELECT string_agg(DISTINCT t, ', ') FROM unnest(v) AS t); END IF;"
        + restarts
        + " END $reset$"
    )


@pytest.fixture
def dsn(new_database: Any, template_db: str) -> str:
    """A database with retryq installed in `public`, private to this test."""
    return str(new_database(template_db))


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def conn2(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection
