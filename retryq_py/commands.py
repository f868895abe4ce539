"""What each `retryq` command does, as plain functions that return data.

`retryq_py.cli` only parses flags, calls one of these and renders the result,
so tests call these directly. Errors a person can act on are `CommandError`s
carrying the process exit code (see `ExitCode`); the CLI prints their message
as one line.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import class_row

from retryq_py import migrate as _migrate

if TYPE_CHECKING:
    from typing_extensions import LiteralString

DATABASE_ENV = "RETRYQ_DATABASE_URL"
# libpq waits forever on a silent host unless told otherwise.
DEFAULT_CONNECT_TIMEOUT = 5


class ExitCode(enum.IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    UNREACHABLE = 3
    NOT_INSTALLED = 4


class CommandError(Exception):
    """A failure with a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageProblem(CommandError):
    exit_code = ExitCode.USAGE


class DatabaseUnreachable(CommandError):
    exit_code = ExitCode.UNREACHABLE


class NotInstalled(CommandError):
    exit_code = ExitCode.NOT_INSTALLED


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- connections -------------------------------------------------------------

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class Target:
    """Where a command works: a libpq DSN and an optional schema."""

    dsn: str
    schema: str | None = None

    @property
    def conninfo(self) -> str:
        """The DSN with a connect timeout and, for a schema, a search_path option,
        so every connection (pools and worker processes included) finds the queue."""
        try:
            params: dict[str, Any] = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError as exc:
            raise UsageProblem(f"invalid database URL: {first_line(exc)}") from exc
        params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        if self.schema is not None:
            options = str(params.get("options", "")).strip()
            params["options"] = f"{options} -c search_path={self.schema}".strip()
        return make_conninfo(**params)

    def describe(self) -> str:
        """host:port/dbname, without the password, for messages."""
        try:
            params = conninfo_to_dict(self.dsn)
        except psycopg.ProgrammingError:
            return "the database"
        host = str(params.get("host") or "localhost")
        port = str(params.get("port") or "5432")
        where = f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"
        return where + (f" (schema {self.schema})" if self.schema else "")


def target(database: str | None, schema: str | None = None) -> Target:
    """Check --database/RETRYQ_DATABASE_URL and --schema; raise UsageProblem if bad."""
    if not database or not database.strip():
        raise UsageProblem(f"no database given: pass --database URL or set {DATABASE_ENV}")
    if schema is not None and not _SCHEMA_RE.fullmatch(schema):
        raise UsageProblem(
            f"invalid --schema {schema!r}: use lower-case letters, digits and _ "
            "(at most 63, not starting with a digit)"
        )
    result = Target(database.strip(), schema)
    _ = result.conninfo  # validates the DSN syntax now
    return result


def _connect(t: Target, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(t.conninfo, autocommit=autocommit)
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(f"cannot connect to {t.describe()}: {first_line(exc)}") from exc


def is_installed(conn: psycopg.Connection[Any]) -> bool:
    """True when the connection's search_path finds the retryq table and functions."""
    row = conn.execute(
        "SELECT to_regclass('daz_retry_queue') IS NOT NULL"
        " AND to_regproc('acquire_retry_items') IS NOT NULL"
    ).fetchone()
    return bool(row and row[0])


def _not_installed(t: Target) -> NotInstalled:
    where = f" --schema {t.schema}" if t.schema else ""
    return NotInstalled(
        f"retryq is not installed in {t.describe()}: run `retryq migrate --database URL{where}`"
    )


@contextmanager
def connect(t: Target, *, autocommit: bool = True) -> Iterator[psycopg.Connection[Any]]:
    """A connection to an installed queue, closed at the end."""
    conn = _connect(t, autocommit=autocommit)
    with conn:
        if not is_installed(conn):
            raise _not_installed(t)
        if not autocommit:
            conn.rollback()  # the check must not hold a transaction open
        yield conn


def check(t: Target) -> None:
    """Raise DatabaseUnreachable or NotInstalled unless the queue is usable."""
    with connect(t):
        pass


# --- migrate -----------------------------------------------------------------


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
    with _connect(t) as conn:
        if t.schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(t.schema)))
    return _yoyo_call(t, lambda: _migrate.apply(t.conninfo, t.schema))


