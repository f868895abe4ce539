"""RetryWorker: runs handlers for leased items, one process, many threads.

Why threads: the operations this queue retries (send a chat message, replay
a SQL write, call an HTTP API) spend their time waiting on the network, and
psycopg and most client libraries release the GIL while they wait. Threads
give that concurrency with plain synchronous handlers and one small
connection pool. Processes would add a pool and a LISTEN connection per
process for no gain on I/O; asyncio would force every handler to be
`async`. For CPU-bound handlers, run several `retryq worker` processes:
the queue's SKIP LOCKED leases split the work between them.

Inside one worker:
- `lanes` control loops (the thread that calls run() is the first) each
  write outcomes and lease the next items in one transaction, one query,
  on a connection of their own (at most batch_size per call, in half
  batches at least). With two lanes one transaction is in flight while the
  other's items run, so a round trip no longer gates every batch. A worker
  holds at most batch_size * (2 * lanes - 1) + worker_count items: with
  slow handlers and several worker processes sharing a short queue, lanes=1
  (or a smaller batch_size) spreads the items more evenly. The first lane also
  runs the scheduled cleanup. A lane with nothing to do sleeps until a
  NOTIFY, the next due retry or poll_interval, whichever comes first;
- worker_count handler threads run the handlers; they never touch the
  database: outcomes go back to the control loops, which acknowledge
  successes in batches with complete_retry_items (within ack_interval,
  far inside the lease) and records failures with fail_retry_item;
- a listener thread holds its own autocommit connection, LISTENs on
  retry_queue_channel() and wakes the control loops;
- a heartbeat thread extends the lease of every held item once half of
  lock_timeout has passed, so a slow handler keeps its item (up to
  handler_timeout, when set: then the lease runs out and another worker
  takes the item over, counted as a failed attempt).

A lost connection is never fatal: each loop logs it, backs off (doubling,
up to max_backoff) and tries again; the pool replaces broken connections.
Outcomes not yet written stay in memory until a write succeeds, and an item
whose lease ran out meanwhile is taken over by a worker later (counted as a
failed attempt): nothing is lost, at the price of a possible second run,
which is why handlers must be idempotent.

Stop (SIGTERM, SIGINT or stop()): no more acquiring; items held but not
started are released at once (release_retry_items: no retry spent, due
now); in-flight handlers get grace_period to finish; those still running
after it are released too, so another worker can take them at once (a
second SIGINT/SIGTERM skips the grace period).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue as stdqueue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from json import loads as _json_loads
from types import FrameType
from typing import Any, Literal, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import JsonbLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from retryq_py import _sql, metrics
from retryq_py._sql import RetryQueueItem
from retryq_py.config import RetryConfig
from retryq_py.errors import error_code, is_retryable
from retryq_py.queue import RetryQueue

log = logging.getLogger("retryq.worker")

Handler = Callable[[RetryQueueItem], object]
H = TypeVar("H", bound=Handler)

# Errors a worker waits out; anything else from the database (a missing
# schema, a revoked privilege: SQLSTATE class 42) stops run() with the error.
_TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


class HandlerRegistry(Mapping[str, Handler]):
    """Handlers by event_type, filled with a decorator.

    registry = HandlerRegistry()

    @registry.handler("cytube.event.chatMsg")
    def resend(item: RetryQueueItem) -> None: ...
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for event_type, fn in (handlers or {}).items():
            self.register(event_type, fn)

    def register(self, event_type: str, fn: Handler) -> None:
        if not isinstance(event_type, str) or not event_type.strip():
            raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
        if not callable(fn):
            raise TypeError(f"handler for {event_type!r} is not callable: {fn!r}")
        if event_type in self._handlers:
            raise ValueError(f"a handler for {event_type!r} is already registered")
        self._handlers[event_type] = fn

    def handler(self, event_type: str) -> Callable[[H], H]:
        def decorate(fn: H) -> H:
            self.register(event_type, fn)
            return fn

        return decorate

    def __getitem__(self, event_type: str) -> Handler:
        return self._handlers[event_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)


EventKind = Literal["completed", "failed", "dead_lettered", "released", "lease_lost"]


@dataclass(frozen=True)
class WorkerEvent:
    """What on_event receives, once the outcome is written to the database."""

    kind: EventKind
    item: RetryQueueItem
    error: str | None = None
    code: str | None = None
    duration: float | None = None


