"""RetryQueue: one typed method per retryq SQL function.

Give it a psycopg Connection and you own the transaction: nothing is
committed for you (use autocommit, or `with conn.transaction():`). Give it a
psycopg_pool ConnectionPool and each call takes a connection and commits.

Every method that changes state takes `now=None`: the server's clock, unless
a test moves it (the functions' p_now).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import psycopg
from psycopg import errors as pgerr
from psycopg.rows import RowFactory, class_row, scalar_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from retryq_py import _sql
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

if TYPE_CHECKING:
    from psycopg import sql

    from retryq_py.config import RetryConfig

T = TypeVar("T")
Source = psycopg.Connection[Any] | ConnectionPool[Any]


# add()'s keywords, which add_many's mapping items (and `retryq enqueue`'s
# JSON lines) use: the order of _rows' unpacking.
ADD_KEYS = (
    "event_type",
    "data",
    "channel",
    "plugin",
    "metadata",
    "max_retries",
    "retry_delay",
    "backoff_multiplier",
    "priority",
    "correlation_id",
    "tags",
    "delay",
    "max_retry_delay",
    "retry_jitter",
)
_KEYS = frozenset(ADD_KEYS)
_ABSENT = dict.fromkeys(ADD_KEYS)
_of_new_item = attrgetter(*ADD_KEYS)
_of_mapping = itemgetter(*ADD_KEYS)
_INT4_MIN, _INT4_MAX = -(2**31), 2**31 - 1
# enqueue_retry_items' bound on delay_seconds (the table has no delay column to check)
_MAX_DELAY = 31536000


def _jsonb(value: Any) -> Jsonb:
    return Jsonb(value, dumps=_sql.dumps)


class _QueueBase:
    """What RetryQueue and AsyncRetryQueue share: defaults and item building."""

    def __init__(self, *, schema: str | None, config: RetryConfig | None) -> None:
        self.schema = schema
        self._q = _sql.Statements(schema)
        self.max_retries = config.max_retries if config else 3
        self.retry_delay: float = config.initial_delay if config else 60.0
        self.backoff_multiplier = config.backoff_multiplier if config else 2.0

    def item(
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
    ) -> NewItem:
        """A NewItem with this queue's defaults, for add_many."""
        return NewItem(
            event_type=event_type,
            data=data,
            channel=channel,
            plugin=plugin,
            metadata=metadata,
            max_retries=self.max_retries if max_retries is None else max_retries,
            retry_delay=self.retry_delay if retry_delay is None else retry_delay,
            backoff_multiplier=(
                self.backoff_multiplier if backoff_multiplier is None else backoff_multiplier
            ),
            priority=priority,
            correlation_id=correlation_id,
            tags=tags,
            delay=delay,
            max_retry_delay=max_retry_delay,
            retry_jitter=retry_jitter,
        )

    def _new_ids(self, count: int, now: datetime | None) -> dict[str, Any]:
        return {"sequence": self._q.sequence, "n": count, "now": now}

    def _rows(
        self,
        items: Sequence[NewItem | Mapping[str, Any]],
        ids: Sequence[int],
        now: datetime,
        encoding: str,
        event_ids: list[UUID],
    ) -> Iterator[tuple[Any, ...]]:
        """add_many's COPY rows (_sql.COPY_IN's columns), one per item, with
        what enqueue_retry_items would store: the same defaults (this queue's
        where it has its own), created_at now, next_retry_at now + delay, and a
        new random event_id, appended to event_ids.

        Items are checked here, before their row is sent: a missing or unknown
        key (ValueError, TypeError), a delay out of range (InvalidParameterValue
        naming delay_seconds, as enqueue_retry_items raises it) and a value of
        the wrong type (TypeError naming the field; binary COPY would turn a
        bool or an int beyond 32 bits into another number); the table's
        constraints judge the rest on the server. This is the bulk path,
        measured in scripts/bench_add_many.py: values go straight from the item
        to the row, with a fast path for values of the expected type.
        """
        max_retries_default = self.max_retries
        retry_delay_default = _sql.seconds(self.retry_delay, "retry_delay")
        backoff_default = self.backoff_multiplier
        # next_retry_at is an instant: add the delay in UTC, not in a local zone
        # whose clocks may change within it (timestamptz + interval in seconds)
        now = now.astimezone(timezone.utc)
        tags_seen: dict[tuple[Any, ...], bytes] = {}
        jsonb = _sql.jsonb_encoder()
        uuids = _sql.random_uuids(len(items))
        load_uuid = _sql.uuid_loader()
        no_tags, no_metadata = _sql.EMPTY_TEXT_ARRAY, _sql.JSONB_EMPTY_OBJECT
        for item, item_id, at in zip(items, ids, range(0, 16 * len(items), 16), strict=True):
            if isinstance(item, NewItem):
                values = _of_new_item(item)
            else:
                if not item.keys() <= _KEYS:
                    unknown = next(k for k in item if k not in _KEYS)
                    raise TypeError(f"add_many: unknown item key {unknown!r}")
                values = _of_mapping({**_ABSENT, **item})
                if values[0] is None or values[1] is None:
                    for required in ("event_type", "data"):
                        if required not in item:
                            raise ValueError(f"add_many: every item needs {required!r}")
            (
                event_type,
                data,
                channel,
                plugin,
                metadata,
                max_retries,
                retry_delay,
                backoff_multiplier,
                priority,
                correlation_id,
                tags,
                delay,
                max_retry_delay,
                retry_jitter,
            ) = values
            # absent and None take the default, as in add(); the full check
            # only for a value not of the expected type
            if type(event_type) is not str and event_type is not None:
                event_type = _text(event_type, "event_type")
            if type(channel) is not str and channel is not None:
                channel = _text(channel, "channel")
            if type(plugin) is not str and plugin is not None:
                plugin = _text(plugin, "plugin")
            if type(correlation_id) is not str and correlation_id is not None:
                correlation_id = _text(correlation_id, "correlation_id")
            if max_retries is None:
                max_retries = max_retries_default
            elif type(max_retries) is not int or not _INT4_MIN <= max_retries <= _INT4_MAX:
                max_retries = _int4(max_retries, "max_retries")
            if priority is None:
                priority = 5
            elif type(priority) is not int or not _INT4_MIN <= priority <= _INT4_MAX:
                priority = _int4(priority, "priority")
            if retry_delay is None:
                retry_delay = retry_delay_default
            elif type(retry_delay) is not float:
                retry_delay = _sql.seconds(retry_delay, "retry_delay")
            if max_retry_delay is None:
                max_retry_delay = 86400.0
            elif type(max_retry_delay) is not float:
                max_retry_delay = _sql.seconds(max_retry_delay, "max_retry_delay")
            if backoff_multiplier is None:
                backoff_multiplier = backoff_default
            elif type(backoff_multiplier) is not float:
                backoff_multiplier = _number(backoff_multiplier, "backoff_multiplier")
            if retry_jitter is None:
                retry_jitter = 0.0
            elif type(retry_jitter) is not float:
                retry_jitter = _number(retry_jitter, "retry_jitter")
            if delay is None:
                due = now
            else:
                seconds = delay if type(delay) is float else _sql.seconds(delay, "delay")
                if not 0 <= seconds <= _MAX_DELAY:  # NaN too
                    raise pgerr.InvalidParameterValue(
                        f"retryq: invalid delay_seconds: must be between 0 and {_MAX_DELAY}"
                    )
                # make_interval(secs => s) rounds s * 1e6 to whole microseconds, half to even
                due = now + timedelta(microseconds=round(seconds * 1_000_000)) if seconds else now
            if tags is None:
                tag_array = no_tags
            else:
                tag_key = tags if type(tags) is tuple else tuple(tags)
                try:
                    tag_array = tags_seen[tag_key]
                except KeyError:
                    tag_array = tags_seen[tag_key] = _sql.text_array(tag_key, encoding)
                except TypeError:  # unhashable: not a string
                    tag_array = _sql.text_array(tag_key, encoding)
            event_id = uuids[at : at + 16]
            event_ids.append(load_uuid(event_id))
            yield (
                item_id,
                event_id,
                event_type,
                channel,
                plugin,
                None if data is None else jsonb(data),  # NULL: the NOT NULL error, as before
                no_metadata
                if metadata is None
                else jsonb(metadata if type(metadata) is dict else dict(metadata)),
                max_retries,
                retry_delay,
                backoff_multiplier,
                max_retry_delay,
                retry_jitter,
                priority,
                correlation_id,
                tag_array,
                now,
                due,
            )


