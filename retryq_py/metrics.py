"""Prometheus metrics.

Worker side: what each RetryWorker in this process did, by event_type. The
metric objects live in prometheus_client's default registry, so an exporter
started anywhere in the process serves them.

Queue side (QueueCollector, at the end): what the table holds, read from
PostgreSQL at each scrape by `retryq metrics`; see retryq_py.ops for why a
scrape stays cheap with millions of rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

import psycopg
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool, PoolTimeout

from retryq_py import _session as session
from retryq_py import ops
from retryq_py._sql import ops as _q
from retryq_py._sql.timestamps import load_infinite_timestamps

ITEMS_PROCESSED = Counter(
    "retryq_worker_items_processed",
    "Items whose handler succeeded and that the worker completed.",
    ["event_type"],
)
ITEMS_FAILED = Counter(
    "retryq_worker_items_failed",
    "Attempts that failed and were scheduled for a retry.",
    ["event_type"],
)
ITEMS_DEAD_LETTERED = Counter(
    "retryq_worker_items_dead_lettered",
    "Items the worker turned into dead letters (permanent error, unknown type, spent budget).",
    ["event_type"],
)
ITEMS_SNOOZED = Counter(
    "retryq_worker_items_snoozed",
    "Items a handler snoozed (raised Snooze): back to pending, no attempt spent.",
    ["event_type"],
)
HANDLER_DURATION = Histogram(
    "retryq_worker_handler_duration_seconds",
    "Time spent in a handler, whatever its outcome.",
    ["event_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
ACQUIRE_DURATION = Histogram(
    "retryq_worker_acquire_duration_seconds",
    "Round trip of one lease: acquire_retry_items and the outcomes written "
    "in the same transaction (one query).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DATABASE_ERRORS = Counter(
    "retryq_worker_database_errors",
    "Errors of the worker's own statements, by SQLSTATE ('' when none) and by what "
    "the worker did: transient (backed off), item (wrote the items one by one), "
    "configuration (stopped), cleanup (cleanup backed off or stopped).",
    ["sqlstate", "kind"],
)

# --- queue side -------------------------------------------------------------

log = logging.getLogger(__name__)


def _pause_key(z: _q.Pause) -> list[str]:
    """A pause's labels: '*' for every event type or plugin, '' for the items
    without a plugin (as every other series labels them)."""
    return [
        "*" if z.event_type is None else z.event_type,
        "*" if z.plugin_name is None else z.plugin_name,
    ]


def _configure(conn: psycopg.Connection[Any]) -> None:
    """A connection of the collector's own pool: infinite times read, UTF8 and ISO."""
    load_infinite_timestamps(conn)
    session.pin(conn)