@dataclass
class WorkerCounts:
    """Outcomes written so far (read them live for a progress display)."""

    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    released: int = 0
    lease_lost: int = 0


@dataclass
class _Outcome:
    item: RetryQueueItem
    ok: bool
    duration: float
    error: str | None = None
    code: str | None = None
    retryable: bool = True
    done_at: float = field(default_factory=time.monotonic)


def default_worker_id(name: str = "retryq") -> str:
    """NAME-HOSTNAME-PID, as the guide's `sql-plugin-<hostname>`, plus the pid."""
    return f"{name}-{socket.gethostname()}-{os.getpid()}"[:200]


def _describe(exc: BaseException) -> str:
    # PostgreSQL text cannot hold NUL; a huge message would bloat every history.
    text = str(exc).strip().replace("\x00", "\\0")[:4000]
    return text if text else type(exc).__name__


_ITEM_FIELDS = [f.name for f in dataclasses.fields(RetryQueueItem)]
_ITEM_FIELD_NAMES = [name.encode() for name in _ITEM_FIELDS]


def _item_rows(cursor: Any) -> Callable[[Sequence[Any]], RetryQueueItem]:
    """acquire's rows as RetryQueueItem by position (class_row builds a
    keyword dict per row); by name should the columns ever differ. Checked
    on the raw result: `description` builds an object per column."""
    res = cursor.pgresult
    if res is None or [res.fname(i) for i in range(res.nfields)] != _ITEM_FIELD_NAMES:
        return class_row(RetryQueueItem)(cursor)
    return lambda values: RetryQueueItem(*values)


class _JsonbFromText(JsonbLoader):
    """jsonb as json.loads(str): given bytes, json.loads first guesses their
    encoding, which costs as much as parsing a small document."""

    def load(self, data: Any) -> Any:
        return _json_loads(bytes(data).decode())


def _first(cur: psycopg.ClientCursor[Any]) -> Any:
    row = cur.fetchone()
    return None if row is None else row[0]


class _Wake:
    """One wake-up flag per lane, all set at once: every lane looks again."""

    def __init__(self, lanes: int) -> None:
        self._events = [threading.Event() for _ in range(lanes)]

    def set(self) -> None:
        for event in self._events:
            event.set()

    def clear(self, lane: int) -> None:
        self._events[lane].clear()

    def wait(self, lane: int, timeout: float) -> None:
        self._events[lane].wait(timeout)


