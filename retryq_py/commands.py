"""What each `retryq` command does, as plain functions that return data.

`retryq_py.cli` only parses flags, calls one of these and renders the result,
so tests call these directly. Errors a person can act on are `CommandError`s
carrying the process exit code (see `ExitCode`); the CLI prints their message
as one line.
"""

from __future__ import annotations

import enum
import importlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import class_row

from retryq_py import config as _config
from retryq_py import migrate as _migrate
from retryq_py._sql import Enqueued, QueueEntry, StatsRow
from retryq_py.config import RetryConfig
from retryq_py.metrics import MetricsServer, start_metrics_server
from retryq_py.queue import ADD_KEYS, RetryQueue
from retryq_py.worker import RetryWorker, WorkerCounts, WorkerEvent

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


def open_connection(t: Target, *, autocommit: bool = True) -> psycopg.Connection[Any]:
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
    conn = open_connection(t, autocommit=autocommit)
    with conn:
        if not is_installed(conn):
            raise _not_installed(t)
        if not autocommit:
            conn.rollback()  # the check must not hold a transaction open
        yield conn


def queue(conn: psycopg.Connection[Any], t: Target) -> RetryQueue:
    """The library's RetryQueue over this connection (autocommit: each call commits)."""
    return RetryQueue(conn, schema=t.schema)


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
    with open_connection(t) as conn:
        if t.schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(t.schema)))
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
    if t.schema is None:
        return
    row = conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (t.schema,)).fetchone()
    if not (row and row[0]):
        raise _not_installed(t)


# --- durations ---------------------------------------------------------------


def parse_duration(text: str, name: str) -> timedelta:
    """The config's durations ("500ms", "30s", "5m", "1h30m", bare seconds) plus
    whole days ("7d"), which ages of dead letters often are."""
    value = text.strip()
    try:
        if value.endswith("d") and value[:-1].replace(".", "", 1).isdigit():
            return timedelta(days=float(value[:-1]))
        return timedelta(seconds=_config.parse_duration(value))
    except ValueError:
        raise UsageProblem(
            f"invalid {name} {text!r}: use a duration such as 500ms, 30s, 5m, 1h or 7d"
        ) from None


# --- stats -------------------------------------------------------------------

STATUSES = ("pending", "processing", "completed", "dead_letter")


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


def _status_order(row: StatsRow) -> tuple[int, str, str]:
    rank = STATUSES.index(row.status) if row.status in STATUSES else len(STATUSES)
    return rank, row.event_type, row.plugin_name or ""


def stats(t: Target) -> Stats:
    """daz_retry_queue_stats, in lifecycle order (pending first)."""
    with connect(t) as conn:
        return Stats(sorted(queue(conn, t).stats(), key=_status_order))


# --- cleanup -----------------------------------------------------------------


@dataclass(frozen=True)
class Cleaned:
    deleted: int
    archived: int
    batches: int


_CLEANUP_DUE_SQL: LiteralString = """
SELECT count(*) FROM daz_retry_queue
WHERE status IN ('completed', 'dead_letter')
    AND coalesce(completed_at, dead_lettered_at) < now() - make_interval(days => %s)
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
) -> Cleaned:
    """Remove finished items past retention in batches of batch_size, each its
    own transaction so locks stay short on a big table; on_batch(deleted,
    archived) after each."""
    if retention_days < 0:
        raise UsageProblem("invalid --retention-days: must not be negative")
    if batch_size < 1:
        raise UsageProblem("invalid --batch-size: must be at least 1")
    deleted = archived = batches = 0
    with connect(t) as conn:
        q = queue(conn, t)
        while True:
            r = q.cleanup(
                retention_days,
                batch_size=batch_size,
                max_rows=batch_size,
                archive_dead_letters=archive,
            )
            deleted += r.deleted_count
            archived += r.archived_count
            batches += 1
            if on_batch is not None:
                on_batch(r.deleted_count, r.archived_count)
            if r.deleted_count < batch_size:
                return Cleaned(deleted, archived, batches)


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
        """A WHERE clause for dead letters in daz_retry_queue, and its parameters;
        the same filters requeue_dead_letter_items applies."""
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
    event_id: UUID
    event_type: str
    channel_name: str | None
    plugin_name: str | None
    retry_count: int
    max_retries: int
    last_error_code: str | None
    error_message: str | None
    created_at: datetime
    dead_lettered_at: datetime | None


_DEAD_LETTERS_SQL: LiteralString = """
SELECT id, event_id, event_type, channel_name, plugin_name, retry_count,
    max_retries, last_error_code, error_message, created_at, dead_lettered_at
FROM daz_retry_queue
WHERE {}
ORDER BY dead_lettered_at DESC, id DESC
LIMIT %s
"""


def dead_letter_list(t: Target, filt: DeadLetterFilter, limit: int = 50) -> list[DeadLetter]:
    """Dead letters matching the filter, most recent first."""
    if limit < 1:
        raise UsageProblem("invalid --limit: must be at least 1")
    where, params = filt.where()
    query = sql.SQL(_DEAD_LETTERS_SQL).format(where)
    with connect(t) as conn, conn.cursor(row_factory=class_row(DeadLetter)) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


@dataclass(frozen=True)
class ErrorEntry:
    """One failed attempt from an item's error_history."""

    attempt: int | None
    failed_at: str | None
    worker_id: str | None
    code: str | None
    retryable: bool | None
    error: str | None


