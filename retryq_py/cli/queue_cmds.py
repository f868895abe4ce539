"""`retryq migrate`, `enqueue`, `stats`, `cleanup` and `cancel`."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated, Any

import typer

from retryq_py import admin
from retryq_py.cli.options import (
    BIGINT_MAX,
    BIGINT_MIN,
    DatabaseOpt,
    ErrorCodeOpt,
    EventTypeOpt,
    IdsOpt,
    PluginOpt,
    SchemaOpt,
    YesOpt,
    ask,
)
from retryq_py.cli.render import migrations_table, out, stats_table, totals_line


def migrate(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Roll back (all, or the newest --steps N).")
    ] = False,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", metavar="N", min=1, max=BIGINT_MAX, help="With --rollback: how many."
        ),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show which migrations are applied (writes nothing).")
    ] = False,
    yes: YesOpt = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="With --rollback: even while items are pending or processing."
        ),
    ] = False,
) -> None:
    """Install (or upgrade) the retryq schema from the packaged migrations."""
    t = admin.target(database, schema)
    if rollback and status:
        raise admin.UsageProblem("give --rollback or --status, not both")
    if steps is not None and not rollback:
        raise admin.UsageProblem("--steps only goes with --rollback")
    if (force or yes) and not rollback:
        raise admin.UsageProblem(f"{'--force' if force else '--yes'} only goes with --rollback")
    if status:
        out.print(f"migrations in {t.describe()}:")
        out.print(migrations_table(admin.migrate_status(t)))
        return
    if rollback:
        try:
            ids = admin.migrate_rollback(
                t,
                steps,
                force=force,
                confirm=lambda what: yes or ask(f"{what[:1].upper()}{what[1:]}?"),
            )
        except admin.Declined as declined:
            out.print(str(declined))
            return
        out.print(f"rolled back {len(ids)} migration(s)" + (f": {', '.join(ids)}" if ids else ""))
        return
    ids = admin.migrate_apply(t)
    if ids:
        out.print(f"applied {len(ids)} migration(s): {', '.join(ids)}")
    else:
        out.print("already up to date")


# The longest delay and retry delay the queue takes (31536000 s): refused here
# naming the option rather than by a CHECK naming the column.
_YEAR = timedelta(days=365)


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
        typer.Option(
            "--max-retries",
            metavar="N",
            min=BIGINT_MIN,
            max=BIGINT_MAX,
            help="Retries before a dead letter (3).",
        ),
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
        int | None,
        typer.Option(
            "--priority",
            metavar="1-10",
            min=BIGINT_MIN,
            max=BIGINT_MAX,
            help="1..10, 10 first (5).",
        ),
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
    dedupe_key: Annotated[
        str | None,
        typer.Option(
            "--dedupe-key",
            metavar="KEY",
            help="Add nothing while a pending or processing item holds this key.",
        ),
    ] = None,
    stdin: Annotated[
        bool,
        typer.Option("--stdin", help="Read one JSON object per line (same keys) and add them all."),
    ] = False,
) -> None:
    """Add one item from flags, or many from JSON lines on stdin (all or nothing)."""
    t = admin.target(database, schema)
    options: dict[str, Any] = {
        "channel": channel,
        "plugin": plugin,
        "metadata": None if metadata is None else admin.parse_json_object(metadata, "--metadata"),
        "max_retries": max_retries,
        "retry_delay": None
        if retry_delay is None
        else admin.parse_duration(retry_delay, "--retry-delay", maximum=_YEAR),
        "backoff_multiplier": backoff_multiplier,
        "priority": priority,
        "correlation_id": correlation_id,
        "tags": tags or None,
        "delay": None if delay is None else admin.parse_duration(delay, "--delay", maximum=_YEAR),
        "dedupe_key": dedupe_key,
    }
    options = {k: v for k, v in options.items() if v is not None}
    if stdin or data == "-":
        defaults = dict(options)
        if event_type is not None:
            defaults["event_type"] = event_type
        items = admin.parse_json_lines(sys.stdin, defaults)
        many = admin.enqueue_many(t, items)
        deduplicated = sum(a.deduplicated for a in many)
        out.print(
            f"enqueued {len(many) - deduplicated} item(s)"
            + (f", {deduplicated} deduplicated (their key was held)" if deduplicated else "")
        )
        return
    if event_type is None or data is None:
        raise admin.UsageProblem("give --event-type and --data (or --stdin for JSON lines)")
    added = admin.enqueue(t, event_type, admin.parse_json(data, "--data"), **options)
    if added.deduplicated:
        out.print(
            f"deduplicated: id={added.id} event_id={added.event_id} holds this key;"
            " nothing was added"
        )
    else:
        out.print(f"enqueued id={added.id} event_id={added.event_id}")


def stats(database: DatabaseOpt = None, schema: SchemaOpt = None) -> None:
    """Items by status, event type and plugin, plus totals."""
    s = admin.stats(admin.target(database, schema))
    if s.rows:
        out.print(stats_table(s))
    out.print(totals_line(s))


def cleanup(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    retention_days: Annotated[
        int,
        typer.Option(
            "--retention-days",
            metavar="DAYS",
            min=0,
            max=BIGINT_MAX,
            help="Keep finished items this many days.",
        ),
    ] = 7,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", metavar="N", min=1, max=BIGINT_MAX, help="Rows per transaction."
        ),
    ] = 5000,
    no_archive: Annotated[
        bool,
        typer.Option(
            "--no-archive", help="Do not copy dead letters and cancelled items to the archive."
        ),
    ] = False,
) -> None:
    """Delete finished items past retention (dead letters and cancelled ones are archived)."""
    from rich.progress import (  # only here: a tenth of `--help`'s imports
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    t = admin.target(database, schema)
    due = admin.cleanup_due(t, retention_days)
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
        result = admin.cleanup(
            t,
            retention_days,
            batch_size=batch_size,
            archive=not no_archive,
            on_batch=lambda d, _a: progress.advance(task, d),
        )
    out.print(f"deleted {result.deleted}, archived {result.archived}")


def cancel(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    ids: IdsOpt = None,
    event_type: EventTypeOpt = None,
    plugin: PluginOpt = None,
    error_code: ErrorCodeOpt = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only items enqueued longer ago than this (30s, 5m, 1h, 7d).",
        ),
    ] = None,
    yes: YesOpt = False,
) -> None:
    """Cancel pending and processing items for good (asks first unless --yes).

    They end as 'cancelled' and never run again; a running handler is not
    stopped, but its outcome is dropped. Finished items are left alone.
    """
    t = admin.target(database, schema)
    filt = admin.CancelFilter(
        ids=tuple(ids or ()),
        event_type=admin.check_name(event_type, "--event-type"),
        plugin=admin.check_name(plugin, "--plugin"),
        error_code=admin.check_name(error_code, "--error-code"),
        older_than=None if older_than is None else admin.parse_duration(older_than, "--older-than"),
    )

    def confirm(count: int) -> bool:
        return yes or ask(f"Cancel {count} pending or processing item(s) for good?")

    result = admin.cancel_items(t, filt, confirm)
    for item_id, status in result.skipped.items():
        why = "no such item" if status is None else f"already {status}, left alone"
        out.print(f"id {item_id}: {why}")
    if result.declined:
        out.print(f"declined: nothing cancelled ({result.matched} item(s) left as they were)")
    elif result.matched == 0:
        out.print("nothing to cancel: no pending or processing item matches")
    else:
        out.print(f"cancelled {result.cancelled}")
        if result.cancelled < result.matched:
            out.print(
                f"({result.matched - result.cancelled} of the {result.matched} matched finished"
                " or were busy in another transaction meanwhile; run again to retry those)"
            )
