"""The worker's SQL: its flush statements and LISTEN, and how it reads leased rows.

The flush fills its statements in as text (see worker/flush.py), so they are
rendered once per connection encoding here; the templates themselves are
the ones in `retryq_py._sql`, which name the functions in sql/functions/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from json import loads as _json_loads
from typing import TYPE_CHECKING, Any, NamedTuple

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import JsonbLoader

from retryq_py._sql import (
    ACQUIRE,
    COMPLETE_MANY,
    COMPLETED_AT,
    EXTEND_LOCKS,
    FAIL,
    RetryQueueItem,
    compose,
)

if TYPE_CHECKING:
    from psycopg.abc import AdaptContext
    from typing_extensions import LiteralString

# complete_retry_items' count comes with the transaction's now(): the
# completed_at of what it completed, should some turn out to be lost.
COMPLETE_MANY_AT: LiteralString = COMPLETE_MANY.rstrip() + ", now()\n"

LISTEN: LiteralString = "LISTEN {channel}"

# The worker's snooze says what it did ('snoozed', 'dead_letter' past
# max_snoozes, NULL when the lease was not held), so that the worker reports
# the queue's outcome, not a guess from the count it read at lease time.
SNOOZE: LiteralString = """
SELECT {schema}snooze_retry_item_outcome(
    p_item_id => %(item_id)s,
    p_worker_id => %(worker_id)s,
    p_delay_seconds => %(delay)s::float8,
    p_max_snoozes => %(max_snoozes)s::bigint,
    p_now => coalesce(%(now)s::timestamptz, now()),
    p_leased_at => %(leased_at)s::timestamptz
)
"""
BURIED = "dead_letter"  # SNOOZE's answer for a snooze past the bound

# After a reply was lost (the connection broke around a commit): what became
# of the items whose outcomes were in doubt. The worker role may read the
# queue; each row's history says whether this worker's failure was written,
# and whether its lease was taken over (a lease_expired entry naming it);
# its metadata counts the snoozes (a snooze spends no attempt, so an item
# snoozed and leased again by the same flush has the same retry_count); its
# last_attempted_at is the grant time of its lease, if it has one. Of the
# metadata only a count retryq could have written (snooze_count's rule) is
# read: a producer's value there may be one Python cannot decode.
IN_DOUBT: LiteralString = """
SELECT
    q.id, q.status, q.locked_by, q.error_history, q.retry_count,
    CASE
        WHEN pg_catalog.jsonb_typeof(q.event_metadata -> 'retryq_snoozes') = 'number'
            AND (q.event_metadata ->> 'retryq_snoozes')::numeric BETWEEN 0 AND 10000
            THEN pg_catalog.jsonb_build_object(
                'retryq_snoozes', q.event_metadata -> 'retryq_snoozes'
            )
        ELSE '{{}}'::jsonb
    END AS event_metadata,
    q.last_attempted_at
FROM {schema}daz_retry_queue AS q
WHERE q.id = ANY(%(item_ids)s::bigint[])
"""

# ... and which items it holds: those an acquire whose reply was lost leased.
# Each with the locked_until its acquire granted (the acquire stamps
# last_attempted_at with the same clock reading), not the row's: a renewal
# since (the heartbeat renews by id, so an older lease's renewal renews the
# new one) moved that. The ledger tells a lease by its granted locked_until:
# read otherwise, a lane whose reply was only slow would hold the same lease
# a second time and run it twice. The leases it knows are left out by the
# same mark, not by retry_count: a snooze spends no attempt, so the lease
# after a snooze has the count of the one before. leased_at, the grant time,
# is what fences the outcomes (see ACQUIRE).
HELD: LiteralString = """
SELECT
    id, event_id, event_type, channel_name, plugin_name, event_data,
    retry_count, max_retries, priority, correlation_id, event_metadata, tags,
    created_at, next_retry_at, locked_until, error_message, last_error_code, leased_at
