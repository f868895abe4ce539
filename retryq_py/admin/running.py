"""`retryq worker` and `retryq metrics`: the long-running commands."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from retryq_py import _session as session
from retryq_py import config as _config
from retryq_py._sql import ops as _q
from retryq_py.admin.target import (
    CommandError,
    Interrupted,
    Target,
    UsageProblem,
    check,
    check_writable,
    first_line,
)
from retryq_py.config import RetryConfig
from retryq_py.errors import explain, server_error_kind
from retryq_py.metrics import MetricsServer, start_metrics_server
from retryq_py.worker import AsyncRetryWorker, RetryWorker, WorkerCounts, WorkerEvent
from retryq_py.worker.events import unavailable_or_error
from retryq_py.worker.handlers import is_coroutine_handler
from retryq_py.worker.signals import relay_signals

AnyWorker = RetryWorker | AsyncRetryWorker

log = logging.getLogger("retryq.worker")


def load_handlers(spec: str) -> Mapping[str, Any]:
    """MODULE:ATTR -> the mapping of event_type to callable (or a HandlerRegistry).

    The current directory is importable, as with `python -m`, so a handlers
    module next to the caller is found without installing it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageProblem(
            f"invalid --handlers {spec!r}: use MODULE:ATTR, e.g. myapp.retry:HANDLERS"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UsageProblem(
                f"invalid --handlers {spec!r}: no module named {exc.name!r}"
            ) from exc
        raise CommandError(f"importing {module_name}: {type(exc).__name__}: {exc}") from exc
    except KeyboardInterrupt:
        raise  # Ctrl-C while importing: interrupted (130), as anywhere
    except BaseException as exc:
        # SystemExit (sys.exit() at import) included: a module that ends the
        # process while imported is a handlers module that raised, not a
        # worker that ran and succeeded. A bare sys.exit()'s text is empty:
        # its code, None, says what it was
        bare = isinstance(exc, SystemExit) and exc.code is None
        text = "None" if bare else first_line(exc)
        raise CommandError(f"importing {module_name}: {type(exc).__name__}: {text}") from exc
    target_obj: Any = module
    for part in attr.split("."):
        try:
            target_obj = getattr(target_obj, part)
        except AttributeError:
            raise UsageProblem(
                f"invalid --handlers {spec!r}: {module_name} has no {attr}"
            ) from None
    if not isinstance(target_obj, Mapping):
        raise UsageProblem(
            f"invalid --handlers {spec!r}: expected a mapping of event_type to callable"
            f" or a HandlerRegistry, got {type(target_obj).__name__}"
        )
    for event_type, fn in target_obj.items():
        if not isinstance(event_type, str) or not callable(fn):
            raise UsageProblem(
                f"invalid --handlers {spec!r}: entry {event_type!r} is not"
                " event_type (str) -> callable"
            )
    return target_obj


def load_worker_config(path: str | None) -> RetryConfig:
    """The guide's JSON config (defaults without a file) plus RETRYQ_* overrides."""
    try:
        return _config.load_config(path)
    except _config.ConfigError as exc:
        raise UsageProblem(f"config: {exc}") from exc


def run_worker(
    t: Target,
    handlers: Mapping[str, Any],
    config: RetryConfig,
    *,
    exit_when_idle: bool = False,
    exit_when_drained: bool = False,
    worker_count: int | None = None,
    batch_size: int | None = None,
    poll_interval: float | None = None,
    name: str = "retryq",
    metrics_port: int | None = None,
    on_metrics: Callable[[int], None] | None = None,
    on_event: Callable[[WorkerEvent], None] | None = None,
    on_start: Callable[[AnyWorker], None] | None = None,
    all_event_types: bool = False,
    plugin_names: Sequence[str] | None = None,
) -> WorkerCounts:
    """Run one worker until a signal; returns its counts.

    An AsyncRetryWorker on a loop of its own when a handler is a coroutine
    function (its plain handlers then run in threads), a RetryWorker
    otherwise.

    exit_when_idle: stop once nothing is due now and the worker holds nothing
    (an item scheduled later, a retry included, does not keep it running: a
    cron-style run). exit_when_drained: stop once nothing is pending or
    processing at all, retries scheduled later waited for (both are
    RetryWorker.run's). SIGINT (Ctrl-C) stops the worker cleanly and then
    raises Interrupted; SIGTERM stops it cleanly and returns. With metrics_port (0:
    any free port), /metrics serves the worker's and the queue's metrics while
    it runs; on_metrics receives the port. on_start(worker) is called once the
    signals are handled, right before the worker runs. The worker leases the
    event types it has handlers for (every one with all_event_types, where an
    item without a handler becomes a dead letter), of plugin_names only when
    given; no handler at all is a UsageProblem."""
    if exit_when_idle and exit_when_drained:
        raise UsageProblem("give --exit-when-idle or --exit-when-drained, not both")
    preflight(t)  # fail fast: the worker itself would wait out an unreachable database
    kind = (
        AsyncRetryWorker
        if any(is_coroutine_handler(fn) for fn in handlers.values())
        else RetryWorker
    )
    try:
        worker: AnyWorker = kind(
            t.conninfo,
            handlers,
            config=config,
            name=name,
            schema=t.schema,
            worker_count=worker_count,
            batch_size=batch_size,
            poll_interval=poll_interval,
            on_event=on_event,
            all_event_types=all_event_types,
            plugin_names=plugin_names,
        )
    except (TypeError, ValueError) as exc:  # a setting, or a handler refused (a generator)
        raise UsageProblem(f"worker: {exc}") from exc
    server: MetricsServer | None = None
    if metrics_port is not None:
        try:
            server = start_metrics_server(metrics_port, database=t.conninfo, schema=t.schema)
        except OSError as exc:
            raise listen_error(exc, "0.0.0.0", metrics_port, "--metrics-port") from exc
        if on_metrics is not None:
            on_metrics(server.port)
    received: list[int] = []
    try:
        with _signals_stop(worker, received):
            if on_start is not None:
                on_start(worker)
            options = {
                "exit_when_idle": exit_when_idle,
                "exit_when_drained": exit_when_drained,
                "install_signal_handlers": False,
            }
            if isinstance(worker, AsyncRetryWorker):
                counts = asyncio.run(worker.run(**options))
            else:
                counts = worker.run(**options)
    finally:
        if server is not None:
            server.close()
    if signal.SIGINT in received:
        raise Interrupted("interrupted", counts=counts)
    return counts


def preflight(
    t: Target, *, max_backoff: float = 10.0, sleep: Callable[[float], None] = time.sleep
) -> None:
    """`check(t)` and `check_writable(t)` before a worker starts, its errors
    classified by SQLSTATE as the running worker classifies those of its own
    statements (server_error_kind): a database that cannot be reached or has
    no queue raises at once (DatabaseUnreachable, NotInstalled), and so does
    a read-only session (UsageProblem: a standby, or
    default_transaction_read_only on; the running worker waits a 25006 out,
    a failover may end it, but a worker started there is misconfigured); a
    transient error of the check's statement (a statement_timeout, a cancel,
    too many connections) is logged and tried again with a doubling backoff,
    as the worker would; any other error (a privilege, say) is raised, for
    the CLI to say with its exit code."""
    backoff = 0.0
    while True:
        try:
            check(t)
            check_writable(t)
            return
        except psycopg.Error as exc:
            if server_error_kind(exc) != "transient":
                raise
            backoff = min(max(backoff * 2, 0.1), max_backoff)
            log.warning(
                "worker: start-up check of %s: %s (%s); retrying in %.1fs",
                t.describe(),
                unavailable_or_error(exc),
                explain(exc),
                backoff,
            )
            sleep(backoff)


class NextRetry:
    """When a pending item is due again, read on one connection of its own
    (opened at the first call); None when unknown. Thread-safe; close() it."""

    def __init__(self, t: Target) -> None:
        self._t = t
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def __call__(self, item_id: int) -> datetime | None:
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self._t.conninfo, autocommit=True, **session.OWN_KWARGS
                    )
                    session.pin(self._conn)  # it reads a timestamptz as text
                row = self._conn.execute(_q.NEXT_RETRY, (item_id,)).fetchone()
            except psycopg.Error:
                return None  # a log line without its time is better than none
            return row[0] if row else None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()


