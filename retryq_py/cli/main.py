"""The `retryq` command line: flags in, a table or a count out.

Each command is a thin shell over a function in `retryq_py.admin`. Errors a
person can act on print one line on stderr and exit with a documented code
(`admin.ExitCode`): 2 bad usage or config, 3 database unreachable, 4 retryq
not installed there, 1 any other failure. Set RETRYQ_DEBUG=1 for tracebacks.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import psycopg
import typer
from psycopg import errors as pgerrors

from retryq_py import admin
from retryq_py.admin import ExitCode
from retryq_py.cli import dead_letters, ops, queue_cmds, web, worker
from retryq_py.cli.render import out

app = typer.Typer(
    name="retryq",
    help="A durable retry queue in PostgreSQL: install it, feed it, run workers, inspect it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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
    from retryq_py.cli.demo import run_demo  # the embedded server only loads here

    run_demo(out, database, items=items, workers=workers, keep=keep)


# The order of `retryq --help`.
app.command("metrics")(ops.metrics)
app.command()(queue_cmds.migrate)
app.command()(queue_cmds.enqueue)
app.command()(worker.worker)
app.command()(queue_cmds.stats)
app.command()(queue_cmds.cleanup)
app.command()(demo)
app.command()(web.web)
app.add_typer(dead_letters.app, name="dead-letter")
app.add_typer(ops.circuits_app, name="circuits")


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"retryq: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def _exit_for(exc: BaseException) -> tuple[str, int]:
    """The one line and exit code for an exception escaping a command."""
    if isinstance(exc, admin.CommandError):
        return str(exc), exc.exit_code
    if isinstance(exc, pgerrors.UndefinedFunction | pgerrors.UndefinedTable):
        return (
            f"{admin.first_line(exc)} (is retryq installed here? run `retryq migrate`)",
            ExitCode.NOT_INSTALLED,
        )
    # 22023 and 23514: the queue's own validation of a value the user gave.
    if isinstance(exc, pgerrors.InvalidParameterValue | pgerrors.CheckViolation):
        return admin.first_line(exc), ExitCode.USAGE
    if isinstance(exc, psycopg.OperationalError):
        return f"database error: {admin.first_line(exc)}", ExitCode.UNREACHABLE
    if isinstance(exc, psycopg.Error):
        return f"database error: {admin.first_line(exc)}", ExitCode.FAILURE
    return f"{type(exc).__name__}: {admin.first_line(exc)}", ExitCode.FAILURE


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
