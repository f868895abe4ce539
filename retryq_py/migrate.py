"""Install, roll back and inspect the retryq schema with yoyo.

The same migrations serve `yoyo apply` from the repository root and
`retryq migrate` from an installed wheel, which carries a copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict
from yoyo import get_backend, read_migrations

from retryq_py import _session as session

# yoyo waits this long for a concurrent `apply` to release its lock.
LOCK_TIMEOUT_SECONDS = 60


def migrations_dir() -> Path:
    """The packaged migrations, or the repository's in an editable install."""
    packaged = Path(str(resources.files("retryq_py") / "migrations"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "migrations"


def yoyo_url(dsn: str, schema: str | None = None) -> str:
    """Turn a libpq DSN or URL into the `postgresql+psycopg://` URL yoyo wants."""
    params: dict[str, Any] = conninfo_to_dict(dsn)
    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", None)
    dbname = params.pop("dbname", "")
    if schema is not None:
        # yoyo splices this into `SET search_path TO ...` as is: quote it so that
        # a mixed-case or unusual name is not folded or misparsed.
        params["schema"] = sql.Identifier(schema).as_string(None)
    netloc = user + (f":{password}" if password else "")
    query: dict[str, Any] = dict(params)
    # the migrations' text is UTF-8, whatever the role, the database or
    # PGCLIENTENCODING say (see _session)
    query.update(session.OWN_KWARGS)
    # A socket directory is not a URL host: pass it as a parameter instead.
    if host.startswith("/"):
        query["host"] = host
        host = ""
    if netloc:
        netloc += "@"
    netloc += host + (f":{port}" if port and host else "")
    if port and not host:
        query["port"] = port
    url = f"postgresql+psycopg://{netloc}/{dbname}"
    return url + (f"?{urlencode(query)}" if query else "")


@dataclass(frozen=True)
class MigrationStatus:
    id: str
    applied: bool


@contextmanager
def _backend(dsn: str, schema: str | None) -> Iterator[Any]:
    backend = get_backend(yoyo_url(dsn, schema))
    try:
        session.pin(backend.connection)  # ISO, standard_conforming_strings on
        yield backend
    finally:
        backend.connection.close()


# Whether this role may take yoyo's lock (a row in its lock table). yoyo
# retries every error of the INSERT until LOCK_TIMEOUT_SECONDS, taking a
# refusal for a lock held by someone else: a role without the privilege
# waited a minute for "permission denied".
LOCK_PRIVILEGES = """
SELECT
    pg_catalog.has_table_privilege(pg_catalog.to_regclass(%(table)s), 'INSERT')
    AND pg_catalog.has_table_privilege(pg_catalog.to_regclass(%(table)s), 'DELETE'),
    current_user
"""


@contextmanager
def _lock(backend: Any) -> Iterator[None]:
    """yoyo's lock, refused at once (42501) when the role cannot take it."""
    conn = backend.connection
    with conn.cursor() as cur:
        cur.execute(LOCK_PRIVILEGES, {"table": backend.lock_table})
        row = cur.fetchone()
    conn.rollback()
    if row is not None and row[0] is False:
        raise errors.InsufficientPrivilege(
            f"permission denied for table {backend.lock_table}: role {row[1]} may not"
            " INSERT and DELETE there, which yoyo's lock needs (run retryq migrate as the"
            " role that installed retryq)"
        )
    with backend.lock(LOCK_TIMEOUT_SECONDS):
        yield


def apply(dsn: str, schema: str | None = None, directory: Path | None = None) -> list[str]:
    """Apply every pending migration (of `directory`, default the packaged
    ones); returns the ids applied."""
    migrations = read_migrations(str(directory or migrations_dir()))
    with _backend(dsn, schema) as backend, _lock(backend):
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
        return [m.id for m in pending]


def rollback(
    dsn: str, schema: str | None = None, count: int | None = None, directory: Path | None = None
) -> list[str]:
    """Roll back the newest `count` applied migrations (all when None)."""
    migrations = read_migrations(str(directory or migrations_dir()))
    with _backend(dsn, schema) as backend, _lock(backend):
        applied = backend.to_rollback(migrations)
        chosen = applied if count is None else applied[:count]
        backend.rollback_migrations(chosen)
        return [m.id for m in chosen]


def status(dsn: str, schema: str | None = None) -> list[MigrationStatus]:
    """Every known migration, oldest first, and whether it is applied."""
    migrations = read_migrations(str(migrations_dir()))
    with _backend(dsn, schema) as backend:
        applied = backend.get_applied_migration_hashes()
        return [MigrationStatus(m.id, m.hash in applied) for m in migrations]
