"""Handler services: run the handler of each item the ledger hands out.

Two of them, one interface (start, join): `HandlerThreads` for RetryWorker
(plain functions, one thread each), `HandlerTasks` for AsyncRetryWorker
(coroutines, as tasks on the caller's event loop). They never touch the
database: an outcome goes back to the ledger, where a lane picks it up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from retryq_py import metrics
from retryq_py._sql import RetryQueueItem
from retryq_py.errors import RetryableError, Snooze, error_code, is_retryable
from retryq_py.worker.events import (
    MAX_CODE,
    MAX_MESSAGE,
    SNOOZE_REFUSED,
    UNFINISHED_RESULT,
    Outcome,
    clean,
    describe,
)
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.registry import Handler

log = logging.getLogger("retryq.worker")


class HandlerService(Protocol):
    """What the runner starts and, after ledger.end_handlers, joins."""

    def start(self) -> None: ...

    def join(self, deadline: float) -> None: ...


# (handlers, ledger, wake, count): a service running at most `count` handlers at once
HandlerServiceFactory = Callable[
    [Mapping[str, Handler], Ledger, Callable[[], None], int], HandlerService
]


class _Outcomes:
    """What both services share: the handler for an item, and its outcome
    with the handler's duration observed."""

    def __init__(self, handlers: Mapping[str, Handler]) -> None:
        self._handlers = handlers
        # labels() validates and locks on every call: once per type is enough
        self._durations: dict[str, Any] = {}
        self._unfinished: set[str] = set()  # the event types whose handler returned one

    def handler(self, item: RetryQueueItem) -> Handler | None:
        return self._handlers.get(item.event_type)

    def done(self, item: RetryQueueItem, started: float, exc: BaseException | None) -> Outcome:
        duration = self._observe(item, started)
        if exc is not None:
            return failure(item, exc, duration)
        return Outcome(item, ok=True, duration=duration)

    def returned(self, item: RetryQueueItem, started: float, result: object, hint: str) -> Outcome:
        """What a handler's return value means (see `returned_outcome`)."""
        outcome = returned_outcome(item, self._observe(item, started), result, hint)
        if outcome.code == UNFINISHED_RESULT and item.event_type not in self._unfinished:
            # a bug of the handler: said once per event type, each item's
            # dead letter says it again
            self._unfinished.add(item.event_type)
            log.error(
                "item %d (%s): %s; dead-lettering it (code %s)",
                item.id,
                item.event_type,
                outcome.error,
                UNFINISHED_RESULT,
            )
        return outcome

    def _observe(self, item: RetryQueueItem, started: float) -> float:
        duration = time.monotonic() - started
        child = self._durations.get(item.event_type)
        if child is None:
            child = self._durations[item.event_type] = metrics.HANDLER_DURATION.labels(
                item.event_type
            )
        child.observe(duration)
        return duration


def unknown_type(item: RetryQueueItem) -> Outcome:
    return Outcome(
        item,
        ok=False,
        duration=0.0,
        error=f"unknown event type: {item.event_type}",
        code="unknown_event_type",
        retryable=False,
    )


def _is(test: Callable[[object], bool], fn: object) -> bool:
    """`test` of fn (or the partial's function), or of the __call__ of its type."""
    if test(fn):
        return True
    return test(inspect.getattr_static(type(fn), "__call__", None))


def is_coroutine_handler(fn: object) -> bool:
    """An async def function (or partial of one), or an object whose
    __call__ is one."""
    return _is(inspect.iscoroutinefunction, fn)


def is_generator_handler(fn: object) -> bool:
    """A generator function, async or not (or a partial of one), or an
    object whose __call__ is one."""
    return _is(inspect.isgeneratorfunction, fn) or _is(inspect.isasyncgenfunction, fn)


def check_generators(handlers: Mapping[str, Handler]) -> None:
    """TypeError for a generator function (async or not) as a handler: a call
    returns a generator without running a line of its body, and the item
    would be taken as handled."""
    for event_type, fn in handlers.items():
        if is_generator_handler(fn):
            raise TypeError(
                f"the handler for {event_type!r} is a generator function: calling it runs"
                " none of its body; a handler must return (or raise) when its work is done"
            )


def _unfinished(result: object) -> str | None:
    """What kind of work not yet done `result` is, or None: an awaitable (a
    coroutine, an asyncio Future or Task), a concurrent.futures.Future, a
    generator (async or not)."""
    if inspect.iscoroutine(result):
        return "a coroutine"
    if inspect.isawaitable(result):
        return "an awaitable"
    if isinstance(result, concurrent.futures.Future):
        return "a concurrent.futures.Future"
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        return "a generator"
    return None


