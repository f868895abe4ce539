"""The queue client's SQL: one template per function or view of
sql/functions/, and Statements, the templates composed for one schema.

Templates carry a `{schema}` slot that `compose` fills with nothing (the
connection's search_path finds the functions) or with a quoted `schema.` prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg import sql

if TYPE_CHECKING:
    from typing_extensions import LiteralString

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
SELECT id, event_id, deduplicated FROM {schema}enqueue_retry_item(
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
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_dedupe_key => %(dedupe_key)s
)
"""

# add(event_id=...): the same, once per event id (see enqueue_retry_item_once);
# an item that was already there (by event id or by dedupe key) is deduplicated.
ENQUEUE_ONCE: LiteralString = """
SELECT id, event_id, NOT inserted AS deduplicated FROM {schema}enqueue_retry_item_once(
    p_event_id => %(event_id)s,
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
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_dedupe_key => %(dedupe_key)s
)
"""

# add_many of items with dedupe keys: one call of enqueue_retry_items, which
# applies the keys' rule (see AsyncRetryQueue.add_many).
ENQUEUE_MANY: LiteralString = """
SELECT id, event_id, deduplicated FROM {schema}enqueue_retry_items(
    p_items => %(items)s,
    p_now => coalesce(%(now)s::timestamptz, now())
)
"""

# add_many, step 1: the clock for the new rows and a mark in the id sequence.
# The rows take their ids from the column's default (a producer may not name
# an id: ids come from the server), each nextval of this backend greater than
# the one before, so the mark bounds them from below and they ascend in input
# order. The clock is this statement's, not the transaction's start (a row's
# created_at must lie within a minute before the COPY, see
# _retryq_insert_clock). The sequence is named by a parameter (a regclass
# literal) so that the schema need not be spliced into a string.
NEW_IDS: LiteralString = """
SELECT
    coalesce(%(now)s::timestamptz, statement_timestamp()) AS now,
    CASE WHEN %(n)s > 0 THEN nextval(%(sequence)s::regclass) END AS mark
"""

# add_many, step 2: the rows, every value explicit but id (enqueue_retry_items'
# rules applied in Python, see QueueBase._rows in retryq_py/_queue_base.py);
# the table's CHECK constraints still judge each row, and one failing row fails
# the whole COPY. The columns left out (id, retry_count, status, ...) take the
# table's defaults, as they do in enqueue_retry_items' INSERT.
COPY_IN: LiteralString = """
COPY {schema}daz_retry_queue (
    event_id, event_type, channel_name, plugin_name, event_data,
    event_metadata, max_retries, retry_delay_seconds, backoff_multiplier,
    max_retry_delay_seconds, retry_jitter, priority, correlation_id, tags,
    created_at, next_retry_at
) FROM STDIN (FORMAT BINARY)
"""

# add_many, step 3: the last id this backend drew. When it is the mark plus
# the number of rows, the rows' ids are the ones in between (n distinct ids in
# n places); otherwise another backend drew in between and NEW_IDS_OF finds
# them.
LAST_ID: LiteralString = """
SELECT currval(%(sequence)s::regclass)
"""

# add_many, step 3 when other ids came between: the rows' ids, found by their
# event ids (random, drawn by add_many) within the range this backend drew,
# ascending (input order).
NEW_IDS_OF: LiteralString = """
SELECT ARRAY(
    SELECT q.id FROM {schema}daz_retry_queue AS q
    WHERE q.id > %(mark)s AND q.id <= %(last)s AND q.event_id = ANY(%(event_ids)s::uuid[])
    ORDER BY q.id
)
"""

# leased_at: the lease's grant time, the token that fences its outcomes and
# renewals to it (see complete_retry_item). acquire_retry_items stamps it as
# last_attempted_at and grants locked_until = it + the lease, exactly.
ACQUIRE: LiteralString = """
SELECT
    id, event_id, event_type, channel_name, plugin_name, event_data,
    retry_count, max_retries, priority, correlation_id, event_metadata, tags,
    created_at, next_retry_at, locked_until, error_message, last_error_code,
    locked_until - pg_catalog.make_interval(secs => %(lock_timeout)s::bigint) AS leased_at
FROM {schema}acquire_retry_items(
    p_worker_id => %(worker_id)s,
    p_batch_size => %(batch_size)s,
    p_lock_timeout_seconds => %(lock_timeout)s,
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_event_types => %(event_types)s::text[],
    p_plugin_names => %(plugin_names)s::text[]
)
"""

