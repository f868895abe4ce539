"""The flush: outcomes written and the next items leased, in one transaction.

`FlushWriter` is the database side (one query, no state but its statements);
`Flusher` moves outcomes from the ledger to the writer and the results back:
claimed before the write, forgotten and counted only after the commit, put
back for the next try when it fails.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple, Protocol, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from retryq_py import _session as session
from retryq_py import metrics
from retryq_py._sql import RetryQueueItem, snooze_count, whole_seconds
from retryq_py._sql.decode import UNDECODABLE, row_fields
from retryq_py._sql.timestamps import load_infinite_timestamps
from retryq_py._sql.worker import (
    BURIED,
    FlushStatements,
    FlushText,
    JsonbFromText,
    item_rows,
)
from retryq_py.errors import explain, server_error_kind
from retryq_py.worker.events import (
    FLOOR_MESSAGE,
    MAX_CODE,
    MAX_MESSAGE,
    SNOOZE_REFUSED,
    EventKind,
    Outcome,
    WorkerEvent,
    clean,
    database_error,
)
from retryq_py.worker.ledger import Ledger
from retryq_py.worker.settings import Routing

log = logging.getLogger("retryq.worker")


class Written(NamedTuple):
    """What one flush did."""

    lost: set[int]  # successes this worker could no longer complete
    failed_written: list[bool]  # per failure, in order: written (else lease lost)
    leased: list[RetryQueueItem]
    # leased items that could not be decoded: failed without running
    rejected: Sequence[Outcome] = ()
    # snoozes the queue made dead letters (past max_snoozes), by its answer
    buried: frozenset[int] = frozenset()


class PartlyWritten(Exception):
    """The one-by-one write stopped after some outcomes were written, each
    in a transaction of its own whose reply was read: `done` (those
    outcomes, in order) and `written` (what became of them). Its __cause__
    is what stopped it, for the caller to handle as if raised alone; the
    other outcomes were not written."""

    def __init__(self, done: list[Outcome], written: Written) -> None:
        super().__init__(f"{len(done)} outcomes were written before the write stopped")
        self.done = done
        self.written = written


class Writer(Protocol):
    """Writes outcomes and leases up to `want` items in one transaction."""

    def write(self, conn: psycopg.Connection[Any], outcomes: list[Outcome], want: int) -> Written:
        """The outcomes as they came (successes and failures mixed)."""
        ...


UNSTORABLE = "retryq.unstorable_outcome"
SNOOZE_LIMIT = "snooze_limit"  # snooze_retry_item's code past max_snoozes


class FlushWriter:
    """The flush as one query: fail_retry_item per failure (with the
    handler's retry delay, when it gave one) or snooze_retry_item per
    snooze, then complete_retry_items, then acquire_retry_items, sent
    together.

    Several statements in one simple query run as one transaction (all or
    nothing) with no BEGIN or COMMIT round trips. Each round trip costs the
    client about as much CPU as the rows it brings, and this is the worker's
    hot path.

    One bad value must not cost the others: when the batch raises because of
    a value (server_error_kind "item": a text the server refuses, a value
    psycopg cannot send), nothing was written, and each outcome is written
    on its own (`_write_each`); the one at fault is retried cut to the bounds
    every setting allows, then failed for good as retryq.unstorable_outcome.
    Leased rows that cannot be decoded (a number json cannot read, a JSON
    value deeper than Python recurses) are decoded row by row, and those that still fail
    come back as `rejected` outcomes (retryq.undecodable_item).
    """

    def __init__(
        self,
        worker_id: str,
        schema: str | None,
        lock_seconds: int,
        max_snoozes: int = 100,
        routing: Routing | None = None,
    ) -> None:
        self._worker_id = worker_id
        self._max_snoozes = max_snoozes
        self._statements = FlushStatements(schema)
        self._lock_seconds = lock_seconds
        self._routing = routing or Routing()
        self._text: FlushText | None = None  # rendered on the first connection

    def write(self, conn: psycopg.Connection[Any], outcomes: list[Outcome], want: int) -> Written:
        started = time.monotonic()
        # it reads text: UTF8 and ISO, which the worker's own pool sets and a
        # pool given to it must have (SessionSettingError, a configuration error)
        session.require(conn, datestyle=True)
        if self._text is None:
            self._text = self._statements.as_text(self._worker_id, self._routing.params, conn)
        # one implicit transaction needs autocommit; the pool gets it back as it was
        was = conn.autocommit
        conn.autocommit = True
        try:
            try:
                written = self._write(conn, self._text, outcomes, want)
            except Exception as exc:
                if not outcomes or conn.closed or server_error_kind(exc) != "item":
                    raise
                database_error(exc)
                log.warning(
                    "worker %s: writing %d outcomes at once failed (%s); writing each alone",
                    self._worker_id,
                    len(outcomes),
                    explain(exc),
                )
                written = self._write_each(conn, self._text, outcomes, want)
        finally:
            if not conn.closed and conn.autocommit != was:
                # a connection cut mid-statement (the deadline's shutdown)
                # stays "active" and refuses the change: the error to raise is
                # the lost connection, and the pool discards it
                with contextlib.suppress(psycopg.ProgrammingError):
                    conn.autocommit = was
        if want:
            metrics.ACQUIRE_DURATION.observe(time.monotonic() - started)
        return written

    def _write(
        self, conn: psycopg.Connection[Any], text: FlushText, outcomes: list[Outcome], want: int
    ) -> Written:
        cur = _leasing(psycopg.ClientCursor(conn))  # binds the values into the text, quoted
        parts = [self._fail(cur, text, o) for o in outcomes if not o.ok]
        ok = [o.item for o in outcomes if o.ok]
        ok_ids = [i.id for i in ok]
        if ok_ids:
            parts.append(self._complete(text, ok))
        if want:
            parts.append(self._acquire(text, want))
        cur.execute(";\n".join(parts))
        failed_written = []
        buried = set()
        for o in outcomes:
            if o.ok:
                continue
            row = cur.fetchone()
            failed_written.append(bool(row and row[0]))
            if o.snooze is not None and row and row[0] == BURIED:
                buried.add(o.item.id)
            cur.nextset()
        lost: set[int] = set()
        if ok_ids:
            completed, at = cur.fetchone() or (0, None)
            cur.nextset()
            lost = self._lost(conn, ok, completed, at)
        leased, rejected = decode_leased(cur, self._worker_id) if want else ([], [])
        return Written(lost, failed_written, leased, rejected, frozenset(buried))

    def _write_each(
        self, conn: psycopg.Connection[Any], text: FlushText, outcomes: list[Outcome], want: int
    ) -> Written:
        """The slow path: each failure in a transaction of its own, then the
        successes, then the lease. An outcome is changed in place to what was
        written for it. Stopped by an error after some were written, it
        raises PartlyWritten (from that error): written again, they would be
        refused and counted as lost leases."""
        cur = _leasing(psycopg.ClientCursor(conn))
        failed_written: list[bool] = []
        buried = set()
        done: list[Outcome] = []  # written, their replies read
        lost: set[int] = set()
        try:
            for o in outcomes:
                if not o.ok:
                    answer = self._fail_alone(cur, text, o)
                    failed_written.append(bool(answer))
                    if o.snooze is not None and answer == BURIED:
                        buried.add(o.item.id)
                    done.append(o)
            ok = [o.item for o in outcomes if o.ok]
            ok_ids = [i.id for i in ok]
            if ok_ids:
                completed, at = cur.execute(self._complete(text, ok)).fetchone() or (0, None)
                done += [o for o in outcomes if o.ok]
                lost = self._lost(conn, ok, completed, at)
            leased: list[RetryQueueItem] = []
            rejected: list[Outcome] = []
            if want:
                cur.execute(self._acquire(text, want))
                leased, rejected = decode_leased(cur, self._worker_id)
        except Exception as exc:
            if not done:
                raise
            # (_lost's read failing: its successes count as written, as
            # complete_retry_items' count was read)
            raise PartlyWritten(
                done, Written(lost, failed_written, [], buried=frozenset(buried))
            ) from exc
        return Written(lost, failed_written, leased, rejected, frozenset(buried))

    def _fail_alone(self, cur: psycopg.ClientCursor[Any], text: FlushText, o: Outcome) -> Any:
        """One failure; refused, then cut to the floors; refused again, a
        permanent failure that says why."""
        try:
            return self._fail_row(cur, self._fail(cur, text, o))
        except Exception as exc:
            if server_error_kind(exc) != "item":
                raise
            first = exc
        if o.snooze is not None:
            # a snooze the queue refused is written as a retryable failure
            # that says why: the item is not lost, and the budget bounds it
            log.error(
                "worker %s: item %d: its snooze was refused (%s); failing it instead",
                self._worker_id,
                o.item.id,
                explain(first),
            )
            o.snooze = None
            o.error = clean(
                f"retryq: the worker could not snooze this item: {explain(first)}", FLOOR_MESSAGE
            )
            o.code = SNOOZE_REFUSED
            try:
                return self._fail_row(cur, self._fail(cur, text, o))
            except Exception as exc:
                if server_error_kind(exc) != "item":
                    raise
        o.error = clean(o.error or "error", FLOOR_MESSAGE)
        o.code = clean(o.code, MAX_CODE) if o.code is not None else None
        try:
            return self._fail_row(cur, self._fail(cur, text, o))
        except Exception as exc:
            if server_error_kind(exc) != "item":
                raise
        log.error(
            "worker %s: item %d: its outcome cannot be stored (%s); failing it for good",
            self._worker_id,
            o.item.id,
            explain(first),
        )
        o.error = clean(
            f"retryq: the worker could not store this outcome ({explain(first)});"
            f" the handler's code was {o.code!r}, its message: {o.error}",
            FLOOR_MESSAGE,
        )
        o.code = UNSTORABLE
        o.retryable = False
        return self._fail_row(cur, self._fail(cur, text, o))

    @staticmethod
    def _fail_row(cur: psycopg.ClientCursor[Any], statement: str) -> Any:
        """The statement's answer: fail's boolean, or the snooze's outcome."""
        row = cur.execute(statement).fetchone()
        return row[0] if row else None

    def _fail(self, cur: psycopg.ClientCursor[Any], text: FlushText, o: Outcome) -> str:
        if o.snooze is not None:
            return cur.mogrify(
                text.snooze,
                {
                    "item_id": o.item.id,
                    "worker_id": self._worker_id,
                    "delay": o.snooze,
                    "max_snoozes": self._max_snoozes,
                    "now": None,
                    "leased_at": o.item.leased_at,
                },
            )
        return cur.mogrify(
            text.fail,
            {
                "item_id": o.item.id,
                "worker_id": self._worker_id,
                "error": o.error or "error",
                "code": o.code,
                "retryable": o.retryable,
                "retry_after": o.retry_after,
                "now": None,
                "leased_at": o.item.leased_at,
            },
        )

    @staticmethod
    def _complete(text: FlushText, ok: list[RetryQueueItem]) -> str:
        return text.complete_at % {
            "item_ids": "'{" + ",".join(str(i.id) for i in ok) + "}'",  # integers
            "worker_id": text.worker,
            "now": "NULL",
            "leased_at": _times([i.leased_at for i in ok]),
        }

    def _acquire(self, text: FlushText, want: int) -> str:
        return text.acquire % {
            "worker_id": text.worker,
            "batch_size": int(want),
            "lock_timeout": self._lock_seconds,
            "now": "NULL",
            "event_types": text.event_types,
            "plugin_names": text.plugin_names,
        }

    def _lost(
        self, conn: psycopg.Connection[Any], ok: list[RetryQueueItem], completed: int, at: Any
    ) -> set[int]:
        if completed >= len(ok):
            return set()
        # Rare (a lease lost while its handler ran, or an earlier write of
        # ours that lost its reply ran after all): which ones. The rows this
        # call completed carry its transaction's now(), those an earlier
        # write completed the lease's grant time.
        ids = [i.id for i in ok]
        done = conn.execute(
            self._statements.completed_at,
            {"item_ids": ids, "leased_at": [i.leased_at for i in ok], "at": at},
        ).fetchall()
        return set(ids) - {r[0] for r in done}


C = TypeVar("C", bound=psycopg.Cursor[Any])


def _leasing(cur: C) -> C:
    """cur, reading leased rows: jsonb from its text (JsonbFromText), and
    'infinity' and '-infinity' as RetryQueue.acquire reads them (the
    furthest moments Python has), so that such an item runs, not fails as
    undecodable. On the cursor: a caller's pool keeps psycopg's loaders."""
    cur.adapters.register_loader("jsonb", JsonbFromText)
    load_infinite_timestamps(cur)
    return cur


def decode_leased(
    cur: psycopg.Cursor[Any], worker_id: str
) -> tuple[list[RetryQueueItem], list[Outcome]]:
    """Leased rows as items; row by row only when the batch cannot be
    decoded, and the rows that still cannot be, as outcomes failing them."""
    cur.row_factory = item_rows
    try:
        return cur.fetchall(), []
    except Exception as exc:
        log.warning(
            "worker %s: a leased row cannot be decoded (%s); decoding each alone",
            worker_id,
            explain(exc),
        )
    leased: list[RetryQueueItem] = []
    rejected: list[Outcome] = []
    for item, why in row_fields(cur, RetryQueueItem):
        if why is None:
            leased.append(item)
            continue
        log.error("worker %s: item %d: %s; failing it for good", worker_id, item.id, why)
        rejected.append(
            Outcome(
                item,
                ok=False,
                duration=0.0,
                error=clean(f"retryq: the worker {why}", MAX_MESSAGE),
                code=UNDECODABLE,
                retryable=False,
            )
        )
    return leased, rejected


class Report(NamedTuple):
    """What a flush wrote, made once for the ledger, the metrics and on_event."""

    events: list[WorkerEvent]
    tally: dict[EventKind, int]
    by_type: dict[tuple[EventKind, str], int]


def classify(outcomes: list[Outcome], written: Written, max_snoozes: int = 100) -> Report:
    """The event each written outcome makes, and their numbers, in one pass.
    A snooze is a dead letter when the queue said so (`written.buried`: the
    snooze past `max_snoozes`, snooze_retry_item_outcome)."""
    fails = iter(written.failed_written)
    events: list[WorkerEvent] = []
    by_type: dict[tuple[EventKind, str], int] = {}
    kind: EventKind
    for o in outcomes:
        code, error, delay = o.code, o.error, o.retry_after
        if o.ok:
            kind = "lease_lost" if o.item.id in written.lost else "completed"
        elif not next(fails):
            kind = "lease_lost"
        elif o.snooze is not None:
            # the snooze past the bound buries the item: the queue's answer
            delay = o.snooze
            if o.item.id in written.buried:
                kind, code = "dead_lettered", SNOOZE_LIMIT
                # the text snooze_retry_item recorded: its count is at least
                # the bound (more when the row changed since the lease)
                error = (
                    f"retryq: snoozed {max(o.item.snoozes, max_snoozes)} times,"
                    f" the limit (max_snoozes {max_snoozes})"
                )
            else:
                kind, code = "snoozed", None
        elif not o.retryable or o.item.is_last_attempt:
            kind = "dead_lettered"
        else:
            kind = "failed"
        if o.ok:
            events.append(WorkerEvent(kind, o.item, duration=o.duration))
        else:
            events.append(WorkerEvent(kind, o.item, error, code, o.duration, delay))
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
    "snoozed": metrics.ITEMS_SNOOZED,
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
        lease: float = 300.0,
        schema: str | None = None,
        max_snoozes: int = 100,
    ) -> None:
        self._worker_id = worker_id
        self._max_snoozes = max_snoozes
        self._ack_interval = ack_interval
        self._ledger = ledger
        self._pool = pool
        self._writer = writer
        self._emit = emit
        self._lease = timedelta(seconds=lease)
        self._statements = FlushStatements(schema)
        # After a reply was lost: the items whose outcomes may have been
        # written.
        self._doubt: set[int] = set()
        # Acquires whose reply was lost (they may have leased items we never
        # saw), counted, and how many of them a take-up has settled: a
        # take-up settles only those whose server process it waited for (see
        # flush). A flag cleared by one lane's take-up would also clear a
        # loss another lane noticed meanwhile, whose statement the server was
        # still running: its leases then expired under this live worker.
        self._lost_acquires = 0
        self._settled_acquires = 0
        self._adopting = threading.Lock()
        # the server processes of the connections whose replies were lost
        self._old_backends: set[int] = set()
        # the doubt's counts and processes change together (lanes lose
        # replies concurrently)
        self._doubt_lock = threading.Lock()

    def flush(self, *, force: bool, acquire: int = 0) -> tuple[int, int, int]:
        """Write outcomes, then lease up to `acquire` items, in one transaction.

        Successes wait up to ack_interval to be batched (unless force, an
        acquire or a failure is waiting). Returns (outcomes written, items
        leased, items asked for: fewer than `acquire` when capacity is short).

        When the connection breaks around the commit, the server may have
        committed: the next flush first finds out (see `_settle`, `_adopt`)
        instead of writing again and guessing.
        """
        outcomes, acquire = self._ledger.claim(
            force=force, acquire=acquire, ack_interval=self._ack_interval
        )
        if not outcomes and not acquire and self._lost_acquires == self._settled_acquires:
            return 0, 0, 0
        pid = None
        try:
            with self._pool.connection() as conn:
                pid = conn.info.backend_pid
                with self._doubt_lock:
                    # the lost acquires counted by now are those whose
                    # processes are waited for here (each loss adds its
                    # process before it is counted)
                    lost = self._lost_acquires
                    waiting = bool(self._doubt and outcomes) or lost > self._settled_acquires
                    pids = set(self._old_backends) if waiting else set()
                if pids:
                    self._await_old_backends(conn, pids)
                    with self._doubt_lock:  # forgotten once waited for
                        self._old_backends -= pids
                if self._doubt and outcomes:
                    outcomes = self._settle(conn, outcomes)
                # One lane at a time, without waiting for the outcomes in
                # doubt to be settled: another lane may hold them, stuck on a
                # silent connection until its statement deadline, and that
                # wait after the one that noticed the loss cost the leases
                # their whole lease. An outcome in doubt whose item the
                # take-up holds under a newer lease (its failure written and
                # the item leased again by the same flush) is settled by the
                # queue's history, and the lease fence keeps it off that lease.
                if lost > self._settled_acquires and self._adopting.acquire(False):
                    try:
                        self._adopt(conn, lost)
                    finally:
                        self._adopting.release()
                outcomes = self._drop_replaced(outcomes)
                # by id, the order the heartbeat renews in (and one order
                # among this worker's flushes): no two wait on each other
                outcomes = sorted(outcomes, key=lambda o: o.item.id)
                written = self._writer.write(conn, outcomes, acquire)
        except BaseException as exc:
            error: BaseException = exc
            if isinstance(exc, PartlyWritten) and exc.__cause__ is not None:
                # written one by one, then stopped: those written are
                # reported now, the others handled as the error says
                written_now = {id(o) for o in exc.done}
                outcomes = [o for o in outcomes if id(o) not in written_now]
                self._report(exc.done, exc.written)
                error = exc.__cause__
            if lost_reply(error):
                with self._doubt_lock:
                    self._doubt.update(o.item.id for o in outcomes)
                    if pid:
                        self._old_backends.add(pid)
                    self._lost_acquires += acquire > 0
            self._ledger.unclaim(outcomes, acquire)
            if error is not exc:
                raise error from None
            raise
        self._report(outcomes, written)
        # settled before the new items are held: their slots are the new ones'
        self._ledger.hold(written.leased, acquire, written.rejected)
        return len(outcomes), len(written.leased) + len(written.rejected), acquire

    def recover(self) -> None:
        """After a lost connection: drop the pool's other broken connections
        now (one round trip each), so the next tries do not each find one
        and the backoff does not grow on what one reset broke."""
        try:
            self._pool.check()
        except Exception as exc:  # the next flush says what is wrong
            log.debug("worker %s: pool check failed (%s)", self._worker_id, explain(exc))

    def _report(self, outcomes: list[Outcome], written: Written) -> None:
        report = classify(outcomes, written, self._max_snoozes)
        self._ledger.settle([o.item for o in outcomes], report.tally)
        if report.tally.get("snoozed") or report.tally.get("dead_lettered"):
            self._log_snoozes(outcomes, report.events)
        if written.lost:
            log.warning(
                "worker %s: %d handled items were no longer leased to it"
                " (cancelled, or taken over after their lease ran out): %s",
                self._worker_id,
                len(written.lost),
                sorted(written.lost),
            )
        observe(report.by_type)
        self._emit(report.events)

    def _log_snoozes(self, outcomes: list[Outcome], events: list[WorkerEvent]) -> None:
        for o, event in zip(outcomes, events, strict=True):
            if o.snooze is None:
                continue
            if event.kind == "snoozed":
                # debug: a line per snooze (the CLI's EventLog logs them at
                # info, rate limited); counted in retryq_worker_items_snoozed
                log.debug(
                    "worker %s: item %d (%s) snoozed for %gs (snooze %d of at most %d)",
                    self._worker_id,
                    o.item.id,
                    o.item.event_type,
                    o.snooze,
                    o.item.snoozes + 1,
                    self._max_snoozes,
                )
            elif event.kind == "dead_lettered":
                log.warning(
                    "worker %s: item %d (%s) was snoozed %d times, the limit (max_snoozes):"
                    " it is a dead letter (code %s)",
                    self._worker_id,
                    o.item.id,
                    o.item.event_type,
                    max(o.item.snoozes, self._max_snoozes),
                    SNOOZE_LIMIT,
                )

    def _drop_replaced(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Outcomes of leases the worker's own acquire took over after they
        ran out are counted as lost, not written (see Ledger.replaced)."""
        if not outcomes:
            return outcomes
        outcomes, gone = self._ledger.replaced(outcomes)
        if gone:
            log.warning(
                "worker %s: %d handled items were leased again after their lease ran out;"
                " not writing their outcomes onto the new lease: %s",
                self._worker_id,
                len(gone),
                sorted(o.item.id for o in gone),
            )
            self._report(
                gone,
                Written(
                    {o.item.id for o in gone if o.ok}, [False] * sum(not o.ok for o in gone), []
                ),
            )
        return outcomes

    def _await_old_backends(self, conn: psycopg.Connection[Any], pids: set[int]) -> None:
        """Before reading what a lost reply did: the server finishes that
        statement (and its COMMIT) after the client is gone, so wait, up to a
        quarter of the lease (at most 10 s), until its process is idle or gone.
        Read earlier, the items an acquire was committing look free and are
        never taken up, and expire under this live worker (seen in the crash
        test). The waiting lane holds no lock the statement could need."""
        deadline = time.monotonic() + min(self._lease.total_seconds() / 4, 10.0)
        while True:
            row = conn.execute(self._statements.old_backend_busy, {"pids": list(pids)}).fetchone()
            if not (row and row[1]):
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "worker %s: the server still runs the statement whose reply was lost"
                    " (process %s); reading the queue without waiting longer",
                    self._worker_id,
                    sorted(pids),
                )
                return
            time.sleep(0.05)

    def _settle(self, conn: psycopg.Connection[Any], outcomes: list[Outcome]) -> list[Outcome]:
        """Outcomes whose last write lost its reply: read what the queue says.
        Those written (a completion while nobody took the lease over, a
        failure in the history under this worker's name and text) and those
        whose lease is gone are reported now; those still leased to this
        worker are returned, to be written."""
        doubtful = [o for o in outcomes if o.item.id in self._doubt]
        if not doubtful:
            return outcomes
        rows = {
            r[0]: r
            for r in conn.execute(
                self._statements.in_doubt, {"item_ids": [o.item.id for o in doubtful]}
            ).fetchall()
        }
        me = self._worker_id
        again: list[Outcome] = []
        done: list[Outcome] = []
        lost: set[int] = set()
        failed_written: list[bool] = []
        buried: set[int] = set()
        for o in doubtful:
            row = rows.get(o.item.id)
            if (
                row is not None
                and row[1] == "processing"
                and row[2] == me
                and (
                    row[6] == o.item.leased_at
                    if o.item.leased_at is not None
                    else row[4] == o.item.retry_count and snooze_count(row[5]) == o.item.snoozes
                )
            ):
                # not written: still the same lease, ours (its grant time;
                # without one, the same attempt snoozed as often). Written
                # again, it is fenced to that lease all the same: a newer one
                # (a zero-delay snooze leased again by the same flush, say)
                # refuses it.
                again.append(o)
                continue
            since = o.item.locked_until - self._lease
            history = [h for h in (row[3] if row is not None else []) if h.get("worker_id") == me]
            newer = [h for h in history if _at(h.get("failed_at")) >= since]
            if o.ok:
                taken = any(h.get("code") == "lease_expired" for h in newer)
                if row is None or row[1] != "completed" or taken:
                    lost.add(o.item.id)
            elif o.snooze is not None:
                # a snooze leaves no history: written unless the lease was
                # taken over (then the taker's lease_expired entry names us)
                taken = any(h.get("code") == "lease_expired" for h in newer)
                failed_written.append(row is not None and not taken)
                if not taken and any(h.get("code") == SNOOZE_LIMIT for h in newer):
                    buried.add(o.item.id)
            else:
                failed_written.append(
                    any(h.get("code") == o.code and h.get("error") == o.error for h in newer)
                )
            done.append(o)
        self._doubt.difference_update(o.item.id for o in doubtful)
        if done:
            log.warning(
                "worker %s: settled %d outcomes whose reply was lost: %d had been written",
                self._worker_id,
                len(done),
                len(done) - len(lost) - failed_written.count(False),
            )
            self._report(done, Written(lost, failed_written, [], buried=frozenset(buried)))
        in_doubt = {o.item.id for o in doubtful}
        return again + [o for o in outcomes if o.item.id not in in_doubt]

    def renew_unknown(self) -> int | None:
        """While acquires are in doubt: renew the leases the queue says this
        worker holds and the ledger does not know (those a lost acquire
        granted), without holding them: the take-up does that, and may come
        late. Returns how many were renewed; None when no acquire is in doubt
        (nothing asked). A lease whose acquire is still running on the
        server is not seen yet: a later call renews it."""
        with self._doubt_lock:
            if self._lost_acquires <= self._settled_acquires:
                return None
        known, until = self._ledger.known_leases()
        with self._pool.connection() as conn:
            rows = conn.execute(
                self._statements.renew_unknown,
                {
                    "worker_id": self._worker_id,
                    "known": known,
                    "known_until": until,
                    "lock_seconds": whole_seconds(self._lease.total_seconds(), "lock_timeout"),
                },
            ).fetchall()
        return len(rows)

    def _adopt(self, conn: psycopg.Connection[Any], lost: int) -> None:
        """Acquires lost their reply: the items the queue says this worker
        holds and it does not know of are taken up, as if just leased. The
        first `lost` lost acquires are settled by it, once the items are held
        (should the read or the renewal fail, they stay in doubt): their
        processes were waited for before the read. One noticed since may
        still be running on the server; a later take-up settles it."""
        self._take_up(conn)
        with self._doubt_lock:
            self._settled_acquires = max(self._settled_acquires, lost)

    def _take_up(self, conn: psycopg.Connection[Any]) -> None:
        cur = _leasing(conn.cursor())
        # a held item may have a newer lease (its outcome written, leased
        # again by a lost acquire): known leases are (id, granted locked_until)
        known, until = self._ledger.held_leases()
        cur.execute(
            self._statements.held,
            {
                "worker_id": self._worker_id,
                "known": known,
                "known_until": until,
                # the acquire's lease, as the writer asks for it
                "lock_seconds": whole_seconds(self._lease.total_seconds(), "lock_timeout"),
            },
        )
        items, rejected = decode_leased(cur, self._worker_id)
        if items or rejected:
            # Their leases began at the lost acquire, up to a statement
            # deadline and the wait for its process ago: renewed now, they
            # are held as just leased (held as they were, the heartbeat would
            # renew them a third of a lease from now, maybe after they ran out). The
            # items keep the acquire's locked_until, by which a lane whose
            # reply was only slow recognises them (see Ledger.hold).
            # by id, the one lock order (see Heartbeat.beat), each fenced to
            # the lease read
            found = sorted(
                [(i.id, i.leased_at) for i in items]
                + [(o.item.id, o.item.leased_at) for o in rejected],
                key=lambda lease: lease[0],
            )
            kept = {
                r[0]
                for r in conn.execute(
                    self._statements.extend_locks,
                    {
                        "item_ids": [i for i, _ in found],
                        "leased_at": [at for _, at in found],
                        "worker_id": self._worker_id,
                        # rounded as the heartbeat's renewals are
                        "lock_timeout": whole_seconds(self._lease.total_seconds(), "lock_timeout"),
                    },
                ).fetchall()
            }
            items = [i for i in items if i.id in kept]
            rejected = [o for o in rejected if o.item.id in kept]
            log.warning(
                "worker %s: an acquire lost its reply; taking up the %d items it leased",
                self._worker_id,
                len(items) + len(rejected),
            )
        self._ledger.hold(items, 0, rejected, adopt=True)  # also ends held_leases' watch


def _times(values: list[datetime | None]) -> str:
    """A timestamptz[] literal of the leases' grant times (ISO text needs
    no escaping); NULL, no fence, when one is unknown (an item built by hand)."""
    if any(v is None for v in values):
        return "NULL"
    return "'{" + ",".join(f'"{v.isoformat()}"' for v in values if v is not None) + "}'"


def lost_reply(exc: BaseException) -> bool:
    """The connection broke while a statement was out: it may have committed."""
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _at(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