def returned_outcome(item: RetryQueueItem, duration: float, result: object, hint: str) -> Outcome:
    """What a handler's return value means: an exception instance (Snooze,
    RetryableError, PermanentError, any other) is taken as raised; work not
    yet done (see _unfinished: a coroutine function called and not awaited,
    say) is refused as a handler bug: a dead letter with code
    retryq.unfinished_result, never a success, its text saying what to do
    (`hint` for an awaitable: how to await it with this worker) (a
    coroutine is closed, so none of it runs later); any other value
    completes the item."""
    try:
        if isinstance(result, BaseException):
            return failure(item, result, duration)
        kind = _unfinished(result)
    except BaseException as exc:  # a return value that defeats inspection
        return failure(item, exc, duration)
    if kind is None:
        return Outcome(item, ok=True, duration=duration)
    if inspect.iscoroutine(result) or inspect.isgenerator(result):
        with contextlib.suppress(BaseException):
            result.close()  # what it has not run never runs; no "never awaited" warning
    if kind == "a concurrent.futures.Future":
        hint = "wait for it in the handler (future.result())"
    elif kind == "a generator":
        hint = "run it to its end in the handler"
    return Outcome(
        item,
        ok=False,
        duration=duration,
        error=clean(
            f"retryq: the handler returned {kind} ({describe_value(result)}) instead of"
            f" doing its work: {hint}",
            MAX_MESSAGE,
        ),
        code=UNFINISHED_RESULT,
        retryable=False,
    )


def describe_value(value: object) -> str:
    """repr(value) cut short, or its type's name when repr raises."""
    try:
        text = repr(value)
    except BaseException:
        text = type(value).__name__
    return clean(text, 200)


class HandlerThreads:
    """`count` threads taking items from the ledger until it hands out None."""

    @staticmethod
    def check(handlers: Mapping[str, Handler]) -> None:
        """TypeError for a coroutine handler: a thread would call it, get a
        coroutine it cannot await (see `run`); and for a generator function
        (check_generators)."""
        for event_type, fn in handlers.items():
            if is_coroutine_handler(fn):
                raise TypeError(
                    f"the handler for {event_type!r} is a coroutine function: RetryWorker"
                    " runs plain functions in threads; run async handlers with"
                    " AsyncRetryWorker"
                )
        check_generators(handlers)

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        ledger: Ledger,
        wake: Callable[[], None],
        count: int,
    ) -> None:
        self._outcomes = _Outcomes(handlers)
        self._ledger = ledger
        self._wake = wake
        self._threads = [
            threading.Thread(target=self._loop, name=f"retryq-handler-{n}", daemon=True)
            for n in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, deadline: float) -> None:
        """After ledger.end_handlers: wait for the threads until `deadline`."""
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.01))

    def _loop(self) -> None:
        ledger = self._ledger
        while True:
            item = ledger.take()
            if item is None:
                return
            if not ledger.begin(item):
                self._wake()  # stopping: the shutdown releases it
                continue
            if ledger.finish(self.run(item)):
                self._wake()

    def run(self, item: RetryQueueItem) -> Outcome:
        """The handler's result as an outcome; whatever it raises is caught."""
        handler = self._outcomes.handler(item)
        if handler is None:
            return unknown_type(item)
        started = time.monotonic()
        try:
            result = handler(item)
        except BaseException as exc:  # even SystemExit: the thread must live on
            return self._outcomes.done(item, started, exc)
        # a returned coroutine (a lambda calling an async def, say) has not
        # run, and a thread has no loop to run it on
        return self._outcomes.returned(item, started, result, _THREADS_HINT)


_THREADS_HINT = (
    "RetryWorker runs plain functions in threads, which cannot await; await it in"
    " an async def handler run by AsyncRetryWorker"
)
_TASKS_HINT = "AsyncRetryWorker awaits what a handler returns once: await it in the handler"


