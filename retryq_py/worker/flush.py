"""The flush: outcomes written and the next items leased, in one transaction.

`FlushWriter` is the database side (one query, no state but its statements);
`Flusher` moves outcomes from the ledger to the writer and the results back:
claimed before the write, forgotten and counted only after the commit, put
back for the next try when it fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import psycopg
from psycopg_pool import ConnectionPool

from retryq_py import metrics
from retryq_py._sql import RetryQueueItem
from retryq_py._sql.worker import FlushStatements, FlushText, JsonbFromText, item_rows
from retryq_py.worker.events import EventKind, Outcome, WorkerEvent
from retryq_py.worker.ledger import Ledger

log = logging.getLogger("retryq.worker")


class Written(NamedTuple):
    """What one flush did."""

    lost: set[int]  # successes this worker could no longer complete
    failed_written: list[bool]  # per failure, in order: written (else lease lost)
    leased: list[RetryQueueItem]


class Writer(Protocol):
    """Writes outcomes and leases up to `want` items in one transaction."""

    def write(self, conn: psycopg.Connection[Any], outcomes: list[Outcome], want: int) -> Written:
        """The outcomes as they came (successes and failures mixed)."""
        ...


class FlushWriter:
    """The flush as one query: fail_retry_item per failure, then
    complete_retry_items, then acquire_retry_items, sent together.

    Several statements in one simple query run as one transaction (all or
    nothing) with no BEGIN or COMMIT round trips. Each round trip costs the
    client about as much CPU as the rows it brings, and this is the worker's
    hot path.
    """

    def __init__(self, worker_id: str, schema: str | None, lock_seconds: int) -> None:
        self._worker_id = worker_id
        self._statements = FlushStatements(schema)
        self._lock_seconds = lock_seconds
        self._text: FlushText | None = None  # rendered on the first connection

    def write(self, conn: psycopg.Connection[Any], outcomes: list[Outcome], want: int) -> Written:
        started = time.monotonic()
        if self._text is None:
            self._text = self._statements.as_text(self._worker_id, conn)
        text = self._text
        cur = psycopg.ClientCursor(conn)  # binds the values into the text, quoted
        cur.adapters.register_loader("jsonb", JsonbFromText)
        parts = [
            cur.mogrify(
                text.fail,
                {
                    "item_id": o.item.id,
                    "worker_id": self._worker_id,
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
                text.complete_at
                % {
                    "item_ids": "'{" + ",".join(map(str, ok_ids)) + "}'",  # integers
                    "worker_id": text.worker,
                    "now": "NULL",
                }
            )
        if want:
            parts.append(
                text.acquire
                % {
                    "worker_id": text.worker,
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
                row = cur.fetchone()
                failed_written.append(bool(row and row[0]))
                cur.nextset()
            completed, at = 0, None
            if ok_ids:
                completed, at = cur.fetchone() or (0, None)
                cur.nextset()
            leased: list[RetryQueueItem] = []
            if want:
                cur.row_factory = item_rows
                leased = cur.fetchall()
            lost: set[int] = set()
            if completed < len(ok_ids):
                # Rare (a lease lost while its handler ran): which ones. The
                # rows this call completed carry its transaction's now().
                done = conn.execute(
                    self._statements.completed_at, {"item_ids": ok_ids, "at": at}
                ).fetchall()
                lost = set(ok_ids) - {r[0] for r in done}
        finally:
            if not conn.closed:
                conn.autocommit = was
        if want:
            metrics.ACQUIRE_DURATION.observe(time.monotonic() - started)
        return Written(lost, failed_written, leased)


class Report(NamedTuple):
    """What a flush wrote, made once for the ledger, the metrics and on_event."""

    events: list[WorkerEvent]
    tally: dict[EventKind, int]
    by_type: dict[tuple[EventKind, str], int]


def classify(outcomes: list[Outcome], written: Written) -> Report:
    """The event each written outcome makes, and their numbers, in one pass."""
    fails = iter(written.failed_written)
    events: list[WorkerEvent] = []
    by_type: dict[tuple[EventKind, str], int] = {}
    kind: EventKind
    for o in outcomes:
        if o.ok:
            kind = "lease_lost" if o.item.id in written.lost else "completed"
            events.append(WorkerEvent(kind, o.item, duration=o.duration))
        else:
            if not next(fails):
                kind = "lease_lost"
            elif not o.retryable or o.item.is_last_attempt:
                kind = "dead_lettered"
            else:
                kind = "failed"
            events.append(WorkerEvent(kind, o.item, o.error, o.code, o.duration))
        key = (kind, o.item.event_type)
        by_type[key] = by_type.get(key, 0) + 1
    tally: dict[EventKind, int] = {}
    for (kind, _), n in by_type.items():
        tally[kind] = tally.get(kind, 0) + n
    return Report(events, tally, by_type)


_METRIC = {
    "completed": metrics.ITEMS_PROCESSED,
    "failed": metrics.ITEMS_FAILED,
    "dead_lettered": metrics.ITEMS_DEAD_LETTERED,
}


def observe(by_type: dict[tuple[EventKind, str], int]) -> None:
    """The worker metrics: one update per kind, type and flush."""
    for (kind, event_type), n in by_type.items():
        counter = _METRIC.get(kind)
        if counter is not None:
            counter.labels(event_type).inc(n)


class Flusher:
    """Claims outcomes from the ledger, writes them with a pooled connection,
    hands leased items to the ledger and reports what was written."""

    def __init__(
        self,
        *,
        worker_id: str,
        ack_interval: float,
        ledger: Ledger,
        pool: ConnectionPool[Any],
        writer: Writer,
        emit: Callable[[list[WorkerEvent]], None],
    ) -> None:
        self._worker_id = worker_id
        self._ack_interval = ack_interval
        self._ledger = ledger
        self._pool = pool
        self._writer = writer
        self._emit = emit

    def flush(self, *, force: bool, acquire: int = 0) -> tuple[int, int, int]:
        """Write outcomes, then lease up to `acquire` items, in one transaction.

        Successes wait up to ack_interval to be batched (unless force, an
        acquire or a failure is waiting). Returns (outcomes written, items
        leased, items asked for: fewer than `acquire` when capacity is short).
        """
        outcomes, acquire = self._ledger.claim(
            force=force, acquire=acquire, ack_interval=self._ack_interval
        )
        if not outcomes and not acquire:
            return 0, 0, 0
        try:
            with self._pool.connection() as conn:
                written = self._writer.write(conn, outcomes, acquire)
        except BaseException:
            self._ledger.unclaim(outcomes, acquire)
            raise
        report = classify(outcomes, written)
        # settled before the new items are held: their slots are the new ones'
        self._ledger.settle([o.item.id for o in outcomes], report.tally)
        self._ledger.hold(written.leased, acquire)
        if written.lost:
            log.warning(
                "worker %s: %d handled items were no longer leased to it: %s",
                self._worker_id,
                len(written.lost),
                sorted(written.lost),
            )
        observe(report.by_type)
        self._emit(report.events)
        return len(outcomes), len(written.leased), acquire