def migrate_rollback(t: Target, steps: int | None = None) -> list[str]:
    """Roll back the newest `steps` migrations, or all of them."""
    if steps is not None and steps < 1:
        raise UsageProblem("invalid --steps: must be at least 1")
    with _connect(t) as conn:
        _require_schema(conn, t)
    return _yoyo_call(t, lambda: _migrate.rollback(t.conninfo, t.schema, steps))


def migrate_status(t: Target) -> list[MigrationRow]:
    with _connect(t) as conn:
        _require_schema(conn, t)
    rows: list[MigrationRow] = []

    def run() -> list[str]:
        rows.extend(MigrationRow(s.id, s.applied) for s in _migrate.status(t.conninfo, t.schema))
        return []

    _yoyo_call(t, run)
    return rows


def _require_schema(conn: psycopg.Connection[Any], t: Target) -> None:
    if t.schema is None:
        return
    row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (t.schema,)).fetchone()
    if not (row and row[0]):
        raise _not_installed(t)


# --- durations ---------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, name: str) -> timedelta:
    """'500ms', '30s', '5m', '1h', '7d' or combinations like '1h30m'; a bare number is seconds."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(value):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if pos != len(value) or not value:
            raise UsageProblem(
                f"invalid {name} {text!r}: use a duration such as 500ms, 30s, 5m, 1h or 7d"
            ) from None
    if seconds < 0:
        raise UsageProblem(f"invalid {name} {text!r}: must not be negative")
    return timedelta(seconds=seconds)


# --- stats -------------------------------------------------------------------


@dataclass(frozen=True)
class StatsRow:
    status: str
    event_type: str
    plugin_name: str | None
    item_count: int
    avg_retry_count: float
    max_retry_count: int
    oldest_created_at: datetime
    leased_count: int


STATUSES = ("pending", "processing", "completed", "dead_letter")

_STATS_SQL: LiteralString = """
SELECT status, event_type, plugin_name, item_count, avg_retry_count,
    max_retry_count, oldest_created_at, leased_count
FROM daz_retry_queue_stats
ORDER BY array_position(
    ARRAY['pending', 'processing', 'completed', 'dead_letter'], status
), event_type, plugin_name NULLS FIRST
"""


@dataclass(frozen=True)
class Stats:
    rows: list[StatsRow]

    @property
    def totals(self) -> dict[str, int]:
        """Items per status, every status present (zero when none)."""
        out = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + r.item_count
        return out

    @property
    def total(self) -> int:
        return sum(r.item_count for r in self.rows)


def stats(t: Target) -> Stats:
    with connect(t) as conn, conn.cursor(row_factory=class_row(StatsRow)) as cur:
        return Stats(cur.execute(_STATS_SQL).fetchall())


# --- cleanup -----------------------------------------------------------------


@dataclass(frozen=True)
class CleanupResult:
    deleted: int
    archived: int
    batches: int


_CLEANUP_DUE_SQL: LiteralString = """
SELECT count(*) FROM daz_retry_queue
WHERE status IN ('completed', 'dead_letter')
    AND coalesce(completed_at, dead_lettered_at) < now() - make_interval(days => %s)
