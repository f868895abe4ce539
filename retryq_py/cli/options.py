"""The options several commands share, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from retryq_py.admin.target import DATABASE_ENV

DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database",
        "-d",
        envvar=DATABASE_ENV,
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

# --- dead-letter filters -----------------------------------------------------

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

# --- circuit keys ------------------------------------------------------------

KeyPluginOpt = Annotated[
    str | None,
    typer.Option(
        "--plugin", metavar="NAME", help="plugin_name of the key (omit for items without a plugin)."
    ),
]