class RetryWorker:
    """Leases items and runs the handler for their event_type.

    `database`: a conninfo string or URL (the worker opens and closes its
    own pool) or an open psycopg_pool ConnectionPool (yours to close).
    `handlers`: a mapping {event_type: callable(item)} or a HandlerRegistry.
    A handler that returns completes the item; one that raises fails it:
    with backoff when `is_retryable(exc)` (RetryableError, an unclassified
    exception, a transient SQLSTATE), as a dead letter otherwise
    (PermanentError, a constraint or syntax error). An item whose
    event_type has no handler is dead-lettered with `unknown event type: X`.

    Settings come from `config` (RetryConfig: worker_count, batch_size,
    poll_interval, lock_timeout, grace_period, cleanup_interval,
    retention_days); keyword arguments override it. `lanes` (default
    min(2, worker_count), and one less than max_size for a pool of yours):
    how many lease transactions may be in flight at once (see the module
    docstring).
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
        lanes: int | None = None,
        on_event: Callable[[WorkerEvent], None] | None = None,
    ) -> None:
        cfg = config or RetryConfig()
        self.config = cfg
        self.handlers: Mapping[str, Handler] = handlers
        self.worker_id = worker_id or default_worker_id(name)
        self.schema = schema
        self.worker_count = worker_count if worker_count is not None else cfg.worker_count
        self.batch_size = batch_size if batch_size is not None else cfg.batch_size
        self.poll_interval = poll_interval if poll_interval is not None else cfg.poll_interval
        self.lock_timeout = lock_timeout if lock_timeout is not None else cfg.lock_timeout
        self.grace_period = grace_period if grace_period is not None else cfg.grace_period
        self.cleanup_interval = (
            cleanup_interval if cleanup_interval is not None else cfg.cleanup_interval
        )
        self.retention_days = retention_days if retention_days is not None else cfg.retention_days
        # Successes wait at most this long for a batched acknowledgement;
        # a tenth of the lease keeps it far from expiry.
        self.ack_interval = (
            ack_interval if ack_interval is not None else min(0.1, self.lock_timeout / 10)
        )
        self.max_backoff = max_backoff
        # how long one attempt to get a connection may block the loops
        self.connect_timeout = connect_timeout
        # A handler running longer stops being heartbeated: its lease runs
        # out and another worker takes the item over (a failed attempt).
        self.handler_timeout = handler_timeout
        self.on_event = on_event
        if self.worker_count < 1:
            raise ValueError(f"worker_count must be at least 1, got {self.worker_count}")
        # Two transactions in flight by default: on a 2-core server 1, 2, 3
        # and 4 lanes drained about 5.7k, 8k, 6.6k and 6.7k no-op items/s (4
        # handler threads, batch 10); a third lane only adds contention.
        self.lanes = lanes if lanes is not None else min(2, self.worker_count)
        if not 1 <= self.lanes <= 16:
            raise ValueError(f"lanes must be between 1 and 16, got {self.lanes}")
        if isinstance(database, ConnectionPool) and lanes is None:
            # your pool: leave a connection for the heartbeat and the rest
            self.lanes = max(1, min(self.lanes, database.max_size - 1))
        if not 1 <= self.batch_size <= 1000:
            raise ValueError(f"batch_size must be between 1 and 1000, got {self.batch_size}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {self.poll_interval}")
        if self.lock_timeout < 1:
            raise ValueError(f"lock_timeout must be at least 1 second, got {self.lock_timeout}")
        self._lock_seconds = _sql.whole_seconds(self.lock_timeout, "lock_timeout")

        self._database = database
        self._pool: ConnectionPool[Any] | None = None
        self._queue: RetryQueue | None = None
        self.counts = WorkerCounts()
        self._lock = threading.Lock()
        self._wake = _Wake(self.lanes)
        self._stopping = threading.Event()
        self._force = threading.Event()
        self._done = threading.Event()
        self._notified = False
        self._local: stdqueue.SimpleQueue[RetryQueueItem | None] = stdqueue.SimpleQueue()
        self._held: dict[int, tuple[RetryQueueItem, float]] = {}  # id -> (item, leased at)
        self._running: dict[int, float] = {}  # id -> when its handler started
        self._returned: list[RetryQueueItem] = []  # taken by a thread after stop
        self._outcomes: list[_Outcome] = []  # not yet claimed by a lane
        self._reserved = 0  # items being leased by lanes right now
        self._idle_exit = False  # exit_when_idle: a lane found nothing left
        self._durations: dict[str, Any] = {}  # HANDLER_DURATION by event_type
        self._hot_sql: tuple[str, str, str, str] | None = None  # see _write
        self._threads: list[threading.Thread] = []
        self._ran = False

    # -- public ---------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop acquiring; in-flight handlers get grace_period (none with force)."""
        if force or self._stopping.is_set():
            self._force.set()
        self._stopping.set()
        self._wake.set()

    @property
    def held(self) -> int:
        """Items leased to this worker and not yet acknowledged."""
        with self._lock:
            return len(self._held)

    def start(self, *, exit_when_idle: bool = False) -> threading.Thread:
        """run() in a daemon thread (for embedding); stop() then join() it."""
        thread = threading.Thread(
            target=self.run,
            kwargs={"exit_when_idle": exit_when_idle, "install_signal_handlers": False},
            name=f"retryq-{self.worker_id}",
            daemon=True,
        )
        thread.start()
        return thread

    def run(
        self, *, exit_when_idle: bool = False, install_signal_handlers: bool | None = None
    ) -> WorkerCounts:
        """Process items until stop() or a signal; returns the counts.

        With exit_when_idle, return once nothing is pending or processing:
        retries scheduled a little later are waited for and run, so a short
        backoff still ends in a final status.
        """
        with self._lock:
            if self._ran:
                raise RuntimeError("a RetryWorker runs once: make a new one")
            self._ran = True
        if not self.config.enabled:
            # the guide starts its worker only `if p.config.RetryEnabled`
            log.warning(
                "worker %s: retry is disabled by the config (enabled: false); not running",
                self.worker_id,
            )
            return self.counts
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        previous = self._install_signals() if install_signal_handlers else {}
        owned = isinstance(self._database, str)
        try:
            self._pool = self._open_pool() if owned else self._database  # type: ignore[assignment]
            assert self._pool is not None
            self._queue = RetryQueue(self._pool, schema=self.schema)
            self._start_threads()
            try:
                self._run_lanes(exit_when_idle)
            except Exception:
                # not a lost connection (a missing schema, a privilege): give
                # back what we hold if we can, then let the caller see it
                self._stopping.set()
                self._force.set()
                try:
                    self._shutdown(self._queue)
                except Exception:
                    log.exception("worker %s: shutdown after an error failed", self.worker_id)
                raise
            return self.counts
        finally:
            self._stopping.set()
            self._done.set()
            for _ in self._threads:
                self._local.put(None)
            deadline = time.monotonic() + 1.0
            for thread in self._threads:
                thread.join(timeout=max(deadline - time.monotonic(), 0.01))
            self._threads.clear()
            if owned and self._pool is not None:
                self._pool.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- setup ----------------------------------------------------------------

    def _open_pool(self) -> ConnectionPool[Any]:
        pool: ConnectionPool[Any] = ConnectionPool(
            str(self._database),
            min_size=self.lanes,  # opened side by side at start
            max_size=self.lanes + 2,  # the lanes, heartbeat, one spare
            timeout=self.connect_timeout,
            name=f"retryq-{self.worker_id}",
            open=False,
        )
        pool.open(wait=False)
        return pool

    def _install_signals(self) -> dict[int, Any]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("worker %s: %s, stopping", self.worker_id, signal.Signals(signum).name)
            self.stop()

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    def _start_threads(self) -> None:
        for n in range(self.worker_count):
            self._threads.append(
                threading.Thread(target=self._handler_loop, name=f"retryq-handler-{n}", daemon=True)
            )
        self._threads.append(
            threading.Thread(target=self._listen_loop, name="retryq-listen", daemon=True)
        )
        self._threads.append(
            threading.Thread(target=self._heartbeat_loop, name="retryq-heartbeat", daemon=True)
        )
        for thread in self._threads:
            thread.start()

    # -- control loop ---------------------------------------------------------

    def _sleep(self, seconds: float, lane: int = 0) -> None:
        """Wait, but wake for stop() and for anything that sets _wake.

        The lane clears its wake-up before it looks at the state, so a
        wake-up that comes while it works is never lost.
        """
        self._wake.wait(lane, max(0.0, seconds))

    def _run_lanes(self, exit_when_idle: bool) -> None:
        """Lane 0 in this thread, the others in their own; then the shutdown.

        An error that stops a lane stops them all and is raised here.
        """
        assert self._queue is not None
        errors: list[BaseException] = []

        def lane_thread(lane: int) -> None:
            try:
                self._lane(lane, exit_when_idle)
            except BaseException as exc:
                errors.append(exc)
                self._stopping.set()
                self._wake.set()

        others = [
            threading.Thread(target=lane_thread, args=(n,), name=f"retryq-lane-{n}", daemon=True)
            for n in range(1, self.lanes)
        ]
        for thread in others:
            thread.start()
        try:
            self._lane(0, exit_when_idle)
        except BaseException:
            self._stopping.set()
            self._wake.set()
            raise
        finally:
            for thread in others:
                thread.join()
        if errors:
            raise errors[0]
        self._shutdown(self._queue)

    def _lane(self, lane: int, exit_when_idle: bool) -> None:
        assert self._queue is not None
        q = self._queue
        backoff = 0.0
        more = True  # there may be due items: acquire without waiting
        cleans = lane == 0 and self.cleanup_interval > 0
        next_cleanup = time.monotonic() if cleans else float("inf")
        next_poll = time.monotonic()
        while not self._stopping.is_set() and not self._idle_exit:
            self._wake.clear(lane)
            try:
                if time.monotonic() >= next_cleanup:
                    again = self._cleanup(q)
                    next_cleanup = (
                        time.monotonic() + self.cleanup_interval if again else float("inf")
                    )
                with self._lock:
                    if self._notified:
                        self._notified, more = False, True
                    # outcomes about to be written free their slots; lease in
                    # half batches at least, so that acks and leases stay batched
                    free = self._capacity() - len(self._held) - self._reserved + len(self._outcomes)
                    if free < max(1, self.batch_size // 2) and len(self._held) > len(
                        self._outcomes
                    ):
                        free = 0
                if free > 0 and time.monotonic() >= next_poll:
                    more = True
                wait = self.poll_interval
                if not (more and free > 0):
                    if self._flush(q, force=False)[0]:
                        more = True  # a failure due at once, or freed capacity
                        continue
                else:
                    # write what is done and lease more in one transaction
                    want = min(self.batch_size, free)
                    got = self._flush(q, force=True, acquire=want)[1]
                    more = got == want
                    if more:
                        backoff = 0.0
                        continue
                    # Nothing more is due now: sleep until the next due item
                    # (by the server's clock), a NOTIFY or the poll interval.
                    due = q.due()
                    if exit_when_idle and not due.active and self._finish_if_idle():
                        return
                    if due.seconds_until_due is not None:
                        wait = min(wait, max(due.seconds_until_due, 0.01))
                    if exit_when_idle:
                        # items leased to other workers finish unannounced
                        wait = min(wait, 1.0)
                    next_poll = time.monotonic() + wait
                if free > 0:
                    wait = min(wait, max(next_poll - time.monotonic(), 0.0))
                wait = min(wait, self._ack_deadline() - time.monotonic())
                backoff = 0.0
                self._sleep(wait, lane)
            except _TRANSIENT as exc:
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                log.warning(
                    "worker %s: database unavailable (%s); retrying in %.1fs",
                    self.worker_id,
                    _describe(exc),
                    backoff,
                )
                more = True
                self._stopping.wait(backoff)

    def _finish_if_idle(self) -> bool:
        """exit_when_idle: end every lane if nothing is held or being leased.

        Decided under the lock that lanes reserve leases under, so no lane
        leases after it: nothing is left held when run() returns.
        """
        with self._lock:
            if self._held or self._outcomes or self._reserved or not self._local.empty():
                return False
            self._idle_exit = True
        self._wake.set()
        return True

    def _ack_deadline(self) -> float:
        with self._lock:
            if not self._outcomes:
                return float("inf")
            return min(o.done_at for o in self._outcomes) + self.ack_interval

    def _capacity(self) -> int:
        """Items held at most: one per thread, a batch waiting to start, and
        for each further lane two more (one being leased, one being run), so
        that a lane never has to write acknowledgements without leasing."""
        return self.batch_size * (2 * self.lanes - 1) + self.worker_count

    def _hold(self, items: list[RetryQueueItem], reserved: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._reserved -= reserved
            for item in items:
                self._held[item.id] = (item, now)
        for item in items:
            self._local.put(item)

    def _cleanup(self, q: RetryQueue) -> bool:
        """Run the scheduled cleanup; False when this role may not (stop trying)."""
        try:
            result = q.try_cleanup(self.retention_days)
        except psycopg.errors.InsufficientPrivilege:
            # A worker that runs as retryq_worker alone: cleanup is retryq_admin's
            # job, so the worker keeps working and leaves it to them.
            log.warning(
                "worker %s: no privilege to run cleanup_retry_queue; scheduled cleanup "
                "is off (run `retryq cleanup` as retryq_admin, or set cleanup_interval 0)",
                self.worker_id,
            )
            return False
        if result is not None and result.deleted_count:
            log.info(
                "worker %s: cleanup deleted %d items (%d dead letters archived)",
                self.worker_id,
                result.deleted_count,
                result.archived_count,
            )
        return True

    def _flush(self, q: RetryQueue, *, force: bool, acquire: int = 0) -> tuple[int, int]:
        """Write outcomes, then lease up to `acquire` items, in one transaction.

        Successes go in one complete_retry_items call, failures one by one.
        Successes wait up to ack_interval to be batched (unless force, an
        acquire or a failure is waiting). Outcomes leave memory, and leased
        items are handed to the threads, only after the commit. Returns
        (outcomes written, items leased).
        """
        with self._lock:
            outcomes = list(self._outcomes)  # a copy: handlers append to the original
            if outcomes and not force and all(o.ok for o in outcomes):
                oldest = min(o.done_at for o in outcomes)
                if (
                    len(outcomes) < self.batch_size
                    and time.monotonic() - oldest < self.ack_interval
                ):
                    outcomes = []
            if self._idle_exit:
                acquire = 0
            if not outcomes and not acquire:
                return 0, 0
            # Claimed: another lane will not write them too. They stay held
            # (and count against capacity) until the commit.
            if outcomes:
                self._outcomes = []
            self._reserved += acquire
        assert self._pool is not None
        try:
            with self._pool.connection() as conn:
                lost, failed_written, leased = self._write(conn, outcomes, acquire)
        except BaseException:
            with self._lock:
                self._outcomes = outcomes + self._outcomes  # for the next try
                self._reserved -= acquire
            raise
        self._hold(leased, acquire)
        self._report(outcomes, lost, failed_written)
        return len(outcomes), len(leased)

    def _write(
        self, conn: psycopg.Connection[Any], outcomes: list[_Outcome], want: int
    ) -> tuple[set[int], list[bool], list[RetryQueueItem]]:
        """The flush as one query: fail_retry_item per failure, then
        complete_retry_items, then acquire_retry_items, sent together.

        Several statements in one simple query run as one transaction (all
        or nothing) with no BEGIN or COMMIT round trips. Each round trip
        costs the client about as much CPU as the rows it brings, and this is
        the worker's hot path. Returns (the successes this worker could not
        complete, written per failure, leased).
        """
        started = time.monotonic()
        assert self._queue is not None
        q = self._queue._q
        if self._hot_sql is None:
            # The statements as text, and the worker id quoted, once: the two
            # statements of every flush are then filled in without mogrify.
            # complete_retry_items' count comes with the transaction's now(),
            # the completed_at of what it completed, should some turn out lost.
            complete_at = sql.SQL("{}, now()").format(q.complete_many)
            fail, complete, acquire = (s.as_string(conn) for s in (q.fail, complete_at, q.acquire))
            self._hot_sql = (fail, complete, acquire, sql.Literal(self.worker_id).as_string(conn))
        fail_sql, complete_sql, acquire_sql, worker = self._hot_sql
        cur = psycopg.ClientCursor(conn)  # binds the values into the text, quoted
        cur.adapters.register_loader("jsonb", _JsonbFromText)
        parts = [
            cur.mogrify(
                fail_sql,
                {
                    "item_id": o.item.id,
                    "worker_id": self.worker_id,
                    "error": o.error or "error",
                    "code": o.code,
                    "retryable": o.retryable,
                    "now": None,
                },
            )
            for o in outcomes
            if not o.ok
        ]
        ok_ids = [o.item.id for o in outcomes if o.ok]
        if ok_ids:
            parts.append(
                complete_sql
                % {
                    "item_ids": "'{" + ",".join(map(str, ok_ids)) + "}'",  # integers
                    "worker_id": worker,
                    "now": "NULL",
                }
            )
        if want:
            parts.append(
                acquire_sql
                % {
                    "worker_id": worker,
                    "batch_size": int(want),
                    "lock_timeout": self._lock_seconds,
                    "now": "NULL",
                }
            )
        # one implicit transaction needs autocommit; the pool gets it back as it was
        was = conn.autocommit
        conn.autocommit = True
        try:
            cur.execute(";\n".join(parts))
            failed_written = []
            for _ in range(len(parts) - bool(ok_ids) - bool(want)):
                failed_written.append(bool(_first(cur)))
                cur.nextset()
            completed, at = 0, None
            if ok_ids:
                completed, at = cur.fetchone() or (0, None)
                cur.nextset()
            leased: list[RetryQueueItem] = []
            if want:
                cur.row_factory = _item_rows
                leased = cur.fetchall()
            lost: set[int] = set()
            if completed < len(ok_ids):
                # Rare (a lease lost while its handler ran): which ones. The
                # rows this call completed carry its transaction's now().
                done = conn.execute(q.completed_at, {"item_ids": ok_ids, "at": at}).fetchall()
                lost = set(ok_ids) - {r[0] for r in done}
        finally:
            if not conn.closed:
                conn.autocommit = was
        if want:
            metrics.ACQUIRE_DURATION.observe(time.monotonic() - started)
        return lost, failed_written, leased

    def _report(self, outcomes: list[_Outcome], lost: set[int], failed_written: list[bool]) -> None:
        """After the commit: forget the written outcomes, count and emit them."""
        with self._lock:
            for o in outcomes:
                self._held.pop(o.item.id, None)
        if lost:
            log.warning(
                "worker %s: %d handled items were no longer leased to it: %s",
                self.worker_id,
                len(lost),
                sorted(lost),
            )
        fails = iter(failed_written)
        processed: dict[str, int] = {}
        for o in outcomes:
            if o.ok and o.item.id in lost:
                self.counts.lease_lost += 1
                self._emit(WorkerEvent("lease_lost", o.item, duration=o.duration))
                continue
            if o.ok:
                self.counts.processed += 1
                processed[o.item.event_type] = processed.get(o.item.event_type, 0) + 1
                self._emit(WorkerEvent("completed", o.item, duration=o.duration))
                continue
            if not next(fails):
                self.counts.lease_lost += 1
                self._emit(WorkerEvent("lease_lost", o.item, o.error, o.code, o.duration))
            elif not o.retryable or o.item.is_last_attempt:
                self.counts.dead_lettered += 1
                metrics.ITEMS_DEAD_LETTERED.labels(o.item.event_type).inc()
                self._emit(WorkerEvent("dead_lettered", o.item, o.error, o.code, o.duration))
            else:
                self.counts.failed += 1
                metrics.ITEMS_FAILED.labels(o.item.event_type).inc()
                self._emit(WorkerEvent("failed", o.item, o.error, o.code, o.duration))
        for event_type, n in processed.items():  # one update per type and batch
            metrics.ITEMS_PROCESSED.labels(event_type).inc(n)

    def _emit(self, event: WorkerEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            log.exception("worker %s: on_event callback failed", self.worker_id)

    def _release(self, q: RetryQueue, items: list[RetryQueueItem]) -> None:
        if not items:
            return
        q.release([i.id for i in items], self.worker_id)
        with self._lock:
            for item in items:
                self._held.pop(item.id, None)
        for item in items:
            self.counts.released += 1
            self._emit(WorkerEvent("released", item))

    def _shutdown(self, q: RetryQueue) -> None:
        """Release what has not started, give in-flight handlers the grace period."""
        deadline = time.monotonic() + self.grace_period
        backoff = 0.0
        while True:
            self._wake.clear(0)
            try:
                with self._lock:
                    unstarted = self._drain_local() + self._returned
                    self._returned = []
                try:
                    self._release(q, unstarted)
                except BaseException:
                    with self._lock:
                        self._returned.extend(unstarted)
                    raise
                self._flush(q, force=True)
                with self._lock:
                    running = bool(self._running)
                    pending = bool(self._outcomes or self._returned)
                if not running and not pending:
                    return
                if self._force.is_set() or time.monotonic() >= deadline:
                    break
                self._sleep(min(0.05, deadline - time.monotonic()))
                backoff = 0.0
            except _TRANSIENT as exc:
                if self._force.is_set() or time.monotonic() >= deadline:
                    log.warning(
                        "worker %s: database unavailable at shutdown (%s); leases left to expire",
                        self.worker_id,
                        _describe(exc),
                    )
                    return
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                time.sleep(min(backoff, max(deadline - time.monotonic(), 0.0)))
        # Grace period over: hand the still-running items to other workers.
        with self._lock:
            late = [self._held[i][0] for i in self._running if i in self._held]
            self._running.clear()
        log.warning(
            "worker %s: %d handlers still running after the grace period; releasing them",
            self.worker_id,
            len(late),
        )
        try:
            self._release(q, late)
        except _TRANSIENT as exc:
            log.warning("worker %s: could not release (%s)", self.worker_id, _describe(exc))

    def _drain_local(self) -> list[RetryQueueItem]:
        items: list[RetryQueueItem] = []
        while True:
            try:
                item = self._local.get_nowait()
            except stdqueue.Empty:
                return items
            if item is not None:
                items.append(item)

    # -- handler threads ------------------------------------------------------

    def _handler_loop(self) -> None:
        while True:
            item = self._local.get()
            if item is None:
                return
            with self._lock:
                if self._stopping.is_set():
                    self._returned.append(item)
                    self._wake.set()
                    continue
                self._running[item.id] = time.monotonic()
            outcome = self._handle(item)
            with self._lock:
                if self._running.pop(item.id, None) is not None:
                    self._outcomes.append(outcome)
                # else: released after the grace period; the result is dropped
                # Failures are written at once; successes are batched, and the
                # first one starts the ack_interval clock.
                wake = (
                    not outcome.ok
                    or self._stopping.is_set()
                    or len(self._outcomes) in (1, self.batch_size)
                )
            if wake:
                self._wake.set()

    def _duration_metric(self, event_type: str) -> Any:
        # labels() validates and locks on every call: once per type is enough
        child = self._durations.get(event_type)
        if child is None:
            child = self._durations[event_type] = metrics.HANDLER_DURATION.labels(event_type)
        return child

    def _handle(self, item: RetryQueueItem) -> _Outcome:
        handler = self.handlers.get(item.event_type)
        started = time.monotonic()
        if handler is None:
            return _Outcome(
                item,
                ok=False,
                duration=0.0,
                error=f"unknown event type: {item.event_type}",
                code="unknown_event_type",
                retryable=False,
            )
        try:
            handler(item)
        except BaseException as exc:  # even SystemExit: the thread must live on
            duration = time.monotonic() - started
            self._duration_metric(item.event_type).observe(duration)
            return _Outcome(
                item,
                ok=False,
                duration=duration,
                error=_describe(exc),
                code=error_code(exc) or type(exc).__name__,
                retryable=is_retryable(exc),
            )
        duration = time.monotonic() - started
        self._duration_metric(item.event_type).observe(duration)
        return _Outcome(item, ok=True, duration=duration)

    # -- listener and heartbeat threads ---------------------------------------

    def _connect_kwargs(self) -> tuple[str, dict[str, Any]]:
        if isinstance(self._database, str):
            return self._database, {}
        # psycopg_pool 3.3 allows callables for both (credentials that rotate)
        conninfo = self._database.conninfo
        kwargs = self._database.kwargs
        return (
            conninfo() if callable(conninfo) else conninfo,
            dict((kwargs() if callable(kwargs) else kwargs) or {}),
        )

    def _listen_loop(self) -> None:
        conninfo, kwargs = self._connect_kwargs()
        kwargs["autocommit"] = True
        kwargs.setdefault("connect_timeout", max(1, round(self.connect_timeout)))
        backoff = 0.0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(conninfo, **kwargs) as conn:
                    channel = RetryQueue(conn, schema=self.schema).channel()
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    backoff = 0.0
                    self._on_notify()  # anything sent while we were away
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._on_notify()
            except Exception as exc:  # the poll still works: keep trying
                if self._stopping.is_set():
                    return
                backoff = min(max(backoff * 2, 0.1), self.max_backoff)
                log.warning(
                    "worker %s: listener lost its connection (%s); retrying in %.1fs",
                    self.worker_id,
                    _describe(exc),
                    backoff,
                )
                self._stopping.wait(backoff)

    def _on_notify(self) -> None:
        with self._lock:
            self._notified = True
        self._wake.set()

    def _heartbeat_loop(self) -> None:
        period = max(self.lock_timeout / 4, 0.05)
        while not self._done.wait(period):
            now = time.monotonic()
            limit = self.handler_timeout
            with self._lock:
                due = [
                    i
                    for i, (_, at) in self._held.items()
                    if now - at >= self.lock_timeout / 2
                    and (limit is None or now - self._running.get(i, now) < limit)
                ]
            if not due or self._queue is None:
                continue
            try:
                kept = self._queue.extend_locks(due, self.worker_id, self.lock_timeout)
            except (psycopg.Error, PoolTimeout) as exc:
                log.warning("worker %s: heartbeat failed (%s)", self.worker_id, _describe(exc))
                continue
            with self._lock:
                for item_id in due:
                    if item_id in kept and item_id in self._held:
                        self._held[item_id] = (self._held[item_id][0], now)
                # items acknowledged meanwhile are not lost
                lost = {i for i in due if i not in kept and i in self._held}
            if lost:
                log.warning(
                    "worker %s: lost the lease of %d items: %s",
                    self.worker_id,
                    len(lost),
                    sorted(lost),
                )