"""

_CLEANUP_SQL: LiteralString = """
SELECT deleted_count, archived_count FROM cleanup_retry_queue(
    p_retention_days => %s, p_batch_size => %s, p_max_rows => %s,
    p_archive_dead_letters => %s
)
"""


def cleanup_due(t: Target, retention_days: int) -> int:
    """How many finished items are older than the retention (for a progress bar)."""
    with connect(t) as conn:
        row = conn.execute(_CLEANUP_DUE_SQL, (retention_days,)).fetchone()
        return int(row[0]) if row else 0


def cleanup(
    t: Target,
    retention_days: int = 7,
    *,
    batch_size: int = 5000,
    archive: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> CleanupResult:
    """Remove finished items past retention, one short transaction per batch so
    locks stay brief on a big table; on_batch(deleted, archived) after each."""
    if retention_days < 0:
        raise UsageProblem("invalid --retention-days: must not be negative")
    if batch_size < 1:
        raise UsageProblem("invalid --batch-size: must be at least 1")
    deleted = archived = batches = 0
    with connect(t) as conn:
        while True:
            row = conn.execute(
                _CLEANUP_SQL, (retention_days, batch_size, batch_size, archive)
            ).fetchone()
            d, a = (int(row[0]), int(row[1])) if row else (0, 0)
            deleted, archived, batches = deleted + d, archived + a, batches + 1
            if on_batch is not None:
                on_batch(d, a)
            if d < batch_size:
                return CleanupResult(deleted, archived, batches)


# --- dead letters ------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterFilter:
    ids: tuple[int, ...] = ()
    event_type: str | None = None
    plugin: str | None = None
    error_code: str | None = None
    older_than: timedelta | None = None

    def is_empty(self) -> bool:
        return not self.ids and all(
            v is None for v in (self.event_type, self.plugin, self.error_code, self.older_than)
        )

    def where(self) -> tuple[sql.Composable, list[Any]]:
        """A WHERE clause for dead letters in daz_retry_queue and its parameters."""
        parts: list[sql.Composable] = [sql.SQL("status = 'dead_letter'")]
        params: list[Any] = []
        if self.ids:
            parts.append(sql.SQL("id = ANY(%s)"))
            params.append(list(self.ids))
        for column, value in (
            ("event_type", self.event_type),
            ("plugin_name", self.plugin),
            ("last_error_code", self.error_code),
        ):
            if value is not None:
                parts.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if self.older_than is not None:
            parts.append(sql.SQL("dead_lettered_at < now() - %s"))
            params.append(self.older_than)
        return sql.SQL(" AND ").join(parts), params


@dataclass(frozen=True)
class DeadLetter:
    id: int
    event_id: str
    event_type: str
    channel_name: str | None
    plugin_name: str | None
    retry_count: int
    max_retries: int
    last_error_code: str | None
    error_message: str | None
    created_at: datetime
    dead_lettered_at: datetime | None


_DEAD_COLUMNS: LiteralString = """
id, event_id::text AS event_id, event_type, channel_name, plugin_name,
retry_count, max_retries, last_error_code, error_message, created_at,
dead_lettered_at
"""


def dead_letter_list(t: Target, filt: DeadLetterFilter, limit: int = 50) -> list[DeadLetter]:
    """Dead letters matching the filter, most recent first."""
    if limit < 1:
        raise UsageProblem("invalid --limit: must be at least 1")
    where, params = filt.where()
    query = sql.SQL(
        "SELECT " + _DEAD_COLUMNS + " FROM daz_retry_queue WHERE {}"
        " ORDER BY dead_lettered_at DESC, id DESC LIMIT %s"
    ).format(where)
    with connect(t) as conn, conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


@dataclass(frozen=True)
class ErrorEntry:
    attempt: int | None
    failed_at: str | None
    worker_id: str | None
    code: str | None
    retryable: bool | None
    error: str | None


@dataclass(frozen=True)
class ItemDetail:
    id: int
    event_id: str
    event_type: str
    status: str
    channel_name: str | None
    plugin_name: str | None
    event_data: Any
    event_metadata: Any
    retry_count: int
    max_retries: int
    priority: int
    correlation_id: str | None
    tags: list[str]
    error_message: str | None
    last_error_code: str | None
    error_history: list[dict[str, Any]]
    created_at: datetime
    next_retry_at: datetime
    dead_lettered_at: datetime | None
    completed_at: datetime | None

    @property
    def errors(self) -> list[ErrorEntry]:
        return [
            ErrorEntry(
                attempt=e.get("attempt"),
                failed_at=e.get("failed_at"),
                worker_id=e.get("worker_id"),
                code=e.get("code"),
                retryable=e.get("retryable"),
                error=e.get("error"),
            )
            for e in self.error_history
            if isinstance(e, dict)
        ]


_SHOW_SQL: LiteralString = """
SELECT id, event_id::text AS event_id, event_type, status, channel_name,
    plugin_name, event_data, event_metadata, retry_count, max_retries, priority,
    correlation_id, tags, error_message, last_error_code, error_history,
    created_at, next_retry_at, dead_lettered_at, completed_at
