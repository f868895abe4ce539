"""The `retryq` command line: flags in, a table or a count out.

Each command is a thin shell over a function in `retryq_py.admin`. Errors a
person can act on print one line on stderr and exit with a documented code
(`admin.ExitCode`): 2 bad usage or config, 3 database unreachable, 4 retryq
not installed there, 1 any other failure, 130 interrupted. Set RETRYQ_DEBUG=1
for tracebacks. `main` is the one place that maps an exception to its line
and code: Click's usage errors included, so a bad flag is one line too.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from typing import Annotated, Any, NoReturn

import typer

from retryq_py import admin
from retryq_py.admin import ExitCode
from retryq_py.cli import dead_letters, ops, pauses, queue_cmds, web, worker
from retryq_py.cli.options import PlainUsage
from retryq_py.cli.render import out, visible

app = typer.Typer(
    name="retryq",
    help="A durable retry queue in PostgreSQL: install it, feed it, run workers, inspect it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("retryq")
        except metadata.PackageNotFoundError:
            version = "unknown"
        out.print(f"retryq {version}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """A durable retry queue in PostgreSQL: install it, feed it, run workers, inspect it."""


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
        int, typer.Option("--items", metavar="N", min=1, max=100000, help="How many items.")
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
app.command()(queue_cmds.cancel)
app.command()(demo)
app.command()(web.web)
app.add_typer(dead_letters.app, name="dead-letter")
app.add_typer(ops.circuits_app, name="circuits")
app.add_typer(ops.rate_limits_app, name="rate-limits")
app.command(cls=PlainUsage)(pauses.pause)
app.command(cls=PlainUsage)(pauses.resume)
app.command()(pauses.pauses)


def _fail(message: str, code: int) -> NoReturn:
    # a message may quote a value from the queue or the server: shown as it is
    sys.stderr.write(f"retryq: {visible(message)}\n")
    sys.stderr.flush()
    raise SystemExit(code)


# The partitions are private: a message names the table clients see.
_PRIVATE_RELATION = re.compile(r'"_retryq_(?:active|finished)"')


def _public(message: str) -> str:
    return _PRIVATE_RELATION.sub('"daz_retry_queue"', message)


def _is_usage_error(exc: BaseException) -> bool:
    """Click's UsageError and its kinds (bad value, missing or unknown option),
    whether typer brings Click or its own copy of it: exit code 2, a message."""
    return getattr(exc, "exit_code", None) == 2 and callable(getattr(exc, "format_message", None))


def _usage_line(exc: Any) -> str:
    """A usage error as one line: `enqueue: invalid value for '--priority': ...`."""
    text = " ".join(str(exc.format_message()).split()).rstrip(".")
    text = text[:1].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    command = str(ctx.command_path) if ctx is not None else "retryq"
    where = command.removeprefix("retryq").strip()
    return f"{where}: {text}" if where else text


def _lost(exc: Any) -> bool:
    """The server went away or never answered (no SQLSTATE, class 08, a
    shutdown or a server starting up): exit 3. A statement_timeout (57014)
    or another refusal with a SQLSTATE reached the server: exit 1."""
    state = exc.sqlstate
    return not state or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _exit_for(exc: BaseException) -> tuple[str, int]:
    """The one line and exit code for an exception escaping a command."""
    # psycopg is loaded by the commands that connect; `--help` never gets here
    import psycopg
    from psycopg import errors as pgerrors

    if isinstance(exc, admin.CommandError):
        return str(exc), exc.exit_code
    if _is_usage_error(exc):
        return _usage_line(exc), ExitCode.USAGE
    if isinstance(exc, typer.Abort):
        return "aborted", ExitCode.FAILURE
    if isinstance(exc, pgerrors.UndefinedFunction | pgerrors.UndefinedTable):
        return (
            f"{admin.first_line(exc)} (is retryq installed here? run `retryq migrate`)",
            ExitCode.NOT_INSTALLED,
        )
    # the queue's own refusal of a value the user gave
    if admin.is_refused_value(exc):
        return _public(admin.refusal(exc)), ExitCode.USAGE
    if isinstance(exc, psycopg.OperationalError) and _lost(exc):
        return f"database error: {_public(admin.first_line(exc))}", ExitCode.UNREACHABLE
    if isinstance(exc, psycopg.Error):
        return f"database error: {_public(admin.first_line(exc))}", ExitCode.FAILURE
    return f"{type(exc).__name__}: {admin.first_line(exc)}", ExitCode.FAILURE


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and turns errors into one line + exit code."""
    try:
        # standalone_mode=False: Click raises its usage errors instead of
        # printing a usage block, so they get the same one line as ours.
        code = app(args=argv, prog_name="retryq", standalone_mode=False)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `retryq` alone: the help
            sys.stdout.write(exc.ctx.get_help() + "\n")  # type: ignore[attr-defined]
            raise SystemExit(ExitCode.USAGE) from None
        if os.environ.get("RETRYQ_DEBUG"):
            raise
        message, code = _exit_for(exc)
        _fail(message, code)
    if isinstance(code, int) and code:
        raise SystemExit(code)
