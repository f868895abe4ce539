"""AsyncRetryQueue: one typed method per retryq SQL function.

Give it a psycopg AsyncConnection and you own the transaction: nothing is
committed for you (use autocommit, or a `conn.transaction()` block). Give it a
psycopg_pool AsyncConnectionPool and each call takes a connection and commits
(each call is one statement, run in autocommit, so no transaction of ours
ever waits idle on the server).

Every method that changes state takes `now=None`: the server's clock, unless
a test moves it (the functions' p_now).

aio.py, the asyncio client, is the one written by hand; queue.py, the sync
client, is generated from it by scripts/gen-sync (and `scripts/gen-sync
--check` fails when it is stale). What needs no I/O, both import from
_queue_base.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import AsyncRowFactory, class_row, scalar_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from retryq_py import _sql
from retryq_py._queue_base import (
    ADD_KEYS,
    QueueBase,
    at_item,
    clock_and_mark,
    found_ids,
    new_ids,
    refuse_nul,
    undecodable_failure,
    unnamed_refusal,
)
from retryq_py._session import binary_reads
from retryq_py._session import require as require_session
from retryq_py._sql import (
    JSON,
    CleanupResult,
    Due,
    Enqueued,
    NewItem,
    QueueEntry,
    RetryQueueItem,
    Seconds,
    StatsRow,
)
from retryq_py._sql.decode import row_fields, split_undecodable
from retryq_py._sql.timestamps import load_infinite_timestamps

if TYPE_CHECKING:
    from psycopg import sql
    from psycopg.types.json import Jsonb

    from retryq_py.config import RetryConfig

__all__ = ["ADD_KEYS", "AsyncRetryQueue", "AsyncSource"]

T = TypeVar("T")
AsyncSource = psycopg.AsyncConnection[Any] | AsyncConnectionPool[Any]


class AsyncRetryQueue(QueueBase):
    """The queue in one PostgreSQL database (and schema).

    `schema`: where retryq is installed; None lets the connection's
    search_path find it. `config`: takes the add() defaults (max_retries,
    initial_delay, backoff_multiplier) from a loaded configuration.
    """

    def __init__(
        self,
        source: AsyncSource,
        *,
        schema: str | None = None,
        config: RetryConfig | None = None,
    ) -> None:
        super().__init__(schema=schema, config=config)
        self.source = source

    # -- plumbing -------------------------------------------------------------

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """The caller's connection, or one from the pool committed on success."""
        if isinstance(self.source, AsyncConnectionPool):
            async with self.source.connection() as conn:
                require_session(conn)  # UTF8 (SessionSettingError)
                if conn.autocommit:
                    yield conn
                    return
                # Each call is one statement (add_many opens its own
                # transaction): in autocommit it commits by itself, with no
                # COMMIT round trip and no idle moment inside a transaction
                # (idle_in_transaction_session_timeout).
                await conn.set_autocommit(True)
                try:
                    yield conn
                finally:
                    if not conn.closed:
                        await conn.set_autocommit(False)
        else:
            require_session(self.source)
            yield self.source

    @asynccontextmanager
    async def _read(
        self,
        query: sql.Composed,
        params: Mapping[str, Any],
        rows: AsyncRowFactory[T],
        times: bool,
    ) -> AsyncIterator[tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[T]]]:
        """The connection, and a cursor that ran the query (see _all)."""
        params = _sql.integer_params(params)
        async with self.connection() as conn, conn.cursor(row_factory=rows) as cur:
            if times:
                load_infinite_timestamps(cur)
            try:
                await cur.execute(query, params, binary=times and binary_reads(cur))
            except psycopg.DataError:
                _sql.refuse_nul_params(params)  # names a NUL's field (22021)
                raise
            yield conn, cur

    async def _all(
        self,
        query: sql.Composed,
        params: Mapping[str, Any],
        rows: AsyncRowFactory[T],
        *,
        times: bool = True,
    ) -> list[T]:
        """The rows; `times`: they may hold a timestamptz (one infinite time
        must not fail the read), read in binary: whatever the session's
        DateStyle (see _session). Registering the loaders costs about 7 us a
        cursor, which add() (no times in its answer) does not pay."""
        async with self._read(query, params, rows, times) as (_, cur):
            return await cur.fetchall()

    @staticmethod
    async def _decoded(
        cur: psycopg.AsyncCursor[T], make: Callable[..., T]
    ) -> tuple[list[T], list[tuple[T, str]]]:
        """The rows that decode, and those that do not with why: when a
        value cannot be decoded (a number or a nesting beyond Python's
        json), each field on its own, a failing one holding the server's
        text (_sql.decode, the worker's rule too)."""
        try:
            return await cur.fetchall(), []
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except Exception:  # a loader's error (ValueError, RecursionError, ...)
            if cur.pgresult is None:
                raise
        return split_undecodable(row_fields(cur, make))

    async def _one(self, query: sql.Composed, params: Mapping[str, Any]) -> Any:
        params = _sql.integer_params(params)
        async with self.connection() as conn, conn.cursor(row_factory=scalar_row) as cur:
            try:
                await cur.execute(query, params)
            except psycopg.DataError:
                _sql.refuse_nul_params(params)
                raise
            return await cur.fetchone()

    # -- producing ------------------------------------------------------------

    async def add(
        self,
        event_type: str,
        data: JSON,
        *,
        channel: str | None = None,
        plugin: str | None = None,
        metadata: Mapping[str, JSON] | None = None,
        max_retries: int | None = None,
        retry_delay: Seconds | None = None,
        backoff_multiplier: float | None = None,
        priority: int = 5,
        correlation_id: str | None = None,
        tags: Sequence[str] | None = None,
        delay: Seconds = 0,
        max_retry_delay: Seconds = 86400,
        retry_jitter: float = 0.0,
        dedupe_key: str | None = None,
        event_id: UUID | None = None,
        now: datetime | None = None,
    ) -> Enqueued:
        """The guide's AddToRetryQueue: enqueue one failed operation.

        `dedupe_key` (at most 200 characters, not blank): while a pending or
        processing item holds the key, add() returns that item with
        `deduplicated` True and adds nothing (its data and settings stay as
        they are); once it completes, becomes a dead letter or is
        cancelled, the key is free again.

        `event_id`: an id you choose for this event; while an item with it is
        in the queue (any status, until cleanup), add() returns that item
        with `deduplicated` True and adds nothing (enqueue_retry_item_once),
        so an add whose reply was lost (a cut connection, a failover) can be
        sent again without a duplicate. Both may be given.

        retry_delay is the wait before the first retry (then multiplied by
        backoff_multiplier per retry, capped at max_retry_delay); delay
        postpones the first attempt. Durations are seconds or timedeltas.
        Bad values raise psycopg.errors.InvalidParameterValue (22023),
        StringDataRightTruncation (22001) or CheckViolation (23514) naming
        the field, and add nothing. Under REPEATABLE READ, a key held by an
        item the transaction cannot see raises SerializationFailure (40001).
        """
        new = self.item(
            event_type,
            data,
            channel=channel,
            plugin=plugin,
            metadata=metadata,
            max_retries=max_retries,
            retry_delay=retry_delay,
            backoff_multiplier=backoff_multiplier,
            priority=priority,
            correlation_id=correlation_id,
            tags=tags,
            delay=delay,
            max_retry_delay=max_retry_delay,
            retry_jitter=retry_jitter,
            dedupe_key=dedupe_key,
        )
        params = self._enqueue_params(new, now)
        query = self._q.enqueue
        if event_id is not None:
            params["event_id"] = event_id
            query = self._q.enqueue_once
        try:
            rows = await self._all(query, params, class_row(Enqueued), times=False)
        except psycopg.DataError:
            refuse_nul([new], single=True)
            raise
        return rows[0]

    async def add_many(
        self, items: Iterable[NewItem | Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[Enqueued]:
        """Enqueue many items at once; returns one Enqueued per item, in input order.

        Items are NewItem (see `item()`) or mappings with add()'s keyword
        names; the rows are what enqueue_retry_items would store for them
        (tests/python/_async/test_add_many.py compares the two, for both
        clients). One round trip takes the clock and a mark in the id
        sequence, one binary COPY writes the rows (their ids come from the
        server: the column's default), and one more reads the ids back (the
        mark's successors, or looked up by event id when another session drew
        ids meanwhile). All or nothing: a bad item raises
        add()'s errors (from Python before its row is sent, or from the
        table's constraints), its message naming the item ('add_many: item
        N: ' or 'retryq: item N: ', N its 0-based index), and adds nothing;
        with autocommit both steps are one transaction, and in the caller's
        transaction the COPY runs in a savepoint (nothing is committed here).

        The sync RetryQueue.add_many side by side with the guide's INSERT, one
        transaction per item, at 1000 items per call on a 2-core machine
        shared with other work: 38-40x in
        `python scripts/bench_add_many.py --items 5000 --rounds 3`,
        where enqueue_retry_items' JSON array (add_many before COPY) made
        20-27x; 30-40x (median 36x over 7 invocations) in
        `scripts/bench --only enqueue`. CPU contention lowers the ratio (COPY
        is CPU-bound, a single INSERT waits for its commit).

        When any item has a `dedupe_key`, the batch is one call of
        enqueue_retry_items instead (COPY cannot skip a row): an item whose
        key a live item holds returns that item with `deduplicated` True, and
        of several items with one key the first is added (or deduplicated)
        and the later ones return it, deduplicated. Values are then judged by
        the SQL function (psycopg errors naming the key, not TypeError).
        """
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return []
        keyed = self._keyed_batch(batch)
        # With autocommit, one transaction for both steps (so one now()).
        # Otherwise the first step joins or opens the caller's transaction
        # (never committed here) and a savepoint holds the second, so that a
        # bad item undoes this call only and leaves that transaction usable.
        try:
            return await self._add_many(batch, keyed, now)
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.DataError):
                refuse_nul(batch, single=False, keyed=keyed is not None)
            if keyed is None and unnamed_refusal(exc):
                raise await self._first_refused(batch, now, exc) from None
            raise

    async def _first_refused(
        self, batch: list[NewItem | Mapping[str, Any]], now: datetime | None, exc: psycopg.Error
    ) -> psycopg.Error:
        """The table's refusal of the first item that makes a prefix of the
        batch fail, its message naming the item ('retryq: item N: '): a
        refusal of the COPY says which rule but not which row. A prefix
        fails, then so does every longer one; each probe copies a prefix in a
        transaction (a savepoint in the caller's) rolled back whatever
        happens. Only on the refusal path: about log2(len(batch)) probes."""
        lo, hi, found = 0, len(batch) - 1, exc
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                await self._copy_probe(batch[: mid + 1], now)
            except psycopg.Error as refused:
                if not unnamed_refusal(refused):
                    raise
                hi, found = mid, refused
            else:
                lo = mid + 1
        return at_item(found, hi)

    async def _copy_probe(
        self, batch: list[NewItem | Mapping[str, Any]], now: datetime | None
    ) -> None:
        async with (
            self.connection() as conn,
            conn.transaction(force_rollback=True),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            new = self._new_ids(0, now)
            await cur.execute(self._q.new_ids, new, binary=binary_reads(cur))  # a timestamptz
            clock, _ = clock_and_mark(await cur.fetchone())
            async with cur.copy(self._q.copy_in) as copy:
                copy.set_types(_sql.copy_in_types(cur))
                for row in self._rows(batch, clock, conn.info.encoding, []):
                    await copy.write_row(row)

    async def _add_many(
        self,
        batch: list[NewItem | Mapping[str, Any]],
        keyed: Jsonb | None,
        now: datetime | None,
    ) -> list[Enqueued]:
        async with (
            self.connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
            conn.transaction() if conn.autocommit else nullcontext(),
        ):
            count = 0 if keyed is not None else len(batch)
            new = self._new_ids(count, now)
            await cur.execute(self._q.new_ids, new, binary=binary_reads(cur))  # a timestamptz
            clock, mark = clock_and_mark(await cur.fetchone())
            if keyed is not None:
                async with (
                    nullcontext() if conn.autocommit else conn.transaction(),
                    conn.cursor(row_factory=class_row(Enqueued)) as keyed_cur,
                ):
                    # the caller's now, not the clock read above: a clock
                    # passed is a moved one, which only the owner may pass
                    await keyed_cur.execute(self._q.enqueue_many, {"items": keyed, "now": now})
                    return await keyed_cur.fetchall()
            async with (
                nullcontext() if conn.autocommit else conn.transaction(),
                cur.copy(self._q.copy_in) as copy,
            ):
                copy.set_types(_sql.copy_in_types(cur))
                event_ids: list[UUID] = []
                for row in self._rows(batch, clock, conn.info.encoding, event_ids):
                    await copy.write_row(row)
            # the rows' ids, drawn by the column's default after the mark
            await cur.execute(self._q.last_id, self._last_id())
            last = (await cur.fetchone() or (0,))[0]
            ids = new_ids(mark, last, len(batch))
            if ids is None:
                params = {"mark": mark, "last": last, "event_ids": event_ids}
                await cur.execute(self._q.new_ids_of, params)
                ids = found_ids((await cur.fetchone() or ([],))[0], len(batch))
        return list(map(Enqueued, ids, event_ids))

    # -- consuming ------------------------------------------------------------

    async def acquire(
        self,
        worker_id: str,
        batch_size: int = 10,
        lock_timeout: Seconds = 300,
        *,
        now: datetime | None = None,
        event_types: Sequence[str] | None = None,
        plugin_names: Sequence[str] | None = None,
    ) -> list[RetryQueueItem]:
        """Lease up to batch_size due items for lock_timeout (whole seconds, rounded up).

        `event_types` / `plugin_names` (1 to 1000 names each; "" in
        plugin_names for items without a plugin): lease only those items;
        None leases every item. An empty list, a None or blank element raises
        psycopg.errors.InvalidParameterValue (SQLSTATE 22023). Items of a
        paused key (retry_queue_pause) are never leased. Each item's
        `leased_at` names its lease: pass it back to complete, fail, snooze
        and extend_lock to fence them to this lease.

        An item Python cannot decode (event_data or event_metadata holding
        a number beyond its int-digit limit or JSON nested deeper than it
        recurses) is not returned: it is failed for good as a dead letter
        with code `retryq.undecodable_item` and the reason, without running
        (as RetryWorker does), and the rest of the batch is returned.
        """
        params = {
            "worker_id": worker_id,
            "batch_size": batch_size,
            "lock_timeout": _sql.whole_seconds(lock_timeout, "lock_timeout"),
            "now": now,
            "event_types": _sql.name_list(event_types, "event_types"),
            "plugin_names": _sql.name_list(plugin_names, "plugin_names"),
        }
        async with self._read(self._q.acquire, params, class_row(RetryQueueItem), True) as (
            conn,
            cur,
        ):
            leased, bad = await self._decoded(cur, RetryQueueItem)
            # One item Python cannot decode must not cost the batch its
            # leases: it is failed for good, as the worker fails it.
            for item, why in bad:
                await conn.execute(self._q.fail, undecodable_failure(item, worker_id, why, now))
        return leased

    async def complete(
        self,
        item_id: int,
        worker_id: str,
        *,
        now: datetime | None = None,
        leased_at: datetime | None = None,
    ) -> bool:
        """Mark an item done; False unless worker_id holds its lease.

        `leased_at` (the item's `leased_at` from acquire) fences the call to
        that lease: False if the item was leased again since, even to
        worker_id (an acknowledgement whose reply was lost must not land on
        the newer lease). The same holds for complete_many, fail, snooze,
        extend_lock and extend_locks."""
        params = {"item_id": item_id, "worker_id": worker_id, "now": now, "leased_at": leased_at}
        return bool(await self._one(self._q.complete, params))

    async def complete_many(
        self,
        item_ids: Iterable[int],
        worker_id: str,
        *,
        now: datetime | None = None,
        leased_at: Iterable[datetime] | None = None,
    ) -> int:
        """Mark many items done in one statement; returns how many were.
        `leased_at`: one grant time per id, in the same order (see complete)."""
        params = {
            "item_ids": list(item_ids),
            "worker_id": worker_id,
            "now": now,
            "leased_at": None if leased_at is None else list(leased_at),
        }
        return int(await self._one(self._q.complete_many, params))

    async def fail(
        self,
        item_id: int,
        worker_id: str,
        error: str,
        code: str | None = None,
        *,
        retryable: bool = True,
        retry_after: Seconds | None = None,
        now: datetime | None = None,
        leased_at: datetime | None = None,
    ) -> bool:
        """Record a failed attempt: back off, or dead-letter when spent or not retryable.

        `retry_after` (seconds or a timedelta) replaces the backoff for this
        retry, capped at the item's max_retry_delay and not jittered (for a
        Retry-After header, see retryq_py.retry_after_seconds). False unless
        worker_id holds the lease (`leased_at`: that lease, see complete).
        Raises psycopg.errors.InvalidParameterValue (22023, naming
        retry_after_seconds) outside 0 to 31536000 seconds.
        """
        params = {
            "item_id": item_id,
            "worker_id": worker_id,
            "error": error,
            "code": code,
            "retryable": retryable,
            "retry_after": (
                None if retry_after is None else _sql.seconds(retry_after, "retry_after")
            ),
            "now": now,
            "leased_at": leased_at,
        }
        return bool(await self._one(self._q.fail, params))

    async def snooze(
        self,
        item_id: int,
        worker_id: str,
        delay: Seconds,
        *,
        max_snoozes: int = 100,
        now: datetime | None = None,
        leased_at: datetime | None = None,
    ) -> bool:
        """Put a leased item back to pending for `delay` (seconds or a
        timedelta) without spending an attempt or recording a failure.

        The item's snoozes are counted (event_metadata["retryq_snoozes"]);
        past `max_snoozes` of them it becomes a dead letter with code
        snooze_limit instead. True when worker_id held the lease (snoozed or
        dead-lettered), False otherwise, as `complete` and `fail` (and
        `leased_at` fences it as theirs). Raises
        psycopg.errors.InvalidParameterValue (22023, naming delay_seconds or
        max_snoozes) for a delay outside 0 to 31536000 seconds or
        max_snoozes outside 0 to 10000.
        """
        params = {
            "item_id": item_id,
            "worker_id": worker_id,
            "delay": _sql.seconds(delay, "delay"),
            "max_snoozes": max_snoozes,
            "now": now,
            "leased_at": leased_at,
        }
        return bool(await self._one(self._q.snooze, params))

    async def extend_lock(
        self,
        item_id: int,
        worker_id: str,
        lock_timeout: Seconds = 300,
        *,
        now: datetime | None = None,
        leased_at: datetime | None = None,
    ) -> bool:
        """Move the lease expiry to now + lock_timeout; False when the lease
        is lost (`leased_at`: that lease, see complete; a renewal keeps it)."""
        params = {
            "item_id": item_id,
            "worker_id": worker_id,
            "lock_timeout": _sql.whole_seconds(lock_timeout, "lock_timeout"),
            "now": now,
            "leased_at": leased_at,
        }
        return bool(await self._one(self._q.extend_lock, params))

    async def extend_locks(
        self,
        item_ids: Iterable[int],
        worker_id: str,
        lock_timeout: Seconds = 300,
        leased_at: Iterable[datetime | None] | None = None,
    ) -> set[int]:
        """Heartbeat for many items in one round trip; returns the ids still
        held. `leased_at`: one grant time per id, in the same order (None
        for an item: any lease of worker_id; see complete)."""
        params = {
            "item_ids": list(item_ids),
            "worker_id": worker_id,
            "lock_timeout": _sql.whole_seconds(lock_timeout, "lock_timeout"),
            "leased_at": None if leased_at is None else list(leased_at),
        }
        return set(await self._all(self._q.extend_locks, params, scalar_row))

    async def release(
        self,
        item_ids: Iterable[int],
        worker_id: str,
        leased_at: Iterable[datetime] | None = None,
    ) -> int:
        """Give leased items back untouched (no retry spent), due at once;
        returns how many were. `leased_at`: one grant time per id, in the
        same order: only those leases are given back (see complete)."""
        params = {
            "item_ids": list(item_ids),
            "worker_id": worker_id,
            "leased_at": None if leased_at is None else list(leased_at),
        }
        return int(await self._one(self._q.release, params))

    # -- operating ------------------------------------------------------------

    async def requeue_dead_letters(
        self,
        item_ids: Iterable[int] | None = None,
        *,
        event_type: str | None = None,
        plugin: str | None = None,
        error_code: str | None = None,
        dead_before: datetime | None = None,
        now: datetime | None = None,
    ) -> int:
        """Replay dead letters with a fresh retry budget; at least one filter is required."""
        params = _sql.dead_letter_filter(item_ids, event_type, plugin, error_code, dead_before)
        params["now"] = now
        return int(await self._one(self._q.requeue_dead_letters, params))

    async def purge_dead_letters(
        self,
        item_ids: Iterable[int] | None = None,
        *,
        event_type: str | None = None,
        plugin: str | None = None,
        error_code: str | None = None,
        dead_before: datetime | None = None,
    ) -> int:
        """Delete dead letters for good (no archive); at least one filter is required."""
        params = _sql.dead_letter_filter(item_ids, event_type, plugin, error_code, dead_before)
        return int(await self._one(self._q.purge_dead_letters, params))

    async def cancel(
        self,
        item_ids: Iterable[int] | None = None,
        *,
        event_type: str | None = None,
        plugin: str | None = None,
        error_code: str | None = None,
        created_before: datetime | None = None,
        dry_run: bool = False,
        now: datetime | None = None,
    ) -> int:
        """Cancel pending and processing items for good (status 'cancelled');
        at least one filter is required (22023 naming item_ids otherwise).

        Returns how many were cancelled (with dry_run: would be, changing
        nothing). Finished items, and rows another transaction holds at that
        moment, are left alone and not counted. A leased item's holder finds
        its lease gone: its complete, fail and heartbeat return False.
        """
        params = _sql.cancel_filter(item_ids, event_type, plugin, error_code, created_before)
        params.update(dry_run=dry_run, now=now)
        return int(await self._one(self._q.cancel, params))

    async def cleanup(
        self,
        retention_days: int = 7,
        *,
        batch_size: int = 5000,
        max_rows: int | None = None,
        archive_dead_letters: bool = True,
        now: datetime | None = None,
    ) -> CleanupResult:
        """Delete items finished more than retention_days ago (dead letters archived)."""
        params = {
            "retention_days": retention_days,
            "batch_size": batch_size,
            "max_rows": max_rows,
            "archive_dead_letters": archive_dead_letters,
            "now": now,
        }
        rows = await self._all(self._q.cleanup, params, class_row(CleanupResult))
        return rows[0]

    async def try_cleanup(self, retention_days: int = 7, **kwargs: Any) -> CleanupResult | None:
        """cleanup() unless another session is running it now (then None).

        The lock and the cleanup are one statement, so the transaction around
        them never sits idle: with a pool or an autocommit connection it is
        the statement's own; otherwise it joins the caller's transaction.
        `max_rows` (with `batch_size`) bounds one call: the worker cleans in
        such slices.
        """
        params = {"retention_days": retention_days, "batch_size": 5000, "max_rows": None}
        params |= {"archive_dead_letters": True, "now": None}
        params |= kwargs
        rows = await self._all(self._q.try_cleanup, params, class_row(CleanupResult))
        return rows[0] if rows else None

    async def stats(self) -> list[StatsRow]:
        """The daz_retry_queue_stats view as typed rows."""
        return await self._all(self._q.stats, {}, class_row(StatsRow))

    async def get(self, item_id: int) -> QueueEntry | None:
        """Every column of one item (its error_history included), or None.
        A JSON column Python cannot decode (see acquire) holds the server's
        text instead, as a `retryq_py.RawJson` (a str)."""
        async with self._read(self._q.get, {"item_id": item_id}, class_row(QueueEntry), True) as (
            _,
            cur,
        ):
            good, bad = await self._decoded(cur, QueueEntry)
        # a row with a field it cannot decode, that field as the server's text
        rows = good + [row for row, _ in bad]
        return rows[0] if rows else None

    async def due(
        self,
        *,
        event_types: Sequence[str] | None = None,
        plugin_names: Sequence[str] | None = None,
    ) -> Due:
        """Whether anything is pending or processing, and seconds until the next
        is due (None when nothing pending is due ever: paused items are never
        due; an item of a key whose rate limit has no token free is due when
        the key's next token frees). event_types / plugin_names: of those
        items only, as acquire()."""
        params = {
            "event_types": _sql.name_list(event_types, "event_types"),
            "plugin_names": _sql.name_list(plugin_names, "plugin_names"),
        }
        rows = await self._all(self._q.due, params, class_row(Due))
        return rows[0]

    async def channel(self) -> str:
        """The LISTEN channel that inserts, retries and releases notify."""
        return str(await self._one(self._q.channel, {}))
