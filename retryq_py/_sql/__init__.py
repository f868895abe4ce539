"""Every SQL string of retryq_py, next to the typed rows it returns.

A method in queue.py, aio.py or worker.py names one constant here; the
constant names one function or view in schema/retryq.sql. Templates carry a
`{schema}` slot that `compose` fills with nothing (the connection's
search_path finds the functions) or with a quoted `schema.` prefix.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.string import BytesBinaryDumper

if TYPE_CHECKING:
    from typing_extensions import LiteralString

# JSON values as psycopg parses jsonb: dict, list, str, int, float, bool.
JSON = Any


@dataclass(frozen=True)
class RetryQueueItem:
    """A leased item, as acquire_retry_items returns it.

    The first ten fields are the integration guide's struct, by the same
    names; channel_name, plugin_name and correlation_id are '' when unset, as
    in the guide. event_data and event_metadata arrive parsed.
    """

    id: int
    event_id: UUID
    event_type: str
    channel_name: str
    plugin_name: str
    event_data: JSON
    retry_count: int
    max_retries: int
    priority: int
    correlation_id: str
    event_metadata: dict[str, JSON]
    tags: list[str]
    created_at: datetime
    next_retry_at: datetime
    locked_until: datetime
    error_message: str | None
    last_error_code: str | None

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure of this attempt makes the item a dead letter."""
        return self.retry_count >= self.max_retries


@dataclass(frozen=True)
class QueueEntry:
    """One row of daz_retry_queue, every column (for inspection)."""

    id: int
    event_id: UUID
    event_type: str
    channel_name: str | None
    plugin_name: str | None
    event_data: JSON
    event_metadata: dict[str, JSON]
    retry_count: int
    max_retries: int
    retry_delay_seconds: float
    backoff_multiplier: float
    max_retry_delay_seconds: float
    retry_jitter: float
    priority: int
    correlation_id: str | None
    tags: list[str]
    status: str
    error_message: str | None
    last_error_code: str | None
    error_history: list[dict[str, JSON]]
    created_at: datetime
    next_retry_at: datetime
    last_attempted_at: datetime | None
    completed_at: datetime | None
    dead_lettered_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None


class Enqueued(NamedTuple):
    """What add returns: unpacks as `id, event_id = queue.add(...)`."""

    id: int
    event_id: UUID


@dataclass(frozen=True)
class StatsRow:
    """One row of the daz_retry_queue_stats view."""

    status: str
    event_type: str
    plugin_name: str | None
    item_count: int
    avg_retry_count: float
    max_retry_count: int
    oldest_created_at: datetime
    newest_created_at: datetime
    leased_count: int


@dataclass(frozen=True)
class CleanupResult:
    deleted_count: int
    archived_count: int


@dataclass(frozen=True)
class Due:
    """Whether any item is pending or processing; seconds until the next pending one is due."""

    active: bool
    seconds_until_due: float | None


# --- statements ------------------------------------------------------------

# The integration guide's INSERT, verbatim (positional, as Go sends it).
GUIDE_INSERT: LiteralString = """
        INSERT INTO daz_retry_queue (
            event_type, channel_name, plugin_name, event_data,
            event_metadata, max_retries, retry_delay_seconds,
            backoff_multiplier, priority, correlation_id, tags
        ) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        RETURNING id, event_id;
    """

CHANNEL: LiteralString = "SELECT {schema}retry_queue_channel()"

ENQUEUE: LiteralString = """
SELECT id, event_id FROM {schema}enqueue_retry_item(
    p_event_type => %(event_type)s,
    p_event_data => %(event_data)s,
    p_channel_name => %(channel_name)s,
    p_plugin_name => %(plugin_name)s,
    p_event_metadata => %(event_metadata)s,
    p_max_retries => %(max_retries)s,
    p_retry_delay_seconds => %(retry_delay_seconds)s,
    p_backoff_multiplier => %(backoff_multiplier)s,
    p_priority => %(priority)s,
    p_correlation_id => %(correlation_id)s,
    p_tags => %(tags)s::text[],
    p_delay_seconds => %(delay_seconds)s,
    p_max_retry_delay_seconds => %(max_retry_delay_seconds)s,
    p_retry_jitter => %(retry_jitter)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

# add_many, step 1: the ids for n new rows and the clock of this transaction.
# nextval is volatile and this backend's values only grow, so the array is in
# ascending order, which is add_many's input order. The sequence is named by a
# parameter (a regclass literal) so that the schema need not be spliced into a
# string.
NEW_IDS: LiteralString = """
SELECT
    coalesce(%(now)s::timestamptz, now()) AS now,
    ARRAY(
        SELECT nextval(%(sequence)s::regclass) FROM generate_series(1, %(n)s)
    ) AS ids