COMPLETE: LiteralString = """
SELECT {schema}complete_retry_item(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_leased_at => %(leased_at)s::timestamptz
)
"""

COMPLETE_MANY: LiteralString = """
SELECT {schema}complete_retry_items(
    p_item_ids => %(item_ids)s::bigint[],
    p_worker_id => %(worker_id)s,
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_leased_at => %(leased_at)s::timestamptz[]
)
"""

# Which of these items a complete_retry_items call in a transaction that
# began at `at` completed: the others were no longer leased to the caller.
# The call stamps completed_at with the clock at the call (not the
# transaction's now()), so: completed at or after `at`. Only the lease holder
# completes, so a row completed since then by someone else needs a takeover
# meanwhile, which a lease far longer than one flush rules out.
# Which of a flush's successes are its own: completed by this transaction
# (its now()), or under the lease the worker holds (the grant time a
# completion keeps): an earlier statement of the worker's whose reply was
# lost, which a pooler may run late, races the write again and wins.
COMPLETED_AT: LiteralString = """
SELECT q.id
FROM unnest(%(item_ids)s::bigint[], %(leased_at)s::timestamptz[]) AS o (id, leased_at)
INNER JOIN {schema}daz_retry_queue AS q ON q.id = o.id
WHERE q.status = 'completed'
    AND (q.completed_at >= %(at)s OR q.last_attempted_at = o.leased_at)
"""

FAIL: LiteralString = """
SELECT {schema}fail_retry_item(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_error_msg => %(error)s,
    p_error_code => %(code)s,
    p_retryable => %(retryable)s,
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_retry_after_seconds => %(retry_after)s::float8,
    p_leased_at => %(leased_at)s::timestamptz
)
"""

SNOOZE: LiteralString = """
SELECT {schema}snooze_retry_item(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_delay_seconds => %(delay)s::float8,
    p_max_snoozes => %(max_snoozes)s::bigint,
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_leased_at => %(leased_at)s::timestamptz
)
"""

EXTEND_LOCK: LiteralString = """
SELECT {schema}extend_retry_lock(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_lock_timeout_seconds => %(lock_timeout)s,
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_leased_at => %(leased_at)s::timestamptz
)
"""

# One round trip for the worker's heartbeat: returns the ids still held.
# leased_at pairs with item_ids (NULL, or a NULL element: that item unfenced;
# unnest pads the shorter array with NULLs).
EXTEND_LOCKS: LiteralString = """
SELECT i.id
FROM unnest(%(item_ids)s::bigint[], %(leased_at)s::timestamptz[]) AS i (id, leased_at)
WHERE {schema}extend_retry_lock(
    p_item_id => i.id,
    p_worker_id => %(worker_id)s,
    p_lock_timeout_seconds => %(lock_timeout)s,
    p_leased_at => i.leased_at
)
"""

