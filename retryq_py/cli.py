"""The `retryq` command line: flags in, a table or a count out.

Each command is a thin shell over a function in `retryq_py.commands`. Errors a
person can act on print one line on stderr and exit with a documented code
(`commands.ExitCode`): 2 bad usage or config, 3 database unreachable, 4 retryq
not installed there, 1 any other failure. Set RETRYQ_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime
from typing import Annotated, Any, NoReturn

import psycopg
import typer
from psycopg import errors as pgerrors
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from retryq_py import commands as cmd
from retryq_py import ops_cli
from retryq_py._sql import QueueEntry
from retryq_py.commands import DeadLetterFilter, ExitCode

app = typer.Typer(
    name="retryq",
    help="A durable retry queue in PostgreSQL: install it, feed it, run workers, inspect it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
dead_letter_app = typer.Typer(
    help="Inspect, requeue and purge dead letters.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(dead_letter_app, name="dead-letter")
ops_cli.register(app)  # metrics, circuits

# Piped output gets wide lines instead of rich's 80-column default, so a table
# read through `less` or grep keeps whole event types on one row.
out = Console(
    highlight=False,
    width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160,
)
err = Console(stderr=True, highlight=False)

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        envvar=cmd.DATABASE_ENV,
        show_envvar=True,
        metavar="URL",
        help="libpq URL or DSN of the database holding the queue.",
    ),
]
SchemaOpt = Annotated[
    str | None,
    typer.Option(
        "--schema",
        metavar="NAME",
        help="Schema the queue lives in (default: the search_path's first).",
    ),
]


def _when(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


# --- migrate -----------------------------------------------------------------


@app.command()
def migrate(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Roll back (all, or the newest --steps N).")
    ] = False,
    steps: Annotated[
        int | None, typer.Option("--steps", metavar="N", min=1, help="With --rollback: how many.")
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show which migrations are applied.")
    ] = False,
) -> None:
    """Install (or upgrade) the retryq schema from the packaged migrations."""
    t = cmd.target(database, schema)
    if rollback and status:
        raise cmd.UsageProblem("give --rollback or --status, not both")
    if steps is not None and not rollback:
        raise cmd.UsageProblem("--steps only goes with --rollback")
    if status:
        out.print(f"migrations in {t.describe()}:")
        table = Table("migration", "applied")
        for row in cmd.migrate_status(t):
            table.add_row(row.id, "yes" if row.applied else "no")
        out.print(table)
        return
    if rollback:
        ids = cmd.migrate_rollback(t, steps)
        out.print(f"rolled back {len(ids)} migration(s)" + (f": {', '.join(ids)}" if ids else ""))
        return
    ids = cmd.migrate_apply(t)
    if ids:
        out.print(f"applied {len(ids)} migration(s): {', '.join(ids)}")
    else:
        out.print("already up to date")


# --- enqueue -----------------------------------------------------------------


@app.command()
def enqueue(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    event_type: Annotated[
        str | None,
        typer.Option("--event-type", metavar="TYPE", help="What failed, e.g. sql.exec.failed."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", metavar="JSON", help="The event data as JSON; '-' reads JSON lines."
        ),
    ] = None,
    channel: Annotated[
        str | None, typer.Option("--channel", metavar="NAME", help="channel_name.")
    ] = None,
    plugin: Annotated[
        str | None, typer.Option("--plugin", metavar="NAME", help="plugin_name.")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", metavar="JSON", help="A JSON object of metadata.")
    ] = None,
    max_retries: Annotated[
        int | None,
        typer.Option("--max-retries", metavar="N", help="Retries before a dead letter (3)."),
    ] = None,
    retry_delay: Annotated[
        str | None,
        typer.Option(
            "--retry-delay", metavar="DURATION", help="Wait before the first retry (60s)."
        ),
    ] = None,
    backoff_multiplier: Annotated[
        float | None,
        typer.Option("--backoff-multiplier", metavar="X", help="Growth per retry (2.0)."),
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", metavar="1-10", help="1..10, 10 first (5).")
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", metavar="ID", help="For tracing.")
    ] = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", metavar="TAG", help="A tag (repeatable).")
    ] = None,
    delay: Annotated[
        str | None,
        typer.Option("--delay", metavar="DURATION", help="Wait before the first attempt (0s)."),
    ] = None,
    stdin: Annotated[
        bool,
        typer.Option("--stdin", help="Read one JSON object per line (same keys) and add them all."),
    ] = False,
) -> None:
    """Add one item from flags, or many from JSON lines on stdin (all or nothing)."""
    t = cmd.target(database, schema)
    options: dict[str, Any] = {
        "channel": channel,
        "plugin": plugin,
        "metadata": None if metadata is None else cmd.parse_json(metadata, "--metadata"),
        "max_retries": max_retries,
        "retry_delay": None
        if retry_delay is None
        else cmd.parse_duration(retry_delay, "--retry-delay"),
        "backoff_multiplier": backoff_multiplier,
        "priority": priority,
        "correlation_id": correlation_id,
        "tags": tags or None,
        "delay": None if delay is None else cmd.parse_duration(delay, "--delay"),
    }
    options = {k: v for k, v in options.items() if v is not None}
    if stdin or data == "-":
        defaults = dict(options)
        if event_type is not None:
            defaults["event_type"] = event_type
        items = cmd.parse_json_lines(sys.stdin, defaults)
        added = cmd.enqueue_many(t, items)
        out.print(f"enqueued {len(added)} item(s)")
        return
    if event_type is None or data is None:
        raise cmd.UsageProblem("give --event-type and --data (or --stdin for JSON lines)")
    item_id, event_id = cmd.enqueue(t, event_type, cmd.parse_json(data, "--data"), **options)
    out.print(f"enqueued id={item_id} event_id={event_id}")


# --- worker ------------------------------------------------------------------


@app.command()
def worker(
    handlers: Annotated[
        str,
        typer.Option(
            "--handlers",
            metavar="MODULE:ATTR",
            help="MODULE:ATTR, a mapping event_type -> callable(item) or a HandlerRegistry.",
        ),
    ],
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="The guide's JSON config (sql.retry); RETRYQ_* override.",
        ),
    ] = None,
    exit_when_idle: Annotated[
        bool,
        typer.Option(
            "--exit-when-idle",
            help="Process everything due, retries included, then exit 0.",
        ),
    ] = False,
    worker_count: Annotated[
        int | None, typer.Option("--worker-count", metavar="N", min=1, help="Handler threads.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", metavar="N", min=1, max=1000, help="Items per acquire."),
    ] = None,
    poll_interval: Annotated[
        str | None,
        typer.Option(
            "--poll-interval", metavar="DURATION", help="Poll when no NOTIFY comes (30s)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            metavar="PORT",
            min=0,
            max=65535,
            help="Serve Prometheus /metrics (0: any port).",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Worker id prefix: NAME-HOSTNAME-PID.")
    ] = "retryq",
    log_level: Annotated[
        str, typer.Option("--log-level", metavar="LEVEL", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run handlers for queued items until SIGTERM/SIGINT (or idle, with --exit-when-idle)."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise cmd.UsageProblem(f"invalid --log-level {log_level!r}")
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = cmd.load_worker_config(config)
    t = cmd.target(database or cfg.database_url, schema)
    registry = cmd.load_handlers(handlers)
    interval = None
    if poll_interval is not None:
        interval = cmd.parse_duration(poll_interval, "--poll-interval").total_seconds()
        if interval <= 0:
            raise cmd.UsageProblem("invalid --poll-interval: must be positive")
    err.print(
        f"retryq worker: {len(registry)} handler(s) ({', '.join(sorted(registry))}) on "
        f"{t.describe()}" + ("; exits when idle" if exit_when_idle else "; Ctrl-C stops")
    )
    counts = cmd.run_worker(
        t,
        registry,
        cfg,
        exit_when_idle=exit_when_idle,
        worker_count=worker_count,
        batch_size=batch_size,
        poll_interval=interval,
        name=name,
        metrics_port=metrics_port,
        on_metrics=lambda port: err.print(f"serving Prometheus metrics on :{port}/metrics"),
    )
    out.print(
        f"completed {counts.processed}, retried {counts.failed}, "
        f"dead-lettered {counts.dead_lettered}, released {counts.released}, "
        f"lease lost {counts.lease_lost}"
    )


# --- stats and cleanup -------------------------------------------------------


def stats_table(s: cmd.Stats, title: str = "daz_retry_queue_stats") -> Table:
    table = Table(
        "status",
        "event_type",
        "plugin",
        "items",
        "avg retries",
        "max retries",
        "oldest",
        "leased",
        title=title,
    )
    for r in s.rows:
        table.add_row(
            r.status,
            r.event_type,
            r.plugin_name or "",
            str(r.item_count),
            f"{r.avg_retry_count:.2f}",
            str(r.max_retry_count),
            _when(r.oldest_created_at),
            str(r.leased_count),
        )
    return table


def totals_line(s: cmd.Stats) -> str:
    parts = [f"{k} {v}" for k, v in s.totals.items()]
    return f"total {s.total}: " + ", ".join(parts)


@app.command()
def stats(database: DatabaseOpt = None, schema: SchemaOpt = None) -> None:
    """Items by status, event type and plugin, plus totals."""
    s = cmd.stats(cmd.target(database, schema))
    if s.rows:
        out.print(stats_table(s))
    out.print(totals_line(s))


@app.command()
def cleanup(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    retention_days: Annotated[
        int,
        typer.Option(
            "--retention-days", metavar="DAYS", min=0, help="Keep finished items this many days."
        ),
    ] = 7,
    batch_size: Annotated[
        int, typer.Option("--batch-size", metavar="N", min=1, help="Rows per transaction.")
    ] = 5000,
    no_archive: Annotated[
        bool, typer.Option("--no-archive", help="Do not copy dead letters to the archive.")
    ] = False,
) -> None:
    """Delete completed items and dead letters past retention (dead letters are archived)."""
    t = cmd.target(database, schema)
    due = cmd.cleanup_due(t, retention_days)
    with Progress(
        TextColumn("cleanup"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=due <= batch_size or not out.is_terminal,
    ) as progress:
        task = progress.add_task("cleanup", total=due)
        result = cmd.cleanup(
            t,
            retention_days,
            batch_size=batch_size,
            archive=not no_archive,
            on_batch=lambda d, _a: progress.advance(task, d),
        )
    out.print(f"deleted {result.deleted}, archived {result.archived}")


# --- dead letters ------------------------------------------------------------

EventTypeOpt = Annotated[
    str | None, typer.Option("--event-type", metavar="TYPE", help="Only this event type.")
]
PluginOpt = Annotated[
    str | None, typer.Option("--plugin", metavar="NAME", help="Only this plugin_name.")
]
ErrorCodeOpt = Annotated[
    str | None, typer.Option("--error-code", metavar="CODE", help="Only this last error code.")
]
OlderThanOpt = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        metavar="DURATION",
        help="Only dead letters older than this (30s, 5m, 1h, 7d).",
    ),
]
IdsOpt = Annotated[
    list[int] | None, typer.Option("--id", metavar="ID", help="Only this item id (repeatable).")
]


def _filter(
    ids: list[int] | None,
    event_type: str | None,
    plugin: str | None,
    error_code: str | None,
    older_than: str | None,
) -> DeadLetterFilter:
    return DeadLetterFilter(
        ids=tuple(ids or ()),
        event_type=event_type,
        plugin=plugin,
        error_code=error_code,
        older_than=None if older_than is None else cmd.parse_duration(older_than, "--older-than"),
    )


def dead_letters_table(rows: list[cmd.DeadLetter], title: str = "dead letters") -> Table:
    table = Table(
        "id", "event_type", "plugin", "retries", "code", "last error", "dead since", title=title
    )
    for r in rows:
        table.add_row(
            str(r.id),
            r.event_type,
            r.plugin_name or "",
            f"{r.retry_count}/{r.max_retries}",
            r.last_error_code or "",
            _short(r.error_message),
            _when(r.dead_lettered_at),
        )
    return table


def error_history_table(item: QueueEntry) -> Table:
    table = Table(
        "attempt", "failed at", "worker", "code", "retryable", "error", title="error history"
    )
    for e in cmd.error_entries(item):
        table.add_row(
            "" if e.attempt is None else str(e.attempt),
            _when(e.failed_at),
            e.worker_id or "",
            e.code or "",
            "" if e.retryable is None else ("yes" if e.retryable else "no"),
            e.error or "",
        )
    return table


@dead_letter_app.command("list")
def dead_letter_list(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    event_type: EventTypeOpt = None,
    plugin: PluginOpt = None,
    error_code: ErrorCodeOpt = None,
    older_than: OlderThanOpt = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, help="At most this many rows.")
    ] = 50,
) -> None:
    """Dead letters, most recent first."""
    t = cmd.target(database, schema)
    filt = _filter(None, event_type, plugin, error_code, older_than)
    rows = cmd.dead_letter_list(t, filt, limit)
    if not rows:
        out.print("no dead letters match")
        return
    out.print(dead_letters_table(rows))
    if len(rows) == limit:
        out.print(f"(showing the first {limit}; raise --limit for more)")


@dead_letter_app.command("show")
def dead_letter_show(
    item_id: Annotated[int, typer.Argument(metavar="ID", help="The item's id.")],
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """One item with its data and full error history."""
    item = cmd.item_show(cmd.target(database, schema), item_id)
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for label, value in (
        ("id", str(item.id)),
        ("event_id", str(item.event_id)),
        ("event_type", item.event_type),
        ("status", item.status),
        ("channel", item.channel_name or ""),
        ("plugin", item.plugin_name or ""),
        ("retries", f"{item.retry_count}/{item.max_retries}"),
        ("priority", str(item.priority)),
        ("correlation_id", item.correlation_id or ""),
        ("tags", ", ".join(item.tags)),
        ("created", _when(item.created_at)),
        ("next attempt", _when(item.next_retry_at) if item.status == "pending" else ""),
        ("completed", _when(item.completed_at)),
        ("dead since", _when(item.dead_lettered_at)),
        ("last error", f"[{item.last_error_code or ''}] {item.error_message or ''}".strip()),
        ("data", json.dumps(item.event_data, sort_keys=True)),
        ("metadata", json.dumps(item.event_metadata, sort_keys=True)),
    ):
        info.add_row(label, value)
    out.print(info)
    if item.error_history:
        out.print(error_history_table(item))
    else:
        out.print("no errors recorded")


@dead_letter_app.command("requeue")
def dead_letter_requeue(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    ids: IdsOpt = None,
    event_type: EventTypeOpt = None,
    plugin: PluginOpt = None,
    error_code: ErrorCodeOpt = None,
    older_than: OlderThanOpt = None,
) -> None:
    """Give matching dead letters a fresh retry budget, due now (one transaction)."""
    t = cmd.target(database, schema)
    count = cmd.dead_letter_requeue(t, _filter(ids, event_type, plugin, error_code, older_than))
    out.print(f"requeued {count}")


@dead_letter_app.command("purge")
def dead_letter_purge(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    ids: IdsOpt = None,
    event_type: EventTypeOpt = None,
    plugin: PluginOpt = None,
    error_code: ErrorCodeOpt = None,
    older_than: OlderThanOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete matching dead letters for good (asks first unless --yes)."""
    t = cmd.target(database, schema)

    def confirm(count: int) -> bool:
        return yes or typer.confirm(f"Delete {count} dead letter(s) for good?", default=False)

    count = cmd.dead_letter_purge(
        t, _filter(ids, event_type, plugin, error_code, older_than), confirm
    )
    out.print(f"purged {count}")


