"""`retryq migrate`: apply, roll back and list the packaged migrations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from retryq_py import migrate as _migrate
from retryq_py._sql import ops as _q
from retryq_py.admin.target import (
    DatabaseUnreachable,
    Target,
    UsageProblem,
    first_line,
    not_installed,
    open_connection,
    schema_exists,
)


@dataclass(frozen=True)
class MigrationRow:
    id: str
    applied: bool


def _yoyo_call(t: Target, fn: Callable[[], list[str]]) -> list[str]:
    try:
        return fn()
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(f"cannot connect to {t.describe()}: {first_line(exc)}") from exc


def migrate_apply(t: Target) -> list[str]:
    """Apply pending migrations (creating the schema if it is named and missing)."""
    with open_connection(t) as conn:
        if t.schema is not None:
            conn.execute(_q.create_schema(t.schema))
    return _yoyo_call(t, lambda: _migrate.apply(t.conninfo, t.schema))


def migrate_rollback(t: Target, steps: int | None = None) -> list[str]:
    """Roll back the newest `steps` migrations, or all of them."""
    if steps is not None and steps < 1:
        raise UsageProblem("invalid --steps: must be at least 1")
    with open_connection(t) as conn:
        _require_schema(conn, t)
    return _yoyo_call(t, lambda: _migrate.rollback(t.conninfo, t.schema, steps))


def migrate_status(t: Target) -> list[MigrationRow]:
    with open_connection(t) as conn:
        _require_schema(conn, t)
    rows: list[MigrationRow] = []

    def run() -> list[str]:
        rows.extend(MigrationRow(s.id, s.applied) for s in _migrate.status(t.conninfo, t.schema))
        return []

    _yoyo_call(t, run)
    return rows


def _require_schema(conn: psycopg.Connection[Any], t: Target) -> None:
    if t.schema is not None and not schema_exists(conn, t.schema):
        raise not_installed(t)