@contextmanager
def _signals_stop(worker: AnyWorker, received: list[int]) -> Iterator[None]:
    """SIGINT and SIGTERM stop the worker (a second one forces it, as a second
    stop() does), and are recorded so that Ctrl-C can end with its exit code.
    Handled in a thread of their own (relay_signals: a handler that took the
    stop's lock deadlocked when a second signal landed inside the first).
    Main thread only: elsewhere the caller stops the worker."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        worker.stop()  # first: a part that logs only while running sees it stopping
        log.info("worker %s: %s, stopping", worker.worker_id, signum.name)

    with relay_signals(on_signal, (signal.SIGINT, signal.SIGTERM)):
        yield


def listen_error(exc: OSError, host: str, port: int, option: str) -> CommandError:
    """One line for a port that cannot be listened on (busy, privileged, no such address)."""
    reason = exc.strerror or first_line(exc)
    return CommandError(f"cannot listen on {host}:{port} ({option}): {reason}")


def bind_port(host: str, port: int, option: str = "--port") -> socket.socket:
    """A listening TCP socket on host:port (0: any free port), or one CommandError line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageProblem(f"invalid --host {host!r}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise listen_error(exc, host, port, option) from exc
    return sock


def serve_metrics(
    t: Target,
    port: int,
    addr: str,
    stop: threading.Event,
    on_serving: Callable[[int], None] | None = None,
) -> None:
    """Serve the queue's /metrics on addr:port (0: any free port) until `stop`
    is set; on_serving receives the port."""
    check(t)  # unreachable or not installed: say so now, not at the first scrape
    try:
        # a registry of its own: the default one holds the worker series,
        # which in this process would only ever read zero
        server = start_metrics_server(
            port, addr, database=t.conninfo, schema=t.schema, registry=CollectorRegistry()
        )
    except OSError as exc:
        raise listen_error(exc, addr, port, "--port") from exc
    try:
        if on_serving is not None:
            on_serving(server.port)
        while not stop.wait(1.0):
            pass
    finally:
        server.close()