class QueueCollector(Collector):
    """Reads the queue's numbers at each scrape (one short transaction).

    `database` is a conninfo string or URL (the collector keeps a pool of one
    or two connections; close() closes it) or a ConnectionPool of yours. When
    the database cannot be read the scrape still answers, with
    retryq_queue_up 0 and nothing else from this collector.
    """

    def __init__(
        self,
        database: str | ConnectionPool[Any],
        schema: str | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        self.schema = schema
        self.timeout = timeout
        self._owned = isinstance(database, str)
        if isinstance(database, str):
            pool: ConnectionPool[Any] = ConnectionPool(
                database,
                min_size=1,
                max_size=2,
                timeout=timeout,
                check=ConnectionPool.check_connection,
                name="retryq-metrics",
                kwargs=dict(session.OWN_KWARGS),
                configure=_configure,
                open=False,
            )
            pool.open(wait=False)
            self._pool = pool
        else:
            self._pool = database

    def close(self) -> None:
        if self._owned:
            self._pool.close()

    def describe(self) -> Iterable[Any]:
        # Registering must not touch the database, and the names never clash.
        return []

    def collect(self) -> Iterable[Any]:
        started = time.monotonic()
        up = GaugeMetricFamily(
            "retryq_queue_up", "1 when this scrape could read the queue, else 0."
        )
        try:
            with self._pool.connection(timeout=self.timeout) as conn:
                conn.execute(_q.SCRAPE_SNAPSHOT)
                conn.execute(_q.LOCAL_STATEMENT_TIMEOUT, (f"{int(self.timeout * 1000)}ms",))
                m = ops.collect_queue_metrics(conn, self.schema)
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("retryq metrics: cannot read the queue: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        size = GaugeMetricFamily(
            "daz_retry_queue_size",
            "Current size of retry queue by status (completed: planner estimate).",
            labels=["status"],
        )
        for status, value in m.sizes.items():
            size.add_metric([status], value)
        yield size
        yield GaugeMetricFamily(
            "retryq_queue_oldest_due_age_seconds",
            "How long the oldest due item nobody holds has been waiting (0: none).",
            value=m.oldest_due_age_seconds,
        )
        yield GaugeMetricFamily(
            "retryq_queue_expired_leases",
            "Leases past their expiry that no worker has taken over yet.",
            value=m.expired_leases,
        )
        dead = GaugeMetricFamily(
            "retryq_queue_dead_letters",
            "Dead letters in the queue (not yet requeued or cleaned up).",
            labels=["event_type", "plugin_name"],
        )
        for d in m.dead_letters:
            dead.add_metric([d.event_type, d.plugin_name or ""], d.count)
        yield dead
        cancelled = GaugeMetricFamily(
            "retryq_queue_cancelled",
            "Cancelled items in the queue (not yet cleaned up).",
            labels=["event_type", "plugin_name"],
        )
        for k in m.cancelled:
            cancelled.add_metric([k.event_type, k.plugin_name or ""], k.count)
        yield cancelled
        labels = ["event_type", "plugin_name"]
        expiries = CounterMetricFamily(
            "retryq_queue_lease_expiries",
            "Leases that ran out and were taken over (a worker died or hung).",
            labels=labels,
        )
        state = GaugeMetricFamily(
            "retryq_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open (probing), 2 open.",
            labels=labels,
        )
        streak = GaugeMetricFamily(
            "retryq_circuit_consecutive_failures",
            "Failures in a row since the key last succeeded.",
            labels=labels,
        )
        opened = CounterMetricFamily(
            "retryq_circuit_opened",
            "Times the circuit opened (tripped, reopened after a failed probe, or by hand).",
            labels=labels,
        )
        for c in m.circuits:
            key = [c.event_type, c.plugin_name or ""]
            expiries.add_metric(key, c.lease_expiries)
            state.add_metric(key, ops.CIRCUIT_STATES[c.state])
            streak.add_metric(key, c.consecutive_failures)
            opened.add_metric(key, c.times_opened)
        yield expiries
        yield state
        yield streak
        yield opened
        limit = GaugeMetricFamily(
            "retryq_rate_limit_max_leases",
            "A key's rate limit: leases allowed per period.",
            labels=labels,
        )
        period = GaugeMetricFamily(
            "retryq_rate_limit_period_seconds",
            "A key's rate limit: the period, seconds.",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "retryq_rate_limit_leases_in_period",
            "Leases of a rate-limited key within the last period (at max_leases: throttled).",
            labels=labels,
        )
        for r in m.rate_limits:
            key = [r.event_type, r.plugin_name or ""]
            limit.add_metric(key, r.max_leases)
            period.add_metric(key, r.period_seconds)
            used.add_metric(key, r.leases_in_period)
        yield limit
        yield period
        yield used
        paused = GaugeMetricFamily(
            "retryq_queue_paused_items",
            "Items a pause holds back (one series per pause; '*': every event type or"
            " plugin, plugin_name '': the items without a plugin).",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "retryq_queue_pause_age_seconds",
            "How long each pause has lasted (labels as retryq_queue_paused_items).",
            labels=labels,
        )
        for z in m.pauses:
            paused.add_metric(_pause_key(z), z.held_count)
            age.add_metric(_pause_key(z), z.age_seconds)
        yield paused
        yield age
        yield GaugeMetricFamily(
            "retryq_queue_scrape_duration_seconds",
            "Time this scrape spent reading the queue.",
            value=time.monotonic() - started,
        )


@dataclass
class MetricsServer:
    """A running /metrics endpoint; close() stops it."""

    port: int
    registry: CollectorRegistry
    collector: QueueCollector | None
    _server: WSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self.collector is not None:
            self.registry.unregister(self.collector)
            self.collector.close()


def start_metrics_server(
    port: int,
    addr: str = "0.0.0.0",
    *,
    database: str | ConnectionPool[Any] | None = None,
    schema: str | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> MetricsServer:
    """Serve /metrics on addr:port (0 picks a free port) from a daemon thread.

    The registry (by default prometheus_client's, which holds the worker
    metrics above) is served; with `database`, a QueueCollector for that
    queue is added to it.
    """
    collector = None
    if database is not None:
        collector = QueueCollector(database, schema)
        registry.register(collector)
    try:
        server, thread = start_http_server(port, addr, registry)
    except BaseException:
        if collector is not None:
            registry.unregister(collector)
            collector.close()
        raise
    return MetricsServer(int(server.server_port), registry, collector, server, thread)
