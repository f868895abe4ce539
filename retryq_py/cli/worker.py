"""`retryq worker`: run handlers until a signal, or until idle."""

from __future__ import annotations

import logging
import os
import sys
import threading
from datetime import timedelta
from typing import Annotated

import typer

from retryq_py import admin
from retryq_py.cli import logs
from retryq_py.cli.options import DatabaseOpt, SchemaOpt
from retryq_py.cli.render import err, out, worker_counts_line

log = logging.getLogger("retryq.worker")


def worker(
    handlers: Annotated[
        str,
        typer.Option(
            "--handlers",
            metavar="MODULE:ATTR",
            help="MODULE:ATTR, a mapping event_type -> callable(item) or a HandlerRegistry;"
            " with an async def handler among them, the worker runs on asyncio.",
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
            help="Exit 0 once nothing is due now and the worker holds nothing"
            " (items scheduled later stay for the next run).",
        ),
    ] = False,
    exit_when_drained: Annotated[
        bool,
        typer.Option(
            "--exit-when-drained",
            help="Exit 0 once nothing is pending or processing at all (waits for retries).",
        ),
    ] = False,
    worker_count: Annotated[
        int | None,
        typer.Option(
            "--worker-count",
            metavar="N",
            min=1,
            max=1000,
            help="Handlers run at once (threads or tasks, 1..1000, as the config's worker_count).",
        ),
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
    all_event_types: Annotated[
        bool,
        typer.Option(
            "--all-event-types",
            help="Lease every event type, not only those of --handlers: an item without"
            " a handler becomes a dead letter (unknown_event_type). Only for a queue"
            " that no other service shares.",
        ),
    ] = False,
    plugins: Annotated[
        list[str] | None,
        typer.Option(
            "--plugin",
            metavar="NAME",
            help="Lease only items of this plugin (repeat for several; '' for items"
            " without a plugin).",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="Worker id prefix: NAME-HOSTNAME-PID.")
    ] = "retryq",
    log_level: Annotated[
        str, typer.Option("--log-level", metavar="LEVEL", help="debug, info, warning or error.")
    ] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format", metavar="FORMAT", help="text, or json: one JSON object per line."
        ),
    ] = "text",
) -> None:
    """Run handlers for queued items until SIGTERM (exit 0), Ctrl-C (130), or an --exit-when-*."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise admin.UsageProblem(f"invalid --log-level {log_level!r}")
    if log_format not in logs.FORMATS:
        raise admin.UsageProblem(f"invalid --log-format {log_format!r}: use text or json")
    logs.configure(level, log_format)
    cfg = admin.load_worker_config(config)
    t = admin.target(database or cfg.database_url, schema)
    # each attempt in a span when OpenTelemetry is installed (opentelemetry-instrument
    # configures its SDK); the handlers unchanged otherwise
    from retryq_py import tracing  # loads the worker: only to run one

    registry = tracing.traced(admin.load_handlers(handlers))
    interval = None
    if poll_interval is not None:
        # the config's poll_interval rule: 1ms..24h
        interval = admin.parse_duration(
            poll_interval,
            "--poll-interval",
            minimum=timedelta(milliseconds=1),
            maximum=timedelta(hours=24),
        ).total_seconds()
    if not registry:
        raise admin.UsageProblem(
            f"--handlers {handlers}: no handlers; a worker leases only the event types"
            " it has handlers for"
        )
    leases = ("leases every event type" if all_event_types else "leases only these") + (
        f", plugins {', '.join(p or '(none)' for p in plugins)}" if plugins else ""
    )
    until = "idle" if exit_when_idle else "drained" if exit_when_drained else None
    banner = (
        f"retryq worker: {len(registry)} handler(s) ({', '.join(sorted(registry))};"
        f" {leases}) on {t.describe()}; " + (f"exits when {until}" if until else "Ctrl-C stops")
    )
    say = logs.announcer(log_format, err.print)
    next_retry = admin.NextRetry(t)
    events = logs.EventLog(next_retry=next_retry)
    before = set(threading.enumerate())
    try:
        counts = admin.run_worker(
            t,
            registry,
            cfg,
            exit_when_idle=exit_when_idle,
            exit_when_drained=exit_when_drained,
            worker_count=worker_count,
            batch_size=batch_size,
            poll_interval=interval,
            name=name,
            metrics_port=metrics_port,
            on_metrics=lambda port: say(
                f"serving Prometheus metrics on :{port}/metrics", metrics_port=port
            ),
            on_start=lambda worker: say(  # once Ctrl-C is handled
                banner,
                worker_id=worker.worker_id,
                handlers=sorted(registry),
                database=t.describe(),
                exits_when=until,
            ),
            on_event=events,
            all_event_types=all_event_types,
            plugin_names=plugins or None,
        )
    except admin.Interrupted as stopped:
        if stopped.counts is not None:
            out.print(worker_counts_line(stopped.counts))
        _leave_past_threads(before, admin.ExitCode.INTERRUPTED, "retryq: interrupted")
        raise
    finally:
        events.close()
        next_retry.close()
    out.print(worker_counts_line(counts))
    _leave_past_threads(before, admin.ExitCode.OK)


def _leave_past_threads(before: set[threading.Thread], code: int, line: str = "") -> None:
    """Exit now with `code` (after `line` on stderr) when a handler left a
    non-daemon thread running: Python would wait for it at exit, and a
    worker that printed its counts would hang until killed."""
    left = [
        th for th in threading.enumerate() if th not in before and th.is_alive() and not th.daemon
    ]
    if not left:
        return
    log.warning(
        "%d thread(s) a handler started still run (%s): exiting without waiting for them",
        len(left),
        ", ".join(repr(th.name) for th in left[:5]),
    )
    logging.shutdown()
    if line:
        sys.stderr.write(line + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
