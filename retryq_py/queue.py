"""RetryQueue: one typed method per retryq SQL function.

Give it a psycopg Connection and you own the transaction: nothing is
committed for you (use autocommit, or `with conn.transaction():`). Give it a
psycopg_pool ConnectionPool and each call takes a connection and commits.

Every method that changes state takes `now=None`: the server's clock, unless
a test moves it (the functions' p_now).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg.rows import RowFactory, class_row, scalar_row
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


# add()'s keyword names -> enqueue_retry_items' keys (for add_many mappings)
_ADD_KEYS = {
    "channel": "channel_name",
    "plugin": "plugin_name",
    "metadata": "event_metadata",
    "max_retries": "max_retries",
    "retry_delay": "retry_delay_seconds",
    "backoff_multiplier": "backoff_multiplier",
    "priority": "priority",
    "correlation_id": "correlation_id",
    "tags": "tags",
    "delay": "delay_seconds",
    "max_retry_delay": "max_retry_delay_seconds",
    "retry_jitter": "retry_jitter",
}
_DURATIONS = frozenset({"retry_delay", "delay", "max_retry_delay"})


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

    def _coerce(self, item: NewItem | Mapping[str, Any]) -> NewItem:
        if isinstance(item, NewItem):
            return item
        fields = dict(item)
        try:
            event_type = fields.pop("event_type")
            data = fields.pop("data")
        except KeyError as exc:
            raise ValueError(f"add_many: every item needs {exc.args[0]!r}") from None
        return self.item(event_type, data, **fields)

    def _bulk(self, items: Iterable[NewItem | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """add_many's JSON array: enqueue_retry_items' keys, with this queue's
        defaults only where they differ from the function's own."""
        mine = {
            "max_retries": self.max_retries,
            "retry_delay_seconds": self.retry_delay,
            "backoff_multiplier": self.backoff_multiplier,
        }
        defaults = {k: v for k, v in mine.items() if v != _sql.SQL_DEFAULTS[k]}
        return [self._compact(i, defaults) for i in items]

    def _compact(
        self, item: NewItem | Mapping[str, Any], defaults: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One add_many element. The same rules as item(), without building a
        NewItem: this is the bulk path, measured in scripts/bench_add_many.py.
        """
        if isinstance(item, NewItem):
            return item.compact_params()
        try:
            out: dict[str, Any] = {"event_type": item["event_type"], "event_data": item["data"]}
        except KeyError as exc:
            raise ValueError(f"add_many: every item needs {exc.args[0]!r}") from None
        for key, value in item.items():
            if key in ("event_type", "data") or value is None:
                continue
            name = _ADD_KEYS.get(key)
            if name is None:
                raise TypeError(f"add_many: unknown item key {key!r}")
            if key in _DURATIONS:
                value = _sql.seconds(value, key)
            elif key == "metadata":
                value = dict(value)
            elif key == "tags":
                value = list(value)
            out[name] = value
        for key, value in defaults.items():
            out.setdefault(key, value)
        return out


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
        """Enqueue many items in one statement; returns their ids in input order.

        Items are NewItem (see `item()`) or mappings with add()'s keyword
        names. One call to enqueue_retry_items with a JSON array, all or
        nothing. scripts/bench_add_many.py compares it side by side with one
        INSERT per item per transaction (19x on an idle 2-core box, 20-50x
        on a busy one, where commits cost more) and with COPY (copy_many:
        faster still, about 1.1-1.4x, but it cannot return ids, so add_many
        stays on the array call).
        """
        payload = self._bulk(items)
        if not payload:
            return []
        return self._all(
            self._q.enqueue_many, {"items": _jsonb(payload), "now": now}, class_row(Enqueued)
        )

    def copy_many(self, items: Iterable[NewItem | Mapping[str, Any]]) -> int:
        """Enqueue many items with COPY; returns the count (COPY returns no ids).

        Kept for the benchmark and for loads where ids are not needed; the
        table's CHECK constraints validate every row.
        """
        count = 0
        with (
            self.connection() as conn,
            conn.cursor() as cur,
            cur.copy(self._q.copy_in) as copy,
        ):
            for raw in items:
                p = self._coerce(raw).params()
                if p["delay_seconds"]:
                    raise ValueError("copy_many: delay is not supported, use add_many")
                copy.write_row(
                    (
                        p["event_type"],
                        p["channel_name"],
                        p["plugin_name"],
                        _sql.dumps(p["event_data"]),
                        _sql.dumps(p["event_metadata"]),
                        p["max_retries"],
                        p["retry_delay_seconds"],
                        p["backoff_multiplier"],
                        p["priority"],
                        p["correlation_id"],
                        p["tags"],
                        p["max_retry_delay_seconds"],
                        p["retry_jitter"],
                    )
                )
                count += 1
        return count

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
