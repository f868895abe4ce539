"""`retryq metrics` and `retryq circuits`: thin shells over retryq_py.ops and
retryq_py.metrics. `register(app)` adds them to the main CLI."""

from __future__ import annotations

import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from retryq_py import commands as cmd
from retryq_py import metrics, ops

out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
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
PluginOpt = Annotated[
    str | None,
    typer.Option(
        "--plugin", metavar="NAME", help="plugin_name of the key (omit for items without a plugin)."
    ),
]

circuits_app = typer.Typer(
    help="Show and steer the circuit breakers (one per event_type and plugin).",
    rich_markup_mode=None,
    invoke_without_command=True,
)


def _when(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def circuits_table(rows: list[ops.Circuit]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in (
        "event_type",
        "plugin",
        "state",
        "failures",
        "threshold",
        "cooldown",
        "open_until",
        "probe",
        "opened",
        "lease_expiries",
    ):
        table.add_column(col)
    for c in rows:
        table.add_row(
            c.event_type,
            c.plugin_name or "",
            c.state + (" (forced)" if c.forced else ""),
            str(c.consecutive_failures),
            "off" if c.failure_threshold == 0 else str(c.failure_threshold),
            f"{c.cooldown_seconds:g}s..{c.max_cooldown_seconds:g}s",
            _when(c.open_until),
            "" if c.probe_item_id is None else str(c.probe_item_id),
            str(c.times_opened),
            str(c.lease_expiries),
        )
    return table


@circuits_app.callback()
def circuits_default(
    ctx: typer.Context, database: DatabaseOpt = None, schema: SchemaOpt = None
) -> None:
    """With no subcommand: the same as `retryq circuits list`."""
    ctx.obj = (database, schema)  # `circuits -d URL open X` works too
    if ctx.invoked_subcommand is None:
        circuits_list(ctx, database, schema)


def _target(ctx: typer.Context, database: str | None, schema: str | None) -> cmd.Target:
    group_db, group_schema = ctx.obj if isinstance(ctx.obj, tuple) else (None, None)
    return cmd.target(database or group_db, schema or group_schema)


@circuits_app.command("list")
def circuits_list(
    ctx: typer.Context, database: DatabaseOpt = None, schema: SchemaOpt = None
) -> None:
    """Every circuit with its state, failure streak and settings."""
    t = _target(ctx, database, schema)
    with cmd.connect(t) as conn:
        rows = ops.list_circuits(conn, t.schema)
    if rows:
        out.print(circuits_table(rows))
    open_count = sum(1 for c in rows if c.state != "closed")
    out.print(f"{len(rows)} circuit(s), {open_count} not closed")


@circuits_app.command("open")
def circuits_open(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(help="event_type of the key.")],
    plugin: PluginOpt = None,
    seconds: Annotated[
        float | None,
        typer.Option(
            "--seconds",
            metavar="SECONDS",
            help="Open this long, then probe (default: until `circuits close`).",
        ),
    ] = None,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Stop handing out a key's items now; they wait and keep their retry budget."""
    t = _target(ctx, database, schema)
    with cmd.connect(t) as conn:
        ops.open_circuit(conn, event_type, plugin, seconds=seconds, schema=t.schema)
    how = "until closed" if seconds is None else f"for {seconds:g}s, then probed"
    out.print(f"opened {event_type}/{plugin or '-'} {how}")


@circuits_app.command("close")
def circuits_close(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(help="event_type of the key.")],
    plugin: PluginOpt = None,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Close a circuit now and forget its failure streak."""
    t = _target(ctx, database, schema)
    with cmd.connect(t) as conn:
        found = ops.close_circuit(conn, event_type, plugin, schema=t.schema)
    if not found:
        raise cmd.CommandError(f"no circuit for {event_type}/{plugin or '-'}")
    out.print(f"closed {event_type}/{plugin or '-'}")


@circuits_app.command("set-threshold")
def circuits_set_threshold(
    ctx: typer.Context,
    threshold: Annotated[
        int | None,
        typer.Argument(min=0, help="Failures in a row that open the circuit; 0 turns it off."),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--event-type", metavar="TYPE", help="The key's event_type.")
    ] = None,
    plugin: PluginOpt = None,
    default: Annotated[
        bool, typer.Option("--default", help="Set the defaults every key follows.")
    ] = False,
    cooldown: Annotated[
        float | None,
        typer.Option("--cooldown", metavar="SECONDS", help="First cool-down, seconds."),
    ] = None,
    max_cooldown: Annotated[
        float | None,
        typer.Option("--max-cooldown", metavar="SECONDS", help="Longest cool-down, seconds."),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Make the key follow the defaults again first.")
    ] = False,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Configure one key (--event-type [--plugin]) or the defaults (--default)."""
    if default == (event_type is not None):
        raise cmd.UsageProblem("give either --event-type (and --plugin) or --default")
    if default and plugin is not None:
        raise cmd.UsageProblem("--plugin goes with --event-type, not --default")
    t = _target(ctx, database, schema)
    with cmd.connect(t) as conn:
        ops.configure_circuit(
            conn,
            event_type,
            plugin,
            failure_threshold=threshold,
            cooldown_seconds=cooldown,
            max_cooldown_seconds=max_cooldown,
            reset=reset,
            schema=t.schema,
        )
    out.print("defaults set" if default else f"configured {event_type}/{plugin or '-'}")


def metrics_command(
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="0 picks one.")
    ] = 9464,
    addr: Annotated[
        str, typer.Option("--addr", metavar="ADDR", help="Address to listen on.")
    ] = "0.0.0.0",
) -> None:
    """Serve the queue's Prometheus metrics at /metrics until SIGTERM/SIGINT."""
    t = cmd.target(database, schema)
    with cmd.connect(t):
        pass  # unreachable or not installed: say so now, not at the first scrape
    server = metrics.start_metrics_server(port, addr, database=t.conninfo, schema=t.schema)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    err.print(f"retryq metrics: http://{addr}:{server.port}/metrics for {t.describe()}")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.close()


def register(app: typer.Typer) -> None:
    """Add `metrics` and `circuits` to the retryq CLI."""
    app.command("metrics")(metrics_command)
    app.add_typer(circuits_app, name="circuits")
