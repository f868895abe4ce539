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

from retryq_py._sql.params import refuse_nul_params

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
        """A NUL in a text filter is refused naming it (22021: a 400)."""
        params = {
            "status": self.status,
            "event_type": self.event_type,
            "plugin_name": self.plugin,
            "error_code": self.error_code,
            "correlation_id": self.correlation_id,
            "older_than": self.older_than,
            "before": before,
            "limit": limit,
        }
        refuse_nul_params(params)
        return params


# Each request's connection first. The statements below are short reads whose
# row estimates can run into the millions (a LATERAL over every active row),
# which crosses jit_optimize_above_cost: compiling one took 3.3 s of a 4.6 s
# WORKERS at 200,000 active items, to run 1.3 s of work.
SESSION: LiteralString = "SET jit = off"

# --- items ------------------------------------------------------------------

# Keyset pagination, newest id first: a page costs its own rows whatever its
# depth, where OFFSET would walk every row before it. Each `%(x)s IS NULL OR`
# folds away for the value given, so a status filter still prunes to its
# partition and the walk runs down each partition's primary key.
_ITEM_COLUMNS: LiteralString = """
    q.id, q.event_id, q.event_type, q.plugin_name, q.status, q.retry_count,
    q.max_retries, q.priority, q.last_error_code, q.error_message,
    q.correlation_id, q.created_at, q.next_retry_at, q.locked_by
"""
# ItemFilter's fields, the screen's filter
_ITEM_FILTER: LiteralString = """
    (%(status)s::text IS NULL OR q.status = %(status)s::text)
    AND (%(event_type)s::text IS NULL OR q.event_type = %(event_type)s::text)
    AND (%(plugin_name)s::text IS NULL OR q.plugin_name = %(plugin_name)s::text)
    AND (%(error_code)s::text IS NULL OR q.last_error_code = %(error_code)s::text)
    AND (%(correlation_id)s::text IS NULL
        OR q.correlation_id = %(correlation_id)s::text)
    AND (%(older_than)s::interval IS NULL
        OR q.created_at <= now() - %(older_than)s::interval)
"""
ITEMS: LiteralString = (
    "SELECT"
    + _ITEM_COLUMNS
    + "FROM daz_retry_queue AS q\nWHERE"
    + _ITEM_FILTER
    + """    AND (%(before)s::bigint IS NULL OR q.id < %(before)s::bigint)
ORDER BY q.id DESC
LIMIT %(limit)s
"""
)

# What the items screen's "cancel every match" acts on: the items its filter
# shows that cancel_retry_items may cancel (pending and processing: the active
# partition alone), every one of them, newest first. The confirmation lists
# their ids, and the cancel is applied to exactly those.
CANCELLABLE: LiteralString = (
    "SELECT"
    + _ITEM_COLUMNS
    + "FROM daz_retry_queue AS q\nWHERE q.status IN ('pending', 'processing')\n    AND"
    + _ITEM_FILTER
    + "ORDER BY q.id DESC\n"
)

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

# HOURLY and WORKERS count failed attempts from the items' error histories.
# Entries are appended in time order (a failure, a dead letter, or the expiry
# of a lease taken over, stamped with that lease's end, which came after every
# earlier entry), so a history whose last entry is older than the window has
# nothing in it: each row costs one look at its last entry, and only the
# histories that failed within the window are expanded. The finished
# partition is read through its age index; no CTE holds every history.
# scripts/bench_dashboard.py times them on a large backlog.

# Per hour over the last %(hours)s hours: items completed, attempts failed,
# items dead-lettered.
HOURLY: LiteralString = """
WITH since AS (
    SELECT date_trunc('hour', now()) - (%(hours)s - 1) * interval '1 hour' AS t
),
finished AS (
    SELECT
        date_trunc('hour', coalesce(f.completed_at, f.dead_lettered_at)) AS hour,
        count(*) FILTER (WHERE f.status = 'completed') AS completed,
        count(*) FILTER (WHERE f.status = 'dead_letter') AS dead_lettered
    FROM daz_retry_queue AS f, since
    WHERE f.status IN ('completed', 'dead_letter')
        AND coalesce(f.completed_at, f.dead_lettered_at) >= since.t
    GROUP BY 1
),
histories AS (
    SELECT a.error_history
    FROM daz_retry_queue AS a, since
    WHERE a.status IN ('pending', 'processing')
        AND (a.error_history -> -1 ->> 'failed_at')::timestamptz >= since.t
    UNION ALL
    SELECT f.error_history
    FROM daz_retry_queue AS f, since
    WHERE f.status IN ('completed', 'dead_letter')
        AND coalesce(f.completed_at, f.dead_lettered_at) >= since.t
        AND (f.error_history -> -1 ->> 'failed_at')::timestamptz >= since.t
),
failed AS (
    SELECT date_trunc('hour', x.failed_at) AS hour, count(*) AS n
    FROM histories AS r, since,
        LATERAL (
            SELECT (e ->> 'failed_at')::timestamptz AS failed_at
            FROM jsonb_array_elements(r.error_history) AS e
        ) AS x
    WHERE x.failed_at >= since.t
    GROUP BY 1
)
SELECT
    h.hour,
    coalesce(fi.completed, 0) AS completed,
    coalesce(fa.n, 0) AS failed,
    coalesce(fi.dead_lettered, 0) AS dead_lettered
FROM since,
    generate_series(since.t, date_trunc('hour', now()), interval '1 hour') AS h (hour)
LEFT JOIN finished AS fi ON fi.hour = h.hour
LEFT JOIN failed AS fa ON fa.hour = h.hour
ORDER BY h.hour
"""

# --- workers ----------------------------------------------------------------

# Worker ids from the leases held now and from the attempts that failed in the
# window (a completion records no worker). One pass over the active partition
# keeps the rows either part needs (leased, or with a failure in the window by
# their last entry), a small set; the finished partition is read like HOURLY.
WORKERS: LiteralString = """
WITH since AS (SELECT now() - %(window)s::interval AS t),
active AS MATERIALIZED (
    SELECT
        q.status, q.locked_by, q.locked_until, q.last_attempted_at,
        CASE
            WHEN (q.error_history -> -1 ->> 'failed_at')::timestamptz >= since.t
                THEN q.error_history
        END AS recent_history
    FROM daz_retry_queue AS q, since
    WHERE q.status IN ('pending', 'processing')
        AND (
            q.status = 'processing'
            OR (q.error_history -> -1 ->> 'failed_at')::timestamptz >= since.t
        )
),
histories AS (
    SELECT a.recent_history AS error_history
    FROM active AS a
    WHERE a.recent_history IS NOT NULL
    UNION ALL
    SELECT f.error_history
    FROM daz_retry_queue AS f, since
    WHERE f.status IN ('completed', 'dead_letter')
        AND coalesce(f.completed_at, f.dead_lettered_at) >= since.t
        AND (f.error_history -> -1 ->> 'failed_at')::timestamptz >= since.t
),
seen AS (
    SELECT
        a.locked_by AS worker_id,
        coalesce(a.last_attempted_at, now()) AS seen_at,
        1 AS holding,
        (a.locked_until <= now())::integer AS expired,
        0 AS failures
    FROM active AS a
    WHERE a.status = 'processing'
    UNION ALL
    SELECT e ->> 'worker_id', (e ->> 'failed_at')::timestamptz, 0, 0, 1
    FROM histories AS r, since, jsonb_array_elements(r.error_history) AS e
    WHERE e ->> 'worker_id' IS NOT NULL
        AND (e ->> 'failed_at')::timestamptz >= since.t
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