FROM daz_retry_queue WHERE id = %s
"""


def item_show(t: Target, item_id: int) -> ItemDetail:
    """One item (any status) with its error history; CommandError when absent."""
    with connect(t) as conn, conn.cursor(row_factory=class_row(ItemDetail)) as cur:
        item = cur.execute(_SHOW_SQL, (item_id,)).fetchone()
    if item is None:
        raise CommandError(f"no item with id {item_id}")
    return item


def _require_filter(filt: DeadLetterFilter, verb: str) -> None:
    if filt.is_empty():
        raise UsageProblem(
            f"{verb} needs a filter: --id, --event-type, --plugin, --error-code or "
            "--older-than (--older-than 0s selects every dead letter)"
        )


_REQUEUE_SQL: LiteralString = """
SELECT requeue_dead_letter_items(
    p_item_ids => %s, p_event_type => %s, p_plugin_name => %s,
    p_error_code => %s, p_dead_before => now() - %s::interval
)
"""


def dead_letter_requeue(t: Target, filt: DeadLetterFilter) -> int:
    """Requeue matching dead letters in one transaction (the SQL function's); the count."""
    _require_filter(filt, "requeue")
    with connect(t) as conn:
        row = conn.execute(
            _REQUEUE_SQL,
            (
                list(filt.ids) or None,
                filt.event_type,
                filt.plugin,
                filt.error_code,
                filt.older_than,
            ),
        ).fetchone()
    return int(row[0]) if row else 0


def dead_letter_match(t: Target, filt: DeadLetterFilter) -> list[int]:
    """Ids of the dead letters a filter selects (what purge would delete)."""
    where, params = filt.where()
    query = sql.SQL("SELECT id FROM daz_retry_queue WHERE {} ORDER BY id").format(where)
    with connect(t) as conn:
        return [int(r[0]) for r in conn.execute(query, params).fetchall()]


# There is no SQL function for purge yet, so this DELETE lives here: it goes
# through the parent table and is limited to dead letters by status, so an item
# requeued since dead_letter_match picked it is left alone.
_PURGE_SQL: LiteralString = """
DELETE FROM daz_retry_queue WHERE status = 'dead_letter' AND id = ANY(%s)
"""


def dead_letter_purge(
    t: Target, filt: DeadLetterFilter, confirm: Callable[[int], bool] | None = None
) -> int:
    """Delete matching dead letters; confirm(count) may veto. Returns the count deleted."""
    _require_filter(filt, "purge")
    ids = dead_letter_match(t, filt)
    if not ids or (confirm is not None and not confirm(len(ids))):
        return 0
    with connect(t) as conn:
        return conn.execute(_PURGE_SQL, (ids,)).rowcount


# --- enqueue -----------------------------------------------------------------

ENQUEUE_KEYS = (
    "event_type",
    "event_data",
    "channel_name",
    "plugin_name",
    "event_metadata",
    "max_retries",
    "retry_delay_seconds",
    "backoff_multiplier",
    "priority",
    "correlation_id",
    "tags",
    "delay_seconds",
    "max_retry_delay_seconds",
    "retry_jitter",
)


def parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"invalid {name}: not JSON ({exc})") from exc


def parse_json_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    """One JSON object per line with enqueue_retry_item's parameter names (without
    p_; `data`/`metadata`/`channel`/`plugin` accepted as short names). Blank lines
    are skipped. Any bad line raises UsageProblem naming its line number."""
    aliases = {
        "data": "event_data",
        "metadata": "event_metadata",
        "channel": "channel_name",
        "plugin": "plugin_name",
    }
    items: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageProblem(f"line {number}: not JSON ({exc.msg}); nothing was added") from exc
        if not isinstance(obj, dict):
            raise UsageProblem(f"line {number}: must be a JSON object; nothing was added")
        item: dict[str, Any] = {aliases.get(str(k), str(k)): v for k, v in obj.items()}
        unknown = sorted(set(item) - set(ENQUEUE_KEYS))
        if unknown:
            raise UsageProblem(
                f"line {number}: unknown key {unknown[0]!r}; nothing was added"
                f" (known: {', '.join(ENQUEUE_KEYS)})"
            )
        for key in ("event_type", "event_data"):
            if key not in item:
                raise UsageProblem(f"line {number}: missing {key!r}; nothing was added")
        items.append(item)
    if not items:
        raise UsageProblem("no items on stdin; nothing was added")
    return items
