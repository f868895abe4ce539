"""RetryWorker: the public face, which wires the parts and runs them once."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg_pool import ConnectionPool, PoolTimeout

from retryq_py import _session as session
from retryq_py.config import RetryConfig
from retryq_py.errors import explain
from retryq_py.queue import RetryQueue
from retryq_py.worker.control import Stop, Wake
from retryq_py.worker.deadline import Watchdog, WatchedPool, network_kwargs
from retryq_py.worker.events import Emitter, WorkerCounts, WorkerEvent
from retryq_py.worker.flush import Flusher, FlushWriter, Writer
from retryq_py.worker.handlers import HandlerService, HandlerServiceFactory, HandlerThreads
from retryq_py.worker.heartbeat import ExtendLocks, Heartbeat
from retryq_py.worker.lanes import ExitWhen, Lanes
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.listener import Listener
from retryq_py.worker.maintenance import Maintenance
from retryq_py.worker.registry import Handler
from retryq_py.worker.settings import Routing, Settings
from retryq_py.worker.shutdown import Shutdown
from retryq_py.worker.signals import stop_on_signals

log = logging.getLogger("retryq.worker")


def _writer(settings: Settings) -> Writer:
    return FlushWriter(
        settings.worker_id,
        settings.schema,
        settings.lock_seconds,
        settings.max_snoozes,
        settings.routing,
    )


def _queue(pool: ConnectionPool[Any], schema: str | None) -> RetryQueue:
    return RetryQueue(pool, schema=schema)


@dataclass(frozen=True)
class WorkerParts:
    """Parts a worker can be given instead of its own (a test's spy, say).

    `writer(settings)` makes the flush writer; `queue(pool, schema)` the
    client the lanes, the heartbeat and the shutdown call (due, try_cleanup,
    extend_locks, release) once the pool is open; `handlers(handlers,
    ledger, wake, worker_count)` the service that runs the handlers
    (HandlerThreads; AsyncRetryWorker gives HandlerTasks).
    """

    writer: Callable[[Settings], Writer] = _writer
    queue: Callable[[ConnectionPool[Any], str | None], RetryQueue] = _queue
    handlers: HandlerServiceFactory = HandlerThreads


class RetryWorker:
    """Leases items and runs the handler for their event_type.

    `database`: a conninfo string or URL (the worker opens and closes its
    own pool) or an open psycopg_pool ConnectionPool (yours to close).
    `handlers`: a mapping {event_type: callable(item)} or a HandlerRegistry,
    read when the worker is made (TypeError for an async def or generator
    function). A handler that returns completes the item (but a returned
    exception is taken as raised, and a returned coroutine, awaitable, Future
    or generator makes the item a dead letter with code
    retryq.unfinished_result: its work was not done); one that raises fails
    it: with backoff when `is_retryable(exc)` (RetryableError, an
    unclassified exception, a transient SQLSTATE), as a dead letter
    otherwise (PermanentError, a constraint or syntax error).
    RetryableError(..., delay=seconds or a Retry-After value) sets when the
    retry is due (capped at the item's max_retry_delay, no jitter). A
    handler that raises Snooze(delay) puts the item back for `delay` seconds
    without spending an attempt or recording a failure; after `max_snoozes`
    snoozes (default 100, 0 to 10000) the next makes it a dead letter with
    code snooze_limit.

    Routing: the worker leases only items of the event types it has handlers
    for, so several services can share one queue; ValueError when there is
    no handler. `all_event_types=True` leases every item instead, and one
    whose event_type has no handler is dead-lettered with `unknown event
    type: X` (code unknown_event_type). `plugin_names` (default: every
    plugin; "" for items without one) narrows either to those plugins.

    Settings come from `config` (RetryConfig: worker_count, batch_size,
    poll_interval, lock_timeout, grace_period, cleanup_interval,
    retention_days); keyword arguments override it. `lanes` (default
    min(2, worker_count), and one less than max_size for a pool of yours):
    how many lease transactions may be in flight at once (see the package
    docstring). `statement_deadline` (default half of lock_timeout): a
    statement of the worker's own pool that gets no answer for that long has
    its connection cut (see worker/deadline.py). `parts` swaps a part for
    another (see WorkerParts).
    """

    def __init__(
        self,
        database: str | ConnectionPool[Any],
        handlers: Mapping[str, Handler],
        *,
        config: RetryConfig | None = None,
        name: str = "retryq",
        worker_id: str | None = None,
        schema: str | None = None,
        worker_count: int | None = None,
        batch_size: int | None = None,
        poll_interval: float | None = None,
        lock_timeout: float | None = None,
        grace_period: float | None = None,
        cleanup_interval: float | None = None,
        retention_days: int | None = None,
        ack_interval: float | None = None,
        max_backoff: float = 10.0,
        connect_timeout: float = 5.0,
        handler_timeout: float | None = None,
        statement_deadline: float | None = None,
        lanes: int | None = None,
        max_snoozes: int = 100,
        on_event: Callable[[WorkerEvent], None] | None = None,
        parts: WorkerParts | None = None,
        all_event_types: bool = False,
        plugin_names: Sequence[str] | None = None,
    ) -> None:
        routing = Routing.of(handlers, all_event_types=all_event_types, plugin_names=plugin_names)
        self.settings = Settings.resolve(
            config,
            name=name,
            worker_id=worker_id,
            schema=schema,
            worker_count=worker_count,
            batch_size=batch_size,
            poll_interval=poll_interval,
            lock_timeout=lock_timeout,
            grace_period=grace_period,
            cleanup_interval=cleanup_interval,
            retention_days=retention_days,
            ack_interval=ack_interval,
            max_backoff=max_backoff,
            connect_timeout=connect_timeout,
            handler_timeout=handler_timeout,
            statement_deadline=statement_deadline,
            lanes=lanes,
            max_snoozes=max_snoozes,
            pool_max_size=database.max_size if isinstance(database, ConnectionPool) else None,
            routing=routing,
        )
        self.handlers: Mapping[str, Handler] = handlers
        self.on_event = on_event
        self._database = database
        self._parts = parts or WorkerParts()
        if self._parts.handlers is HandlerThreads:
            HandlerThreads.check(handlers)
        self._writer = self._parts.writer(self.settings)
        self._wake = Wake(self.settings.lanes)
        self._stop = Stop(self._wake)
        self._ledger = Ledger(
            batch_size=self.settings.batch_size,
            capacity=self.settings.capacity,
            stopping=self._stop.stopping,
            lease=self.settings.lock_timeout,
            slots=self.settings.worker_count,
            handler_timeout=self.settings.handler_timeout,
        )
        self._ran = threading.Lock()  # taken by the first run(), never released

    # -- public ---------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop acquiring; in-flight handlers get grace_period (none with force)."""
        self._stop.request(force=force)

    @property
    def stopping(self) -> bool:
        """True once stop() or a signal asked the worker to stop."""
        return self._stop.stopping.is_set()

    @property
    def counts(self) -> WorkerCounts:
        """Outcomes written so far; the same object throughout, updated live."""
        return self._ledger.counts

    @property
    def held(self) -> int:
        """Items leased to this worker and not yet acknowledged."""
        return self._ledger.held

    def start(
        self, *, exit_when_idle: bool = False, exit_when_drained: bool = False
    ) -> threading.Thread:
        """run() in a daemon thread (for embedding); stop() then join() it."""
        thread = threading.Thread(
            target=self.run,
            kwargs={
                "exit_when_idle": exit_when_idle,
                "exit_when_drained": exit_when_drained,
                "install_signal_handlers": False,
            },
            name=f"retryq-{self.worker_id}",
            daemon=True,
        )
        thread.start()
        return thread

    def run(
        self,
        *,
        exit_when_idle: bool = False,
        exit_when_drained: bool = False,
        install_signal_handlers: bool | None = None,
    ) -> WorkerCounts:
        """Process items until stop() or a signal; returns the counts.

        exit_when_idle: return once nothing is due now and this worker holds
        nothing (the CLI's --exit-when-idle, for a cron-style run). What is
        due runs, a retry due at once included; an item or retry scheduled
        later stays for the next run. An item an open circuit holds back, or
        an expired lease, counts as due.

        exit_when_drained: return once nothing is pending or processing at
        all (the CLI's --exit-when-drained): retries scheduled later are
        waited for and run, so a short backoff still ends in a final status.

        Raises ValueError given both. In pre-release builds of retryq,
        exit_when_idle meant exit_when_drained: when it now returns with items
        still pending or processing, a DeprecationWarning says so (pass
        exit_when_drained=True for the old behaviour).
        """
        left_active = self._serve(exit_when_idle, exit_when_drained, install_signal_handlers)
        if left_active and exit_when_idle:
            warnings.warn(idle_changed_message("RetryWorker"), DeprecationWarning, stacklevel=2)
        return self.counts

    def _serve(
        self, exit_when_idle: bool, exit_when_drained: bool, install_signal_handlers: bool | None
    ) -> bool:
        """run() without its warning: True when it returned (exit_when_idle)
        with items of its types still pending or processing."""
        if exit_when_idle and exit_when_drained:
            raise ValueError("give exit_when_idle or exit_when_drained, not both")
        exit_when: ExitWhen | None = (
            "idle" if exit_when_idle else "drained" if exit_when_drained else None
        )
        if not self._ran.acquire(blocking=False):
            raise RuntimeError("a RetryWorker runs once: make a new one")
        if not self.config.enabled:
            # the guide starts its worker only `if p.config.RetryEnabled`
            log.warning(
                "worker %s: retry is disabled by the config (enabled: false); not running",
                self.worker_id,
            )
            return False
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        signals: AbstractContextManager[None] = (
            stop_on_signals(self.stop, self.worker_id) if install_signal_handlers else nullcontext()
        )
        with signals:
            left_active = self._run(exit_when)
        return left_active

    # -- wiring ---------------------------------------------------------------

    def _run(self, exit_when: ExitWhen | None) -> bool:
        """Runs the parts; True when exit_when ended it with items left in
        the queue (pending or processing, someone else's or scheduled later)."""
        left_active = False
        s, ledger, stop, wake = self.settings, self._ledger, self._stop, self._wake
        owned = isinstance(self._database, str)
        pool: ConnectionPool[Any] | None = None
        services: list[HandlerService | Listener | Heartbeat | Maintenance] = []
        try:
            pool = self._open_pool(str(self._database)) if owned else self._pool_of_yours()
            queue = self._parts.queue(pool, s.schema)
            emit = Emitter(s.worker_id, self.on_event)
            flusher = Flusher(
                worker_id=s.worker_id,
                ack_interval=s.ack_interval,
                ledger=ledger,
                pool=pool,
                writer=self._writer,
                emit=emit,
                lease=s.lock_timeout,
                schema=s.schema,
                max_snoozes=s.max_snoozes,
            )
            shutdown = Shutdown(
                worker_id=s.worker_id,
                grace_period=s.grace_period,
                max_backoff=s.max_backoff,
                ledger=ledger,
                flusher=flusher,
                release=queue.release,
                stop=stop,
                wake=wake,
                emit=emit,
            )
            services = [
                self._parts.handlers(self.handlers, ledger, wake.set, s.worker_count),
                Listener(
                    self._database,
                    worker_id=s.worker_id,
                    schema=s.schema,
                    connect_timeout=s.connect_timeout,
                    lock_timeout=s.lock_timeout,
                    max_backoff=s.max_backoff,
                    stopping=stop.stopping,
                    on_notify=self._on_notify,
                ),
                Heartbeat(
                    ledger,
                    _renewing(pool, queue.extend_locks, s.lock_timeout),
                    worker_id=s.worker_id,
                    lock_timeout=s.lock_timeout,
                    handler_timeout=s.handler_timeout,
                    done=stop.done,
                    fail=stop.fail,
                    renew_unknown=_shortly(pool, flusher.renew_unknown, s.lock_timeout),
                    release=shutdown.release,
                ),
                Maintenance(
                    queue,
                    worker_id=s.worker_id,
                    interval=s.cleanup_interval,
                    retention_days=s.retention_days,
                    stopping=stop.stopping,
                ),
            ]
            for service in services:
                service.start()
            lanes = Lanes(s, ledger=ledger, flusher=flusher, schedule=queue, stop=stop, wake=wake)
            try:
                lanes.run(exit_when)
                left_active = lanes.left_active
                if stop.error is None:
                    shutdown.run()
                if stop.error is not None:  # the heartbeat's: stop as for a lane's
                    raise stop.error
            except BaseException as exc:
                # not a lost connection (a missing schema, a privilege), or an
                # interrupt: give back what we hold if we can, then let the
                # caller see it
                log.error(
                    "worker %s: stopping: %s (%s)",
                    s.worker_id,
                    "configuration error" if isinstance(exc, Exception) else "interrupted",
                    explain(exc),
                )
                stop.abort()
                try:
                    shutdown.run()
                except Exception:
                    log.exception("worker %s: shutdown after an error failed", s.worker_id)
                raise
        finally:
            stop.stopping.set()
            stop.done.set()
            ledger.end_handlers(s.worker_count)
            deadline = time.monotonic() + 1.0
            for service in services:
                service.join(deadline)
            if owned and pool is not None:
                pool.close()
        return left_active

    def _on_notify(self) -> None:
        self._ledger.notify()
        self._wake.set()

    def _pool_of_yours(self) -> ConnectionPool[Any]:
        assert isinstance(self._database, ConnectionPool)
        return self._database

    def _open_pool(self, conninfo: str) -> ConnectionPool[Any]:
        s = self.settings
        pool: ConnectionPool[Any] = WatchedPool(
            conninfo,
            # autocommit: every statement of the worker is its own transaction,
            # so none waits idle (idle_in_transaction_session_timeout); no
            # prepared statements, which a pooler in transaction mode loses;
            # keepalives and tcp_user_timeout, so a dead peer is noticed;
            # UTF8 and ISO whatever the role, the database or PG* variables
            # say (the flush reads text: see _session)
            kwargs={
                "autocommit": True,
                "prepare_threshold": None,
                **network_kwargs(conninfo, s.lock_timeout, s.connect_timeout),
                **session.OWN_KWARGS,
            },
            configure=session.pin,
            min_size=s.lanes,  # opened side by side at start
            max_size=s.lanes + 3,  # the lanes, heartbeat, maintenance, one spare
            timeout=s.connect_timeout,
            name=f"retryq-{s.worker_id}",
            open=False,
            watchdog=Watchdog(s.statement_deadline, s.worker_id),
        )
        # the first connections are waited for: a database that cannot be
        # reached at start is a configuration error to report now (as the CLI
        # does), not an outage to retry in silence; later outages are retried
        try:
            pool.open(wait=True, timeout=s.connect_timeout)
        except PoolTimeout as exc:
            pool.close()
            raise PoolTimeout(
                f"worker {s.worker_id}: cannot reach the database within"
                f" {s.connect_timeout:g} s (connect_timeout)"
            ) from exc
        return pool

    # -- settings, read-only (see Settings) ---------------------------------

    @property
    def config(self) -> RetryConfig:
        return self.settings.config

    @property
    def worker_id(self) -> str:
        return self.settings.worker_id

    @property
    def schema(self) -> str | None:
        return self.settings.schema

    @property
    def worker_count(self) -> int:
        return self.settings.worker_count

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def poll_interval(self) -> float:
        return self.settings.poll_interval

    @property
    def lock_timeout(self) -> float:
        return self.settings.lock_timeout

    @property
    def grace_period(self) -> float:
        return self.settings.grace_period

    @property
    def cleanup_interval(self) -> float:
        return self.settings.cleanup_interval

    @property
    def retention_days(self) -> int:
        return self.settings.retention_days

    @property
    def ack_interval(self) -> float:
        return self.settings.ack_interval

    @property
    def max_backoff(self) -> float:
        return self.settings.max_backoff

    @property
    def connect_timeout(self) -> float:
        return self.settings.connect_timeout

    @property
    def handler_timeout(self) -> float | None:
        return self.settings.handler_timeout

    @property
    def statement_deadline(self) -> float:
        return self.settings.statement_deadline

    @property
    def lanes(self) -> int:
        return self.settings.lanes

    @property
    def routing(self) -> Routing:
        return self.settings.routing


def idle_changed_message(worker: str) -> str:
    """The DeprecationWarning of run(exit_when_idle=True) returning with items left."""
    return (
        f"{worker}.run(exit_when_idle=True) returned with items still pending or"
        " processing: it now returns once nothing is due now and the worker holds"
        " nothing (the CLI's --exit-when-idle); pre-release builds of retryq"
        " waited for every retry. Pass exit_when_drained=True to wait for them."
    )


def _shortly(
    pool: ConnectionPool[Any], renew: Callable[[], int | None], lease: float
) -> Callable[[], int | None]:
    """`renew` under the heartbeat's deadline (see _renewing)."""
    if not isinstance(pool, WatchedPool):
        return renew
    watchdog = pool.watchdog

    def shortly() -> int | None:
        with watchdog.shorter(max(lease / 8, 0.5)):
            return renew()

    return shortly


def _renewing(pool: ConnectionPool[Any], extend_locks: ExtendLocks, lease: float) -> ExtendLocks:
    """The heartbeat's renewals, each under a deadline of an eighth of the
    lease (at least half a second) on the worker's own pool: stuck in a
    silent connection for the pool's deadline (half a lease), a renewal
    would be tried again only after the lease ran out."""
    if not isinstance(pool, WatchedPool):
        return extend_locks
    watchdog = pool.watchdog

    def extend(
        item_ids: Iterable[int],
        worker_id: str,
        lock_timeout: float,
        leased_at: Iterable[datetime | None],
    ) -> set[int]:
        with watchdog.shorter(max(lease / 8, 0.5)):
            return extend_locks(item_ids, worker_id, lock_timeout, leased_at)

    return extend