# --- demo --------------------------------------------------------------------


@app.command()
def demo(
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            "-d",
            help="Use this database (in a throwaway schema retryq_demo) instead of an"
            " embedded PostgreSQL.",
        ),
    ] = None,
    items: Annotated[
        int, typer.Option("--items", metavar="N", min=1, help="How many items.")
    ] = 200,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", min=1, max=16, help="RetryWorkers to run.")
    ] = 2,
    keep: Annotated[
        bool, typer.Option("--keep", help="With --database: keep the retryq_demo schema.")
    ] = False,
) -> None:
    """See it work: enqueue a realistic mix of failures, run workers, show the outcome."""
    from retryq_py.demo import run_demo  # the embedded server only loads here

    run_demo(out, database, items=items, workers=workers, keep=keep)


# --- entry point -------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"retryq: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _exit_for(exc: BaseException) -> tuple[str, int]:
    """The one line and exit code for an exception escaping a command."""
    if isinstance(exc, cmd.CommandError):
        return str(exc), exc.exit_code
    if isinstance(exc, pgerrors.UndefinedFunction | pgerrors.UndefinedTable):
        return (
            f"{cmd.first_line(exc)} (is retryq installed here? run `retryq migrate`)",
            ExitCode.NOT_INSTALLED,
        )
    # 22023 and 23514: the queue's own validation of a value the user gave.
    if isinstance(exc, pgerrors.InvalidParameterValue | pgerrors.CheckViolation):
        return cmd.first_line(exc), ExitCode.USAGE
    if isinstance(exc, psycopg.OperationalError):
        return f"database error: {cmd.first_line(exc)}", ExitCode.UNREACHABLE
    if isinstance(exc, psycopg.Error):
        return f"database error: {cmd.first_line(exc)}", ExitCode.FAILURE
    return f"{type(exc).__name__}: {cmd.first_line(exc)}", ExitCode.FAILURE


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns errors into one line + exit code."""
    try:
        app(args=argv, prog_name="retryq")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("RETRYQ_DEBUG"):
            raise
        message, code = _exit_for(exc)
        _fail(message, code)


if __name__ == "__main__":
    main()