"""

# add_many, step 2: the rows, every value explicit (enqueue_retry_items' rules
# applied in Python, see _QueueBase._rows); the table's CHECK constraints still
# judge each row, and one failing row fails the whole COPY. The columns left out
# (retry_count, status, error_history, ...) take the table's defaults, as they
# do in enqueue_retry_items' INSERT.
COPY_IN: LiteralString = """
COPY {schema}daz_retry_queue (
    id, event_id, event_type, channel_name, plugin_name, event_data,
    event_metadata, max_retries, retry_delay_seconds, backoff_multiplier,
    max_retry_delay_seconds, retry_jitter, priority, correlation_id, tags,
    created_at, next_retry_at
) FROM STDIN (FORMAT BINARY)
"""

ACQUIRE: LiteralString = """
SELECT
    id, event_id, event_type, channel_name, plugin_name, event_data,
    retry_count, max_retries, priority, correlation_id, event_metadata, tags,
    created_at, next_retry_at, locked_until, error_message, last_error_code
FROM {schema}acquire_retry_items(
    p_worker_id => %(worker_id)s,
    p_batch_size => %(batch_size)s,
    p_lock_timeout_seconds => %(lock_timeout)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

COMPLETE: LiteralString = """
SELECT {schema}complete_retry_item(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

COMPLETE_MANY: LiteralString = """
SELECT {schema}complete_retry_items(
    p_item_ids => %(item_ids)s::bigint[],
    p_worker_id => %(worker_id)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

# Which of these items a complete_retry_items call at `at` completed: the
# others were no longer leased to the caller.
COMPLETED_AT: LiteralString = """
SELECT q.id
FROM {schema}daz_retry_queue AS q
WHERE q.id = ANY(%(item_ids)s::bigint[])
    AND q.status = 'completed'
    AND q.completed_at = %(at)s
"""

FAIL: LiteralString = """
SELECT {schema}fail_retry_item(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_error_msg => %(error)s,
    p_error_code => %(code)s,
    p_retryable => %(retryable)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

EXTEND_LOCK: LiteralString = """
SELECT {schema}extend_retry_lock(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_lock_timeout_seconds => %(lock_timeout)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

# One round trip for the worker's heartbeat: returns the ids still held.
EXTEND_LOCKS: LiteralString = """
SELECT i.id FROM unnest(%(item_ids)s::bigint[]) AS i (id)
WHERE {schema}extend_retry_lock(
    p_item_id => i.id,
    p_worker_id => %(worker_id)s,
    p_lock_timeout_seconds => %(lock_timeout)s
)
"""

RELEASE: LiteralString = """
SELECT {schema}release_retry_items(
    p_item_ids => %(item_ids)s::bigint[],
    p_worker_id => %(worker_id)s
)
"""

REQUEUE_DEAD_LETTERS: LiteralString = """
SELECT {schema}requeue_dead_letter_items(
    p_item_ids => %(item_ids)s::bigint[],
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_error_code => %(error_code)s,
    p_dead_before => %(dead_before)s::timestamptz,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

PURGE_DEAD_LETTERS: LiteralString = """
SELECT {schema}purge_dead_letter_items(
    p_item_ids => %(item_ids)s::bigint[],
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_error_code => %(error_code)s,
    p_dead_before => %(dead_before)s::timestamptz
)
"""

CLEANUP: LiteralString = """
SELECT deleted_count, archived_count FROM {schema}cleanup_retry_queue(
    p_retention_days => %(retention_days)s,
    p_batch_size => %(batch_size)s,
    p_max_rows => %(max_rows)s::bigint,
    p_archive_dead_letters => %(archive_dead_letters)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

# Cleanup runs only where this transaction-scoped lock is free, so workers
# sharing a queue take turns; the key is derived from the queue's channel.
TRY_CLEANUP_LOCK: LiteralString = (
    "SELECT pg_try_advisory_xact_lock(hashtext('retryq.cleanup:' || {schema}retry_queue_channel()))"
)

STATS: LiteralString = """
SELECT
    status, event_type, plugin_name, item_count, avg_retry_count,
    max_retry_count, oldest_created_at, newest_created_at, leased_count
FROM {schema}daz_retry_queue_stats
ORDER BY status, event_type, plugin_name
"""

# Columns by name, so that a column added later does not break QueueEntry.
GET: LiteralString = """
SELECT
    id, event_id, event_type, channel_name, plugin_name, event_data,
    event_metadata, retry_count, max_retries, retry_delay_seconds,
    backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
    correlation_id, tags, status, error_message, last_error_code,
    error_history, created_at, next_retry_at, last_attempted_at,
    completed_at, dead_lettered_at, locked_by, locked_until
FROM {schema}daz_retry_queue
WHERE id = %(item_id)s
"""

# For a worker deciding how long to sleep: whether any item is active, and
# seconds (by the server's clock) until the earliest pending item is due. One
# short index scan per priority, as acquire does. Expiring leases are left
# out: finding them would scan every processing row; the poll covers them.
DUE: LiteralString = """
SELECT
    EXISTS (
        SELECT 1 FROM {schema}daz_retry_queue AS q
        WHERE q.status IN ('pending', 'processing')
    ) AS active,
    extract(epoch FROM (
        SELECT min(n.next_retry_at)
        FROM generate_series(1, 10) AS p (priority)
        CROSS JOIN LATERAL (
            SELECT q.next_retry_at FROM {schema}daz_retry_queue AS q
            WHERE q.status = 'pending' AND q.priority = p.priority
            ORDER BY q.next_retry_at
            LIMIT 1
        ) AS n
    ) - now())::double precision AS seconds_until_due
"""


def compose(template: LiteralString, schema: str | None) -> sql.Composed:
    """Fill a template's `{schema}` slot."""
    prefix = sql.SQL("") if schema is None else sql.SQL("{}.").format(sql.Identifier(schema))
    return sql.SQL(template).format(schema=prefix)


class Statements:
    """The statements composed once for one schema."""

    def __init__(self, schema: str | None) -> None:
        self.schema = schema
        self.sequence = (
            "daz_retry_queue_id_seq"
            if schema is None
            else sql.Identifier(schema, "daz_retry_queue_id_seq").as_string(None)
        )
        self.channel = compose(CHANNEL, schema)
        self.enqueue = compose(ENQUEUE, schema)
        self.new_ids = compose(NEW_IDS, schema)
        self.copy_in = compose(COPY_IN, schema)
        self.acquire = compose(ACQUIRE, schema)
        self.complete = compose(COMPLETE, schema)
        self.complete_many = compose(COMPLETE_MANY, schema)
        self.completed_at = compose(COMPLETED_AT, schema)
        self.fail = compose(FAIL, schema)
        self.extend_lock = compose(EXTEND_LOCK, schema)
        self.extend_locks = compose(EXTEND_LOCKS, schema)
        self.release = compose(RELEASE, schema)
        self.requeue_dead_letters = compose(REQUEUE_DEAD_LETTERS, schema)
        self.purge_dead_letters = compose(PURGE_DEAD_LETTERS, schema)
        self.cleanup = compose(CLEANUP, schema)
        self.try_cleanup_lock = compose(TRY_CLEANUP_LOCK, schema)
        self.stats = compose(STATS, schema)
        self.get = compose(GET, schema)
        self.due = compose(DUE, schema)


# --- parameters -------------------------------------------------------------

Seconds = float | int | timedelta


def seconds(value: Seconds, field: str) -> float:
    """A duration given as seconds or a timedelta, in seconds."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{field}: expected seconds or a timedelta, got {value!r}")
    return float(value)


def whole_seconds(value: Seconds, field: str) -> int:
    """Lease lengths are whole seconds in SQL: round up, never down to zero."""
    s = seconds(value, field)
    whole = int(s)
    return whole + 1 if whole < s else whole


def dead_letter_filter(
    item_ids: Iterable[int] | None,
    event_type: str | None,
    plugin: str | None,
    error_code: str | None,
    dead_before: datetime | None,
) -> dict[str, Any]:
    """The filters requeue_dead_letter_items and purge_dead_letter_items share."""
    return {
        "item_ids": None if item_ids is None else list(item_ids),
        "event_type": event_type,
        "plugin_name": plugin,
        "error_code": error_code,
        "dead_before": dead_before,
    }


def json_default(value: Any) -> Any:
    """Make the usual non-JSON Python values storable (for event data and params)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON: {value!r}")


# One encoder for every call: json.dumps with non-default arguments builds a
# new JSONEncoder each time, which costs as much as encoding a small object.
_ENCODER = json.JSONEncoder(default=json_default, separators=(",", ":"))


def dumps(value: Any) -> str:
    return _ENCODER.encode(value)


# --- add_many's COPY rows -----------------------------------------------------
# COPY_IN is binary: each value goes in its type's wire format, and no type oid
# goes with it (the server reads each field as its column's type), so
# Copy.set_types only picks the dumper that writes each field. Three columns
# arrive already encoded by _QueueBase._rows, which is cheaper than psycopg's
# dumpers for them (they run in Python for every value):
# - event_id (uuid): its 16 bytes, declared bytea, whose dumper passes bytes
#   through;
# - event_data, event_metadata (jsonb): the version byte 1 and the JSON text,
#   declared text, whose dumper encodes the str (ASCII: the JSON encoder
#   escapes the rest, so the client encoding does not matter);
# - tags (text[]): the array format, built once per distinct tag list in a
#   call, declared bytea.

# COPY_IN's columns, in order.
COPY_TYPES: tuple[str, ...] = (
    ("int8", "bytea", "text", "text", "text", "text", "text", "int4")
    + ("float8",) * 4
    + ("int4", "text", "bytea", "timestamptz", "timestamptz")
)


def copy_in_types(cursor: psycopg.Cursor[Any] | psycopg.AsyncCursor[Any]) -> Sequence[str]:
    """COPY_TYPES, for Copy.set_types on this cursor. The bytea dumper found by
    type is the DB-API Binary one (Python); bytes' own dumper (C with
    psycopg[binary]) is registered for bytea on this cursor only."""
    cursor.adapters.register_dumper(None, BytesBinaryDumper)
    return COPY_TYPES


JSONB_EMPTY_OBJECT = "\x01{}"


def jsonb_encoder() -> Callable[[Any], str]:
    """A function giving jsonb's binary format (as a str: the version byte,
    then dumps(value)), for one add_many call.

    JSONEncoder.encode builds json's C encoder anew for every value, which
    costs as much as encoding a small object; this builds it once per call
    (with the arguments encode would pass). Its circular-reference markers
    are only reliable until an encoding fails, which ends the call anyway.
    """
    make: Any = getattr(json.encoder, "c_make_encoder", None)  # _json's, not in typeshed
    plain = lambda value: "\x01" + _ENCODER.encode(value)  # noqa: E731
    if make is None:  # no C accelerator: the plain encoder
        return plain
    try:
        encode = make(
            {},
            json_default,
            json.encoder.encode_basestring_ascii,
            None,
            _ENCODER.key_separator,
            _ENCODER.item_separator,
            False,
            False,
            True,
        )
    except TypeError:  # an interpreter whose internal signature differs
        return plain
    join = "".join

    def jsonb(value: Any) -> str:
        return "\x01" + join(encode(value, 0))

    return jsonb


_TEXT = psycopg.adapters.types["text"].oid
EMPTY_TEXT_ARRAY = struct.pack("!iiI", 0, 0, _TEXT)


def text_array(values: Iterable[str | None], encoding: str) -> bytes:
    """text[]'s binary wire format: one dimension (none when empty), the element
    type, then each element as a length and its bytes (-1 for NULL)."""
    parts = [b""]
    has_null = 0
    for value in values:
        if value is None:
            parts.append(b"\xff\xff\xff\xff")
            has_null = 1
        elif isinstance(value, str):
            data = value.encode(encoding)
            parts.append(len(data).to_bytes(4, "big") + data)
        else:
            raise TypeError(f"tags: expected strings, got {value!r}")
    if len(parts) == 1:
        return EMPTY_TEXT_ARRAY
    parts[0] = struct.pack("!iiIii", 1, has_null, _TEXT, len(parts) - 1, 1)
    return b"".join(parts)


def uuid_loader() -> Callable[[bytes], UUID]:
    """psycopg's own loader of uuid's binary format (16 bytes to a UUID): with
    psycopg[binary] it is C, several times faster than UUID(bytes=...)."""
    oid = psycopg.adapters.types["uuid"].oid
    loader = psycopg.adapters.get_loader(oid, psycopg.pq.Format.BINARY)
    if loader is None:  # not with psycopg's default adapters
        return lambda data: UUID(bytes=data)
    load: Callable[[bytes], UUID] = loader(oid, None).load
    return load


def random_uuids(count: int) -> bytes:
    """count version-4 UUIDs (as uuid4 makes them), 16 bytes each, in one
    os.urandom call."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
    return bytes(raw)


@dataclass(frozen=True)
class NewItem:
    """One item for add_many; the fields and defaults of RetryQueue.add."""

    event_type: str
    data: JSON
    channel: str | None = None
    plugin: str | None = None
    metadata: Mapping[str, JSON] | None = None
    max_retries: int = 3
    retry_delay: Seconds = 60
    backoff_multiplier: float = 2.0
    priority: int = 5
    correlation_id: str | None = None
    tags: Sequence[str] | None = None
    delay: Seconds = 0
    max_retry_delay: Seconds = 86400
    retry_jitter: float = 0.0

    def params(self) -> dict[str, Any]:
        """The enqueue function's parameters, by name without the p_ prefix."""
        return {
            "event_type": self.event_type,
            "event_data": self.data,
            "channel_name": self.channel,
            "plugin_name": self.plugin,
            "event_metadata": dict(self.metadata) if self.metadata is not None else {},
            "max_retries": self.max_retries,
            "retry_delay_seconds": seconds(self.retry_delay, "retry_delay"),
            "backoff_multiplier": self.backoff_multiplier,
            "priority": self.priority,
            "correlation_id": self.correlation_id,
            "tags": list(self.tags) if self.tags is not None else [],
            "delay_seconds": seconds(self.delay, "delay"),
            "max_retry_delay_seconds": seconds(self.max_retry_delay, "max_retry_delay"),
            "retry_jitter": self.retry_jitter,
        }