FROM (
    SELECT
        id, event_id, event_type, channel_name, plugin_name, event_data,
        retry_count, max_retries, priority, correlation_id, event_metadata, tags,
        created_at, next_retry_at,
        last_attempted_at + pg_catalog.make_interval(secs => %(lock_seconds)s::bigint)
            AS locked_until,
        error_message, last_error_code, last_attempted_at AS leased_at
    FROM {schema}daz_retry_queue
    WHERE status = 'processing' AND locked_by = %(worker_id)s
) AS held
WHERE NOT EXISTS (
    SELECT
    FROM unnest(%(known)s::bigint[], %(known_until)s::timestamptz[]) AS k (id, locked_until)
    WHERE k.id = held.id AND k.locked_until = held.locked_until
)
"""

# While acquires are in doubt (their replies lost, not yet taken up): the
# leases the queue says this worker holds that it does not know (known as in
# HELD), renewed in one round trip by the heartbeat, each fenced to its own
# grant time and in id order (the one lock order, see Heartbeat.beat). The
# take-up that holds them may come late (its own statements cut, a pool
# slow to reconnect): renewed meanwhile, they do not run out under this live
# worker. extend_retry_lock is volatile, so the filter is not pushed into
# the ordered subquery.
RENEW_UNKNOWN: LiteralString = """
SELECT held.id
FROM (
    SELECT
        id, last_attempted_at,
        last_attempted_at + pg_catalog.make_interval(secs => %(lock_seconds)s::bigint)
            AS locked_until
    FROM {schema}daz_retry_queue
    WHERE status = 'processing' AND locked_by = %(worker_id)s
    ORDER BY id
) AS held
WHERE NOT EXISTS (
    SELECT
    FROM unnest(%(known)s::bigint[], %(known_until)s::timestamptz[]) AS k (id, locked_until)
    WHERE k.id = held.id AND k.locked_until = held.locked_until
)
AND {schema}extend_retry_lock(
    p_item_id => held.id,
    p_worker_id => %(worker_id)s,
    p_lock_timeout_seconds => %(lock_seconds)s::bigint,
    p_leased_at => held.last_attempted_at
)
"""

# ... but only once the connections whose replies were lost are done: the
# server runs a statement (COMMIT included) to its end after the client is
# gone, and a COMMIT already in its socket buffer still arrives while it is
# 'idle in transaction'; a read made meanwhile misses what it is about to
# commit, and an outcome written again would land on the lease that commit
# grants. So: until each such process is idle or gone (behind a pooler the
# ids are the pooler's own and match nothing). The snapshot is cleared
# because pg_stat_activity is read once per transaction.
OLD_BACKEND_BUSY: LiteralString = """
SELECT pg_catalog.pg_stat_clear_snapshot(), pg_catalog.count(*) > 0
FROM pg_catalog.pg_stat_activity
WHERE pid = ANY(%(pids)s::integer[]) AND pid <> pg_catalog.pg_backend_pid() AND state <> 'idle'
"""


def listen(channel: str) -> sql.Composed:
    return sql.SQL(LISTEN).format(channel=sql.Identifier(channel))


class FlushText(NamedTuple):
    """The flush's statements as text, and the worker id as a quoted literal."""

    fail: str
    complete_at: str
    acquire: str
    worker: str
    snooze: str
    event_types: str
    plugin_names: str


class FlushStatements:
    """The flush's statements composed once for one schema."""

    def __init__(self, schema: str | None) -> None:
        self.fail = compose(FAIL, schema)
        self.snooze = compose(SNOOZE, schema)
        self.complete_at = compose(COMPLETE_MANY_AT, schema)
        self.acquire = compose(ACQUIRE, schema)
        self.completed_at = compose(COMPLETED_AT, schema)
        self.in_doubt = compose(IN_DOUBT, schema)
        self.held = compose(HELD, schema)
        self.renew_unknown = compose(RENEW_UNKNOWN, schema)
        self.extend_locks = compose(EXTEND_LOCKS, schema)
        self.old_backend_busy = compose(OLD_BACKEND_BUSY, schema)

    def as_text(
        self, worker_id: str, routing: dict[str, list[str] | None], context: AdaptContext
    ) -> FlushText:
        """Rendered with the connection's encoding: the flush then fills the two
        statements of every flush in with `%` instead of mogrify. `routing`:
        the acquire's event_types and plugin_names (None for every item)."""
        return FlushText(
            self.fail.as_string(context),
            self.complete_at.as_string(context),
            self.acquire.as_string(context),
            sql.Literal(worker_id).as_string(context),
            self.snooze.as_string(context),
            sql.Literal(routing["event_types"]).as_string(context),
            sql.Literal(routing["plugin_names"]).as_string(context),
        )


_ITEM_FIELD_NAMES = [f.name.encode() for f in dataclasses.fields(RetryQueueItem)]


def item_rows(cursor: Any) -> Callable[[Sequence[Any]], RetryQueueItem]:
    """acquire's rows as RetryQueueItem by position (class_row builds a
    keyword dict per row); by name should the columns ever differ. Checked
    on the raw result: `description` builds an object per column."""
    res = cursor.pgresult
    if res is None or [res.fname(i) for i in range(res.nfields)] != _ITEM_FIELD_NAMES:
        return class_row(RetryQueueItem)(cursor)
    return lambda values: RetryQueueItem(*values)


class JsonbFromText(JsonbLoader):
    """jsonb as json.loads(str): given bytes, json.loads first guesses their
    encoding, which costs as much as parsing a small document."""

    def load(self, data: Any) -> Any:
        return _json_loads(bytes(data).decode())
