"""`retryq metrics`, `retryq circuits` and `retryq rate-limits`."""

from __future__ import annotations

import contextlib
import threading
from typing import Annotated

import typer

from retryq_py import admin
from retryq_py.cli.options import (
    BIGINT_MAX,
    BIGINT_MIN,
    DatabaseOpt,
    KeyPluginOpt,
    PlainUsage,
    SchemaOpt,
)
from retryq_py.cli.render import circuits_table, err, out, rate_limits_table

circuits_app = typer.Typer(
    help="Show and steer the circuit breakers (one per event_type and plugin).",
    rich_markup_mode=None,
    invoke_without_command=True,
)


@circuits_app.callback()
def circuits_default(
    ctx: typer.Context, database: DatabaseOpt = None, schema: SchemaOpt = None
) -> None:
    """With no subcommand: the same as `retryq circuits list`."""
    ctx.obj = (database, schema)  # `circuits -d URL open X` works too
    if ctx.invoked_subcommand is None:
        circuits_list(ctx, database, schema)


def _target(ctx: typer.Context, database: str | None, schema: str | None) -> admin.Target:
    group_db, group_schema = ctx.obj if isinstance(ctx.obj, tuple) else (None, None)
    return admin.target(database or group_db, schema or group_schema)


@circuits_app.command("list")
def circuits_list(
    ctx: typer.Context, database: DatabaseOpt = None, schema: SchemaOpt = None
) -> None:
    """Every circuit with its state, failure streak and settings."""
    rows = admin.list_circuits(_target(ctx, database, schema))
    if rows:
        out.print(circuits_table(rows))
    open_count = sum(1 for c in rows if c.state != "closed")
    out.print(f"{len(rows)} circuit(s), {open_count} not closed")


@circuits_app.command("open", cls=PlainUsage)
def circuits_open(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="EVENT_TYPE", help="event_type of the key.")],
    plugin: KeyPluginOpt = None,
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
    admin.open_circuit(_target(ctx, database, schema), event_type, plugin, seconds=seconds)
    how = "until closed" if seconds is None else f"for {seconds:g}s, then probed"
    out.print(f"opened {event_type}/{plugin or '-'} {how}")


@circuits_app.command("close", cls=PlainUsage)
def circuits_close(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="EVENT_TYPE", help="event_type of the key.")],
    plugin: KeyPluginOpt = None,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Close a circuit now and forget its failure streak."""
    admin.close_circuit(_target(ctx, database, schema), event_type, plugin)
    out.print(f"closed {event_type}/{plugin or '-'}")


@circuits_app.command("set-threshold", cls=PlainUsage)
def circuits_set_threshold(
    ctx: typer.Context,
    threshold: Annotated[
        int | None,
        typer.Argument(
            metavar="THRESHOLD",
            min=0,
            max=BIGINT_MAX,
            help="Failures in a row that open the circuit; 0 turns it off.",
        ),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--event-type", metavar="TYPE", help="The key's event_type.")
    ] = None,
    plugin: KeyPluginOpt = None,
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
    admin.require_key(event_type, plugin, default=default)  # before the database's checks
    admin.configure_circuit(
        _target(ctx, database, schema),
        event_type,
        plugin,
        default=default,
        failure_threshold=threshold,
        cooldown_seconds=cooldown,
        max_cooldown_seconds=max_cooldown,
        reset=reset,
    )
    out.print("defaults set" if default else f"configured {event_type}/{plugin or '-'}")


rate_limits_app = typer.Typer(
    help="Show and set rate limits: at most N leases of a key (event_type and plugin)"
    " per period, all workers together.",
    rich_markup_mode=None,
    invoke_without_command=True,
)


@rate_limits_app.callback()
def rate_limits_default(
    ctx: typer.Context, database: DatabaseOpt = None, schema: SchemaOpt = None
) -> None:
    """With no subcommand: the same as `retryq rate-limits list`."""
    ctx.obj = (database, schema)
    if ctx.invoked_subcommand is None:
        rate_limits_list(ctx, database, schema)


@rate_limits_app.command("list")
def rate_limits_list(
    ctx: typer.Context, database: DatabaseOpt = None, schema: SchemaOpt = None
) -> None:
    """Every rate limit with the leases of its last period."""
    rows = admin.list_rate_limits(_target(ctx, database, schema))
    if rows:
        out.print(rate_limits_table(rows))
    throttled = sum(1 for r in rows if r.tokens_free <= 0)
    out.print(f"{len(rows)} rate limit(s), {throttled} at their limit now")


@rate_limits_app.command("set", cls=PlainUsage)
def rate_limits_set(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="EVENT_TYPE", help="event_type of the key.")],
    max_leases: Annotated[
        int,
        typer.Argument(
            metavar="N",
            min=BIGINT_MIN,
            max=BIGINT_MAX,
            help="Leases allowed per period (1..100000).",
        ),
    ],
    plugin: KeyPluginOpt = None,
    per: Annotated[
        float,
        typer.Option("--per", metavar="SECONDS", help="The period, seconds (0.001..31536000)."),
    ] = 1.0,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Lease at most N items of a key per period, counted across all workers."""
    admin.set_rate_limit(
        _target(ctx, database, schema),
        event_type,
        plugin,
        max_leases=max_leases,
        period_seconds=per,
    )
    out.print(f"rate limit {event_type}/{plugin or '-'}: {max_leases} per {per:g}s")


@rate_limits_app.command("clear", cls=PlainUsage)
def rate_limits_clear(
    ctx: typer.Context,
    event_type: Annotated[str, typer.Argument(metavar="EVENT_TYPE", help="event_type of the key.")],
    plugin: KeyPluginOpt = None,
    database: DatabaseOpt = None,
    schema: SchemaOpt = None,
) -> None:
    """Remove a key's rate limit: its items are leased without limit again."""
    admin.clear_rate_limit(_target(ctx, database, schema), event_type, plugin)
    out.print(f"rate limit {event_type}/{plugin or '-'} removed")


def metrics(
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
    from retryq_py.worker.signals import relay_signals

    t = admin.target(database, schema)
    stop = threading.Event()
    with contextlib.ExitStack() as signals:

        def serving(bound_port: int) -> None:
            # only now: a Ctrl-C while connecting still interrupts at once;
            # relayed, as the worker's (a handler that set the Event itself
            # could land inside stop.wait() holding its lock, and deadlock)
            signals.enter_context(relay_signals(lambda signum: stop.set()))
            err.print(f"retryq metrics: http://{addr}:{bound_port}/metrics for {t.describe()}")

        admin.serve_metrics(t, port, addr, stop, on_serving=serving)
