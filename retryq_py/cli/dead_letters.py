"""`retryq dead-letter list|show|requeue|purge`."""

from __future__ import annotations

from typing import Annotated

import typer

from retryq_py import admin
from retryq_py.cli.options import (
    BIGINT_MAX,
    DatabaseOpt,
    ErrorCodeOpt,
    EventTypeOpt,
    IdsOpt,
    OlderThanOpt,
    PlainUsage,
    PluginOpt,
    SchemaOpt,
    YesOpt,
    ask,
)
from retryq_py.cli.render import dead_letters_table, error_history_table, item_grid, out

app = typer.Typer(
    help="Inspect, requeue and purge dead letters.", no_args_is_help=True, rich_markup_mode=None
)


def _filter(
    ids: list[int] | None,
    event_type: str | None,
    plugin: str | None,
    error_code: str | None,
    older_than: str | None,
) -> admin.DeadLetterFilter:
    return admin.DeadLetterFilter(
        ids=tuple(ids or ()),
        event_type=admin.check_name(event_type, "--event-type"),
        plugin=admin.check_name(plugin, "--plugin"),
        error_code=admin.check_name(error_code, "--error-code"),
        older_than=None if older_than is None else admin.parse_duration(older_than, "--older-than"),
    )


@app.command("list")
def dead_letter_list(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    event_type: EventTypeOpt = None,
    plugin: PluginOpt = None,
    error_code: ErrorCodeOpt = None,
    older_than: OlderThanOpt = None,
    limit: Annotated[
        int,
        typer.Option("--limit", metavar="N", min=1, max=BIGINT_MAX, help="At most this many rows."),
    ] = 50,
    archived: Annotated[
        bool,
        typer.Option(
            "--archived",
            help="The dead letters cleanup moved to daz_retry_queue_archive"
            " (requeue and purge no longer reach them).",
        ),
    ] = False,
) -> None:
    """Dead letters, most recent first."""
    t = admin.target(database, schema)
    filt = _filter(None, event_type, plugin, error_code, older_than)
    rows = admin.dead_letter_list(t, filt, limit, archived=archived)
    if not rows:
        out.print("no archived dead letters match" if archived else "no dead letters match")
        return
    out.print(dead_letters_table(rows, "archived dead letters" if archived else "dead letters"))
    if len(rows) == limit:
        out.print(f"(showing the first {limit}; raise --limit for more)")


@app.command("show", cls=PlainUsage)
def dead_letter_show(
    item_id: Annotated[
        int,
        typer.Argument(metavar="ID", min=-BIGINT_MAX - 1, max=BIGINT_MAX, help="The item's id."),
    ],
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """One item with its data and full error history."""
    item = admin.item_show(admin.target(database, schema), item_id)
    out.print(item_grid(item))
    if item.error_history:
        out.print(error_history_table(item))
    else:
        out.print("no errors recorded")


# Skipped ids named one a line, up to this many.
_SKIPS_SHOWN = 100


@app.command("requeue")
def dead_letter_requeue(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    ids: IdsOpt = None,
    event_type: EventTypeOpt = None,
    plugin: PluginOpt = None,
    error_code: ErrorCodeOpt = None,
    older_than: OlderThanOpt = None,
) -> None:
    """Give matching dead letters a fresh retry budget, due now (one transaction).

    Each dead letter left as it was, and each --id not requeued, is named
    with why; exits 1 when some were asked for and none was requeued.
    """
    t = admin.target(database, schema)
    done = admin.dead_letter_requeue_report(
        t, _filter(ids, event_type, plugin, error_code, older_than)
    )
    skipped = done.skipped
    for skip in skipped[:_SKIPS_SHOWN]:
        out.print(f"id {skip.item_id}: {done.why(skip)}")
    if len(skipped) > _SKIPS_SHOWN:
        out.print(f"... and {len(skipped) - _SKIPS_SHOWN} more not requeued")
    if not done.outcomes:
        out.print("requeued 0: no dead letter matches")
        return
    out.print(f"requeued {done.requeued}" + (f" of {len(done.outcomes)}" if skipped else ""))
    if done.requeued == 0:
        raise admin.CommandError(
            f"nothing requeued: none of the {len(skipped)} asked for could be (why: above)"
        )


@app.command("purge")
def dead_letter_purge(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    ids: IdsOpt = None,
    event_type: EventTypeOpt = None,
    plugin: PluginOpt = None,
    error_code: ErrorCodeOpt = None,
    older_than: OlderThanOpt = None,
    yes: YesOpt = False,
) -> None:
    """Delete matching dead letters for good (asks first unless --yes)."""
    t = admin.target(database, schema)

    def confirm(count: int) -> bool:
        return yes or ask(f"Delete {count} dead letter(s) for good?")

    try:
        count = admin.dead_letter_purge(
            t, _filter(ids, event_type, plugin, error_code, older_than), confirm
        )
    except admin.Declined as declined:
        out.print(str(declined))
        return
    out.print(f"purged {count}")