RELEASE: LiteralString = """
SELECT {schema}release_retry_items(
    p_item_ids => %(item_ids)s::bigint[],
    p_worker_id => %(worker_id)s,
    p_leased_at => %(leased_at)s::timestamptz[]
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

CANCEL: LiteralString = """
SELECT {schema}cancel_retry_items(
    p_item_ids => %(item_ids)s::bigint[],
    p_event_type => %(event_type)s,
    p_plugin_name => %(plugin_name)s,
    p_error_code => %(error_code)s,
    p_created_before => %(created_before)s::timestamptz,
    p_dry_run => %(dry_run)s,
    p_now => coalesce(%(now)s::timestamptz, now())
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

# Cleanup runs only where this install's cleanup turn is free, so workers
# sharing a queue take turns; the turn lasts until the transaction ends. It is
# taken by a function (a lock no role outside retryq can hold), not an
# advisory lock, whose well-known key anyone could squat on.
TRY_CLEANUP_LOCK: LiteralString = "SELECT {schema}cleanup_retry_queue_lock()"

# The lock and the cleanup in one statement (one transaction that never sits
# idle between them, which idle_in_transaction_session_timeout would end). No
# row when another session holds the lock: the CASE runs the cleanup, an
# InitPlan, only once the lock is taken, and the volatile lock keeps the
# subquery from being flattened into more than one call.
TRY_CLEANUP: LiteralString = """
SELECT t.c[1] AS deleted_count, t.c[2] AS archived_count
FROM (
    SELECT CASE
        WHEN {schema}cleanup_retry_queue_lock()
        THEN (
            SELECT ARRAY[r.deleted_count, r.archived_count]::bigint[]
            FROM {schema}cleanup_retry_queue(
                p_retention_days => %(retention_days)s,
                p_batch_size => %(batch_size)s,
                p_max_rows => %(max_rows)s::bigint,
                p_archive_dead_letters => %(archive_dead_letters)s,
                p_now => coalesce(%(now)s::timestamptz, now())
            ) AS r
        )
    END AS c
) AS t
WHERE t.c IS NOT NULL
"""

STATS: LiteralString = """
SELECT
    status, event_type, plugin_name, item_count, avg_retry_count,
    max_retry_count, oldest_created_at, newest_created_at, leased_count,
    paused
FROM {schema}daz_retry_queue_stats
ORDER BY status, event_type, plugin_name
"""

# A QueueEntry's columns by name, so that a column added later does not break
# it (the archive's copy adds archived_at, see _sql.ops.ARCHIVED_ITEM).
ENTRY_COLUMNS: LiteralString = """
    id, event_id, event_type, channel_name, plugin_name, event_data,
    event_metadata, retry_count, max_retries, retry_delay_seconds,
    backoff_multiplier, max_retry_delay_seconds, retry_jitter, priority,
    correlation_id, tags, status, error_message, last_error_code,
    error_history, created_at, next_retry_at, last_attempted_at,
    completed_at, dead_lettered_at, locked_by, locked_until, dedupe_key"""

GET: LiteralString = (
    """
SELECT"""
    + ENTRY_COLUMNS
    + """
FROM {schema}daz_retry_queue
WHERE id = %(item_id)s
"""
)

# For a worker deciding how long to sleep, or whether to exit: whether any item
# (of its event types and plugins) is active, seconds (by the server's clock)
# until the earliest pending one that is not paused is due (for a key whose
# rate limit has no token free, when the next token frees), and how long the
# oldest due item nobody holds has waited.
DUE: LiteralString = """
SELECT active, seconds_until_due, oldest_due_age_seconds
FROM {schema}retry_queue_due(
    p_event_types => %(event_types)s::text[],
    p_plugin_names => %(plugin_names)s::text[]
)
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
        self.enqueue_once = compose(ENQUEUE_ONCE, schema)
        self.enqueue_many = compose(ENQUEUE_MANY, schema)
        self.new_ids = compose(NEW_IDS, schema)
        self.copy_in = compose(COPY_IN, schema)
        self.last_id = compose(LAST_ID, schema)
        self.new_ids_of = compose(NEW_IDS_OF, schema)
        self.acquire = compose(ACQUIRE, schema)
        self.complete = compose(COMPLETE, schema)
        self.complete_many = compose(COMPLETE_MANY, schema)
        self.completed_at = compose(COMPLETED_AT, schema)
        self.fail = compose(FAIL, schema)
        self.snooze = compose(SNOOZE, schema)
        self.extend_lock = compose(EXTEND_LOCK, schema)
        self.extend_locks = compose(EXTEND_LOCKS, schema)
        self.release = compose(RELEASE, schema)
        self.requeue_dead_letters = compose(REQUEUE_DEAD_LETTERS, schema)
        self.purge_dead_letters = compose(PURGE_DEAD_LETTERS, schema)
        self.cancel = compose(CANCEL, schema)
        self.cleanup = compose(CLEANUP, schema)
        self.try_cleanup_lock = compose(TRY_CLEANUP_LOCK, schema)
        self.try_cleanup = compose(TRY_CLEANUP, schema)
        self.stats = compose(STATS, schema)
        self.get = compose(GET, schema)
        self.due = compose(DUE, schema)
