"""`retryq migrate`: apply, roll back and list the packaged migrations."""

from __future__ import annotations

from collections.abc import Callable
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

    Refuses (CommandError) while items are pending or processing, unless
    `force`: rolling back the install drops them. `confirm(what)` is asked
    first, with what is about to go, and may veto: Declined (nothing happens)."""
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
    if live and not force:
        raise CommandError(
            f"refusing to roll back {t.describe()}: {live} item(s) pending or processing"
            " would be dropped with the queue; drain it first, or pass --force"
        )
    what = f"roll back {', '.join(chosen)} in {t.describe()}" + (
        f", dropping {live} live item(s)" if live else ""
    )
    if confirm is not None and not confirm(what):
        raise Declined(f"declined: nothing rolled back ({len(chosen)} migration(s) left applied)")
    return _yoyo_call(t, lambda: _migrate.rollback(t.conninfo, t.schema, len(chosen)))


def migrate_status(t: Target) -> list[MigrationRow]:
    """Every packaged migration and whether it is applied; writes nothing."""
    with open_connection(t) as conn:
        _require_schema(conn, t)
        if not _has_yoyo(conn):
            return [
                MigrationRow(m.id, False) for m in read_migrations(str(_migrate.migrations_dir()))
            ]
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
