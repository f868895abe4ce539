"""Handler threads: run the handler of each item the ledger hands out.

They never touch the database: an outcome goes back to the ledger, where a
lane picks it up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from retryq_py import metrics
from retryq_py._sql import RetryQueueItem
from retryq_py.errors import RetryableError, Snooze, error_code, is_retryable
from retryq_py.worker.events import MAX_CODE, Outcome, clean, describe
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.registry import Handler


class HandlerThreads:
    """`count` threads taking items from the ledger until it hands out None."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        ledger: Ledger,
        wake: Callable[[], None],
        count: int,
    ) -> None:
        self._handlers = handlers
        self._ledger = ledger
        self._wake = wake
        self._threads = [
            threading.Thread(target=self._loop, name=f"retryq-handler-{n}", daemon=True)
            for n in range(count)
        ]
        # labels() validates and locks on every call: once per type is enough
        self._durations: dict[str, Any] = {}

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
        handler = self._handlers.get(item.event_type)
        started = time.monotonic()
        if handler is None:
            return Outcome(
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
            self._duration(item.event_type).observe(duration)
            return failure(item, exc, duration)
        duration = time.monotonic() - started
        self._duration(item.event_type).observe(duration)
        return Outcome(item, ok=True, duration=duration)

    def _duration(self, event_type: str) -> Any:
        child = self._durations.get(event_type)
        if child is None:
            child = self._durations[event_type] = metrics.HANDLER_DURATION.labels(event_type)
        return child


def failure(item: RetryQueueItem, exc: BaseException, duration: float) -> Outcome:
    """What a raised exception becomes: text and code PostgreSQL can store,
    whatever the exception is (its __str__ or its attributes may raise, its
    code may be no text, its text may hold NUL or lone surrogates).
    Snooze becomes a snooze, RetryableError's delay the retry's delay."""
    if isinstance(exc, Snooze):
        return Outcome(item, ok=False, duration=duration, error=describe(exc), snooze=exc.delay)
    retry_after = exc.delay if isinstance(exc, RetryableError) else None
    try:
        code = error_code(exc)
        retryable = is_retryable(exc)
    except BaseException:  # an exception class that defeats inspection
        code, retryable = None, True
    return Outcome(
        item,
        ok=False,
        duration=duration,
        error=describe(exc),
        code=clean(code if code is not None else type(exc).__name__, MAX_CODE),
        retryable=retryable,
        retry_after=retry_after,
    )
