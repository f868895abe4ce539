"""What a handler's run becomes: an outcome in memory, then an event once written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import psycopg
from psycopg_pool import PoolTimeout

from retryq_py._sql import RetryQueueItem

log = logging.getLogger("retryq.worker")

# Errors a worker waits out; anything else from the database (a missing
# schema, a revoked privilege: SQLSTATE class 42) stops run() with the error.
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)

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
class Outcome:
    """A handler's result, held until a lane writes it."""

    item: RetryQueueItem
    ok: bool
    duration: float
    error: str | None = None
    code: str | None = None
    retryable: bool = True
    done_at: float = field(default_factory=time.monotonic)


def describe(exc: BaseException) -> str:
    # PostgreSQL text cannot hold NUL; a huge message would bloat every history.
    text = str(exc).strip().replace("\x00", "\\0")[:4000]
    return text if text else type(exc).__name__


class Emitter:
    """Calls on_event; a callback that raises is logged, never fatal."""

    def __init__(self, worker_id: str, on_event: Callable[[WorkerEvent], None] | None) -> None:
        self._worker_id = worker_id
        self._on_event = on_event

    def __call__(self, events: list[WorkerEvent]) -> None:
        if self._on_event is None:
            return
        for event in events:
            try:
                self._on_event(event)
            except Exception:
                log.exception("worker %s: on_event callback failed", self._worker_id)
