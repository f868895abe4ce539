"""The SQL of `retryq web`, the dashboard, next to the rows it returns.

Every statement reads: the dashboard's actions (requeue, purge, circuits) go
through the SQL functions that retryq_py.admin calls. The statements run on a
connection whose search_path finds the queue, and each stays cheap on a table
of a million finished rows: the active partition is small, the finished one is
reached through its primary key (keyset pagination), its age index (recent
throughput) or its partial dead-letter index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from typing_extensions import LiteralString


# --- rows -------------------------------------------------------------------


@dataclass(frozen=True)
class ItemRow:
    """One line of the items screen."""

    id: int
    event_id: UUID
    event_type: str
    plugin_name: str | None
    status: str
    retry_count: int
    max_retries: int
    priority: int
    last_error_code: str | None
    error_message: str | None
    correlation_id: str | None
    created_at: datetime
    next_retry_at: datetime
    locked_by: str | None


@dataclass(frozen=True)
class Backlog:
    """The items of one event type waiting or stuck, by kind."""

    event_type: str
    due: int
    scheduled: int
    processing: int
    dead_letter: int


@dataclass(frozen=True)
class Oldest:
    """The pending item created first, and how long the oldest due one has waited."""

    id: int | None
    event_type: str | None
    created_at: datetime | None
    oldest_due_age_seconds: float


@dataclass(frozen=True)
class HourCounts:
    """What happened in one hour: completions, failed attempts, dead letters."""

    hour: datetime
    completed: int
    failed: int
    dead_lettered: int


@dataclass(frozen=True)
class WorkerSeen:
    """A worker id seen holding a lease now or in a failed attempt recently."""

    worker_id: str
    last_seen: datetime
    holding: int
    expired_leases: int
    failures: int


@dataclass(frozen=True)
class ItemFilter:
    """The items screen's filters: every given field must match."""

    status: str | None = None
    event_type: str | None = None
    plugin: str | None = None
    error_code: str | None = None
    correlation_id: str | None = None
    older_than: timedelta | None = None

    def params(self, before: int | None, limit: int) -> dict[str, Any]:
        return {
            "status": self.status,
            "event_type": self.event_type,
            "plugin_name": self.plugin,
            "error_code": self.error_code,
            "correlation_id": self.correlation_id,
            "older_than": self.older_than,
            "before": before,
            "limit": limit,
        }


# --- items ------------------------------------------------------------------

# Keyset pagination, newest id first: a page costs its own rows whatever its
# depth, where OFFSET would walk every row before it. Each `%(x)s IS NULL OR`
# folds away for the value given, so a status filter still prunes to its
# partition and the walk runs down each partition's primary key.
ITEMS: LiteralString = """
SELECT
    q.id, q.event_id, q.event_type, q.plugin_name, q.status, q.retry_count,
    q.max_retries, q.priority, q.last_error_code, q.error_message,
    q.correlation_id, q.created_at, q.next_retry_at, q.locked_by
FROM daz_retry_queue AS q
WHERE (%(status)s::text IS NULL OR q.status = %(status)s::text)
    AND (%(event_type)s::text IS NULL OR q.event_type = %(event_type)s::text)
    AND (%(plugin_name)s::text IS NULL OR q.plugin_name = %(plugin_name)s::text)
    AND (%(error_code)s::text IS NULL OR q.last_error_code = %(error_code)s::text)
    AND (%(correlation_id)s::text IS NULL
        OR q.correlation_id = %(correlation_id)s::text)
    AND (%(older_than)s::interval IS NULL
        OR q.created_at <= now() - %(older_than)s::interval)
    AND (%(before)s::bigint IS NULL OR q.id < %(before)s::bigint)
ORDER BY q.id DESC
LIMIT %(limit)s
"""

# --- overview ---------------------------------------------------------------

# Waiting and stuck items per event type: the active partition whole (it is
# small) and the dead letters through their partial index.
BACKLOG: LiteralString = """
SELECT
    b.event_type,
    sum(b.due)::bigint AS due,
    sum(b.scheduled)::bigint AS scheduled,
    sum(b.processing)::bigint AS processing,
    sum(b.dead_letter)::bigint AS dead_letter
FROM (
    SELECT
        q.event_type,
        count(*) FILTER (
            WHERE q.status = 'pending' AND q.next_retry_at <= now()
        ) AS due,
        count(*) FILTER (
            WHERE q.status = 'pending' AND q.next_retry_at > now()
        ) AS scheduled,
        count(*) FILTER (WHERE q.status = 'processing') AS processing,
        0 AS dead_letter
    FROM daz_retry_queue AS q
    WHERE q.status IN ('pending', 'processing')
    GROUP BY q.event_type
    UNION ALL
    SELECT q.event_type, 0, 0, 0, count(*)
    FROM daz_retry_queue AS q
    WHERE q.status = 'dead_letter'
    GROUP BY q.event_type
) AS b
GROUP BY b.event_type
ORDER BY b.event_type
"""