def _clock_and_ids(row: Any) -> tuple[datetime, list[int]]:
    """NEW_IDS' one row."""
    clock, ids = row
    return clock, ids


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field}: expected a string, got {value!r}")
    return value


def _int4(value: Any, field: str) -> int:
    """An integer column's value. Binary COPY would send a bool as 0 or 1 and
    keep only the low 32 bits of a larger int: refuse both."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field}: expected an integer, got {value!r}")
    if not _INT4_MIN <= value <= _INT4_MAX:
        raise pgerr.NumericValueOutOfRange(
            f"retryq: invalid {field}: {value} is out of range for type integer"
        )
    return int(value)


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field}: expected a number, got {value!r}")
    return float(value)


class RetryQueue(_QueueBase):
    """The queue in one PostgreSQL database (and schema).

    `schema`: where retryq is installed; None lets the connection's
    search_path find it. `config`: takes the add() defaults (max_retries,
    initial_delay, backoff_multiplier) from a loaded configuration.
    """

    def __init__(
        self,
        source: Source,
        *,
        schema: str | None = None,
        config: RetryConfig | None = None,
    ) -> None:
        super().__init__(schema=schema, config=config)
        self.source = source

    # -- plumbing -------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The caller's connection, or one from the pool committed on success."""
        if isinstance(self.source, ConnectionPool):
            with self.source.connection() as conn:
                yield conn
        else:
            yield self.source

    def _all(self, query: sql.Composed, params: Mapping[str, Any], rows: RowFactory[T]) -> list[T]:
        with self.connection() as conn, conn.cursor(row_factory=rows) as cur:
            cur.execute(query, params)
            return cur.fetchall()

    def _one(self, query: sql.Composed, params: Mapping[str, Any]) -> Any:
        with self.connection() as conn, conn.cursor(row_factory=scalar_row) as cur:
            cur.execute(query, params)
            return cur.fetchone()

    # -- producing ------------------------------------------------------------

    def add(
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
        now: datetime | None = None,
    ) -> Enqueued:
        """The guide's AddToRetryQueue: enqueue one failed operation.

        retry_delay is the wait before the first retry (then multiplied by
        backoff_multiplier per retry, capped at max_retry_delay); delay
        postpones the first attempt. Durations are seconds or timedeltas.
        Bad values raise psycopg.errors.InvalidParameterValue (22023) or
        CheckViolation (23514) naming the field, and add nothing.
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
        )
        params = new.params()
        params["event_data"] = _jsonb(params["event_data"])
        params["event_metadata"] = _jsonb(params["event_metadata"])
        params["now"] = now
        rows = self._all(self._q.enqueue, params, class_row(Enqueued))
        return rows[0]

    def add_many(
        self, items: Iterable[NewItem | Mapping[str, Any]], *, now: datetime | None = None
    ) -> list[Enqueued]:
        """Enqueue many items at once; returns their ids in input order.

        Items are NewItem (see `item()`) or mappings with add()'s keyword
        names; the rows are what enqueue_retry_items would store for them
        (tests/test_py_add_many.py compares the two). One round trip takes the
        ids (nextval) and the clock, then one binary COPY writes the rows. All
        or nothing: a bad item raises add()'s errors (from Python before its
        row is sent, or from the table's constraints) and adds nothing; with
        autocommit both steps are one transaction, and in the caller's
        transaction the COPY runs in a savepoint (nothing is committed here).

        Side by side with the guide's INSERT, one transaction per item, at
        1000 items per call on a 2-core machine shared with other work:
        38-40x in `python scripts/bench_add_many.py --items 5000 --rounds 3`,
        where enqueue_retry_items' JSON array (add_many before COPY) made
        20-27x; 30-40x (median 36x over 7 invocations) in
        `scripts/bench --only enqueue`. CPU contention lowers the ratio (COPY
        is CPU-bound, a single INSERT waits for its commit).
        """
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return []
        # With autocommit, one transaction for both steps (so one now()).
        # Otherwise the first step joins or opens the caller's transaction
        # (never committed here) and a savepoint holds the COPY, so that a bad
        # item undoes this call only and leaves that transaction usable.
        with (
            self.connection() as conn,
            conn.cursor(row_factory=tuple_row) as cur,
            conn.transaction() if conn.autocommit else nullcontext(),
        ):
            cur.execute(self._q.new_ids, self._new_ids(len(batch), now))
            clock, ids = _clock_and_ids(cur.fetchone())
            with (
                nullcontext() if conn.autocommit else conn.transaction(),
                cur.copy(self._q.copy_in) as copy,
            ):
                copy.set_types(_sql.copy_in_types(cur))
                event_ids: list[UUID] = []
                for row in self._rows(batch, ids, clock, conn.info.encoding, event_ids):
                    copy.write_row(row)
        return list(map(Enqueued, ids, event_ids))

    # -- consuming ------------------------------------------------------------

    def acquire(
        self,
        worker_id: str,
        batch_size: int = 10,
        lock_timeout: Seconds = 300,
        *,
        now: datetime | None = None,
    ) -> list[RetryQueueItem]:
        """Lease up to batch_size due items for lock_timeout (whole seconds, rounded up)."""
        return self._all(
            self._q.acquire,
            {
                "worker_id": worker_id,
                "batch_size": batch_size,
                "lock_timeout": _sql.whole_seconds(lock_timeout, "lock_timeout"),
                "now": now,
            },
            class_row(RetryQueueItem),
        )

    def complete(self, item_id: int, worker_id: str, *, now: datetime | None = None) -> bool:
        """Mark an item done; False unless worker_id holds its lease."""
        params = {"item_id": item_id, "worker_id": worker_id, "now": now}
        return bool(self._one(self._q.complete, params))

    def complete_many(
        self, item_ids: Iterable[int], worker_id: str, *, now: datetime | None = None
    ) -> int:
        """Mark many items done in one statement; returns how many were."""
        params = {"item_ids": list(item_ids), "worker_id": worker_id, "now": now}
        return int(self._one(self._q.complete_many, params))

    def fail(
        self,
        item_id: int,
        worker_id: str,
        error: str,
        code: str | None = None,
        *,
        retryable: bool = True,
        now: datetime | None = None,
    ) -> bool:
        """Record a failed attempt: back off, or dead-letter when spent or not retryable."""
        params = {
            "item_id": item_id,
            "worker_id": worker_id,
            "error": error,
            "code": code,
            "retryable": retryable,
            "now": now,
        }
        return bool(self._one(self._q.fail, params))

    def extend_lock(
        self,
        item_id: int,
        worker_id: str,
        lock_timeout: Seconds = 300,
        *,
        now: datetime | None = None,
    ) -> bool:
        """Move the lease expiry to now + lock_timeout; False when the lease is lost."""
        params = {
            "item_id": item_id,
            "worker_id": worker_id,
            "lock_timeout": _sql.whole_seconds(lock_timeout, "lock_timeout"),
            "now": now,
        }
        return bool(self._one(self._q.extend_lock, params))

    def extend_locks(
        self, item_ids: Iterable[int], worker_id: str, lock_timeout: Seconds = 300
    ) -> set[int]:
        """Heartbeat for many items in one round trip; returns the ids still held."""
        params = {
            "item_ids": list(item_ids),
            "worker_id": worker_id,
            "lock_timeout": _sql.whole_seconds(lock_timeout, "lock_timeout"),
        }
        return set(self._all(self._q.extend_locks, params, scalar_row))

    def release(self, item_ids: Iterable[int], worker_id: str) -> int:
        """Give leased items back untouched (no retry spent), due at once."""
        params = {"item_ids": list(item_ids), "worker_id": worker_id}
        return int(self._one(self._q.release, params))

    # -- operating ------------------------------------------------------------

    def requeue_dead_letters(
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
        return int(self._one(self._q.requeue_dead_letters, params))

    def purge_dead_letters(
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
        return int(self._one(self._q.purge_dead_letters, params))

    def cleanup(
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
        return self._all(self._q.cleanup, params, class_row(CleanupResult))[0]

    def try_cleanup(self, retention_days: int = 7, **kwargs: Any) -> CleanupResult | None:
        """cleanup() unless another session is running it now (then None).

        Needs a transaction around the lock and the cleanup: with a pool that
        is the pooled connection's; with a Connection, one is opened here.
        """
        params = {"retention_days": retention_days, "batch_size": 5000, "max_rows": None}
        params |= {"archive_dead_letters": True, "now": None}
        params |= kwargs
        with self.connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(self._q.try_cleanup_lock)
            got = cur.fetchone()
            if not (got and got[0]):
                return None
            with conn.cursor(row_factory=class_row(CleanupResult)) as rows:
                rows.execute(self._q.cleanup, params)
                return rows.fetchall()[0]

    def stats(self) -> list[StatsRow]:
        """The daz_retry_queue_stats view as typed rows."""
        return self._all(self._q.stats, {}, class_row(StatsRow))

    def get(self, item_id: int) -> QueueEntry | None:
        """Every column of one item (its error_history included), or None."""
        rows = self._all(self._q.get, {"item_id": item_id}, class_row(QueueEntry))
        return rows[0] if rows else None

    def due(self) -> Due:
        """Whether anything is pending or processing, and seconds until the next is due."""
        rows = self._all(self._q.due, {}, class_row(Due))
        return rows[0]

    def channel(self) -> str:
        """The LISTEN channel that inserts, retries and releases notify."""
        return str(self._one(self._q.channel, {}))