def error_entries(item: QueueEntry) -> list[ErrorEntry]:
    return [
        ErrorEntry(
            attempt=e.get("attempt"),
            failed_at=e.get("failed_at"),
            worker_id=e.get("worker_id"),
            code=e.get("code"),
            retryable=e.get("retryable"),
            error=e.get("error"),
        )
        for e in item.error_history
        if isinstance(e, dict)
    ]


def item_show(t: Target, item_id: int) -> QueueEntry:
    """One item (any status) with its error history; CommandError when absent."""
    with connect(t) as conn:
        item = queue(conn, t).get(item_id)
    if item is None:
        raise CommandError(f"no item with id {item_id}")
    return item


def _require_filter(filt: DeadLetterFilter, verb: str) -> None:
    if filt.is_empty():
        raise UsageProblem(
            f"{verb} needs a filter: --id, --event-type, --plugin, --error-code or "
            "--older-than (--older-than 0s selects every dead letter)"
        )


def dead_letter_requeue(t: Target, filt: DeadLetterFilter) -> int:
    """Requeue matching dead letters (one SQL call, so one transaction); the count."""
    _require_filter(filt, "requeue")
    with connect(t) as conn:
        dead_before: datetime | None = None
        if filt.older_than is not None:
            # the server's clock, as dead_lettered_at was stamped with it
            row = conn.execute("SELECT now() - %s::interval", (filt.older_than,)).fetchone()
            dead_before = row[0] if row else None
        return queue(conn, t).requeue_dead_letters(
            list(filt.ids) or None,
            event_type=filt.event_type,
            plugin=filt.plugin,
            error_code=filt.error_code,
            dead_before=dead_before,
        )


def dead_letter_match(t: Target, filt: DeadLetterFilter) -> list[int]:
    """Ids of the dead letters a filter selects (what purge would delete)."""
    where, params = filt.where()
    query = sql.SQL("SELECT id FROM daz_retry_queue WHERE {} ORDER BY id").format(where)
    with connect(t) as conn:
        return [int(r[0]) for r in conn.execute(query, params).fetchall()]


def dead_letter_purge(
    t: Target, filt: DeadLetterFilter, confirm: Callable[[int], bool] | None = None
) -> int:
    """Delete matching dead letters; confirm(count) may veto. Returns the count deleted."""
    _require_filter(filt, "purge")
    ids = dead_letter_match(t, filt)
    if not ids or (confirm is not None and not confirm(len(ids))):
        return 0
    # purge_dead_letter_items keeps its own status test, so an item requeued
    # since dead_letter_match picked it is left alone.
    with connect(t) as conn:
        return queue(conn, t).purge_dead_letters(ids)


# --- enqueue -----------------------------------------------------------------

# The keys of one JSON line: RetryQueue.add's parameter names.
ENQUEUE_KEYS = ADD_KEYS
_DURATION_KEYS = ("retry_delay", "delay", "max_retry_delay")


def parse_json(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"invalid {name}: not JSON ({exc})") from exc


def _line_item(number: int, obj: Any) -> dict[str, Any]:
    where = f"line {number}"
    if not isinstance(obj, dict):
        raise UsageProblem(f"{where}: must be a JSON object; nothing was added")
    unknown = sorted(set(obj) - set(ENQUEUE_KEYS))
    if unknown:
        raise UsageProblem(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(ENQUEUE_KEYS)});"
            " nothing was added"
        )
    for key in ("event_type", "data"):
        if key not in obj:
            raise UsageProblem(f"{where}: missing {key!r}; nothing was added")
    item = dict(obj)
    for key in _DURATION_KEYS:
        if isinstance(item.get(key), str):
            try:
                item[key] = _config.parse_duration(item[key])
            except ValueError:
                raise UsageProblem(
                    f"{where}: invalid {key} {item[key]!r}: use seconds or a duration"
                    " such as 500ms, 30s, 5m; nothing was added"
                ) from None
    return item


