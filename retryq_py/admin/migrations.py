"""`retryq migrate`: apply, roll back and list the packaged migrations."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from yoyo import read_migrations

from retryq_py import migrate as _migrate
from retryq_py._sql import ops as _q
from retryq_py.admin.target import (
    CommandError,
    DatabaseUnreachable,
    Declined,
    Target,
    UsageProblem,
    first_line,
    is_installed,
    not_installed,
    open_connection,
    refusal,
    schema_exists,
)

if TYPE_CHECKING:
    from typing_extensions import LiteralString


@dataclass(frozen=True)
class MigrationRow:
    id: str
    applied: bool


def _yoyo_call(t: Target, fn: Callable[[], list[str]]) -> list[str]:
    try:
        return fn()
    except psycopg.OperationalError as exc:
        if exc.sqlstate is None or exc.sqlstate.startswith("08"):
            raise DatabaseUnreachable(
                f"cannot connect to {t.describe()}: {first_line(exc)}"
            ) from exc
        # the server refused a step (a rollback that cannot keep the rows
        # the queue holds, say): its message and its hint, which says what to do
        hint = exc.diag.message_hint
        message = refusal(exc)
        raise CommandError(f"{message} ({hint})" if hint else message) from exc


def migrate_apply(t: Target) -> list[str]:
    """Apply pending migrations (creating the schema if it is named and missing)."""
    with open_connection(t) as conn:
        if t.schema is not None:
            conn.execute(_q.create_schema(t.schema))
    return _yoyo_call(t, lambda: _migrate.apply(t.conninfo, t.schema))


def migrate_rollback(
    t: Target,
    steps: int | None = None,
    *,
    force: bool = False,
    confirm: Callable[[str], bool] | None = None,
) -> list[str]:
    """Roll back the newest `steps` migrations, or all of them; the ids rolled back.

    Refuses (CommandError) while items are pending or processing when the
    chosen steps drop the queue's table (the first migration's rollback),
    unless `force`; steps that keep it roll back whatever is live. `confirm(what)`
    is asked first, with the tables those steps drop, and may veto: Declined
    (nothing happens)."""
    if steps is not None and steps < 1:
        raise UsageProblem("invalid --steps: must be at least 1")
    with open_connection(t) as conn:
        _require_schema(conn, t)
        if not _has_yoyo(conn):
            return []  # nothing applied here; yoyo would create its tables to say so
        live = int(_one(conn, _q.LIVE_ITEMS)) if is_installed(conn) else 0
    applied = [row.id for row in reversed(_statuses(t)) if row.applied]
    chosen = applied if steps is None else applied[:steps]
    if not chosen:
        return []
    dropped = dropped_tables(chosen)
    live = live if QUEUE_TABLE in dropped else 0  # kept with the table otherwise
    if live and not force:
        raise CommandError(
            f"refusing to roll back {t.describe()}: {live} item(s) pending or processing"
            f" would be dropped with the queue (rolling back {_dropping(chosen)} drops"
            f" {QUEUE_TABLE}); drain it first, or pass --force"
        )
    what = (
        f"roll back {', '.join(chosen)} in {t.describe()}"
        + (f", dropping {_tables_text(dropped)}" if dropped else "")
        + (f", {live} live item(s) with them" if live else "")
    )
    if confirm is not None and not confirm(what):
        raise Declined(f"declined: nothing rolled back ({len(chosen)} migration(s) left applied)")
    return _yoyo_call(t, lambda: _migrate.rollback(t.conninfo, t.schema, len(chosen)))


# The table of the items: a rollback that drops it drops every item.
QUEUE_TABLE = "daz_retry_queue"
# A statement of a rollback, not a comment or a function body's text.
_DROP_TABLE = re.compile(r"^DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?([\w.]+)\s*;", re.IGNORECASE | re.M)


def dropped_tables(ids: Iterable[str]) -> list[str]:
    """The tables the rollbacks of these migrations drop, in their order,
    read from the packaged rollback scripts."""
    directory = _migrate.migrations_dir()
    tables: list[str] = []
    for migration_id in ids:
        script = directory / f"{migration_id}.rollback.sql"
        if script.is_file():
            tables.extend(_DROP_TABLE.findall(script.read_text(encoding="utf-8")))
    return tables


def _dropping(ids: list[str]) -> str:
    """The migration among ids whose rollback drops the queue's table."""
    return next((i for i in ids if QUEUE_TABLE in dropped_tables([i])), "?")


def _tables_text(tables: list[str]) -> str:
    return ("table " if len(tables) == 1 else "tables ") + ", ".join(tables)


def migrate_status(t: Target) -> list[MigrationRow]:
    """Every packaged migration and whether it is applied; writes nothing.
    CommandError when this role may not read yoyo's tables (only the role
    that installed retryq, their owner, may unless granted)."""
    with open_connection(t) as conn:
        _require_schema(conn, t)
        if not _has_yoyo(conn):
            return [
                MigrationRow(m.id, False) for m in read_migrations(str(_migrate.migrations_dir()))
            ]
        row = conn.execute(_q.YOYO_READABLE).fetchone()
        if row is not None and not row[0]:
            raise CommandError(
                f"permission denied for yoyo's tables (_yoyo_migration): role {row[1]} may not"
                " read them; run retryq migrate --status as the role that installed retryq"
            )
    return _statuses(t)


def _statuses(t: Target) -> list[MigrationRow]:
    rows: list[MigrationRow] = []

    def run() -> list[str]:
        rows.extend(MigrationRow(s.id, s.applied) for s in _migrate.status(t.conninfo, t.schema))
        return []

    _yoyo_call(t, run)
    return rows


def _has_yoyo(conn: psycopg.Connection[Any]) -> bool:
    return bool(_one(conn, _q.HAS_YOYO))


def _one(conn: psycopg.Connection[Any], query: LiteralString) -> Any:
    row = conn.execute(query).fetchone()
    return row[0] if row else None


def _require_schema(conn: psycopg.Connection[Any], t: Target) -> None:
    if t.schema is not None and not schema_exists(conn, t.schema):
        raise not_installed(t)