STATUS_COUNTS: LiteralString = """
SELECT status, sum(item_count)::bigint FROM daz_retry_queue_stats GROUP BY status
"""

OLDEST_PENDING: LiteralString = """
SELECT o.id, o.event_type, o.created_at, d.oldest_due_age_seconds
FROM retry_queue_due() AS d
LEFT JOIN LATERAL (
    SELECT q.id, q.event_type, q.created_at
    FROM daz_retry_queue AS q
    WHERE q.status = 'pending'
    ORDER BY q.created_at, q.id
    LIMIT 1
) AS o ON true
"""

# Per hour over the last %(hours)s hours: items completed, attempts failed,
# items dead-lettered. A failed attempt is in the history of an item that is
# still active or finished since, so the finished partition is read through
# its age index only.
HOURLY: LiteralString = """
WITH hours AS (
    SELECT generate_series(
        date_trunc('hour', now()) - (%(hours)s - 1) * interval '1 hour',
        date_trunc('hour', now()),
        interval '1 hour'
    ) AS hour
),
since AS (SELECT min(hour) AS t FROM hours),
recent AS (
    SELECT q.status, q.completed_at, q.dead_lettered_at, q.error_history
    FROM daz_retry_queue AS q
    WHERE q.status IN ('pending', 'processing')
    UNION ALL
    SELECT f.status, f.completed_at, f.dead_lettered_at, f.error_history
    FROM daz_retry_queue AS f, since
    WHERE f.status IN ('completed', 'dead_letter')
        AND coalesce(f.completed_at, f.dead_lettered_at) >= since.t
),
finished AS (
    SELECT
        date_trunc('hour', coalesce(r.completed_at, r.dead_lettered_at)) AS hour,
        count(*) FILTER (WHERE r.status = 'completed') AS completed,
        count(*) FILTER (WHERE r.status = 'dead_letter') AS dead_lettered
    FROM recent AS r
    WHERE r.status IN ('completed', 'dead_letter')
    GROUP BY 1
),
failed AS (
    SELECT date_trunc('hour', (e ->> 'failed_at')::timestamptz) AS hour, count(*) AS n
    FROM recent AS r, since, jsonb_array_elements(r.error_history) AS e
    WHERE (e ->> 'failed_at')::timestamptz >= since.t
    GROUP BY 1
)
SELECT
    h.hour,
    coalesce(fi.completed, 0) AS completed,
    coalesce(fa.n, 0) AS failed,
    coalesce(fi.dead_lettered, 0) AS dead_lettered
FROM hours AS h
LEFT JOIN finished AS fi ON fi.hour = h.hour
LEFT JOIN failed AS fa ON fa.hour = h.hour
ORDER BY h.hour
"""

# --- workers ----------------------------------------------------------------

# Worker ids from the leases held now and from the attempts that failed in the
# window (a completion records no worker). Read like HOURLY.
WORKERS: LiteralString = """
WITH seen AS (
    SELECT
        q.locked_by AS worker_id,
        coalesce(q.last_attempted_at, now()) AS seen_at,
        1 AS holding,
        (q.locked_until <= now())::integer AS expired,
        0 AS failures
    FROM daz_retry_queue AS q
    WHERE q.status = 'processing'
    UNION ALL
    SELECT
        e ->> 'worker_id', (e ->> 'failed_at')::timestamptz, 0, 0, 1
    FROM (
        SELECT a.error_history
        FROM daz_retry_queue AS a
        WHERE a.status IN ('pending', 'processing')
        UNION ALL
        SELECT f.error_history
        FROM daz_retry_queue AS f
        WHERE f.status IN ('completed', 'dead_letter')
            AND coalesce(f.completed_at, f.dead_lettered_at)
            >= now() - %(window)s::interval
    ) AS r, jsonb_array_elements(r.error_history) AS e
    WHERE e ->> 'worker_id' IS NOT NULL
        AND (e ->> 'failed_at')::timestamptz >= now() - %(window)s::interval
)
SELECT
    s.worker_id,
    max(s.seen_at) AS last_seen,
    sum(s.holding)::integer AS holding,
    sum(s.expired)::integer AS expired_leases,
    sum(s.failures)::integer AS failures
FROM seen AS s
GROUP BY s.worker_id
ORDER BY last_seen DESC, s.worker_id
"""
