"""`retryq pause`, `retryq resume` and `retryq pauses`."""

from __future__ import annotations

from typing import Annotated

import typer

from retryq_py import admin
from retryq_py.cli.options import DatabaseOpt, SchemaOpt
from retryq_py.cli.render import out, pauses_table

EventTypeArg = Annotated[
    str | None,
    typer.Argument(metavar="EVENT_TYPE", help="The event_type (omit with --plugin or --all)."),
]
PausePluginOpt = Annotated[
    str | None,
    typer.Option(
        "--plugin",
        metavar="NAME",
        help="Only this plugin's items (of EVENT_TYPE, or of every event type without it).",
    ),
]
NoPluginOpt = Annotated[
    bool,
    typer.Option(
        "--no-plugin",
        help="Only the items without a plugin (of EVENT_TYPE, or of every event type without it).",
    ),
]
AllOpt = Annotated[bool, typer.Option("--all", help="The whole queue: every event type.")]


def _key(
    event_type: str | None, plugin: str | None, no_plugin: bool, everything: bool
) -> str | None:
    """A key, or --all, never both nor neither (a bare `retryq pause` must
    not stop the whole queue by accident); the plugin as the SQL takes it:
    None for every plugin, "" for --no-plugin. An empty --plugin (a shell
    variable left unset) is refused rather than read as either."""
    if plugin == "":
        raise admin.UsageProblem(
            "invalid --plugin: must not be empty (use --no-plugin for the items without a plugin)"
        )
    if no_plugin and plugin is not None:
        raise admin.UsageProblem("give --plugin or --no-plugin, not both")
    if no_plugin:
        plugin = ""
    if everything == (event_type is not None or plugin is not None):
        raise admin.UsageProblem(
            "give EVENT_TYPE (and/or --plugin or --no-plugin), or --all for the whole queue"
        )
    return plugin


def pause(
    event_type: EventTypeArg = None,
    plugin: PausePluginOpt = None,
    no_plugin: NoPluginOpt = False,
    everything: AllOpt = False,
    reason: Annotated[
        str | None,
        typer.Option("--reason", metavar="TEXT", help="Why, shown by `retryq pauses`."),
    ] = None,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Stop leasing an event type's (or a plugin's, or every) items until `retryq resume`.

    Paused items keep their retry budget; an item a worker is running now
    finishes. Enqueueing goes on.
    """
    plugin = _key(event_type, plugin, no_plugin, everything)
    new = admin.pause(admin.target(database, schema), event_type, plugin, reason=reason)
    key = admin.pause_key(event_type, plugin)
    out.print(f"paused {key}" if new else f"{key} was already paused")


def resume(
    event_type: EventTypeArg = None,
    plugin: PausePluginOpt = None,
    no_plugin: NoPluginOpt = False,
    everything: AllOpt = False,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """End a pause made by `retryq pause` with the same EVENT_TYPE/--plugin/--no-plugin/--all."""
    plugin = _key(event_type, plugin, no_plugin, everything)
    admin.resume(admin.target(database, schema), event_type, plugin)
    out.print(f"resumed {admin.pause_key(event_type, plugin)}")


def pauses(database: DatabaseOpt = None, schema: SchemaOpt = None) -> None:
    """Every pause: its key, since when, by whom, why, and the items it holds back."""
    rows, held = admin.pauses_held(admin.target(database, schema))
    if rows:
        out.print(pauses_table(rows))
    out.print(f"{len(rows)} pause(s), {held} item(s) held back")