def parse_json_lines(
    lines: Iterable[str], defaults: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """One JSON object per line with RetryQueue.add's keys (event_type, data,
    channel, plugin, metadata, ...); `defaults` fill keys a line leaves out.
    Blank lines are skipped. The first bad line raises UsageProblem naming its
    number."""
    items: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageProblem(f"line {number}: not JSON ({exc.msg}); nothing was added") from exc
        if isinstance(obj, dict) and defaults:
            obj = {**defaults, **obj}
        items.append({"_line": number, **_line_item(number, obj)})
    if not items:
        raise UsageProblem("no items on stdin; nothing was added")
    return items


def enqueue(t: Target, event_type: str, data: Any, **options: Any) -> Enqueued:
    """Add one item (RetryQueue.add's keywords); returns (id, event_id)."""
    with connect(t) as conn:
        return queue(conn, t).add(event_type, data, **options)


ENQUEUE_CHUNK = 5000


def enqueue_many(
    t: Target, items: list[dict[str, Any]], *, chunk: int = ENQUEUE_CHUNK
) -> list[Enqueued]:
    """Add parsed JSON lines with bulk calls of `chunk` items in one transaction:
    all or nothing, with statements of bounded size. When the queue rejects a
    value, each line is tried alone in a rolled-back transaction to name the
    first bad one."""
    lines = [int(i.get("_line", n)) for n, i in enumerate(items, start=1)]
    clean = [{k: v for k, v in i.items() if k != "_line"} for i in items]
    with connect(t) as conn:
        q = queue(conn, t)
        try:
            added: list[Enqueued] = []
            with conn.transaction():
                for start in range(0, len(clean), chunk):
                    added.extend(q.add_many(clean[start : start + chunk]))
            return added
        except (psycopg.DataError, psycopg.IntegrityError, TypeError, ValueError) as exc:
            bad = _first_bad_line(conn, t, clean, lines)
            if bad is None:
                raise UsageProblem(f"{first_line(exc)}; nothing was added") from exc
            number, err = bad
            raise UsageProblem(f"line {number}: {err}; nothing was added") from exc


def _first_bad_line(
    conn: psycopg.Connection[Any],
    t: Target,
    items: list[dict[str, Any]],
    lines: list[int],
) -> tuple[int, str] | None:
    q = queue(conn, t)
    with conn.transaction(force_rollback=True):
        for number, item in zip(lines, items, strict=True):
            try:
                with conn.transaction():
                    q.add_many([item])
            except (psycopg.DataError, psycopg.IntegrityError, TypeError, ValueError) as exc:
                return number, first_line(exc)
    return None


# --- worker ------------------------------------------------------------------


def load_handlers(spec: str) -> Mapping[str, Any]:
    """MODULE:ATTR -> the mapping of event_type to callable (or a HandlerRegistry).

    The current directory is importable, as with `python -m`, so a handlers
    module next to the caller is found without installing it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageProblem(
            f"invalid --handlers {spec!r}: use MODULE:ATTR, e.g. myapp.retry:HANDLERS"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageProblem(
                f"invalid --handlers {spec!r}: no module named {exc.name!r}"
            ) from exc
        raise CommandError(f"importing {module_name}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise CommandError(
            f"importing {module_name}: {type(exc).__name__}: {first_line(exc)}"
        ) from exc
    target_obj: Any = module
    for part in attr.split("."):
        try:
            target_obj = getattr(target_obj, part)
        except AttributeError:
            raise UsageProblem(
                f"invalid --handlers {spec!r}: {module_name} has no {attr}"
            ) from None
    if not isinstance(target_obj, Mapping):
        raise UsageProblem(
            f"invalid --handlers {spec!r}: expected a mapping of event_type to callable"
            f" or a HandlerRegistry, got {type(target_obj).__name__}"
        )
    for event_type, fn in target_obj.items():
        if not isinstance(event_type, str) or not callable(fn):
            raise UsageProblem(
                f"invalid --handlers {spec!r}: entry {event_type!r} is not"
                " event_type (str) -> callable"
            )
    return target_obj


def load_worker_config(path: str | None) -> RetryConfig:
    """The guide's JSON config (defaults without a file) plus RETRYQ_* overrides."""
    try:
        return _config.load_config(path)
    except _config.ConfigError as exc:
        raise UsageProblem(f"config: {exc}") from exc


def run_worker(
    t: Target,
    handlers: Mapping[str, Any],
    config: RetryConfig,
    *,
    exit_when_idle: bool = False,
    worker_count: int | None = None,
    batch_size: int | None = None,
    poll_interval: float | None = None,
    name: str = "retryq",
    metrics_port: int | None = None,
    on_metrics: Callable[[int], None] | None = None,
    on_event: Callable[[WorkerEvent], None] | None = None,
) -> WorkerCounts:
    """Run one RetryWorker until a signal (or, with exit_when_idle, until
    nothing is pending or processing); returns its counts. With metrics_port
    (0: any free port), /metrics serves the worker's and the queue's metrics
    while it runs; on_metrics receives the port."""
    check(t)  # fail fast: the worker itself would wait out an unreachable database
    try:
        worker = RetryWorker(
            t.conninfo,
            handlers,
            config=config,
            name=name,
            schema=t.schema,
            worker_count=worker_count,
            batch_size=batch_size,
            poll_interval=poll_interval,
            on_event=on_event,
        )
    except ValueError as exc:
        raise UsageProblem(f"worker: {exc}") from exc
    server: MetricsServer | None = None
    if metrics_port is not None:
        try:
            server = start_metrics_server(metrics_port, database=t.conninfo, schema=t.schema)
        except OSError as exc:
            raise CommandError(f"cannot serve metrics on port {metrics_port}: {exc}") from exc
        if on_metrics is not None:
            on_metrics(server.port)
    try:
        return worker.run(exit_when_idle=exit_when_idle)
    finally:
        if server is not None:
            server.close()
