"""AsyncRetryWorker: RetryWorker's engine, with handlers as asyncio tasks.

The handlers run on the caller's event loop, so they share its clients
(an httpx.AsyncClient, an aiohttp session, an async database pool); the
engine (lanes, flush, heartbeat, listener, maintenance, shutdown) is
RetryWorker's own, in its threads, with its own pool. Why not an async
twin of the engine: its fault handling (the statement deadline that cuts a
silent socket, ambiguous commits settled, per-item poison values, SQLSTATE
classes, the PgBouncer probe) is one tested piece; a second copy, whether
written or generated (unasync turns `await` into calls, not threads into
tasks, events, queues and locks into their asyncio kin), would double the
code that must stay right under faults. And a heartbeat off the loop keeps
every lease renewed even while a handler blocks the loop, where a
heartbeat task would starve with the handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypedDict

from psycopg_pool import ConnectionPool

from retryq_py.config import RetryConfig
from retryq_py.errors import explain
from retryq_py.queue import RetryQueue
from retryq_py.worker.events import WorkerCounts, WorkerEvent
from retryq_py.worker.handlers import HandlerTasks
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.registry import Handler
from retryq_py.worker.runner import RetryWorker, WorkerParts, idle_changed_message
from retryq_py.worker.settings import Settings
from retryq_py.worker.signals import stop_on_signals_in_loop

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger("retryq.worker")


class WorkerOptions(TypedDict, total=False):
    """RetryWorker's keyword arguments (but `parts`), which AsyncRetryWorker
    takes too, with the same meaning."""

    config: RetryConfig | None
    name: str
    worker_id: str | None
    schema: str | None
    worker_count: int | None
    batch_size: int | None
    poll_interval: float | None
    lock_timeout: float | None
    grace_period: float | None
    cleanup_interval: float | None
    retention_days: int | None
    ack_interval: float | None
    max_backoff: float
    connect_timeout: float
    handler_timeout: float | None
    statement_deadline: float | None
    lanes: int | None
    max_snoozes: int
    on_event: Callable[[WorkerEvent], None] | None
    all_event_types: bool
    plugin_names: Sequence[str] | None


class AsyncRetryWorker:
    """Leases items and awaits the async handler for their event_type.

    `database`: a conninfo string or URL (the worker opens and closes its
    own pool) or an open psycopg_pool ConnectionPool (yours to close; a
    sync one: the engine runs in threads; an AsyncConnectionPool is refused
    with TypeError). `handlers`: a mapping
    {event_type: async def handler(item)} or a HandlerRegistry (TypeError
    for a generator function). A handler that returns completes the item;
    one that raises fails it, retried or dead-lettered exactly as with
    RetryWorker (is_retryable). What a call returns is awaited once if it is
    awaitable; the result then means what it does for RetryWorker (a returned
    exception is taken as raised, a coroutine not awaited makes a dead letter). A plain
    function handler runs in a thread of the worker's own, as RetryWorker
    runs it, so a blocking one never stalls the loop.

    Every keyword of RetryWorker (WorkerOptions), with the same meaning and
    defaults: `worker_count` is how many handlers run at once (tasks, and
    threads for plain handlers); `on_event` is called from the engine's
    threads, once each outcome is written. Lanes, heartbeat, LISTEN/NOTIFY
    with polling fallback, graceful stop, cleanup, metrics and logs are
    RetryWorker's (see retryq_py.worker). A bad setting raises ValueError,
    as with RetryWorker.

        worker = AsyncRetryWorker(dsn, {"billing.charge": charge})
        await worker.run()                      # until SIGTERM or stop()
        await worker.run(exit_when_drained=True)  # until nothing is left

        async with AsyncRetryWorker(dsn, handlers):   # run in the background
            ...                                       # stopped gracefully on exit
    """

    def __init__(
        self,
        database: str | ConnectionPool[Any],
        handlers: Mapping[str, Handler],
        *,
        parts: WorkerParts | None = None,
        **options: Unpack[WorkerOptions],
    ) -> None:
        if not isinstance(database, str | ConnectionPool):
            # an AsyncConnectionPool, most likely: the engine's threads need sync connections
            raise TypeError(
                "database: a conninfo string or a psycopg_pool.ConnectionPool, got"
                f" {type(database).__name__} (the worker's engine runs in threads: give the"
                " conninfo and it opens a pool of its own)"
            )
        HandlerTasks.check(handlers)
        parts = parts or WorkerParts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: HandlerTasks | None = None
        self._queue_part = parts.queue
        self._engine = RetryWorker(
            database,
            handlers,
            parts=replace(parts, handlers=self._handler_tasks, queue=self._connected),
            **options,
        )
        self._running: asyncio.Task[WorkerCounts] | None = None
        self._up = asyncio.Event()  # set once the engine's pool is open
        self._stop_asked = False

    # -- public ---------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._engine.settings

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return self._engine.handlers

    @property
    def worker_id(self) -> str:
        return self._engine.worker_id

    @property
    def counts(self) -> WorkerCounts:
        """Outcomes written so far; the same object throughout, updated live."""
        return self._engine.counts

    @property
    def held(self) -> int:
        """Items leased to this worker and not yet acknowledged."""
        return self._engine.held

    @property
    def stopping(self) -> bool:
        """True once stop() or a signal asked the worker to stop."""
        return self._engine.stopping

    def stop(self, *, force: bool = False) -> None:
        """Stop acquiring; in-flight handlers get grace_period (none with
        force), then are cancelled and their items released. Callable from
        any thread; a second call forces."""
        self._stop_asked = True
        self._engine.stop(force=force)

    async def run(
        self,
        *,
        exit_when_idle: bool = False,
        exit_when_drained: bool = False,
        install_signal_handlers: bool | None = None,
    ) -> WorkerCounts:
        """Process items until stop() or a signal; returns the counts.

        exit_when_idle and exit_when_drained as in RetryWorker.run: return
        once nothing is due now and this worker holds nothing, or once
        nothing is pending or processing at all (retries scheduled later
        waited for); ValueError given both. Signal handlers (SIGTERM, SIGINT: stop,
        a second one forces) are installed on the loop by default when it
        runs in the main thread. Cancelling run() stops the worker at once
        (force): held items are released, and run() ends with
        CancelledError once they are. Raises what RetryWorker.run raises:
        RuntimeError when run twice, PoolTimeout when the database cannot be
        reached at start, a psycopg error for a configuration error.
        """
        if exit_when_idle and exit_when_drained:
            raise ValueError("give exit_when_idle or exit_when_drained, not both")
        loop = asyncio.get_running_loop()
        if self._loop is not None:
            raise RuntimeError("an AsyncRetryWorker runs once: make a new one")
        self._loop = loop
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        done: asyncio.Future[WorkerCounts] = loop.create_future()

        def settle(result: WorkerCounts | None, exc: BaseException | None) -> None:
            if done.cancelled():
                return
            if exc is not None:
                done.set_exception(exc)
            else:
                assert result is not None
                done.set_result(result)

        left_active: list[bool] = []

        def engine() -> None:
            try:
                left_active.append(
                    self._engine._serve(
                        exit_when_idle, exit_when_drained, install_signal_handlers=False
                    )
                )
            except BaseException as exc:
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, self._engine.counts, None)

        thread = threading.Thread(target=engine, name=f"retryq-{self.worker_id}", daemon=True)
        signals: AbstractContextManager[None] = (
            stop_on_signals_in_loop(loop, self.stop, self.worker_id)
            if install_signal_handlers
            else nullcontext()
        )
        with signals:
            thread.start()
            try:
                counts = await asyncio.shield(done)
            except asyncio.CancelledError:
                self.stop(force=True)
                await _uncancellable(done)
                raise
            finally:
                if self._tasks is not None:
                    await self._tasks.wait_closed()
        if exit_when_idle and any(left_active):
            # at the line that awaited run(), as RetryWorker.run does
            warnings.warn(
                idle_changed_message("AsyncRetryWorker"), DeprecationWarning, stacklevel=2
            )
        return counts

    def start(
        self, *, exit_when_idle: bool = False, exit_when_drained: bool = False
    ) -> asyncio.Task[WorkerCounts]:
        """run() as a task of the running loop (for embedding, without
        signal handlers: the application owns them); stop() then await it.
        Should run() fail before a stop was asked (a configuration error,
        say), it is logged at once, not only when the task is awaited."""
        self._running = asyncio.get_running_loop().create_task(
            self.run(
                exit_when_idle=exit_when_idle,
                exit_when_drained=exit_when_drained,
                install_signal_handlers=False,
            ),
            name=f"retryq-{self.worker_id}",
        )
        self._running.add_done_callback(self._report_failure)
        return self._running

    async def started(self) -> None:
        """Once run() has its first connections (the worker is leasing);
        raises run()'s error if it ended first (PoolTimeout: the database
        cannot be reached within connect_timeout)."""
        if self._running is None:
            raise RuntimeError("started() waits for start()")
        up = asyncio.ensure_future(self._up.wait())
        try:
            await asyncio.wait([up, self._running], return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
        if not self._up.is_set():
            await self._running  # raises its error; or it ended at once (stopped, disabled)

    async def __aenter__(self) -> AsyncRetryWorker:
        """start(), and return once the worker is up (see started())."""
        self.start()
        try:
            await self.started()
        except BaseException:
            self.stop(force=True)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """A graceful stop (grace_period), waited for; run()'s error, if it
        failed, is raised here."""
        assert self._running is not None
        self.stop()
        await self._running

    # -- wiring ---------------------------------------------------------------

    def _connected(self, pool: ConnectionPool[Any], schema: str | None) -> RetryQueue:
        """The queue part, called by the engine once its pool is open."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._up.set)
        return self._queue_part(pool, schema)

    def _report_failure(self, task: asyncio.Task[WorkerCounts]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not self._stop_asked:
            log.error("worker %s: stopped by an error: %s", self.worker_id, explain(exc))

    def _handler_tasks(
        self,
        handlers: Mapping[str, Handler],
        ledger: Ledger,
        wake: Callable[[], None],
        count: int,
    ) -> HandlerTasks:
        assert self._loop is not None, "the engine starts from run()"
        self._tasks = HandlerTasks(handlers, ledger, wake, count, loop=self._loop)
        return self._tasks


async def _uncancellable(done: asyncio.Future[WorkerCounts]) -> None:
    """Wait for `done` through further cancellations (the engine must end)."""
    while not done.done():
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            continue
        except BaseException:
            return  # the engine's error: the cancellation is what run() raises
