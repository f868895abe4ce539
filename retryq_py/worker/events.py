"""What a handler's run becomes: an outcome in memory, then an event once written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import psycopg
from psycopg_pool import PoolTimeout

from retryq_py import metrics
from retryq_py._sql import RetryQueueItem
from retryq_py.errors import ServerErrorKind, server_error_kind

log = logging.getLogger("retryq.worker")

# Errors a worker may wait out: which of them it does is server_error_kind's
# call (retryq_py.errors), by SQLSTATE class.
DATABASE = (psycopg.Error, PoolTimeout)

EventKind = Literal["completed", "failed", "dead_lettered", "released", "lease_lost", "snoozed"]


@dataclass(frozen=True)
class WorkerEvent:
    """What on_event receives, once the outcome is written to the database."""

    kind: EventKind
    item: RetryQueueItem
    error: str | None = None
    code: str | None = None
    duration: float | None = None
    # seconds: a snooze's delay, or the delay a failed handler asked for
    # (RetryableError's delay) instead of the backoff
    delay: float | None = None


@dataclass
class WorkerCounts:
    """Outcomes written so far (read them live for a progress display)."""

    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    released: int = 0
    lease_lost: int = 0
    snoozed: int = 0


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
    # seconds: the handler's RetryableError(delay=...), replacing the backoff
    retry_after: float | None = None
    # seconds: the handler raised Snooze (ok is False, nothing failed)
    snooze: float | None = None


# What a failure's text and code are cut to: the code to the bound every
# setting of _retryq_limits allows (200 characters), the text to 4000 (the
# default bound allows 65536; an outcome refused anyway is retried cut to
# FLOOR_MESSAGE, see flush.py).
MAX_MESSAGE = 4000
FLOOR_MESSAGE = 1000
MAX_CODE = 200
# the code of a failure written instead of a snooze the worker could not make
SNOOZE_REFUSED = "retryq.snooze_refused"
# the code of a dead letter whose handler returned work not done (a coroutine
# not awaited, say) instead of doing it: a bug of the handler, see handlers.py
UNFINISHED_RESULT = "retryq.unfinished_result"


def clean(text: object, limit: int) -> str:
    """Text PostgreSQL accepts: any object as str (its type's name when str()
    raises), no NUL (kept visible as \\0), no lone surrogates (kept visible as
    \\udcXX), at most `limit` characters."""
    try:
        value = text if isinstance(text, str) else str(text)
    except BaseException:  # a handler's __str__ may raise anything
        value = type(text).__name__
    if "\x00" in value:
        value = value.replace("\x00", "\\0")
    if not value.isascii():
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value[:limit]


def describe(exc: BaseException) -> str:
    # PostgreSQL text cannot hold NUL; a huge message would bloat every history.
    text = clean(exc, MAX_MESSAGE).strip()
    return text if text else type(exc).__name__


def database_error(
    exc: BaseException, kind: str | None = None, *, own_arguments: bool = False
) -> ServerErrorKind:
    """Classify an error of the worker's own statement and count it in
    retryq_worker_database_errors_total (by SQLSTATE and kind).
    `own_arguments`: see server_error_kind."""
    found = server_error_kind(exc, own_arguments=own_arguments)
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    metrics.DATABASE_ERRORS.labels(state or "", kind or found).inc()
    return found


def unavailable_or_error(exc: BaseException) -> str:
    """'database unavailable' for a lost connection, 'database read-only' for
    25006 (a standby until a failover completes, or a read-only role), else
    'database error'."""
    state = exc.sqlstate if isinstance(exc, psycopg.Error) else None
    if state == "25006":
        return "database read-only (a standby, or default_transaction_read_only on)"
    return "database unavailable" if not state or state.startswith("08") else "database error"


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
            except BaseException:  # even SystemExit: the callback is not the worker
                log.exception("worker %s: on_event callback failed", self._worker_id)
