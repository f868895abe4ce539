"""Handlers for `retryq worker --handlers tests.python.worker_handlers:HANDLERS`.

Each event type stands for one kind of outcome, so a test can enqueue a
mixed load and check every item's final status.
"""

from __future__ import annotations

import asyncio

from retryq_py import PermanentError, RetryableError, RetryQueueItem
from retryq_py.worker import HandlerRegistry


def ok(item: RetryQueueItem) -> None:
    """Succeeds at once."""


def flaky(item: RetryQueueItem) -> None:
    """Fails (retryably) on its first `fail_times` attempts, then succeeds."""
    if item.retry_count < int(item.event_data["fail_times"]):
        raise RetryableError(f"attempt {item.retry_count + 1}: connection reset", "08006")


def broken(item: RetryQueueItem) -> None:
    """Can never succeed: a dead letter on the first attempt."""
    raise PermanentError("payload rejected", "bad_payload")


def down(item: RetryQueueItem) -> None:
    """Its dependency never comes back: an unclassified error, so retried until spent."""
    raise ConnectionRefusedError("dependency down")


HANDLERS = {"ok": ok, "flaky": flaky, "broken": broken, "down": down}

REGISTRY = HandlerRegistry()
for _event_type, _fn in HANDLERS.items():
    REGISTRY.register(_event_type, _fn)

NOT_A_MAPPING = [ok]


# The same outcomes from coroutines (AsyncRetryWorker); `ok` stays a plain
# function, which the async worker runs in a thread.
async def flaky_async(item: RetryQueueItem) -> None:
    await asyncio.sleep(0)
    flaky(item)


async def broken_async(item: RetryQueueItem) -> None:
    await asyncio.sleep(0)
    broken(item)


async def down_async(item: RetryQueueItem) -> None:
    await asyncio.sleep(0)
    down(item)


ASYNC_HANDLERS = {"ok": ok, "flaky": flaky_async, "broken": broken_async, "down": down_async}
