"""The options several commands share, declared once."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from retryq_py.admin.target import DATABASE_ENV, UsageProblem


class PlainUsage(TyperCommand):
    """A command whose usage line reads as the README writes it: a required
    argument as `EVENT_TYPE`, an optional one as `[EVENT_TYPE]` (typer's own
    usage line braces required ones: `{EVENT_TYPE}`). Give every argument an
    upper-case metavar. Pass as `cls=` to a command that takes arguments."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:  # typer's Click context
        return [
            piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece
            for piece in super().collect_usage_pieces(ctx)
        ]


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def ask(question: str) -> bool:
    """A destructive command's confirmation, read from stdin (a terminal or a
    pipe). With nothing to read (stdin closed or empty) it cannot be asked:
    a UsageProblem that says to pass --yes, instead of Click's bare Abort."""
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:
        sys.stderr.write("\n")
        raise UsageProblem(f"{question.rstrip('?')}: no answer on stdin; pass --yes") from None


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
# The SQL functions take ids, limits and counts as bigint: a larger number is
# refused here, naming the option (exit 2), not by the server's unnamed
# "bigint out of range" or a search for a numeric overload (42883, which
# reads as "not installed"). Every whole-number option has bounds within
# these (tests/cli/test_option_ranges.py checks that none is left without).
BIGINT_MAX = 2**63 - 1
BIGINT_MIN = -BIGINT_MAX - 1
IdsOpt = Annotated[
    list[int] | None,
    typer.Option(
        "--id",
        metavar="ID",
        min=BIGINT_MIN,
        max=BIGINT_MAX,
        help="Only this item id (repeatable).",
    ),
]

# --- circuit keys ------------------------------------------------------------

KeyPluginOpt = Annotated[
    str | None,
    typer.Option(
        "--plugin", metavar="NAME", help="plugin_name of the key (omit for items without a plugin)."
    ),
]