class HandlerTasks:
    """Handlers as tasks on `loop`, at most `count` at once.

    One feeder thread takes items from the ledger (a blocking queue) once a
    slot is free, begins them and starts a task for each on the loop, so
    items beyond `count` stay unstarted in the ledger, where a stop releases
    them. The tasks call the ledger as the threads do (its lock is held for a few dict
    operations, never across an await). A coroutine handler is awaited on
    the loop; a plain one runs in a thread of the service's own (at most
    `count`), as RetryWorker would run it, and an awaitable it returns is
    awaited (once: see returned_outcome for what the result then means).
    `join` cancels the tasks still running: the shutdown has released their
    items by then, and their results are dropped (a plain handler's thread
    runs on, as in RetryWorker).
    """

    check = staticmethod(check_generators)

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        ledger: Ledger,
        wake: Callable[[], None],
        count: int,
        *,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._outcomes = _Outcomes(handlers)
        self._ledger = ledger
        self._wake = wake
        self._loop = loop
        self._plain = {t for t, fn in handlers.items() if not is_coroutine_handler(fn)}
        self._threads = (
            ThreadPoolExecutor(count, thread_name_prefix="retryq-handler") if self._plain else None
        )
        self._slots = threading.Semaphore(count)
        self._closing = threading.Event()
        self._cancelling = False  # loop thread only
        self._tasks: set[asyncio.Task[None]] = set()  # loop thread only
        self._feeder = threading.Thread(target=self._feed, name="retryq-feeder", daemon=True)

    def start(self) -> None:
        self._feeder.start()

    def join(self, deadline: float) -> None:
        """After ledger.end_handlers: cancel the running tasks, end the feeder."""
        self._closing.set()
        with contextlib.suppress(RuntimeError):  # a closed loop runs nothing
            self._loop.call_soon_threadsafe(self._cancel_all)
        self._feeder.join(timeout=max(deadline - time.monotonic(), 0.01))
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def wait_closed(self) -> None:
        """On the loop, after join: until every task has ended."""
        self._cancel_all()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _feed(self) -> None:
        ledger = self._ledger
        while True:
            while not self._slots.acquire(timeout=0.1):
                if self._closing.is_set():
                    return
            item = ledger.take()
            if item is None:
                return
            # begun here, not in the task: from now on the shutdown sees it
            # running (and releases it after the grace period), even while
            # a blocked loop has not started its task yet
            if not ledger.begin(item):
                self._slots.release()
                self._wake()  # stopping: the shutdown releases it
                continue
            try:
                self._loop.call_soon_threadsafe(self._spawn, item)
            except RuntimeError:  # the loop closed under a running worker
                log.error("retryq: the event loop of an AsyncRetryWorker closed while it ran")
                return  # held as running: released after the grace period

    def _spawn(self, item: RetryQueueItem) -> None:
        if self._cancelling:  # the shutdown is over: it released the item
            self._slots.release()
            return
        task = self._loop.create_task(self._one(item), name=f"retryq-item-{item.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_all(self) -> None:
        self._cancelling = True
        for task in self._tasks:
            task.cancel()

    async def _one(self, item: RetryQueueItem) -> None:
        try:
            outcome = await self.run(item)
            if outcome is not None and self._ledger.finish(outcome):
                self._wake()
        finally:
            self._slots.release()

    async def run(self, item: RetryQueueItem) -> Outcome | None:
        """The handler's result as an outcome; whatever it raises is caught,
        except the cancellation `join` sends (None then: the item was released)."""
        handler = self._outcomes.handler(item)
        if handler is None:
            return unknown_type(item)
        started = time.monotonic()
        try:
            if item.event_type in self._plain:
                result = await self._loop.run_in_executor(self._threads, handler, item)
            else:
                result = handler(item)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError as exc:
            if self._cancelling:
                raise
            # the handler's own (a timeout it did not catch): a failed attempt
            return self._outcomes.done(item, started, exc)
        except BaseException as exc:  # even SystemExit: the loop must live on
            return self._outcomes.done(item, started, exc)
        # what the awaited handler returned: awaited once only (an async def
        # returning a coroutine forgot an await)
        return self._outcomes.returned(item, started, result, _TASKS_HINT)


def failure(item: RetryQueueItem, exc: BaseException, duration: float) -> Outcome:
    """What a raised exception becomes: text and code PostgreSQL can store,
    whatever the exception is (its __str__ or its attributes may raise, its
    code may be no text, its text may hold NUL or lone surrogates).
    Snooze becomes a snooze, RetryableError's delay the retry's delay.
    An invalid delay (RetryableError's or Snooze's, see invalid_delay) is
    logged as a warning and the normal backoff applies: RetryableError keeps
    its message and code (the message notes the ignored delay); a Snooze
    becomes a retryable failure with code retryq.snooze_refused."""
    if isinstance(exc, Snooze):
        if exc.invalid_delay is None:
            return Outcome(item, ok=False, duration=duration, error=describe(exc), snooze=exc.delay)
        log.warning(
            "item %d (%s): its handler snoozed with an invalid delay (%s);"
            " failing it with the normal backoff instead",
            item.id,
            item.event_type,
            exc.invalid_delay,
        )
        reason = f"; reason: {exc.reason}" if exc.reason else ""
        return Outcome(
            item,
            ok=False,
            duration=duration,
            error=clean(
                f"retryq: the worker could not snooze this item: {exc.invalid_delay}{reason}",
                MAX_MESSAGE,
            ),
            code=SNOOZE_REFUSED,
        )
    retry_after = exc.delay if isinstance(exc, RetryableError) else None
    error = describe(exc)
    if isinstance(exc, RetryableError) and exc.invalid_delay is not None:
        log.warning(
            "item %d (%s): its handler's RetryableError gave an invalid delay (%s);"
            " using the normal backoff",
            item.id,
            item.event_type,
            exc.invalid_delay,
        )
        error = clean(
            f"{error} (retryq: ignored the invalid delay: {exc.invalid_delay})", MAX_MESSAGE
        )
    try:
        code = error_code(exc)
        retryable = is_retryable(exc)
    except BaseException:  # an exception class that defeats inspection
        code, retryable = None, True
    return Outcome(
        item,
        ok=False,
        duration=duration,
        error=error,
        code=clean(code if code is not None else type(exc).__name__, MAX_CODE),
        retryable=retryable,
        retry_after=retry_after,
    )
